//! One suite for every [`BlobStore`] backend: each case runs against
//! [`FsBlobs`] in a temporary directory and against [`S3Blobs`] talking to
//! a real S3 server, `s3s-fs`, started on a free loopback port (from
//! `STRATA_S3S_FS`, else `PATH`, else `~/.cargo/bin`; install it with
//! `cargo install s3s-fs@0.14.1 --features binary`). Without it the S3
//! cases fail: they are not skipped.

mod support;

use bytes::Bytes;
use futures::StreamExt as _;
use std::net::TcpListener;
use std::path::PathBuf;
use strata_store::{BlobError, BlobStore as _, Put, S3Blobs, S3Config, sha256_of};
use support::{BUCKET, Harness, LARGE, MIB, S3sFs, fs_harness, noise, read_all, s3_harness};

async fn small_blobs_round_trip(h: &Harness) {
    let s = &*h.store;
    let digest = s
        .put_bytes(Bytes::from_static(b"{\"config\":1}"))
        .await
        .unwrap();
    assert_eq!(digest, sha256_of(b"{\"config\":1}"));
    assert_eq!(s.stat(&digest).await.unwrap(), Some(12));
    assert_eq!(read_all(s, &digest, 0).await.unwrap(), b"{\"config\":1}");
    assert_eq!(
        s.put_bytes(Bytes::from_static(b"{\"config\":1}"))
            .await
            .unwrap(),
        digest
    );

    let empty = s.put_bytes(Bytes::new()).await.unwrap();
    assert_eq!(s.stat(&empty).await.unwrap(), Some(0));
    assert_eq!(read_all(s, &empty, 0).await.unwrap(), b"");
}

async fn large_file_round_trip(h: &Harness) {
    let s = &*h.store;
    let data = noise(LARGE, 1);
    let digest = sha256_of(&data);
    let src = h.scratch("layer.tar");
    std::fs::write(&src, &data).unwrap();

    let put = s.put_file(&digest, &src).await.unwrap();
    assert_eq!(
        put,
        Put {
            size: LARGE as u64,
            existed: false
        }
    );
    assert_eq!(s.stat(&digest).await.unwrap(), Some(LARGE as u64));
    let dest = h.scratch("downloaded.tar");
    assert_eq!(s.get_to_file(&digest, &dest).await.unwrap(), LARGE as u64);
    assert!(std::fs::read(&dest).unwrap() == data, "content differs");

    // Present: reported, and the source is not even read.
    std::fs::remove_file(&src).unwrap();
    let again = s.put_file(&digest, &src).await.unwrap();
    assert!(again.existed && again.size == LARGE as u64, "{again:?}");
    assert_eq!(s.put_bytes(Bytes::from(data)).await.unwrap(), digest);
    assert_eq!((h.leftovers)(), Vec::<PathBuf>::new());
}

async fn large_bytes_round_trip(h: &Harness) {
    let s = &*h.store;
    let data = noise(LARGE, 2);
    let digest = s.put_bytes(Bytes::from(data.clone())).await.unwrap();
    assert_eq!(digest, sha256_of(&data));
    assert!(read_all(s, &digest, 0).await.unwrap() == data);
}

async fn small_file_put_twice_reports_existed(h: &Harness) {
    let s = &*h.store;
    let src = h.scratch("manifest.json");
    std::fs::write(&src, b"manifest").unwrap();
    let digest = sha256_of(b"manifest");
    let first = s.put_file(&digest, &src).await.unwrap();
    let second = s.put_file(&digest, &src).await.unwrap();
    assert_eq!(
        (first, second),
        (
            Put {
                size: 8,
                existed: false
            },
            Put {
                size: 8,
                existed: true
            }
        )
    );
    // The source is the caller's: still there, unchanged.
    assert_eq!(std::fs::read(&src).unwrap(), b"manifest");
    // A blob the store has is never sent again, small ones included: the
    // store answers without reading the source at all.
    std::fs::remove_file(&src).unwrap();
    let third = s.put_file(&digest, &src).await.unwrap();
    assert!(third.existed && third.size == 8, "{third:?}");
}

async fn wrong_digest_is_rejected_and_invisible(h: &Harness) {
    let s = &*h.store;
    for (name, len) in [("small", 1000), ("large", LARGE)] {
        let src = h.scratch(name);
        std::fs::write(&src, noise(len, 3)).unwrap();
        let claimed = sha256_of(name.as_bytes());
        let err = s.put_file(&claimed, &src).await.unwrap_err();
        match err {
            BlobError::Mismatch { expected, size, .. } => {
                assert_eq!((expected.as_str(), size), (claimed.as_str(), len as u64))
            }
            other => panic!("{name}: {other}"),
        }
        assert_eq!(s.stat(&claimed).await.unwrap(), None, "{name} visible");
        assert!(s.list().await.unwrap().is_empty(), "{name} listed");
    }
    assert_eq!((h.leftovers)(), Vec::<PathBuf>::new());
}

async fn get_from_an_offset(h: &Harness) {
    let s = &*h.store;
    let digest = s
        .put_bytes(Bytes::from_static(b"0123456789"))
        .await
        .unwrap();
    assert_eq!(read_all(s, &digest, 4).await.unwrap(), b"456789");
    assert_eq!(read_all(s, &digest, 10).await.unwrap(), b"");

    let data = noise(LARGE, 4);
    let digest = s.put_bytes(Bytes::from(data.clone())).await.unwrap();
    let from = 6 * MIB + 7;
    assert!(read_all(s, &digest, from as u64).await.unwrap() == data[from..]);
}

async fn missing_blob(h: &Harness) {
    let s = &*h.store;
    let digest = sha256_of(b"never stored");
    assert_eq!(s.stat(&digest).await.unwrap(), None);
    assert!(matches!(s.get(&digest, 0).await, Err(BlobError::Missing(d)) if d == digest));
    let dest = h.scratch("missing");
    let err = s.get_to_file(&digest, &dest).await.unwrap_err();
    assert!(matches!(err, BlobError::Missing(_)), "{err}");
    assert!(!dest.exists());
    s.delete(&digest).await.unwrap();
}

async fn corruption_is_caught_on_read(h: &Harness) {
    let s = &*h.store;
    let data = noise(3 * MIB, 5);
    let digest = s.put_bytes(Bytes::from(data.clone())).await.unwrap();
    let mut bad = data.clone();
    bad[MIB] ^= 1;
    std::fs::write((h.blob_file)(&digest), &bad).unwrap();

    let dest = h.scratch("corrupt");
    let err = s.get_to_file(&digest, &dest).await.unwrap_err();
    assert!(
        matches!(&err, BlobError::Mismatch { expected, size, .. } if *expected == digest && *size == bad.len() as u64),
        "{err}"
    );
    assert!(!dest.exists(), "a corrupt download was left behind");

    let mut stream = s.get(&digest, 0).await.unwrap();
    let mut seen = 0;
    let last = loop {
        match stream.next().await.expect("the stream ends with an error") {
            Ok(chunk) => seen += chunk.len(),
            Err(e) => break e,
        }
    };
    assert_eq!(seen, bad.len());
    assert!(matches!(last, BlobError::Mismatch { .. }), "{last}");
    assert!(stream.next().await.is_none());
}

async fn delete_and_list(h: &Harness) {
    let s = &*h.store;
    let mut stored = Vec::new();
    for i in 0..3u8 {
        let bytes = vec![i; 100 + usize::from(i)];
        stored.push((
            s.put_bytes(Bytes::from(bytes)).await.unwrap(),
            100 + u64::from(i),
        ));
    }
    stored.sort();
    let listed = |mut l: Vec<strata_store::BlobInfo>| {
        l.sort_by(|a, b| a.digest.cmp(&b.digest));
        l.into_iter()
            .map(|b| (b.digest, b.size))
            .collect::<Vec<_>>()
    };
    let before = s.list().await.unwrap();
    assert!(before.iter().all(|b| b.modified > std::time::UNIX_EPOCH));
    assert_eq!(listed(before), stored);

    let (gone, _) = stored.remove(1);
    s.delete(&gone).await.unwrap();
    s.delete(&gone).await.unwrap();
    assert_eq!(s.stat(&gone).await.unwrap(), None);
    assert_eq!(listed(s.list().await.unwrap()), stored);
}

async fn named_objects(h: &Harness) {
    let s = &*h.store;
    let put = |k: &'static str, v: &'static [u8]| s.put_object(k, Bytes::from_static(v));
    put("cache/default/aa", b"1").await.unwrap();
    put("cache/default/bb", b"2").await.unwrap();
    put("cache/other/cc", b"3").await.unwrap();
    put("logs/build-1.log", b"4").await.unwrap();
    put("cache/default/aa", b"replaced").await.unwrap();
    assert_eq!(
        s.get_object("cache/default/aa").await.unwrap().as_deref(),
        Some(&b"replaced"[..])
    );
    assert_eq!(s.get_object("cache/default/zz").await.unwrap(), None);

    let all = [
        "cache/default/aa",
        "cache/default/bb",
        "cache/other/cc",
        "logs/build-1.log",
    ];
    assert_eq!(s.list_objects("").await.unwrap(), all);
    assert_eq!(s.list_objects("cache/").await.unwrap(), all[..3]);
    assert_eq!(s.list_objects("cache/def").await.unwrap(), all[..2]);
    assert_eq!(s.list_objects("cache/default/b").await.unwrap(), all[1..2]);
    assert!(s.list_objects("nothing/").await.unwrap().is_empty());

    s.delete_object("cache/default/aa").await.unwrap();
    s.delete_object("cache/default/aa").await.unwrap();
    s.delete_object("cache/other/cc").await.unwrap();
    assert_eq!(s.get_object("cache/default/aa").await.unwrap(), None);
    assert_eq!(s.list_objects("cache/").await.unwrap(), all[1..2]);
    // Blobs and objects do not see each other.
    assert!(s.list().await.unwrap().is_empty());
}

async fn bad_keys_and_digests_are_rejected(h: &Harness) {
    let s = &*h.store;
    let src = h.scratch("src");
    std::fs::write(&src, b"x").unwrap();
    for key in [
        "",
        "../escape",
        "a//b",
        "/abs",
        "a/./b",
        "sp ace",
        "back\\slash",
    ] {
        let bytes = Bytes::from_static(b"x");
        let results = [
            s.put_object(key, bytes).await.err(),
            s.get_object(key).await.err(),
            s.delete_object(key).await.err(),
        ];
        for r in results {
            assert!(matches!(r, Some(BlobError::BadKey(_))), "{key:?}: {r:?}");
        }
    }
    for prefix in ["../", "a/../", "/", "a//", "sp ace", "a/./b"] {
        let r = s.list_objects(prefix).await;
        assert!(matches!(r, Err(BlobError::BadKey(_))), "{prefix:?}: {r:?}");
    }
    let upper = sha256_of(b"x").to_uppercase();
    for digest in ["sha256:../../etc/passwd", "md5:00", upper.as_str()] {
        let dest = h.scratch("dest");
        let results = [
            s.stat(digest).await.err(),
            s.get(digest, 0).await.err(),
            s.get_to_file(digest, &dest).await.err(),
            s.put_file(digest, &src).await.err(),
            s.delete(digest).await.err(),
        ];
        for r in results {
            assert!(
                matches!(r, Some(BlobError::BadDigest(_))),
                "{digest}: {r:?}"
            );
        }
    }
}

async fn concurrent_puts_of_one_blob(h: &Harness) {
    let data = noise(7 * MIB, 6);
    let digest = sha256_of(&data);
    let src = h.scratch("shared");
    std::fs::write(&src, &data).unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..6 {
        let (store, digest, src) = (h.store.clone(), digest.clone(), src.clone());
        let bytes = Bytes::from(data.clone());
        tasks.spawn(async move {
            if i % 2 == 0 {
                store.put_file(&digest, &src).await.map(|p| p.size)
            } else {
                store.put_bytes(bytes).await.map(|d| {
                    assert_eq!(d, digest);
                    7 * MIB as u64
                })
            }
        });
    }
    while let Some(put) = tasks.join_next().await {
        assert_eq!(put.unwrap().unwrap(), 7 * MIB as u64);
    }
    let dest = h.scratch("check");
    assert_eq!(
        h.store.get_to_file(&digest, &dest).await.unwrap(),
        7 * MIB as u64
    );
    assert!(std::fs::read(&dest).unwrap() == data);
    assert_eq!((h.leftovers)(), Vec::<PathBuf>::new());
}

/// Each case, once per backend: `fs::<case>` and `s3::<case>`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod fs {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&super::fs_harness()).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&super::s3_harness().await).await;
                }
            )*
        }
    };
}

conformance!(
    small_blobs_round_trip,
    large_file_round_trip,
    large_bytes_round_trip,
    small_file_put_twice_reports_existed,
    wrong_digest_is_rejected_and_invisible,
    get_from_an_offset,
    missing_blob,
    corruption_is_caught_on_read,
    delete_and_list,
    named_objects,
    bad_keys_and_digests_are_rejected,
    concurrent_puts_of_one_blob,
);

/// A raw client on the harness's server, to look behind the store.
fn raw_client(server: &S3sFs) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AK", "SK", None, None, "test"))
        .endpoint_url(server.endpoint())
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_large_blobs_go_up_in_parts() {
    let h = s3_harness().await;
    let data = noise(LARGE, 7);
    let src = h.scratch("layer");
    std::fs::write(&src, &data).unwrap();
    let digest = sha256_of(&data);
    h.store.put_file(&digest, &src).await.unwrap();
    let server = h.server.as_ref().unwrap();
    let head = raw_client(server)
        .head_object()
        .bucket(BUCKET)
        .key(format!("farm/blobs/sha256/{}", &digest[7..]))
        .send()
        .await
        .unwrap();
    // A multipart object's ETag ends with its number of parts.
    assert!(
        head.e_tag().unwrap_or_default().ends_with("-3\""),
        "{:?}",
        head.e_tag()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_server_down_is_a_retryable_error_naming_the_endpoint() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let store = S3Blobs::new(S3Config {
        endpoint: Some(endpoint.clone()),
        bucket: BUCKET.into(),
        force_path_style: true,
        access_key_id: Some("AK".into()),
        secret_access_key: Some("SK".into()),
        max_attempts: 2,
        ..S3Config::default()
    })
    .unwrap();
    let startup = store.check().await.unwrap_err();
    let stat = store.stat(&sha256_of(b"x")).await.unwrap_err();
    for err in [startup, stat] {
        assert!(err.is_retryable(), "{err}");
        let message = err.to_string();
        assert!(message.contains(&endpoint), "{message}");
        assert!(message.contains("onnection refused"), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_missing_bucket_and_bad_credentials_say_so() {
    let server = S3sFs::start();
    let store = S3Blobs::new(S3Config {
        bucket: "no-such-bucket".into(),
        ..server.config()
    })
    .unwrap();
    let err = store.check().await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(
        err.to_string()
            .contains("bucket no-such-bucket does not exist"),
        "{err}"
    );

    let store = S3Blobs::new(S3Config {
        secret_access_key: Some("wrong".into()),
        ..server.config()
    })
    .unwrap();
    let err = store.check().await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("check the access key"), "{err}");
}
