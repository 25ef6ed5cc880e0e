//! Running one build: resolve base images, plan, then run every step whose
//! dependencies are done — from the cache when its key is known, otherwise
//! as a job on the worker pool — and assemble the target stage's image.
//! Independent stages have no dependency on each other, so their jobs are
//! in the pool's queue at the same time and run on different workers.

use super::handle::BuildHandle;
use super::resolve::{Resolved, resolve};
use crate::Inner;
use crate::assign::{AssignInputs, assignment};
use crate::cache::CacheEntry;
use crate::image::{BaseImage, LayerInfo, assemble, rfc3339};
use crate::pool::JobEvent;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use strata_frontend::context::ContextManifest;
use strata_frontend::instructions::MountType;
use strata_frontend::plan::{
    Action, BaseImage as PlanBase, BaseRef, BuildPlan, CopyFrom, ImageRef, ImageResolver, Offline,
    PlanOptions, Platform, Step, context_subset, plan_dockerfile,
};
use strata_proto::build::v1 as build;
use strata_proto::common::v1 as common;
use strata_proto::worker::v1 as wire;

use build::build_event::Event;

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
}

/// Base images known to the planner, by normalised reference.
struct Known(BTreeMap<String, PlanBase>);

impl ImageResolver for Known {
    fn resolve(&self, reference: &ImageRef, _: &Platform) -> Result<Option<PlanBase>, String> {
        Ok(self.0.get(&reference.to_string()).cloned())
    }
}

/// Every image a plan reads: stage bases, `COPY --from=image`, mounts.
pub(crate) fn images_of(plan: &BuildPlan) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |r: &str| {
        if !out.iter().any(|x| x == r) {
            out.push(r.to_string());
        }
    };
    for s in &plan.stages {
        if let BaseRef::Image { reference, .. } = &s.base_ref {
            add(reference);
        }
    }
    for step in &plan.steps {
        match &step.action {
            Action::Copy {
                from: CopyFrom::Image { reference },
                ..
            } => add(reference),
            Action::Run { mounts, .. } => {
                for m in mounts {
                    if let Some(CopyFrom::Image { reference }) = &m.source {
                        add(reference);
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Layer chains of what a build has produced so far.
struct Chains<'a> {
    plan: &'a BuildPlan,
    steps: BTreeMap<String, LayerInfo>,
    images: BTreeMap<String, Vec<LayerInfo>>,
}

impl Chains<'_> {
    /// Layers of a stage's final filesystem, with the step that made each
    /// (`None` for base-image layers).
    fn stage(&self, stage: usize) -> Result<Vec<(Option<String>, LayerInfo)>, String> {
        let s = self
            .plan
            .stages
            .iter()
            .find(|s| s.index == stage)
            .ok_or_else(|| format!("stage {stage} is not planned"))?;
        self.from(stage, s.last_step.as_deref())
    }

    /// The chain a step starts from: its parent step's chain including the
    /// parent, or the stage base's.
    fn from(
        &self,
        stage: usize,
        parent: Option<&str>,
    ) -> Result<Vec<(Option<String>, LayerInfo)>, String> {
        let Some(parent) = parent else {
            let s = self
                .plan
                .stages
                .iter()
                .find(|s| s.index == stage)
                .ok_or_else(|| format!("stage {stage} is not planned"))?;
            return match &s.base_ref {
                BaseRef::Scratch => Ok(Vec::new()),
                BaseRef::Stage { index } => self.stage(*index),
                BaseRef::Image { reference, .. } => self
                    .images
                    .get(reference)
                    .map(|l| l.iter().map(|l| (None, l.clone())).collect())
                    .ok_or_else(|| format!("base image {reference} was not resolved")),
            };
        };
        let step = self
            .plan
            .step(parent)
            .ok_or_else(|| format!("step {parent} is not planned"))?;
        let mut chain = self.from(step.stage, step.parent.as_deref())?;
        let layer = self
            .steps
            .get(parent)
            .cloned()
            .ok_or_else(|| format!("step {parent} has not run"))?;
        chain.push((Some(parent.to_string()), layer));
        Ok(chain)
    }

    fn layers(chain: Vec<(Option<String>, LayerInfo)>) -> Vec<LayerInfo> {
        chain.into_iter().map(|(_, l)| l).collect()
    }
}

fn now_rfc3339() -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now.as_secs() as i64, now.subsec_nanos())
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap_or_default()
}

fn location(input: &BuildInput, line: usize) -> common::SourceLocation {
    common::SourceLocation {
        file: input.dockerfile_name.clone(),
        start_line: line as u32,
        end_line: line as u32,
    }
}

fn layer_proto(l: &LayerInfo) -> common::Layer {
    common::Layer {
        diff_id: l.diff_id.clone(),
        blob: Some(common::Descriptor {
            media_type: l.media_type.clone(),
            digest: l.digest.clone(),
            size: l.size,
            ..Default::default()
        }),
        uncompressed_size: 0,
    }
}

fn kind_of(step: &Step) -> common::StepKind {
    use strata_frontend::plan::StepKind as K;
    match step.kind {
        K::Run => common::StepKind::Run,
        K::Copy => common::StepKind::Copy,
        K::Add => common::StepKind::Add,
        K::Workdir => common::StepKind::Workdir,
    }
}

fn stage_name(plan: &BuildPlan, stage: usize) -> String {
    plan.stages
        .iter()
        .find(|s| s.index == stage)
        .and_then(|s| s.name.clone())
        .unwrap_or_default()
}

/// The wire form of a plan, for `BuildStarted` and `strata logs`.
fn plan_proto(plan: &BuildPlan, input: &BuildInput) -> build::BuildPlan {
    let mut steps = Vec::new();
    let mut stages = Vec::new();
    for s in &plan.stages {
        let ids: Vec<&Step> = plan.steps.iter().filter(|st| st.stage == s.index).collect();
        for (i, st) in ids.iter().enumerate() {
            steps.push(build::StepPlan {
                step_id: st.id.clone(),
                stage_index: s.index as u32,
                stage_name: stage_name(plan, s.index),
                index_in_stage: i as u32,
                stage_step_count: ids.len() as u32,
                kind: kind_of(st) as i32,
                instruction: st.instruction.clone(),
                display_name: st.instruction.clone(),
                location: Some(location(input, st.line)),
                depends_on: st.depends_on.clone(),
                platform: None,
                metadata_only: false,
                cache_disabled: st.no_cache,
            });
        }
        stages.push(build::StagePlan {
            index: s.index as u32,
            name: s.name.clone().unwrap_or_default(),
            base: s.base.clone(),
            platform: None,
            location: Some(location(input, s.line)),
            is_target: s.index == plan.target,
            step_ids: ids.iter().map(|s| s.id.clone()).collect(),
        });
    }
    build::BuildPlan {
        dockerfile_path: input.dockerfile_name.clone(),
        target: stage_name(plan, plan.target),
        stages,
        steps,
        platforms: Vec::new(),
    }
}

/// Which context paths a step reads (None: none).
fn context_sources(step: &Step) -> Option<Vec<String>> {
    match &step.action {
        Action::Copy {
            from: CopyFrom::Context,
            sources,
            ..
        } => Some(
            sources
                .iter()
                .filter(|s| !s.url)
                .map(|s| s.path.clone())
                .collect(),
        ),
        Action::Run { mounts, .. } => {
            let v: Vec<String> = mounts
                .iter()
                .filter(|m| m.spec.kind == MountType::Bind && m.source.is_none())
                .map(|m| m.spec.source.clone())
                .collect();
            (!v.is_empty()).then_some(v)
        }
        _ => None,
    }
}

fn manifest_proto(m: &ContextManifest) -> common::ContextManifest {
    use strata_frontend::context::EntryKind as K;
    common::ContextManifest {
        entries: m
            .entries
            .iter()
            .map(|e| common::ContextEntry {
                path: e.path.clone(),
                kind: match e.kind {
                    K::File => common::EntryKind::File,
                    K::Dir => common::EntryKind::Directory,
                    K::Symlink => common::EntryKind::Symlink,
                } as i32,
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                size: e.size,
                digest: e.digest.clone().unwrap_or_default(),
                link_target: e.link_target.clone().unwrap_or_default(),
                mtime: e.mtime.map(|(seconds, nanos)| prost_types::Timestamp {
                    seconds,
                    nanos: nanos as i32,
                }),
                xattrs: Default::default(),
                hardlink: e.hardlink.clone().unwrap_or_default(),
            })
            .collect(),
        dockerignore_digest: String::new(),
    }
}

/// A failed build: its error and final status.
struct Failure {
    status: build::BuildStatus,
    error: Box<build::BuildError>,
}

impl Failure {
    fn new(code: build::ErrorCode, message: impl Into<String>) -> Self {
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
        }
    }
}

/// What one step's job ended with.
struct StepRun {
    layer: LayerInfo,
    worker_id: String,
    duration: Duration,
    attempts: u32,
}

const LOG_TAIL: usize = 4096;

/// Follows one job's events into the build's log.
async fn drive_job(
    handle: &BuildHandle,
    step: &Step,
    job_id: String,
    mut events: tokio::sync::mpsc::UnboundedReceiver<JobEvent>,
    inner: &Inner,
) -> Result<StepRun, Failure> {
    let started = Instant::now();
    let mut tail: Vec<u8> = Vec::new();
    let mut attempt = 1;
    while let Some(ev) = events.recv().await {
        match ev {
            JobEvent::Started {
                worker_id,
                attempt: a,
            } => {
                attempt = a;
                handle.emit(Event::StepStarted(build::StepStarted {
                    step_id: step.id.clone(),
                    worker_id,
                    job_id: job_id.clone(),
                    attempt,
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
                    attempt,
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
            JobEvent::Requeued { reason, attempt: a } => {
                handle.emit(Event::StepQueued(build::StepQueued {
                    step_id: step.id.clone(),
                    attempt: a,
                    reason,
                    cache_key: step.cache_key.clone(),
                }));
            }
            JobEvent::Done { result, worker_id } => {
                let l = result.layer.unwrap_or_default();
                let blob = l.blob.unwrap_or_default();
                let layer = LayerInfo {
                    diff_id: l.diff_id,
                    digest: blob.digest,
                    media_type: blob.media_type,
                    size: blob.size,
                };
                if !inner.blobs.has(&layer.digest) {
                    return Err(Failure::new(
                        build::ErrorCode::WorkerLost,
                        format!(
                            "{}: worker {worker_id} reported layer {} but it is not in the store",
                            step.instruction, layer.digest
                        ),
                    ));
                }
                let took = started.elapsed();
                handle.emit(Event::StepDone(build::StepDone {
                    step_id: step.id.clone(),
                    worker_id: worker_id.clone(),
                    job_id: job_id.clone(),
                    attempt,
                    duration: Some(duration(took)),
                    layer: Some(layer_proto(&layer)),
                    cache_key: step.cache_key.clone(),
                    stats: result.stats,
                    resolved_base_digest: String::new(),
                }));
                return Ok(StepRun {
                    layer,
                    worker_id,
                    duration: took,
                    attempts: attempt,
                });
            }
            JobEvent::Failed { failure, worker_id } => {
                if !failure.log_tail.is_empty() && tail.is_empty() {
                    tail = failure.log_tail.clone();
                }
                handle.emit(Event::StepFailed(build::StepFailed {
                    step_id: step.id.clone(),
                    worker_id: worker_id.clone(),
                    job_id: job_id.clone(),
                    attempt,
                    exit_code: failure.exit_code,
                    signal: failure.signal,
                    message: failure.message.clone(),
                    log_tail: tail.clone(),
                    will_retry: false,
                    duration: Some(duration(started.elapsed())),
                }));
                let code = match wire::FailureKind::try_from(failure.kind) {
                    Ok(wire::FailureKind::Timeout) => build::ErrorCode::StepTimeout,
                    Ok(wire::FailureKind::Cancelled) => build::ErrorCode::Cancelled,
                    _ => build::ErrorCode::StepFailed,
                };
                let mut f = Failure::new(code, failure.message);
                f.error.exit_code = failure.exit_code;
                f.error.signal = failure.signal;
                f.error.log_tail = tail;
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

/// Runs a build to its end; every outcome ends the event log with
/// `BuildFinished` or `BuildFailed`.
pub async fn run_build(inner: Arc<Inner>, handle: Arc<BuildHandle>, input: BuildInput) {
    let started = Instant::now();
    handle.update(|i| {
        i.status = build::BuildStatus::Running as i32;
        i.started_at = Some(SystemTime::now().into());
    });
    let outcome = execute(&inner, &handle, &input).await;
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
    if let Err(e) = handle.persist(&inner.config.state_dir.join("builds")) {
        tracing::warn!(build_id = %handle.id, "cannot persist the build log: {e}");
    }
}

fn finish(handle: &BuildHandle, total: prost_types::Duration) {
    handle.update(|i| {
        i.finished_at = Some(SystemTime::now().into());
        i.duration = Some(total);
    });
}

fn outcome(
    handle: &BuildHandle,
    step: &Step,
    status: build::StepStatus,
    layer: Option<&LayerInfo>,
    worker_id: &str,
    took: Duration,
    attempts: u32,
) {
    handle.update(|i| {
        i.step_outcomes.push(build::StepOutcome {
            step_id: step.id.clone(),
            status: status as i32,
            worker_id: worker_id.to_string(),
            duration: Some(duration(took)),
            layer: layer.map(layer_proto),
            cache_key: step.cache_key.clone(),
            attempts,
        });
        let counts = i.steps.get_or_insert_with(Default::default);
        match status {
            build::StepStatus::Cached => counts.cached += 1,
            build::StepStatus::Executed => counts.executed += 1,
            build::StepStatus::Failed => counts.failed += 1,
            _ => {}
        }
    });
}

async fn execute(
    inner: &Arc<Inner>,
    handle: &BuildHandle,
    input: &BuildInput,
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
    for reference in images_of(&offline) {
        let r = tokio::select! {
            r = resolve(inner, &reference, &input.options.platform, input.pull) => r,
            () = handle.cancel.cancelled() => return Err(Failure::new(build::ErrorCode::Cancelled, "cancelled")),
        };
        let r = r.map_err(|e| {
            Failure::new(
                build::ErrorCode::BaseImage,
                format!("failed to resolve {reference}: {e}"),
            )
        })?;
        bases.insert(reference, r);
    }
    let plan = plan_with(&Known(
        bases
            .iter()
            .map(|(k, v)| (k.clone(), v.plan.clone()))
            .collect(),
    ))?;
    for w in &plan.warnings {
        handle.emit(Event::Warning(build::BuildWarning {
            message: w.message.clone(),
            location: (w.line > 0).then(|| location(input, w.line)),
            ..Default::default()
        }));
    }
    let plan_wire = plan_proto(&plan, input);
    handle.update(|i| {
        i.plan = Some(plan_wire.clone());
        i.steps = Some(build::StepCounts {
            total: plan.steps.len() as u32,
            ..Default::default()
        });
    });
    handle.emit(Event::BuildStarted(build::BuildStarted {
        plan: Some(plan_wire),
        namespace: String::new(),
        tags: input.tags.clone(),
        outputs: Vec::new(),
    }));

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
    let full_context = Some(common::ContextRef {
        manifest: Some(common::context_ref::Manifest::Inline(manifest_proto(
            &input.manifest,
        ))),
    });
    loop {
        let mut i = 0;
        while i < pending.len() {
            let step = pending[i];
            if !step.depends_on.iter().all(|d| done.contains(d)) {
                i += 1;
                continue;
            }
            pending.remove(i);
            let hit = inner
                .cache
                .get(&step.cache_key)
                .filter(|e| !step.no_cache && inner.blobs.has(&e.layer.digest));
            if let Some(hit) = hit {
                handle.emit(Event::StepCached(build::StepCached {
                    step_id: step.id.clone(),
                    cache_key: step.cache_key.clone(),
                    layer: Some(layer_proto(&hit.layer)),
                    source_build_id: hit.build_id.clone(),
                    source_worker_id: hit.worker_id.clone(),
                }));
                outcome(
                    handle,
                    step,
                    build::StepStatus::Cached,
                    Some(&hit.layer),
                    &hit.worker_id,
                    Duration::ZERO,
                    0,
                );
                workers.insert(step.id.clone(), (true, hit.worker_id.clone()));
                if pin_times {
                    layer_times.insert(step.id.clone(), hit.created.clone());
                }
                chains.steps.insert(step.id.clone(), hit.layer);
                done.insert(step.id.clone());
                i = 0;
                continue;
            }
            let job_id = format!("{}-{}", handle.id, step.id);
            let a = job_assignment(&chains, step, input, &job_id, &handle.id, &full_context)
                .map_err(|e| {
                    let mut f = Failure::new(build::ErrorCode::InvalidRequest, e);
                    f.error.step_id = step.id.clone();
                    f
                })?;
            handle.emit(Event::StepQueued(build::StepQueued {
                step_id: step.id.clone(),
                attempt: 1,
                reason: String::new(),
                cache_key: step.cache_key.clone(),
            }));
            let events = inner.pool.submit(a);
            running_jobs.insert(job_id.clone());
            running.push(async move {
                let r = drive_job(handle, step, job_id.clone(), events, inner).await;
                (step, job_id, r)
            });
        }
        let next = tokio::select! {
            n = running.next() => n,
            () = handle.cancel.cancelled() => {
                for job in &running_jobs {
                    inner.pool.cancel(job, "build cancelled");
                }
                for step in pending.iter() {
                    handle.emit(Event::StepCancelled(build::StepCancelled { step_id: step.id.clone(), reason: "build cancelled".into() }));
                }
                return Err(Failure::new(build::ErrorCode::Cancelled, "build cancelled"));
            }
        };
        let Some((step, job_id, result)) = next else {
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
        running_jobs.remove(&job_id);
        match result {
            Ok(run) => {
                outcome(
                    handle,
                    step,
                    build::StepStatus::Executed,
                    Some(&run.layer),
                    &run.worker_id,
                    run.duration,
                    run.attempts,
                );
                let built = now_rfc3339();
                if pin_times {
                    layer_times.insert(step.id.clone(), built.clone());
                }
                let entry = CacheEntry {
                    layer: run.layer.clone(),
                    build_id: handle.id.clone(),
                    worker_id: run.worker_id.clone(),
                    created: built,
                };
                if let Err(e) = inner.cache.insert(&step.cache_key, entry) {
                    tracing::warn!("cannot record {} in the cache index: {e}", step.id);
                }
                workers.insert(step.id.clone(), (false, run.worker_id));
                chains.steps.insert(step.id.clone(), run.layer);
                done.insert(step.id.clone());
            }
            Err(mut f) => {
                // As BuildKit: one failed step stops the build; the others
                // are cancelled.
                for job in &running_jobs {
                    inner.pool.cancel(job, "another step failed");
                }
                outcome(
                    handle,
                    step,
                    build::StepStatus::Failed,
                    None,
                    "",
                    Duration::ZERO,
                    1,
                );
                f.error.step_id = step.id.clone();
                f.error.stage_name = stage_name(&plan, step.stage);
                f.error.instruction = step.instruction.clone();
                f.error.location = Some(location(input, step.line));
                if f.error.code == build::ErrorCode::StepFailed as i32 {
                    let code = match (f.error.exit_code, f.error.signal) {
                        (Some(c), _) => format!("exit code: {c}"),
                        (None, Some(s)) => format!("signal: {s}"),
                        _ => f.error.message.clone(),
                    };
                    f.error.message = format!(
                        "{}:{}: {}: did not complete successfully: {code}",
                        input.dockerfile_name, step.line, step.instruction
                    );
                }
                return Err(f);
            }
        }
    }
    drop(running);

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
        .record(&inner.blobs, &image, &input.tags, &handle.id)
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

/// The wire job for `step`, given the layers built so far.
fn job_assignment(
    chains: &Chains<'_>,
    step: &Step,
    input: &BuildInput,
    job_id: &str,
    build_id: &str,
    full_context: &Option<common::ContextRef>,
) -> Result<wire::JobAssignment, String> {
    let parent = Chains::layers(chains.from(step.stage, step.parent.as_deref())?);
    let mut stages = BTreeMap::new();
    for &s in &step.reads_stages {
        stages.insert(s, Chains::layers(chains.stage(s)?));
    }
    let context = match context_sources(step) {
        None => None,
        Some(sources) if sources.iter().any(|s| s.is_empty() || s == "." || s == "/") => {
            full_context.clone()
        }
        Some(sources) => Some(common::ContextRef {
            manifest: Some(common::context_ref::Manifest::Inline(manifest_proto(
                &context_subset(&input.manifest, &sources),
            ))),
        }),
    };
    let inputs = AssignInputs {
        parent: &parent,
        stages,
        images: chains.images.clone(),
        context,
        secrets: input.secrets.clone(),
        network: &input.network,
        source_date_epoch: input.source_date_epoch,
        compression: common::Compression::Zstd,
    };
    let mut a = assignment(job_id, build_id, step, &inputs)
        .map_err(|e| format!("{}: {e}", step.instruction))?;
    a.location = Some(location(input, step.line));
    Ok(a)
}
