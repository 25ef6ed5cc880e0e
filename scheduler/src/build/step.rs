//! One ready step, from the cache or from a worker: look the key up in
//! the namespaces the build may read; on a miss claim the step, so that
//! another build needing the same step at the same moment waits for this
//! one's layer instead of running it again; run the job; record the layer.

use super::early::{Early, Link};
use super::ends::{Ended, run_of};
use super::handle::BuildHandle;
use super::job::{Driven, Failure, StepRun, drive_job, store_failure};
use crate::Inner;
use crate::cache::{CacheEntry, Hit};
use crate::image::now_rfc3339;
use std::sync::Arc;
use std::time::Duration;
use strata_frontend::plan::Step;
use strata_proto::build::v1 as build;
use strata_proto::worker::v1 as wire;

use build::build_event::Event;

/// How long a claim lasts unless renewed; it is renewed while the job
/// runs, so only a scheduler that died leaves one to expire.
const CLAIM_TTL: Duration = Duration::from_secs(60);
/// How often a waiting build looks for the claimed step's layer.
const WAIT_POLL: Duration = Duration::from_millis(100);
/// How many times a step runs when its layer keeps vanishing (prune
/// removing a blob the worker found and did not upload again).
const MAX_LAYER_TRIES: u32 = 3;

/// How a step was satisfied.
pub(super) enum Satisfied {
    /// From the cache (possibly a layer another build just made).
    Cached(Hit),
    /// By running its job.
    Built(StepRun, CacheEntry),
}

/// A usable cache entry: indexed, and its blob still in the store, pinned
/// for the build so prune leaves it alone.
async fn lookup(
    inner: &Inner,
    build_id: &str,
    ns: &str,
    step: &Step,
) -> Result<Option<Hit>, Failure> {
    let Some(hit) = inner
        .cache
        .get(ns, &step.cache_key)
        .await
        .map_err(store_failure)?
    else {
        return Ok(None);
    };
    let _guard = inner.pins.guard().await;
    inner.pins.pin(build_id, [hit.entry.layer.digest.as_str()]);
    match inner.blobs.stat(&hit.entry.layer.digest).await {
        Ok(Some(_)) => Ok(Some(hit)),
        Ok(None) => Ok(None),
        Err(e) => Err(store_failure(e)),
    }
}

/// A cache hit, for a rider (job `job_id`) once the steps it rode on are
/// done: it is recorded no earlier than a rider that ran. Meanwhile the
/// build knows the rider waits for them.
async fn cached(hit: Hit, link: &Link, job_id: &str) -> Result<Satisfied, Failure> {
    if link.bound_to().is_some() {
        let _ = link.early.send(Early::Waiting {
            job_id: job_id.to_string(),
        });
    }
    if link.settled().await {
        Ok(Satisfied::Cached(hit))
    } else {
        Err(Failure::new(build::ErrorCode::Cancelled, "cancelled"))
    }
}

/// Satisfies `step` with the layer this build made (or found) for it
/// before a scheduler restart (`ended`), as its log reported it: the cache
/// entry when it still names that layer, else the layer itself if the
/// store still has it. Otherwise the build fails (it can be retried): the
/// step ended once, and is not run again under the same build.
pub(super) async fn reuse(
    inner: &Inner,
    handle: &BuildHandle,
    ns: &str,
    step: &Step,
    ended: Ended,
) -> Result<Satisfied, Failure> {
    let Some(layer) = ended.layer else {
        return Err(Failure::new(
            build::ErrorCode::Internal,
            format!(
                "{}: its end before the scheduler restarted names no layer",
                step.instruction
            ),
        ));
    };
    if let Some(hit) = lookup(inner, &handle.id, ns, step).await?
        && hit.entry.layer.digest == layer.digest
    {
        return Ok(Satisfied::Cached(hit));
    }
    let present = {
        let _guard = inner.pins.guard().await;
        inner.pins.pin(&handle.id, [layer.digest.as_str()]);
        inner.blobs.stat(&layer.digest).await
    };
    match present {
        Ok(Some(_)) => Ok(Satisfied::Cached(Hit {
            entry: CacheEntry {
                layer,
                build_id: handle.id.clone(),
                worker_id: ended.worker_id,
                created: ended.created,
            },
            namespace: ns.to_string(),
        })),
        Ok(None) => Err(Failure::new(
            build::ErrorCode::StoreUnavailable,
            format!(
                "{}: layer {}, made before the scheduler restarted, was removed from the store (strata prune?); the build can be retried",
                step.instruction, layer.digest
            ),
        )),
        Err(e) => Err(store_failure(e)),
    }
}

/// Releases a claim when the step ends or its future is dropped (build
/// cancelled, another step failed).
struct Claim {
    inner: Arc<Inner>,
    ns: String,
    key: String,
    owner: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let (inner, ns, key, owner) = (
            Arc::clone(&self.inner),
            std::mem::take(&mut self.ns),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.owner),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = inner.cache.release(&ns, &key, &owner).await {
                    tracing::warn!("releasing the claim on {key}: {e}");
                }
            });
        }
    }
}

/// Satisfies `step` of namespace `ns`, running `assignment` only when
/// neither the cache nor another build's running job can provide it. A
/// rider (`link.ride`) runs on the worker holding the layers it starts
/// on.
pub(super) async fn satisfy(
    inner: &Arc<Inner>,
    handle: &BuildHandle,
    step: &Step,
    assignment: wire::JobAssignment,
    ns: &str,
    link: Link,
) -> Result<Satisfied, Failure> {
    let job_id = assignment.job_id.clone();
    let key = &step.cache_key;
    let mut claim = None;
    if !step.no_cache {
        let found = lookup(inner, &handle.id, ns, step).await?;
        let result = if found.is_some() { "hit" } else { "miss" };
        inner
            .metrics
            .cache_lookups
            .with_label_values(&[result])
            .inc();
        tracing::Span::current().record("cached", found.is_some());
        if let Some(hit) = found {
            return cached(hit, &link, &job_id).await;
        }
        let mut told = false;
        loop {
            let claimed = inner
                .cache
                .claim(ns, key, &job_id, CLAIM_TTL)
                .await
                .map(|held| held.filter(|h| *h != job_id));
            // A claim held by an earlier run of this very step is ours: a
            // build resumed after a scheduler restart, whose new run has a
            // new job id, takes it over.
            if let Ok(Some(h)) = &claimed
                && run_of(&handle.id, &step.id, h)
            {
                if let Err(e) = inner.cache.release(ns, key, h).await {
                    tracing::warn!("taking over the claim on {}: {e}", step.id);
                    break;
                }
                continue;
            }
            match claimed {
                Ok(None) => {
                    claim = Some(Claim {
                        inner: Arc::clone(inner),
                        ns: ns.to_string(),
                        key: key.clone(),
                        owner: job_id.clone(),
                    });
                    break;
                }
                Ok(Some(holder)) => {
                    // Its worker need not put off that layer's upload
                    // (told again each time: the job may not have been on
                    // a worker yet).
                    inner.pool.hurry(std::slice::from_ref(&holder));
                    if !told {
                        handle.emit(Event::StepQueued(build::StepQueued {
                            step_id: step.id.clone(),
                            attempt: 1,
                            reason: format!(
                                "waiting for job {holder}, which runs the same step for another build"
                            ),
                            cache_key: key.clone(),
                        }));
                        told = true;
                    }
                    tokio::time::sleep(WAIT_POLL).await;
                    if let Some(hit) = lookup(inner, &handle.id, ns, step).await? {
                        return cached(hit, &link, &job_id).await;
                    }
                }
                Err(e) => {
                    // Without claims the step may run twice; it still runs.
                    tracing::warn!("claiming {}: {e}", step.id);
                    break;
                }
            }
        }
    }
    handle.emit(Event::StepQueued(build::StepQueued {
        step_id: step.id.clone(),
        attempt: 1,
        reason: String::new(),
        cache_key: key.clone(),
    }));
    let mut assignment = assignment;
    fleet_cache_mounts(inner, &mut assignment).await?;
    assignment.trace_context = strata_telemetry::inject_current().into_iter().collect();
    let mut renew = tokio::time::interval(CLAIM_TTL / 3);
    renew.tick().await;
    let mut tries = 0;
    let mut attempt = 1;
    let run = loop {
        tries += 1;
        record_job(inner, &job_id, &handle.id, step, ns, "queued", "").await;
        // Layers reported early (no blob) by steps done since have their
        // blobs now: the job may go to any worker.
        link.fill(&mut assignment);
        // A rider goes to the worker holding its parents' layers, unless
        // they were stored meanwhile (then nothing would let it go).
        let events = match link.bound_to() {
            Some(worker) if tries == 1 => inner.pool.submit_on(assignment.clone(), attempt, worker),
            _ => inner.pool.submit_from(assignment.clone(), attempt),
        };
        let drive = drive_job(handle, step, job_id.clone(), events, inner, &link);
        tokio::pin!(drive);
        let driven = loop {
            tokio::select! {
                r = &mut drive => match r {
                    Ok(driven) => break driven,
                    Err(f) => {
                        record_job(inner, &job_id, &handle.id, step, ns, "failed", &f.worker_id).await;
                        return Err(f);
                    }
                },
                _ = renew.tick() => {
                    if claim.is_some() {
                        match inner.cache.renew(ns, key, &job_id, CLAIM_TTL).await {
                            Ok(true) => {}
                            // Another build may run the step too; this
                            // one still finishes it.
                            Ok(false) => tracing::warn!(
                                "the claim on {} expired before it was renewed",
                                step.id
                            ),
                            Err(e) => tracing::warn!("renewing the claim on {}: {e}", step.id),
                        }
                    }
                }
            }
        };
        // drive_job pins the reported layer and checks it is stored before
        // reporting the step done; prune may have removed it after the
        // worker found it there, and then the step runs again.
        match driven {
            Driven::Done(run) => break run,
            Driven::LayerVanished {
                digest,
                worker_id,
                attempt: last,
            } if tries < MAX_LAYER_TRIES => {
                // The run succeeded; prune took its layer. Running it again
                // spends none of the step's attempts, which are for failures
                // (MAX_LAYER_TRIES bounds these re-runs).
                attempt = last;
                // Steps started on the layer as it was made start again
                // on the next run's.
                let _ = link.early.send(super::early::Early::Revoked {
                    step_id: step.id.clone(),
                    job_id: job_id.clone(),
                });
                tracing::warn!(
                    "{}: layer {digest} reported by worker {worker_id} was removed (strata prune) before it was recorded; running the step again",
                    step.id,
                );
                handle.emit(Event::StepQueued(build::StepQueued {
                    step_id: step.id.clone(),
                    attempt,
                    reason: format!(
                        "layer {digest} was pruned before it was recorded; running the step again"
                    ),
                    cache_key: key.clone(),
                }));
            }
            Driven::LayerVanished {
                digest,
                worker_id,
                attempt,
            } => {
                record_job(inner, &job_id, &handle.id, step, ns, "failed", &worker_id).await;
                let mut f = Failure::new(
                    build::ErrorCode::StoreUnavailable,
                    format!(
                        "{}: layer {digest} was removed from the store {MAX_LAYER_TRIES} times before it could be recorded (strata prune running?); the build can be retried",
                        step.instruction
                    ),
                );
                (f.worker_id, f.attempts) = (worker_id, attempt);
                return Err(f);
            }
        }
    };
    record_job(
        inner,
        &job_id,
        &handle.id,
        step,
        ns,
        "succeeded",
        &run.worker_id,
    )
    .await;
    for c in &run.cache_mounts {
        let pointer = cache_mount_pointer(&c.id);
        if let Err(e) = inner
            .blobs
            .durable()
            .put_object(&pointer, c.digest.clone().into_bytes().into())
            .await
        {
            tracing::warn!("recording cache mount {}: {e}", c.id);
        }
    }
    let entry = CacheEntry {
        layer: run.layer.clone(),
        build_id: handle.id.clone(),
        worker_id: run.worker_id.clone(),
        created: now_rfc3339(),
    };
    if let Err(e) = inner.cache.insert(ns, key, &entry).await {
        tracing::warn!("cannot record {} in the cache index: {e}", step.id);
    }
    drop(claim);
    Ok(Satisfied::Built(run, entry))
}

/// How long a job's record stays in the state after its last change.
const JOB_RECORD_TTL: Duration = Duration::from_secs(24 * 3600);

/// Records a job's state in the shared state (`jobs/<id>`), for other
/// schedulers, dashboards and operators.
async fn record_job(
    inner: &Inner,
    job_id: &str,
    build_id: &str,
    step: &Step,
    ns: &str,
    state: &str,
    worker_id: &str,
) {
    let record = serde_json::json!({
        "job_id": job_id,
        "build_id": build_id,
        "step_id": step.id,
        "instruction": step.instruction,
        "cache_key": step.cache_key,
        "namespace": ns,
        "state": state,
        "worker_id": worker_id,
        "updated": now_rfc3339(),
    });
    if let Err(e) = inner
        .state
        .put(
            &format!("jobs/{job_id}"),
            record.to_string().as_bytes(),
            Some(JOB_RECORD_TTL),
        )
        .await
    {
        tracing::debug!("recording job {job_id}: {e}");
    }
}

/// Marks the records of jobs the build stopped (`jobs/<id>`, see
/// [`record_job`]) as `state`, in the background: their steps' futures
/// were dropped before they could say so.
pub(super) fn mark_jobs(inner: &Arc<Inner>, jobs: Vec<String>, state: &'static str) {
    if jobs.is_empty() {
        return;
    }
    let inner = Arc::clone(inner);
    tokio::spawn(async move {
        for job_id in jobs {
            let key = format!("jobs/{job_id}");
            let Ok(Some(bytes)) = inner.state.get(&key).await else {
                continue;
            };
            let Ok(mut record) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            // A job that ended (succeeded, failed) keeps its record.
            if record["state"] != "queued" {
                continue;
            }
            record["state"] = state.into();
            record["updated"] = now_rfc3339().into();
            if let Err(e) = inner
                .state
                .put(&key, record.to_string().as_bytes(), Some(JOB_RECORD_TTL))
                .await
            {
                tracing::debug!("recording job {job_id}: {e}");
            }
        }
    });
}

/// Where the fleet's latest archive of cache mount `id` is named.
fn cache_mount_pointer(id: &str) -> String {
    format!(
        "cachemount/{}",
        crate::blobs::sha256_of(id.as_bytes()).trim_start_matches("sha256:")
    )
}

/// Tells the job the fleet's latest archive of each cache it mounts.
async fn fleet_cache_mounts(inner: &Inner, a: &mut wire::JobAssignment) -> Result<(), Failure> {
    let Some(wire::job_assignment::Instruction::Run(run)) = &mut a.instruction else {
        return Ok(());
    };
    for m in &mut run.mounts {
        if let Some(wire::mount::Kind::Cache(c)) = &mut m.kind
            && let Some(bytes) = inner
                .blobs
                .durable()
                .get_object(&cache_mount_pointer(&c.id))
                .await
                .map_err(store_failure)?
        {
            c.archive_digest = String::from_utf8_lossy(&bytes).trim().to_string();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Scheduler, SchedulerConfig};

    #[tokio::test]
    async fn a_stopped_job_s_record_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let s = Scheduler::open(SchedulerConfig::new(dir.path()))
            .await
            .unwrap();
        let inner = s.inner();
        let record = serde_json::json!({"job_id": "j1", "state": "queued", "step_id": "s0-1"});
        inner
            .state
            .put("jobs/j1", record.to_string().as_bytes(), None)
            .await
            .unwrap();
        // A job with no record gets none.
        mark_jobs(inner, vec!["j1".into(), "j2".into()], "cancelled");
        let read = |key: &'static str| async move {
            inner
                .state
                .get(key)
                .await
                .unwrap()
                .map(|b| serde_json::from_slice::<serde_json::Value>(&b).unwrap())
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while read("jobs/j1").await.unwrap()["state"] != "cancelled" {
            assert!(std::time::Instant::now() < deadline, "not marked");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(read("jobs/j1").await.unwrap()["step_id"], "s0-1");
        assert!(read("jobs/j2").await.is_none());
    }

    #[tokio::test]
    async fn a_step_ended_before_a_restart_keeps_its_layer_or_fails_the_build() {
        let (_dir, s, plan) = super::super::test_scheduler("FROM scratch\nRUN true\n").await;
        let inner = s.inner();
        let handle = BuildHandle::new("b1".into(), Default::default());
        let stored = inner.blobs.put_bytes(b"the layer it made").await.unwrap();
        let ended = |digest: &str| Ended {
            status: build::StepStatus::Executed,
            layer: Some(crate::image::LayerInfo {
                diff_id: digest.to_string(),
                digest: digest.to_string(),
                media_type: String::new(),
                size: 1,
            }),
            worker_id: "w1".into(),
            took: Duration::ZERO,
            attempts: 1,
            created: "2026-12-01T00:00:00Z".into(),
        };
        // No cache entry names it (its insert failed): the layer itself.
        match reuse(inner, &handle, "default", &plan.steps[0], ended(&stored)).await {
            Ok(Satisfied::Cached(hit)) => {
                assert_eq!(hit.entry.layer.digest, stored);
                assert_eq!(
                    (hit.entry.build_id.as_str(), hit.entry.worker_id.as_str()),
                    ("b1", "w1")
                );
            }
            _ => panic!("the layer made before the restart was not reused"),
        }
        assert!(inner.pins.is_pinned(&stored));
        // Gone from the store: the build fails, and says it can be retried.
        let gone = strata_store::sha256_of(b"pruned");
        match reuse(inner, &handle, "default", &plan.steps[0], ended(&gone)).await {
            Err(f) => assert!(
                f.error.message.contains("can be retried"),
                "{}",
                f.error.message
            ),
            Ok(_) => panic!("reused a layer the store does not have"),
        }
    }
}
