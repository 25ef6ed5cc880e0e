//! A real multi-process farm on loopback for whole-system tests, started
//! with `deploy/local/up.sh` (the script users run) from the binaries of
//! this build, and stopped (state purged) when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::registry::free_port;

/// A running scheduler and its workers.
pub struct LocalFarm {
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// The shared cache a farm runs on.
#[derive(Default)]
pub struct Shared<'a> {
    /// `--redis URL`.
    pub redis: Option<&'a str>,
    /// `--s3 URL`.
    pub s3: Option<String>,
    /// Environment for the farm's processes (S3 credentials).
    pub env: Vec<(&'static str, &'static str)>,
}

impl<'a> Shared<'a> {
    /// Both shared stores: `redis`, and `s3`'s bucket under `prefix`, with
    /// its credentials.
    pub fn on(
        redis: &'a crate::services::RedisServer,
        s3: &crate::services::S3Server,
        prefix: &str,
    ) -> Self {
        Shared {
            redis: Some(&redis.url),
            s3: Some(s3.url(prefix)),
            env: s3.env().to_vec(),
        }
    }
}

impl LocalFarm {
    /// Starts a scheduler and `workers` workers of `capacity` slots each;
    /// panics with the logs when the farm does not come up.
    pub fn start(workers: usize, capacity: u32) -> Self {
        Self::start_shared(workers, capacity, &Shared::default())
    }

    /// As [`LocalFarm::start`], on a shared cache (Redis and S3).
    pub fn start_shared(workers: usize, capacity: u32, shared: &Shared<'_>) -> Self {
        let dir = tempfile::tempdir().expect("farm dir");
        let port = free_port();
        let bin_dir = crate::bin("strata")
            .parent()
            .expect("binaries directory")
            .to_path_buf();
        let mut up = Command::new(repo().join("deploy/local/up.sh"));
        up.env("STRATA_BIN_DIR", &bin_dir)
            .envs(shared.env.iter().copied())
            .args(["--workers", &workers.to_string()])
            .args(["--port", &port.to_string()])
            .args(["--capacity", &capacity.to_string()])
            .arg("--dir")
            .arg(dir.path());
        if let Some(r) = shared.redis {
            up.args(["--redis", r]);
        }
        if let Some(s) = &shared.s3 {
            up.args(["--s3", s]);
        }
        let out = up.output().expect("run deploy/local/up.sh");
        assert!(
            out.status.success(),
            "deploy/local/up.sh failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let url = stdout
            .lines()
            .find_map(|l| l.strip_prefix("export STRATA_SCHEDULER="))
            .unwrap_or_else(|| panic!("up.sh printed no STRATA_SCHEDULER line:\n{stdout}"))
            .trim()
            .to_string();
        LocalFarm { dir, url }
    }

    /// The farm's directory (logs under `logs/`, state under `state/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `strata` against the farm.
    pub fn strata(&self, args: &[&str]) -> Output {
        Command::new(crate::bin("strata"))
            .env("STRATA_SCHEDULER", &self.url)
            .env_remove("STRATA_HOME")
            .args(args)
            .output()
            .expect("run strata")
    }

    /// Every log file of the farm, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path().join("logs")) {
            for e in entries.flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                out.push_str(&format!("--- {}\n", e.path().display()));
                for l in tail.into_iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }
}

impl Drop for LocalFarm {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("deploy/local/down.sh"))
            .arg("--dir")
            .arg(self.dir.path())
            .output();
    }
}
