//! Helpers for whole-system tests that build with `strata build
//! --metadata-file` and look at the steps it reports: the build itself, the
//! status of each step, and writing a build context.

use crate::farm::LocalFarm;
use serde_json::Value;
use std::path::Path;
use std::process::Output;

/// A command's stdout and stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Builds `ctx` on `farm` and returns the metadata file's JSON.
pub fn build(farm: &LocalFarm, ctx: &Path, extra: &[&str]) -> Value {
    let out = tempfile::NamedTempFile::new().expect("metadata file");
    let meta = out.path().to_str().expect("utf-8").to_string();
    let mut args = vec!["build", "--progress", "plain", "--metadata-file", &meta];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().expect("utf-8"));
    let o = farm.strata(&args);
    assert!(
        o.status.success(),
        "build of {} failed:\n{}\n{}",
        ctx.display(),
        text(&o),
        farm.logs()
    );
    serde_json::from_slice(&std::fs::read(out.path()).expect("metadata")).expect("metadata JSON")
}

/// (instruction, status) of every step, in order.
pub fn statuses(m: &Value) -> Vec<(String, String)> {
    m["strata.steps"]
        .as_array()
        .expect("strata.steps")
        .iter()
        .map(|s| {
            (
                s["instruction"].as_str().unwrap_or_default().to_string(),
                s["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The status of the first step whose instruction contains `needle`.
pub fn status_of(m: &Value, needle: &str) -> String {
    statuses(m)
        .into_iter()
        .find(|(i, _)| i.contains(needle))
        .unwrap_or_else(|| panic!("no step {needle:?} in {m:#}"))
        .1
}

/// Writes a build context in `dir`: `dockerfile` and `files` (name, body).
pub fn write_ctx(dir: &Path, dockerfile: &str, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).expect("context dir");
    std::fs::write(dir.join("Dockerfile"), dockerfile).expect("Dockerfile");
    for (name, body) in files {
        std::fs::write(dir.join(name), body).expect("context file");
    }
}
