//! The worker's side of `WorkerService.Connect`: register with the
//! scheduler, send heartbeats, run the jobs it assigns (up to the
//! capacity at once), stream their output, upload their layers, report
//! results; reconnect with backoff when the stream breaks.

mod blobs;
mod context;

pub use blobs::RemoteBlobs;

use crate::assignment::{job_from_assignment, layers_of};
use crate::executor::{OutputChunk, Stream as OutStream};
use crate::job::{JobError, Worker};
use futures::future::BoxFuture;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use strata_proto::common::v1 as common;
use strata_proto::worker::v1 as wire;
use strata_proto::worker::v1::worker_service_client::WorkerServiceClient;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use wire::worker_message::Message as Out;

/// Opens a channel to the scheduler (called again on every reconnect).
pub type Connector = Arc<dyn Fn() -> BoxFuture<'static, Result<Channel, String>> + Send + Sync>;

/// How the agent presents itself.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The worker id to ask for (persisted by the caller); empty lets the
    /// scheduler choose.
    pub worker_id: String,
    /// Jobs run at once.
    pub capacity: u32,
    /// Placement labels.
    pub labels: BTreeMap<String, String>,
}

/// Counters of what the agent did, for tests and metrics.
#[derive(Debug, Default)]
pub struct AgentStats {
    /// Jobs run to a result (success or failure).
    pub jobs: AtomicU64,
    /// Blobs downloaded from the scheduler.
    pub blobs_fetched: AtomicU64,
    /// Bytes of layers uploaded.
    pub bytes_uploaded: AtomicU64,
}

struct Running {
    lease: String,
    cancel: CancellationToken,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

fn disk(path: &std::path::Path) -> (u64, u64) {
    match nix::sys::statvfs::statvfs(path) {
        Ok(s) => (
            s.blocks_available() * s.fragment_size(),
            s.blocks() * s.fragment_size(),
        ),
        Err(_) => (0, 0),
    }
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0.0)
}

/// Runs the agent until `shutdown`; reconnects after every broken session.
pub async fn run(
    worker: Arc<Worker>,
    connect: Connector,
    config: AgentConfig,
    stats: Arc<AgentStats>,
    shutdown: CancellationToken,
) {
    let mut worker_id = config.worker_id.clone();
    let mut backoff = Duration::from_millis(200);
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let started = Instant::now();
        match session(
            &worker,
            &connect,
            &config,
            &mut worker_id,
            &stats,
            &shutdown,
        )
        .await
        {
            Ok(()) => return,
            Err(e) => {
                if shutdown.is_cancelled() {
                    return;
                }
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_millis(200);
                }
                tracing::warn!("scheduler session ended: {e}; reconnecting in {backoff:?}");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {},
                    () = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// One session; `Ok` only when shut down.
async fn session(
    worker: &Arc<Worker>,
    connect: &Connector,
    config: &AgentConfig,
    worker_id: &mut String,
    stats: &Arc<AgentStats>,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let channel = connect().await?;
    let (out, out_rx) = mpsc::channel::<wire::WorkerMessage>(1024);
    let store_root = worker.store().root().to_path_buf();
    let (free, total) = disk(&store_root);
    let register = wire::Register {
        worker_id: worker_id.clone(),
        hostname: host_name(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        protocol_version: strata_proto::PROTOCOL_VERSION,
        capacity: config.capacity.max(1),
        labels: config.labels.clone().into_iter().collect(),
        platforms: vec![common::Platform {
            os: "linux".into(),
            architecture: std::env::consts::ARCH
                .replace("x86_64", "amd64")
                .replace("aarch64", "arm64"),
            ..Default::default()
        }],
        free_disk_bytes: free,
        total_disk_bytes: total,
        layers_held: worker.store().layers_held(),
        runtime: Some(common::RuntimeInfo {
            runtime: "runc".into(),
            ..Default::default()
        }),
        running_jobs: Vec::new(),
        extra: Default::default(),
    };
    send(&out, Out::Register(register)).await;
    let mut client = WorkerServiceClient::new(channel.clone())
        .max_decoding_message_size(strata_proto::MAX_MESSAGE_SIZE)
        .max_encoding_message_size(strata_proto::MAX_MESSAGE_SIZE);
    let mut incoming = client
        .connect(tokio_stream::wrappers::ReceiverStream::new(out_rx))
        .await
        .map_err(|e| format!("connecting: {}", e.message()))?
        .into_inner();
    let ack = match incoming.message().await {
        Ok(Some(wire::SchedulerMessage {
            message: Some(wire::scheduler_message::Message::RegisterAck(a)),
        })) => a,
        Ok(_) => return Err("the scheduler did not acknowledge Register".into()),
        Err(e) => return Err(format!("registering: {}", e.message())),
    };
    *worker_id = ack.worker_id.clone();
    tracing::info!(worker_id = %worker_id, "registered with the scheduler");
    let interval = ack
        .heartbeat_interval
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or(Duration::from_secs(5));
    let blobs = RemoteBlobs::new(channel, worker.store_arc());
    let running: Arc<Mutex<HashMap<String, Running>>> = Arc::default();

    let session_end = CancellationToken::new();
    let heartbeat = {
        let (out, running, worker, end) = (
            out.clone(),
            Arc::clone(&running),
            Arc::clone(worker),
            session_end.clone(),
        );
        let capacity = config.capacity.max(1);
        tokio::spawn(async move {
            let mut held: std::collections::BTreeSet<String> =
                worker.store().layers_held().into_iter().collect();
            loop {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {},
                    () = end.cancelled() => return,
                }
                let now: std::collections::BTreeSet<String> =
                    worker.store().layers_held().into_iter().collect();
                let added = now.difference(&held).cloned().collect();
                let removed = held.difference(&now).cloned().collect();
                held = now;
                let jobs: Vec<wire::ActiveJob> = running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|(id, r)| wire::ActiveJob {
                        job_id: id.clone(),
                        lease_id: r.lease.clone(),
                    })
                    .collect();
                let free_slots = capacity.saturating_sub(jobs.len() as u32);
                let (free, _) = disk(worker.store().root());
                send(
                    &out,
                    Out::Heartbeat(wire::Heartbeat {
                        running: jobs,
                        free_disk_bytes: free,
                        load_average: load_average(),
                        free_slots,
                        layers_added: added,
                        layers_removed: removed,
                        sent_at: Some(SystemTime::now().into()),
                    }),
                )
                .await;
            }
        })
    };

    let result = loop {
        let msg = tokio::select! {
            m = incoming.message() => m,
            () = shutdown.cancelled() => {
                send(&out, Out::GoingAway(wire::GoingAway {
                    reason: "shutting down".into(),
                    drain: false,
                    drain_timeout: None,
                })).await;
                break Ok(());
            }
        };
        let msg = match msg {
            Ok(Some(m)) => m,
            Ok(None) => break Err("the scheduler closed the stream".to_string()),
            Err(e) => break Err(format!("stream error: {}", e.message())),
        };
        use wire::scheduler_message::Message as In;
        match msg.message {
            Some(In::AssignJob(a)) => {
                let full = running.lock().unwrap_or_else(|e| e.into_inner()).len() as u32
                    >= config.capacity.max(1);
                if full {
                    send(
                        &out,
                        Out::JobRejected(wire::JobRejected {
                            job_id: a.job_id.clone(),
                            lease_id: a.lease_id.clone(),
                            reason: "no free slot".into(),
                        }),
                    )
                    .await;
                    continue;
                }
                let cancel = CancellationToken::new();
                running.lock().unwrap_or_else(|e| e.into_inner()).insert(
                    a.job_id.clone(),
                    Running {
                        lease: a.lease_id.clone(),
                        cancel: cancel.clone(),
                    },
                );
                let (worker, blobs, out, running, stats) = (
                    Arc::clone(worker),
                    blobs.clone(),
                    out.clone(),
                    Arc::clone(&running),
                    Arc::clone(stats),
                );
                tokio::spawn(async move {
                    let id = a.job_id.clone();
                    run_assignment(&worker, &blobs, a, &out, cancel, &stats).await;
                    running
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                });
            }
            Some(In::CancelJob(c)) => {
                if let Some(r) = running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&c.job_id)
                    && r.lease == c.lease_id
                {
                    r.cancel.cancel();
                }
            }
            Some(In::LeaseRevoked(r)) => {
                if let Some(job) = running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&r.job_id)
                {
                    job.cancel.cancel();
                }
            }
            Some(In::Ping(p)) => {
                send(&out, Out::Pong(wire::Pong { nonce: p.nonce })).await;
            }
            Some(In::Drain(d)) => {
                tracing::info!("the scheduler asks to drain: {}", d.reason);
            }
            Some(In::RegisterAck(_)) | None => {}
        }
    };
    session_end.cancel();
    heartbeat.abort();
    // Jobs of a broken session cannot report; stop them. The scheduler
    // re-queues them elsewhere.
    for r in running.lock().unwrap_or_else(|e| e.into_inner()).values() {
        r.cancel.cancel();
    }
    result
}

async fn send(out: &mpsc::Sender<wire::WorkerMessage>, m: Out) {
    let _ = out.send(wire::WorkerMessage { message: Some(m) }).await;
}

const LOG_TAIL: usize = 4096;

/// Every layer blob an assignment reads.
fn layer_digests(a: &wire::JobAssignment) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |s: &common::Snapshot| {
        for l in layers_of(s) {
            out.push(l.digest);
        }
    };
    if let Some(p) = &a.parent {
        add(p);
    }
    let mut sources: Vec<&wire::FileSource> = Vec::new();
    match &a.instruction {
        Some(wire::job_assignment::Instruction::Copy(c)) => sources.extend(c.from.as_ref()),
        Some(wire::job_assignment::Instruction::Run(r)) => {
            for m in &r.mounts {
                match &m.kind {
                    Some(wire::mount::Kind::Bind(b)) => sources.extend(b.from.as_ref()),
                    Some(wire::mount::Kind::Cache(c)) => sources.extend(c.from.as_ref()),
                    _ => {}
                }
            }
        }
        _ => {}
    }
    for s in sources {
        if let Some(wire::file_source::Source::Snapshot(snap)) = &s.source {
            add(snap);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The inline context manifests an assignment reads, merged.
fn context_of(a: &wire::JobAssignment) -> Option<common::ContextManifest> {
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

fn failure_kind(e: &JobError, cancelled: bool) -> wire::FailureKind {
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

/// Runs one assignment to exactly one `JobResult` or `JobFailed`.
async fn run_assignment(
    worker: &Worker,
    blobs: &RemoteBlobs,
    a: wire::JobAssignment,
    out: &mpsc::Sender<wire::WorkerMessage>,
    cancel: CancellationToken,
    stats: &AgentStats,
) {
    let (job_id, lease_id) = (a.job_id.clone(), a.lease_id.clone());
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
    let ctx_dir: PathBuf = worker.state_dir().join("contexts").join(&job_id);
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
        for d in layer_digests(&a) {
            if blobs.fetch(&d).await.map_err(infra)? {
                stats.blobs_fetched.fetch_add(1, Ordering::Relaxed);
            }
        }
        let context = context_of(&a);
        if let Some(m) = &context {
            for d in context::file_digests(m) {
                if blobs.fetch(&d).await.map_err(infra)? {
                    stats.blobs_fetched.fetch_add(1, Ordering::Relaxed);
                }
            }
            let _ = std::fs::remove_dir_all(&ctx_dir);
            let (store, m, dir) = (worker.store_arc(), m.clone(), ctx_dir.clone());
            tokio::task::spawn_blocking(move || context::materialize(&store, &m, &dir))
                .await
                .map_err(|e| infra(e.to_string()))?
                .map_err(|e| (wire::FailureKind::Source, e, None))?;
        }
        let job = job_from_assignment(&a, context.as_ref().map(|_| ctx_dir.as_path()))
            .map_err(|e| (wire::FailureKind::InvalidJob, e.to_string(), None))?;
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
        let result = worker.run_job(job, tx, cancel.clone()).await;
        let _ = forward.await;
        let outcome = result.map_err(|e| {
            let code = match &e {
                JobError::Failed { code, .. } => Some(*code),
                _ => None,
            };
            (failure_kind(&e, cancel.is_cancelled()), e.to_string(), code)
        })?;
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
        let sent = blobs.upload(&outcome.layer.digest).await.map_err(infra)?;
        stats.bytes_uploaded.fetch_add(sent, Ordering::Relaxed);
        let l = &outcome.layer;
        Ok(wire::JobResult {
            job_id: job_id.clone(),
            lease_id: lease_id.clone(),
            layer: Some(common::Layer {
                diff_id: l.diff_id.clone(),
                blob: Some(common::Descriptor {
                    media_type: l.media_type.clone(),
                    digest: l.digest.clone(),
                    size: l.size,
                    ..Default::default()
                }),
                uncompressed_size: 0,
            }),
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
            extra: Default::default(),
        })
    }
    .await;
    let _ = std::fs::remove_dir_all(&ctx_dir);
    stats.jobs.fetch_add(1, Ordering::Relaxed);
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
                    message,
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
