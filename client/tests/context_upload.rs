//! Context upload against the mock scheduler: only missing blobs are sent,
//! small files batched and big ones chunked; and the manifest's wire form.

mod common;

use common::{Mock, digest, serve};
use std::collections::HashSet;
use strata_client::commands::build::{context, upload};
use strata_frontend::context::ContextManifest;
use strata_proto::build::v1 as pb;
use strata_proto::common::v1 as wire;

#[tokio::test]
async fn upload_sends_only_missing_blobs_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("src")).unwrap();
    for i in 0..300 {
        std::fs::write(
            root.join(format!("src/f{i:03}.txt")),
            format!("file {i}\n").repeat(10),
        )
        .unwrap();
    }
    // Two files with the same content are one blob.
    std::fs::write(root.join("dup-a"), b"same").unwrap();
    std::fs::write(root.join("dup-b"), b"same").unwrap();
    let big: Vec<u8> = (0..(2 * strata_proto::CONTEXT_CHUNK_SIZE + 12_345))
        .map(|i| (i % 251) as u8)
        .collect();
    std::fs::write(root.join("big.bin"), &big).unwrap();

    let mock = Mock::default();
    // The scheduler already has ten of the small files.
    for i in 0..10 {
        mock.stored
            .lock()
            .unwrap()
            .insert(digest(format!("file {i}\n").repeat(10).as_bytes()));
    }
    let mut client = serve(mock.clone()).await;
    let manifest = ContextManifest::walk(root).unwrap();
    let blobs = upload::context_blobs(root, &manifest);
    assert_eq!(blobs.len(), 300 + 1 + 1, "duplicates are one blob");

    let stats = upload::upload(&mut client, &blobs).await.unwrap();
    assert_eq!(stats.blobs, 302);
    assert_eq!(stats.uploaded, 292);
    let small: u64 = (10..300)
        .map(|i| format!("file {i}\n").repeat(10).len() as u64)
        .sum();
    assert_eq!(stats.bytes, small + 4 + big.len() as u64);
    {
        let rec = mock.rec.lock().unwrap();
        assert_eq!(rec.find.len(), 1);
        let asked: HashSet<&String> = rec.find[0].iter().collect();
        assert_eq!(asked.len(), rec.find[0].len(), "no duplicate digests asked");
        let msgs = &rec.uploads[0];
        for m in msgs {
            let payload: usize = m.chunks.iter().map(|c| c.data.len()).sum();
            assert!(payload <= strata_proto::CONTEXT_CHUNK_SIZE);
        }
        // 291 small blobs fit in one message; the big file needs three.
        assert!(msgs.len() <= 5, "{} messages", msgs.len());
        let big_digest = digest(&big);
        let big_chunks: Vec<&pb::UploadChunk> = msgs
            .iter()
            .flat_map(|m| &m.chunks)
            .filter(|c| c.digest == big_digest)
            .collect();
        assert_eq!(big_chunks.len(), 3);
        assert_eq!(
            big_chunks.iter().map(|c| c.offset).collect::<Vec<_>>(),
            [0, 1 << 20, 2 << 20]
        );
        assert_eq!(
            big_chunks.iter().map(|c| c.last).collect::<Vec<_>>(),
            [false, false, true]
        );
        assert!(big_chunks.iter().all(|c| c.total_size == big.len() as u64));
        let sent: usize = msgs
            .iter()
            .map(|m| m.chunks.iter().filter(|c| c.last).count())
            .sum();
        assert_eq!(sent, 292);
    }

    // A rebuild with nothing changed uploads nothing; one changed file is
    // exactly one upload.
    let again = upload::upload(&mut client, &blobs).await.unwrap();
    assert_eq!((again.uploaded, again.bytes), (0, 0));
    std::fs::write(root.join("src/f150.txt"), b"changed\n").unwrap();
    let manifest = ContextManifest::walk(root).unwrap();
    let blobs = upload::context_blobs(root, &manifest);
    let once = upload::upload(&mut client, &blobs).await.unwrap();
    assert_eq!((once.uploaded, once.bytes), (1, 8));
    assert_eq!(mock.rec.lock().unwrap().uploads.len(), 2);
}

#[tokio::test]
async fn a_rejected_blob_fails_the_upload_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), b"aaa").unwrap();
    let mock = Mock::default();
    mock.reject.lock().unwrap().insert(digest(b"aaa"));
    let mut client = serve(mock).await;
    let manifest = ContextManifest::walk(dir.path()).unwrap();
    let blobs = upload::context_blobs(dir.path(), &manifest);
    let e = format!(
        "{:#}",
        upload::upload(&mut client, &blobs).await.unwrap_err()
    );
    assert!(e.contains("a.txt") && e.contains("digest mismatch"), "{e}");
}

#[test]
fn manifest_converts_to_the_wire_form() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("d")).unwrap();
    std::fs::write(root.join("d/f.txt"), b"hello").unwrap();
    std::fs::write(root.join("skip.log"), b"x").unwrap();
    std::fs::write(root.join(".dockerignore"), b"*.log\n").unwrap();
    std::os::unix::fs::symlink("d/f.txt", root.join("link")).unwrap();
    let manifest = ContextManifest::walk(root).unwrap();
    let wire = context::manifest_to_proto(&manifest, Some(root));
    let paths: Vec<&str> = wire.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, [".dockerignore", "d", "d/f.txt", "link"]);
    let f = &wire.entries[2];
    assert_eq!(f.kind(), wire::EntryKind::File);
    assert_eq!((f.size, f.digest.as_str()), (5, digest(b"hello").as_str()));
    assert_eq!(
        f.mode & 0o777,
        std::fs::metadata(root.join("d/f.txt"))
            .map(|m| { std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777 })
            .unwrap()
    );
    assert!(f.mtime.is_some());
    let d = &wire.entries[1];
    assert_eq!(d.kind(), wire::EntryKind::Directory);
    assert!(d.digest.is_empty() && d.size == 0);
    let l = &wire.entries[3];
    assert_eq!(l.kind(), wire::EntryKind::Symlink);
    assert_eq!(l.link_target, "d/f.txt");
    assert!(
        l.digest.is_empty() && l.size == 0,
        "only files carry content"
    );
    assert_eq!(wire.dockerignore_digest, digest(b"*.log\n"));
}
