//! Chaos: real builds on a loopback farm (a scheduler, two workers, Redis,
//! S3) while workers and the scheduler are killed (SIGKILL) and started
//! again at pseudo-random points, from fixed seeds, a bounded number of
//! rounds. Every build must either succeed with the image an undisturbed
//! build makes or fail with a clear error; afterwards every blob in S3
//! hashes to its name and every cache record points at a blob that exists.

use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use strata_tests::base_image::push_busybox;
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

fn build(url: &str, ctx: &Path, ns: &str, meta: &Path) -> std::process::Child {
    Command::new(strata_tests::bin("strata"))
        .args(["--scheduler", url, "build", "--progress", "plain"])
        .args(["--namespace", ns, "--build-arg", "SOURCE_DATE_EPOCH=0"])
        .arg("--metadata-file")
        .arg(meta)
        .arg(ctx)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("strata build")
}

fn image_id(meta: &Path) -> String {
    let m: Value = serde_json::from_slice(&std::fs::read(meta).expect("metadata")).expect("json");
    m["containerimage.config.digest"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
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
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let redis = RedisServer::start();
    let s3 = S3Server::start("chaos");
    let dir = tempfile::tempdir().expect("dir");
    let env = s3.process_env();
    let shared = scheduler_args(&redis, &s3, "c/");
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
    let expected: Vec<String> = contexts
        .iter()
        .enumerate()
        .map(|(i, ctx)| {
            let meta = dir.path().join(format!("ref{i}.json"));
            let o = build(&farm.url(), ctx, "reference", &meta)
                .wait_with_output()
                .expect("build");
            assert!(o.status.success(), "{}\n{}", text(&o), farm.logs());
            image_id(&meta)
        })
        .collect();

    let mut succeeded = 0;
    let mut faults = Vec::new();
    for seed in [7u64, 1234, 99991] {
        let mut rng = Rng(seed);
        for round in 0..3 {
            let which = rng.below(contexts.len() as u64) as usize;
            let ns = format!("chaos-{seed}-{round}");
            let meta = dir.path().join(format!("{ns}.json"));
            let child = build(&farm.url(), &contexts[which], &ns, &meta);
            std::thread::sleep(Duration::from_millis(500 + rng.below(2500)));
            let fault = match rng.below(5) {
                0 | 1 => {
                    farm.restart_scheduler();
                    "scheduler killed".to_string()
                }
                2 | 3 => {
                    let i = rng.below(2) as usize;
                    farm.workers[i] = None; // SIGKILL
                    farm.start_worker(i);
                    format!("worker-{i} killed")
                }
                _ => "no fault".to_string(),
            };
            let o = child.wait_with_output().expect("build");
            if o.status.success() {
                assert_eq!(
                    image_id(&meta),
                    expected[which],
                    "seed {seed} round {round} ({fault}): a different image\n{}",
                    text(&o)
                );
                succeeded += 1;
            } else {
                // A failure must say what went wrong.
                let t = text(&o);
                assert!(
                    t.contains("error"),
                    "seed {seed} round {round} ({fault}): failed without an error message:\n{t}"
                );
            }
            faults.push(format!(
                "seed {seed} round {round}: {fault} -> {}",
                if o.status.success() { "ok" } else { "failed" }
            ));
        }
    }
    eprintln!("{}", faults.join("\n"));
    assert!(
        succeeded >= 6,
        "only {succeeded} of 9 builds survived their faults:\n{}\n{}",
        faults.join("\n"),
        farm.logs()
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
    let meta = dir.path().join("first.json");
    let o = build(&url, &ctx, "default", &meta)
        .wait_with_output()
        .expect("build");
    assert!(o.status.success(), "{}", text(&o));
    let id = image_id(&meta);

    // S3 goes away; a changed file needs it: a clear, retryable error.
    s3.stop();
    std::fs::write(ctx.join("data.txt"), "outage data, changed\n").expect("data");
    let o = build(&url, &ctx, "default", &dir.path().join("down.json"))
        .wait_with_output()
        .expect("build");
    let t = text(&o);
    assert!(
        !o.status.success(),
        "a build succeeded without its store:\n{t}"
    );
    assert!(
        t.contains("s3://outage/o/") && t.contains("cannot reach"),
        "the error does not name the store and the problem:\n{t}"
    );

    // S3 is back: the same build works, the first one is still cached.
    s3.restart();
    std::fs::write(ctx.join("data.txt"), "outage data\n").expect("data");
    let again = dir.path().join("again.json");
    let o = build(&url, &ctx, "default", &again)
        .wait_with_output()
        .expect("build");
    assert!(o.status.success(), "{}\n{}", text(&o), sched.proc.log());
    assert_eq!(image_id(&again), id);
    let m: Value = serde_json::from_slice(&std::fs::read(&again).expect("meta")).expect("json");
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
    let first = dir.path().join("first.json");
    let o = build(&url, &ctx, "default", &first)
        .wait_with_output()
        .expect("build");
    assert!(o.status.success(), "{}", text(&o));

    // Redis goes away: the index's records in S3 still answer.
    redis.stop();
    let second = dir.path().join("second.json");
    let o = build(&url, &ctx, "default", &second)
        .wait_with_output()
        .expect("build");
    assert!(o.status.success(), "{}\n{}", text(&o), sched.proc.log());
    assert_eq!(image_id(&second), image_id(&first));
    let m: Value = serde_json::from_slice(&std::fs::read(&second).expect("meta")).expect("json");
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
