//! Content that does not match its digest is refused, naming both
//! digests, and never reaches the caller's file.

mod common;

use common::fake_registry::{CannedImage, FakeRegistry, Reply};
use common::image::{busybox_layer, config_json};
use strata_oci::registry::{ImageRef, OCI_MANIFEST, Platform, RegistryError, sha256_digest};

/// Flips one byte in the middle: same length, other digest.
fn tamper(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let mid = out.len() / 2;
    out[mid] ^= 0xff;
    out
}

async fn serve(repo: &str) -> (FakeRegistry, CannedImage) {
    let fake = FakeRegistry::bind().await;
    let layer = busybox_layer();
    let canned = CannedImage::new(layer.gz.clone(), config_json("amd64", &[&layer]));
    fake.serve_image(repo, "latest", &canned);
    (fake, canned)
}

fn expect_mismatch(err: RegistryError, expected: &str, actual: &str) {
    let msg = err.to_string();
    match err {
        RegistryError::DigestMismatch {
            expected: e,
            actual: a,
            ..
        } => {
            assert_eq!(e, expected, "{msg}");
            assert_eq!(a, actual, "{msg}");
        }
        other => panic!("expected a digest mismatch, got: {other}"),
    }
    assert!(msg.contains(expected) && msg.contains(actual), "{msg}");
    assert!(msg.contains("digest mismatch"), "{msg}");
}

#[tokio::test]
async fn a_tampered_config_is_rejected() {
    let (mut fake, canned) = serve("bad/config").await;
    let bad = tamper(&canned.config);
    fake.route(
        &format!("/v2/bad/config/blobs/{}", canned.config_digest),
        Reply::ok(bad.clone(), "application/octet-stream"),
    );
    fake.serve();
    let scratch = tempfile::tempdir().unwrap();
    let client = common::client(None, scratch.path());
    let target = ImageRef::parse(&format!("{}/bad/config:latest", fake.host())).unwrap();
    let err = client
        .resolve(&target, &Platform::linux_amd64())
        .await
        .expect_err("a tampered config must be refused");
    expect_mismatch(err, &canned.config_digest, sha256_digest(&bad).as_ref());
}

#[tokio::test]
async fn a_tampered_layer_is_rejected_and_never_lands_on_disk() {
    let (mut fake, canned) = serve("bad/layer").await;
    let bad = tamper(&canned.layer);
    // The registry even vouches for the bad bytes with its header.
    fake.route(
        &format!("/v2/bad/layer/blobs/{}", canned.layer_digest),
        Reply::ok(bad.clone(), "application/octet-stream")
            .header("Docker-Content-Digest", sha256_digest(&bad).as_ref()),
    );
    fake.serve();
    let scratch = tempfile::tempdir().unwrap();
    let client = common::client(None, scratch.path());
    let target = ImageRef::parse(&format!("{}/bad/layer:latest", fake.host())).unwrap();
    let image = client
        .resolve(&target, &Platform::linux_amd64())
        .await
        .expect("manifest and config are fine");

    let downloads = scratch.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let file = downloads.join("layer.tar.gz");
    let err = client
        .download_blob(&target, &image.layers[0], &file)
        .await
        .expect_err("a tampered layer must be refused");
    expect_mismatch(err, &canned.layer_digest, sha256_digest(&bad).as_ref());
    let left: Vec<_> = std::fs::read_dir(&downloads).unwrap().collect();
    assert!(left.is_empty(), "nothing may be left behind: {left:?}");

    let mut sink = Vec::new();
    let err = client
        .copy_blob(&target, &image.layers[0], &mut sink)
        .await
        .expect_err("streaming refuses it too");
    assert!(
        err.is_retryable(),
        "a mismatch may be transit corruption: {err}"
    );
    expect_mismatch(err, &canned.layer_digest, sha256_digest(&bad).as_ref());
}

#[tokio::test]
async fn a_manifest_that_does_not_match_the_pinned_digest_is_rejected() {
    let (mut fake, canned) = serve("bad/manifest").await;
    let bad = tamper(&canned.manifest);
    // Served under the digest of the good manifest, without a header.
    fake.route(
        &format!("/v2/bad/manifest/manifests/{}", canned.manifest_digest),
        Reply::ok(bad.clone(), OCI_MANIFEST),
    );
    fake.serve();
    let scratch = tempfile::tempdir().unwrap();
    let client = common::client(None, scratch.path());
    let pinned = ImageRef::parse(&format!(
        "{}/bad/manifest@{}",
        fake.host(),
        canned.manifest_digest
    ))
    .unwrap();
    let err = client
        .resolve(&pinned, &Platform::linux_amd64())
        .await
        .expect_err("a manifest not matching its digest must be refused");
    expect_mismatch(err, &canned.manifest_digest, sha256_digest(&bad).as_ref());
}

#[tokio::test]
async fn a_blob_longer_than_its_descriptor_is_cut_off() {
    let (mut fake, canned) = serve("bad/size").await;
    let mut long = canned.layer.clone();
    long.extend_from_slice(b"trailing garbage");
    fake.route(
        &format!("/v2/bad/size/blobs/{}", canned.layer_digest),
        Reply::ok(long, "application/octet-stream"),
    );
    fake.serve();
    let scratch = tempfile::tempdir().unwrap();
    let client = common::client(None, scratch.path());
    let target = ImageRef::parse(&format!("{}/bad/size:latest", fake.host())).unwrap();
    let image = client
        .resolve(&target, &Platform::linux_amd64())
        .await
        .expect("resolve");
    let err = client
        .copy_blob(&target, &image.layers[0], &mut Vec::new())
        .await
        .expect_err("too many bytes");
    assert!(
        matches!(err, RegistryError::SizeMismatch { expected, .. } if expected == canned.layer.len() as u64),
        "{err}"
    );
}
