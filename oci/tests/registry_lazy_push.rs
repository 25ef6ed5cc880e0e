//! Pushing from a lazily opened stream (`BlobSource::Lazy`, what the
//! scheduler uses for blobs in S3) against a real registry: the stream is
//! opened only when the registry needs the bytes, uploaded whatever its
//! chunk sizes, and a stream of the wrong length fails the push.

mod common;

use bytes::Bytes;
use common::registry::TestRegistry;
use futures::StreamExt as _;
use oci_spec::image::{Descriptor, MediaType};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use strata_oci::registry::{
    BlobPushOutcome, BlobSource, BlobUpload, ImageRef, OpenBlob, sha256_digest,
};

fn reference(registry: &TestRegistry, name: &str) -> ImageRef {
    ImageRef::parse(&format!("{}/{name}", registry.host())).expect("test reference")
}

/// A source yielding `data` in 64 KiB pieces, counting how often it is
/// opened.
fn lazy(data: Bytes, opened: Arc<AtomicUsize>) -> BlobSource {
    let open: OpenBlob = Arc::new(move || {
        opened.fetch_add(1, Ordering::SeqCst);
        let data = data.clone();
        Box::pin(async move {
            let pieces: Vec<std::io::Result<Bytes>> = (0..data.len())
                .step_by(64 << 10)
                .map(|at| Ok(data.slice(at..data.len().min(at + (64 << 10)))))
                .collect();
            Ok(futures::stream::iter(pieces).boxed())
        })
    });
    BlobSource::Lazy(open)
}

#[tokio::test]
async fn a_lazy_blob_is_opened_only_when_it_must_be_uploaded() {
    let registry = TestRegistry::start().await;
    let client = common::client(None, &registry.scratch());
    // More than one 16 MiB upload request's worth, in small pieces.
    let data: Bytes = (0..(17u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect::<Vec<u8>>()
        .into();
    let descriptor = Descriptor::new(
        MediaType::ImageLayerZstd,
        data.len() as u64,
        sha256_digest(&data),
    );
    let opened = Arc::new(AtomicUsize::new(0));
    let blob = BlobUpload {
        descriptor: descriptor.clone(),
        source: lazy(data.clone(), Arc::clone(&opened)),
        mount_from: None,
    };

    let a = reference(&registry, "team/a:1");
    let outcome = client.push_blob(&a, &blob).await.expect("first push");
    assert_eq!(
        outcome,
        BlobPushOutcome::Uploaded {
            bytes: data.len() as u64
        }
    );
    assert_eq!(opened.load(Ordering::SeqCst), 1);
    let patches = registry
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.uri.contains("/v2/team/a/blobs/uploads/"))
        .count();
    // Large upload requests, not one per 64 KiB piece (272 of them).
    assert!((1..10).contains(&patches), "{patches} PATCH requests");

    // Present: nothing is opened.
    let again = client.push_blob(&a, &blob).await.expect("second push");
    assert_eq!(again, BlobPushOutcome::AlreadyPresent);
    // Mountable from another repository (a fresh client, told where):
    // nothing is opened either.
    let fresh = common::client(None, &registry.scratch());
    let mut hinted = blob.clone();
    hinted.mount_from = Some("team/a".to_string());
    let b = reference(&registry, "team/b:1");
    let mounted = fresh.push_blob(&b, &hinted).await.expect("mount");
    assert_eq!(
        mounted,
        BlobPushOutcome::Mounted {
            from: "team/a".to_string()
        }
    );
    assert_eq!(opened.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_lazy_blob_of_the_wrong_length_fails_the_push() {
    let registry = TestRegistry::start().await;
    let client = common::client(None, &registry.scratch());
    let data = Bytes::from_static(b"the blob's bytes");
    let descriptor = Descriptor::new(
        MediaType::ImageLayerGzip,
        data.len() as u64,
        sha256_digest(&data),
    );
    let target = reference(&registry, "team/short:1");
    for wrong in [
        data.slice(..5),
        Bytes::from_static(b"the blob's bytes and more"),
    ] {
        let blob = BlobUpload {
            descriptor: descriptor.clone(),
            source: lazy(wrong, Arc::new(AtomicUsize::new(0))),
            mount_from: None,
        };
        let err = client
            .push_blob(&target, &blob)
            .await
            .expect_err("a wrong-length source must fail")
            .to_string();
        assert!(
            err.contains("its descriptor says 16"),
            "the error names the length: {err}"
        );
    }
}
