//! Observability with real tools: a Prometheus (Debian's package) scrapes a
//! scheduler and a worker on loopback during a build and sees the counters
//! move; `promtool check metrics` accepts both endpoints; every metric the
//! Grafana dashboard in deploy/grafana queries exists; the health
//! endpoints and the gRPC health service answer.

use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use strata_tests::base_image::push_busybox;
use strata_tests::procs::{SchedulerProc, WorkerProc, http_get, wait_ready};
use strata_tests::registry::{TestRegistry, free_port, require_tool};

struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(targets: &[(&str, u16)]) -> Self {
        let bin = require_tool("prometheus", "prometheus");
        let dir = tempfile::tempdir().expect("prometheus dir");
        let mut config = String::from("global:\n  scrape_interval: 1s\nscrape_configs:\n");
        for (job, port) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
            ));
        }
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(&cfg, config).expect("config");
        let port = free_port();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let p = Prometheus {
            child,
            port,
            _dir: dir,
        };
        wait_ready(port, "/-/ready", "prometheus");
        p
    }

    /// The value of an instant query's single result, if any.
    fn value(&self, query: &str) -> Option<f64> {
        let q: String = query
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (status, body) = http_get(self.port, &format!("/api/v1/query?query={q}"));
        assert_eq!(status, 200, "{query}: {body}");
        let v: Value = serde_json::from_str(&body).expect("prometheus JSON");
        v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse().ok())
    }

    /// Waits until `query` is at least `min`.
    fn wait_at_least(&self, query: &str, min: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.value(query);
            if v.is_some_and(|v| v >= min) {
                return v.unwrap_or_default();
            }
            assert!(
                Instant::now() < deadline,
                "{query} = {v:?}, never reached {min} in 30 s"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Metric families an exposition declares (`# TYPE name kind`).
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

fn promtool_accepts(what: &str, text: &str) {
    let mut child = Command::new(require_tool("promtool", "prometheus"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool rejects the {what} metrics:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `strata_*` metric the dashboard's queries use, histogram series
/// folded into their family.
fn dashboard_metrics() -> BTreeSet<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/grafana/strata-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("dashboard JSON");
    let _: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("strata_") {
        let start = i + at;
        let end = start
            + text[start..]
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(text.len() - start);
        let name = &text[start..end];
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        if start == 0 || !(bytes[start - 1].is_ascii_alphanumeric()) {
            out.insert(name.to_string());
        }
        i = end;
    }
    out
}

#[test]
fn prometheus_sees_a_build_and_the_dashboard_queries_exist() {
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let dir = tempfile::tempdir().expect("dir");
    let sched = SchedulerProc::start(dir.path(), &[], &[]);
    let url = format!("http://127.0.0.1:{}", sched.port);
    let worker = WorkerProc::start(dir.path(), "worker-1", &url, &[], &[]);
    wait_ready(worker.metrics_port, "/readyz", "worker registered");
    assert_eq!(http_get(sched.metrics_port, "/healthz").0, 200);
    assert_eq!(http_get(sched.metrics_port, "/readyz").0, 200);
    assert_eq!(http_get(worker.metrics_port, "/healthz").0, 200);

    // The gRPC health service (what Kubernetes' grpc probes call).
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let serving = rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect");
        tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status
    });
    assert_eq!(
        serving,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let prom = Prometheus::start(&[
        ("scheduler", sched.metrics_port),
        ("worker", worker.metrics_port),
    ]);
    prom.wait_at_least("sum(up)", 2.0);
    prom.wait_at_least("strata_scheduler_workers_connected", 1.0);

    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).expect("ctx");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nRUN echo measured > /m\nRUN echo twice > /t\n"),
    )
    .expect("Dockerfile");
    let o = Command::new(strata_tests::bin("strata"))
        .args(["--scheduler", &url, "build", "--progress", "plain"])
        .arg(&ctx)
        .output()
        .expect("strata build");
    assert!(
        o.status.success(),
        "{}{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        sched.proc.log()
    );
    prom.wait_at_least(r#"strata_scheduler_steps_total{status="executed"}"#, 2.0);
    prom.wait_at_least(r#"strata_scheduler_builds_total{outcome="succeeded"}"#, 1.0);
    prom.wait_at_least(
        r#"strata_scheduler_cache_lookups_total{result="miss"}"#,
        2.0,
    );
    prom.wait_at_least("strata_scheduler_step_duration_seconds_count", 2.0);
    prom.wait_at_least(r#"strata_worker_jobs_total{outcome="succeeded"}"#, 2.0);
    prom.wait_at_least("strata_worker_bytes_uploaded_total", 1.0);
    prom.wait_at_least("strata_worker_blobs_downloaded_total", 1.0);

    // A rebuild is answered from the cache: hits move.
    let o = Command::new(strata_tests::bin("strata"))
        .args(["--scheduler", &url, "build", "--progress", "plain"])
        .arg(&ctx)
        .output()
        .expect("strata build");
    assert!(o.status.success());
    prom.wait_at_least(r#"strata_scheduler_steps_total{status="cached"}"#, 2.0);
    prom.wait_at_least(r#"strata_scheduler_cache_lookups_total{result="hit"}"#, 2.0);

    let (s_status, s_text) = http_get(sched.metrics_port, "/metrics");
    let (w_status, w_text) = http_get(worker.metrics_port, "/metrics");
    assert_eq!((s_status, w_status), (200, 200));
    promtool_accepts("scheduler", &s_text);
    promtool_accepts("worker", &w_text);

    let exposed: BTreeSet<String> = families(&s_text)
        .union(&families(&w_text))
        .cloned()
        .collect();
    let wanted = dashboard_metrics();
    assert!(!wanted.is_empty(), "the dashboard queries no strata metric");
    let missing: Vec<&String> = wanted.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics no endpoint exposes: {missing:?}"
    );
}
