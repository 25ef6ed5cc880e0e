//! One build, one trace, in a real Jaeger v2 on loopback: the client
//! (`strata build`), the scheduler and the worker export their spans over
//! OTLP, and Jaeger's query API shows the client's root span, the
//! scheduler's `grpc`, `build` and `step` spans and the worker's `job` span
//! in the same trace, the job a descendant of its step, the step of the
//! build, the build of the client's call, and the step and the job
//! carrying the same build_id, step_id and worker_id. The worker runs with
//! `OTEL_SERVICE_NAME` set, which names its spans' service.
//!
//! Jaeger is built from its Go module by `scripts/jaeger.sh install` (CI
//! runs it; cached in `/var/cache/strata/jaeger/jaeger`) or taken from
//! `$STRATA_JAEGER`. It runs with a config file that puts OTLP/gRPC and the
//! query API on free loopback ports, so it never clashes with a Jaeger on
//! the default 4317/16686.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use strata_tests::base_image::push_busybox;
use strata_tests::procs::{SchedulerProc, WorkerProc, http_get, wait_ready};
use strata_tests::registry::{TestRegistry, free_port};

/// How long the spans may take to reach Jaeger: the processes export in
/// batches every 5 s, and the client flushes when it exits.
const TRACE_TIMEOUT: Duration = Duration::from_secs(40);

/// The name the test's worker registers under.
const WORKER: &str = "worker-1";

/// The worker's `service.name`, from `OTEL_SERVICE_NAME` (the scheduler
/// and the client keep their defaults, `strata-scheduler` and `strata`).
const WORKER_SERVICE: &str = "strata-worker-pool-a";

/// A Jaeger v2 keeping traces in memory; killed on drop.
struct Jaeger {
    child: Child,
    log: PathBuf,
    /// OTLP/gRPC receiver.
    otlp_port: u16,
    /// HTTP query API (`/api/traces`, `/api/services`).
    query_port: u16,
}

/// The jaeger binary: `$STRATA_JAEGER`, else the one `scripts/jaeger.sh
/// install` caches.
fn jaeger_binary() -> PathBuf {
    let path = std::env::var_os("STRATA_JAEGER")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("STRATA_CACHE")
                .filter(|p| !p.is_empty())
                .map_or_else(|| PathBuf::from("/var/cache/strata"), PathBuf::from);
            cache.join("jaeger/jaeger")
        });
    assert!(
        path.is_file(),
        "Jaeger not found at {}: build it with `bash scripts/jaeger.sh install` \
         (about 8 minutes, once) or point STRATA_JAEGER at a jaeger v2 binary",
        path.display()
    );
    path
}

/// Only what the test needs, each on the given loopback port: OTLP/gRPC in,
/// memory storage, the query API (and its gRPC twin, which cannot be
/// turned off). Jaeger's own metrics are off so it opens no port 8888.
fn jaeger_config(otlp: u16, query: u16, query_grpc: u16) -> String {
    format!(
        "service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 1000
  jaeger_query:
    enable_tracing: false
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{otlp}
processors:
  batch:
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"
    )
}

impl Jaeger {
    /// Starts jaeger with its config and log in `dir`; waits until the
    /// query API answers and the OTLP port accepts connections.
    fn start(dir: &Path) -> Self {
        let bin = jaeger_binary();
        let (otlp_port, query_port, query_grpc) = (free_port(), free_port(), free_port());
        let config = dir.join("jaeger.yaml");
        std::fs::write(&config, jaeger_config(otlp_port, query_port, query_grpc))
            .expect("jaeger config");
        let log = dir.join("jaeger.log");
        let out = std::fs::File::create(&log).expect("jaeger log");
        let child = Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let mut jaeger = Jaeger {
            child,
            log,
            otlp_port,
            query_port,
        };
        jaeger.wait_ready();
        jaeger
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let listening = [self.otlp_port, self.query_port]
                .iter()
                .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok());
            if listening && http_get(self.query_port, "/api/services").0 == 200 {
                return;
            }
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!("jaeger exited ({s}) before answering:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "jaeger did not answer within 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `GET path` on the query API, as JSON.
    fn get(&self, path: &str) -> serde_json::Value {
        let (status, body) = http_get(self.query_port, path);
        assert_eq!(status, 200, "GET {path}: {body}\n{}", self.log());
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    fn log(&self) -> String {
        format!(
            "--- jaeger\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One span of a Jaeger trace, as the query API reports it.
#[derive(Debug, Clone)]
struct Span {
    trace_id: String,
    id: String,
    parent: Option<String>,
    service: String,
    name: String,
    tags: HashMap<String, String>,
}

impl Span {
    fn is(&self, service: &str, name: &str) -> bool {
        self.service == service && self.name == name
    }
}

/// The spans of one trace from `/api/traces` JSON (`data[i]`): each with
/// its process's serviceName and its CHILD_OF parent.
fn spans_of(trace: &serde_json::Value) -> Vec<Span> {
    let processes = &trace["processes"];
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    trace["spans"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let parent = s["references"]
                .as_array()
                .and_then(|refs| refs.iter().find(|r| r["refType"] == "CHILD_OF"))
                .and_then(|r| r["spanID"].as_str())
                .or_else(|| s["parentSpanID"].as_str().filter(|p| !p.is_empty()))
                .map(str::to_string);
            let tags = s["tags"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|t| (text(&t["key"]), text(&t["value"])))
                .collect();
            let service = s["processID"]
                .as_str()
                .and_then(|p| processes[p]["serviceName"].as_str())
                .unwrap_or("?")
                .to_string();
            Span {
                trace_id: text(&s["traceID"]),
                id: text(&s["spanID"]),
                parent,
                service,
                name: text(&s["operationName"]),
                tags,
            }
        })
        .collect()
}

/// The trace as an indented tree, for failure messages.
fn summary(trace_id: &str, spans: &[Span]) -> String {
    let mut out = format!("trace {trace_id}: {} spans\n", spans.len());
    let ids: Vec<&str> = spans.iter().map(|s| s.id.as_str()).collect();
    fn walk(out: &mut String, spans: &[Span], parent: Option<&str>, ids: &[&str], depth: usize) {
        for s in spans
            .iter()
            .filter(|s| match (parent, s.parent.as_deref()) {
                (None, None) => true,
                // Orphans (parent not in this trace) are listed at the top.
                (None, Some(p)) => !ids.contains(&p),
                (Some(want), Some(p)) => want == p,
                (Some(_), None) => false,
            })
        {
            let mut tags: Vec<_> = s
                .tags
                .iter()
                .filter(|(k, _)| {
                    [
                        "build_id",
                        "step_id",
                        "worker_id",
                        "job_id",
                        "rpc",
                        "command",
                        "instruction",
                    ]
                    .contains(&k.as_str())
                })
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            tags.sort();
            let _ = writeln!(
                out,
                "{:indent$}{}/{} span={} parent={} trace={} {}",
                "",
                s.service,
                s.name,
                s.id,
                s.parent.as_deref().unwrap_or("-"),
                s.trace_id,
                tags.join(" "),
                indent = 2 + 2 * depth
            );
            if depth < 32 {
                walk(out, spans, Some(&s.id), ids, depth + 1);
            }
        }
    }
    walk(&mut out, spans, None, &ids, 0);
    out
}

/// The chain from `span` up to the trace's root, `span` first.
fn ancestry<'a>(spans: &'a [Span], span: &'a Span) -> Vec<&'a Span> {
    let mut chain = vec![span];
    while let Some(parent) = chain.last().and_then(|s| s.parent.as_deref()) {
        match spans.iter().find(|s| s.id == parent) {
            Some(p) if chain.len() < 64 => chain.push(p),
            _ => break,
        }
    }
    chain
}

/// Why `spans` is not one whole build's trace, or `None` if it is.
fn what_is_missing(trace_id: &str, spans: &[Span]) -> Option<String> {
    if let Some(s) = spans.iter().find(|s| s.trace_id != trace_id) {
        return Some(format!("span {} has trace ID {}", s.id, s.trace_id));
    }
    for (service, name) in [
        ("strata", "strata"),
        ("strata-scheduler", "grpc"),
        ("strata-scheduler", "build"),
        ("strata-scheduler", "step"),
        (WORKER_SERVICE, "job"),
    ] {
        if !spans.iter().any(|s| s.is(service, name)) {
            return Some(format!("no {name:?} span from {service}"));
        }
    }
    let root = spans
        .iter()
        .find(|s| s.is("strata", "strata"))
        .expect("checked above");
    if let Some(p) = &root.parent {
        return Some(format!("the client's root span has a parent, {p}"));
    }
    let jobs: Vec<&Span> = spans
        .iter()
        .filter(|s| s.is(WORKER_SERVICE, "job"))
        .collect();
    for job in jobs {
        let chain = ancestry(spans, job);
        let names: Vec<String> = chain
            .iter()
            .map(|s| format!("{}/{}", s.service, s.name))
            .collect();
        // job ⊂ step ⊂ build ⊂ grpc (StartBuild) ⊂ the client's command.
        let position = |service: &str, name: &str| chain.iter().position(|s| s.is(service, name));
        let (Some(step), Some(build), Some(grpc), Some(client)) = (
            position("strata-scheduler", "step"),
            position("strata-scheduler", "build"),
            position("strata-scheduler", "grpc"),
            position("strata", "strata"),
        ) else {
            return Some(format!(
                "job {} does not descend from step, build, grpc and the client's span: its ancestry is {}",
                job.id,
                names.join(" <- ")
            ));
        };
        if !(step < build && build < grpc && grpc < client) {
            return Some(format!(
                "job {} has its ancestors out of order: {}",
                job.id,
                names.join(" <- ")
            ));
        }
        // The job runs the very step (and build) it descends from, on the
        // worker the step names.
        for (key, ancestor) in [
            ("step_id", chain[step]),
            ("build_id", chain[step]),
            ("build_id", chain[build]),
            ("worker_id", chain[step]),
        ] {
            let of_job = job.tags.get(key);
            let of_scheduler = ancestor.tags.get(key);
            if of_job.is_none_or(|v| v.is_empty()) || of_job != of_scheduler {
                return Some(format!(
                    "job {} has {key} {of_job:?} but its ancestor {} has {of_scheduler:?}",
                    job.id, ancestor.name
                ));
            }
        }
        if job.tags.get("worker_id").map(String::as_str) != Some(WORKER) {
            return Some(format!(
                "job {} has worker_id {:?}, not the worker's name {WORKER:?}",
                job.id,
                job.tags.get("worker_id")
            ));
        }
    }
    None
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn one_build_is_one_trace_from_client_to_worker() {
    let dir = tempfile::tempdir().expect("dir");
    let jaeger = Jaeger::start(dir.path());
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let env = vec![(
        "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
        format!("http://127.0.0.1:{}", jaeger.otlp_port),
    )];

    let sched = SchedulerProc::start(dir.path(), &[], &env);
    let url = format!("http://127.0.0.1:{}", sched.port);
    let mut worker_env = env.clone();
    worker_env.push(("OTEL_SERVICE_NAME".to_string(), WORKER_SERVICE.to_string()));
    let worker = WorkerProc::start(dir.path(), WORKER, &url, &[], &worker_env);
    wait_ready(worker.metrics_port, "/readyz", "the worker");
    let logs = || {
        format!(
            "{}\n{}\n{}",
            sched.proc.log(),
            worker.proc.log(),
            jaeger.log()
        )
    };

    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).expect("context");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nRUN echo traced > /proof\n"),
    )
    .expect("Dockerfile");
    let built = Command::new(strata_tests::bin("strata"))
        .env_remove("STRATA_TOKEN")
        .env_remove("STRATA_TOKEN_FILE")
        .env_remove("STRATA_CA_CERT")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(["--scheduler", &url, "build", "--progress", "plain"])
        .arg(&ctx)
        .output()
        .expect("run strata");
    assert!(
        built.status.success(),
        "build failed:\n{}\n{}",
        text(&built),
        logs()
    );

    // The client's command is the root; its trace must fill up with the
    // scheduler's and the worker's spans as their batches arrive.
    let deadline = Instant::now() + TRACE_TIMEOUT;
    let report = loop {
        let found = jaeger.get("/api/traces?service=strata&limit=20");
        let mut problems = String::new();
        let mut whole = None;
        let ids: Vec<String> = found["data"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t["traceID"].as_str().map(str::to_string))
            .collect();
        for id in &ids {
            let trace = jaeger.get(&format!("/api/traces/{id}"));
            let spans = spans_of(&trace["data"][0]);
            match what_is_missing(id, &spans) {
                None => whole = Some(summary(id, &spans)),
                Some(why) => {
                    let _ = write!(problems, "{why}\n{}", summary(id, &spans));
                }
            }
        }
        if let Some(tree) = whole {
            eprintln!("{tree}");
            assert_eq!(
                ids.len(),
                1,
                "one build made {} traces rooted at the client:\n{problems}",
                ids.len()
            );
            return;
        }
        if Instant::now() >= deadline {
            break if ids.is_empty() {
                format!(
                    "Jaeger has no trace of service strata; services: {}",
                    jaeger.get("/api/services")["data"]
                )
            } else {
                problems
            };
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    panic!(
        "no whole trace of the build within {} s:\n{report}\n--- strata build\n{}\n{}",
        TRACE_TIMEOUT.as_secs(),
        text(&built),
        logs()
    );
}
