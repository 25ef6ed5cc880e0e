//! The conformance suite's harness: each backend in a temporary place,
//! with a back door to its bytes; the `s3s-fs` server the S3 cases talk to.

use futures::StreamExt as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_store::{BlobError, BlobStore, FsBlobs, S3Blobs, S3Config};
use tempfile::TempDir;

pub const MIB: usize = 1 << 20;
/// Bigger than two S3 parts of the test configuration.
pub const LARGE: usize = 12 * MIB;

/// A store under test, with a back door to its bytes.
pub struct Harness {
    pub store: Arc<dyn BlobStore>,
    /// Where blob `digest`'s bytes sit on disk (to corrupt them).
    pub blob_file: Box<dyn Fn(&str) -> PathBuf + Send + Sync>,
    /// Temp files and upload parts a put left behind.
    pub leftovers: Box<dyn Fn() -> Vec<PathBuf> + Send + Sync>,
    /// For the tests' own source and destination files.
    scratch: TempDir,
    pub server: Option<S3sFs>,
}

impl Harness {
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }
}

pub fn fs_harness() -> Harness {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().join("store");
    let store = FsBlobs::open(&root).unwrap();
    let paths = store.clone();
    let tmp = root.join("tmp");
    Harness {
        store: Arc::new(store),
        blob_file: Box::new(move |digest| paths.path(digest).unwrap()),
        leftovers: Box::new(move || entries(&tmp, |_| true)),
        scratch,
        server: None,
    }
}

pub async fn s3_harness() -> Harness {
    let server = S3sFs::start();
    let store = S3Blobs::new(server.config()).unwrap();
    store
        .check()
        .await
        .expect("s3s-fs answers and has the bucket");
    let blobs = server.root().join(BUCKET).join("farm/blobs/sha256");
    let root = server.root().to_path_buf();
    Harness {
        store: Arc::new(store),
        blob_file: Box::new(move |digest| blobs.join(digest.trim_start_matches("sha256:"))),
        // s3s-fs keeps multipart uploads and temp files beside its buckets.
        leftovers: Box::new(move || {
            entries(&root, |name| {
                name.starts_with(".upload") || name.starts_with(".tmp.")
            })
        }),
        scratch: tempfile::tempdir().unwrap(),
        server: Some(server),
    }
}

pub fn entries(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| keep(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect()
}

pub const BUCKET: &str = "strata";

/// An `s3s-fs` server on a free loopback port, killed on drop.
pub struct S3sFs {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl S3sFs {
    pub fn binary() -> PathBuf {
        if let Some(p) = std::env::var_os("STRATA_S3S_FS") {
            return p.into();
        }
        let on_path = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|dir| dir.join("s3s-fs"));
        let in_cargo = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/s3s-fs"));
        on_path.chain(in_cargo).find(|p| p.is_file()).expect(
            "s3s-fs not found (STRATA_S3S_FS, PATH, ~/.cargo/bin): \
             install it with `cargo install s3s-fs@0.14.1 --features binary`",
        )
    }

    pub fn start() -> S3sFs {
        let binary = Self::binary();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // s3s-fs serves each directory of its root as a bucket.
        std::fs::create_dir_all(data.join(BUCKET)).unwrap();
        let log = dir.path().join("s3s-fs.log");
        // Another test may take the port between our probe and the
        // server's bind: then the server exits and we try another.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let out = std::fs::File::create(&log).unwrap();
            let err = out.try_clone().unwrap();
            let mut child = Command::new(&binary)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", "AK", "--secret-key", "SK"])
                .arg(&data)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "starting s3s-fs ({}): {e}; install it with \
                         `cargo install s3s-fs@0.14.1 --features binary` or set STRATA_S3S_FS",
                        binary.display()
                    )
                });
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return S3sFs { child, port, dir };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "s3s-fs did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Small parts, so a [`LARGE`] blob really goes up in three.
    pub fn config(&self) -> S3Config {
        S3Config {
            endpoint: Some(self.endpoint()),
            bucket: BUCKET.into(),
            prefix: "farm/".into(),
            force_path_style: true,
            access_key_id: Some("AK".into()),
            secret_access_key: Some("SK".into()),
            multipart_threshold: 5 * MIB as u64,
            part_size: 5 * MIB as u64,
            concurrency: 2,
            max_attempts: 2,
            ..S3Config::default()
        }
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deterministic bytes that do not compress or repeat.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub async fn read_all(
    store: &dyn BlobStore,
    digest: &str,
    offset: u64,
) -> Result<Vec<u8>, BlobError> {
    let mut stream = store.get(digest, offset).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}
