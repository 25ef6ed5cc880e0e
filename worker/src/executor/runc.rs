//! [`RuncExecutor`]: the [`Executor`] backed by the `runc` binary.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::runc_cleanup::{self, CleanupReport};
use super::{ExecError, ExecSpec, Executor, ExitStatus, OutputChunk, runc_run, seccomp};

/// A runc maintenance command that takes longer than this is stuck.
const RUNC_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Where [`RuncExecutor`] keeps its state and which runc it runs.
#[derive(Clone, Debug)]
pub struct RuncConfig {
    /// The executor's own directory, created with mode 0711: runc's state
    /// in `runc/`, one bundle per running step in `bundles/<id>/`. Must not
    /// be shared with another worker.
    pub state_dir: PathBuf,
    /// The runc binary; `None` looks for `runc` on `PATH`.
    pub runc_binary: Option<PathBuf>,
    /// Run steps with no-new-privileges (setuid binaries such as sudo gain
    /// nothing): the worker's default; BuildKit and docker build leave it
    /// off.
    pub no_new_privileges: bool,
}

/// Runs steps with `runc run`. Cheap to clone; clones share their tasks.
#[derive(Clone, Debug)]
pub struct RuncExecutor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub runc: PathBuf,
    pub runc_root: PathBuf,
    pub bundles: PathBuf,
    pub tracker: TaskTracker,
    /// BuildKit unshares the cgroup namespace on cgroup v2 hosts only.
    pub cgroup_ns: bool,
    /// The kernel has seccomp, so Docker's default profile is applied.
    pub seccomp: bool,
    /// Steps run with no-new-privileges.
    pub no_new_privileges: bool,
}

impl RuncExecutor {
    /// Checks that runc exists and creates the state directories. Call
    /// [`cleanup_leftovers`](Self::cleanup_leftovers) next if a previous
    /// worker may have crashed.
    pub async fn new(config: RuncConfig) -> Result<Self, ExecError> {
        let inner = tokio::task::spawn_blocking(move || setup(config))
            .await
            .map_err(|e| ExecError::Task {
                id: "-".into(),
                reason: e.to_string(),
            })??;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The runc binary in use.
    pub fn runc_binary(&self) -> &Path {
        &self.inner.runc
    }

    /// The directory given to `runc --root`.
    pub fn runc_root(&self) -> &Path {
        &self.inner.runc_root
    }

    /// The directory holding one bundle per running step.
    pub fn bundles_dir(&self) -> &Path {
        &self.inner.bundles
    }

    /// Kills and deletes every container in this executor's runc root and
    /// removes every bundle: what a crashed worker left behind. Run it
    /// before accepting steps; it would also kill running ones. (Mount
    /// stubs a crashed step left in its rootfs go with that rootfs, which
    /// the snapshotter discards.)
    pub async fn cleanup_leftovers(&self) -> Result<CleanupReport, ExecError> {
        runc_cleanup::cleanup(&self.inner).await
    }

    /// Waits until every step has finished and cleaned up; steps started
    /// afterwards are still tracked.
    pub async fn wait_idle(&self) {
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
        self.inner.tracker.reopen();
    }
}

impl Executor for RuncExecutor {
    async fn run(
        &self,
        id: &str,
        spec: ExecSpec,
        output: mpsc::Sender<OutputChunk>,
        cancel: CancellationToken,
    ) -> Result<ExitStatus, ExecError> {
        let id = id.to_owned();
        // The step runs in its own tracked task, so that dropping this
        // future still kills the container and cleans up: the guard
        // cancels the task's token.
        let token = cancel.child_token();
        let guard = token.clone().drop_guard();
        let span = tracing::info_span!("exec", job_id = %id);
        let task = runc_run::run_step(self.inner.clone(), id.clone(), spec, output, token);
        let joined = self.inner.tracker.spawn(task.instrument(span)).await;
        guard.disarm();
        joined.map_err(|e| ExecError::Task {
            id,
            reason: e.to_string(),
        })?
    }
}

fn setup(config: RuncConfig) -> Result<Inner, ExecError> {
    let runc = match config.runc_binary {
        Some(path) if is_executable(&path) => path,
        Some(path) => {
            return Err(ExecError::RuncNotFound {
                looked_for: path.display().to_string(),
            });
        }
        None => find_on_path("runc").ok_or_else(|| ExecError::RuncNotFound {
            looked_for: "runc on PATH".into(),
        })?,
    };
    let state = config.state_dir;
    let io_err = |path: &Path, source: io::Error| ExecError::Io {
        id: "-".into(),
        action: "create the executor state directory",
        path: path.to_path_buf(),
        source,
    };
    let runc_root = state.join("runc");
    let bundles = state.join("bundles");
    for dir in [&state, &runc_root, &bundles] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(dir)
            .map_err(|e| io_err(dir, e))?;
    }
    // runc wants an absolute root and bundle; the state dir may be relative.
    let state = std::fs::canonicalize(&state).map_err(|e| io_err(&state, e))?;
    Ok(Inner {
        runc,
        runc_root: state.join("runc"),
        bundles: state.join("bundles"),
        tracker: TaskTracker::new(),
        cgroup_ns: Path::new("/proc/self/ns/cgroup").exists()
            && Path::new("/sys/fs/cgroup/cgroup.subtree_control").exists(),
        seccomp: seccomp::enabled(),
        no_new_privileges: config.no_new_privileges,
    })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// Runs `runc --root <root> <args>` and returns its output; a non-zero exit
/// is an [`ExecError::Runc`] carrying runc's stderr.
pub(crate) async fn runc_command(
    inner: &Inner,
    id: &str,
    args: &[&str],
) -> Result<Vec<u8>, ExecError> {
    let command = args.join(" ");
    let fail = |message: String| ExecError::Runc {
        id: id.to_owned(),
        command: command.clone(),
        message,
    };
    let run = Command::new(&inner.runc)
        .arg("--root")
        .arg(&inner.runc_root)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(RUNC_COMMAND_TIMEOUT, run)
        .await
        .map_err(|_| fail(format!("no answer after {RUNC_COMMAND_TIMEOUT:?}")))?
        .map_err(|e| fail(e.to_string()))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_owned()))
    }
}

/// `runc delete --force <id>`; a container that is already gone is fine.
pub(crate) async fn delete_container(inner: &Inner, id: &str) -> Result<(), ExecError> {
    match runc_command(inner, id, &["delete", "--force", id]).await {
        Err(ExecError::Runc { message, .. }) if message.contains("does not exist") => Ok(()),
        other => other.map(drop),
    }
}
