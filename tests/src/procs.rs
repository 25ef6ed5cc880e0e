//! A scheduler and workers started directly (not through `up.sh`) with
//! whatever flags a test needs — tokens, TLS, metrics, trace export — each
//! on free loopback ports, logs kept for failure messages, killed on drop.

use crate::registry::free_port;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One strata process.
pub struct Proc {
    child: Child,
    log: PathBuf,
    name: String,
}

impl Proc {
    /// Starts binary `bin` with `args` and `env`, output to `<dir>/<name>.log`.
    pub fn start(
        dir: &Path,
        name: &str,
        bin: &str,
        args: &[String],
        env: &[(String, String)],
    ) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("process log");
        let child = Command::new(crate::bin(bin))
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env_remove("STRATA_SCHEDULER")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {bin}: {e}"));
        Proc {
            child,
            log,
            name: name.to_string(),
        }
    }

    /// Sends `signal` (e.g. `TERM`) to the process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} {}", self.name);
    }

    /// Waits up to `timeout` for the process to exit; its status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        format!(
            "--- {}\n{}",
            self.name,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    /// Waits until `port` on loopback accepts connections.
    pub fn wait_port(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!(
                    "{} exited ({s}) before listening:\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen on {port} within 60 s:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until its log contains `needle`.
    pub fn wait_log(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::fs::read_to_string(&self.log)
                .unwrap_or_default()
                .contains(needle)
            {
                return;
            }
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!("{} exited ({s}):\n{}", self.name, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{} never logged {needle:?} within 60 s:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scheduler on free ports: gRPC and metrics.
pub struct SchedulerProc {
    /// The process.
    pub proc: Proc,
    /// gRPC port.
    pub port: u16,
    /// /metrics, /healthz, /readyz port.
    pub metrics_port: u16,
    _state: tempfile::TempDir,
}

impl SchedulerProc {
    /// Starts `strata-scheduler` with `extra` flags and `env`; waits until
    /// both ports listen.
    pub fn start(dir: &Path, extra: &[String], env: &[(String, String)]) -> Self {
        Self::start_on(dir, free_port(), extra, env)
    }

    /// As [`SchedulerProc::start`], on gRPC port `port` (a restarted
    /// scheduler where the old one was), with a fresh state directory.
    pub fn start_on(dir: &Path, port: u16, extra: &[String], env: &[(String, String)]) -> Self {
        let state = tempfile::tempdir().expect("scheduler state");
        let metrics_port = free_port();
        let name = (1..)
            .map(|n| {
                if n == 1 {
                    "scheduler".to_string()
                } else {
                    format!("scheduler-{n}")
                }
            })
            .find(|n| !dir.join(format!("{n}.log")).exists())
            .expect("a free log name");
        let mut args = vec![
            "--listen".to_string(),
            format!("127.0.0.1:{port}"),
            "--metrics-listen".to_string(),
            format!("127.0.0.1:{metrics_port}"),
            "--state".to_string(),
            state.path().display().to_string(),
        ];
        args.extend_from_slice(extra);
        let mut proc = Proc::start(dir, &name, "strata-scheduler", &args, env);
        proc.wait_port(port);
        proc.wait_port(metrics_port);
        SchedulerProc {
            proc,
            port,
            metrics_port,
            _state: state,
        }
    }
}

/// A worker with its metrics port.
pub struct WorkerProc {
    /// The process.
    pub proc: Proc,
    /// /metrics, /healthz, /readyz port.
    pub metrics_port: u16,
    _state: Option<tempfile::TempDir>,
}

impl WorkerProc {
    /// Starts `strata-worker` named `name` against `scheduler_url` with
    /// `extra` flags and `env`; waits until its metrics port listens (not
    /// until it registered: a test of refused workers needs that).
    pub fn start(
        dir: &Path,
        name: &str,
        scheduler_url: &str,
        extra: &[String],
        env: &[(String, String)],
    ) -> Self {
        let state = tempfile::tempdir().expect("worker state");
        let mut w = Self::start_in(dir, name, scheduler_url, state.path(), extra, env);
        w._state = Some(state);
        w
    }

    /// As [`WorkerProc::start`], with its state in `state` (which the
    /// caller owns: a small filesystem, say).
    pub fn start_in(
        dir: &Path,
        name: &str,
        scheduler_url: &str,
        state: &Path,
        extra: &[String],
        env: &[(String, String)],
    ) -> Self {
        let metrics_port = free_port();
        let mut args = vec![
            "--scheduler".to_string(),
            scheduler_url.to_string(),
            "--state".to_string(),
            state.display().to_string(),
            "--name".to_string(),
            name.to_string(),
            "--metrics-listen".to_string(),
            format!("127.0.0.1:{metrics_port}"),
        ];
        // Two slots unless `extra` says otherwise.
        if !extra.iter().any(|a| a.starts_with("--capacity")) {
            args.extend(["--capacity".to_string(), "2".to_string()]);
        }
        args.extend_from_slice(extra);
        let mut proc = Proc::start(dir, name, "strata-worker", &args, env);
        proc.wait_port(metrics_port);
        WorkerProc {
            proc,
            metrics_port,
            _state: None,
        }
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        // A worker killed mid-step leaves its step's overlay mounted in
        // its state directory (the next worker on that state cleans it
        // up; there is none); a mounted directory cannot be removed, so
        // the state it owns would stay behind, mounted, after every test.
        // Its step's container outlives it too: killed and deleted first.
        if let Some(state) = &self._state {
            let _ = self.proc.child.kill();
            let _ = self.proc.child.wait();
            clean_worker_state(state.path());
        }
    }
}

/// What a worker killed mid-step leaves in its state directory `state`,
/// removed as the next worker on it would: its step's containers (killed
/// and deleted) and overlay mounts. Call once no worker runs on it.
pub fn clean_worker_state(state: &Path) {
    let root = state.join("exec/runc");
    let ids = Command::new("runc")
        .arg("--root")
        .arg(&root)
        .args(["list", "-q"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for id in ids.lines() {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(&root)
            .args(["delete", "--force", id])
            .status();
    }
    unmount_under(state);
}

/// Every mount point at or below `dir`.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::canonicalize(dir) else {
        return Vec::new();
    };
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(&dir))
        .collect()
}

/// Detaches every mount at or below `dir` (deepest first).
pub fn unmount_under(dir: &Path) {
    let mut points = mounts_under(dir);
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(&p).status();
    }
}

/// The ids of the runc containers under the runc root `root`, one a line
/// (a worker's is `exec/runc` in its state directory).
pub fn runc_containers(root: &Path) -> String {
    // `runc list` fails when a container it has just listed is deleted
    // before it reads its state (a worker cleaning up after a cancel):
    // then it is asked again.
    let mut tries = 0;
    let list = loop {
        let list = Command::new("runc")
            .arg("--root")
            .arg(root)
            .args(["list", "-q"])
            .output()
            .expect("runc list");
        tries += 1;
        let vanished = String::from_utf8_lossy(&list.stderr).contains("no such file or directory");
        if list.status.success() || !vanished || tries == 5 {
            break list;
        }
    };
    assert!(
        list.status.success(),
        "runc list: {}",
        String::from_utf8_lossy(&list.stderr)
    );
    String::from_utf8_lossy(&list.stdout).trim().to_string()
}

/// `GET http://127.0.0.1:port/path`: (status, body), by hand (HTTP/1.0);
/// status 0 when nothing answers.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(e) => return (0, e.to_string()),
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Waits until `GET path` on `port` answers 200.
pub fn wait_ready(port: u16, path: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(port, path).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "{what}: {path} not 200 within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
