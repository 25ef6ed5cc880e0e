//! One fault at a time, on real processes on loopback (a scheduler with a
//! 3 s lease, two `strata-worker`s, a registry holding busybox), each at a
//! known point: the middle of a RUN step whose output says it started.
//!
//! - a worker killed (SIGKILL) mid-step: the step runs again on the other
//!   worker (attempt 2) and the image is byte for byte the one an
//!   undisturbed build makes; the killed worker, started again, leaves no
//!   container or mount behind;
//! - a worker frozen (SIGSTOP: its connection stays open) mid-step: its
//!   lease expires, the step runs on the other worker, and when it thaws
//!   (SIGCONT) nothing it says counts: one result per step, same image,
//!   and it registers again;
//! - Ctrl-C (SIGINT) in `strata build`: the build is cancelled on the
//!   farm, the worker's container and mounts are gone and its slot free;
//! - a build cancelled while another waits for its worker's slots: the
//!   waiting build gets them once the worker has stopped the cancelled
//!   steps, on its first attempt, and succeeds;
//! - SIGTERM to a worker with `--drain-timeout 1` mid-step: the step is
//!   handed back, finishes on the other worker, the build succeeds;
//! - a worker whose disk fills while storing a step's layer: the failure is
//!   the worker's (retryable), the step runs again on the other worker and
//!   the build succeeds.
//!
//! Builds are followed through `--progress json`, whose events name the
//! worker and the attempt of every step.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use strata_tests::base_image::push_busybox;
use strata_tests::follow::{Ended, JsonBuild, dump};
use strata_tests::procs::{SchedulerProc, WorkerProc, http_get, wait_ready};
use strata_tests::registry::TestRegistry;

/// How long any one build may take before the test fails.
const BUILD_TIMEOUT: Duration = Duration::from_secs(120);
/// The instruction a fault hits.
const LONG_STEP: &str = "RUN echo started; busybox sleep 6; echo two > /two";

fn dockerfile(base: &str) -> String {
    format!("FROM {base}\nRUN echo one > /one\n{LONG_STEP}\nRUN echo three > /three\n")
}

/// A scheduler and two workers ("worker-a", "worker-b"), each worker's
/// state in a directory the test knows.
struct Farm {
    _registry: TestRegistry,
    base: String,
    dir: tempfile::TempDir,
    scheduler: SchedulerProc,
    names: Vec<String>,
    workers: Vec<Option<WorkerProc>>,
    worker_extra: Vec<String>,
}

impl Farm {
    fn start(worker_extra: &[&str]) -> Self {
        Self::start_n(2, worker_extra)
    }

    /// `n` workers (`worker-a`, `worker-b`, ...), each of two slots.
    fn start_n(n: usize, worker_extra: &[&str]) -> Self {
        let mut farm = Self::new(n, worker_extra);
        for i in 0..n {
            farm.start_worker(i);
        }
        farm
    }

    /// The scheduler only; `n` workers named, none started.
    fn new(n: usize, worker_extra: &[&str]) -> Self {
        let registry = TestRegistry::start();
        let base = push_busybox(&registry, "busybox:latest");
        let dir = tempfile::tempdir().expect("dir");
        let scheduler =
            SchedulerProc::start(dir.path(), &["--lease-timeout".into(), "3".into()], &[]);
        Farm {
            _registry: registry,
            base,
            dir,
            scheduler,
            names: (0..n)
                .map(|i| format!("worker-{}", char::from(b'a' + i as u8)))
                .collect(),
            workers: (0..n).map(|_| None).collect(),
            worker_extra: worker_extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.scheduler.port)
    }

    fn state(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("state-{}", self.names[i]))
    }

    fn start_worker(&mut self, i: usize) {
        let state = self.state(i);
        std::fs::create_dir_all(&state).expect("worker state");
        let w = WorkerProc::start_in(
            self.dir.path(),
            &self.names[i],
            &self.url(),
            &state,
            &self.worker_extra,
            &[],
        );
        wait_ready(w.metrics_port, "/readyz", &self.names[i]);
        self.workers[i] = Some(w);
    }

    fn index(&self, worker_id: &str) -> usize {
        self.names
            .iter()
            .position(|n| n == worker_id)
            .unwrap_or_else(|| panic!("unknown worker {worker_id:?}"))
    }

    fn worker(&self, i: usize) -> &WorkerProc {
        self.workers[i].as_ref().expect("worker running")
    }

    fn context(&self, name: &str) -> PathBuf {
        let ctx = self.dir.path().join(name);
        std::fs::create_dir_all(&ctx).expect("context");
        std::fs::write(ctx.join("Dockerfile"), dockerfile(&self.base)).expect("Dockerfile");
        ctx
    }

    fn strata(&self, args: &[&str]) -> String {
        let o = Command::new(strata_tests::bin("strata"))
            .args(["--scheduler", &self.url()])
            .args(args)
            .output()
            .expect("run strata");
        assert!(
            o.status.success(),
            "strata {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The workers the scheduler lists, as JSON.
    fn listed(&self) -> Vec<Value> {
        serde_json::from_str(&self.strata(&["workers", "--format", "json"])).expect("workers JSON")
    }

    fn logs(&self) -> String {
        let mut out = self.scheduler.proc.log();
        for w in self.workers.iter().flatten() {
            out.push_str(&w.proc.log());
        }
        out
    }

    /// The manifest digest of an undisturbed build of `ctx` (its own cache
    /// namespace, so nothing is shared with the build under test).
    fn reference(&self, ctx: &Path) -> String {
        let mut b = Build::start(&self.url(), ctx, "reference", self.dir.path());
        let end = b.finish(self);
        assert!(
            end.status.success(),
            "reference build failed:\n{}",
            end.stderr
        );
        b.manifest_digest()
    }
}

/// A build under test: [`JsonBuild`] whose waits fail the test, with the
/// farm's logs, when they time out.
struct Build(JsonBuild);

impl Build {
    fn start(url: &str, ctx: &Path, ns: &str, dir: &Path) -> Self {
        Build(JsonBuild::start(
            url,
            ctx,
            ns,
            &dir.join(format!("{ns}.json")),
        ))
    }

    fn events(&self) -> Vec<Value> {
        self.0.events()
    }

    /// Waits for the first event that `pred` accepts.
    fn wait_for(&self, what: &str, farm: &Farm, pred: impl Fn(&Value) -> bool) -> Value {
        self.0.wait_for(BUILD_TIMEOUT, pred).unwrap_or_else(|| {
            panic!(
                "no {what} within {BUILD_TIMEOUT:?}; events:\n{}\n{}",
                dump(&self.events()),
                farm.logs()
            )
        })
    }

    /// The step id of the instruction containing `needle`.
    fn step(&self, needle: &str, farm: &Farm) -> String {
        let started = self.wait_for("build_started", farm, |e| e["type"] == "build_started");
        started["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .find(|s| {
                s["instruction"]
                    .as_str()
                    .is_some_and(|i| i.contains(needle))
            })
            .and_then(|s| s["step_id"].as_str())
            .unwrap_or_else(|| panic!("no step {needle:?} in {started:#}"))
            .to_string()
    }

    /// Waits until `step` printed `text` (its container runs); the worker
    /// running it.
    fn running(&self, step: &str, text: &str, farm: &Farm) -> String {
        self.wait_for("the step's output", farm, |e| {
            e["type"] == "step_log"
                && e["step_id"] == step
                && e["data"].as_str().is_some_and(|d| d.contains(text))
        });
        let started = self.wait_for("step_started", farm, |e| {
            e["type"] == "step_started" && e["step_id"] == step
        });
        started["worker_id"].as_str().expect("worker").to_string()
    }

    /// Waits (bounded) for the client to exit.
    fn finish(&mut self, farm: &Farm) -> Ended {
        self.0.finish(BUILD_TIMEOUT).unwrap_or_else(|| {
            panic!(
                "the build did not end within {BUILD_TIMEOUT:?}; events:\n{}\n{}",
                dump(&self.events()),
                farm.logs()
            )
        })
    }

    fn manifest_digest(&self) -> String {
        let m = self.0.metadata();
        let d = m["containerimage.digest"].as_str().unwrap_or_default();
        assert!(d.starts_with("sha256:"), "no manifest digest in {m:#}");
        d.to_string()
    }
}

fn of_type<'a>(events: &'a [Value], ty: &str, step: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["type"] == ty && e["step_id"] == step)
        .collect()
}

/// What worker `i` holds of jobs: its runc containers (under its runc
/// root), the mounts under its state directory, and its metrics'
/// `strata_worker_jobs_running` (when it runs).
struct Held {
    containers: String,
    mounts: Vec<String>,
    running: Option<String>,
}

impl Held {
    fn of(farm: &Farm, i: usize) -> Self {
        let state = std::fs::canonicalize(farm.state(i)).expect("state");
        let list = Command::new("runc")
            .arg("--root")
            .arg(state.join("exec/runc"))
            .args(["list", "-q"])
            .output()
            .expect("runc list");
        assert!(
            list.status.success(),
            "runc list: {}",
            String::from_utf8_lossy(&list.stderr)
        );
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .lines()
            .filter(|l| l.contains(state.to_str().expect("utf-8")))
            .map(String::from)
            .collect();
        let running = farm.workers[i].as_ref().map(|w| {
            http_get(w.metrics_port, "/metrics")
                .1
                .lines()
                .find(|l| l.starts_with("strata_worker_jobs_running "))
                .map(String::from)
                .unwrap_or_default()
        });
        Held {
            containers: String::from_utf8_lossy(&list.stdout).trim().to_string(),
            mounts,
            running,
        }
    }

    fn nothing(&self) -> bool {
        self.containers.is_empty()
            && self.mounts.is_empty()
            && self
                .running
                .as_deref()
                .is_none_or(|l| l == "strata_worker_jobs_running 0")
    }
}

/// While its step runs, worker `i` shows a container and a mount: what
/// [`assert_clean`] then sees gone.
fn assert_busy(farm: &Farm, i: usize) {
    let h = Held::of(farm, i);
    assert!(
        !h.containers.is_empty() && !h.mounts.is_empty(),
        "{} runs a step but shows no container or mount: {:?} {:?}",
        farm.names[i],
        h.containers,
        h.mounts
    );
}

/// Nothing of a job is left on worker `i` within 10 s.
fn assert_clean(farm: &Farm, i: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let h = Held::of(farm, i);
        if h.nothing() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} still holds a job after 10 s: containers {:?}, mounts {:#?}, {:?}\n{}",
            farm.names[i],
            h.containers,
            h.mounts,
            h.running,
            farm.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The fault build's events: it succeeded with `reference`'s image, and
/// every executed step reported done exactly once; the long step on
/// attempt 2 or later, on `survivor`.
fn assert_recovered(
    farm: &Farm,
    b: &mut Build,
    step: &str,
    survivor: &str,
    reference: &str,
) -> Vec<Value> {
    let Ended {
        status,
        events,
        stderr: err,
    } = b.finish(farm);
    assert!(
        status.success(),
        "the build failed:\n{err}\n{}\n{}",
        dump(&events),
        farm.logs()
    );
    assert_eq!(
        b.manifest_digest(),
        reference,
        "a different image than the undisturbed build's:\n{}",
        dump(&events)
    );
    let mut done: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "step_done")
        .filter_map(|e| e["step_id"].as_str())
        .collect();
    let n = done.len();
    done.sort();
    done.dedup();
    assert_eq!(
        n,
        done.len(),
        "a step reported done twice:\n{}",
        dump(&events)
    );
    let long = of_type(&events, "step_done", step);
    assert_eq!(long.len(), 1, "{}", dump(&events));
    assert_eq!(long[0]["worker_id"], survivor, "{}", dump(&events));
    assert!(
        long[0]["attempt"].as_u64().is_some_and(|a| a >= 2),
        "{}",
        dump(&events)
    );
    events
}

#[test]
fn a_killed_worker_s_step_runs_again_elsewhere_with_the_same_image() {
    let mut farm = Farm::start(&[]);
    let ctx = farm.context("ctx");
    let reference = farm.reference(&ctx);

    let mut b = Build::start(&farm.url(), &ctx, "killed", farm.dir.path());
    let step = b.step(LONG_STEP, &farm);
    let victim = b.running(&step, "started", &farm);
    let v = farm.index(&victim);
    assert_busy(&farm, v);
    let survivor = farm.names[1 - v].clone();
    farm.workers[v] = None; // SIGKILL

    let events = assert_recovered(&farm, &mut b, &step, &survivor, &reference);
    let queued = of_type(&events, "step_queued", &step);
    assert!(
        queued.iter().any(|q| q["attempt"] == 2
            && q["reason"]
                .as_str()
                .is_some_and(|r| r.contains("disconnected") && r.contains(&victim))),
        "no re-queue naming the lost worker:\n{}",
        dump(&events)
    );

    // Started again on the same state, the killed worker removes the
    // container and mounts its crash left.
    farm.start_worker(v);
    assert_clean(&farm, v);
    assert_clean(&farm, 1 - v);
}

#[test]
fn a_frozen_worker_loses_its_lease_and_its_late_result_is_ignored() {
    let farm = Farm::start(&[]);
    let ctx = farm.context("ctx");
    let reference = farm.reference(&ctx);

    let mut b = Build::start(&farm.url(), &ctx, "frozen", farm.dir.path());
    let step = b.step(LONG_STEP, &farm);
    let victim = b.running(&step, "started", &farm);
    let v = farm.index(&victim);
    assert_busy(&farm, v);
    let survivor = farm.names[1 - v].clone();
    farm.worker(v).proc.signal("STOP");
    let frozen = Instant::now();
    // Its connection stays open; only the lease can take the step away.
    let queued = b.wait_for("the re-queue", &farm, |e| {
        e["type"] == "step_queued" && e["step_id"] == step && e["attempt"] == 2
    });
    let reason = queued["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("no heartbeat for 3s") && reason.contains(&victim),
        "{queued}"
    );
    b.wait_for("attempt 2", &farm, |e| {
        e["type"] == "step_started" && e["step_id"] == step && e["attempt"] == 2
    });
    // Thawed while the step runs again elsewhere: whatever it sends under
    // its lost lease (its own run's end) must not reach the build.
    std::thread::sleep(Duration::from_secs(8).saturating_sub(frozen.elapsed()));
    farm.worker(v).proc.signal("CONT");

    assert_recovered(&farm, &mut b, &step, &survivor, &reference);
    // It comes back as a new session, ready for work, and holds nothing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !farm
        .listed()
        .iter()
        .any(|w| w["id"] == victim.as_str() && w["state"] == "ready")
    {
        assert!(
            Instant::now() < deadline,
            "{victim} did not register again:\n{}",
            farm.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_clean(&farm, v);
}

#[test]
fn ctrl_c_cancels_the_build_on_the_farm() {
    let farm = Farm::start(&[]);
    let ctx = farm.dir.path().join("long");
    std::fs::create_dir_all(&ctx).expect("context");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {}\nRUN echo started; busybox sleep 300\n", farm.base),
    )
    .expect("Dockerfile");
    let mut b = Build::start(&farm.url(), &ctx, "interrupted", farm.dir.path());
    let step = b.step("sleep 300", &farm);
    let worker = b.running(&step, "started", &farm);
    let w = farm.index(&worker);
    assert_busy(&farm, w);
    let build_id = b.wait_for("build_started", &farm, |e| e["type"] == "build_started")["build_id"]
        .as_str()
        .expect("build id")
        .to_string();
    let interrupted = Instant::now();
    let ok = Command::new("kill")
        .args(["-INT", &b.0.pid().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -INT strata");
    let Ended {
        status,
        events,
        stderr: err,
    } = b.finish(&farm);
    assert_eq!(status.code(), Some(130), "{err}\n{}", dump(&events));
    assert!(err.contains("cancelled"), "{err}");
    assert!(
        interrupted.elapsed() < Duration::from_secs(20),
        "Ctrl-C took {:?}",
        interrupted.elapsed()
    );
    // On the farm: the build is cancelled, the container and its mounts
    // are gone, the slot is free.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let builds = farm.strata(&["builds"]);
        if builds
            .lines()
            .any(|l| l.starts_with(&build_id) && l.contains("cancelled"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "build {build_id} not cancelled on the farm:\n{builds}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_clean(&farm, w);
    let deadline = Instant::now() + Duration::from_secs(10);
    while farm
        .listed()
        .iter()
        .any(|x| x["running_jobs"].as_u64() != Some(0))
    {
        assert!(
            Instant::now() < deadline,
            "the scheduler still counts a job: {:#?}",
            farm.listed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_draining_worker_hands_back_its_step_to_the_other() {
    let mut farm = Farm::start(&["--drain-timeout", "1"]);
    let ctx = farm.context("ctx");
    let reference = farm.reference(&ctx);

    let mut b = Build::start(&farm.url(), &ctx, "drained", farm.dir.path());
    let step = b.step(LONG_STEP, &farm);
    let victim = b.running(&step, "started", &farm);
    let v = farm.index(&victim);
    assert_busy(&farm, v);
    let survivor = farm.names[1 - v].clone();
    farm.worker(v).proc.signal("TERM");

    let events = assert_recovered(&farm, &mut b, &step, &survivor, &reference);
    let queued = of_type(&events, "step_queued", &step);
    assert!(
        queued.iter().any(|q| q["attempt"] == 2
            && q["reason"].as_str().is_some_and(|r| r.contains(&victim))),
        "no hand-back from {victim}:\n{}",
        dump(&events)
    );
    // The drained worker left on its own, cleanly, and left nothing.
    let mut w = farm.workers[v].take().expect("worker");
    let exit = w.proc.wait_exit(Duration::from_secs(30));
    assert!(
        exit.is_some_and(|s| s.success()),
        "{victim} did not exit cleanly after draining ({exit:?}):\n{}",
        w.proc.log()
    );
    assert_clean(&farm, v);
}

#[test]
fn a_cancelled_build_s_slots_go_to_the_waiting_build() {
    // One worker, two slots, both taken by a build's two long stages.
    let farm = Farm::start_n(1, &[]);
    let ctx = farm.dir.path().join("long");
    std::fs::create_dir_all(&ctx).expect("context");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {base} AS x\nRUN echo started; busybox sleep 300\n\
             FROM {base} AS y\nRUN echo started; busybox sleep 301\n\
             FROM {base}\nCOPY --from=x /etc/passwd /x\nCOPY --from=y /etc/passwd /y\n",
            base = farm.base
        ),
    )
    .expect("Dockerfile");
    let mut long = Build::start(&farm.url(), &ctx, "long", farm.dir.path());
    for needle in ["sleep 300", "sleep 301"] {
        let step = long.step(needle, &farm);
        long.running(&step, "started", &farm);
    }
    let long_id =
        long.wait_for("build_started", &farm, |e| e["type"] == "build_started")["build_id"]
            .as_str()
            .expect("build id")
            .to_string();
    // Another build waits for a slot.
    let next_ctx = farm.context("next");
    let mut next = Build::start(&farm.url(), &next_ctx, "next", farm.dir.path());
    let first = next.step("echo one", &farm);
    next.wait_for("the step queued", &farm, |e| {
        e["type"] == "step_queued" && e["step_id"] == first
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !next
            .events()
            .iter()
            .any(|e| e["type"] == "step_started" && e["step_id"] == first),
        "a step started on a full worker"
    );

    // The long build is cancelled: the next one must not be sent to the
    // worker before it stopped the cancelled steps (it would refuse it,
    // and three refusals used to fail the build).
    farm.strata(&["cancel", &long_id]);
    let end = long.finish(&farm);
    assert!(!end.status.success(), "{}", end.stderr);
    let end = next.finish(&farm);
    assert!(
        end.status.success(),
        "the waiting build failed:\n{}\n{}\n{}",
        end.stderr,
        dump(&end.events),
        farm.logs()
    );
    let retried: Vec<&Value> = end
        .events
        .iter()
        .filter(|e| e["type"] == "step_queued" && e["attempt"].as_u64() != Some(1))
        .collect();
    assert!(
        retried.is_empty(),
        "a refused job spent an attempt: {retried:?}"
    );
    // A refusal re-queued at attempt 1 but then started as a later
    // attempt would still be a spent attempt.
    let started: Vec<&Value> = end
        .events
        .iter()
        .filter(|e| e["type"] == "step_started")
        .collect();
    assert!(!started.is_empty(), "the waiting build started no step");
    let restarted: Vec<&&Value> = started
        .iter()
        .filter(|e| e["attempt"].as_u64() != Some(1))
        .collect();
    assert!(
        restarted.is_empty(),
        "a refused job spent an attempt: {restarted:?}"
    );
    assert_clean(&farm, 0);
}

/// A tmpfs of `size` mounted at `at` (the tests run as root), lazily
/// unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mount a {size} tmpfs (the test runs as root)");
        SmallDisk(at.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_step_its_worker_s_full_disk_failed_runs_on_another() {
    let mut farm = Farm::new(2, &[]);
    // 48 MiB of state for worker-a: room for the step's 30 MB, not for its
    // layer too.
    let _disk = SmallDisk::mount(&farm.state(0), "48m");
    farm.start_worker(0);
    let ctx = farm.dir.path().join("noise");
    std::fs::create_dir_all(&ctx).expect("context");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {}\nRUN echo started; busybox sleep 3; head -c 30000000 /dev/urandom > /noise\n",
            farm.base
        ),
    )
    .expect("Dockerfile");
    let mut b = Build::start(&farm.url(), &ctx, "noise", farm.dir.path());
    let step = b.step("/dev/urandom", &farm);
    assert_eq!(b.running(&step, "started", &farm), "worker-a");
    // worker-b joins while the step runs on worker-a.
    farm.start_worker(1);

    let Ended {
        status,
        events,
        stderr,
    } = b.finish(&farm);
    assert!(
        status.success(),
        "the build failed:\n{stderr}\n{}\n{}",
        dump(&events),
        farm.logs()
    );
    let failed = of_type(&events, "step_failed", &step);
    assert!(
        failed.len() == 1
            && failed[0]["worker_id"] == "worker-a"
            && failed[0]["will_retry"] == true
            && failed[0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("the worker's disk is full")),
        "worker-a's failure is not reported as one to retry:\n{}",
        dump(&events)
    );
    let done = of_type(&events, "step_done", &step);
    assert!(
        done.len() == 1 && done[0]["worker_id"] == "worker-b" && done[0]["attempt"] == 2,
        "{}",
        dump(&events)
    );
}
