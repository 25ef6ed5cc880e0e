//! The worker's side of `WorkerService.Connect`: register with the
//! scheduler, send heartbeats, run the jobs it assigns (up to the
//! capacity at once), stream their output, upload their layers, report
//! results; reconnect with backoff when the stream breaks.

mod blobs;
mod cache_mounts;
mod job;
mod stats;

pub use blobs::RemoteBlobs;
pub use stats::AgentStats;

use crate::job::Worker;
use futures::future::BoxFuture;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// What every call to the scheduler carries (token, trace context).
    pub outgoing: strata_telemetry::Outgoing,
    /// On shutdown, how long running jobs may take to finish before they
    /// are handed back to the scheduler; zero hands them back at once.
    pub drain_timeout: Duration,
    /// Keep the local layer store under this many bytes (least recently
    /// used layers and blobs go after each job); no limit when unset.
    pub max_store_bytes: Option<u64>,
    /// How long a big layer's blob and upload wait for spare CPU while
    /// steps run here (`crate::headroom`).
    pub defer: crate::headroom::Defer,
}

struct Running {
    lease: String,
    cancel: CancellationToken,
    /// Set once the job's layer is made: it only uploads from then on,
    /// and no longer takes a slot.
    uploading: Arc<AtomicBool>,
    /// The layer's diffID once made, and the job's wait for spare CPU
    /// before its blob and upload, which a Hurry naming it ends.
    made: Arc<std::sync::OnceLock<String>>,
    hurry: Arc<tokio::sync::Notify>,
    /// Layers (diffIDs, digests) the job reads, held against eviction
    /// from its assignment to its end.
    _reads: crate::store::Held,
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
        features: strata_proto::WORKER_FEATURES
            .iter()
            .map(|f| f.to_string())
            .collect(),
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
    let mut client =
        WorkerServiceClient::with_interceptor(channel.clone(), config.outgoing.clone())
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
    let early = ack
        .features
        .iter()
        .any(|f| f == strata_proto::FEATURE_EARLY_DIFF_ID);
    stats.connected.set(1);
    tracing::info!(worker_id = %worker_id, "registered with the scheduler");
    let interval = ack
        .heartbeat_interval
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or(Duration::from_secs(5));
    let blobs = RemoteBlobs::new(
        channel,
        config.outgoing.clone(),
        worker.store_arc(),
        ack.blob_store.as_ref(),
        Arc::clone(stats),
    );
    tracing::info!("blobs: {}", blobs.describe());
    let running: Arc<Mutex<HashMap<String, Running>>> = Arc::default();

    let session_end = CancellationToken::new();
    let heartbeat = {
        let (out, running, worker, end, stats) = (
            out.clone(),
            Arc::clone(&running),
            Arc::clone(worker),
            session_end.clone(),
            Arc::clone(stats),
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
                let free_slots = capacity.saturating_sub(slots_taken(&running));
                let (free, _) = disk(worker.store().root());
                stats.free_disk.set(free as i64);
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
                        jobs_completed: stats.jobs_completed(),
                        blobs_downloaded: stats.blobs_fetched.get(),
                        bytes_downloaded: stats.bytes_fetched.get(),
                        bytes_uploaded: stats.bytes_uploaded.get(),
                    }),
                )
                .await;
            }
        })
    };

    // SIGTERM: stop taking jobs, let the running ones finish (up to the
    // drain timeout), then leave; jobs still running then are handed back.
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    let result = loop {
        let idle = || running.lock().unwrap_or_else(|e| e.into_inner()).is_empty();
        if let Some(deadline) = drain_deadline {
            if idle() {
                // Let the last results reach the scheduler before the
                // stream closes with the process.
                tokio::time::sleep(Duration::from_millis(500)).await;
                break Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                for r in running.lock().unwrap_or_else(|e| e.into_inner()).values() {
                    r.cancel.cancel();
                }
                send(
                    &out,
                    Out::GoingAway(wire::GoingAway {
                        reason: "drain timeout: handing back the running jobs".into(),
                        drain: false,
                        drain_timeout: None,
                    }),
                )
                .await;
                break Ok(());
            }
        }
        let msg = tokio::select! {
            m = incoming.message() => m,
            () = shutdown.cancelled(), if drain_deadline.is_none() => {
                let timeout = config.drain_timeout;
                tracing::info!(?timeout, "shutting down: finishing the running jobs");
                send(&out, Out::GoingAway(wire::GoingAway {
                    reason: "shutting down".into(),
                    drain: !timeout.is_zero(),
                    drain_timeout: prost_types::Duration::try_from(timeout).ok(),
                })).await;
                drain_deadline = Some(tokio::time::Instant::now() + timeout);
                continue;
            }
            () = tokio::time::sleep(Duration::from_millis(200)), if drain_deadline.is_some() => continue,
        };
        let msg = match msg {
            Ok(Some(m)) => m,
            Ok(None) => break Err("the scheduler closed the stream".to_string()),
            Err(e) => break Err(format!("stream error: {}", e.message())),
        };
        use wire::scheduler_message::Message as In;
        match msg.message {
            Some(In::AssignJob(a)) => {
                let full = slots_taken(&running) >= config.capacity.max(1);
                if full || drain_deadline.is_some() {
                    send(
                        &out,
                        Out::JobRejected(wire::JobRejected {
                            job_id: a.job_id.clone(),
                            lease_id: a.lease_id.clone(),
                            reason: if full { "no free slot" } else { "draining" }.into(),
                        }),
                    )
                    .await;
                    continue;
                }
                let slot = job::JobSlot {
                    session: Arc::clone(&running),
                    // An older scheduler takes a layer reported early for
                    // the whole of it, and never hurries one.
                    defer: early.then_some(config.defer),
                    ..Default::default()
                };
                running.lock().unwrap_or_else(|e| e.into_inner()).insert(
                    a.job_id.clone(),
                    Running {
                        lease: a.lease_id.clone(),
                        cancel: slot.cancel.clone(),
                        uploading: Arc::clone(&slot.uploading),
                        made: Arc::clone(&slot.made),
                        hurry: Arc::clone(&slot.hurry),
                        _reads: {
                            let reads = job::in_use(&a);
                            let ids: Vec<&str> = reads.iter().map(String::as_str).collect();
                            worker.store().hold(&ids)
                        },
                    },
                );
                let (worker, blobs, out, running, stats) = (
                    Arc::clone(worker),
                    blobs.clone(),
                    out.clone(),
                    Arc::clone(&running),
                    Arc::clone(stats),
                );
                let limit = config.max_store_bytes;
                let me = worker_id.clone();
                tokio::spawn(async move {
                    let id = a.job_id.clone();
                    job::run_assignment(&worker, &blobs, a, &out, slot, &stats, &me).await;
                    running
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                    if let Some(limit) = limit {
                        let evicted =
                            tokio::task::spawn_blocking(move || worker.store().evict(limit))
                                .await
                                .unwrap_or_default();
                        if evicted.bytes > 0 {
                            tracing::info!(
                                layers = evicted.layers.len(),
                                blobs = evicted.blobs.len(),
                                bytes = evicted.bytes,
                                "evicted least recently used layers"
                            );
                        }
                    }
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
            Some(In::Hurry(h)) => {
                // A job not there yet goes on without waiting when it gets
                // there (the permit stays).
                for (id, r) in running.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                    if h.job_ids.contains(id)
                        || r.made.get().is_some_and(|d| h.diff_ids.contains(d))
                    {
                        r.hurry.notify_one();
                    }
                }
            }
            Some(In::Drain(d)) => {
                tracing::info!("the scheduler asks to drain: {}", d.reason);
            }
            Some(In::RegisterAck(_)) | None => {}
        }
    };
    session_end.cancel();
    heartbeat.abort();
    stats.connected.set(0);
    // Jobs of a broken session cannot report; stop them. The scheduler
    // re-queues them elsewhere.
    for r in running.lock().unwrap_or_else(|e| e.into_inner()).values() {
        r.cancel.cancel();
    }
    result
}

/// Slots the running jobs take: all but those only uploading their layer.
fn slots_taken(running: &Mutex<HashMap<String, Running>>) -> u32 {
    running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .filter(|r| !r.uploading.load(Ordering::Relaxed))
        .count() as u32
}

pub(super) async fn send(out: &mpsc::Sender<wire::WorkerMessage>, m: Out) {
    let _ = out.send(wire::WorkerMessage { message: Some(m) }).await;
}
