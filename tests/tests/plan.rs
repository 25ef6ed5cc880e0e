//! `strata plan` end to end: the real binary on a real context directory.

use serde_json::Value;
use strata_tests::{fixture, strata};

fn plan_json(extra: &[&str]) -> Value {
    let ctx = fixture("parallel");
    let mut args = vec!["plan", "--format", "json"];
    args.extend_from_slice(extra);
    let ctx = ctx.to_str().expect("utf-8 path");
    args.push(ctx);
    let out = strata(&args);
    assert!(
        out.status.success(),
        "strata plan failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("plan is JSON")
}

fn steps_of(plan: &Value, stage: u64) -> Vec<&Value> {
    plan["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["stage"] == stage)
        .collect()
}

#[test]
fn four_independent_stages_are_parallel_branches() {
    let plan = plan_json(&[]);
    let stages = plan["stages"].as_array().expect("stages");
    let names: Vec<&str> = stages
        .iter()
        .map(|s| s["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["base", "compile", "test", "docs", "lint", ""]);
    assert_eq!(stages[0]["base"], "busybox:latest");

    let base_step = steps_of(&plan, 0)[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let mut branch_tips = Vec::new();
    for stage in 1..=4 {
        let steps = steps_of(&plan, stage);
        assert_eq!(steps.len(), 1, "stage {stage} has one step");
        // Each branch waits only for the base stage, not for each other.
        assert_eq!(
            steps[0]["depends_on"],
            serde_json::json!([base_step]),
            "stage {stage}"
        );
        branch_tips.push(steps[0]["id"].as_str().expect("id").to_string());
    }
    let finals = steps_of(&plan, 5);
    assert_eq!(finals.len(), 4);
    let mut waited: Vec<String> = Vec::new();
    for s in &finals {
        assert_eq!(s["kind"], "copy");
        for d in s["depends_on"].as_array().expect("deps") {
            waited.push(d.as_str().expect("id").to_string());
        }
    }
    for tip in &branch_tips {
        assert!(
            waited.contains(tip),
            "final stage waits for {tip}: {waited:?}"
        );
    }
    // The context file's digest is part of the COPY step's cache inputs.
    let docs = &steps_of(&plan, 3)[0];
    let digest = docs["action"]["sources"][0]["digest"]
        .as_str()
        .expect("digest");
    assert!(digest.starts_with("sha256:"));
}

#[test]
fn target_prints_only_what_it_needs() {
    let plan = plan_json(&["--target", "docs"]);
    let idx: Vec<u64> = plan["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| s["index"].as_u64().expect("index"))
        .collect();
    assert_eq!(idx, [0, 3]);
    assert_eq!(plan["steps"].as_array().expect("steps").len(), 2);
    assert_eq!(plan["target"], 3);
}

#[test]
fn text_format_lists_steps() {
    let ctx = fixture("parallel");
    let out = strata(&["plan", ctx.to_str().expect("utf-8")]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(text.contains("stage 3: FROM base AS docs"), "{text}");
    assert!(text.contains("COPY docs.md /out/docs.md"), "{text}");
    assert!(text.contains("9 steps in 6 stages"), "{text}");
}

#[test]
fn errors_name_file_and_line_and_exit_nonzero() {
    let dir = std::env::temp_dir().join(format!("strata-plan-err-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM busybox\nRUN true\nRUNN false\n",
    )
    .expect("write");
    let out = strata(&["plan", dir.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "{}:3: unknown instruction: RUNN (did you mean RUN?)",
        dir.join("Dockerfile").display()
    );
    assert!(err.contains(&want), "stderr: {err}");
    std::fs::write(dir.join("Dockerfile"), "").expect("write");
    let out = strata(&["plan", dir.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("file with no instructions"));
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn server_binaries_explain_bad_invocations() {
    // A worker without a scheduler address says what it needs.
    let out = std::process::Command::new(strata_tests::bin("strata-worker"))
        .env_remove("STRATA_SCHEDULER")
        .output()
        .expect("run strata-worker");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--scheduler"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A scheduler that cannot listen names the address and exits non-zero.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let state = tempfile::tempdir().expect("state");
    let out = std::process::Command::new(strata_tests::bin("strata-scheduler"))
        .args(["--listen", &addr, "--state"])
        .arg(state.path())
        .output()
        .expect("run strata-scheduler");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&addr) && err.contains("cannot listen"),
        "{err}"
    );
}
