//! One assignment, start to finish: fetch the blobs and context it
//! reads, run it, stream its output, upload its layer, report.

use super::{AgentStats, RemoteBlobs, cache_mounts, send};
use crate::assignment::job_from_assignment;
use crate::context;
use crate::executor::{OutputChunk, Stream as OutStream};
use crate::headroom;
use crate::job::{JobError, PendingBlob, Worker};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use strata_proto::common::v1 as common;
use strata_proto::worker::v1 as wire;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use wire::worker_message::Message as Out;

pub(super) const LOG_TAIL: usize = 4096;

/// Every layer an assignment reads: (diffID, blob digest).
fn layers_read(a: &wire::JobAssignment) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = strata_proto::layers_read(a)
        .into_iter()
        .map(|l| {
            let digest = l
                .blob
                .as_ref()
                .map(|b| b.digest.clone())
                .unwrap_or_default();
            (l.diff_id.clone(), digest)
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The blob digests of every layer an assignment reads.
pub(super) fn layer_digests(a: &wire::JobAssignment) -> Vec<String> {
    // A layer whose blob its worker is still making (an empty digest:
    // only that worker has it, unpacked) has no blob to fetch.
    let mut out: Vec<String> = layers_read(a)
        .into_iter()
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// DiffIDs and digests an assignment reads (its layers, its context
/// files): what store eviction must keep while it runs.
pub(super) fn in_use(a: &wire::JobAssignment) -> std::collections::HashSet<String> {
    let context = context_of(a)
        .map(|m| context::file_digests(&m))
        .unwrap_or_default();
    layers_read(a)
        .into_iter()
        .flat_map(|(diff_id, digest)| [diff_id, digest])
        .filter(|id| !id.is_empty())
        .chain(context)
        .collect()
}

/// The inline context manifests an assignment reads, merged.
pub(super) fn context_of(a: &wire::JobAssignment) -> Option<common::ContextManifest> {
    let mut refs: Vec<&common::ContextRef> = Vec::new();
    match &a.instruction {
        Some(wire::job_assignment::Instruction::Copy(c)) => {
            if let Some(wire::file_source::Source::Context(r)) =
                c.from.as_ref().and_then(|f| f.source.as_ref())
            {
                refs.push(r);
            }
        }
        Some(wire::job_assignment::Instruction::Run(r)) => {
            for m in &r.mounts {
                let from = match &m.kind {
                    Some(wire::mount::Kind::Bind(b)) => b.from.as_ref(),
                    Some(wire::mount::Kind::Cache(c)) => c.from.as_ref(),
                    _ => None,
                };
                if let Some(wire::file_source::Source::Context(r)) =
                    from.and_then(|f| f.source.as_ref())
                {
                    refs.push(r);
                }
            }
        }
        _ => {}
    }
    let mut entries: BTreeMap<String, common::ContextEntry> = BTreeMap::new();
    let mut any = false;
    for r in refs {
        if let Some(common::context_ref::Manifest::Inline(m)) = &r.manifest {
            any = true;
            for e in &m.entries {
                entries.insert(e.path.clone(), e.clone());
            }
        }
    }
    any.then(|| common::ContextManifest {
        entries: entries.into_values().collect(),
        dockerignore_digest: String::new(),
    })
}

/// A layer as the wire carries it.
fn layer_proto(l: &crate::store::LayerRef) -> common::Layer {
    common::Layer::of_blob(&l.diff_id, &l.media_type, &l.digest, l.size)
}

/// The session's hold on a running job: its cancellation, and whether
/// its layer is made (the job then only uploads, and frees its slot).
#[derive(Clone, Default)]
pub(super) struct JobSlot {
    pub(super) cancel: CancellationToken,
    pub(super) uploading: Arc<std::sync::atomic::AtomicBool>,
    /// Told when someone waits for the job's layer (another worker, the
    /// build's end): its blob and upload then wait for no spare CPU.
    pub(super) hurry: Arc<tokio::sync::Notify>,
    /// The diffID of the job's layer once made: what a Hurry names.
    pub(super) made: Arc<std::sync::OnceLock<String>>,
    /// How long the blob and upload may wait for spare CPU; `None` with a
    /// scheduler that takes no layer early by its diffID alone (the blob
    /// is then made before the layer is reported, and uploaded at once).
    pub(super) defer: Option<headroom::Defer>,
    /// Every job of the session, to tell whether steps still run here.
    pub(super) session: Arc<std::sync::Mutex<std::collections::HashMap<String, super::Running>>>,
}

impl JobSlot {
    /// Whether a job of this session other than those only uploading
    /// runs a step.
    fn steps_running(&self) -> bool {
        super::slots_taken(&self.session) > 0
    }
}

pub(super) fn failure_kind(e: &JobError, cancelled: bool) -> wire::FailureKind {
    use crate::executor::ExecError;
    match e {
        _ if cancelled => wire::FailureKind::Cancelled,
        JobError::Cancelled | JobError::Exec(ExecError::Cancelled { .. }) => {
            wire::FailureKind::Cancelled
        }
        JobError::Exec(ExecError::TimedOut { .. }) => wire::FailureKind::Timeout,
        JobError::Failed { .. } => wire::FailureKind::Command,
        JobError::Copy(_) | JobError::Fetch(_) | JobError::Invalid(_) => wire::FailureKind::Source,
        _ => wire::FailureKind::Infrastructure,
    }
}

/// A failure's message, with what to do about a full disk: applied to
/// every failure of a job, whether the disk filled while fetching its
/// blobs, materialising its context, unpacking its parent layers,
/// restoring cache mounts, running the step or storing its layer.
fn explain(message: String) -> String {
    if message.contains("No space left on device") {
        format!(
            "the worker's disk is full ({message}); free space on the worker or lower its --max-store-bytes"
        )
    } else {
        message
    }
}

/// Runs one assignment to exactly one `JobResult` or `JobFailed`, in a
/// `job` span with the ids that tie it to the scheduler's `step` span.
pub(super) async fn run_assignment(
    worker: &Worker,
    blobs: &RemoteBlobs,
    a: wire::JobAssignment,
    out: &mpsc::Sender<wire::WorkerMessage>,
    slot: JobSlot,
    stats: &AgentStats,
    worker_id: &str,
) {
    let job_id = a.job_id.clone();
    let span = tracing::info_span!(
        "job",
        job_id = %job_id,
        build_id = %a.build_id,
        step_id = %a.step_id,
        worker_id = %worker_id
    );
    strata_telemetry::set_parent(&span, &a.trace_context.clone().into_iter().collect());
    run_in_span(worker, blobs, a, out, slot, stats)
        .instrument(span)
        .await;
}

async fn run_in_span(
    worker: &Worker,
    blobs: &RemoteBlobs,
    a: wire::JobAssignment,
    out: &mpsc::Sender<wire::WorkerMessage>,
    slot: JobSlot,
    stats: &AgentStats,
) {
    let cancel = slot.cancel.clone();
    let (job_id, lease_id) = (a.job_id.clone(), a.lease_id.clone());
    stats.jobs_running.inc();
    send(
        out,
        Out::JobAccepted(wire::JobAccepted {
            job_id: job_id.clone(),
            lease_id: lease_id.clone(),
        }),
    )
    .await;
    let started = Instant::now();
    let tail = Arc::new(Mutex::new(Vec::<u8>::new()));
    let outcome: Result<wire::JobResult, (wire::FailureKind, String, Option<i32>)> = async {
        let infra = |m: String| (wire::FailureKind::Infrastructure, m, None);
        send(
            out,
            Out::JobProgress(wire::JobProgress {
                job_id: job_id.clone(),
                lease_id: lease_id.clone(),
                phase: common::StepPhase::Preparing as i32,
                ..Default::default()
            }),
        )
        .await;
        blobs
            .fetch_all(&layer_digests(&a))
            .instrument(tracing::info_span!("fetch_layers"))
            .await
            .map_err(|e| infra(format!("fetching the step's layers: {e}")))?;
        let context = match context_of(&a) {
            Some(m) => {
                let digests = context::file_digests(&m);
                let mut refetched = false;
                let lease = loop {
                    blobs
                        .fetch_all(&digests)
                        .instrument(tracing::info_span!("fetch_context"))
                        .await
                        .map_err(|e| infra(format!("fetching the build context's files: {e}")))?;
                    let (cache, store, m) =
                        (Arc::clone(worker.contexts()), worker.store_arc(), m.clone());
                    let acquired = tokio::task::spawn_blocking(move || cache.acquire(&store, &m))
                        .await
                        .map_err(|e| infra(e.to_string()))?;
                    match acquired {
                        Ok(lease) => break lease,
                        // A blob found damaged is removed as it is found:
                        // fetched again, once.
                        Err(e)
                            if !refetched
                                && digests.iter().any(|d| !worker.store().has_blob(d)) =>
                        {
                            tracing::warn!("materialising the build context: {e}; fetching again");
                            refetched = true;
                        }
                        Err(e) => {
                            // A manifest the worker cannot honour is the
                            // job's fault; a disk or blob failure is not.
                            let kind = match e {
                                context::ContextError::Invalid(_) => wire::FailureKind::InvalidJob,
                                context::ContextError::Io(_) => wire::FailureKind::Infrastructure,
                            };
                            let e = format!("materialising the build context: {e}");
                            return Err((kind, e, None));
                        }
                    }
                };
                Some(lease)
            }
            None => None,
        };
        let mut job = job_from_assignment(&a, context.as_ref().map(|c| c.dir()))
            .map_err(|e| (wire::FailureKind::InvalidJob, e.to_string(), None))?;
        // A layer's blob damaged on this worker's disk (blobs are not
        // synced: a power loss) fails its unpack and is removed as it is
        // found: fetched again, once, before anything runs.
        let unpacked = match worker.unpack_layers(&job).await {
            // Also a blob gone: another job starting on the same damaged
            // blob removed it while this one waited to unpack it.
            Err(JobError::Store(e))
                if e.blob_damaged() || matches!(e, crate::store::StoreError::MissingBlob(_)) =>
            {
                let digests = layer_digests(&a);
                if digests.iter().any(|d| !worker.store().has_blob(d)) {
                    tracing::warn!("{e}; fetching the layer again");
                    blobs
                        .fetch_all(&digests)
                        .instrument(tracing::info_span!("fetch_layers"))
                        .await
                        .map_err(|e| infra(format!("fetching the step's layers: {e}")))?;
                    worker.unpack_layers(&job).await
                } else {
                    Err(JobError::Store(e))
                }
            }
            other => other,
        };
        unpacked.map_err(|e| (failure_kind(&e, cancel.is_cancelled()), e.to_string(), None))?;
        send(
            out,
            Out::JobProgress(wire::JobProgress {
                job_id: job_id.clone(),
                lease_id: lease_id.clone(),
                phase: common::StepPhase::Executing as i32,
                ..Default::default()
            }),
        )
        .await;
        let caches = cache_mounts::cache_mounts(&a);
        // A `sharing=locked` cache may keep the step waiting for another.
        let Some(restored) = cache_mounts::restore(worker, blobs, &caches, &job_id, &cancel).await
        else {
            return Err((wire::FailureKind::Cancelled, "cancelled".to_string(), None));
        };
        restored.use_own(&mut job);
        let (tx, mut rx) = mpsc::channel::<OutputChunk>(64);
        let forward = {
            let (out, job_id, lease_id, tail) = (
                out.clone(),
                job_id.clone(),
                lease_id.clone(),
                Arc::clone(&tail),
            );
            tokio::spawn(async move {
                let mut seq = 0u64;
                while let Some(c) = rx.recv().await {
                    {
                        let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                        t.extend_from_slice(&c.data);
                        if t.len() > LOG_TAIL {
                            let cut = t.len() - LOG_TAIL;
                            t.drain(..cut);
                        }
                    }
                    seq += 1;
                    let stream = match c.stream {
                        OutStream::Stdout => common::LogStream::Stdout,
                        OutStream::Stderr => common::LogStream::Stderr,
                    };
                    send(
                        &out,
                        Out::JobLog(wire::JobLog {
                            job_id: job_id.clone(),
                            lease_id: lease_id.clone(),
                            chunk: Some(common::LogChunk {
                                stream: stream as i32,
                                data: c.data,
                                timestamp: Some(c.timestamp.into()),
                                seq,
                            }),
                        }),
                    )
                    .await;
                }
            })
        };
        let result = if slot.defer.is_some() {
            worker.run_job_early(job, tx, cancel.clone()).await
        } else {
            worker.run_job(job, tx, cancel.clone()).await
        };
        let _ = forward.await;
        restored.discard_own(worker);
        let mut cache_users = restored.users;
        for user in cache_users.iter_mut().flatten() {
            user.unlock();
        }
        let outcome = result.map_err(|e| {
            let code = match &e {
                JobError::Failed { code, .. } => Some(*code),
                _ => None,
            };
            (failure_kind(&e, cancel.is_cancelled()), e.to_string(), code)
        })?;
        // The layer is in this worker's store, unpacked: the scheduler may
        // start the steps built on it here while its blob is made and
        // uploaded, which take no slot.
        slot.uploading
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // Before the report: a Hurry may follow it at once.
        let _ = slot.made.set(outcome.layer.diff_id.clone());
        let early = match &outcome.pending {
            // Its diffID only: the blob is made next.
            Some(_) => common::Layer {
                diff_id: outcome.layer.diff_id.clone(),
                ..Default::default()
            },
            None => layer_proto(&outcome.layer),
        };
        send(
            out,
            Out::JobCommitted(wire::JobCommitted {
                job_id: job_id.clone(),
                lease_id: lease_id.clone(),
                layer: Some(early),
            }),
        )
        .await;
        // The step is over: its cache mounts are archived and let go now,
        // not after the layer's upload, so that the next step (here, on
        // this layer) finds them free.
        let cache_archives = cache_mounts::save(worker, blobs, &caches, &mut cache_users).await;
        drop(cache_users);
        // The blob and the upload can wait for spare CPU while steps run
        // here (the steps on this layer among them), unless someone waits
        // for the layer.
        let size = outcome
            .pending
            .as_ref()
            .map_or(outcome.layer.size, PendingBlob::tar_size);
        if let Some(defer) = slot.defer
            && size >= headroom::SMALL_LAYER
            && !defer.bound.is_zero()
        {
            // A cancelled job waits no longer: it stops below.
            let hurry = async {
                tokio::select! {
                    () = slot.hurry.notified() => {}
                    () = cancel.cancelled() => {}
                }
            };
            let waited = headroom::idle_cpu(defer, || slot.steps_running(), hurry)
                .instrument(tracing::info_span!("defer"))
                .await;
            tracing::debug!(?waited, size, "making and uploading the layer's blob");
            if cancel.is_cancelled() {
                return Err((wire::FailureKind::Cancelled, "cancelled".to_string(), None));
            }
        }
        let outcome = worker
            .make_blob(outcome)
            .await
            .map_err(|e| infra(e.to_string()))?;
        send(
            out,
            Out::JobProgress(wire::JobProgress {
                job_id: job_id.clone(),
                lease_id: lease_id.clone(),
                phase: common::StepPhase::Uploading as i32,
                ..Default::default()
            }),
        )
        .await;
        let sent = blobs
            .upload(&outcome.layer.digest)
            .instrument(tracing::info_span!("upload", digest = %outcome.layer.digest))
            .await
            .map_err(infra)?;
        stats.bytes_uploaded.inc_by(sent);
        Ok(wire::JobResult {
            job_id: job_id.clone(),
            lease_id: lease_id.clone(),
            layer: Some(layer_proto(&outcome.layer)),
            empty_diff: outcome.empty,
            config_changes: Vec::new(),
            duration: prost_types::Duration::try_from(outcome.duration).ok(),
            cache_key: a.cache_key.clone(),
            stats: Some(common::ExecutionStats {
                wall_time: prost_types::Duration::try_from(started.elapsed()).ok(),
                bytes_uploaded: sent,
                ..Default::default()
            }),
            pulled_image: None,
            cache_mounts: cache_archives,
            extra: Default::default(),
        })
    }
    .await;
    stats.jobs_running.dec();
    stats
        .jobs
        .with_label_values(&[if outcome.is_ok() {
            "succeeded"
        } else {
            "failed"
        }])
        .inc();
    stats.step_duration.observe(started.elapsed().as_secs_f64());
    match outcome {
        Ok(r) => send(out, Out::JobResult(r)).await,
        Err((kind, message, exit_code)) => {
            let log_tail = tail.lock().unwrap_or_else(|e| e.into_inner()).clone();
            send(
                out,
                Out::JobFailed(wire::JobFailed {
                    job_id,
                    lease_id,
                    kind: kind as i32,
                    exit_code,
                    signal: None,
                    message: explain(message),
                    retryable: kind == wire::FailureKind::Infrastructure,
                    log_tail,
                    duration: prost_types::Duration::try_from(started.elapsed()).ok(),
                    stats: None,
                }),
            )
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::explain;

    #[test]
    fn a_full_disk_is_explained_and_other_failures_are_left_alone() {
        let full = explain(
            "fetching sha256:ab: writing /state/store/tmp/fetch-1: No space left on device (os error 28)"
                .into(),
        );
        assert!(
            full.starts_with("the worker's disk is full (fetching sha256:ab: "),
            "{full}"
        );
        assert!(full.ends_with("lower its --max-store-bytes"), "{full}");
        let other = "fetching sha256:ab: connection reset".to_string();
        assert_eq!(explain(other.clone()), other);
    }
}
