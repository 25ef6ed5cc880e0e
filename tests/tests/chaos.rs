//! Chaos: real builds on a loopback farm (a scheduler with a 3 s lease,
//! two workers, Redis, S3) while, from fixed seeds, at pseudo-random
//! points, the scheduler is killed (SIGKILL) and started again, a worker is
//! killed and started again, or a worker is cut off (SIGSTOP past its
//! lease, then SIGCONT). Each seed deals each fault once, in its own order.
//! Every build must succeed, within a bounded time, with the manifest and
//! config digests an undisturbed build makes, its events shown once and in
//! order; a step a lost worker was running must have run again (attempt 2
//! or later) unless it had already finished. Afterwards every blob in S3
//! hashes to its name and every cache record points at a blob that exists.

use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use strata_tests::base_image::push_busybox;
use strata_tests::follow::{Ended, JsonBuild, dump};
use strata_tests::procs::{SchedulerProc, WorkerProc, wait_ready};
use strata_tests::registry::TestRegistry;
use strata_tests::services::{RedisServer, S3Server, scheduler_args};

/// xorshift64*: reproducible choices from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        (self.next() >> 32) % n
    }
}

fn dockerfiles(base: &str) -> Vec<String> {
    vec![
        format!(
            "FROM {base}\n\
             RUN echo one > /one && busybox sleep 1\n\
             COPY data.txt /data.txt\n\
             RUN cat /data.txt > /copy && busybox sleep 1\n\
             RUN echo three > /three && busybox sleep 1\n"
        ),
        format!(
            "FROM {base} AS left\n\
             RUN echo left > /left && busybox sleep 1\n\
             FROM {base} AS right\n\
             RUN echo right > /right && busybox sleep 1\n\
             FROM {base}\n\
             COPY --from=left /left /left\n\
             COPY --from=right /right /right\n\
             RUN cat /left /right > /both\n"
        ),
    ]
}

struct Farm<'a> {
    dir: &'a Path,
    port: u16,
    shared: Vec<String>,
    env: Vec<(String, String)>,
    scheduler: Option<SchedulerProc>,
    workers: Vec<Option<WorkerProc>>,
}

impl Farm<'_> {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn start_worker(&mut self, i: usize) {
        let w = WorkerProc::start(
            self.dir,
            &format!("worker-{i}"),
            &self.url(),
            &[],
            &self.env,
        );
        self.workers[i] = Some(w);
    }

    fn worker(&self, i: usize) -> &WorkerProc {
        self.workers[i].as_ref().expect("worker running")
    }

    fn restart_scheduler(&mut self) {
        self.scheduler = None; // SIGKILL
        self.scheduler = Some(SchedulerProc::start_on(
            self.dir,
            self.port,
            &self.shared,
            &self.env,
        ));
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        if let Some(s) = &self.scheduler {
            out.push_str(&s.proc.log());
        }
        for w in self.workers.iter().flatten() {
            out.push_str(&w.proc.log());
        }
        out
    }
}

/// How long any one build may take, faults included.
const BUILD_TIMEOUT: Duration = Duration::from_secs(90);

/// Runs a build to its end (bounded): how it ended and its metadata.
fn build(
    url: &str,
    ctx: &Path,
    ns: &str,
    meta: &Path,
    logs: impl Fn() -> String,
) -> (Ended, Value) {
    let mut b = JsonBuild::start(url, ctx, ns, meta);
    let end = finish(&mut b, &logs);
    let meta = if end.status.success() {
        b.metadata()
    } else {
        Value::Null
    };
    (end, meta)
}

fn finish(b: &mut JsonBuild, logs: impl Fn() -> String) -> Ended {
    b.finish(BUILD_TIMEOUT).unwrap_or_else(|| {
        panic!(
            "a build did not end within {BUILD_TIMEOUT:?}:\n{}\n{}",
            dump(&b.events()),
            logs()
        )
    })
}

/// (manifest digest, config digest) of a finished build.
fn digests(meta: &Value) -> (String, String) {
    let get = |k: &str| meta[k].as_str().unwrap_or_default().to_string();
    (
        get("containerimage.digest"),
        get("containerimage.config.digest"),
    )
}

/// What a failed build said: its error report and events.
fn text(end: &Ended) -> String {
    format!("{}\n{}", end.stderr, dump(&end.events))
}

/// Steps running now (started, not yet done or failed): (step, worker,
/// attempt).
fn running(events: &[Value]) -> Vec<(String, String, u64)> {
    let mut out: Vec<(String, String, u64)> = Vec::new();
    for e in events {
        let step = e["step_id"].as_str().unwrap_or_default().to_string();
        match e["type"].as_str() {
            Some("step_started") => {
                out.retain(|(s, _, _)| *s != step);
                out.push((
                    step,
                    e["worker_id"].as_str().unwrap_or_default().to_string(),
                    e["attempt"].as_u64().unwrap_or(0),
                ));
            }
            Some("step_done" | "step_failed" | "step_queued" | "step_cancelled") => {
                out.retain(|(s, _, _)| *s != step)
            }
            _ => {}
        }
    }
    out
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    KillScheduler,
    KillWorker,
    CutOffWorker,
}

/// Every blob under the S3 server's `blobs/sha256/` hashes to its name;
/// every cache record names a layer blob that exists. Returns the counts.
fn verify_store(s3: &S3Server, prefix: &str) -> (usize, usize) {
    let blobs: Vec<PathBuf> = s3.objects(&format!("{prefix}blobs/sha256"));
    for b in &blobs {
        let name = b.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.len() != 64 {
            continue; // the server's own bookkeeping files
        }
        let bytes = std::fs::read(b).expect("blob");
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            name,
            "corrupt blob {}",
            b.display()
        );
    }
    let records = s3.objects(&format!("{prefix}objects/cache"));
    for r in &records {
        let v: Value = serde_json::from_slice(&std::fs::read(r).expect("record"))
            .unwrap_or_else(|e| panic!("cache record {} is not JSON: {e}", r.display()));
        let digest = v["digest"].as_str().expect("layer digest");
        let hex = digest.trim_start_matches("sha256:");
        assert!(
            blobs.iter().any(|b| b.ends_with(hex)),
            "cache record {} names {digest}, which is not in the store",
            r.display()
        );
    }
    (blobs.len(), records.len())
}

#[test]
fn builds_survive_killed_workers_and_schedulers() {
    let started = Instant::now();
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let redis = RedisServer::start();
    let s3 = S3Server::start("chaos");
    let dir = tempfile::tempdir().expect("dir");
    let env = s3.process_env();
    let mut shared = scheduler_args(&redis, &s3, "c/");
    shared.extend(["--lease-timeout".to_string(), "3".to_string()]);
    let scheduler = SchedulerProc::start(dir.path(), &shared, &env);
    let mut farm = Farm {
        dir: dir.path(),
        port: scheduler.port,
        shared,
        env,
        scheduler: Some(scheduler),
        workers: vec![None, None],
    };
    farm.start_worker(0);
    farm.start_worker(1);
    for w in farm.workers.iter().flatten() {
        wait_ready(w.metrics_port, "/readyz", "worker");
    }

    // Contexts, and the image each makes undisturbed.
    let contexts: Vec<PathBuf> = dockerfiles(&base)
        .into_iter()
        .enumerate()
        .map(|(i, df)| {
            let ctx = dir.path().join(format!("ctx{i}"));
            std::fs::create_dir(&ctx).expect("ctx");
            std::fs::write(ctx.join("Dockerfile"), df).expect("Dockerfile");
            std::fs::write(ctx.join("data.txt"), "chaos data\n").expect("data");
            ctx
        })
        .collect();
    let expected: Vec<(String, String)> = contexts
        .iter()
        .enumerate()
        .map(|(i, ctx)| {
            let (end, meta) = build(
                &farm.url(),
                ctx,
                &format!("reference-{i}"),
                &dir.path().join(format!("reference-{i}.json")),
                || farm.logs(),
            );
            assert!(end.status.success(), "{}\n{}", text(&end), farm.logs());
            let d = digests(&meta);
            assert!(
                d.0.starts_with("sha256:") && d.1.starts_with("sha256:"),
                "{meta:#}"
            );
            d
        })
        .collect();

    let mut faults = Vec::new();
    let mut retried = 0;
    let mut resumed = 0;
    for seed in [7u64, 1234, 99991] {
        let mut rng = Rng(seed);
        // Each seed deals every fault once, in an order of its own.
        let mut deck = vec![Fault::KillScheduler, Fault::KillWorker, Fault::CutOffWorker];
        let order: Vec<Fault> = (0..3)
            .map(|_| deck.remove(rng.below(deck.len() as u64) as usize))
            .collect();
        for (round, fault) in order.into_iter().enumerate() {
            let which = rng.below(contexts.len() as u64) as usize;
            let ns = format!("chaos-{seed}-{round}");
            let mut b = JsonBuild::start(
                &farm.url(),
                &contexts[which],
                &ns,
                &dir.path().join(format!("{ns}.json")),
            );
            std::thread::sleep(Duration::from_millis(500 + rng.below(2500)));
            // A worker fault hits a worker running a step when there is one.
            let victim = |rng: &mut Rng| -> (usize, Option<(String, u64)>) {
                let busy = running(&b.events());
                if busy.is_empty() {
                    (rng.below(2) as usize, None)
                } else {
                    let (step, worker, attempt) = &busy[rng.below(busy.len() as u64) as usize];
                    let i = worker
                        .strip_prefix("worker-")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| panic!("unknown worker {worker:?}"));
                    (i, Some((step.clone(), *attempt)))
                }
            };
            // The step a lost worker ran, and how many events the client
            // had when nothing the worker sends could count any more.
            let mut hit: Option<(String, String, u64, usize)> = None;
            // A scheduler killed before the build ended.
            let mut interrupted = false;
            let what = match fault {
                Fault::KillScheduler => {
                    let ended = b.events().iter().any(|e| e["type"] == "build_finished");
                    farm.restart_scheduler();
                    interrupted = !ended;
                    "scheduler killed".to_string()
                }
                Fault::KillWorker => {
                    let (i, step) = victim(&mut rng);
                    farm.workers[i] = None; // SIGKILL
                    if let Some((s, a)) = step {
                        hit = Some((s, format!("worker-{i}"), a, usize::MAX));
                    }
                    farm.start_worker(i);
                    format!("worker-{i} killed")
                }
                Fault::CutOffWorker => {
                    let (i, step) = victim(&mut rng);
                    farm.worker(i).proc.signal("STOP");
                    // Past the 3 s lease and the reaper's next 1 s round,
                    // with 2 s to spare on a loaded machine.
                    std::thread::sleep(Duration::from_secs(6));
                    let seen = b.events().len();
                    farm.worker(i).proc.signal("CONT");
                    if let Some((s, a)) = step {
                        hit = Some((s, format!("worker-{i}"), a, seen));
                    }
                    format!("worker-{i} cut off")
                }
            };
            let end = finish(&mut b, || farm.logs());
            let context = format!("seed {seed} round {round} ({what})");
            assert!(
                end.status.success(),
                "{context}: the build failed:\n{}\n{}",
                text(&end),
                farm.logs()
            );
            assert_eq!(
                digests(&b.metadata()),
                expected[which],
                "{context}: a different image\n{}",
                dump(&end.events)
            );
            // Every event once, in order, across reattaches.
            let seqs: Vec<u64> = end
                .events
                .iter()
                .filter_map(|e| e["sequence"].as_u64())
                .collect();
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "{context}: events repeated or out of order: {seqs:?}"
            );
            if interrupted {
                // The restarted scheduler resumed it (the client reattached).
                assert!(
                    end.events.iter().any(|e| e["type"] == "warning"
                        && e["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("the scheduler restarted"))),
                    "{context}: the build was not resumed:\n{}",
                    dump(&end.events)
                );
                resumed += 1;
            }
            if let Some((step, worker, attempt, seen)) = &hit {
                // The lost run may have finished just before the fault;
                // else the step ran again.
                let finished_first = end.events.iter().enumerate().any(|(n, e)| {
                    e["type"] == "step_done"
                        && e["step_id"] == step.as_str()
                        && e["worker_id"] == worker.as_str()
                        && e["attempt"].as_u64() == Some(*attempt)
                        && n < *seen
                });
                let requeued = end.events.iter().any(|e| {
                    e["type"] == "step_queued"
                        && e["step_id"] == step.as_str()
                        && e["attempt"].as_u64() > Some(*attempt)
                        && e["reason"]
                            .as_str()
                            .is_some_and(|r| r.contains(worker.as_str()))
                });
                assert!(
                    finished_first || requeued,
                    "{context}: step {step} of the lost {worker} (attempt {attempt}) never ran again:\n{}",
                    dump(&end.events)
                );
                retried += usize::from(requeued);
            }
            faults.push(format!(
                "{context}: ok{}",
                match &hit {
                    Some((step, ..)) => format!(", hit step {step}"),
                    None if interrupted => ", resumed".to_string(),
                    None => String::new(),
                }
            ));
        }
    }
    eprintln!(
        "{}\n{retried} steps ran again, {resumed} builds resumed; {:?} in all",
        faults.join("\n"),
        started.elapsed()
    );
    assert!(
        retried >= 2 && resumed >= 1,
        "the faults hit too few running steps or builds to test re-queueing and resuming:\n{}",
        faults.join("\n")
    );
    let (blobs, records) = verify_store(&s3, "c/");
    assert!(blobs > 0 && records > 0, "nothing was stored");
}

#[test]
fn an_s3_outage_fails_builds_clearly_and_corrupts_nothing() {
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let redis = RedisServer::start();
    let mut s3 = S3Server::start("outage");
    let dir = tempfile::tempdir().expect("dir");
    let env = s3.process_env();
    let shared = scheduler_args(&redis, &s3, "o/");
    let sched = SchedulerProc::start(dir.path(), &shared, &env);
    let url = format!("http://127.0.0.1:{}", sched.port);
    let worker = WorkerProc::start(dir.path(), "worker-0", &url, &[], &env);
    wait_ready(worker.metrics_port, "/readyz", "worker");
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).expect("ctx");
    std::fs::write(ctx.join("Dockerfile"), &dockerfiles(&base)[0]).expect("Dockerfile");
    std::fs::write(ctx.join("data.txt"), "outage data\n").expect("data");
    let logs = || sched.proc.log();
    let (end, meta) = build(&url, &ctx, "default", &dir.path().join("first.json"), logs);
    assert!(end.status.success(), "{}", text(&end));
    let id = digests(&meta);

    // S3 goes away; a changed file needs it: a clear, retryable error.
    s3.stop();
    std::fs::write(ctx.join("data.txt"), "outage data, changed\n").expect("data");
    let (end, _) = build(&url, &ctx, "default", &dir.path().join("down.json"), logs);
    let t = text(&end);
    assert!(
        !end.status.success(),
        "a build succeeded without its store:\n{t}"
    );
    assert!(
        t.contains("s3://outage/o/") && t.contains("cannot reach"),
        "the error does not name the store and the problem:\n{t}"
    );

    // S3 is back: the same build works, the first one is still cached.
    s3.restart();
    std::fs::write(ctx.join("data.txt"), "outage data\n").expect("data");
    let (end, m) = build(&url, &ctx, "default", &dir.path().join("again.json"), logs);
    assert!(end.status.success(), "{}\n{}", text(&end), sched.proc.log());
    assert_eq!(digests(&m), id);
    assert!(
        m["strata.steps"]
            .as_array()
            .expect("steps")
            .iter()
            .all(|s| s["status"] == "cached"),
        "{m:#}"
    );
    verify_store(&s3, "o/");
}

#[test]
fn without_redis_builds_fall_back_to_the_records_in_s3() {
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let mut redis = RedisServer::start();
    let s3 = S3Server::start("noredis");
    let dir = tempfile::tempdir().expect("dir");
    let env = s3.process_env();
    let shared = scheduler_args(&redis, &s3, "n/");
    let sched = SchedulerProc::start(dir.path(), &shared, &env);
    let url = format!("http://127.0.0.1:{}", sched.port);
    let worker = WorkerProc::start(dir.path(), "worker-0", &url, &[], &env);
    wait_ready(worker.metrics_port, "/readyz", "worker");
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).expect("ctx");
    std::fs::write(ctx.join("Dockerfile"), &dockerfiles(&base)[1]).expect("Dockerfile");
    let logs = || sched.proc.log();
    let (end, first) = build(&url, &ctx, "default", &dir.path().join("first.json"), logs);
    assert!(end.status.success(), "{}", text(&end));

    // Redis goes away: the index's records in S3 still answer.
    redis.stop();
    let (end, m) = build(&url, &ctx, "default", &dir.path().join("second.json"), logs);
    assert!(end.status.success(), "{}\n{}", text(&end), sched.proc.log());
    assert_eq!(digests(&m), digests(&first));
    assert!(
        m["strata.steps"]
            .as_array()
            .expect("steps")
            .iter()
            .all(|s| s["status"] == "cached"),
        "{m:#}"
    );
    assert!(sched.proc.log().contains("asking the durable store"));
}
