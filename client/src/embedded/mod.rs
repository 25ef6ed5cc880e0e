//! Embedded mode: the scheduler's planning and image assembly and a worker,
//! in this process, on a local store. `strata build` uses it when no
//! scheduler address is given.

mod context;

use anyhow::{Context as _, Result, anyhow, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use strata_frontend::context::ContextManifest;
use strata_frontend::plan::{
    BaseImage as PlanBase, BaseRef, BuildPlan, ImageRef, ImageResolver, Offline, PlanOptions,
    Platform, plan_dockerfile,
};
use strata_scheduler::assign::{AssignInputs, assignment};
use strata_scheduler::image::{BaseImage, Image, LayerInfo, assemble, rfc3339};
use strata_worker::assignment::job_from_assignment;
use strata_worker::executor::OutputChunk;
use strata_worker::job::{Worker, WorkerConfig};
use strata_worker::store::LayerRef;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Progress of an embedded build, in the order it happens.
#[derive(Debug, Clone)]
pub enum Event {
    /// The plan is ready.
    Planned {
        /// Steps in the plan.
        steps: usize,
    },
    /// A step started.
    StepStarted {
        /// Step id.
        id: String,
        /// Its instruction.
        instruction: String,
    },
    /// Output of a running step.
    Log {
        /// Step id.
        id: String,
        /// The bytes.
        data: Vec<u8>,
    },
    /// A step finished.
    StepDone {
        /// Step id.
        id: String,
        /// How long it took.
        duration: Duration,
        /// Its layer's blob size.
        size: u64,
    },
}

/// One embedded build.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    /// The Dockerfile.
    pub dockerfile: Vec<u8>,
    /// Its name in error messages.
    pub dockerfile_name: String,
    /// The context directory.
    pub context: PathBuf,
    /// Build args, target, platform...
    pub options: PlanOptions,
    /// Secret values by id.
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// SOURCE_DATE_EPOCH for layer times and `created`.
    pub source_date_epoch: Option<i64>,
}

/// What an embedded build produced.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// The plan that was run.
    pub plan: BuildPlan,
    /// The image of the target stage.
    pub image: Image,
    /// Layer of every step, by step id.
    pub layers: BTreeMap<String, LayerInfo>,
}

/// The in-process builder.
pub struct Embedded {
    worker: Worker,
    state: PathBuf,
}

struct Known(BTreeMap<String, PlanBase>);

impl ImageResolver for Known {
    fn resolve(&self, reference: &ImageRef, _: &Platform) -> Result<Option<PlanBase>, String> {
        Ok(self.0.get(&reference.to_string()).cloned())
    }
}

fn info(l: &LayerRef) -> LayerInfo {
    LayerInfo {
        diff_id: l.diff_id.clone(),
        digest: l.digest.clone(),
        media_type: l.media_type.clone(),
        size: l.size,
    }
}

impl Embedded {
    /// Opens (creating) the state directory.
    pub async fn open(state: &Path) -> Result<Self> {
        let worker = Worker::open(WorkerConfig {
            state_dir: state.join("worker"),
            force_copy_snapshotter: false,
        })
        .await
        .map_err(|e| anyhow!("starting the embedded worker: {e}"))?;
        Ok(Self {
            worker,
            state: state.to_path_buf(),
        })
    }

    /// The worker (and its store).
    pub fn worker(&self) -> &Worker {
        &self.worker
    }

    /// Runs a build to the image of its target stage.
    pub async fn build(
        &self,
        spec: &BuildSpec,
        events: &mpsc::Sender<Event>,
    ) -> Result<BuildOutput> {
        let manifest = ContextManifest::walk(&spec.context)
            .with_context(|| format!("reading build context {}", spec.context.display()))?;
        let plan_with = |resolver: &dyn ImageResolver| {
            plan_dockerfile(&spec.dockerfile, Some(&manifest), &spec.options, resolver)
                .map_err(|e| anyhow!(e.with_file(&spec.dockerfile_name)))
        };
        let offline = plan_with(&Offline)?;
        let images: Vec<String> = offline
            .stages
            .iter()
            .filter_map(|s| match &s.base_ref {
                BaseRef::Image { reference, .. } => Some(reference.clone()),
                _ => None,
            })
            .collect();
        if let Some(r) = images.first() {
            bail!(
                "FROM {r}: pulling base images in embedded mode is not implemented yet (use FROM scratch or a stage)"
            );
        }
        let plan = plan_with(&Known(BTreeMap::new()))?;
        let _ = events
            .send(Event::Planned {
                steps: plan.steps.len(),
            })
            .await;

        let ctx_dir = self
            .state
            .join("contexts")
            .join(format!("{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&ctx_dir);
        let (src, m, dst) = (spec.context.clone(), manifest.clone(), ctx_dir.clone());
        tokio::task::spawn_blocking(move || context::materialize(&src, &m, &dst))
            .await?
            .context("materialising the build context")?;

        let mut layers: BTreeMap<String, LayerInfo> = BTreeMap::new();
        let build_id = format!("b{}", std::process::id());
        for step in &plan.steps {
            let parent = chain_before(&plan, step.stage, step.parent.as_deref(), &layers)?;
            let mut stages = BTreeMap::new();
            for &s in &step.reads_stages {
                stages.insert(s, stage_layers(&plan, s, &layers)?);
            }
            let inputs = AssignInputs {
                parent: &parent,
                stages,
                images: BTreeMap::new(),
                context: Some(Default::default()),
                secrets: spec.secrets.clone(),
                network: "default",
                source_date_epoch: spec.source_date_epoch,
                compression: strata_proto::common::v1::Compression::Zstd,
            };
            let job_id = format!("{build_id}-{}", step.id);
            let a = assignment(&job_id, &build_id, step, &inputs)
                .map_err(|e| anyhow!("{}: {e}", step.instruction))?;
            let job = job_from_assignment(&a, Some(&ctx_dir))
                .map_err(|e| anyhow!("{}: {e}", step.instruction))?;
            let _ = events
                .send(Event::StepStarted {
                    id: step.id.clone(),
                    instruction: step.instruction.clone(),
                })
                .await;
            let (tx, mut rx) = mpsc::channel::<OutputChunk>(64);
            let (ev, id) = (events.clone(), step.id.clone());
            let forward = tokio::spawn(async move {
                while let Some(c) = rx.recv().await {
                    let _ = ev
                        .send(Event::Log {
                            id: id.clone(),
                            data: c.data,
                        })
                        .await;
                }
            });
            let started = Instant::now();
            let outcome = self.worker.run_job(job, tx, CancellationToken::new()).await;
            let _ = forward.await;
            let outcome = outcome.map_err(|e| {
                anyhow!(
                    "{}:{}: {}: {e}",
                    spec.dockerfile_name,
                    step.line,
                    step.instruction
                )
            })?;
            let _ = events
                .send(Event::StepDone {
                    id: step.id.clone(),
                    duration: started.elapsed(),
                    size: outcome.layer.size,
                })
                .await;
            layers.insert(step.id.clone(), info(&outcome.layer));
        }
        let _ = std::fs::remove_dir_all(&ctx_dir);
        let created = match spec.source_date_epoch {
            Some(t) => rfc3339(t, 0),
            None => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                rfc3339(now.as_secs() as i64, now.subsec_nanos())
            }
        };
        let bases: BTreeMap<String, BaseImage> = BTreeMap::new();
        let image = assemble(&plan, plan.target, &layers, &bases, &created)?;
        Ok(BuildOutput {
            plan,
            image,
            layers,
        })
    }
}

/// Layers of a stage's final filesystem.
fn stage_layers(
    plan: &BuildPlan,
    stage: usize,
    layers: &BTreeMap<String, LayerInfo>,
) -> Result<Vec<LayerInfo>> {
    let s = plan
        .stages
        .iter()
        .find(|s| s.index == stage)
        .ok_or_else(|| anyhow!("stage {stage} is not planned"))?;
    chain_before(plan, stage, s.last_step.as_deref(), layers)
}

/// The layer chain of the filesystem a step starts from: its parent
/// step's chain including the parent, or the stage base's.
fn chain_before(
    plan: &BuildPlan,
    stage: usize,
    parent: Option<&str>,
    layers: &BTreeMap<String, LayerInfo>,
) -> Result<Vec<LayerInfo>> {
    let Some(parent) = parent else {
        let s = plan
            .stages
            .iter()
            .find(|s| s.index == stage)
            .ok_or_else(|| anyhow!("stage {stage} is not planned"))?;
        return match &s.base_ref {
            BaseRef::Scratch => Ok(Vec::new()),
            BaseRef::Stage { index } => stage_layers(plan, *index, layers),
            BaseRef::Image { reference, .. } => bail!("base image {reference} is not available"),
        };
    };
    let step = plan
        .step(parent)
        .ok_or_else(|| anyhow!("step {parent} is not planned"))?;
    let mut chain = chain_before(plan, step.stage, step.parent.as_deref(), layers)?;
    chain.push(
        layers
            .get(parent)
            .cloned()
            .ok_or_else(|| anyhow!("step {parent} has not run"))?,
    );
    Ok(chain)
}
