//! Base images and ADD, end to end on a real registry (Debian's
//! `docker-registry` on loopback) and real runc: an image pulled through
//! its index runs a RUN step and serves COPY --from; a corrupted blob is
//! caught when unpacked; ADD extracts local archives of every compression,
//! copies other files, refuses entries escaping the destination, and
//! downloads URLs (with `--checksum`) from an in-test HTTP server.
//!
//! These need root, runc, busybox-static and docker-registry; without them
//! they fail saying what to install, never skip.

#[path = "job_support/mod.rs"]
mod job_support;
use job_support::{exec, flatten};

#[path = "executor_support/mod.rs"]
mod support;

#[path = "image_support/mod.rs"]
mod image_support;
#[path = "registry_support/mod.rs"]
mod registry_support;

use image_support::{Entry, HttpServer, Layer, MOTD, Route, raw_tar, serve, tar};
use registry_support::TestRegistry;
use sha2::{Digest as _, Sha256};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;
use strata_oci::layer::Compression;
use strata_oci::registry::Platform;
use strata_worker::executor::Network;
use strata_worker::job::{FileSource, Job, JobAction, JobError, Worker, WorkerConfig};
use strata_worker::pull::PulledImage;
use strata_worker::store::{LayerRef, StoreError};

async fn open(state: &Path) -> Worker {
    support::require_environment();
    Worker::open(WorkerConfig {
        state_dir: state.to_path_buf(),
        force_copy_snapshotter: false,
        no_new_privileges: false,
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

fn job(id: &str, parent: &[LayerRef], action: JobAction) -> Job {
    Job {
        id: format!("{id}-{}", std::process::id()),
        parent: parent.to_vec(),
        action,
        env: vec!["PATH=/bin".into()],
        user: String::new(),
        workdir: "/".into(),
        source_date_epoch: None,
        compression: Compression::Zstd { level: 3 },
        timeout: Some(Duration::from_secs(60)),
        extra_hosts: Vec::new(),
    }
}

fn add(from: &Path, sources: &[&str], dest: &str) -> JobAction {
    JobAction::Copy {
        from: FileSource::Dir(from.to_path_buf()),
        sources: sources.iter().map(|s| s.to_string()).collect(),
        dest: dest.into(),
        chown: String::new(),
        chmod: String::new(),
        exclude: Vec::new(),
        add: true,
        unpack: None,
        checksum: None,
        parents: false,
        link: false,
        inline: Vec::new(),
    }
}

/// A registry with the busybox image, and a worker that pulled it.
async fn pulled(state: &Path) -> (TestRegistry, Worker, PulledImage) {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    let image = image_support::push_busybox(&registry, &client).await;
    let worker = open(state).await;
    let pulled = worker
        .pull_image(&image.reference, &Platform::linux_amd64(), &client)
        .await
        .unwrap_or_else(|e| panic!("pull: {e}"));
    (registry, worker, pulled)
}

#[tokio::test]
async fn a_pulled_image_runs_a_step_and_serves_copy_from() {
    let state = tempfile::tempdir().expect("state");
    let registry = TestRegistry::start().await;
    let client = registry.client();
    let image = image_support::push_busybox(&registry, &client).await;
    let worker = open(state.path()).await;
    let pulled = worker
        .pull_image(&image.reference, &Platform::linux_amd64(), &client)
        .await
        .unwrap_or_else(|e| panic!("pull: {e}"));

    // The index resolved to amd64, and each layer is described from the
    // manifest (blob) and the config (diffID).
    assert_eq!(pulled.manifest_digest, image.amd64_manifest);
    assert_eq!(pulled.index_digest.as_deref(), Some(image.index.as_str()));
    assert!(
        pulled
            .reference
            .ends_with(&format!("@{}", image.amd64_manifest))
    );
    assert_eq!(pulled.config.rootfs().diff_ids().len(), 2);
    let expected: Vec<(String, String, u64)> = image
        .layers
        .iter()
        .map(|l: &Layer| (l.diff_id.clone(), l.digest(), l.blob.len() as u64))
        .collect();
    let got: Vec<(String, String, u64)> = pulled
        .layers
        .iter()
        .map(|l| (l.diff_id.clone(), l.digest.clone(), l.size))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(
        pulled.layers[1].media_type,
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_eq!(pulled.downloaded, 2);
    for l in &pulled.layers {
        let bytes = fs::read(worker.store().blob_path(&l.digest).expect("path")).expect("blob");
        assert_eq!(
            format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
            l.digest
        );
    }

    // Pulling again downloads nothing.
    let again = worker
        .pull_image(&image.reference, &Platform::linux_amd64(), &client)
        .await
        .expect("second pull");
    assert_eq!(again.downloaded, 0);
    assert_eq!(again.layers, pulled.layers);
    assert_eq!(
        registry.gets(&image.layers[0].digest()),
        1,
        "{}",
        registry.log_text()
    );

    // RUN on the pulled image.
    let run = JobAction::Run {
        argv: vec![
            "/bin/busybox".into(),
            "sh".into(),
            "-c".into(),
            "busybox echo hello from the image; cat /etc/motd; echo built > /built".into(),
        ],
        network: Network::None,
        insecure: false,
        mounts: Vec::new(),
        inline_files: Vec::new(),
    };
    let (out, log) = exec(&worker, job("run-pulled", &pulled.layers, run))
        .await
        .unwrap_or_else(|e| panic!("run: {e}"));
    assert!(
        log.contains("hello from the image") && log.contains(MOTD.trim()),
        "{log}"
    );
    let mut chain = pulled.layers.clone();
    chain.push(out.layer);
    let tree = flatten(&worker, &chain);
    assert_eq!(
        fs::read_to_string(tree.path().join("built")).expect("built"),
        "built\n"
    );

    // COPY --from=<image> into an unrelated (scratch) chain.
    let copy = JobAction::Copy {
        from: FileSource::Layers(pulled.layers.clone()),
        sources: vec!["/bin/busybox".into(), "/etc/motd".into()],
        dest: "/tools/".into(),
        chown: String::new(),
        chmod: String::new(),
        exclude: Vec::new(),
        add: false,
        unpack: None,
        checksum: None,
        parents: false,
        link: false,
        inline: Vec::new(),
    };
    let (out, _) = exec(&worker, job("copy-from-image", &[], copy))
        .await
        .unwrap_or_else(|e| panic!("copy --from: {e}"));
    let tree = flatten(&worker, &[out.layer]);
    let host = fs::read(support::require_environment()).expect("host busybox");
    assert!(fs::read(tree.path().join("tools/busybox")).expect("copied") == host);
    assert_eq!(
        fs::read_to_string(tree.path().join("tools/motd")).expect("motd"),
        MOTD
    );
    assert!(!tree.path().join("bin").exists(), "only the copied files");
}

#[tokio::test]
async fn a_corrupted_blob_is_caught_when_unpacked() {
    let state = tempfile::tempdir().expect("state");
    let (_registry, worker, pulled) = pulled(state.path()).await;
    let etc = &pulled.layers[1];
    let blob = worker.store().blob_path(&etc.digest).expect("path");
    // Valid zstd of another tar: only the diffID check can tell.
    let other = tar(&[Entry::File("etc/motd", b"tampered\n", 0o644, (0, 0))]);
    fs::write(&blob, image_support::zstd(&other)).expect("tamper");
    let err = worker
        .store()
        .ensure_unpacked(etc, &pulled.layers[..1])
        .expect_err("the diffID must not match");
    assert!(matches!(err, StoreError::DiffIdMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&etc.diff_id) && msg.contains(&etc.digest),
        "{msg}"
    );
    assert!(
        !worker
            .store()
            .layer_dir(&etc.diff_id)
            .expect("dir")
            .exists()
    );
    // The blob, which does not hash to its digest either, is removed, so
    // that the next job fetches it again instead of failing on it forever.
    assert!(
        !worker.store().has_blob(&etc.digest),
        "the tampered blob stayed"
    );

    // A job on the image fails the same way instead of running on it.
    fs::write(&blob, image_support::zstd(&other)).expect("tamper again");
    let run = JobAction::Run {
        argv: vec!["/bin/sh".into(), "-c".into(), "cat /etc/motd".into()],
        network: Network::None,
        insecure: false,
        mounts: Vec::new(),
        inline_files: Vec::new(),
    };
    let err = exec(&worker, job("run-corrupt", &pulled.layers, run))
        .await
        .expect_err("must not run on a corrupt layer");
    assert!(err.to_string().contains(&etc.diff_id), "{err}");

    // Bytes that are no layer at all are refused too, naming the blob.
    fs::write(&blob, b"not a layer").expect("tamper");
    let err = worker
        .store()
        .ensure_unpacked(etc, &pulled.layers[..1])
        .expect_err("garbage");
    assert!(err.to_string().contains(&etc.digest), "{err}");
    assert!(!worker.store().has_blob(&etc.digest), "the garbage stayed");
}

fn archive_tar(dir: &str) -> Vec<u8> {
    let name = format!("{dir}/hello.txt");
    let link = format!("{dir}/link");
    tar(&[
        Entry::Dir(&format!("{dir}/"), 0o750),
        Entry::File(&name, dir.as_bytes(), 0o640, (1234, 5678)),
        Entry::Link(&link, "hello.txt"),
    ])
}

#[tokio::test]
async fn add_extracts_local_archives_and_copies_other_files() {
    let state = tempfile::tempdir().expect("state");
    let (_registry, worker, pulled) = pulled(state.path()).await;
    let ctx = tempfile::tempdir().expect("ctx");
    let c = ctx.path();
    // Names say nothing: detection is by content.
    fs::write(c.join("a.tar.gz"), image_support::gzip(&archive_tar("gz"))).expect("w");
    fs::write(
        c.join("b.tar.zst"),
        image_support::zstd(&archive_tar("zst")),
    )
    .expect("w");
    fs::write(c.join("c.tar.xz"), image_support::xz(&archive_tar("xz"))).expect("w");
    fs::write(c.join("d.bin"), image_support::bzip2(&archive_tar("bz2"))).expect("w");
    fs::write(c.join("e.tar"), archive_tar("plain")).expect("w");
    fs::write(c.join("notes.txt"), "just notes\n").expect("w");
    fs::write(c.join("data.gz"), image_support::gzip(b"gzip, but no tar")).expect("w");

    let action = add(
        c,
        &[
            "a.tar.gz",
            "b.tar.zst",
            "c.tar.xz",
            "d.bin",
            "e.tar",
            "notes.txt",
            "data.gz",
        ],
        "/opt",
    );
    let (out, _) = exec(&worker, job("add-local", &pulled.layers, action))
        .await
        .unwrap_or_else(|e| panic!("add: {e}"));
    let tree = flatten(&worker, std::slice::from_ref(&out.layer));
    let opt = tree.path().join("opt");
    for dir in ["gz", "zst", "xz", "bz2", "plain"] {
        let hello = opt.join(dir).join("hello.txt");
        assert_eq!(fs::read_to_string(&hello).expect(dir), dir);
        let m = fs::metadata(&hello).expect(dir);
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (1234, 5678, 0o640),
            "{dir}"
        );
        assert_eq!(m.mtime(), 1_600_000_000, "{dir}: the archive's mtime");
        let link = fs::read_link(opt.join(dir).join("link")).expect("link");
        assert_eq!(link, Path::new("hello.txt"));
        assert_eq!(
            fs::metadata(opt.join(dir)).expect(dir).mode() & 0o7777,
            0o750
        );
    }
    assert_eq!(
        fs::read_to_string(opt.join("notes.txt")).expect("notes"),
        "just notes\n"
    );
    assert!(
        opt.join("data.gz").is_file(),
        "a non-tar gzip is copied as is"
    );
    for archive in ["a.tar.gz", "b.tar.zst", "c.tar.xz", "d.bin", "e.tar"] {
        assert!(
            !opt.join(archive).exists(),
            "{archive} was extracted, not copied"
        );
    }

    // The extracted files work in a container stacked on the layer.
    let mut chain = pulled.layers.clone();
    chain.push(out.layer);
    let run = JobAction::Run {
        argv: vec!["/bin/sh".into(), "-c".into(), "cat /opt/xz/link".into()],
        network: Network::None,
        insecure: false,
        mounts: Vec::new(),
        inline_files: Vec::new(),
    };
    let (_, log) = exec(&worker, job("use-extracted", &chain, run))
        .await
        .expect("run");
    assert_eq!(log, "xz");

    // --unpack=false copies the archive; --chown applies to extracted entries.
    let mut keep = add(c, &["a.tar.gz"], "/raw/");
    if let JobAction::Copy { unpack, .. } = &mut keep {
        *unpack = Some(false);
    }
    let (out, _) = exec(&worker, job("add-no-unpack", &pulled.layers, keep))
        .await
        .expect("add");
    let tree = flatten(&worker, &[out.layer]);
    assert!(tree.path().join("raw/a.tar.gz").is_file());
    let mut owned = add(c, &["b.tar.zst"], "/owned");
    if let JobAction::Copy { chown, .. } = &mut owned {
        *chown = "app".into();
    }
    let (out, _) = exec(&worker, job("add-chown", &pulled.layers, owned))
        .await
        .expect("add");
    let tree = flatten(&worker, &[out.layer]);
    let m = fs::metadata(tree.path().join("owned/zst/hello.txt")).expect("owned");
    assert_eq!((m.uid(), m.gid()), (1000, 1000));
}

#[tokio::test]
async fn add_refuses_an_archive_entry_escaping_the_destination() {
    let state = tempfile::tempdir().expect("state");
    let (_registry, worker, pulled) = pulled(state.path()).await;
    let ctx = tempfile::tempdir().expect("ctx");
    let archive = image_support::gzip(&raw_tar(&["fine.txt", "../evil"]));
    fs::write(ctx.path().join("evil.tar.gz"), archive).expect("write");
    let err = exec(
        &worker,
        job(
            "add-evil",
            &pulled.layers,
            add(ctx.path(), &["evil.tar.gz"], "/app/"),
        ),
    )
    .await
    .expect_err("an escaping entry must fail the step");
    let msg = err.to_string();
    assert!(
        msg.contains("\"../evil\"") && msg.contains("evil.tar.gz"),
        "{msg}"
    );
    assert!(!ctx.path().join("evil").exists() && !state.path().join("evil").exists());
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

async fn http_files() -> (HttpServer, Vec<u8>) {
    let bundle = image_support::gzip(&archive_tar("remote"));
    let server = serve(vec![
        Route {
            path: "/files/hello.txt",
            body: b"hello over http\n".to_vec(),
            // 1445412480 seconds after the epoch.
            last_modified: Some("Wed, 21 Oct 2015 07:28:00 GMT"),
        },
        Route {
            path: "/files/bundle.tar.gz",
            body: bundle.clone(),
            last_modified: None,
        },
        Route {
            path: "/",
            body: b"index\n".to_vec(),
            last_modified: None,
        },
    ])
    .await;
    (server, bundle)
}

fn add_url(url: &str, dest: &str, unpack: Option<bool>, checksum: Option<String>) -> JobAction {
    let mut action = add(Path::new("/nonexistent-context"), &[url], dest);
    if let JobAction::Copy {
        unpack: u,
        checksum: c,
        ..
    } = &mut action
    {
        *u = unpack;
        *c = checksum;
    }
    action
}

#[tokio::test]
async fn add_downloads_urls_and_checks_their_checksum() {
    let state = tempfile::tempdir().expect("state");
    let worker = open(state.path()).await;
    let (server, bundle) = http_files().await;
    let base = &server.base;
    let hello = format!("{base}/files/hello.txt");
    let good = sha256(b"hello over http\n");

    let action = add_url(&hello, "/web/", None, Some(good.clone()));
    let (out, _) = exec(&worker, job("add-url", &[], action))
        .await
        .unwrap_or_else(|e| panic!("add url: {e}"));
    let tree = flatten(&worker, &[out.layer]);
    let file = tree.path().join("web/hello.txt");
    assert_eq!(
        fs::read_to_string(&file).expect("hello"),
        "hello over http\n"
    );
    let m = fs::metadata(&file).expect("hello");
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o600, 0, 0));
    assert_eq!(m.mtime(), 1_445_412_480, "mtime from Last-Modified");

    // A wrong --checksum fails the step, naming the URL and both digests.
    let bad = sha256(b"something else");
    let err = exec(
        &worker,
        job(
            "add-url-bad",
            &[],
            add_url(&hello, "/web/", None, Some(bad.clone())),
        ),
    )
    .await
    .expect_err("checksum mismatch");
    let msg = err.to_string();
    assert!(
        msg.contains(&bad) && msg.contains(&good) && msg.contains(&hello),
        "{msg}"
    );

    // Remote archives are copied unless --unpack=true; no path is unnamed.
    let tar_url = format!("{base}/files/bundle.tar.gz");
    let (out, _) = exec(
        &worker,
        job("add-url-tar", &[], add_url(&tar_url, "/dl/", None, None)),
    )
    .await
    .expect("add tar url");
    let tree = flatten(&worker, &[out.layer]);
    assert!(fs::read(tree.path().join("dl/bundle.tar.gz")).expect("copied") == bundle);
    let (out, _) = exec(
        &worker,
        job(
            "add-url-unpack",
            &[],
            add_url(&tar_url, "/x", Some(true), None),
        ),
    )
    .await
    .expect("add --unpack=true url");
    let tree = flatten(&worker, &[out.layer]);
    assert_eq!(
        fs::read_to_string(tree.path().join("x/remote/hello.txt")).expect("x"),
        "remote"
    );
    let (out, _) = exec(
        &worker,
        job(
            "add-url-root",
            &[],
            add_url(&format!("{base}/"), "/r/", None, None),
        ),
    )
    .await
    .expect("add /");
    let tree = flatten(&worker, &[out.layer]);
    assert_eq!(
        fs::read_to_string(tree.path().join("r/__unnamed__")).expect("r"),
        "index\n"
    );

    // --checksum is for a single URL source only.
    let ctx = tempfile::tempdir().expect("ctx");
    fs::write(ctx.path().join("local.txt"), "local").expect("write");
    let mut local = add(ctx.path(), &["local.txt"], "/l/");
    if let JobAction::Copy { checksum, .. } = &mut local {
        *checksum = Some(good.clone());
    }
    let err = exec(&worker, job("add-local-checksum", &[], local))
        .await
        .expect_err("checksum on a local source");
    assert!(matches!(err, JobError::Invalid(_)), "{err}");

    let missing = format!("{base}/missing.txt");
    let err = exec(
        &worker,
        job("add-404", &[], add_url(&missing, "/m/", None, None)),
    )
    .await
    .expect_err("404");
    let msg = err.to_string();
    assert!(msg.contains(&missing) && msg.contains("404"), "{msg}");
    assert!(server.requests.load(std::sync::atomic::Ordering::SeqCst) >= 6);
    let leftovers: Vec<_> = fs::read_dir(state.path().join("run-files"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "downloads left behind: {leftovers:?}");
}
