//! Runs one RUN step in runc, the way `docker build` (BuildKit's runc
//! executor) does.
//!
//! [`Executor`] is the seam the rest of the worker programs against;
//! [`RuncExecutor`] is the real backend. One call to [`Executor::run`]:
//!
//! 1. resolves `USER` through the rootfs's `/etc/passwd` and `/etc/group`
//!    (BuildKit's `GetUser`, supplementary groups included) and creates the
//!    working directory if it is missing, owned by that user;
//! 2. writes `/etc/hosts` and `/etc/resolv.conf` for the step into its bundle
//!    directory and bind-mounts them read-only, creating empty *mount stubs*
//!    in the rootfs for targets that do not exist (see [`MountStub`]);
//! 3. writes an OCI runtime spec equal to the one BuildKit generates
//!    (capabilities, masked and read-only paths, mounts, namespaces, Docker's
//!    default seccomp profile; see `spec.rs`) and runs
//!    `runc --root <state>/runc run --bundle <state>/bundles/<id> <id>`,
//!    forwarding stdout and stderr as timestamped chunks while it runs;
//! 4. on cancel or timeout, kills the container (`runc kill <id> KILL`, then
//!    `runc delete --force <id>`); on every path it removes the bundle and
//!    the mount stubs that stayed empty.
//!
//! Where strata follows BuildKit rather than a first guess, the reason is
//! written next to the code: no `/etc/hostname` mount, no `RLIMIT_NOFILE`
//! in the spec. Where it departs from BuildKit, too: `noNewPrivileges` is
//! set unless the operator allows new privileges (`sudo` in RUN then
//! fails).

mod error;
mod etc_files;
pub(crate) mod rootpath;
mod runc;
mod runc_cleanup;
mod runc_run;
mod seccomp;
mod security;
mod spec;
mod stubs;
pub(crate) mod user;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use error::ExecError;
pub use runc::{RuncConfig, RuncExecutor};
pub use runc_cleanup::CleanupReport;

/// The hostname a step sees when [`ExecSpec::hostname`] is empty: BuildKit's.
pub const DEFAULT_HOSTNAME: &str = "buildkitsandbox";

/// The largest [`OutputChunk::data`] the executor sends.
pub const MAX_CHUNK_BYTES: usize = 32 * 1024;

/// The network a step runs in (`RUN --network=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Network {
    /// The worker's network namespace, so RUN reaches package mirrors. This
    /// is what `docker build` does by default.
    #[default]
    Host,
    /// A fresh network namespace with only the loopback interface.
    None,
}

/// Where an extra mount comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountSource {
    /// A host file or directory, bind-mounted (`rbind`): cache, secret, bind
    /// and SSH mounts prepared by the caller.
    Bind(PathBuf),
    /// A fresh tmpfs (`RUN --mount=type=tmpfs`), optionally size-limited.
    Tmpfs {
        /// Size limit in bytes; `None` leaves the kernel's default.
        size_bytes: Option<u64>,
    },
}

/// An extra mount for one step, on top of the ones every step gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecMount {
    /// Absolute path inside the container.
    pub destination: String,
    /// What is mounted there.
    pub source: MountSource,
    /// Mount read-only.
    pub readonly: bool,
}

/// Everything one RUN step needs.
#[derive(Clone, Debug)]
pub struct ExecSpec {
    /// The already-mounted root filesystem (an overlay's merged directory).
    /// The executor never mounts or unmounts it.
    pub rootfs: PathBuf,
    /// The process's argv; `argv[0]` is looked up in the step's `PATH`.
    pub argv: Vec<String>,
    /// `NAME=value` entries; a later entry replaces an earlier one of the
    /// same name and a bare `NAME` removes it (containerd's `WithEnv`).
    /// `PATH` defaults to Docker's and `HOME` to the user's home directory.
    pub env: Vec<String>,
    /// Absolute working directory; created (owned by the user) if missing.
    pub cwd: String,
    /// `""` (root), `name`, `uid`, `name:group` or `uid:gid`.
    pub user: String,
    /// Host networking or none.
    pub network: Network,
    /// `RUN --security=insecure`: all capabilities, no masked or read-only
    /// paths, no seccomp, every device allowed, writable `/sys`.
    pub security_insecure: bool,
    /// Extra mounts, applied after the standard ones.
    pub mounts: Vec<ExecMount>,
    /// Hostname inside the step; empty means [`DEFAULT_HOSTNAME`].
    pub hostname: String,
    /// `(hostname, ip)` pairs appended to `/etc/hosts` (`--add-host`).
    pub extra_hosts: Vec<(String, String)>,
    /// Kill the step after this long.
    pub timeout: Option<Duration>,
}

/// Which output stream a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The process's standard output.
    Stdout,
    /// The process's standard error.
    Stderr,
}

/// A piece of a step's output, sent while the step runs. Chunks of one
/// stream arrive in order; the two streams are read concurrently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputChunk {
    /// Which stream.
    pub stream: Stream,
    /// At most [`MAX_CHUNK_BYTES`] bytes, exactly as written.
    pub data: Vec<u8>,
    /// When the worker read it.
    pub timestamp: SystemTime,
}

/// A mount target that did not exist in the rootfs, so an empty file or
/// directory had to be created for the step and is removed afterwards.
///
/// Removing a stub that was created on an overlay merged directory makes it
/// vanish from the upperdir (it was never in a lower layer). When its parent
/// existed below, the parent stays in the upperdir as a copied-up directory;
/// the executor restores that parent's atime and mtime so a differ that
/// compares metadata with the lower layer (as BuildKit's does) sees no
/// change. A stub the step filled (say `/etc`, when the step also wrote
/// `/etc/passwd`) is kept and is a real change of the layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountStub {
    /// Absolute path inside the container, symlinks resolved within rootfs.
    pub path: String,
    /// A directory (a parent, or a directory mount) or a regular file.
    pub is_dir: bool,
    /// Whether it was removed after the step (it was still empty).
    pub removed: bool,
}

/// How a step ended, when it ran to the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit code, when the process exited on its own.
    pub code: Option<i32>,
    /// The signal that killed the process. runc reports death by signal N
    /// as status 128+N, so a process that calls `exit 137` is reported as
    /// killed by signal 9 too; Docker cannot tell them apart either.
    pub signal: Option<i32>,
    /// Wall time from starting runc to its exit.
    pub duration: Duration,
    /// Mount stubs created for this step, deepest first.
    pub mount_stubs: Vec<MountStub>,
}

impl ExitStatus {
    /// Whether the step succeeded (exit code 0).
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The code `docker build` prints ("exit code: N"): the exit code, or
    /// 128 + the signal number.
    pub fn docker_exit_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => -1,
        }
    }
}

/// Runs RUN steps. The seam between the worker and the container runtime.
pub trait Executor: Send + Sync {
    /// Runs one step to completion and reports how it ended. A non-zero
    /// exit is `Ok`; cancellation, a timeout and failures to set up or start
    /// the container are errors. `output` receives the step's output while it
    /// runs; a closed receiver only discards it. When `cancel` fires, or the
    /// returned future is dropped, the container is killed and cleaned up.
    fn run(
        &self,
        id: &str,
        spec: ExecSpec,
        output: mpsc::Sender<OutputChunk>,
        cancel: CancellationToken,
    ) -> impl Future<Output = Result<ExitStatus, ExecError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: Option<i32>, signal: Option<i32>) -> ExitStatus {
        ExitStatus {
            code,
            signal,
            duration: Duration::ZERO,
            mount_stubs: Vec::new(),
        }
    }

    #[test]
    fn docker_exit_code_matches_dockers_message() {
        assert_eq!(status(Some(3), None).docker_exit_code(), 3);
        assert_eq!(status(None, Some(9)).docker_exit_code(), 137);
        assert!(status(Some(0), None).success());
        assert!(!status(None, Some(15)).success());
    }
}
