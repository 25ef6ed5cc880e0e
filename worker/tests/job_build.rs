//! Layer jobs end to end on real runc and overlayfs: a busybox base layer,
//! RUN steps that delete, replace, link and chmod, COPY from a context
//! directory, WORKDIR as a non-root user; the produced layers are unpacked
//! and the tree checked. Also: failures report the exit code, cancel leaves
//! no mount behind, and both snapshotters produce the same layer.

#[path = "job_support/mod.rs"]
mod job_support;
use job_support::{exec, flatten};

#[path = "executor_support/mod.rs"]
mod support;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::Duration;
use strata_oci::layer::{
    Compression, LayerOptions, UnpackOptions, unpack_to_overlay_layer_dir, write_layer_from_trees,
};
use strata_worker::executor::Network;
use strata_worker::job::{FileSource, Job, JobAction, JobError, RunMount, Worker, WorkerConfig};
use strata_worker::store::LayerRef;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const EPOCH: i64 = 1_700_000_000;

/// Packs the busybox rootfs into a base layer in the worker's store.
fn base_layer(worker: &Worker) -> LayerRef {
    let rootfs = support::rootfs();
    fs::create_dir_all(rootfs.path().join("var/lib")).expect("mkdir");
    fs::write(rootfs.path().join("var/lib/old"), "old").expect("write");
    let empty = tempfile::tempdir().expect("tempdir");
    let tmp = worker.store().temp_path("base");
    let file = fs::File::create(&tmp).expect("create");
    let opts = LayerOptions {
        source_date_epoch: Some(EPOCH),
        ..LayerOptions::default()
    };
    let desc = write_layer_from_trees(
        empty.path(),
        rootfs.path(),
        file,
        Compression::Zstd { level: 3 },
        &opts,
    )
    .expect("base layer");
    worker
        .store()
        .commit_blob(&tmp, &desc.digest)
        .expect("commit");
    LayerRef {
        diff_id: desc.diff_id,
        digest: desc.digest,
        media_type: desc.media_type,
        size: desc.size,
    }
}

fn job(id: &str, parent: &[LayerRef], action: JobAction) -> Job {
    Job {
        id: format!("{id}-{}", std::process::id()),
        parent: parent.to_vec(),
        action,
        env: vec!["PATH=/bin".into()],
        user: String::new(),
        workdir: "/".into(),
        source_date_epoch: Some(EPOCH),
        compression: Compression::Zstd { level: 3 },
        timeout: Some(Duration::from_secs(60)),
        extra_hosts: Vec::new(),
    }
}

fn run(script: &str) -> JobAction {
    JobAction::Run {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        network: Network::Host,
        insecure: false,
        mounts: Vec::new(),
        inline_files: Vec::new(),
    }
}

async fn open(state: &Path, copy: bool) -> Worker {
    support::require_environment();
    Worker::open(WorkerConfig {
        state_dir: state.to_path_buf(),
        force_copy_snapshotter: copy,
        no_new_privileges: false,
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

const CHANGES: &str = "set -e
/bin/busybox mkdir -p /data
echo hello > /data/f
/bin/busybox ln /data/f /data/hard
/bin/busybox ln -s f /data/link
/bin/busybox mkfifo /data/fifo
/bin/busybox chmod 4755 /data/f
rm /bin/wc
rm -rf /var/lib
mkdir /var/lib
echo new > /var/lib/new
echo out; echo err >&2";

#[tokio::test]
async fn run_copy_workdir_produce_the_expected_tree() {
    let state = tempfile::tempdir().expect("state");
    let worker = open(state.path(), false).await;
    let base = base_layer(&worker);

    let (out, log) = exec(
        &worker,
        job("changes", std::slice::from_ref(&base), run(CHANGES)),
    )
    .await
    .expect("run");
    assert!(log.contains("out") && log.contains("err"), "log: {log}");
    assert!(!out.empty);
    let l1 = out.layer;

    let ctx = tempfile::tempdir().expect("ctx");
    fs::create_dir_all(ctx.path().join("src/pkg")).expect("mkdir");
    fs::write(ctx.path().join("src/app.py"), "print('hi')\n").expect("write");
    fs::write(ctx.path().join("src/pkg/mod.py"), "x = 1\n").expect("write");
    let copy = JobAction::Copy {
        from: FileSource::Dir(ctx.path().to_path_buf()),
        sources: vec!["src".into()],
        dest: "/opt/app/".into(),
        chown: "app:app".into(),
        chmod: String::new(),
        exclude: Vec::new(),
        add: false,
        unpack: None,
        checksum: None,
        parents: false,
        link: false,
        inline: Vec::new(),
    };
    let (out, _) = exec(&worker, job("copy", &[base.clone(), l1.clone()], copy))
        .await
        .expect("copy");
    let l2 = out.layer;

    let mkdir = JobAction::Mkdir {
        path: "/home/app/work".into(),
        user: "app".into(),
    };
    let (out, _) = exec(
        &worker,
        job("workdir", &[base.clone(), l1.clone(), l2.clone()], mkdir),
    )
    .await
    .expect("mkdir");
    let l3 = out.layer;

    let tree = flatten(&worker, &[base, l1, l2, l3]);
    let root = tree.path();
    assert_eq!(
        fs::read_to_string(root.join("data/f")).expect("f"),
        "hello\n"
    );
    let f = fs::metadata(root.join("data/f")).expect("f");
    assert_eq!(f.mode() & 0o7777, 0o4755, "setuid kept");
    assert_eq!(
        f.ino(),
        fs::metadata(root.join("data/hard")).expect("hard").ino(),
        "hardlink kept"
    );
    assert_eq!(
        fs::read_link(root.join("data/link"))
            .expect("link")
            .to_str(),
        Some("f")
    );
    assert!(
        fs::symlink_metadata(root.join("data/fifo"))
            .expect("fifo")
            .file_type()
            .is_fifo()
    );
    assert!(!root.join("bin/wc").exists(), "deleted file stays deleted");
    assert!(root.join("bin/ls").exists());
    assert!(
        !root.join("var/lib/old").exists(),
        "replaced directory hides the old content"
    );
    assert_eq!(
        fs::read_to_string(root.join("var/lib/new")).expect("new"),
        "new\n"
    );
    let app = fs::metadata(root.join("opt/app/app.py")).expect("app.py");
    assert_eq!((app.uid(), app.gid()), (1000, 1000));
    assert!(
        root.join("opt/app/pkg/mod.py").exists(),
        "directory contents copied"
    );
    let work = fs::metadata(root.join("home/app/work")).expect("workdir");
    assert_eq!((work.uid(), work.mode() & 0o7777), (1000, 0o755));
    // Files the runtime provides during RUN never reach a layer.
    assert!(!root.join("etc/hosts").exists() && !root.join("etc/resolv.conf").exists());
}

#[tokio::test]
async fn a_failing_step_reports_its_exit_code_and_leaves_no_mount() {
    let state = tempfile::tempdir().expect("state");
    let worker = open(state.path(), false).await;
    let base = base_layer(&worker);
    let err = exec(
        &worker,
        job(
            "fail",
            std::slice::from_ref(&base),
            run("echo about to fail; exit 3"),
        ),
    )
    .await
    .expect_err("must fail");
    match &err {
        JobError::Failed { code, .. } => assert_eq!(*code, 3),
        other => panic!("unexpected error: {other}"),
    }
    assert!(err.to_string().contains("exit code: 3"), "{err}");

    // Cancel a long step: it returns promptly and nothing stays mounted.
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(8);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let j = job("cancel", &[base], run("sleep 100"));
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        c2.cancel();
    });
    let started = std::time::Instant::now();
    let r = worker.run_job(j, tx, cancel).await;
    assert!(r.is_err(), "cancelled job must fail");
    assert!(started.elapsed() < Duration::from_secs(20));
    // The snapshots of the steps committed above go in the background.
    worker.wait_idle().await;
    let mounts = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let snaps = state.path().join("snapshots");
    assert!(
        !mounts.contains(&*snaps.to_string_lossy()),
        "a snapshot is still mounted"
    );
    assert_eq!(
        fs::read_dir(&snaps).map(|d| d.count()).unwrap_or(0),
        0,
        "snapshot directories left behind"
    );
}

#[tokio::test]
async fn overlay_and_copy_snapshotters_make_the_same_layer() {
    let mut diff_ids = Vec::new();
    for copy in [false, true] {
        let state = tempfile::tempdir().expect("state");
        let worker = open(state.path(), copy).await;
        let base = base_layer(&worker);
        let (out, _) = exec(&worker, job("same", &[base], run(CHANGES)))
            .await
            .expect("run");
        diff_ids.push(out.layer.diff_id);
    }
    assert_eq!(diff_ids[0], diff_ids[1]);
}

#[tokio::test]
async fn a_run_layer_is_unpacked_as_it_is_committed_and_equals_its_blob() {
    let state = tempfile::tempdir().expect("state");
    let worker = open(state.path(), false).await;
    let base = base_layer(&worker);
    let (out, _) = exec(
        &worker,
        job("teed", std::slice::from_ref(&base), run(CHANGES)),
    )
    .await
    .expect("run");
    // Its snapshot, whose upper dir shares the layer's inodes, is removed
    // in the background.
    worker.wait_idle().await;
    let store = worker.store();
    // The next step on this worker stacks on it as it is: no unpack.
    let kept = store.layer_dir(&out.layer.diff_id).expect("layer dir");
    assert!(kept.is_dir(), "the layer is unpacked when its step ends");
    // A worker that only has the blob makes the same directory.
    let fresh = tempfile::tempdir().expect("fresh");
    let blob = fs::File::open(store.blob_path(&out.layer.digest).expect("path")).expect("blob");
    let report = unpack_to_overlay_layer_dir(
        blob,
        fresh.path(),
        &[store.layer_dir(&base.diff_id).expect("base dir")],
        &UnpackOptions::default(),
    )
    .expect("unpack the blob");
    assert_eq!(report.diff_id, out.layer.diff_id);
    let (kept, fresh) = (describe(&kept), describe(fresh.path()));
    assert!(
        kept.iter()
            .any(|l| l.starts_with("bin/wc 20000 0:0 0 links=1 mtime=whiteout")),
        "the deletion is an overlay whiteout: {kept:#?}"
    );
    assert_eq!(kept, fresh);
    // A step stacked on both (both unpacked in the store) sees the image's
    // files and nothing of the store's own.
    let (_, log) = exec(
        &worker,
        job(
            "ls",
            &[base, out.layer],
            run("ls -a / /data | tr '\\n' ' '"),
        ),
    )
    .await
    .expect("ls");
    assert!(log.contains(" hard "), "{log}");
    assert!(!log.contains("strata"), "the store shows through: {log}");
}

#[tokio::test]
async fn a_cache_restore_cut_short_leaves_nothing_after_a_restart() {
    let state = tempfile::tempdir().expect("state");
    drop(open(state.path(), false).await);
    // What a worker killed while swapping in the fleet's copy of a cache
    // leaves: the copy it was unpacking and the one it was replacing.
    let caches = state.path().join("cache-mounts");
    for d in [".restore-0123", ".old-4567", "kept"] {
        fs::create_dir_all(caches.join(d).join("sub")).expect("mkdir");
        fs::write(caches.join(d).join("sub/f"), "x").expect("write");
    }
    let _worker = open(state.path(), false).await;
    let mut left: Vec<String> = fs::read_dir(&caches)
        .expect("cache-mounts")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".boot"))
        .collect();
    left.sort();
    assert_eq!(left, vec!["kept".to_string()]);
}

/// Runs CHANGES on `base` as job `id`, its outcome reported before the
/// layer's blob is made.
async fn run_early(worker: &Worker, id: &str, base: &LayerRef) -> strata_worker::job::JobOutcome {
    let (tx, _rx) = mpsc::channel(64);
    worker
        .run_job_early(
            job(id, std::slice::from_ref(base), run(CHANGES)),
            tx,
            CancellationToken::new(),
        )
        .await
        .expect("run")
}

#[tokio::test]
async fn the_next_step_starts_on_a_layer_before_its_blob_is_made() {
    let state = tempfile::tempdir().expect("state");
    let worker = open(state.path(), false).await;
    let base = base_layer(&worker);
    let mut early = run_early(&worker, "early", &base).await;
    let pending = early
        .pending
        .take()
        .expect("an overlay step's blob comes later");
    assert_eq!(early.layer.digest, "", "no blob yet");
    assert_eq!(pending.diff_id(), early.layer.diff_id);
    let store = worker.store();
    assert!(store.layer_dir(&early.layer.diff_id).expect("dir").is_dir());

    // A step on it now: it has the layer unpacked, and no blob to read.
    let (_, log) = exec(
        &worker,
        job(
            "on-early",
            &[base.clone(), early.layer.clone()],
            run("cat /data/f; ls /var/lib"),
        ),
    )
    .await
    .expect("a step on the layer before its blob");
    assert_eq!(log, "hello\nnew\n");

    // The blob follows, the tar the diffID named.
    let (layer, _held) = pending.make().await.expect("the blob");
    assert_eq!(layer.diff_id, early.layer.diff_id);
    let blob = fs::File::open(store.blob_path(&layer.digest).expect("path")).expect("blob");
    let fresh = tempfile::tempdir().expect("fresh");
    let report = unpack_to_overlay_layer_dir(
        blob,
        fresh.path(),
        &[store.layer_dir(&base.diff_id).expect("base dir")],
        &UnpackOptions::default(),
    )
    .expect("unpack the blob");
    assert_eq!(report.diff_id, layer.diff_id);
    assert_eq!(
        describe(&store.layer_dir(&layer.diff_id).expect("dir")),
        describe(fresh.path())
    );
    worker.wait_idle().await;
}

#[tokio::test]
async fn a_layer_whose_files_change_before_its_blob_is_made_fails_and_stores_nothing() {
    let state = tempfile::tempdir().expect("state");
    let worker = open(state.path(), false).await;
    let base = base_layer(&worker);
    let mut early = run_early(&worker, "changed", &base).await;
    let pending = early.pending.take().expect("pending");
    // The unpacked file is the snapshot's own inode: writing to it
    // changes what the blob would pack.
    let store = worker.store();
    let f = store
        .layer_dir(&early.layer.diff_id)
        .expect("dir")
        .join("var/lib/new");
    fs::write(&f, "changed\n").expect("write through the link");
    let blobs_before = fs::read_dir(state.path().join("store/blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0);
    let err = pending.make().await.expect_err("a changed layer");
    assert!(matches!(err, JobError::Changed { .. }), "{err}");
    assert!(
        err.to_string().contains(&early.layer.diff_id),
        "the error names the diffID first reported: {err}"
    );
    let blobs_after = fs::read_dir(state.path().join("store/blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(blobs_before, blobs_after, "no blob stored");
    let tmp: Vec<_> = fs::read_dir(state.path().join("store/tmp"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !tmp.iter().any(|n| n.to_string_lossy().starts_with("blob-")),
        "no half-made blob left: {tmp:?}"
    );
    // Its unpacked form is not what the diffID names: out of the store
    // at once, though held.
    let dir = store.layer_dir(&early.layer.diff_id).expect("dir");
    let diff_id = early.layer.diff_id.clone();
    store.discard_layer(&diff_id);
    assert!(!dir.exists());
    assert!(!store.layers_held().contains(&diff_id));
    drop(early);
    worker.wait_idle().await;
}

/// Whether the running kernel's release is `major.minor` or later.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").expect("kernel release");
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let running = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    running >= (major, minor)
}

#[tokio::test]
async fn a_step_runs_on_a_volatile_overlay_and_its_fsynced_file_is_in_the_layer() {
    let state = tempfile::tempdir().expect("state");
    let worker = open(state.path(), false).await;
    let base = base_layer(&worker);
    // The step's root as the kernel lists it, and a file it syncs (busybox
    // `sync -d` calls fdatasync, which a volatile overlay skips).
    let (out, log) = exec(
        &worker,
        job(
            "volatile",
            std::slice::from_ref(&base),
            run("grep ' / / ' /proc/self/mountinfo; echo kept > /synced && /bin/busybox sync -d /synced"),
        ),
    )
    .await
    .expect("run");
    assert!(
        log.contains(" overlay "),
        "the root is not an overlay: {log}"
    );
    // overlayfs has `volatile` from Linux 5.10; an older kernel refuses
    // it, and the worker mounts without it (unless the option was
    // backported: nothing is asserted there).
    if kernel_at_least(5, 10) {
        assert!(
            log.contains("volatile"),
            "the step's overlay is not mounted volatile (this kernel knows the option): {log}"
        );
    }
    worker.wait_idle().await;
    let tree = flatten(&worker, &[base, out.layer]);
    assert_eq!(
        fs::read_to_string(tree.path().join("synced")).expect("the synced file"),
        "kept\n"
    );
}

#[tokio::test]
async fn cache_mounts_persist_and_secrets_stay_out_of_layers() {
    let state = tempfile::tempdir().expect("state");
    let worker = open(state.path(), false).await;
    let base = base_layer(&worker);
    let mounts = vec![
        RunMount::Cache {
            target: "/cache".into(),
            id: "c1".into(),
            readonly: false,
            uid: 0,
            gid: 0,
            mode: 0o755,
        },
        RunMount::Secret {
            target: "/run/secrets/token".into(),
            data: b"s3cr3t".to_vec(),
            mode: 0o400,
            uid: 0,
            gid: 0,
        },
    ];
    let action = |script: &str| JobAction::Run {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        network: Network::None,
        insecure: false,
        mounts: mounts.clone(),
        inline_files: Vec::new(),
    };
    let (out, _) = exec(
        &worker,
        job(
            "c1",
            std::slice::from_ref(&base),
            action("echo 1 >> /cache/runs; cat /run/secrets/token > /dev/null; touch /made"),
        ),
    )
    .await
    .expect("run");
    let (_, log) = exec(
        &worker,
        job(
            "c2",
            std::slice::from_ref(&base),
            action("cat /cache/runs; echo 2 >> /cache/runs"),
        ),
    )
    .await
    .expect("run");
    assert_eq!(log.trim(), "1", "cache content from the first run is seen");
    let tree = flatten(&worker, &[base, out.layer]);
    assert!(tree.path().join("made").exists());
    assert!(
        !tree.path().join("cache").exists(),
        "cache mount point is not in the layer"
    );
    assert!(
        !tree.path().join("run/secrets").exists(),
        "secret mount point is not in the layer"
    );
}

#[tokio::test]
async fn a_chain_holding_a_layer_twice_still_mounts() {
    // Steps that change nothing all give the empty layer, so a chain can
    // list one layer twice; overlayfs refuses a repeated lowerdir.
    let state = tempfile::tempdir().expect("state");
    let worker = open(state.path(), false).await;
    let mut chain = vec![base_layer(&worker)];
    for name in ["noop1", "noop2", "noop3"] {
        let (out, _) = exec(&worker, job(name, &chain, run("true")))
            .await
            .unwrap_or_else(|e| panic!("{name} on {} layers: {e}", chain.len()));
        chain.push(out.layer);
    }
    assert_eq!(
        chain[2].diff_id, chain[3].diff_id,
        "both are the empty layer"
    );
    let (out, _) = exec(&worker, job("top", &chain, run("echo top > /top")))
        .await
        .expect("run on a chain holding the empty layer twice");
    chain.push(out.layer);
    let tree = flatten(&worker, &chain);
    assert_eq!(
        fs::read_to_string(tree.path().join("top")).expect("top"),
        "top\n"
    );
}

#[tokio::test]
async fn a_copy_onto_scratch_links_unchanged_context_files_and_makes_the_same_layer() {
    // Onto scratch the overlay snapshotter mounts nothing, so COPY
    // hardlinks context files whose copy would be identical instead of
    // copying their bytes; a file --chmod changes is still copied. The
    // layer must be what the copy snapshotter (always a real copy) makes,
    // and the context must be left as it was.
    use std::os::unix::fs::PermissionsExt as _;
    let ctx = tempfile::tempdir().expect("ctx");
    let root = ctx.path();
    fs::create_dir_all(root.join("data/sub")).expect("mkdir");
    fs::write(root.join("data/big"), vec![7u8; 1 << 20]).expect("write");
    fs::write(root.join("data/sub/small"), "small\n").expect("write");
    fs::set_permissions(
        root.join("data/sub/small"),
        fs::Permissions::from_mode(0o640),
    )
    .expect("chmod");
    fs::write(root.join("data/tool"), "#!/bin/sh\n").expect("write");
    fs::set_permissions(root.join("data/tool"), fs::Permissions::from_mode(0o4755)).expect("chmod");
    fs::hard_link(root.join("data/big"), root.join("data/big-again")).expect("link");
    // SOURCE_DATE_EPOCH clamps every mtime the copy writes, the directories
    // it creates included; files already at that time copy unchanged.
    for f in ["data/big", "data/sub/small", "data/tool"] {
        fs::File::options()
            .write(true)
            .open(root.join(f))
            .and_then(|f| f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(EPOCH as u64)))
            .expect("set mtime");
    }
    let copy_action = |chmod: &str| JobAction::Copy {
        from: FileSource::Dir(root.to_path_buf()),
        sources: vec!["data".into()],
        dest: "/data/".into(),
        chown: String::new(),
        chmod: chmod.into(),
        exclude: Vec::new(),
        add: false,
        unpack: None,
        checksum: None,
        parents: false,
        link: false,
        inline: Vec::new(),
    };
    let ctime = |p: &str| {
        let m = fs::metadata(root.join(p)).expect("stat");
        (m.ctime(), m.ctime_nsec())
    };
    let mut layers = Vec::new();
    for copy in [true, false] {
        let state = tempfile::tempdir_in(root.parent().expect("parent")).expect("state");
        let worker = open(state.path(), copy).await;
        for chmod in ["", "600"] {
            let before = ctime("data/sub/small");
            std::thread::sleep(Duration::from_millis(20));
            let mut j = job(
                &format!("scratch-copy-{copy}-{chmod}"),
                &[],
                copy_action(chmod),
            );
            j.source_date_epoch = None;
            let (out, _) = exec(&worker, j).await.expect("copy onto scratch");
            let linked = ctime("data/sub/small") != before;
            assert_eq!(
                linked,
                !copy && chmod.is_empty(),
                "hardlinked only by the overlay snapshotter and only without --chmod \
                 (copy snapshotter: {copy}, --chmod={chmod})"
            );
            let tree = flatten(&worker, std::slice::from_ref(&out.layer));
            let small = fs::metadata(tree.path().join("data/sub/small")).expect("small");
            let want = if chmod.is_empty() { 0o640 } else { 0o600 };
            assert_eq!(small.mode() & 0o7777, want);
            let tool = fs::metadata(tree.path().join("data/tool")).expect("tool");
            assert_eq!(
                tool.mode() & 0o7777,
                if chmod.is_empty() { 0o4755 } else { 0o600 }
            );
            let big = fs::metadata(tree.path().join("data/big")).expect("big");
            let again = fs::metadata(tree.path().join("data/big-again")).expect("again");
            assert_eq!(big.ino(), again.ino(), "the context's hardlink is kept");
            assert_eq!(big.nlink(), 2, "and nothing else shares the inode");
            layers.push((chmod, describe(tree.path())));
        }
        drop(worker);
    }
    assert_eq!(
        layers[0], layers[2],
        "same layer either way without --chmod"
    );
    assert_eq!(layers[1], layers[3], "same layer either way with --chmod");
    assert_eq!(
        fs::read(root.join("data/big")).expect("big"),
        vec![7u8; 1 << 20],
        "the context is untouched"
    );
    assert_eq!(
        fs::metadata(root.join("data/big")).expect("big").nlink(),
        2,
        "no link into a snapshot outlives it"
    );
}

/// Every entry under `root`: path, type and mode, owner, size, link count,
/// content (a symlink's target, a device's numbers), xattrs, and the mtime
/// of everything but directories.
fn describe(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("list") {
            let path = entry.expect("entry").path();
            let m = fs::symlink_metadata(&path).expect("stat");
            let rel = path.strip_prefix(root).expect("under root").display();
            if m.is_dir() {
                stack.push(path.clone());
                out.push(format!("{rel} {:o} {}:{}", m.mode(), m.uid(), m.gid()));
            } else {
                let content = if m.is_file() {
                    let data = fs::read(&path).expect("read");
                    format!("{:x}", data.iter().map(|&b| u64::from(b)).sum::<u64>())
                } else if m.is_symlink() {
                    format!("-> {}", fs::read_link(&path).expect("readlink").display())
                } else {
                    format!("rdev={}", m.rdev())
                };
                // An overlay whiteout is made when the layer is unpacked:
                // its time is not the layer's.
                let mtime = if m.file_type().is_char_device() && m.rdev() == 0 {
                    "whiteout".to_string()
                } else {
                    format!("{}.{}", m.mtime(), m.mtime_nsec())
                };
                let mut xattrs: Vec<String> = xattr::list(&path)
                    .expect("xattrs")
                    .map(|n| n.to_string_lossy().into_owned())
                    .collect();
                xattrs.sort();
                out.push(format!(
                    "{rel} {:o} {}:{} {} links={} mtime={mtime} {content} {xattrs:?}",
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    m.len(),
                    m.nlink(),
                ));
            }
        }
    }
    out.sort();
    out
}
