//! Following one step's job on the pool into the build's event log.

use super::early::{Early, Link};
use super::handle::BuildHandle;
use crate::Inner;
use crate::image::LayerInfo;
use crate::pool::JobEvent;
use std::time::{Duration, Instant};
use strata_frontend::plan::Step;
use strata_proto::build::v1 as build;
use strata_proto::worker::v1 as wire;

use super::wire::duration;
use build::build_event::Event;

/// A failed build: its error and final status.
pub(super) struct Failure {
    pub(super) status: build::BuildStatus,
    pub(super) error: Box<build::BuildError>,
    /// The worker of the step's last run, if it ran ("" otherwise).
    pub(super) worker_id: String,
    /// The runs the step had (1 when it never ran).
    pub(super) attempts: u32,
    /// How long its last run took, from its start on the worker.
    pub(super) duration: Duration,
}

impl Failure {
    pub(super) fn new(code: build::ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: if code == build::ErrorCode::Cancelled {
                build::BuildStatus::Cancelled
            } else {
                build::BuildStatus::Failed
            },
            error: Box::new(build::BuildError {
                code: code as i32,
                message: message.into(),
                ..Default::default()
            }),
            worker_id: String::new(),
            attempts: 1,
            duration: Duration::ZERO,
        }
    }
}

/// What one step's job ended with.
pub(super) struct StepRun {
    pub(super) layer: LayerInfo,
    pub(super) worker_id: String,
    /// How long its last run took, from its start on the worker.
    pub(super) duration: Duration,
    pub(super) attempts: u32,
    /// What the worker measured of the run.
    pub(super) stats: Option<Box<strata_proto::common::v1::ExecutionStats>>,
    /// Cache mounts the step changed (their new archives).
    pub(super) cache_mounts: Vec<wire::CacheMountArchive>,
}

/// How one step's job ended, when it did not fail.
pub(super) enum Driven {
    /// The step is done; its layer is in the store, pinned for the build.
    Done(StepRun),
    /// The worker reported a layer the store no longer has: prune removed
    /// it after the worker found it there and skipped the upload. No
    /// `StepDone` was sent; the step can run again.
    LayerVanished {
        digest: String,
        worker_id: String,
        attempt: u32,
    },
}

pub(super) const LOG_TAIL: usize = 4096;

/// A failure of the blob store or cache index.
pub(super) fn store_failure(e: impl std::fmt::Display) -> Failure {
    Failure::new(
        build::ErrorCode::StoreUnavailable,
        format!("the layer cache is unavailable: {e}; the build can be retried"),
    )
}

pub(super) fn layer_info(l: strata_proto::common::v1::Layer) -> LayerInfo {
    let blob = l.blob.unwrap_or_default();
    LayerInfo {
        diff_id: l.diff_id,
        digest: blob.digest,
        media_type: blob.media_type,
        size: blob.size,
    }
}

/// Follows one job's events into the build's log. A step's job is done
/// only once its layer is pinned and known to be in the store, and, for a
/// job started on layers still uploading, once their steps are done
/// (`link`, which also carries the job's early layer to the build loop,
/// and its revocation when the job runs again). The build loop reports
/// the step done (`StepDone`) once the step is recorded. A failure names
/// the step's last worker and its runs.
pub(super) async fn drive_job(
    handle: &BuildHandle,
    step: &Step,
    job_id: String,
    events: tokio::sync::mpsc::UnboundedReceiver<JobEvent>,
    inner: &Inner,
    link: &Link,
) -> Result<Driven, Failure> {
    let mut run = RunSoFar {
        started: Instant::now(),
        worker_id: String::new(),
        attempt: 1,
    };
    follow(handle, step, &job_id, events, inner, link, &mut run)
        .await
        .map_err(|mut f| {
            if f.worker_id.is_empty() {
                f.worker_id = std::mem::take(&mut run.worker_id);
            }
            f.attempts = run.attempt;
            f.duration = run.started.elapsed();
            f
        })
}

/// The job's latest run, as its events told it.
struct RunSoFar {
    /// When it started on its worker (when the job was queued, before).
    started: Instant,
    worker_id: String,
    attempt: u32,
}

async fn follow(
    handle: &BuildHandle,
    step: &Step,
    job_id: &str,
    mut events: tokio::sync::mpsc::UnboundedReceiver<JobEvent>,
    inner: &Inner,
    link: &Link,
    run: &mut RunSoFar,
) -> Result<Driven, Failure> {
    let job_id = job_id.to_string();
    let mut tail: Vec<u8> = Vec::new();
    // Whether the build loop holds an early layer of this job's.
    let mut committed = false;
    let revoke = |committed: &mut bool| {
        if std::mem::take(committed) {
            let _ = link.early.send(Early::Revoked {
                step_id: step.id.clone(),
                job_id: job_id.clone(),
            });
        }
    };
    while let Some(ev) = events.recv().await {
        match ev {
            JobEvent::Committed { layer, worker_id } => {
                committed = true;
                let _ = link.early.send(Early::Committed {
                    step_id: step.id.clone(),
                    job_id: job_id.clone(),
                    worker_id,
                    layer: layer_info(*layer),
                });
            }
            JobEvent::Started {
                worker_id,
                attempt: a,
            } => {
                // Durations and log tails are a run's own.
                *run = RunSoFar {
                    started: Instant::now(),
                    worker_id: worker_id.clone(),
                    attempt: a,
                };
                tail.clear();
                tracing::Span::current().record("worker_id", worker_id.as_str());
                handle.emit(Event::StepStarted(build::StepStarted {
                    step_id: step.id.clone(),
                    worker_id,
                    job_id: job_id.clone(),
                    attempt: a,
                }));
            }
            JobEvent::Log(chunk) => {
                tail.extend_from_slice(&chunk.data);
                if tail.len() > LOG_TAIL {
                    tail.drain(..tail.len() - LOG_TAIL);
                }
                handle.emit(Event::StepLog(build::StepLog {
                    step_id: step.id.clone(),
                    job_id: job_id.clone(),
                    attempt: run.attempt,
                    chunk: Some(chunk),
                }));
            }
            JobEvent::Progress(p) => {
                handle.emit(Event::StepProgress(build::StepProgress {
                    step_id: step.id.clone(),
                    job_id: job_id.clone(),
                    phase: p.phase,
                    current: p.current,
                    total: p.total,
                    message: p.message,
                }));
            }
            JobEvent::Refused { worker_id, reason } => {
                // Nothing ran: the StepStarted before this is withdrawn by
                // a StepQueued on the same attempt.
                handle.emit(Event::StepQueued(build::StepQueued {
                    step_id: step.id.clone(),
                    attempt: run.attempt,
                    reason: format!(
                        "worker {worker_id} refused it ({reason}); waiting for another"
                    ),
                    cache_key: step.cache_key.clone(),
                }));
            }
            JobEvent::Waiting(reason) => {
                handle.emit(Event::StepQueued(build::StepQueued {
                    step_id: step.id.clone(),
                    attempt: run.attempt,
                    reason,
                    cache_key: step.cache_key.clone(),
                }));
            }
            JobEvent::Requeued { reason, attempt: a } => {
                revoke(&mut committed);
                handle.emit(Event::StepQueued(build::StepQueued {
                    step_id: step.id.clone(),
                    attempt: a,
                    reason,
                    cache_key: step.cache_key.clone(),
                }));
            }
            JobEvent::Done { result, worker_id } => {
                let layer = layer_info(result.layer.unwrap_or_default());
                if layer.digest.is_empty() {
                    return Err(Failure::new(
                        build::ErrorCode::WorkerLost,
                        format!(
                            "{}: worker {worker_id} reported the step done without a layer",
                            step.instruction
                        ),
                    ));
                }
                // A rider is done once the steps it rode on are.
                if !link.settled().await {
                    break;
                }
                // A worker skips uploading a layer the store already has;
                // prune may have removed that blob since. Pin the layer and
                // check it is there under the pins guard, before the step
                // is reported done: then prune leaves it alone.
                let present = {
                    let _guard = inner.pins.guard().await;
                    inner.pins.pin(&handle.id, [layer.digest.as_str()]);
                    inner.blobs.stat(&layer.digest).await
                };
                match present {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        return Ok(Driven::LayerVanished {
                            digest: layer.digest,
                            worker_id,
                            attempt: run.attempt,
                        });
                    }
                    Err(e) => return Err(store_failure(e)),
                }
                return Ok(Driven::Done(StepRun {
                    layer,
                    worker_id,
                    duration: run.started.elapsed(),
                    attempts: run.attempt,
                    stats: result.stats.map(Box::new),
                    cache_mounts: result.cache_mounts,
                }));
            }
            JobEvent::Retrying { failure, worker_id } => {
                // The worker's side failed (its store, runtime, disk); the
                // pool queues the job again, on another worker if it can.
                revoke(&mut committed);
                handle.emit(Event::StepFailed(build::StepFailed {
                    step_id: step.id.clone(),
                    worker_id,
                    job_id: job_id.clone(),
                    attempt: run.attempt,
                    exit_code: failure.exit_code,
                    signal: failure.signal,
                    message: failure.message,
                    log_tail: if tail.is_empty() {
                        failure.log_tail
                    } else {
                        std::mem::take(&mut tail)
                    },
                    will_retry: true,
                    duration: Some(duration(run.started.elapsed())),
                    code: build::ErrorCode::Unspecified as i32,
                }));
            }
            JobEvent::Failed { failure, worker_id } => {
                // The build loop reports it (StepFailed), once it takes
                // the failure: a step ends once.
                if !failure.log_tail.is_empty() && tail.is_empty() {
                    tail = failure.log_tail.clone();
                }
                let code = match wire::FailureKind::try_from(failure.kind) {
                    Ok(wire::FailureKind::Timeout) => build::ErrorCode::StepTimeout,
                    Ok(wire::FailureKind::Cancelled) => build::ErrorCode::Cancelled,
                    _ => build::ErrorCode::StepFailed,
                };
                let mut f = Failure::new(code, failure.message);
                f.error.exit_code = failure.exit_code;
                f.error.signal = failure.signal;
                f.error.log_tail = tail;
                f.worker_id = worker_id;
                return Err(f);
            }
            JobEvent::Lost(reason) => {
                return Err(Failure::new(
                    build::ErrorCode::WorkerLost,
                    format!("{}: {reason}", step.instruction),
                ));
            }
        }
    }
    Err(Failure::new(build::ErrorCode::Cancelled, "cancelled"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::common::v1 as common;

    fn done(digest: &str) -> JobEvent {
        JobEvent::Done {
            result: Box::new(wire::JobResult {
                layer: Some(common::Layer {
                    diff_id: digest.to_string(),
                    blob: Some(common::Descriptor {
                        digest: digest.to_string(),
                        ..Default::default()
                    }),
                    uncompressed_size: 0,
                }),
                ..Default::default()
            }),
            worker_id: "w1".into(),
        }
    }

    fn unlinked() -> Link {
        Link {
            early: tokio::sync::mpsc::unbounded_channel().0,
            ride: None,
        }
    }

    fn step_done_count(handle: &BuildHandle) -> usize {
        handle.mark_durable(u64::MAX);
        handle
            .events_after(0)
            .iter()
            .filter(|e| matches!(e.event, Some(Event::StepDone(_))))
            .count()
    }

    #[tokio::test]
    async fn a_step_is_done_only_once_its_layer_is_pinned_and_stored() {
        let (_dir, s, plan) = super::super::test_scheduler("FROM scratch\nRUN true\n").await;
        let inner = s.inner();
        let step = &plan.steps[0];
        let handle = BuildHandle::new("b1".into(), Default::default());

        // The worker reports a layer prune has removed: no StepDone, and
        // the digest is named.
        let gone = strata_store::sha256_of(b"a layer prune removed");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tx.send(JobEvent::Started {
            worker_id: "w1".into(),
            attempt: 2,
        })
        .unwrap();
        tx.send(done(&gone)).unwrap();
        match drive_job(&handle, step, "j1".into(), rx, inner, &unlinked()).await {
            Ok(Driven::LayerVanished {
                digest, attempt, ..
            }) => {
                assert_eq!((digest.as_str(), attempt), (gone.as_str(), 2));
            }
            Ok(Driven::Done(_)) => panic!("done with a layer not in the store"),
            Err(f) => panic!("failed: {}", f.error.message),
        }
        assert_eq!(step_done_count(&handle), 0);

        // A stored layer: StepDone, and the layer is pinned first.
        let there = inner.blobs.put_bytes(b"a layer").await.unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tx.send(done(&there)).unwrap();
        assert!(matches!(
            drive_job(&handle, step, "j1".into(), rx, inner, &unlinked()).await,
            Ok(Driven::Done(_))
        ));
        assert!(inner.pins.is_pinned(&there));
        // The build loop reports it done, once it is recorded.
        assert_eq!(step_done_count(&handle), 0);
    }

    #[tokio::test]
    async fn a_failed_step_names_its_last_worker_and_its_runs() {
        let (_dir, s, plan) = super::super::test_scheduler("FROM scratch\nRUN false\n").await;
        let handle = BuildHandle::new("b1".into(), Default::default());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let failure = |retryable| {
            Box::new(wire::JobFailed {
                message: "exit code: 1".into(),
                retryable,
                ..Default::default()
            })
        };
        tx.send(JobEvent::Started {
            worker_id: "w1".into(),
            attempt: 1,
        })
        .unwrap();
        tx.send(JobEvent::Retrying {
            failure: failure(true),
            worker_id: "w1".into(),
        })
        .unwrap();
        tx.send(JobEvent::Started {
            worker_id: "w2".into(),
            attempt: 2,
        })
        .unwrap();
        tx.send(JobEvent::Failed {
            failure: failure(false),
            worker_id: "w2".into(),
        })
        .unwrap();
        match drive_job(
            &handle,
            &plan.steps[0],
            "j1".into(),
            rx,
            s.inner(),
            &unlinked(),
        )
        .await
        {
            Err(f) => assert_eq!((f.worker_id.as_str(), f.attempts), ("w2", 2)),
            Ok(_) => panic!("a failed step succeeded"),
        }
    }

    #[tokio::test]
    async fn a_refused_run_is_withdrawn_before_the_step_starts_elsewhere() {
        let (_dir, s, plan) = super::super::test_scheduler("FROM scratch\nRUN true\n").await;
        let inner = s.inner();
        let handle = BuildHandle::new("b1".into(), Default::default());
        let there = inner.blobs.put_bytes(b"a layer").await.unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for ev in [
            JobEvent::Started {
                worker_id: "w2".into(),
                attempt: 1,
            },
            JobEvent::Refused {
                worker_id: "w2".into(),
                reason: "no free slot".into(),
            },
            JobEvent::Started {
                worker_id: "w1".into(),
                attempt: 1,
            },
            done(&there),
        ] {
            tx.send(ev).unwrap();
        }
        let link = unlinked();
        let driven = drive_job(&handle, &plan.steps[0], "j1".into(), rx, inner, &link);
        match driven.await {
            Ok(Driven::Done(run)) => assert_eq!((run.worker_id.as_str(), run.attempts), ("w1", 1)),
            _ => panic!("the step did not end done"),
        }
        handle.mark_durable(u64::MAX);
        let seen: Vec<String> = handle
            .events_after(0)
            .iter()
            .filter_map(|e| match &e.event {
                Some(Event::StepStarted(s)) => {
                    Some(format!("started {} #{}", s.worker_id, s.attempt))
                }
                Some(Event::StepQueued(q)) => Some(format!("queued #{}: {}", q.attempt, q.reason)),
                _ => None,
            })
            .collect();
        assert_eq!(
            seen,
            [
                "started w2 #1",
                "queued #1: worker w2 refused it (no free slot); waiting for another",
                "started w1 #1",
            ]
        );
    }
}
