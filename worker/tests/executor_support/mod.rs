//! Shared helpers of the executor tests: a busybox rootfs, an executor in a
//! temporary state directory, and a runner that collects output.
//!
//! The tests need root and real runc; without them they fail with a message
//! saying what to install, never skip.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use strata_worker::executor::{
    ExecError, ExecSpec, Executor, ExitStatus, Network, OutputChunk, RuncConfig, RuncExecutor,
    Stream,
};
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const APPLETS: &[&str] = &[
    "sh", "echo", "id", "cat", "ls", "sleep", "touch", "mkdir", "ps", "wc", "grep", "head", "kill",
    "pwd", "stat", "unshare", "true", "false", "printf", "hostname", "test", "rm", "awk", "tr",
];

pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n";
pub const GROUP: &str = "root:x:0:\napp:x:1000:\nextra:x:2000:app\n";

/// Panics unless the tests can run: root, runc, a static busybox.
pub fn require_environment() -> PathBuf {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the executor tests run containers and must run as root"
    );
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("busybox not found: install it with `apt-get install -y busybox-static`");
    let bytes = fs::read(&busybox).expect("read busybox");
    assert!(
        !has_interpreter(&bytes),
        "{} is dynamically linked: install `busybox-static`",
        busybox.display()
    );
    busybox
}

/// Whether a 64-bit little-endian ELF file has a `PT_INTERP` header.
fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| elf[phoff + i * size..][..4] == 3u32.to_le_bytes())
}

/// A rootfs with busybox applets in /bin, `/etc/passwd` and `/etc/group`
/// (`app` is uid 1000, gid 1000, member of `extra`, gid 2000).
pub fn rootfs() -> TempDir {
    let dir = bare_rootfs();
    let etc = dir.path().join("etc");
    fs::create_dir(&etc).unwrap();
    fs::write(etc.join("passwd"), PASSWD).unwrap();
    fs::write(etc.join("group"), GROUP).unwrap();
    dir
}

/// Busybox only: no `/etc` at all.
pub fn bare_rootfs() -> TempDir {
    let busybox = require_environment();
    let dir = tempfile::Builder::new()
        .prefix("strata-rootfs")
        .tempdir()
        .unwrap();
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    fs::copy(&busybox, bin.join("busybox")).unwrap();
    for applet in APPLETS {
        symlink("busybox", bin.join(applet)).unwrap();
    }
    dir
}

/// An executor whose state lives in a temporary directory.
pub async fn executor() -> (RuncExecutor, TempDir) {
    require_environment();
    let state = tempfile::Builder::new()
        .prefix("strata-exec")
        .tempdir()
        .unwrap();
    let exec = RuncExecutor::new(RuncConfig {
        state_dir: state.path().to_path_buf(),
        runc_binary: None,
        no_new_privileges: false,
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    (exec, state)
}

/// A unique step id (cgroup paths are host-wide).
pub fn step_id(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// `sh -c script` as root, host network, in `/`.
pub fn sh(rootfs: &Path, script: &str) -> ExecSpec {
    ExecSpec {
        rootfs: rootfs.to_path_buf(),
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        user: String::new(),
        network: Network::Host,
        security_insecure: false,
        mounts: Vec::new(),
        hostname: String::new(),
        extra_hosts: Vec::new(),
        timeout: None,
    }
}

/// What a step printed.
#[derive(Debug, Default)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    pub chunks: Vec<OutputChunk>,
}

/// Runs a step to its end and collects its output.
pub async fn run(
    exec: &RuncExecutor,
    id: &str,
    spec: ExecSpec,
) -> (Result<ExitStatus, ExecError>, Output) {
    run_with(exec, id, spec, CancellationToken::new()).await
}

/// [`run`] with a cancel token.
pub async fn run_with(
    exec: &RuncExecutor,
    id: &str,
    spec: ExecSpec,
    cancel: CancellationToken,
) -> (Result<ExitStatus, ExecError>, Output) {
    let (tx, mut rx) = mpsc::channel::<OutputChunk>(16);
    let collector = tokio::spawn(async move {
        let mut out = Output::default();
        while let Some(chunk) = rx.recv().await {
            let text = String::from_utf8_lossy(&chunk.data).into_owned();
            match chunk.stream {
                Stream::Stdout => out.stdout.push_str(&text),
                Stream::Stderr => out.stderr.push_str(&text),
            }
            out.chunks.push(chunk);
        }
        out
    });
    let result = exec.run(id, spec, tx, cancel).await;
    (result, collector.await.unwrap())
}

/// Runs a step that must exit 0 and returns its stdout.
pub async fn stdout_of(exec: &RuncExecutor, id: &str, spec: ExecSpec) -> String {
    let (result, out) = run(exec, id, spec).await;
    let status = result.unwrap_or_else(|e| panic!("{e}\nstderr: {}", out.stderr));
    assert!(
        status.success(),
        "{status:?}\nstdout: {}\nstderr: {}",
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// Ids of the containers runc knows in this executor's root.
pub fn runc_containers(exec: &RuncExecutor) -> Vec<String> {
    let out = Command::new(exec.runc_binary())
        .arg("--root")
        .arg(exec.runc_root())
        .args(["list", "-q"])
        .output()
        .expect("runc list");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Entries of the executor's bundle directory.
pub fn bundles(exec: &RuncExecutor) -> Vec<PathBuf> {
    fs::read_dir(exec.bundles_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

/// Interface names in a `/proc/net/dev` listing.
pub fn interfaces(proc_net_dev: &str) -> Vec<String> {
    let mut names: Vec<String> = proc_net_dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_owned())
        .collect();
    names.sort();
    names
}
