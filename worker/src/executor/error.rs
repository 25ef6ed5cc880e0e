//! Errors of the executor. Every variant names the step and what failed.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Why a step could not be run to its end. A non-zero exit is not an error:
/// it is an [`ExitStatus`](super::ExitStatus).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The runc binary is not installed or not executable.
    #[error(
        "runc was not found (looked for {looked_for}); install it \
         (Debian/Ubuntu: `apt-get install -y runc`) or set RuncConfig::runc_binary"
    )]
    RuncNotFound {
        /// What was searched: a path or `runc on PATH`.
        looked_for: String,
    },
    /// The step id cannot be a runc container id, or is already running.
    #[error("step {id}: invalid container id: {reason}")]
    InvalidId {
        /// The step id.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The [`ExecSpec`](super::ExecSpec) is unusable (empty argv, relative
    /// path, bad `--add-host` address...).
    #[error("step {id}: invalid step: {reason}")]
    InvalidSpec {
        /// The step id.
        id: String,
        /// What is wrong, in the user's terms.
        reason: String,
    },
    /// `USER` could not be resolved in the rootfs.
    #[error("step {id}: {reason}")]
    User {
        /// The step id.
        id: String,
        /// BuildKit's wording, e.g. `unable to find user app: no matching
        /// entries in passwd file`.
        reason: String,
    },
    /// The working directory could not be created or points outside.
    #[error("step {id}: failed to create working directory {cwd}: {source}")]
    Workdir {
        /// The step id.
        id: String,
        /// The working directory as given.
        cwd: String,
        /// The underlying failure.
        source: io::Error,
    },
    /// A file operation of the executor failed.
    #[error("step {id}: failed to {action} {}: {source}", path.display())]
    Io {
        /// The step id.
        id: String,
        /// What was being done, e.g. `write the runtime spec`.
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying failure.
        source: io::Error,
    },
    /// The OCI runtime spec could not be built.
    #[error("step {id}: failed to build the OCI runtime spec: {reason}")]
    Spec {
        /// The step id.
        id: String,
        /// What failed.
        reason: String,
    },
    /// runc could not be started at all.
    #[error("step {id}: failed to start {}: {source}", runc.display())]
    Spawn {
        /// The step id.
        id: String,
        /// The runc binary.
        runc: PathBuf,
        /// The underlying failure.
        source: io::Error,
    },
    /// runc started but could not start the step's process, e.g. the
    /// executable does not exist.
    #[error("step {id}: runc run failed: {message}")]
    StartFailed {
        /// The step id.
        id: String,
        /// runc's own error message.
        message: String,
    },
    /// A runc maintenance command (`kill`, `delete`, `list`) failed.
    #[error("step {id}: `runc {command}` failed: {message}")]
    Runc {
        /// The step id, or `-` for worker-wide commands.
        id: String,
        /// The subcommand and its arguments.
        command: String,
        /// runc's stderr or the spawn failure.
        message: String,
    },
    /// The step was cancelled; its container was killed and removed.
    #[error("step {id}: cancelled")]
    Cancelled {
        /// The step id.
        id: String,
    },
    /// The step ran longer than its timeout; its container was killed.
    #[error("step {id}: timed out after {after:?}")]
    TimedOut {
        /// The step id.
        id: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// A task of the executor panicked or was aborted.
    #[error("step {id}: executor task failed: {reason}")]
    Task {
        /// The step id.
        id: String,
        /// The join error.
        reason: String,
    },
}
