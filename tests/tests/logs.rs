//! `--log-json`, what a log pipeline (Loki, Elasticsearch, Cloud Logging)
//! ingests: a scheduler and a worker run a build with JSON logs, and every
//! line either writes is one JSON object with a timestamp, a level and a
//! message; lines about the build carry its id (the worker's in the
//! fields of their job span, with the step's and the worker's id).

use serde_json::Value;
use std::process::Command;
use strata_tests::base_image::push_busybox;
use strata_tests::procs::{Proc, SchedulerProc, WorkerProc, wait_ready};
use strata_tests::registry::TestRegistry;

/// Every line of `proc`'s output as JSON; panics naming the first line
/// that is not a JSON object with a timestamp, a level and a message.
fn json_lines(proc: &Proc) -> Vec<Value> {
    let log = proc.log();
    // The first line is the test's own header (`--- name`).
    let mut lines = log.lines();
    let header = lines.next().unwrap_or_default();
    let mut out = Vec::new();
    for (n, line) in lines.enumerate() {
        if line.is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{header} line {}: not JSON ({e}): {line}", n + 1));
        assert!(
            v.is_object(),
            "{header} line {}: not an object: {line}",
            n + 1
        );
        let ts = v["timestamp"].as_str().unwrap_or_default();
        assert!(
            ts.len() >= 20 && ts.as_bytes()[4] == b'-' && ts.contains('T'),
            "{header} line {}: no RFC 3339 timestamp: {line}",
            n + 1
        );
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
                .contains(&v["level"].as_str().unwrap_or("")),
            "{header} line {}: no level: {line}",
            n + 1
        );
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{header} line {}: no message: {line}",
            n + 1
        );
        out.push(v);
    }
    assert!(!out.is_empty(), "{header} logged nothing");
    out
}

/// Lines with field `key` = `value`, their own or of their current span
/// or an enclosing one.
fn about<'a>(lines: &'a [Value], key: &str, value: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| {
            l[key] == value
                || l["span"][key] == value
                || l["spans"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s[key] == value))
        })
        .collect()
}

#[test]
fn json_logs_are_one_object_per_line_with_the_build_in_their_spans() {
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let dir = tempfile::tempdir().expect("dir");
    let json = ["--log-json".to_string()];
    // Plain logs even if the environment asks for colour or something else.
    let env = [("STRATA_LOG".to_string(), "info".to_string())];
    let sched = SchedulerProc::start(dir.path(), &json, &env);
    let url = format!("http://127.0.0.1:{}", sched.port);
    let worker = WorkerProc::start(dir.path(), "worker-1", &url, &json, &env);
    wait_ready(worker.metrics_port, "/readyz", "worker registered");

    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).expect("ctx");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nRUN echo logged > /l\n"),
    )
    .expect("Dockerfile");
    let meta = dir.path().join("meta.json");
    let o = Command::new(strata_tests::bin("strata"))
        .args(["--scheduler", &url, "build", "--progress", "plain"])
        .arg("--metadata-file")
        .arg(&meta)
        .arg(&ctx)
        .output()
        .expect("strata build");
    assert!(
        o.status.success(),
        "{}{}\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        sched.proc.log(),
        worker.proc.log()
    );
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(&meta).expect("metadata file"))
        .expect("metadata JSON");
    let build_id = meta["strata.build_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no build id in the metadata: {meta}"))
        .to_string();

    let s_lines = json_lines(&sched.proc);
    let w_lines = json_lines(&worker.proc);

    let s_build = about(&s_lines, "build_id", &build_id);
    assert!(
        !s_build.is_empty(),
        "no scheduler line about build_id {build_id}:\n{}",
        sched.proc.log()
    );
    let w_build = about(&w_lines, "build_id", &build_id);
    assert!(
        !w_build.is_empty(),
        "no worker line about build_id {build_id}:\n{}",
        worker.proc.log()
    );
    // The worker's job span names the step and the worker.
    assert!(
        w_build
            .iter()
            .any(|l| l["spans"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["name"] == "job"
                    && s["worker_id"] == "worker-1"
                    && s["step_id"].as_str().is_some_and(|id| !id.is_empty())))),
        "no worker line in a job span with worker_id and step_id:\n{}",
        worker.proc.log()
    );
}
