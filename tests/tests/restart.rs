//! A scheduler killed mid-build (SIGKILL) and started again on the same
//! Redis and S3, killed while Redis holds back writes so its event journal
//! lags: the build resumes under its id, the client reattaches and sees
//! every event exactly once and every line of every step (the interrupted
//! step's again as it re-runs), steps that had finished are not run again,
//! and the image is the one an uninterrupted build makes.

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

/// Each step attempt's log lines, in stream order: `(step_id, lines)`, a
/// new attempt at each `step_started`. An attempt's chunks are joined
/// before splitting, so a line cut across two chunks still counts once.
fn attempt_logs(seen: &[Value]) -> Vec<(String, Vec<String>)> {
    let mut attempts: Vec<(String, String)> = Vec::new();
    for e in seen {
        let step = e["step_id"].as_str().unwrap_or_default();
        match e["type"].as_str() {
            Some("step_started") => attempts.push((step.to_string(), String::new())),
            Some("step_log") => {
                let data = e["data"].as_str().unwrap_or_default();
                match attempts.iter_mut().rev().find(|(s, _)| s == step) {
                    Some((_, text)) => text.push_str(data),
                    None => attempts.push((step.to_string(), data.to_string())),
                }
            }
            _ => {}
        }
    }
    attempts
        .into_iter()
        .map(|(step, text)| (step, text.lines().map(str::to_string).collect()))
        .collect()
}

/// Every line starting with `prefix` the client printed, in order.
fn lines_with(attempts: &[(String, Vec<String>)], prefix: &str) -> Vec<String> {
    attempts
        .iter()
        .flat_map(|(_, lines)| lines.iter())
        .filter(|l| l.starts_with(prefix))
        .cloned()
        .collect()
}

fn numbered(prefix: &str, n: u32) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}{i}")).collect()
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
             RUN i=1; while [ $i -le 8 ]; do echo early-$i; i=$((i+1)); done; echo early > /early\n\
             RUN i=1; while [ $i -le 30 ]; do echo line-$i; i=$((i+1)); busybox sleep 0.2; done; echo slow > /slow\n\
             RUN i=1; while [ $i -le 5 ]; do echo late-$i; i=$((i+1)); done; echo last > /last\n"
        ),
    )
    .expect("Dockerfile");
    let out = dir.path().join("client.jsonl");
    let meta = dir.path().join("meta.json");
    let mut client = spawn_build(&url, &ctx, &out, meta.to_str().expect("utf-8"));

    // Kill the scheduler while the slow step is running...
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
    // ...at a moment its journal lags behind: Redis holds every write for a
    // while, the step goes on printing, and the scheduler dies before any
    // of those lines reach the journal. A scheduler that showed the client
    // events the journal lacks numbers the resumed build's events again
    // from where the journal ends, and the client drops them as repeats.
    let paused = redis.command(&["CLIENT", "PAUSE", "10000", "WRITE"]);
    assert!(paused.starts_with("+OK"), "CLIENT PAUSE: {paused}");
    std::thread::sleep(Duration::from_millis(1500));
    drop(sched); // SIGKILL
    let unpaused = redis.command(&["CLIENT", "UNPAUSE"]);
    assert!(unpaused.starts_with("+OK"), "CLIENT UNPAUSE: {unpaused}");
    let sched = SchedulerProc::start_on(dir.path(), port, &shared, &env);

    let status = client.wait().expect("client");
    let seen = events(&out);
    let context = || {
        format!(
            "{}\n{}\n{}",
            std::fs::read_to_string(&out).unwrap_or_default(),
            sched.proc.log(),
            worker.proc.log()
        )
    };
    assert!(
        status.success(),
        "the build did not survive the restart:\n{}",
        context()
    );
    // Every event once, in order, none missing.
    let seqs: Vec<u64> = seen.iter().filter_map(|e| e["sequence"].as_u64()).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "sequence numbers after the reattach");
    let restart = seen
        .iter()
        .position(|e| e.to_string().contains("the scheduler restarted"))
        .unwrap_or_else(|| panic!("no word of the restart in the stream:\n{}", context()));
    // The build went on after the reattach: the slow step started again
    // and the last one ran, both seen by the client.
    let after = &seen[restart..];
    assert!(
        after.iter().any(|e| e["type"] == "step_started"),
        "no step started after the restart:\n{}",
        context()
    );
    assert!(
        after.iter().any(|e| e["type"] == "build_finished"),
        "{}",
        context()
    );

    // Every line of every step: a step that finished before the kill
    // once, the interrupted one complete in its last attempt (an earlier,
    // cut attempt shows a beginning of it, nothing else), the one after the
    // restart once.
    let attempts = attempt_logs(&seen);
    assert_eq!(
        lines_with(&attempts, "early-"),
        numbered("early-", 8),
        "{}",
        context()
    );
    assert_eq!(
        lines_with(&attempts, "late-"),
        numbered("late-", 5),
        "{}",
        context()
    );
    let slow: Vec<&Vec<String>> = attempts
        .iter()
        .map(|(_, lines)| lines)
        .filter(|lines| lines.iter().any(|l| l.starts_with("line-")))
        .collect();
    let (last, cut) = slow.split_last().expect("the slow step's log");
    assert_eq!(
        **last,
        numbered("line-", 30),
        "the last attempt's log:\n{}",
        context()
    );
    assert!(
        cut.first().is_some_and(|first| first.len() >= 5),
        "the lines shown before the kill are gone: {slow:?}\n{}",
        context()
    );
    for lines in cut {
        assert!(
            **lines == numbered("line-", lines.len() as u32),
            "an interrupted attempt's log is not a beginning of the step's: {lines:?}\n{}",
            context()
        );
    }
    // One build, every step ended once, every run its own job id.
    let count = |ty: &str| seen.iter().filter(|e| e["type"] == ty).count();
    assert_eq!(count("build_started"), 1, "{}", context());
    let mut ends: Vec<&str> = seen
        .iter()
        .filter(|e| {
            ["step_done", "step_cached", "step_cancelled"]
                .contains(&e["type"].as_str().unwrap_or(""))
                || (e["type"] == "step_failed" && e["will_retry"] == false)
        })
        .filter_map(|e| e["step_id"].as_str())
        .collect();
    let all = ends.len();
    ends.sort_unstable();
    ends.dedup();
    assert_eq!(ends.len(), all, "a step ended twice:\n{}", context());
    let mut jobs: Vec<&str> = seen
        .iter()
        .filter(|e| e["type"] == "step_started")
        .filter_map(|e| e["job_id"].as_str())
        .collect();
    let runs = jobs.len();
    jobs.sort_unstable();
    jobs.dedup();
    assert_eq!(
        jobs.len(),
        runs,
        "two runs under one job id:\n{}",
        context()
    );
    // The first step finished before the kill: it was not run again, and
    // the build says it executed it (before the restart).
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
    assert_eq!(status_of("echo first"), "executed", "{m:#}");
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
