//! One step through runc: prepare the bundle, `runc run`, forward output,
//! kill on cancel or timeout, clean up on every path.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use super::rootpath::{mkdir_all_chown, root_path};
use super::runc::{Inner, delete_container, runc_command};
use super::spec::{self, SpecInput, clean_destination};
use super::stubs::Stubs;
use super::{
    ExecError, ExecSpec, ExitStatus, MAX_CHUNK_BYTES, MountSource, OutputChunk, Stream, etc_files,
    user,
};

/// How long to keep retrying `runc kill` before killing runc itself.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// Runs one step; see [`Executor::run`](super::Executor::run).
pub(crate) async fn run_step(
    inner: Arc<Inner>,
    id: String,
    spec: ExecSpec,
    output: mpsc::Sender<OutputChunk>,
    cancel: CancellationToken,
) -> Result<ExitStatus, ExecError> {
    validate(&id, &spec)?;
    let bundle = inner.bundles.join(&id);
    let prepared = {
        let (inner, id, spec, bundle) = (inner.clone(), id.clone(), spec.clone(), bundle.clone());
        blocking(&id.clone(), move || prepare(&inner, &id, &spec, &bundle)).await??
    };

    let outcome = supervise(&inner, &id, &bundle, &spec, output, &cancel).await;

    let mount_stubs = blocking(&id, move || {
        let report = prepared.remove();
        if let Err(e) = fs::remove_dir_all(&bundle) {
            warn!(bundle = %bundle.display(), error = %e, "failed to remove bundle");
        }
        report
    })
    .await?;
    let (code, signal, duration) = outcome?;
    info!(?code, ?signal, ?duration, "step exited");
    Ok(ExitStatus {
        code,
        signal,
        duration,
        mount_stubs,
    })
}

fn validate(id: &str, spec: &ExecSpec) -> Result<(), ExecError> {
    let bad_id = |reason: &str| ExecError::InvalidId {
        id: id.to_owned(),
        reason: reason.to_owned(),
    };
    let mut chars = id.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphanumeric()) || id.len() > 128 {
        return Err(bad_id(
            "must start with a letter or digit and be at most 128 bytes",
        ));
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        return Err(bad_id("only letters, digits, '_', '.' and '-' are allowed"));
    }
    let bad = |reason: String| ExecError::InvalidSpec {
        id: id.to_owned(),
        reason,
    };
    if spec.argv.is_empty() {
        return Err(bad("the command is empty".into()));
    }
    if !spec.cwd.starts_with('/') {
        return Err(bad(format!(
            "the working directory {:?} is not absolute",
            spec.cwd
        )));
    }
    if !spec.rootfs.is_absolute() {
        return Err(bad(format!(
            "the rootfs {} is not absolute",
            spec.rootfs.display()
        )));
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    id: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ExecError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ExecError::Task {
            id: id.to_owned(),
            reason: e.to_string(),
        })
}

/// Resolves the user, writes the bundle (spec, hosts, resolv.conf),
/// creates the working directory and the mount stubs. On error nothing is
/// left behind but a working directory the step would have created anyway.
fn prepare(inner: &Inner, id: &str, spec: &ExecSpec, bundle: &Path) -> Result<Stubs, ExecError> {
    let io_err = |action: &'static str, path: &Path| {
        let (id, path) = (id.to_owned(), path.to_path_buf());
        move |source: io::Error| ExecError::Io {
            id,
            action,
            path,
            source,
        }
    };
    let bad = |reason: String| ExecError::InvalidSpec {
        id: id.to_owned(),
        reason,
    };
    let rootfs = &spec.rootfs;
    if !rootfs.is_dir() {
        return Err(bad(format!(
            "the rootfs {} is not a directory",
            rootfs.display()
        )));
    }
    let user = user::resolve(rootfs, &spec.user).map_err(|reason| ExecError::User {
        id: id.to_owned(),
        reason,
    })?;
    let hostname = if spec.hostname.is_empty() {
        super::DEFAULT_HOSTNAME
    } else {
        &spec.hostname
    };
    let hosts = etc_files::hosts_file(hostname, &spec.extra_hosts).map_err(bad)?;
    let resolv_conf = etc_files::resolv_conf_from_host(spec.network);

    let mut targets = vec![
        ("/etc/resolv.conf".to_owned(), false),
        ("/etc/hosts".to_owned(), false),
    ];
    for m in &spec.mounts {
        let dest = clean_destination(&m.destination)
            .ok_or_else(|| bad(format!("invalid mount destination {:?}", m.destination)))?;
        let is_dir = match &m.source {
            MountSource::Bind(src) => fs::metadata(src)
                .map_err(|e| bad(format!("mount source {} for {dest}: {e}", src.display())))?
                .is_dir(),
            MountSource::Tmpfs { .. } => true,
        };
        targets.push((dest, is_dir));
    }

    fs::DirBuilder::new()
        .mode(0o711)
        .create(bundle)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => ExecError::InvalidId {
                id: id.to_owned(),
                reason: "a step with this id is running, or a crashed worker left its \
                         bundle (RuncExecutor::cleanup_leftovers removes it)"
                    .into(),
            },
            _ => io_err("create the bundle directory", bundle)(e),
        })?;
    // Stubs are found before the working directory is created, as in
    // BuildKit: a working directory inside a missing mount parent makes
    // that parent non-empty, so it is kept.
    let mut stubs = Stubs::plan(rootfs, &targets);
    let written = write_bundle(
        inner,
        id,
        spec,
        bundle,
        &user,
        &hosts,
        &resolv_conf,
        &mut stubs,
    );
    if written.is_err() {
        stubs.remove();
        if let Err(e) = fs::remove_dir_all(bundle) {
            warn!(bundle = %bundle.display(), error = %e, "failed to remove bundle");
        }
    }
    written.map(|()| stubs)
}

#[allow(clippy::too_many_arguments)]
fn write_bundle(
    inner: &Inner,
    id: &str,
    spec: &ExecSpec,
    bundle: &Path,
    user: &user::ResolvedUser,
    hosts: &str,
    resolv_conf: &str,
    stubs: &mut Stubs,
) -> Result<(), ExecError> {
    let io_err = |action: &'static str, path: PathBuf| {
        let id = id.to_owned();
        move |source: io::Error| ExecError::Io {
            id,
            action,
            path,
            source,
        }
    };
    let hosts_path = bundle.join("hosts");
    let resolv_path = bundle.join("resolv.conf");
    write_file(&hosts_path, hosts.as_bytes()).map_err(io_err("write", hosts_path.clone()))?;
    write_file(&resolv_path, resolv_conf.as_bytes())
        .map_err(io_err("write", resolv_path.clone()))?;

    let workdir_err = |source: io::Error| ExecError::Workdir {
        id: id.to_owned(),
        cwd: spec.cwd.clone(),
        source,
    };
    let cwd = root_path(&spec.rootfs, &spec.cwd).map_err(workdir_err)?;
    if fs::metadata(&cwd).is_err() {
        mkdir_all_chown(&cwd, user.uid, user.gid).map_err(workdir_err)?;
    }
    stubs
        .create()
        .map_err(io_err("create a mount target in", spec.rootfs.clone()))?;

    let input = SpecInput {
        id,
        exec: spec,
        user,
        hosts: &hosts_path,
        resolv_conf: &resolv_path,
        cgroup_ns: inner.cgroup_ns,
        seccomp: inner.seccomp,
        no_new_privileges: inner.no_new_privileges,
    };
    let oci = spec::build(&input).map_err(|reason| ExecError::Spec {
        id: id.to_owned(),
        reason,
    })?;
    let config = bundle.join("config.json");
    let json = serde_json::to_vec_pretty(&oci).map_err(|e| ExecError::Spec {
        id: id.to_owned(),
        reason: e.to_string(),
    })?;
    write_file(&config, &json).map_err(io_err("write the runtime spec", config.clone()))
}

fn write_file(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)?;
    f.write_all(data)
}

enum Ending {
    Exited(io::Result<std::process::ExitStatus>),
    Cancelled,
    TimedOut(Duration),
}

/// Runs `runc run` and waits for it, the cancel token or the timeout.
/// Returns `(code, signal, duration)`.
async fn supervise(
    inner: &Inner,
    id: &str,
    bundle: &Path,
    spec: &ExecSpec,
    output: mpsc::Sender<OutputChunk>,
    cancel: &CancellationToken,
) -> Result<(Option<i32>, Option<i32>, Duration), ExecError> {
    let log = bundle.join("runc-log.json");
    let mut command = Command::new(&inner.runc);
    command
        .arg("--root")
        .arg(&inner.runc_root)
        .arg("--log")
        .arg(&log)
        .arg("--log-format")
        .arg("json")
        .arg("run")
        .arg("--bundle")
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Like BuildKit: the worker's terminal signals must not reach runc,
        // which would forward them into the step.
        .process_group(0);
    info!(argv = ?spec.argv, user = %spec.user, cwd = %spec.cwd, "starting step");
    let started = Instant::now();
    let mut child = command.spawn().map_err(|source| ExecError::Spawn {
        id: id.to_owned(),
        runc: inner.runc.clone(),
        source,
    })?;
    let mut readers = tokio::task::JoinSet::new();
    let pipes = (child.stdout.take(), child.stderr.take());
    if let Some(pipe) = pipes.0 {
        readers.spawn(forward(pipe, Stream::Stdout, output.clone()).in_current_span());
    }
    if let Some(pipe) = pipes.1 {
        readers.spawn(forward(pipe, Stream::Stderr, output).in_current_span());
    }

    let timeout = async {
        match spec.timeout {
            Some(after) => {
                tokio::time::sleep(after).await;
                after
            }
            None => std::future::pending().await,
        }
    };
    let ending = tokio::select! {
        status = child.wait() => Ending::Exited(status),
        () = cancel.cancelled() => Ending::Cancelled,
        after = timeout => Ending::TimedOut(after),
    };
    if !matches!(ending, Ending::Exited(_))
        && let Err(e) = kill(inner, id, &mut child).await
    {
        warn!(error = %e, "failed to kill runc");
    }
    // `runc run` deletes a container that exited; this covers the others.
    let deleted = delete_container(inner, id).await;
    let duration = started.elapsed();

    // Every process of the step is gone (pid namespace), so the pipes
    // reach EOF; only a cancel cuts the forwarding of what is left.
    tokio::select! {
        () = async { while readers.join_next().await.is_some() {} } => {}
        () = cancel.cancelled() => readers.abort_all(),
    }

    let status = match ending {
        Ending::Cancelled => return Err(ExecError::Cancelled { id: id.to_owned() }),
        Ending::TimedOut(after) => {
            return Err(ExecError::TimedOut {
                id: id.to_owned(),
                after,
            });
        }
        Ending::Exited(status) => status,
    };
    deleted?;
    if cancel.is_cancelled() {
        return Err(ExecError::Cancelled { id: id.to_owned() });
    }
    let status = status.map_err(|e| ExecError::Runc {
        id: id.to_owned(),
        command: "run".into(),
        message: format!("waiting for runc failed: {e}"),
    })?;
    interpret(id, status, &log, duration).await
}

/// Kills the container (`runc kill <id> KILL`, retried while runc is still
/// creating it), and runc itself if the container never goes away.
async fn kill(inner: &Inner, id: &str, child: &mut Child) -> io::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + KILL_GRACE;
    while Instant::now() < deadline {
        if let Err(e) = runc_command(inner, id, &["kill", id, "KILL"]).await {
            tracing::debug!(error = %e, "runc kill did not succeed yet");
        }
        if let Ok(status) = tokio::time::timeout(Duration::from_millis(200), child.wait()).await {
            return status;
        }
    }
    warn!("the container did not die after runc kill; killing runc");
    child.start_kill()?;
    child.wait().await
}

async fn interpret(
    id: &str,
    status: std::process::ExitStatus,
    log: &Path,
    duration: Duration,
) -> Result<(Option<i32>, Option<i32>, Duration), ExecError> {
    use std::os::unix::process::ExitStatusExt;
    let Some(code) = status.code() else {
        return Err(ExecError::Runc {
            id: id.to_owned(),
            command: "run".into(),
            message: format!("runc was killed by signal {}", status.signal().unwrap_or(0)),
        });
    };
    if code == 0 {
        return Ok((Some(0), None, duration));
    }
    // runc logs its own failures (bad spec, missing executable...) at
    // error level; the step's exit code is never logged.
    let text = tokio::fs::read_to_string(log).await.unwrap_or_default();
    let errors: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| matches!(v["level"].as_str(), Some("error" | "fatal")))
        .filter_map(|v| v["msg"].as_str().map(str::to_owned))
        .collect();
    if let Some(message) = errors.last() {
        return Err(ExecError::StartFailed {
            id: id.to_owned(),
            message: message.clone(),
        });
    }
    // runc reports death by signal N as 128+N.
    if (129..=128 + 64).contains(&code) {
        Ok((None, Some(code - 128), duration))
    } else {
        Ok((Some(code), None, duration))
    }
}

/// Copies one pipe into chunks of at most [`MAX_CHUNK_BYTES`]. A closed
/// receiver only stops the forwarding, never the step.
async fn forward(mut pipe: impl AsyncRead + Unpin, stream: Stream, tx: mpsc::Sender<OutputChunk>) {
    let mut buf = vec![0u8; MAX_CHUNK_BYTES];
    let mut receiving = true;
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) if receiving => {
                let chunk = OutputChunk {
                    stream,
                    data: buf[..n].to_vec(),
                    timestamp: SystemTime::now(),
                };
                receiving = tx.send(chunk).await.is_ok();
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                warn!(?stream, error = %e, "reading the step's output failed");
                break;
            }
        }
    }
}
