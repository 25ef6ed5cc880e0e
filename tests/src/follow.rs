//! A `strata build --progress json` followed while it runs: its events as
//! they arrive (they name each step's worker and attempt), a bounded wait
//! for any of them, and a bounded wait for the end, so a test of faults
//! can hit a step at a known point and cannot hang on a lost build.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running build.
pub struct JsonBuild {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    meta: PathBuf,
}

/// How a build ended.
pub struct Ended {
    /// The client's exit status.
    pub status: ExitStatus,
    /// Every event it printed.
    pub events: Vec<Value>,
    /// What it wrote on stderr (the error report).
    pub stderr: String,
}

impl JsonBuild {
    /// Starts `strata build` of `ctx` against the scheduler at `url` in
    /// cache namespace `ns` (`SOURCE_DATE_EPOCH=0`, so two builds of one
    /// context make one image), its metadata written to `meta`.
    pub fn start(url: &str, ctx: &Path, ns: &str, meta: &Path) -> Self {
        let mut child = Command::new(crate::bin("strata"))
            .args(["--scheduler", url, "build", "--progress", "json"])
            .args(["--namespace", ns, "--build-arg", "SOURCE_DATE_EPOCH=0"])
            .arg("--metadata-file")
            .arg(meta)
            .arg(ctx)
            .env_remove("STRATA_SCHEDULER")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("strata build");
        let events = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (out, err) = (
            child.stdout.take().expect("stdout"),
            child.stderr.take().expect("stderr"),
        );
        let ev = Arc::clone(&events);
        let r1 = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    ev.lock().unwrap_or_else(|e| e.into_inner()).push(v);
                }
            }
        });
        let e = Arc::clone(&stderr);
        let r2 = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(err).read_to_string(&mut s);
            e.lock().unwrap_or_else(|e| e.into_inner()).push_str(&s);
        });
        JsonBuild {
            child,
            events,
            stderr,
            readers: vec![r1, r2],
            meta: meta.to_path_buf(),
        }
    }

    /// The client's process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The events so far.
    pub fn events(&self) -> Vec<Value> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The first event `pred` accepts, waiting up to `timeout`.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.events().into_iter().find(&pred) {
                return Some(v);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to `timeout` for the client to exit; `None` (the client
    /// killed) when it did not.
    pub fn finish(&mut self, timeout: Duration) -> Option<Ended> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait for strata") {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Some(Ended {
            status,
            events: self.events(),
            stderr: self
                .stderr
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        })
    }

    /// The metadata file (`containerimage.digest`, ...) of a finished build.
    pub fn metadata(&self) -> Value {
        serde_json::from_slice(&std::fs::read(&self.meta).expect("metadata file"))
            .expect("metadata JSON")
    }
}

impl Drop for JsonBuild {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The events as lines, without the noisy progress ones: for failure
/// messages.
pub fn dump(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["type"] != "step_progress")
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}
