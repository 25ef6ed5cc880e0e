//! The store's own tests: unpacking once, what a crash leaves, damaged blobs, holds.

use super::*;

/// A zstd layer of `files` files of 4 MiB each, its blob in `store`;
/// the blob's bytes too.
fn stored_layer(store: &Store, files: usize) -> (LayerRef, Vec<u8>) {
    use sha2::{Digest, Sha256};
    let mut tar = tar::Builder::new(Vec::new());
    let data = vec![7u8; 4 << 20];
    for i in 0..files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, format!("f{i}"), &data[..])
            .expect("tar");
    }
    let tar = tar.into_inner().expect("tar");
    let blob = zstd::encode_all(&tar[..], 1).expect("zstd");
    let layer = LayerRef {
        diff_id: format!("sha256:{:x}", Sha256::digest(&tar)),
        digest: format!("sha256:{:x}", Sha256::digest(&blob)),
        media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
        size: blob.len() as u64,
    };
    let staged = store.temp_path("blob");
    std::fs::write(&staged, &blob).expect("write");
    store.commit_blob(&staged, &layer.digest).expect("commit");
    (layer, blob)
}

#[test]
fn jobs_starting_together_on_one_layer_unpack_it_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path()).expect("open");
    let (layer, _) = stored_layer(&store, 8);
    let start = std::sync::Barrier::new(4);
    let dirs: Vec<PathBuf> = std::thread::scope(|s| {
        let jobs: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    store.ensure_unpacked(&layer, &[]).expect("unpack")
                })
            })
            .collect();
        jobs.into_iter().map(|j| j.join().unwrap()).collect()
    });
    assert_eq!(store.layers_unpacked(), 1, "one job unpacks, three wait");
    assert!(dirs.iter().all(|d| *d == dirs[0]));
    assert_eq!(
        std::fs::read(dirs[0].join("f7")).expect("read").len(),
        4 << 20
    );
}

#[test]
fn unpacked_layers_from_before_the_machine_went_down_are_dropped_and_blobs_kept() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path()).expect("open");
    let (layer, _) = stored_layer(&store, 1);
    let dir = store.ensure_unpacked(&layer, &[]).expect("unpack");
    drop(store);
    // The worker restarts, the machine did not go down: all is kept.
    let store = Store::open(tmp.path()).expect("reopen");
    assert!(dir.join("f0").is_file(), "dropped within one boot");
    drop(store);
    // The store was last opened in another boot.
    crate::boot::pretend_opened_in(tmp.path(), "an-earlier-boot");
    let store = Store::open(tmp.path()).expect("reopen after a reboot");
    assert!(!dir.exists(), "an unpacked layer survived a reboot");
    assert!(store.has_blob(&layer.digest), "the blob must stay");
    assert!(store.layers_held().is_empty());
    // It is unpacked again from its blob, and then kept.
    let again = store.ensure_unpacked(&layer, &[]).expect("unpack again");
    assert_eq!(store.layers_unpacked(), 1);
    drop(store);
    Store::open(tmp.path()).expect("reopen");
    assert!(again.join("f0").is_file());
}

#[test]
fn a_blob_that_does_not_hash_to_its_digest_goes_when_it_fails_to_unpack() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path()).expect("open");
    let (layer, blob) = stored_layer(&store, 2);
    // A sound blob named with a wrong diffID fails, and stays: the
    // fault is the name's, and fetching it again would not help.
    let misnamed = LayerRef {
        diff_id: format!("sha256:{}", "0".repeat(64)),
        ..layer.clone()
    };
    let err = store
        .ensure_unpacked(&misnamed, &[])
        .expect_err("wrong diffID");
    assert!(matches!(err, StoreError::DiffIdMismatch { .. }), "{err}");
    assert!(store.has_blob(&layer.digest));
    // The same blob cut short, as a crash can leave it: it fails and
    // goes, so that the next job fetches it again.
    let path = store.blob_path(&layer.digest).expect("path");
    std::fs::write(&path, &blob[..blob.len() / 2]).expect("truncate");
    let err = store.ensure_unpacked(&layer, &[]).expect_err("torn blob");
    assert!(matches!(err, StoreError::Unpack { .. }), "{err}");
    assert!(!path.exists(), "the torn blob is still there");
    assert!(matches!(
        store.ensure_unpacked(&layer, &[]),
        Err(StoreError::MissingBlob(_))
    ));
}

#[test]
fn verify_blob_keeps_a_sound_blob_and_removes_a_damaged_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path()).expect("open");
    let (layer, blob) = stored_layer(&store, 1);
    store.verify_blob(&layer.digest).expect("a sound blob");
    assert!(store.has_blob(&layer.digest));
    let path = store.blob_path(&layer.digest).expect("path");
    std::fs::write(&path, &blob[1..]).expect("damage");
    let err = store.verify_blob(&layer.digest).expect_err("damaged");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains(&layer.digest), "{err}");
    assert!(!store.has_blob(&layer.digest), "a damaged blob stayed");
}

#[test]
fn digests_are_validated_and_paths_stable() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path()).expect("open");
    let d = format!("sha256:{}", "ab".repeat(32));
    assert!(
        store
            .blob_path(&d)
            .expect("path")
            .ends_with("ab".repeat(32))
    );
    for bad in [
        "sha256:xyz",
        "md5:00",
        "sha256:../../etc",
        &format!("sha256:{}", "AB".repeat(32)),
    ] {
        assert!(
            matches!(store.blob_path(bad), Err(StoreError::BadDigest(_))),
            "{bad}"
        );
    }
    assert!(!store.has_blob(&d));
    assert!(store.layers_held().is_empty());
}

#[test]
fn a_blob_a_job_asks_for_is_kept_over_one_fetched_after_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path()).expect("open");
    let blob = |n: u8, age_secs: u64| {
        let digest = format!("sha256:{}", hex::encode([n; 32]));
        let path = store.blob_path(&digest).expect("path");
        std::fs::write(&path, [n; 100]).expect("blob");
        let f = File::open(&path).expect("open blob");
        f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(age_secs))
            .expect("age");
        digest
    };
    let used_again = blob(1, 300);
    let fetched_later = blob(2, 200);
    assert!(store.has_blob(&used_again));
    let evicted = store.evict(100);
    assert_eq!(evicted.blobs, vec![fetched_later]);
    assert!(store.has_blob(&used_again));
}
