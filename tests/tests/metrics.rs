//! Observability with real tools: a Prometheus (Debian's package) scrapes a
//! scheduler and a worker on loopback during a build and sees the counters
//! move — and the gauges: a one-slot worker and two independent slow
//! stages make a queue, so queue depth and running jobs reach 1; bytes
//! downloaded move with the base image's layer; `promtool check metrics`
//! accepts both endpoints; every metric the Grafana dashboard in
//! deploy/grafana queries exists, and every one of its expressions, with
//! Grafana's variables filled in, runs on that Prometheus and shows
//! something over the test (a series above zero); the health endpoints and
//! the gRPC health service answer.

use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use strata_tests::base_image::push_busybox;
use strata_tests::procs::{Proc, SchedulerProc, http_get, wait_ready};
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

    /// An instant query's result vector; panics with Prometheus's error
    /// when the query is refused.
    fn query(&self, query: &str) -> Vec<Value> {
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
        assert_eq!(v["status"], "success", "{query}: {body}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The value of an instant query's first result, if any.
    fn value(&self, query: &str) -> Option<f64> {
        self.query(query)
            .first()
            .and_then(|r| r["value"][1].as_str())
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

/// Every PromQL expression of the dashboard's panels with Grafana's
/// variables filled in as Grafana would for this test: the built-in
/// intervals fixed, each template variable at its "All" value.
fn dashboard_expressions() -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/grafana/strata-dashboard.json");
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard JSON"))
            .expect("the dashboard is JSON");
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", Value::String(e)) => out.push(e.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut exprs = Vec::new();
    walk(&dash["panels"], &mut exprs);
    let mut vars: Vec<(String, String)> = [
        ("__rate_interval", "1m"),
        ("__interval", "15s"),
        ("__range", "5m"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(name) = v["name"].as_str() {
            let all = v["allValue"].as_str().unwrap_or(".*");
            vars.push((name.to_string(), all.to_string()));
        }
    }
    // Longest names first, so $__range is not taken for a $__r... prefix.
    vars.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    exprs
        .into_iter()
        .map(|e| {
            let mut e = e;
            for (k, v) in &vars {
                e = e
                    .replace(&format!("${{{k}}}"), v)
                    .replace(&format!("${k}"), v);
            }
            assert!(!e.contains('$'), "a Grafana variable left in {e}");
            e
        })
        .collect()
}

#[test]
fn prometheus_sees_a_build_and_the_dashboard_queries_exist() {
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let dir = tempfile::tempdir().expect("dir");
    let sched = SchedulerProc::start(dir.path(), &[], &[]);
    let url = format!("http://127.0.0.1:{}", sched.port);
    // One slot: the build's two independent stages make a queue.
    let worker_metrics = free_port();
    let worker_state = tempfile::tempdir().expect("worker state");
    let worker = Proc::start(
        dir.path(),
        "worker-1",
        "strata-worker",
        &[
            "--scheduler".to_string(),
            url.clone(),
            "--state".to_string(),
            worker_state.path().display().to_string(),
            "--name".to_string(),
            "worker-1".to_string(),
            "--capacity".to_string(),
            "1".to_string(),
            "--metrics-listen".to_string(),
            format!("127.0.0.1:{worker_metrics}"),
        ],
        &[],
    );
    wait_ready(worker_metrics, "/readyz", "worker registered");
    assert_eq!(http_get(sched.metrics_port, "/healthz").0, 200);
    assert_eq!(http_get(sched.metrics_port, "/readyz").0, 200);
    assert_eq!(http_get(worker_metrics, "/healthz").0, 200);

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
        ("worker", worker_metrics),
    ]);
    prom.wait_at_least("sum(up)", 2.0);
    prom.wait_at_least("strata_scheduler_workers_connected", 1.0);

    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).expect("ctx");
    // Stages a and b are independent: both RUNs are queued at once, and
    // the one-slot worker takes one while the other waits.
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {base} AS a\nRUN sleep 4 && echo a > /a\n\
             FROM {base} AS b\nRUN sleep 4 && echo b > /b\n\
             FROM {base}\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n"
        ),
    )
    .expect("Dockerfile");
    let o = Command::new(strata_tests::bin("strata"))
        .args(["--scheduler", &url, "build", "--progress", "plain"])
        .arg(&ctx)
        .output()
        .expect("strata build");
    assert!(
        o.status.success(),
        "{}{}\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        sched.proc.log(),
        worker.log()
    );
    prom.wait_at_least(r#"strata_scheduler_steps_total{status="executed"}"#, 4.0);
    prom.wait_at_least(r#"strata_scheduler_builds_total{outcome="succeeded"}"#, 1.0);
    prom.wait_at_least(
        r#"strata_scheduler_cache_lookups_total{result="miss"}"#,
        2.0,
    );
    prom.wait_at_least("strata_scheduler_step_duration_seconds_count", 2.0);
    prom.wait_at_least(r#"strata_worker_jobs_total{outcome="succeeded"}"#, 2.0);
    prom.wait_at_least("strata_worker_bytes_uploaded_total", 1.0);
    prom.wait_at_least("strata_worker_blobs_downloaded_total", 1.0);
    // The base image's layer, fetched by the worker.
    prom.wait_at_least("strata_worker_bytes_downloaded_total", 1.0);
    // The gauges moved while the build ran: a job waited for the slot,
    // one ran at a time.
    let window = "[5m]";
    prom.wait_at_least(
        &format!("max_over_time(strata_scheduler_queue_depth{window})"),
        1.0,
    );
    prom.wait_at_least(
        &format!("max_over_time(strata_scheduler_jobs_running{window})"),
        1.0,
    );
    prom.wait_at_least(
        &format!("max_over_time(strata_worker_jobs_running{window})"),
        1.0,
    );
    let most = prom.value(&format!(
        "max_over_time(strata_worker_jobs_running{window})"
    ));
    assert_eq!(
        most,
        Some(1.0),
        "a one-slot worker ran more than one job at once"
    );

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
    let (w_status, w_text) = http_get(worker_metrics, "/metrics");
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

    // Every panel's expression runs, and over the test (the last 5
    // minutes, as a Grafana time range would) has a series above zero:
    // nothing on the dashboard stays empty or flat after two builds.
    let exprs = dashboard_expressions();
    assert!(!exprs.is_empty(), "the dashboard has no expressions");
    // The last scrape may be younger than the subquery's last whole-second
    // step: each expression gets a few seconds to show it.
    let mut flat = Vec::new();
    for e in &exprs {
        assert!(
            !prom.query(e).is_empty(),
            "the dashboard's {e} returns nothing"
        );
        let over_test = format!("max_over_time(({e})[5m:1s])");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let peaks = prom.query(&over_test);
            let above_zero = peaks.iter().any(|r| {
                r["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| v > 0.0)
            });
            if above_zero {
                break;
            }
            if Instant::now() >= deadline {
                flat.push(format!("{e} -> {peaks:?}"));
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    assert!(
        flat.is_empty(),
        "dashboard expressions that never rose above zero during the builds:\n{}",
        flat.join("\n")
    );
}
