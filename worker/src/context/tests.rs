//! The context cache's tests: shared trees, crashes, damaged blobs, limits, leases.

use super::*;
use std::os::unix::fs::MetadataExt as _;

fn manifest_of(store: &Store, files: &[(&str, &str)]) -> common::ContextManifest {
    let entries = files
        .iter()
        .map(|(path, content)| {
            let digest = format!("sha256:{}", hex::encode(Sha256::digest(content.as_bytes())));
            let tmp = store.temp_path("t");
            std::fs::write(&tmp, content).expect("write blob");
            store.commit_blob(&tmp, &digest).expect("commit");
            common::ContextEntry {
                path: path.to_string(),
                kind: common::EntryKind::File as i32,
                mode: 0o644,
                size: content.len() as u64,
                digest,
                mtime: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
                ..Default::default()
            }
        })
        .collect();
    common::ContextManifest {
        entries,
        dockerignore_digest: String::new(),
    }
}

#[test]
fn the_same_files_are_written_once_and_shared() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path().join("store")).expect("store");
    let cache = Arc::new(ContextCache::open(tmp.path().join("contexts")).expect("open"));
    let m = manifest_of(&store, &[("app/a.txt", "a\n"), ("b.txt", "b\n")]);
    let first = cache.acquire(&store, &m).expect("first");
    let second = cache.acquire(&store, &m).expect("second");
    assert_eq!(first.dir(), second.dir());
    let ino = std::fs::metadata(first.dir().join("app/a.txt"))
        .expect("materialised")
        .ino();
    assert_eq!(
        std::fs::read_to_string(second.dir().join("b.txt")).expect("b"),
        "b\n"
    );
    drop((first, second));
    // Kept for the next job, not written again.
    let third = cache.acquire(&store, &m).expect("third");
    assert_eq!(
        std::fs::metadata(third.dir().join("app/a.txt"))
            .expect("still there")
            .ino(),
        ino
    );
    // Another mode is another tree.
    let mut other = m.clone();
    other.entries[0].mode = 0o600;
    assert_ne!(manifest_key(&other), manifest_key(&m));
    let other = cache.acquire(&store, &other).expect("other");
    assert_ne!(other.dir(), third.dir());
    assert_eq!(
        std::fs::metadata(other.dir().join("app/a.txt"))
            .expect("other tree")
            .mode()
            & 0o777,
        0o600
    );
}

#[test]
fn trees_from_before_the_machine_went_down_are_dropped_and_made_again() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path().join("store")).expect("store");
    let contexts = tmp.path().join("contexts");
    let m = manifest_of(&store, &[("app/a.txt", "a\n")]);
    let cache = Arc::new(ContextCache::open(&contexts).expect("open"));
    let dir = cache
        .acquire(&store, &m)
        .expect("first")
        .dir()
        .to_path_buf();
    drop(cache);
    // Reopened in the same boot: the tree is reused as it is, and the
    // boot stays on record (the sweep of unknown names spares it).
    let cache = ContextCache::open(&contexts).expect("reopen");
    assert_eq!(cache.len(), 1);
    drop(cache);
    assert!(
        contexts.join(".boot-id").is_file(),
        "the boot is not on record"
    );
    // Torn by a crash, then reopened after the reboot.
    std::fs::write(dir.join("app/a.txt"), "").expect("tear");
    crate::boot::pretend_opened_in(&contexts, "an-earlier-boot");
    let cache = Arc::new(ContextCache::open(&contexts).expect("reopen after a reboot"));
    assert_eq!(cache.len(), 0, "a tree from another boot was kept");
    let again = cache.acquire(&store, &m).expect("again");
    assert_eq!(
        std::fs::read_to_string(again.dir().join("app/a.txt")).expect("made again"),
        "a\n"
    );
}

#[test]
fn a_damaged_context_blob_never_reaches_a_tree_and_goes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path().join("store")).expect("store");
    let cache = Arc::new(ContextCache::open(tmp.path().join("contexts")).expect("open"));
    let m = manifest_of(&store, &[("app/a.txt", "whole\n")]);
    let blob = store.blob_path(&m.entries[0].digest).expect("path");
    std::fs::write(&blob, "who").expect("damage");
    let err = cache.acquire(&store, &m).expect_err("a damaged blob");
    assert!(err.to_string().contains("app/a.txt"), "{err}");
    assert!(err.to_string().contains("hashes to"), "{err}");
    assert!(!blob.exists(), "the damaged blob is still there");
    assert_eq!(cache.len(), 0, "a tree was kept");
}

#[test]
fn unused_trees_beyond_the_limit_go_and_trees_in_use_stay() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path().join("store")).expect("store");
    let cache = Arc::new(ContextCache::open(tmp.path().join("contexts")).expect("open"));
    let held = cache
        .acquire(&store, &manifest_of(&store, &[("held", "in use")]))
        .expect("held");
    let mut dirs = Vec::new();
    for n in 0..KEEP_UNUSED + 3 {
        let m = manifest_of(&store, &[("f", &format!("content {n}"))]);
        let lease = cache.acquire(&store, &m).expect("acquire");
        dirs.push(lease.dir().to_path_buf());
    }
    cache.evict();
    assert_eq!(
        cache.len(),
        KEEP_UNUSED + 1,
        "the limit plus the tree in use"
    );
    assert!(
        held.dir().join("held").is_file(),
        "a tree in use was removed"
    );
    // The least recently used went.
    assert!(!dirs[0].exists() && !dirs[1].exists() && !dirs[2].exists());
    assert!(dirs[KEEP_UNUSED + 2].join("f").is_file());
}

#[test]
fn trees_outlive_the_process_and_incomplete_ones_do_not() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path().join("store")).expect("store");
    let root = tmp.path().join("contexts");
    let m = manifest_of(&store, &[("kept", "k")]);
    let dir = {
        let cache = Arc::new(ContextCache::open(&root).expect("open"));
        let lease = cache.acquire(&store, &m).expect("acquire");
        lease.dir().to_path_buf()
    };
    // What a crash leaves: a half-written tree and one never registered.
    std::fs::create_dir_all(root.join("tmp-7/half")).expect("tmp");
    let unregistered = root.join("ab".repeat(32));
    std::fs::create_dir_all(&unregistered).expect("unregistered");
    let ino = std::fs::metadata(dir.join("kept")).expect("kept").ino();
    let cache = Arc::new(ContextCache::open(&root).expect("reopen"));
    assert_eq!(cache.len(), 1);
    assert!(!root.join("tmp-7").exists() && !unregistered.exists());
    let lease = cache.acquire(&store, &m).expect("acquire again");
    assert_eq!(lease.dir(), dir);
    assert_eq!(
        std::fs::metadata(lease.dir().join("kept"))
            .expect("kept")
            .ino(),
        ino,
        "written again"
    );
}

#[test]
fn a_failed_materialisation_leaves_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path().join("store")).expect("store");
    let cache = Arc::new(ContextCache::open(tmp.path().join("contexts")).expect("open"));
    let mut m = manifest_of(&store, &[("ok", "x")]);
    m.entries.push(common::ContextEntry {
        path: "../escape".into(),
        kind: common::EntryKind::File as i32,
        ..Default::default()
    });
    let err = cache.acquire(&store, &m).expect_err("escaping entry");
    assert!(
        matches!(&err, ContextError::Invalid(m) if m.contains("not a clean relative path")),
        "an invalid manifest, not a disk failure: {err:?}"
    );
    assert!(cache.is_empty());
    let left = std::fs::read_dir(tmp.path().join("contexts"))
        .expect("dir")
        .filter(|e| {
            !crate::boot::is_record(&e.as_ref().expect("entry").file_name().to_string_lossy())
        })
        .count();
    assert_eq!(left, 0, "only the boot record may stay");
}

#[test]
fn a_missing_blob_is_the_disk_s_failure_not_the_manifest_s() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path().join("store")).expect("store");
    let cache = Arc::new(ContextCache::open(tmp.path().join("contexts")).expect("open"));
    let m = manifest_of(&store, &[("app/a.txt", "a\n")]);
    // Evicted (or never fetched) between the fetch and the tree.
    std::fs::remove_file(store.blob_path(&m.entries[0].digest).expect("path")).expect("rm");
    let err = cache.acquire(&store, &m).expect_err("no blob");
    assert!(
        matches!(&err, ContextError::Io(m) if m.contains("app/a.txt")),
        "retryable, naming the file: {err:?}"
    );
    assert!(cache.is_empty());
}
