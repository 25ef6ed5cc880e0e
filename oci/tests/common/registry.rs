//! A real distribution registry (Debian's `docker-registry`, v2.8) on a
//! free loopback port, with temporary storage, killed on drop. Its access
//! log is kept so tests can count the requests it served.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::require_tool;

/// A running registry.
pub struct TestRegistry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    log: PathBuf,
}

/// One line of the registry's access log.
#[derive(Debug, Clone)]
pub struct Request {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Response status.
    pub status: u16,
}

impl TestRegistry {
    /// An anonymous registry.
    pub async fn start() -> Self {
        Self::launch(None).await
    }

    /// A registry that wants HTTP basic auth as `user`/`password`
    /// (a bcrypt htpasswd file made with `htpasswd -B`).
    pub async fn start_with_htpasswd(user: &str, password: &str) -> Self {
        Self::launch(Some((user, password))).await
    }

    async fn launch(auth: Option<(&str, &str)>) -> Self {
        let binary = registry_binary();
        let dir = tempfile::tempdir().expect("registry temp dir");
        let port = free_port();
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("storage").display()
        );
        if let Some((user, password)) = auth {
            let htpasswd = require_tool("htpasswd", "apache2-utils");
            let out = Command::new(htpasswd)
                .args(["-Bbn", user, password])
                .output()
                .expect("run htpasswd");
            assert!(out.status.success(), "htpasswd failed: {out:?}");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let log = dir.path().join("registry.log");
        let log_file = std::fs::File::create(&log).expect("create registry log");
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log handle"))
            .stderr(log_file)
            .spawn()
            .expect("start docker-registry");
        let mut registry = Self {
            child,
            dir,
            port,
            log,
        };
        registry.wait_until_up().await;
        registry
    }

    async fn wait_until_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("poll docker-registry") {
                panic!("docker-registry exited with {status}:\n{}", self.log_text());
            }
            if let Some(status) = http_status(self.port, "/v2/").await
                && (status == 200 || status == 401)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer GET /v2/ within 30 s:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A scratch directory that lives as long as the registry.
    pub fn scratch(&self) -> PathBuf {
        let p = self.dir.path().join("scratch");
        std::fs::create_dir_all(&p).expect("scratch dir");
        p
    }

    /// The registry's whole log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The requests in the access log so far.
    pub fn requests(&self) -> Vec<Request> {
        self.log_text()
            .lines()
            .filter_map(parse_access_line)
            .collect()
    }

    /// Waits until the access log shows `method` on a URI containing
    /// `uri_part` `count` times: the registry writes its log line right
    /// after answering, so the client may be a hair ahead of it.
    pub async fn wait_for_request(&self, method: &str, uri_part: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = self
                .requests()
                .iter()
                .filter(|r| r.method == method && r.uri.contains(uri_part))
                .count();
            if seen >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the registry log never showed {count}× {method} {uri_part}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Requests that moved blob bytes: opening an upload (a POST to
    /// `blobs/uploads/` that is not a mount), sending a chunk (PATCH) or
    /// committing one (PUT).
    pub fn blob_upload_requests(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.uri.contains("/blobs/uploads/"))
            .filter(|r| r.method == "PATCH" || r.method == "PUT" || !r.uri.contains("mount="))
            .collect()
    }

    /// Successful cross-repository mounts.
    pub fn mounts(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.uri.contains("mount=") && r.status == 201)
            .collect()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's registry binary: on `PATH`, else wherever `dpkg -L
/// docker-registry` says the package put it.
fn registry_binary() -> PathBuf {
    let from_dpkg = Command::new("dpkg")
        .args(["-L", "docker-registry"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(PathBuf::from)
                .find(|p| p.ends_with("bin/docker-registry") && p.is_file())
        });
    from_dpkg.unwrap_or_else(|| require_tool("docker-registry", "docker-registry"))
}

/// `127.0.0.1 - - [date] "PUT /v2/x HTTP/1.1" 201 0 "" "agent"`.
fn parse_access_line(line: &str) -> Option<Request> {
    let start = line.find('"')?;
    let rest = &line[start + 1..];
    let end = rest.find('"')?;
    let mut request = rest[..end].split_whitespace();
    let method = request.next()?.to_string();
    let uri = request.next()?.to_string();
    let status = rest[end + 1..].split_whitespace().next()?.parse().ok()?;
    Some(Request {
        method,
        uri,
        status,
    })
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
        .port()
}

/// The status of a plain `GET path`, or `None` if nothing answers.
async fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace().nth(1)?.parse().ok()
}
