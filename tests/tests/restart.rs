//! A scheduler killed mid-build (SIGKILL) and started again on the same
//! Redis and S3: the build resumes under its id, the client reattaches and
//! sees every event exactly once, steps that had finished are not run
//! again, and the image is the one an uninterrupted build makes.

use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use strata_tests::base_image::push_busybox;
use strata_tests::procs::{SchedulerProc, WorkerProc, wait_ready};
use strata_tests::registry::TestRegistry;
use strata_tests::services::{RedisServer, S3Server, scheduler_args};

fn events(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn spawn_build(url: &str, ctx: &std::path::Path, out: &std::path::Path, meta: &str) -> Child {
    Command::new(strata_tests::bin("strata"))
        .args(["--scheduler", url, "build", "--progress", "json"])
        .args(["--metadata-file", meta])
        .arg(ctx)
        .stdout(std::fs::File::create(out).expect("client output"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("strata build")
}

#[test]
fn a_killed_scheduler_resumes_its_builds_and_the_client_reattaches() {
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let redis = RedisServer::start();
    let s3 = S3Server::start("restart");
    let dir = tempfile::tempdir().expect("dir");
    let env = s3.process_env();
    let shared = scheduler_args(&redis, &s3, "r/");
    let sched = SchedulerProc::start(dir.path(), &shared, &env);
    let port = sched.port;
    let url = format!("http://127.0.0.1:{port}");
    let worker = WorkerProc::start(dir.path(), "worker-1", &url, &[], &env);
    wait_ready(worker.metrics_port, "/readyz", "worker");

    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).expect("ctx");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {base}\n\
             RUN echo first > /first\n\
             RUN i=1; while [ $i -le 30 ]; do echo line-$i; i=$((i+1)); busybox sleep 0.2; done; echo slow > /slow\n\
             RUN echo last > /last\n"
        ),
    )
    .expect("Dockerfile");
    let out = dir.path().join("client.jsonl");
    let meta = dir.path().join("meta.json");
    let mut client = spawn_build(&url, &ctx, &out, meta.to_str().expect("utf-8"));

    // Kill the scheduler while the slow step is running.
    let deadline = Instant::now() + Duration::from_secs(90);
    while !std::fs::read_to_string(&out)
        .unwrap_or_default()
        .contains("line-5")
    {
        assert!(
            Instant::now() < deadline,
            "the slow step never started:\n{}\n{}",
            std::fs::read_to_string(&out).unwrap_or_default(),
            sched.proc.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(sched); // SIGKILL
    let sched = SchedulerProc::start_on(dir.path(), port, &shared, &env);

    let status = client.wait().expect("client");
    let seen = events(&out);
    assert!(
        status.success(),
        "the build did not survive the restart:\n{}\n{}\n{}",
        std::fs::read_to_string(&out).unwrap_or_default(),
        sched.proc.log(),
        worker.proc.log()
    );
    // Every event once, in order, none missing.
    let seqs: Vec<u64> = seen.iter().filter_map(|e| e["sequence"].as_u64()).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "sequence numbers after the reattach");
    assert!(
        seen.iter()
            .any(|e| e.to_string().contains("the scheduler restarted")),
        "no word of the restart in the stream"
    );
    // The first step finished before the kill: it was not run again.
    let m: Value = serde_json::from_slice(&std::fs::read(&meta).expect("metadata")).expect("json");
    let status_of = |needle: &str| {
        m["strata.steps"]
            .as_array()
            .expect("steps")
            .iter()
            .find(|s| {
                s["instruction"]
                    .as_str()
                    .is_some_and(|i| i.contains(needle))
            })
            .and_then(|s| s["status"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(status_of("echo first"), "cached", "{m:#}");
    assert_eq!(status_of("echo last"), "executed", "{m:#}");

    // The same Dockerfile built again, uninterrupted, is the same image.
    let again = dir.path().join("again.jsonl");
    let meta2 = dir.path().join("meta2.json");
    let status = spawn_build(&url, &ctx, &again, meta2.to_str().expect("utf-8"))
        .wait()
        .expect("client");
    assert!(status.success());
    let m2: Value =
        serde_json::from_slice(&std::fs::read(&meta2).expect("metadata")).expect("json");
    assert_eq!(
        m["containerimage.config.digest"], m2["containerimage.config.digest"],
        "the resumed build's image differs from a rebuild's"
    );
}

#[test]
fn a_worker_told_to_stop_finishes_its_step_first() {
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let dir = tempfile::tempdir().expect("dir");
    let sched = SchedulerProc::start(dir.path(), &[], &[]);
    let url = format!("http://127.0.0.1:{}", sched.port);
    let mut worker = WorkerProc::start(
        dir.path(),
        "worker-1",
        &url,
        &["--drain-timeout".into(), "60".into()],
        &[],
    );
    wait_ready(worker.metrics_port, "/readyz", "worker");
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).expect("ctx");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {base}\n\
             RUN i=1; while [ $i -le 15 ]; do echo tick-$i; i=$((i+1)); busybox sleep 0.2; done; echo done > /done\n"
        ),
    )
    .expect("Dockerfile");
    let out = dir.path().join("client.jsonl");
    let meta = dir.path().join("meta.json");
    let mut client = spawn_build(&url, &ctx, &out, meta.to_str().expect("utf-8"));
    let deadline = Instant::now() + Duration::from_secs(90);
    while !std::fs::read_to_string(&out)
        .unwrap_or_default()
        .contains("tick-3")
    {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    // SIGTERM mid-step: the worker finishes the step, reports it, leaves.
    worker.proc.signal("TERM");
    let status = client.wait().expect("client");
    assert!(
        status.success(),
        "{}\n{}\n{}",
        std::fs::read_to_string(&out).unwrap_or_default(),
        sched.proc.log(),
        worker.proc.log()
    );
    let m: Value = serde_json::from_slice(&std::fs::read(&meta).expect("metadata")).expect("json");
    let step = &m["strata.steps"][0];
    assert_eq!(step["status"], "executed", "{m:#}");
    assert_eq!(step["worker_id"], "worker-1", "{m:#}");
    let exited = worker.proc.wait_exit(Duration::from_secs(20));
    assert!(
        exited.is_some_and(|s| s.success()),
        "the worker did not exit cleanly after draining: {exited:?}\n{}",
        worker.proc.log()
    );
    assert!(worker.proc.log().contains("finishing the running jobs"));
}

/// A tmpfs mounted for the test, unmounted when dropped.
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

#[test]
fn a_full_worker_disk_fails_the_step_saying_so() {
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let dir = tempfile::tempdir().expect("dir");
    let sched = SchedulerProc::start(dir.path(), &["--max-attempts".into(), "1".into()], &[]);
    let url = format!("http://127.0.0.1:{}", sched.port);
    // 48 MiB of state: room for the step's 30 MB, not for its layer too.
    let disk = SmallDisk::mount("48m");
    let worker = WorkerProc::start_in(dir.path(), "small", &url, disk.0.path(), &[], &[]);
    wait_ready(worker.metrics_port, "/readyz", "worker");
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).expect("ctx");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nRUN head -c 30000000 /dev/urandom > /noise\n"),
    )
    .expect("Dockerfile");
    let o = Command::new(strata_tests::bin("strata"))
        .args(["--scheduler", &url, "build", "--progress", "plain"])
        .arg(&ctx)
        .output()
        .expect("strata build");
    let t = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("the worker's disk is full"),
        "the error does not say the disk is full:\n{t}\n{}",
        worker.proc.log()
    );
    assert!(t.contains("Dockerfile:2"), "{t}");
    drop(worker);
}
