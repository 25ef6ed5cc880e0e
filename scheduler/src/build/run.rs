//! Running one build: resolve base images, plan, then run every step whose
//! dependencies are done — from the cache when its key is known, otherwise
//! as a job on the worker pool — and assemble the target stage's image.
//! Independent stages have no dependency on each other, so their jobs are
//! in the pool's queue at the same time and run on different workers.

use super::handle::BuildHandle;
use super::persist::{Settling, persist};
use super::resolve::{Known, Resolved, images_of, resolve};
use crate::Inner;
use crate::cache::Hit;
use crate::image::{BaseImage, assemble, now_rfc3339, rfc3339};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use strata_frontend::context::ContextManifest;
use strata_frontend::plan::{
    BuildPlan, ImageResolver, Offline, PlanOptions, Step, plan_dockerfile,
};
use strata_proto::build::v1 as build;
use strata_proto::common::v1 as common;

use build::build_event::Event;

use super::chains::Chains;
use super::early::{Early, Link, Riding, Stopped};
use super::ends::{
    Earlier, close_open_steps, fail_step, in_plan_order, outcome, replayed, stop_the_rest,
};
use super::job::{Failure, store_failure};
use super::step::{Satisfied, mark_jobs, reuse, satisfy};
use super::wire::{duration, job_assignment, layer_proto, location, manifest_proto, plan_proto};

/// Everything a build needs, validated.
#[derive(Debug, Clone)]
pub struct BuildInput {
    /// The Dockerfile.
    pub dockerfile: Vec<u8>,
    /// Its name in messages.
    pub dockerfile_name: String,
    /// The build context (its files are in the blob store).
    pub manifest: ContextManifest,
    /// Build args, target, platform, no-cache.
    pub options: PlanOptions,
    /// Secret values by id.
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// SOURCE_DATE_EPOCH.
    pub source_date_epoch: Option<i64>,
    /// Names to tag the image with.
    pub tags: Vec<String>,
    /// `default`, `none` or `host`.
    pub network: String,
    /// Resolve base images from the registry even if known locally.
    pub pull: bool,
    /// The cache namespace (tenant or project).
    pub namespace: String,
}

/// Runs a build to its end; every outcome ends the event log with
/// `BuildFinished` or `BuildFailed`.
pub async fn run_build(inner: Arc<Inner>, handle: Arc<BuildHandle>, input: BuildInput) {
    let _settling = Settling::new(&inner);
    let journal = super::recover::journal(&inner, &handle);
    let started = Instant::now();
    handle.update(|i| {
        i.status = build::BuildStatus::Running as i32;
        i.started_at = Some(SystemTime::now().into());
    });
    // Prune leaves what a running build uses alone.
    inner.pins.pin(
        &handle.id,
        input
            .manifest
            .entries
            .iter()
            .filter_map(|e| e.digest.as_deref()),
    );
    let outcome = execute(&inner, &handle, &input).await;
    inner.pins.release(&handle.id);
    let label = match &outcome {
        Ok(_) => "succeeded",
        Err(f) if f.status == build::BuildStatus::Cancelled => "cancelled",
        Err(_) => "failed",
    };
    inner.metrics.builds.with_label_values(&[label]).inc();
    inner
        .metrics
        .build_duration
        .observe(started.elapsed().as_secs_f64());
    let total = duration(started.elapsed());
    match outcome {
        Ok(result) => {
            handle.update(|i| {
                i.status = build::BuildStatus::Succeeded as i32;
                i.result = Some(result.clone());
            });
            finish(&handle, total);
            handle.emit(Event::BuildFinished(build::BuildFinished {
                status: build::BuildStatus::Succeeded as i32,
                result: Some(result),
            }));
        }
        Err(f) => {
            let steps = handle.info().step_outcomes;
            handle.update(|i| {
                i.status = f.status as i32;
                i.error = Some(*f.error.clone());
            });
            finish(&handle, total);
            handle.emit(Event::BuildFailed(build::BuildFailed {
                status: f.status as i32,
                error: Some(*f.error),
                steps,
                total_duration: Some(total),
            }));
        }
    }
    handle.close_journal();
    let _ = journal.await;
    persist(&inner, &handle).await;
    super::recover::forget(&inner, &handle.id).await;
}

fn finish(handle: &BuildHandle, total: prost_types::Duration) {
    handle.update(|i| {
        i.finished_at = Some(SystemTime::now().into());
        i.duration = Some(total);
    });
}

/// Pins base image `r`'s layers for the build and checks each is in the
/// store, under the pins guard as a cache hit does: prune then leaves them
/// alone. Returns the first layer that is missing.
async fn pin_base(inner: &Inner, build_id: &str, r: &Resolved) -> Result<Option<String>, Failure> {
    let _guard = inner.pins.guard().await;
    inner
        .pins
        .pin(build_id, r.layers.iter().map(|l| l.digest.as_str()));
    for l in &r.layers {
        match inner.blobs.stat(&l.digest).await {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(Some(l.digest.clone())),
            Err(e) => return Err(store_failure(e)),
        }
    }
    Ok(None)
}

/// Cancels riders stopped because `cause`, a step they rode on, runs
/// again (or ended with another layer than it reported early), and
/// queues them again: they will be built on the layer that is stored.
#[allow(clippy::too_many_arguments)]
fn requeue_riders<'p>(
    inner: &Arc<Inner>,
    handle: &BuildHandle,
    plan: &'p BuildPlan,
    stopped: Vec<Stopped>,
    pending: &mut Vec<&'p Step>,
    running_jobs: &mut BTreeSet<String>,
    chains: &mut Chains<'p>,
    cause: &str,
) {
    mark_jobs(
        inner,
        stopped.iter().map(|s| s.job_id.clone()).collect(),
        "cancelled",
    );
    for s in stopped {
        running_jobs.remove(&s.job_id);
        inner.pool.cancel(
            &s.job_id,
            &format!("step {cause}, which it started on, runs again"),
        );
        chains.steps.remove(&s.step_id);
        let Some(step) = plan.step(&s.step_id) else {
            continue;
        };
        handle.emit(Event::StepQueued(build::StepQueued {
            step_id: step.id.clone(),
            attempt: 1,
            reason: format!(
                "step {cause}, whose layer it started on, runs again (the layer was not stored); starting again on the layer that is"
            ),
            cache_key: step.cache_key.clone(),
        }));
        pending.push(step);
    }
}

async fn execute(
    inner: &Arc<Inner>,
    handle: &BuildHandle,
    input: &BuildInput,
) -> Result<build::BuildResult, Failure> {
    // What the log says already: a build resumed after a scheduler
    // restart has started, and its steps may have ended.
    let earlier = Earlier::of(&handle.id, &handle.logged());
    let result = run_plan(inner, handle, input, &earlier).await;
    if let Err(f) = &result {
        // Whatever path it took, no step is left without an end.
        close_open_steps(handle, &f.error.message);
    }
    result
}

async fn run_plan(
    inner: &Arc<Inner>,
    handle: &BuildHandle,
    input: &BuildInput,
    earlier: &Earlier,
) -> Result<build::BuildResult, Failure> {
    let started = Instant::now();
    let plan_with = |resolver: &dyn ImageResolver| {
        plan_dockerfile(
            &input.dockerfile,
            Some(&input.manifest),
            &input.options,
            resolver,
        )
        .map_err(|e| {
            Failure::new(
                build::ErrorCode::InvalidDockerfile,
                e.with_file(&input.dockerfile_name).to_string(),
            )
        })
    };
    // Base images change how instructions expand (their ENV, WORKDIR,
    // ONBUILD), so resolve them first, then plan against their configs.
    let offline = plan_with(&Offline)?;
    let mut bases: BTreeMap<String, Resolved> = BTreeMap::new();
    let owner = inner.config.auth.owner(&input.namespace);
    for reference in images_of(&offline) {
        let mut tries = 0;
        let r = loop {
            tries += 1;
            let r = tokio::select! {
                r = resolve(inner, &reference, &input.options.platform, input.pull, owner) => r,
                () = handle.cancel.cancelled() => return Err(Failure::new(build::ErrorCode::Cancelled, "cancelled")),
            };
            let r = r.map_err(|e| {
                Failure::new(
                    build::ErrorCode::BaseImage,
                    format!("failed to resolve {reference}: {e}"),
                )
            })?;
            let Some(missing) = pin_base(inner, &handle.id, &r).await? else {
                break r;
            };
            // Prune removed a layer between resolving and pinning. Resolving
            // a registry image again downloads it (pinned now, it stays); a
            // local image has lost it for good.
            if r.source == "local" || tries > 1 {
                let hint = if r.source == "local" {
                    " (build with --pull to fetch the image from its registry)"
                } else {
                    ""
                };
                return Err(Failure::new(
                    build::ErrorCode::BaseImage,
                    format!(
                        "base image {reference}: its layer {missing} is not in the store (removed by strata prune?){hint}"
                    ),
                ));
            }
            tracing::warn!(
                "base image {reference}: layer {missing} was removed (strata prune) after it was resolved; resolving it again"
            );
        };
        bases.insert(reference, r);
    }
    let plan = plan_with(&Known(
        bases
            .iter()
            .map(|(k, v)| (k.clone(), v.plan.clone()))
            .collect(),
    ))?;
    let plan_wire = plan_proto(&plan, input);
    handle.update(|i| {
        i.plan = Some(plan_wire.clone());
        i.steps = Some(build::StepCounts {
            total: plan.steps.len() as u32,
            ..Default::default()
        });
    });
    // A build resumed after a scheduler restart has started already;
    // the runs the restart cut short are withdrawn.
    if !earlier.started {
        handle.emit(Event::BuildStarted(build::BuildStarted {
            plan: Some(plan_wire),
            namespace: input.namespace.clone(),
            tags: input.tags.clone(),
            outputs: Vec::new(),
        }));
        for w in &plan.warnings {
            handle.emit(Event::Warning(build::BuildWarning {
                message: w.message.clone(),
                location: (w.line > 0).then(|| location(input, w.line)),
                ..Default::default()
            }));
        }
    }
    // Ends the build at its failed step (`fail_step`).
    let fail = |step: &Step, job_id: &str, running: &BTreeSet<String>, f: Failure| {
        fail_step(
            inner, handle, &plan, earlier, input, step, job_id, running, f,
        )
    };
    // It failed before the restart; only the build's end was not logged.
    if let Some(sf) = &earlier.failed {
        let f = replayed(sf);
        return Err(match plan.step(&sf.step_id) {
            Some(step) => fail(step, &sf.job_id, &BTreeSet::new(), f),
            None => f,
        });
    }
    for (step_id, attempt) in &earlier.interrupted {
        handle.emit(Event::StepQueued(build::StepQueued {
            step_id: step_id.clone(),
            attempt: *attempt,
            reason: "the scheduler restarted; the step runs again".into(),
            cache_key: plan
                .step(step_id)
                .map(|s| s.cache_key.clone())
                .unwrap_or_default(),
        }));
    }

    let mut chains = Chains {
        plan: &plan,
        steps: BTreeMap::new(),
        images: bases
            .iter()
            .map(|(k, v)| (k.clone(), v.layers.clone()))
            .collect(),
    };
    let mut workers: BTreeMap<String, (bool, String)> = BTreeMap::new();
    // When each step's layer was first built; empty with SOURCE_DATE_EPOCH
    // (every time is the epoch then).
    let mut layer_times: BTreeMap<String, String> = BTreeMap::new();
    let pin_times = input.source_date_epoch.is_none();
    let mut pending: Vec<&Step> = plan.steps.iter().collect();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut running = FuturesUnordered::new();
    let mut running_jobs: BTreeSet<String> = BTreeSet::new();
    // Layers made and not yet uploaded, and the steps started on them.
    let mut riding = Riding::new(earlier.runs.clone());
    let (early_tx, mut early_rx) = tokio::sync::mpsc::unbounded_channel::<Early>();
    let full_context = Some(common::ContextRef {
        manifest: Some(common::context_ref::Manifest::Inline(manifest_proto(
            &input.manifest,
        ))),
    });
    loop {
        let mut i = 0;
        while i < pending.len() {
            let step = pending[i];
            let ride = if step.depends_on.iter().all(|d| done.contains(d)) {
                None
            } else if let Some(on) = riding.placement(step, &done) {
                Some(on)
            } else {
                i += 1;
                continue;
            };
            pending.remove(i);
            let job_id = riding.job_id(&handle.id, &step.id);
            let a = match job_assignment(&chains, step, input, &job_id, &handle.id, &full_context) {
                Ok(a) => a,
                Err(e) => {
                    let f = Failure::new(build::ErrorCode::InvalidRequest, e);
                    return Err(fail(step, &job_id, &running_jobs, f));
                }
            };
            running_jobs.insert(job_id.clone());
            let ns = input.namespace.as_str();
            let ended = earlier.ended(&step.id).cloned();
            let span = tracing::info_span!(
                "step",
                build_id = %handle.id,
                step_id = %step.id,
                instruction = %step.instruction,
                cache_key = %step.cache_key,
                worker_id = tracing::field::Empty,
                cached = tracing::field::Empty
            );
            let link = Link {
                early: early_tx.clone(),
                ride: ride
                    .as_ref()
                    .map(|(worker, parents)| (worker.clone(), riding.gate(parents.clone()))),
            };
            let (run, abort) = futures::future::abortable(tracing::Instrument::instrument(
                {
                    let job_id = job_id.clone();
                    async move {
                        let r = match ended {
                            // Ended before a scheduler restart: that end.
                            Some(e) => reuse(inner, handle, ns, step, e).await,
                            None => satisfy(inner, handle, step, a, ns, link).await,
                        };
                        (step, job_id, r)
                    }
                },
                span,
            ));
            if let Some((_, parents)) = ride {
                riding.started(&step.id, &job_id, parents, abort);
            }
            running.push(run);
        }
        // Workers put off a big layer's blob and upload while their steps
        // keep the CPUs busy; not one a step or the build's end waits for.
        let hurry = riding.waited_for(&pending, &running_jobs);
        if !hurry.is_empty() {
            riding.hurried(&inner.pool.hurry(&hurry));
        }
        let next = tokio::select! {
            // Early layers first: reported before the results after them.
            biased;
            Some(e) = early_rx.recv() => {
                match e {
                    Early::Committed { step_id, job_id, worker_id, layer } => {
                        if let Some(stopped) = riding.committed(&step_id, &job_id, &worker_id, layer.clone()) {
                            chains.steps.insert(step_id.clone(), layer);
                            requeue_riders(inner, handle, &plan, stopped, &mut pending, &mut running_jobs, &mut chains, &step_id);
                        }
                    }
                    Early::Waiting { job_id } => riding.waits(&job_id),
                    Early::Revoked { step_id, job_id } => {
                        if let Some(stopped) = riding.revoke(&step_id, &job_id) {
                            chains.steps.remove(&step_id);
                            requeue_riders(inner, handle, &plan, stopped, &mut pending, &mut running_jobs, &mut chains, &step_id);
                        }
                    }
                }
                continue;
            }
            n = running.next() => n,
            () = handle.cancel.cancelled() => {
                stop_the_rest(inner, handle, &plan, earlier, &running_jobs, "build cancelled");
                return Err(Failure::new(build::ErrorCode::Cancelled, "build cancelled"));
            }
        };
        let Some(next) = next else {
            if pending.is_empty() {
                break;
            }
            return Err(Failure::new(
                build::ErrorCode::Internal,
                format!(
                    "steps {} wait for each other",
                    pending
                        .iter()
                        .map(|s| s.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        // A rider stopped because a step it rode on runs again: it is
        // queued again already.
        let Ok((step, job_id, result)) = next else {
            continue;
        };
        running_jobs.remove(&job_id);
        let layer = match result {
            Ok(Satisfied::Cached(hit)) => {
                let Hit { entry, .. } = hit;
                if let Some(e) = earlier.ended(&step.id) {
                    // Ended before the scheduler restarted: as it ended
                    // then, with no second event.
                    outcome(
                        handle,
                        step,
                        e.status,
                        Some(&entry.layer),
                        &e.worker_id,
                        e.took,
                        e.attempts,
                    );
                    let cached = e.status == build::StepStatus::Cached;
                    workers.insert(step.id.clone(), (cached, e.worker_id.clone()));
                } else {
                    inner.metrics.steps.with_label_values(&["cached"]).inc();
                    handle.emit(Event::StepCached(build::StepCached {
                        step_id: step.id.clone(),
                        cache_key: step.cache_key.clone(),
                        layer: Some(layer_proto(&entry.layer)),
                        source_build_id: entry.build_id.clone(),
                        source_worker_id: entry.worker_id.clone(),
                    }));
                    outcome(
                        handle,
                        step,
                        build::StepStatus::Cached,
                        Some(&entry.layer),
                        &entry.worker_id,
                        Duration::ZERO,
                        0,
                    );
                    workers.insert(step.id.clone(), (true, entry.worker_id.clone()));
                }
                if pin_times {
                    layer_times.insert(step.id.clone(), entry.created.clone());
                }
                entry.layer
            }
            Ok(Satisfied::Built(run, entry)) => {
                inner.metrics.steps.with_label_values(&["executed"]).inc();
                // Only now, with the step recorded, is it done.
                handle.emit(Event::StepDone(build::StepDone {
                    step_id: step.id.clone(),
                    worker_id: run.worker_id.clone(),
                    job_id: job_id.clone(),
                    attempt: run.attempts,
                    duration: Some(duration(run.duration)),
                    layer: Some(layer_proto(&run.layer)),
                    cache_key: step.cache_key.clone(),
                    stats: run.stats.map(|s| *s),
                    resolved_base_digest: String::new(),
                }));
                inner
                    .metrics
                    .step_duration
                    .observe(run.duration.as_secs_f64());
                outcome(
                    handle,
                    step,
                    build::StepStatus::Executed,
                    Some(&run.layer),
                    &run.worker_id,
                    run.duration,
                    run.attempts,
                );
                if pin_times {
                    layer_times.insert(step.id.clone(), entry.created);
                }
                workers.insert(step.id.clone(), (false, run.worker_id));
                run.layer
            }
            Err(f) => {
                inner.metrics.steps.with_label_values(&["failed"]).inc();
                return Err(fail(step, &job_id, &running_jobs, f));
            }
        };
        // Steps that rode on this one are riders no more; if its layer is
        // not the one it reported early, they start again.
        let (released, stopped) = riding.done(&step.id, &layer);
        chains.steps.insert(step.id.clone(), layer);
        done.insert(step.id.clone());
        for job in released {
            inner.pool.release(&job);
        }
        requeue_riders(
            inner,
            handle,
            &plan,
            stopped,
            &mut pending,
            &mut running_jobs,
            &mut chains,
            &step.id,
        );
    }
    drop(running);
    in_plan_order(handle, &plan);

    let created = match input.source_date_epoch {
        Some(t) => rfc3339(t, 0),
        None => now_rfc3339(),
    };
    let base_images: BTreeMap<String, BaseImage> = bases
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                BaseImage {
                    config: v.config.clone(),
                    layers: v.layers.clone(),
                },
            )
        })
        .collect();
    let image = assemble(
        &plan,
        plan.target,
        &chains.steps,
        &base_images,
        &created,
        &layer_times,
    )
    .map_err(|e| Failure::new(build::ErrorCode::Internal, e.to_string()))?;
    let target_chain = chains
        .stage(plan.target)
        .map_err(|e| Failure::new(build::ErrorCode::Internal, e))?;
    let rec = inner
        .images
        .record(
            &inner.blobs,
            &image,
            &input.tags,
            &handle.id,
            inner.config.auth.owner(&input.namespace),
        )
        .await
        .map_err(|e| Failure::new(build::ErrorCode::OutputFailed, e.to_string()))?;
    let layers = target_chain
        .iter()
        .map(|(step, l)| {
            let (cached, worker) = step
                .as_ref()
                .and_then(|s| workers.get(s))
                .cloned()
                .unwrap_or((true, String::new()));
            build::ImageLayer {
                layer: Some(layer_proto(l)),
                step_id: step.clone().unwrap_or_default(),
                cached,
                worker_id: worker,
            }
        })
        .collect();
    Ok(build::BuildResult {
        manifest_digest: rec.manifest_digest.clone(),
        config_digest: rec.config_digest.clone(),
        images: vec![build::PlatformImage {
            platform: Some(common::Platform {
                os: input.options.platform.os.clone(),
                architecture: input.options.platform.architecture.clone(),
                variant: input.options.platform.variant.clone(),
                ..Default::default()
            }),
            manifest_digest: rec.manifest_digest,
            config_digest: rec.config_digest,
            size: rec.size,
            layers,
        }],
        outputs: Vec::new(),
        steps: handle.info().step_outcomes,
        tags: input.tags.clone(),
        total_duration: Some(duration(started.elapsed())),
    })
}
