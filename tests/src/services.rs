//! The shared cache's real services on loopback for whole-system tests: a
//! `redis-server` and an S3 server (`s3s-fs`, the S3 implementation CI
//! installs from crates.io), each on a free port with its data in a
//! temporary directory, stopped when dropped. A missing binary fails the
//! test with what to install: these tests never skip.

use crate::registry::free_port;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Access key of the test S3 server.
pub const S3_ACCESS_KEY: &str = "strata-test";
/// Secret key of the test S3 server.
pub const S3_SECRET_KEY: &str = "strata-test-secret";

fn find(env: &str, name: &str, extra: &[PathBuf], install: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect())
        .unwrap_or_default();
    candidates.extend(extra.iter().cloned());
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is needed by this test and was not found ({install}; or set {env})")
        })
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited at start: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on port {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `redis-server` on loopback.
pub struct RedisServer {
    child: Child,
    _dir: tempfile::TempDir,
    /// `redis://127.0.0.1:PORT/0`.
    pub url: String,
    port: u16,
}

impl RedisServer {
    /// Starts one.
    pub fn start() -> Self {
        let bin = find(
            "STRATA_REDIS_SERVER",
            "redis-server",
            &[],
            "apt-get install redis-server",
        );
        let dir = tempfile::tempdir().expect("redis dir");
        let port = free_port();
        let mut child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        wait_for_port(port, &mut child, "redis-server");
        RedisServer {
            child,
            _dir: dir,
            url: format!("redis://127.0.0.1:{port}/0"),
            port,
        }
    }

    /// Stops the server, as an outage (its data is not kept).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends one command (e.g. `FLUSHALL`) over the Redis protocol and
    /// returns the raw reply.
    pub fn command(&self, args: &[&str]) -> String {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).expect("send to redis");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).expect("read from redis");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An S3 server (`s3s-fs`) on loopback with one bucket.
pub struct S3Server {
    child: Child,
    bin: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
}

impl S3Server {
    /// Starts one with bucket `bucket`.
    pub fn start(bucket: &str) -> Self {
        let home_bin = std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".cargo/bin/s3s-fs"))
            .into_iter()
            .collect::<Vec<_>>();
        let bin = find(
            "STRATA_S3S_FS",
            "s3s-fs",
            &home_bin,
            "cargo install s3s-fs@0.14.1 --features binary",
        );
        let dir = tempfile::tempdir().expect("s3 dir");
        // s3s-fs keeps a bucket as a directory of its root.
        std::fs::create_dir(dir.path().join(bucket)).expect("bucket dir");
        let port = free_port();
        let child = Self::spawn(&bin, port, dir.path());
        S3Server {
            child,
            bin,
            port,
            dir,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: bucket.to_string(),
        }
    }

    fn spawn(bin: &std::path::Path, port: u16, root: &std::path::Path) -> Child {
        let mut child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        wait_for_port(port, &mut child, "s3s-fs");
        child
    }

    /// Stops the server (its data stays), as an outage.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(&self.bin, self.port, self.dir.path());
    }

    /// The `--s3` URL of the bucket under `prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!(
            "s3://{}/{prefix}?endpoint={}&region=us-east-1&path_style=true",
            self.bucket, self.endpoint
        )
    }

    /// The environment a scheduler or worker needs to reach it.
    pub fn env(&self) -> [(&'static str, &'static str); 2] {
        [
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY),
        ]
    }

    /// [`S3Server::env`] as owned pairs, for process helpers.
    pub fn process_env(&self) -> Vec<(String, String)> {
        self.env()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The files of the bucket under `prefix` (what the server stores).
    pub fn objects(&self, prefix: &str) -> Vec<PathBuf> {
        fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.dir.path().join(&self.bucket).join(prefix), &mut out);
        out.sort();
        out
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `--redis URL --s3 URL` for a scheduler on these services, its blobs
/// under `prefix` in the bucket.
pub fn scheduler_args(redis: &RedisServer, s3: &S3Server, prefix: &str) -> Vec<String> {
    vec![
        "--redis".to_string(),
        redis.url.clone(),
        "--s3".to_string(),
        s3.url(prefix),
    ]
}
