//! Embedded mode: the scheduler's planning and image assembly and a worker,
//! in this process, on a local store. `strata build` uses it when no
//! scheduler address is given.

mod context;
pub mod images;

use anyhow::{Context as _, Result, anyhow, bail};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use strata_frontend::context::ContextManifest;
use strata_frontend::plan::{
    Action, BaseImage as PlanBase, BaseRef, BuildPlan, CopyFrom, ImageConfig, ImageRef,
    ImageResolver, Offline, PlanOptions, Platform, Step, plan_dockerfile,
};
use strata_oci::registry::{Platform as RegistryPlatform, RegistryClient, RegistryConfig};
use strata_scheduler::assign::{AssignInputs, assignment};
use strata_scheduler::image::{BaseImage, Image, LayerInfo, assemble, rfc3339};
use strata_worker::assignment::job_from_assignment;
use strata_worker::executor::OutputChunk;
use strata_worker::job::{Job, JobError, Worker, WorkerConfig};
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
    /// A step's layer came from the cache.
    StepCached {
        /// Step id.
        id: String,
        /// Its instruction.
        instruction: String,
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
    registry: RegistryClient,
    state: PathBuf,
}

/// Base images known to the planner, by normalised reference.
struct Known(BTreeMap<String, PlanBase>);

impl ImageResolver for Known {
    fn resolve(&self, reference: &ImageRef, _: &Platform) -> Result<Option<PlanBase>, String> {
        Ok(self.0.get(&reference.to_string()).cloned())
    }
}

/// A pulled image, as the planner and the image assembly need it.
struct Pulled {
    plan: PlanBase,
    config: serde_json::Value,
    layers: Vec<LayerInfo>,
}

fn info(l: &LayerRef) -> LayerInfo {
    LayerInfo {
        diff_id: l.diff_id.clone(),
        digest: l.digest.clone(),
        media_type: l.media_type.clone(),
        size: l.size,
    }
}

/// The runtime part of an image config as the planner reads it (Docker's
/// `null`s dropped).
fn plan_config(raw: &serde_json::Value) -> ImageConfig {
    let mut config = raw.get("config").cloned().unwrap_or_default();
    if let Some(obj) = config.as_object_mut() {
        obj.retain(|_, v| !v.is_null());
    }
    serde_json::from_value(config).unwrap_or_default()
}

/// Every image a plan reads: stage bases, `COPY --from=image`, mounts.
fn images_of(plan: &BuildPlan) -> Vec<String> {
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
    /// Layers of a stage's final filesystem.
    fn stage(&self, stage: usize) -> Result<Vec<LayerInfo>> {
        let s = self
            .plan
            .stages
            .iter()
            .find(|s| s.index == stage)
            .ok_or_else(|| anyhow!("stage {stage} is not planned"))?;
        self.from(stage, s.last_step.as_deref())
    }

    /// The chain a step starts from: its parent step's chain including the
    /// parent, or the stage base's.
    fn from(&self, stage: usize, parent: Option<&str>) -> Result<Vec<LayerInfo>> {
        let Some(parent) = parent else {
            let s = self
                .plan
                .stages
                .iter()
                .find(|s| s.index == stage)
                .ok_or_else(|| anyhow!("stage {stage} is not planned"))?;
            return match &s.base_ref {
                BaseRef::Scratch => Ok(Vec::new()),
                BaseRef::Stage { index } => self.stage(*index),
                BaseRef::Image { reference, .. } => self
                    .images
                    .get(reference)
                    .cloned()
                    .ok_or_else(|| anyhow!("base image {reference} was not pulled")),
            };
        };
        let step = self
            .plan
            .step(parent)
            .ok_or_else(|| anyhow!("step {parent} is not planned"))?;
        let mut chain = self.from(step.stage, step.parent.as_deref())?;
        chain.push(
            self.steps
                .get(parent)
                .cloned()
                .ok_or_else(|| anyhow!("step {parent} has not run"))?,
        );
        Ok(chain)
    }
}

impl Embedded {
    /// Opens (creating) the state directory; `registry` says which
    /// registries are plain HTTP and where credentials are.
    pub async fn open(state: &Path, registry: RegistryConfig) -> Result<Self> {
        let worker = Worker::open(WorkerConfig {
            state_dir: state.join("worker"),
            force_copy_snapshotter: false,
        })
        .await
        .map_err(|e| anyhow!("starting the embedded worker: {e}"))?;
        let registry =
            RegistryClient::new(registry).map_err(|e| anyhow!("registry client: {e}"))?;
        Ok(Self {
            worker,
            registry,
            state: state.to_path_buf(),
        })
    }

    /// The worker (and its store).
    pub fn worker(&self) -> &Worker {
        &self.worker
    }

    async fn pull(&self, reference: &str, platform: &Platform) -> Result<Pulled> {
        let p = RegistryPlatform::new(
            &platform.os,
            &platform.architecture,
            (!platform.variant.is_empty()).then_some(platform.variant.as_str()),
        );
        let image = self
            .worker
            .pull_image(reference, &p, &self.registry)
            .await
            .map_err(|e| anyhow!("{reference}: {e}"))?;
        let config: serde_json::Value =
            serde_json::from_slice(&image.config_raw).context("parsing the image config")?;
        Ok(Pulled {
            plan: PlanBase {
                digest: image.manifest_digest.clone(),
                config: plan_config(&config),
            },
            config,
            layers: image.layers.iter().map(info).collect(),
        })
    }

    /// The job for `step`, given the layers built so far.
    fn job_for(
        &self,
        step: &Step,
        chains: &Chains<'_>,
        spec: &BuildSpec,
        build_id: &str,
        ctx_dir: &Path,
    ) -> Result<Job> {
        let parent = chains.from(step.stage, step.parent.as_deref())?;
        let mut stages = BTreeMap::new();
        for &s in &step.reads_stages {
            stages.insert(s, chains.stage(s)?);
        }
        let inputs = AssignInputs {
            parent: &parent,
            stages,
            images: chains.images.clone(),
            context: Some(Default::default()),
            secrets: spec.secrets.clone(),
            network: "default",
            source_date_epoch: spec.source_date_epoch,
            compression: strata_proto::common::v1::Compression::Zstd,
        };
        let job_id = format!("{build_id}-{}", step.id);
        let a = assignment(&job_id, build_id, step, &inputs)
            .map_err(|e| anyhow!("{}: {e}", step.instruction))?;
        job_from_assignment(&a, Some(ctx_dir)).map_err(|e| anyhow!("{}: {e}", step.instruction))
    }

    /// Runs one job, forwarding its output as events.
    async fn run_step(
        &self,
        step: &Step,
        job: Job,
        events: &mpsc::Sender<Event>,
    ) -> Result<LayerInfo, JobError> {
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
        let outcome = outcome?;
        let _ = events
            .send(Event::StepDone {
                id: step.id.clone(),
                duration: started.elapsed(),
                size: outcome.layer.size,
            })
            .await;
        Ok(info(&outcome.layer))
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
        // Base images change how instructions expand (their ENV, WORKDIR,
        // ONBUILD), so pull first, then plan against their configs.
        let offline = plan_with(&Offline)?;
        let mut pulled: BTreeMap<String, Pulled> = BTreeMap::new();
        for reference in images_of(&offline) {
            let image = self.pull(&reference, &spec.options.platform).await?;
            pulled.insert(reference, image);
        }
        let plan = plan_with(&Known(
            pulled
                .iter()
                .map(|(k, v)| (k.clone(), v.plan.clone()))
                .collect(),
        ))?;
        let _ = events
            .send(Event::Planned {
                steps: plan.steps.len(),
            })
            .await;

        // Unique per build, not per process: job ids name runc containers
        // and their cgroups (`/strata/<job id>`), which builders with
        // different state directories in one process share.
        let build_id = next_build_id();
        let ctx_dir = self.state.join("contexts").join(&build_id);
        let _ = std::fs::remove_dir_all(&ctx_dir);
        let (src, m, dst) = (spec.context.clone(), manifest.clone(), ctx_dir.clone());
        tokio::task::spawn_blocking(move || context::materialize(&src, &m, &dst))
            .await?
            .context("materialising the build context")?;

        let mut chains = Chains {
            plan: &plan,
            steps: BTreeMap::new(),
            images: pulled
                .iter()
                .map(|(k, v)| (k.clone(), v.layers.clone()))
                .collect(),
        };
        let mut cache = load_cache(&self.state);
        // Run every step whose dependencies are done, up to the worker's
        // capacity at once: independent stages build at the same time.
        let capacity = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .max(2);
        let mut pending: Vec<&Step> = plan.steps.iter().collect();
        let mut done: BTreeSet<&str> = BTreeSet::new();
        let mut running = FuturesUnordered::new();
        loop {
            let mut progressed = false;
            let mut i = 0;
            while i < pending.len() && running.len() < capacity {
                let step = pending[i];
                if !step.depends_on.iter().all(|d| done.contains(d.as_str())) {
                    i += 1;
                    continue;
                }
                pending.remove(i);
                progressed = true;
                let hit = cache
                    .get(&step.cache_key)
                    .filter(|l| !step.no_cache && self.worker.store().has_blob(&l.digest));
                if let Some(hit) = hit {
                    let cached = Event::StepCached {
                        id: step.id.clone(),
                        instruction: step.instruction.clone(),
                    };
                    let _ = events.send(cached).await;
                    chains.steps.insert(step.id.clone(), hit.clone());
                    done.insert(&step.id);
                    continue;
                }
                let job = self.job_for(step, &chains, spec, &build_id, &ctx_dir)?;
                running.push(async move { (step, self.run_step(step, job, events).await) });
            }
            let Some((step, result)) = running.next().await else {
                if pending.is_empty() {
                    break;
                }
                if progressed {
                    continue;
                }
                bail!(
                    "steps {} wait for each other",
                    pending
                        .iter()
                        .map(|s| s.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            };
            let layer = result.map_err(|e| {
                anyhow!(
                    "{}:{}: {}: {e}",
                    spec.dockerfile_name,
                    step.line,
                    step.instruction
                )
            })?;
            chains.steps.insert(step.id.clone(), layer.clone());
            cache.insert(step.cache_key.clone(), layer);
            save_cache(&self.state, &cache)?;
            done.insert(&step.id);
        }
        drop(running);
        drop(done);
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
        let bases: BTreeMap<String, BaseImage> = pulled
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    BaseImage {
                        config: v.config,
                        layers: v.layers,
                    },
                )
            })
            .collect();
        let layers = chains.steps;
        let image = assemble(&plan, plan.target, &layers, &bases, &created)?;
        Ok(BuildOutput {
            plan,
            image,
            layers,
        })
    }
}

/// `b<pid>-<n>`: the n-th build this process started.
fn next_build_id() -> String {
    static BUILDS: AtomicU64 = AtomicU64::new(0);
    let n = BUILDS.fetch_add(1, Ordering::Relaxed);
    format!("b{}-{n}", std::process::id())
}

/// The embedded cache index: step cache key to the layer it produced.
/// Keys cover the parent's key and every input (see the planner), so a
/// hit is exactly Docker's "unchanged layer".
fn load_cache(state: &Path) -> BTreeMap<String, LayerInfo> {
    std::fs::read(state.join("cache.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save_cache(state: &Path, cache: &BTreeMap<String, LayerInfo>) -> Result<()> {
    let tmp = state.join(format!("cache.json.{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec(cache)?)?;
    std::fs::rename(&tmp, state.join("cache.json"))?;
    Ok(())
}
