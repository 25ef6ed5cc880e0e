//! The worker: runs jobs against the local store with a snapshotter and
//! an executor.

use super::commit::commit;
use super::file_action::{apply_file_action, download_sources};
use super::mounts::prepare;
use super::{FileSource, Job, JobAction, JobError, JobOutcome, RunMount};
use crate::context::ContextCache;
use crate::executor::{ExecSpec, Executor, OutputChunk, RuncConfig, RuncExecutor};
use crate::fetch::http_client;
use crate::pull::{PulledImage, pull_image};
use crate::snapshot::{
    CopySnapshotter, OverlaySnapshotter, Snapshotter, overlay_supported, recover, spread_new_dirs,
};
use crate::store::{LayerRef, Store};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use strata_oci::registry::{Platform, RegistryClient};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

/// Where a worker keeps its state.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// State directory: store, snapshots, runc state, cache mounts.
    pub state_dir: PathBuf,
    /// Use the copy snapshotter even where overlayfs works.
    pub force_copy_snapshotter: bool,
    /// Run steps with no-new-privileges (the worker's default; docker build
    /// leaves it off).
    pub no_new_privileges: bool,
}

/// Runs layer jobs.
pub struct Worker {
    store: Arc<Store>,
    snapshotter: Arc<dyn Snapshotter>,
    executor: RuncExecutor,
    state: PathBuf,
    /// Downloads ADD's URL sources; built by the first such step (building
    /// it reads the system's TLS roots, which no other step needs).
    http: std::sync::OnceLock<reqwest::Client>,
    /// Build contexts materialised for COPY and bind mounts.
    contexts: Arc<ContextCache>,
    /// Snapshots of committed steps being removed in the background.
    removals: TaskTracker,
    /// Snapshots prepared, for unique directory names: a snapshot still
    /// being removed never shares its directory with a new one.
    snapshots_made: AtomicU64,
    /// Steps using each cache mount directory.
    cache_users: super::CacheMountUsers,
}

fn blocking_err(e: tokio::task::JoinError) -> JobError {
    JobError::Invalid(format!("worker task failed: {e}"))
}

impl Worker {
    /// Where the worker with state directory `state_dir` keeps its store
    /// (an embedded scheduler keeps its blobs there too).
    pub fn store_root(state_dir: &Path) -> PathBuf {
        state_dir.join("store")
    }

    /// Opens the state directory, cleaning what a crashed worker left
    /// (containers, mounts, partial files).
    pub async fn open(config: WorkerConfig) -> Result<Self, JobError> {
        let state = config.state_dir.clone();
        let executor = RuncExecutor::new(RuncConfig {
            state_dir: state.join("exec"),
            runc_binary: None,
            no_new_privileges: config.no_new_privileges,
        })
        .await?;
        executor.cleanup_leftovers().await?;
        let snaps = state.join("snapshots");
        let (store, snapshotter, contexts) =
            tokio::task::spawn_blocking(move || -> Result<_, JobError> {
                recover(&snaps)?;
                spread_new_dirs(&snaps);
                // Cache mounts are never synced either: after the machine
                // went down they start empty, or from the fleet's archive.
                let caches = config.state_dir.join("cache-mounts");
                if crate::boot::empty_if_opened_in_another_boot(&caches)
                    .map_err(|e| JobError::Invalid(format!("{}: {e}", caches.display())))?
                {
                    tracing::warn!(
                        dir = %caches.display(),
                        "the machine went down since these cache mounts were used: they are dropped"
                    );
                }
                // A restore cut short by a crash leaves its half-unpacked
                // copy, or the copy it was replacing, beside the caches.
                for e in std::fs::read_dir(&caches).into_iter().flatten().flatten() {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    if name.starts_with(".restore-") || name.starts_with(".old-") {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
                let _ = std::fs::remove_dir_all(state_run_files(&config.state_dir));
                let store = Store::open(Self::store_root(&config.state_dir))?;
                let contexts = ContextCache::open(config.state_dir.join("contexts"))
                    .map_err(JobError::Invalid)?;
                let snapshotter: Arc<dyn Snapshotter> =
                    if overlay_supported() && !config.force_copy_snapshotter {
                        Arc::new(OverlaySnapshotter::new(snaps))
                    } else {
                        Arc::new(CopySnapshotter::new(snaps))
                    };
                Ok((store, snapshotter, contexts))
            })
            .await
            .map_err(blocking_err)??;
        Ok(Self {
            store: Arc::new(store),
            snapshotter,
            executor,
            state,
            http: std::sync::OnceLock::new(),
            contexts: Arc::new(contexts),
            removals: TaskTracker::new(),
            snapshots_made: AtomicU64::new(0),
            cache_users: super::CacheMountUsers::default(),
        })
    }

    /// The client ADD downloads with, built on first use off the runtime
    /// (it may read the system's TLS roots).
    pub(super) async fn http(&self) -> Result<&reqwest::Client, JobError> {
        if let Some(client) = self.http.get() {
            return Ok(client);
        }
        let built = tokio::task::spawn_blocking(http_client)
            .await
            .map_err(blocking_err)??;
        Ok(self.http.get_or_init(|| built))
    }

    /// Steps using each cache mount directory.
    pub fn cache_users(&self) -> &super::CacheMountUsers {
        &self.cache_users
    }

    /// Build contexts materialised for jobs.
    pub fn contexts(&self) -> &Arc<ContextCache> {
        &self.contexts
    }

    /// The local store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The store, shared.
    pub fn store_arc(&self) -> Arc<Store> {
        Arc::clone(&self.store)
    }

    /// The worker's state directory.
    pub fn state_dir(&self) -> &std::path::Path {
        &self.state
    }

    /// Pulls `reference` (an index resolves to `platform`'s image) into the
    /// local store: layer blobs it lacks are downloaded and verified; they
    /// are unpacked when a job first stacks on them. The returned layers
    /// are what a job's `parent` (or a `FileSource::Layers`) takes.
    pub async fn pull_image(
        &self,
        reference: &str,
        platform: &Platform,
        registry: &RegistryClient,
    ) -> Result<PulledImage, JobError> {
        Ok(pull_image(&self.store, reference, platform, registry).await?)
    }

    /// Waits until every RUN step this worker started has stopped and
    /// cleaned up: container deleted, its mounts and bundle removed, and
    /// the snapshots of committed steps unmounted and deleted.
    pub async fn wait_idle(&self) {
        self.executor.wait_idle().await;
        self.removals.close();
        self.removals.wait().await;
        self.removals.reopen();
    }

    /// Unpacks every layer `job` reads (its parent, unless it is a COPY
    /// --link, and the layers of other stages it copies or mounts from),
    /// as [`Worker::run_job`] would on its way: nothing runs yet, so a
    /// caller can fetch a blob found damaged (and removed) and try again.
    pub async fn unpack_layers(&self, job: &Job) -> Result<(), JobError> {
        let mut chains: Vec<Vec<LayerRef>> = Vec::new();
        let source = |from: &FileSource| match from {
            FileSource::Layers(layers) => Some(layers.clone()),
            FileSource::Dir(_) => None,
        };
        match &job.action {
            JobAction::Copy { link, from, .. } => {
                if !link {
                    chains.push(job.parent.clone());
                }
                chains.extend(source(from));
            }
            JobAction::Run { mounts, .. } => {
                chains.push(job.parent.clone());
                chains.extend(mounts.iter().filter_map(|m| match m {
                    RunMount::Bind { from, .. } => source(from),
                    _ => None,
                }));
            }
            JobAction::Mkdir { .. } => chains.push(job.parent.clone()),
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || -> Result<(), JobError> {
            for chain in &chains {
                for (i, l) in chain.iter().enumerate() {
                    store.ensure_unpacked(l, &chain[..i])?;
                }
            }
            Ok(())
        })
        .await
        .map_err(blocking_err)?
    }

    /// Runs one job; RUN output goes to `output` while it runs.
    pub async fn run_job(
        &self,
        job: Job,
        output: mpsc::Sender<OutputChunk>,
        cancel: CancellationToken,
    ) -> Result<JobOutcome, JobError> {
        let outcome = self.run_job_early(job, output, cancel).await?;
        self.make_blob(outcome).await
    }

    /// Makes the blob of an outcome of [`Worker::run_job_early`] still
    /// without one. If that fails, the layer's unpacked form leaves the
    /// store: it is the snapshot's files, and if they changed it is not
    /// what its diffID names (steps still running on it are stopped by the
    /// scheduler, as the job fails).
    pub async fn make_blob(&self, mut outcome: JobOutcome) -> Result<JobOutcome, JobError> {
        let Some(pending) = outcome.pending.take() else {
            return Ok(outcome);
        };
        let diff_id = pending.diff_id().to_string();
        match pending.make().await {
            Ok((layer, held)) => {
                outcome.layer = layer;
                outcome.held = outcome.held.and(held);
                Ok(outcome)
            }
            Err(e) => {
                drop(outcome);
                self.store.discard_layer(&diff_id);
                Err(e)
            }
        }
    }

    /// [`Worker::run_job`], but the outcome may come before the layer's
    /// blob is made: with [`JobOutcome::pending`] set, its layer has a
    /// diffID and is unpacked here (the next steps can start on it), and
    /// [`PendingBlob::make`](super::PendingBlob::make) makes the blob.
    pub async fn run_job_early(
        &self,
        job: Job,
        output: mpsc::Sender<OutputChunk>,
        cancel: CancellationToken,
    ) -> Result<JobOutcome, JobError> {
        let started = Instant::now();
        let store = self.store.clone();
        let snapshotter = self.snapshotter.clone();
        // COPY --link works on an empty tree; its layer goes on top of the
        // parent all the same.
        let linked = matches!(job.action, JobAction::Copy { link: true, .. });
        let parent = if linked {
            Vec::new()
        } else {
            job.parent.clone()
        };
        let id = format!(
            "{}-{}",
            job.id,
            self.snapshots_made.fetch_add(1, Ordering::Relaxed)
        );
        let span = tracing::info_span!("unpack", layers = parent.len());
        let (snapshot, lowers) = tokio::task::spawn_blocking(move || -> Result<_, JobError> {
            let _in = span.enter();
            let mut lowers = Vec::with_capacity(parent.len());
            for (i, l) in parent.iter().enumerate() {
                lowers.push(store.ensure_unpacked(l, &parent[..i])?);
            }
            let snap = snapshotter.prepare(&id, &lowers)?;
            Ok((snap, lowers))
        })
        .await
        .map_err(blocking_err)??;

        let exit = match &job.action {
            JobAction::Run {
                argv,
                network,
                insecure,
                mounts,
                inline_files,
            } => {
                let prepared = {
                    let (store, snapshotter, state) = (
                        self.store.clone(),
                        self.snapshotter.clone(),
                        self.state.clone(),
                    );
                    let (id, mounts, files) =
                        (job.id.clone(), mounts.clone(), inline_files.clone());
                    tokio::task::spawn_blocking(move || {
                        prepare(&id, &mounts, &files, &state, &store, snapshotter.as_ref())
                    })
                    .await
                    .map_err(blocking_err)??
                };
                let spec = ExecSpec {
                    rootfs: snapshot.merged().to_path_buf(),
                    argv: argv.clone(),
                    env: job.env.clone(),
                    cwd: if job.workdir.is_empty() {
                        "/".to_string()
                    } else {
                        job.workdir.clone()
                    },
                    user: job.user.clone(),
                    network: *network,
                    security_insecure: *insecure,
                    mounts: prepared.mounts.clone(),
                    hostname: String::new(),
                    extra_hosts: job.extra_hosts.clone(),
                    timeout: job.timeout,
                };
                let status = tokio::select! {
                    r = self
                        .executor
                        .run(&job.id, spec, output, cancel.clone())
                        .instrument(tracing::info_span!("run")) => r?,
                    () = cancel.cancelled() => return Err(JobError::Cancelled),
                };
                drop(prepared);
                if !status.success() {
                    return Err(JobError::Failed {
                        command: argv.join(" "),
                        code: status.docker_exit_code(),
                        status,
                    });
                }
                Some(status)
            }
            JobAction::Copy { .. } | JobAction::Mkdir { .. } => {
                let scratch = state_run_files(&self.state).join(format!("{}-add", job.id));
                let downloads = download_sources(&job.action, self, &scratch, &cancel).await?;
                let (store, snapshotter, job2) =
                    (self.store.clone(), self.snapshotter.clone(), job.clone());
                let (merged, plain) = (snapshot.merged().to_path_buf(), snapshot.plain());
                tokio::task::spawn_blocking(move || {
                    apply_file_action(
                        &job2,
                        &merged,
                        plain,
                        &downloads,
                        &store,
                        snapshotter.as_ref(),
                    )
                })
                .await
                .map_err(blocking_err)??;
                None
            }
        };

        let store = self.store.clone();
        let (compression, sde) = (job.compression, job.source_date_epoch);
        let span = tracing::info_span!("commit");
        let busy = self.removals.token();
        let committed = tokio::task::spawn_blocking(move || {
            span.in_scope(|| commit(snapshot, &lowers, &store, compression, sde, busy))
        })
        .await
        .map_err(blocking_err)??;
        // Removing the snapshot (unmount, delete the upper dir) need not
        // delay the step's result, nor the next step.
        if let Some(snapshot) = committed.snapshot {
            let span = tracing::info_span!("remove_snapshot");
            self.removals
                .spawn_blocking(move || span.in_scope(|| drop(snapshot)));
        }
        Ok(JobOutcome {
            layer: committed.layer,
            held: committed.held,
            empty: committed.empty,
            exit,
            duration: started.elapsed(),
            pending: committed.pending,
        })
    }
}

fn state_run_files(state: &Path) -> PathBuf {
    state.join("run-files")
}
