//! Blob store throughput: `put_file` (a new blob: copied in, hashed,
//! fsynced, renamed; for S3 a HEAD then a PUT or a multipart upload),
//! `get_to_file` (copied out and verified) and `stat`, for 4 KiB (a typical
//! context file: its time is the per-blob latency), 1 MiB and 64 MiB blobs
//! of incompressible bytes.
//!
//! - `fs/*`: [`FsBlobs`] in a temporary directory (embedded mode and every
//!   worker's local store);
//! - `s3/*`: [`S3Blobs`] with its default part size and concurrency
//!   against `s3s-fs` on loopback (the farm's shared store in the bench
//!   scripts), started from `STRATA_S3S_FS`, `PATH` or `~/.cargo/bin`.
//!   Without the binary these are skipped with a message.
//!
//! A put is measured on a store that lacks the blob (it is deleted,
//! untimed, before each put), since a put of a present blob returns after
//! one stat. criterion's "thrpt" is bytes per second for put and get and
//! calls per second for stat.
//!
//! `cargo bench -p strata-store --bench store`
#![allow(missing_docs)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, SamplingMode, Throughput};
use sha2::{Digest as _, Sha256};
use strata_store::{BlobStore, FsBlobs, S3Blobs, S3Config};
use tempfile::TempDir;
use tokio::runtime::Runtime;

const MIB: usize = 1 << 20;
const SIZES: [(usize, &str); 3] = [(4 << 10, "4KiB"), (MIB, "1MiB"), (64 * MIB, "64MiB")];
const BUCKET: &str = "bench";

/// A source file of `len` incompressible bytes and its digest.
struct Source {
    path: PathBuf,
    digest: String,
    len: usize,
}

fn source(dir: &Path, len: usize, seed: u64) -> Source {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut bytes = vec![0u8; len];
    for chunk in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let path = dir.join(format!("source-{len}"));
    std::fs::write(&path, &bytes).expect("write the source file");
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    Source { path, digest, len }
}

/// An `s3s-fs` server on a free loopback port, killed on drop.
struct S3sFs {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl S3sFs {
    fn binary() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("STRATA_S3S_FS") {
            return Some(p.into());
        }
        let on_path = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|dir| dir.join("s3s-fs"));
        let in_cargo = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/s3s-fs"));
        on_path.chain(in_cargo).find(|p| p.is_file())
    }

    fn start() -> Result<S3sFs, String> {
        let binary =
            Self::binary().ok_or("s3s-fs not found (STRATA_S3S_FS, PATH, ~/.cargo/bin)")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join(BUCKET)).map_err(|e| e.to_string())?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let mut child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", "AK", "--secret-key", "SK"])
            .arg(&data)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("s3s-fs exited: {status}"));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(S3sFs {
                    child,
                    port,
                    _dir: dir,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err("s3s-fs did not listen within 20 s".into())
    }

    fn config(&self) -> S3Config {
        S3Config {
            endpoint: Some(format!("http://127.0.0.1:{}", self.port)),
            bucket: BUCKET.into(),
            force_path_style: true,
            access_key_id: Some("AK".into()),
            secret_access_key: Some("SK".into()),
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

fn bench_store(
    c: &mut Criterion,
    rt: &Runtime,
    name: &str,
    store: Arc<dyn BlobStore>,
    sources: &[Source],
    scratch: &Path,
) {
    let mut g = c.benchmark_group(format!("store_{name}"));
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (src, (_, label)) in sources.iter().zip(SIZES) {
        g.throughput(Throughput::Bytes(src.len as u64));
        g.bench_function(format!("put_file/{label}"), |b| {
            b.iter_batched(
                || rt.block_on(store.delete(&src.digest)).expect("delete"),
                |()| {
                    let put = rt
                        .block_on(store.put_file(&src.digest, &src.path))
                        .expect("put_file");
                    assert!(!put.existed);
                },
                BatchSize::PerIteration,
            )
        });
        rt.block_on(store.put_file(&src.digest, &src.path))
            .expect("put_file");
        let dest = scratch.join(format!("out-{name}-{label}"));
        g.bench_function(format!("get_to_file/{label}"), |b| {
            b.iter(|| {
                let n = rt
                    .block_on(store.get_to_file(&src.digest, &dest))
                    .expect("get_to_file");
                assert_eq!(n, src.len as u64);
            })
        });
        let _ = std::fs::remove_file(&dest);
    }
    g.throughput(Throughput::Elements(1));
    let present = &sources[0].digest;
    g.bench_function("stat/present", |b| {
        b.iter(|| assert!(rt.block_on(store.stat(present)).expect("stat").is_some()))
    });
    let absent = format!("sha256:{}", "0".repeat(64));
    g.bench_function("stat/absent", |b| {
        b.iter(|| assert!(rt.block_on(store.stat(&absent)).expect("stat").is_none()))
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let scratch = tempfile::Builder::new()
        .prefix("strata-store-bench")
        .tempdir()
        .expect("temp dir");
    let sources: Vec<Source> = SIZES
        .iter()
        .zip(1u64..)
        .map(|(&(len, _), seed)| source(scratch.path(), len, seed))
        .collect();

    let fs = FsBlobs::open(scratch.path().join("fs-store")).expect("open the fs store");
    bench_store(&mut c, &rt, "fs", Arc::new(fs), &sources, scratch.path());

    match S3sFs::start() {
        Ok(server) => {
            let store = S3Blobs::new(server.config()).expect("S3 client");
            rt.block_on(store.check()).expect("s3s-fs has the bucket");
            bench_store(&mut c, &rt, "s3", Arc::new(store), &sources, scratch.path());
            drop(server);
        }
        Err(why) => eprintln!("store_s3: skipped: {why}"),
    }
    c.final_summary();
}
