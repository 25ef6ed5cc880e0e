//! Limits with the real binaries on loopback:
//!
//! - the scheduler's `--max-context-bytes` bounds what a client can make
//!   it store: one context file over it, or an upload whose files add up
//!   to more, fails with a message naming the limit and the file or blob;
//!   a context under it builds;
//! - StartBuild compares the sizes a manifest declares with the uploaded
//!   blobs', and reads a Dockerfile sent by digest only up to the
//!   Dockerfile limit;
//! - a worker's `--max-store-bytes` keeps its local store under the limit
//!   after builds whose layers add up to several times it, and a later
//!   build on an evicted layer still works;
//! - a worker whose disk fills while it fetches a step's blobs or
//!   materialises its context fails the step saying the disk is full;
//! - a worker's `--max-layer-bytes` and `--max-add-bytes` stop a layer or
//!   an ADD archive that unpacks to more, naming the limit and the flag.

use sha2::{Digest as _, Sha256};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use strata_proto::build::v1 as pb;
use strata_proto::build::v1::build_service_client::BuildServiceClient;
use strata_proto::common::v1 as common;
use strata_tests::base_image::push_busybox;
use strata_tests::procs::{SchedulerProc, WorkerProc, wait_ready};
use strata_tests::registry::TestRegistry;
use tonic::Code;

/// The scheduler's context limit in these tests.
const LIMIT: u64 = 8 << 20;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn strata(url: &str, args: &[&str]) -> Output {
    Command::new(strata_tests::bin("strata"))
        .env_remove("STRATA_TOKEN")
        .arg("--scheduler")
        .arg(url)
        .args(args)
        .output()
        .expect("run strata")
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A context of `Dockerfile` and `files` (name, size in bytes; each file
/// distinct content).
/// Builds `dockerfile` (a context in `work/name`) into `work/name-out`,
/// which it returns; a failure shows the output and `logs()`.
fn build_into_dir(
    url: &str,
    work: &Path,
    name: &str,
    dockerfile: &str,
    logs: impl Fn() -> String,
) -> std::path::PathBuf {
    let ctx = context(&work.join(name), dockerfile, &[]);
    let out = work.join(format!("{name}-out"));
    let o = strata(
        url,
        &[
            "build",
            "--progress",
            "plain",
            "-o",
            &format!("type=local,dest={}", out.display()),
            &ctx,
        ],
    );
    assert!(o.status.success(), "{}\n{}", text(&o), logs());
    out
}

fn context(dir: &Path, dockerfile: &str, files: &[(&str, usize)]) -> String {
    std::fs::create_dir_all(dir).expect("context");
    std::fs::write(dir.join("Dockerfile"), dockerfile).expect("Dockerfile");
    for (name, size) in files {
        let mut bytes = name.as_bytes().repeat(size / name.len() + 1);
        bytes.truncate(*size);
        std::fs::write(dir.join(name), bytes).expect("context file");
    }
    dir.to_str().expect("utf-8").to_string()
}

async fn client(url: String) -> BuildServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(url)
        .expect("url")
        .connect()
        .await
        .expect("connect");
    BuildServiceClient::new(channel)
        .max_decoding_message_size(strata_proto::MAX_MESSAGE_SIZE)
        .max_encoding_message_size(strata_proto::MAX_MESSAGE_SIZE)
}

/// Uploads `bytes` as one blob, in 1 MiB chunks; its digest.
async fn upload(
    client: &mut BuildServiceClient<tonic::transport::Channel>,
    bytes: &[u8],
) -> String {
    let d = digest(bytes);
    let n = bytes.len().div_ceil(1 << 20).max(1);
    let messages: Vec<pb::UploadBlobsRequest> = (0..n)
        .map(|i| {
            let start = i << 20;
            let end = bytes.len().min(start + (1 << 20));
            pb::UploadBlobsRequest {
                chunks: vec![pb::UploadChunk {
                    digest: d.clone(),
                    offset: start as u64,
                    data: bytes[start..end].to_vec(),
                    total_size: bytes.len() as u64,
                    last: i + 1 == n,
                }],
            }
        })
        .collect();
    let resp = client
        .upload_blobs(tonic::codegen::tokio_stream::iter(messages))
        .await
        .expect("upload")
        .into_inner();
    assert!(
        resp.results.iter().all(|r| r.ok),
        "upload failed: {:?}",
        resp.results
    );
    d
}

/// StartBuild of `dockerfile` with a manifest of one file `name` declared
/// as `size` bytes of blob `blob`; the refusal's code and message.
async fn start(
    client: &mut BuildServiceClient<tonic::transport::Channel>,
    dockerfile: pb::build_request::Dockerfile,
    file: Option<(&str, &str, u64)>,
) -> (Code, String) {
    let entries = file
        .map(|(name, blob, size)| common::ContextEntry {
            path: name.to_string(),
            kind: common::EntryKind::File as i32,
            mode: 0o644,
            size,
            digest: blob.to_string(),
            ..Default::default()
        })
        .into_iter()
        .collect();
    let req = pb::BuildRequest {
        dockerfile: Some(dockerfile),
        context: Some(common::ContextRef {
            manifest: Some(common::context_ref::Manifest::Inline(
                common::ContextManifest {
                    entries,
                    ..Default::default()
                },
            )),
        }),
        ..Default::default()
    };
    match client.start_build(req).await {
        Ok(_) => (Code::Ok, String::new()),
        Err(s) => (s.code(), s.message().to_string()),
    }
}

#[test]
fn the_context_limit_bounds_what_a_client_can_store() {
    let dir = tempfile::tempdir().expect("dir");
    let sched = SchedulerProc::start(
        dir.path(),
        &["--max-context-bytes".into(), LIMIT.to_string()],
        &[],
    );
    let url = format!("http://127.0.0.1:{}", sched.port);
    let worker = WorkerProc::start(dir.path(), "worker-1", &url, &[], &[]);
    wait_ready(worker.metrics_port, "/readyz", "the worker");
    let logs = || format!("{}\n{}", sched.proc.log(), worker.proc.log());

    // Under the limit: the build runs.
    let ok = context(
        &dir.path().join("ok"),
        "FROM scratch\nCOPY a.bin b.bin /\n",
        &[("a.bin", 3 << 20), ("b.bin", 3 << 20)],
    );
    let o = strata(&url, &["build", "--progress", "plain", &ok]);
    assert!(o.status.success(), "{}\n{}", text(&o), logs());

    // One file over it: named, with the limit and the flag.
    let big = context(
        &dir.path().join("big"),
        "FROM scratch\nCOPY big.bin /\n",
        &[("big.bin", (LIMIT + 1) as usize)],
    );
    let o = strata(&url, &["build", "--progress", "plain", &big]);
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    for needle in [
        "big.bin",
        "holds 8.0 MiB (8388609 bytes), more than this scheduler's limit of 8 MiB for one blob",
        "--max-context-bytes",
    ] {
        assert!(out.contains(needle), "no {needle:?} in: {out}");
    }

    // Files each under it, together over it: the upload stops, naming the
    // limit and the blob that passed it.
    let many = context(
        &dir.path().join("many"),
        "FROM scratch\nCOPY . /\n",
        &[("c.bin", 3 << 20), ("d.bin", 3 << 20), ("e.bin", 3 << 20)],
    );
    let o = strata(&url, &["build", "--progress", "plain", &many]);
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    for needle in [
        "limit of 8 MiB for a build context",
        "--max-context-bytes",
        "at blob sha256:",
        ".dockerignore",
    ] {
        assert!(out.contains(needle), "no {needle:?} in: {out}");
    }
}

#[test]
fn start_build_checks_declared_sizes_and_bounds_a_dockerfile_sent_by_digest() {
    let dir = tempfile::tempdir().expect("dir");
    let sched = SchedulerProc::start(
        dir.path(),
        &["--max-context-bytes".into(), LIMIT.to_string()],
        &[],
    );
    let url = format!("http://127.0.0.1:{}", sched.port);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut c = client(url).await;
        let dockerfile = || {
            pb::build_request::Dockerfile::DockerfileContent(b"FROM scratch\nCOPY f /\n".to_vec())
        };
        let blob = upload(&mut c, &[7u8; 3 << 20]).await;

        // A manifest that understates a file to pass the context limit.
        let (code, msg) = start(&mut c, dockerfile(), Some(("f", &blob, 10))).await;
        assert_eq!(code, Code::InvalidArgument, "{msg}");
        for needle in ["\"f\"", "declared as 10 bytes", &blob, "holds 3145728"] {
            assert!(msg.contains(needle), "no {needle:?} in: {msg}");
        }

        // One that declares more than the limit.
        let (code, msg) = start(&mut c, dockerfile(), Some(("f", &blob, LIMIT + 1))).await;
        assert_eq!(code, Code::InvalidArgument, "{msg}");
        for needle in [
            "more than this scheduler's limit of 8 MiB",
            "--max-context-bytes",
        ] {
            assert!(msg.contains(needle), "no {needle:?} in: {msg}");
        }

        // The true size is accepted.
        let (code, msg) = start(&mut c, dockerfile(), Some(("f", &blob, 3 << 20))).await;
        assert_eq!(code, Code::Ok, "{msg}");

        // A Dockerfile by digest over the Dockerfile limit (4 MiB) is
        // refused from its size, not read.
        let mut huge = b"FROM scratch\n".to_vec();
        huge.resize(5 << 20, b'#');
        let huge = upload(&mut c, &huge).await;
        let (code, msg) = start(
            &mut c,
            pb::build_request::Dockerfile::DockerfileDigest(huge.clone()),
            None,
        )
        .await;
        assert_eq!(code, Code::InvalidArgument, "{msg}");
        for needle in ["the Dockerfile", &huge, "holds 5 MiB", "limit of 4 MiB"] {
            assert!(msg.contains(needle), "no {needle:?} in: {msg}");
        }
    });
}

/// Bytes of the files under `dir` (apparent sizes), not following links.
fn bytes_under(dir: &Path) -> u64 {
    let Ok(read) = std::fs::read_dir(dir) else {
        return 0;
    };
    read.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// What the worker's local store holds: its blobs and unpacked layers.
fn store_bytes(state: &Path) -> u64 {
    bytes_under(&state.join("store/blobs")) + bytes_under(&state.join("store/layers"))
}

#[test]
fn a_worker_store_stays_under_its_limit_and_rebuilds_still_work() {
    const MIB: u64 = 1 << 20;
    const STORE_LIMIT: u64 = 10 * MIB;
    // Each build adds a 3 MiB layer of random bytes: its blob and its
    // unpacked directory, 6 MiB in the store, on the 3 MiB busybox base.
    const BUILDS: usize = 4;
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let dir = tempfile::tempdir().expect("dir");
    let sched = SchedulerProc::start(dir.path(), &[], &[]);
    let url = format!("http://127.0.0.1:{}", sched.port);
    let state = dir.path().join("worker-state");
    let worker = WorkerProc::start_in(
        dir.path(),
        "worker-1",
        &url,
        &state,
        &["--max-store-bytes".into(), STORE_LIMIT.to_string()],
        &[],
    );
    wait_ready(worker.metrics_port, "/readyz", "the worker");
    let logs = || format!("{}\n{}", sched.proc.log(), worker.proc.log());
    let layer = |n: usize| {
        format!(
            "FROM {base}\nRUN head -c {} /dev/urandom > /data-{n}\n",
            3 * MIB
        )
    };
    let build =
        |name: &str, dockerfile: &str| build_into_dir(&url, dir.path(), name, dockerfile, logs);
    // Eviction runs once a job is done, maybe just after its build ends.
    let settles_under_limit = |after: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let held = store_bytes(&state);
            if held <= STORE_LIMIT {
                return held;
            }
            assert!(
                Instant::now() < deadline,
                "after {after} the worker's store holds {held} bytes, over its --max-store-bytes {STORE_LIMIT}\n{}",
                logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    for n in 0..BUILDS {
        build(&format!("layer-{n}"), &layer(n));
        settles_under_limit(&format!("build {n}"));
    }
    assert!(
        BUILDS as u64 * 6 * MIB > 2 * STORE_LIMIT,
        "the builds must make more than the store may hold"
    );
    assert!(
        worker
            .proc
            .log()
            .contains("evicted least recently used layers"),
        "nothing was evicted:\n{}",
        logs()
    );

    // A build on the first layer, long evicted: the worker fetches it
    // again and the step reads it whole.
    let out = build(
        "on-evicted",
        &format!("{}RUN wc -c < /data-0 > /size\n", layer(0)),
    );
    let size = std::fs::read_to_string(out.join("size")).expect("/size in the image");
    assert_eq!(size.trim(), (3 * MIB).to_string());
    settles_under_limit("the build on an evicted layer");
}

/// A worker's layer blobs zeroed on its disk (they are not synced: what a
/// power loss can leave) and its unpacked layers gone (as after a reboot):
/// the next step on them finds each blob damaged as it unpacks it, fetches
/// it again, and builds; before, the step failed on this worker for good.
#[test]
fn layer_blobs_damaged_on_a_worker_s_disk_are_fetched_again() {
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let dir = tempfile::tempdir().expect("dir");
    let sched = SchedulerProc::start(dir.path(), &[], &[]);
    let url = format!("http://127.0.0.1:{}", sched.port);
    let state = dir.path().join("worker-state");
    let worker = WorkerProc::start_in(dir.path(), "worker-1", &url, &state, &[], &[]);
    wait_ready(worker.metrics_port, "/readyz", "the worker");
    let logs = || format!("{}\n{}", sched.proc.log(), worker.proc.log());
    let build =
        |name: &str, dockerfile: &str| build_into_dir(&url, dir.path(), name, dockerfile, logs);
    let first = format!("FROM {base}\nRUN echo one > /one\n");
    build("first", &first);

    let mut damaged = Vec::new();
    let mut dirs = vec![state.join("store/blobs")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("store blobs").flatten() {
            let path = e.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).expect("blob");
            let layer =
                bytes.starts_with(&[0x1f, 0x8b]) || bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
            if layer {
                std::fs::write(&path, vec![0u8; bytes.len()]).expect("zeroing a blob");
                damaged.push(path);
            }
        }
    }
    assert!(damaged.len() >= 2, "base and RUN layers: {damaged:?}");
    for e in std::fs::read_dir(state.join("store/layers"))
        .expect("layers")
        .flatten()
    {
        std::fs::remove_dir_all(e.path()).expect("removing an unpacked layer");
    }

    let out = build("second", &format!("{first}RUN cat /one > /two\n"));
    assert_eq!(
        std::fs::read_to_string(out.join("two")).expect("/two in the image"),
        "one\n"
    );
    assert!(
        worker.proc.log().contains("fetching the layer again"),
        "{}",
        logs()
    );
}

/// A tmpfs of `size` (e.g. `24m`) for a worker's state, unmounted on drop.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mount a {size} tmpfs (the test runs as root)");
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// Builds `COPY big /big` (a `file_mb` MB context file) on a worker whose
/// state is a `disk` tmpfs; the failed build's output and the worker's log.
fn build_on_small_disk(disk: &str, file_mb: usize) -> (String, String) {
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let dir = tempfile::tempdir().expect("dir");
    // One attempt: the failure is the test's subject, not a retry.
    let sched = SchedulerProc::start(dir.path(), &["--max-attempts".into(), "1".into()], &[]);
    let url = format!("http://127.0.0.1:{}", sched.port);
    let disk = SmallDisk::mount(disk);
    let worker = WorkerProc::start_in(dir.path(), "small", &url, disk.0.path(), &[], &[]);
    wait_ready(worker.metrics_port, "/readyz", "the worker");
    let ctx = context(
        &dir.path().join("ctx"),
        &format!("FROM {base}\nCOPY big /big\n"),
        &[("big", file_mb * 1_000_000)],
    );
    let o = strata(&url, &["build", "--progress", "plain", &ctx]);
    let out = text(&o);
    assert!(!o.status.success(), "{out}\n{}", worker.proc.log());
    let log = worker.proc.log();
    drop(worker);
    (out, log)
}

fn assert_says_the_disk_is_full(out: &str, log: &str) {
    for needle in [
        "the worker's disk is full",
        "No space left on device",
        "--max-store-bytes",
        "Dockerfile:2",
    ] {
        assert!(out.contains(needle), "no {needle:?} in:\n{out}\n{log}");
    }
}

#[test]
fn a_disk_filling_up_while_fetching_a_steps_blobs_fails_it_saying_so() {
    // The 20 MB context file does not fit on the 16 MiB disk.
    let (out, log) = build_on_small_disk("16m", 20);
    assert_says_the_disk_is_full(&out, &log);
    assert!(
        out.contains("fetching the build context's files"),
        "not while fetching:\n{out}\n{log}"
    );
}

#[test]
fn a_disk_filling_up_while_materialising_the_context_fails_the_step_saying_so() {
    // The 20 MB context file fits on the 32 MiB disk once, not twice
    // (its blob and its copy in the materialised context).
    let (out, log) = build_on_small_disk("32m", 20);
    assert_says_the_disk_is_full(&out, &log);
    assert!(
        out.contains("materialising the build context: big (sha256:"),
        "not while materialising the context:\n{out}\n{log}"
    );
}

#[test]
fn worker_flags_bound_what_a_layer_or_an_add_archive_may_unpack_to() {
    const LIMIT: u64 = 1_000_000;
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let dir = tempfile::tempdir().expect("dir");
    let sched = SchedulerProc::start(dir.path(), &["--max-attempts".into(), "1".into()], &[]);
    let url = format!("http://127.0.0.1:{}", sched.port);
    let worker = WorkerProc::start(
        dir.path(),
        "worker-1",
        &url,
        &[
            "--max-layer-bytes".into(),
            LIMIT.to_string(),
            "--max-add-bytes".into(),
            LIMIT.to_string(),
        ],
        &[],
    );
    wait_ready(worker.metrics_port, "/readyz", "the worker");
    let logs = || format!("{}\n{}", sched.proc.log(), worker.proc.log());

    // An ADD archive of 2 MB of zeros: small in the context, over the
    // limit once extracted.
    let ctx = context(
        &dir.path().join("add"),
        "FROM scratch\nADD bomb.tar /\n",
        &[],
    );
    let mut tar = tar::Builder::new(Vec::new());
    let zeros = vec![0u8; 2_000_000];
    let mut header = tar::Header::new_gnu();
    header.set_size(zeros.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "zeros", zeros.as_slice())
        .expect("tar entry");
    std::fs::write(
        Path::new(&ctx).join("bomb.tar"),
        tar.into_inner().expect("tar"),
    )
    .expect("bomb.tar");
    let o = strata(&url, &["build", "--progress", "plain", &ctx]);
    let out = text(&o);
    assert!(!o.status.success(), "{out}\n{}", logs());
    for needle in [
        "\"bomb.tar\"",
        "exceeds the limit of 1000000 bytes",
        "--max-add-bytes",
        "Dockerfile:2",
    ] {
        assert!(out.contains(needle), "no {needle:?} in:\n{out}\n{}", logs());
    }

    // The busybox base layer unpacks to about 2 MB.
    let ctx = context(
        &dir.path().join("layer"),
        &format!("FROM {base}\nRUN true\n"),
        &[],
    );
    let o = strata(&url, &["build", "--progress", "plain", &ctx]);
    let out = text(&o);
    assert!(!o.status.success(), "{out}\n{}", logs());
    for needle in [
        "this worker's limit of 1000000 bytes",
        "--max-layer-bytes",
        "Dockerfile:2",
    ] {
        assert!(out.contains(needle), "no {needle:?} in:\n{out}\n{}", logs());
    }
}
