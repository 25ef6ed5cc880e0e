//! A farm for fault tests: a scheduler with a 3 s lease and `strata-worker`s
//! on loopback, a registry holding busybox, builds followed through
//! `--progress json`, and what a worker holds of jobs (containers, mounts,
//! `strata_worker_jobs_running`). Used by `faults.rs` and `cancel.rs`.

use crate::base_image::push_busybox;
use crate::follow::{Ended, JsonBuild, dump};
use crate::procs::{
    SchedulerProc, WorkerProc, http_get, mounts_under, runc_containers, wait_ready,
};
use crate::registry::TestRegistry;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long any one build may take before the test fails.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(120);
/// The instruction a fault hits.
pub const LONG_STEP: &str = "RUN echo started; busybox sleep 6; echo two > /two";

/// A Dockerfile on `base` with [`LONG_STEP`] between two short RUN steps.
pub fn dockerfile(base: &str) -> String {
    format!("FROM {base}\nRUN echo one > /one\n{LONG_STEP}\nRUN echo three > /three\n")
}

/// A scheduler and two workers ("worker-a", "worker-b"), each worker's
/// state in a directory the test knows.
pub struct Farm {
    _registry: TestRegistry,
    /// The busybox base image reference in the registry.
    pub base: String,
    /// The directory holding the processes' state and the build contexts.
    pub dir: tempfile::TempDir,
    /// The scheduler (3 s lease).
    pub scheduler: SchedulerProc,
    /// The workers' names, by index.
    pub names: Vec<String>,
    /// The workers, by index; `None` when not running.
    pub workers: Vec<Option<WorkerProc>>,
    /// Extra arguments of every worker.
    pub worker_extra: Vec<String>,
}

impl Drop for Farm {
    fn drop(&mut self) {
        // Workers killed mid-step (the fault tests kill and freeze them)
        // leave containers and overlay mounts in their state, which no
        // later worker cleans up: without this, every run left one mount
        // behind.
        self.workers.clear();
        for i in 0..self.names.len() {
            crate::procs::clean_worker_state(&self.state(i));
        }
    }
}

impl Farm {
    /// A scheduler and two workers, each started with `worker_extra`.
    pub fn start(worker_extra: &[&str]) -> Self {
        Self::start_n(2, worker_extra)
    }

    /// `n` workers (`worker-a`, `worker-b`, ...), each of two slots.
    pub fn start_n(n: usize, worker_extra: &[&str]) -> Self {
        let mut farm = Self::new(n, worker_extra);
        for i in 0..n {
            farm.start_worker(i);
        }
        farm
    }

    /// The scheduler only; `n` workers named, none started.
    pub fn new(n: usize, worker_extra: &[&str]) -> Self {
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

    /// The scheduler's URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.scheduler.port)
    }

    /// Worker `i`'s state directory.
    pub fn state(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("state-{}", self.names[i]))
    }

    /// Starts worker `i` and waits until it is ready.
    pub fn start_worker(&mut self, i: usize) {
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

    /// The index of the worker named `worker_id`.
    pub fn index(&self, worker_id: &str) -> usize {
        self.names
            .iter()
            .position(|n| n == worker_id)
            .unwrap_or_else(|| panic!("unknown worker {worker_id:?}"))
    }

    /// Worker `i`, which must be running.
    pub fn worker(&self, i: usize) -> &WorkerProc {
        self.workers[i].as_ref().expect("worker running")
    }

    /// A build context `name` holding [`dockerfile`].
    pub fn context(&self, name: &str) -> PathBuf {
        let ctx = self.dir.path().join(name);
        std::fs::create_dir_all(&ctx).expect("context");
        std::fs::write(ctx.join("Dockerfile"), dockerfile(&self.base)).expect("Dockerfile");
        ctx
    }

    /// Runs `strata` against the farm; its stdout (it must succeed).
    pub fn strata(&self, args: &[&str]) -> String {
        let o = Command::new(crate::bin("strata"))
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
    pub fn listed(&self) -> Vec<Value> {
        serde_json::from_str(&self.strata(&["workers", "--format", "json"])).expect("workers JSON")
    }

    /// The scheduler's and the running workers' logs.
    pub fn logs(&self) -> String {
        let mut out = self.scheduler.proc.log();
        for w in self.workers.iter().flatten() {
            out.push_str(&w.proc.log());
        }
        out
    }

    /// The manifest digest of an undisturbed build of `ctx` (its own cache
    /// namespace, so nothing is shared with the build under test).
    pub fn reference(&self, ctx: &Path) -> String {
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
pub struct Build(pub JsonBuild);

impl Build {
    /// Starts `strata build` of `ctx` in namespace `ns`, its events in `dir`.
    pub fn start(url: &str, ctx: &Path, ns: &str, dir: &Path) -> Self {
        Build(JsonBuild::start(
            url,
            ctx,
            ns,
            &dir.join(format!("{ns}.json")),
        ))
    }

    /// The events so far.
    pub fn events(&self) -> Vec<Value> {
        self.0.events()
    }

    /// Waits for the first event that `pred` accepts.
    pub fn wait_for(&self, what: &str, farm: &Farm, pred: impl Fn(&Value) -> bool) -> Value {
        self.0.wait_for(BUILD_TIMEOUT, pred).unwrap_or_else(|| {
            panic!(
                "no {what} within {BUILD_TIMEOUT:?}; events:\n{}\n{}",
                dump(&self.events()),
                farm.logs()
            )
        })
    }

    /// The step id of the instruction containing `needle`.
    pub fn step(&self, needle: &str, farm: &Farm) -> String {
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
    pub fn running(&self, step: &str, text: &str, farm: &Farm) -> String {
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
    pub fn finish(&mut self, farm: &Farm) -> Ended {
        self.0.finish(BUILD_TIMEOUT).unwrap_or_else(|| {
            panic!(
                "the build did not end within {BUILD_TIMEOUT:?}; events:\n{}\n{}",
                dump(&self.events()),
                farm.logs()
            )
        })
    }

    /// The built image's manifest digest, from the metadata file.
    pub fn manifest_digest(&self) -> String {
        let m = self.0.metadata();
        let d = m["containerimage.digest"].as_str().unwrap_or_default();
        assert!(d.starts_with("sha256:"), "no manifest digest in {m:#}");
        d.to_string()
    }
}

/// The events of type `ty` for `step`.
pub fn of_type<'a>(events: &'a [Value], ty: &str, step: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["type"] == ty && e["step_id"] == step)
        .collect()
}

/// What worker `i` holds of jobs: its runc containers (under its runc
/// root), the mounts under its state directory, and its metrics'
/// `strata_worker_jobs_running` (when it runs).
pub struct Held {
    /// Its runc containers, one id a line.
    pub containers: String,
    /// The mount points under its state directory.
    pub mounts: Vec<String>,
    /// Its `strata_worker_jobs_running` line, when it runs.
    pub running: Option<String>,
}

impl Held {
    /// What worker `i` of `farm` holds now.
    pub fn of(farm: &Farm, i: usize) -> Self {
        let state = std::fs::canonicalize(farm.state(i)).expect("state");
        let containers = runc_containers(&state.join("exec/runc"));
        let mounts = mounts_under(&state)
            .iter()
            .map(|p| p.display().to_string())
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
            containers,
            mounts,
            running,
        }
    }

    /// Whether it holds nothing of a job.
    pub fn nothing(&self) -> bool {
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
pub fn assert_busy(farm: &Farm, i: usize) {
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
pub fn assert_clean(farm: &Farm, i: usize) {
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
pub fn assert_recovered(
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
