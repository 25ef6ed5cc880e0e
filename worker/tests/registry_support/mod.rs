//! A real registry for the image tests: Debian's `docker-registry` (v2.8)
//! on a free loopback port with temporary storage, killed on drop (the
//! approach of `oci/tests/common/registry.rs`, trimmed to what the worker
//! tests need), and a registry client that never reads the user's docker
//! config. A missing tool fails the test with the package to install.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata_oci::registry::{RegistryClient, RegistryConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The path of `binary`, or a panic naming the Debian package to install.
pub fn require_tool(binary: &str, package: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{binary}` not found: the image tests need it. Install the Debian package \
                 `{package}` (apt-get install -y {package})"
            )
        })
}

/// A running registry.
pub struct TestRegistry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    log: PathBuf,
}

impl TestRegistry {
    /// An anonymous registry.
    pub async fn start() -> Self {
        let binary = require_tool("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().expect("registry temp dir");
        let port = free_port();
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("storage").display()
        );
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
            if http_status(self.port, "/v2/").await == Some(200) {
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

    /// The registry's whole log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many `GET`s of a URI containing `part` the access log shows.
    pub fn gets(&self, part: &str) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains("\"GET ") && l.contains(part))
            .count()
    }

    /// A client for this registry that reads an empty docker config.
    pub fn client(&self) -> RegistryClient {
        let config = self.dir.path().join("empty-config.json");
        std::fs::write(&config, b"{}").expect("write empty config.json");
        RegistryClient::new(RegistryConfig {
            insecure: Vec::new(),
            docker_config: Some(config),
        })
        .expect("build registry client")
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
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
