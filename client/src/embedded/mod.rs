//! Embedded mode: a scheduler and a worker in this process, on a local
//! store under `STRATA_HOME`, served to the rest of the client over a
//! private gRPC channel (a Unix socket in the home directory). Every
//! command then takes the same path as against a remote farm.
//!
//! The scheduler's blob store is the worker's local store, so layers and
//! context files are never copied between them. One process at a time
//! owns a home directory; another waits for it.

use anyhow::{Context as _, Result, anyhow};
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use strata_oci::registry::RegistryConfig;
use strata_scheduler::{Scheduler, SchedulerConfig};
use strata_worker::agent::{self, AgentConfig, AgentStats, Connector};
use strata_worker::job::{Worker, WorkerConfig};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Uri};

/// The running in-process farm; dropping it stops the scheduler and the
/// worker ([`Farm::stop`] also waits for their steps to be gone).
pub struct Farm {
    shutdown: CancellationToken,
    worker: Arc<Worker>,
    stats: Arc<AgentStats>,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// How long [`Farm::stop`] waits for the running steps to be killed and
/// cleaned up.
const STOP_WAIT: Duration = Duration::from_secs(15);

impl Farm {
    /// Stops the scheduler and the worker, and waits (up to 15 s) until
    /// every job the worker was running has ended: its container killed
    /// and deleted, its mounts and snapshot removed. After Ctrl-C the
    /// process then leaves nothing running behind it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let (worker, stats) = (Arc::clone(&self.worker), Arc::clone(&self.stats));
        let idle = async move {
            worker.wait_idle().await;
            while stats.jobs_running.get() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(STOP_WAIT, idle).await.is_err() {
            eprintln!(
                "the embedded worker's steps did not stop within {STOP_WAIT:?}; the next strata run cleans up what they left"
            );
        }
    }
}

impl Drop for Farm {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn channel_to(socket: PathBuf) -> Result<Channel, String> {
    // The URI is required by tonic and ignored by the connector.
    Endpoint::from_static("http://embedded.strata")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
        .map_err(|e| e.to_string())
}

fn lock(home: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    use nix::fcntl::{Flock, FlockArg};
    let path = home.join("embedded.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(l),
        Err((file, _)) => {
            eprintln!(
                "waiting for another strata process using {}...",
                home.display()
            );
            Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, e)| anyhow!("locking {}: {e}", path.display()))
        }
    }
}

/// STRATA_ALLOW_NEW_PRIVILEGES parsed as clap parses strata-worker's
/// `--allow-new-privileges` from it: y, yes, t, true, on, 1 are true; n, no,
/// f, false, off, 0 are false (any case); unset or empty is false. Anything
/// else is refused, so a typo cannot silently pick either.
fn allow_new_privileges(value: Option<&std::ffi::OsStr>) -> Result<bool> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(false);
    };
    match value.to_str().map(str::to_ascii_lowercase).as_deref() {
        Some("y" | "yes" | "t" | "true" | "on" | "1") => Ok(true),
        Some("n" | "no" | "f" | "false" | "off" | "0") => Ok(false),
        _ => Err(anyhow!(
            "STRATA_ALLOW_NEW_PRIVILEGES={value:?} is not a boolean: use true or false \
             (also y/yes/t/on/1 or n/no/f/off/0)"
        )),
    }
}

fn registry_config() -> RegistryConfig {
    RegistryConfig {
        insecure: std::env::var("STRATA_INSECURE_REGISTRIES")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        docker_config: None,
    }
}

/// Starts a scheduler and a worker in this process with their state under
/// `home`, and returns a channel to the scheduler's `BuildService`.
pub async fn start(home: &Path) -> Result<(Channel, Farm)> {
    std::fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
    let lock = tokio::task::spawn_blocking({
        let home = home.to_path_buf();
        move || lock(&home)
    })
    .await??;
    let mut config = SchedulerConfig::new(home.join("scheduler"));
    // The scheduler keeps its blobs in the worker's store: the only copy,
    // synced before a step reports.
    let worker_dir = home.join("worker");
    let blob_root = Worker::store_root(&worker_dir);
    config.blob_root = Some(blob_root.clone());
    config.registry = registry_config();
    // The worker lives in this process: it cannot be cut off, and a long
    // blocking step must not look like a silent worker (its lease would
    // expire and the step run again).
    config.lease_duration = std::time::Duration::from_secs(24 * 3600);
    // The embedded builder is the user's own machine, as root: like a local
    // buildkitd they run, it grants security.insecure to builds that ask
    // (`strata build --allow security.insecure`).
    config
        .allowed_entitlements
        .insert("security.insecure".to_string());
    // The scheduler first: its registry client starts building its HTTP
    // clients on a thread of its own while the worker opens. (Opening the
    // worker's store then empties the store's tmp/, which the scheduler's
    // blob store shares: nothing of the scheduler's is there yet, as its
    // state is in memory and it resumes no build; keep it that way.)
    let scheduler = Scheduler::open(config).await?;
    let worker = Worker::open(WorkerConfig {
        state_dir: worker_dir,
        force_copy_snapshotter: false,
        // As a farm's workers: steps run with no-new-privileges unless
        // STRATA_ALLOW_NEW_PRIVILEGES is true (read as strata-worker reads it).
        no_new_privileges: !allow_new_privileges(
            std::env::var_os("STRATA_ALLOW_NEW_PRIVILEGES").as_deref(),
        )?,
    })
    .await
    .map_err(|e| anyhow!("starting the embedded worker: {e}"))?;
    worker.store().set_durable(true);
    debug_assert_eq!(worker.store().root(), blob_root);

    let socket = home.join("embedded.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket)
        .with_context(|| format!("listening on {}", socket.display()))?;
    let shutdown = CancellationToken::new();
    let routes = scheduler.routes();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                .await;
        });
    }
    let capacity = strata_worker::config::default_capacity();
    let connect: Connector = {
        let socket = socket.clone();
        Arc::new(move || Box::pin(channel_to(socket.clone())))
    };
    let worker = Arc::new(worker);
    let stats = Arc::new(AgentStats::default());
    tokio::spawn(agent::run(
        Arc::clone(&worker),
        connect,
        AgentConfig {
            worker_id: "embedded".into(),
            capacity,
            labels: Default::default(),
            outgoing: Default::default(),
            drain_timeout: std::time::Duration::ZERO,
            max_store_bytes: None,
            defer: Default::default(),
        },
        Arc::clone(&stats),
        shutdown.clone(),
    ));
    let channel = channel_to(socket)
        .await
        .map_err(|e| anyhow!("connecting to the embedded scheduler: {e}"))?;
    // Commands like `strata workers` should see the worker. It registers
    // a few milliseconds after the channel is up: look often, since every
    // embedded command waits here (up to two seconds).
    for _ in 0..1000 {
        if !scheduler.inner().pool.workers().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok((
        channel,
        Farm {
            shutdown,
            worker,
            stats,
            _lock: lock,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::allow_new_privileges;
    use std::ffi::OsStr;

    fn parse(value: &str) -> Result<bool, String> {
        allow_new_privileges(Some(OsStr::new(value))).map_err(|e| e.to_string())
    }

    #[test]
    fn allow_new_privileges_reads_booleans_as_the_worker_does() {
        assert!(!allow_new_privileges(None).unwrap());
        assert_eq!(parse(""), Ok(false));
        for yes in ["y", "yes", "t", "true", "on", "1", "TRUE", "On"] {
            assert_eq!(parse(yes), Ok(true), "{yes}");
        }
        for no in ["n", "no", "f", "false", "off", "0", "FALSE", "Off"] {
            assert_eq!(parse(no), Ok(false), "{no}");
        }
        for bad in ["2", "enable", "ture", " true"] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("STRATA_ALLOW_NEW_PRIVILEGES"), "{bad}: {err}");
        }
    }
}
