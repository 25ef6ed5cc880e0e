//! The planner: a parsed Dockerfile, build options and the build context
//! become the per-layer job graph the scheduler dispatches.
//!
//! One [`Step`] per instruction that produces a layer (RUN, COPY, ADD, and
//! WORKDIR when it must create the directory); metadata-only instructions
//! become [`ConfigChange`]s carried in their stage's history. Edges are the
//! parent layer and every `COPY --from` / `RUN --mount from=` dependency, so
//! stages that do not depend on each other are independent branches. Each
//! step carries the inputs of its cache key and the key itself.

mod config;
mod copy;
mod dispatch;
mod env;
mod instr;
mod reference;
mod sources;
mod stage_deps;
mod stages;
mod step_key;

pub use config::{ConfigChange, DEFAULT_PATH, HealthConfig, ImageConfig};
pub use reference::{DEFAULT_REGISTRY, ImageRef};
pub use sources::context_subset;

use crate::Limits;
use crate::context::ContextManifest;
use crate::instructions::{InlineFile, Mount};
use crate::parser::{self, ParsedDockerfile};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use thiserror::Error;

/// A planning failure with the Dockerfile line it concerns (0 = none).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct PlanError {
    /// What is wrong and, where useful, what to do.
    pub message: String,
    /// 1-based line of the offending instruction, 0 when not tied to a line.
    pub line: usize,
}

impl PlanError {
    pub(crate) fn at(line: usize, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            line,
        }
    }

    /// `FILE:LINE: message`, the form the CLI prints.
    pub fn with_file(&self, file: &str) -> String {
        if self.line == 0 {
            format!("{file}: {}", self.message)
        } else {
            format!("{file}:{}: {}", self.line, self.message)
        }
    }
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

impl From<parser::ParseError> for PlanError {
    fn from(e: parser::ParseError) -> Self {
        Self::at(e.start_line, e.message)
    }
}

/// A target or build platform (`linux/amd64`, `linux/arm64/v8`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    /// Operating system.
    pub os: String,
    /// CPU architecture (GOARCH spelling).
    pub architecture: String,
    /// Architecture variant (`v8`), empty when none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

impl Default for Platform {
    fn default() -> Self {
        Self {
            os: "linux".to_string(),
            architecture: "amd64".to_string(),
            variant: String::new(),
        }
    }
}

impl Platform {
    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok =
            |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Self {
                os: os.to_ascii_lowercase(),
                architecture: arch.to_ascii_lowercase(),
                variant: String::new(),
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(Self {
                os: os.to_ascii_lowercase(),
                architecture: arch.to_ascii_lowercase(),
                variant: variant.to_ascii_lowercase(),
            }),
            _ => Err(format!(
                "invalid platform \"{s}\": expected os/arch or os/arch/variant"
            )),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// What a resolver knows about a base image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseImage {
    /// Manifest digest the reference resolved to.
    pub digest: String,
    /// The image's config.
    pub config: ImageConfig,
}

/// Looks up base images' configs (their ENV, WORKDIR, USER, SHELL and
/// ONBUILD triggers change how later instructions expand and run).
pub trait ImageResolver {
    /// Resolves `reference` for `platform`; `Ok(None)` when unknown (the
    /// plan then treats the base config as empty and marks it unresolved).
    fn resolve(
        &self,
        reference: &ImageRef,
        platform: &Platform,
    ) -> Result<Option<BaseImage>, String>;
}

/// A resolver that knows no image: planning without a registry.
#[derive(Debug, Clone, Copy, Default)]
pub struct Offline;

impl ImageResolver for Offline {
    fn resolve(&self, _: &ImageRef, _: &Platform) -> Result<Option<BaseImage>, String> {
        Ok(None)
    }
}

/// Options of one build that change the plan.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// `--build-arg K=V` values.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: the stage to build (default: the last).
    pub target: Option<String>,
    /// Target platform (default `linux/amd64`).
    pub platform: Platform,
    /// Platform of the builders (default `linux/amd64`).
    pub build_platform: Platform,
    /// `--no-cache`: rebuild every step.
    pub no_cache: bool,
    /// `--no-cache-filter`: rebuild the steps of these stages.
    pub no_cache_filter: Vec<String>,
    /// `--label K=V`: labels set on the target stage's image config, over
    /// its `LABEL`s (as BuildKit: no history entry, no step).
    pub labels: BTreeMap<String, String>,
    /// `--add-host`: `/etc/hosts` entries of every RUN step (`HOST:IP`,
    /// see [`crate::hosts::ExtraHost::wire`]); part of their cache keys.
    pub extra_hosts: Vec<String>,
    /// Input limits.
    pub limits: Limits,
}

/// Where a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum BaseRef {
    /// `FROM scratch`.
    Scratch,
    /// A registry image.
    Image {
        /// Normalised reference (`docker.io/library/busybox:latest`).
        reference: String,
        /// Resolved manifest digest, when a resolver knew it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
    },
    /// An earlier stage.
    Stage {
        /// Its index.
        index: usize,
    },
}

/// One entry of a stage's history: a layer step or a metadata change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryItem {
    /// Docker's `created_by` text.
    pub created_by: String,
    /// No layer (metadata only, or WORKDIR /).
    pub empty_layer: bool,
    /// The step that makes the layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The config change, for metadata instructions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<ConfigChange>,
    /// Dockerfile line.
    pub line: usize,
}

/// A stage the target needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanStage {
    /// Position in the Dockerfile (0-based).
    pub index: usize,
    /// `AS name`, lower-cased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The base as written after ARG expansion (`busybox:latest`).
    pub base: String,
    /// The base, resolved.
    pub base_ref: BaseRef,
    /// The base image's config came from a resolver (otherwise empty).
    pub base_resolved: bool,
    /// Platform the stage builds for.
    pub platform: Platform,
    /// Line of the FROM.
    pub line: usize,
    /// History entries this stage adds, in order.
    pub history: Vec<HistoryItem>,
    /// The stage's last layer step, if it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_step: Option<String>,
    /// Cache key of the stage's starting filesystem.
    pub root_key: String,
    /// Cache key of the stage's final filesystem.
    pub result_key: String,
    /// Image config after the stage (on top of the resolved base config).
    pub config: ImageConfig,
    /// `MAINTAINER`, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
}

/// What kind of layer a step makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// RUN.
    Run,
    /// COPY.
    Copy,
    /// ADD.
    Add,
    /// WORKDIR creating its directory.
    Workdir,
}

/// The config in force when a step runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecContext {
    /// Environment (`K=V`): image ENV plus ARG values in scope. Shared
    /// between consecutive steps with the same environment.
    pub env: std::sync::Arc<Vec<std::sync::Arc<str>>>,
    /// USER.
    pub user: String,
    /// Working directory.
    pub workdir: String,
    /// Shell for shell-form commands.
    pub shell: Vec<String>,
}

/// A file the runtime mounts for a step (heredoc scripts with a shebang).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineMount {
    /// Absolute path in the container.
    pub path: String,
    /// Content.
    pub data: String,
    /// File mode.
    pub mode: u32,
}

/// A `RUN --mount` with its `from=` resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedMount {
    /// The mount as written (values expanded).
    #[serde(flatten)]
    pub spec: Mount,
    /// Where `from=` points: a stage or an image; `None` for the context
    /// (bind) or no source at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<CopyFrom>,
}

/// Where COPY/ADD reads from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum CopyFrom {
    /// The build context.
    Context,
    /// An earlier stage's result.
    Stage {
        /// Its index.
        index: usize,
    },
    /// An image's filesystem.
    Image {
        /// Normalised reference.
        reference: String,
    },
}

/// One COPY/ADD source after expansion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopySource {
    /// The path (or URL) after expansion, as written.
    pub path: String,
    /// An http(s) URL (ADD only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub url: bool,
    /// Digest of the selected context files (content, mode, owner), when
    /// copying from the context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Context files selected (files and symlinks).
    #[serde(default)]
    pub files: u64,
    /// Total bytes selected.
    #[serde(default)]
    pub bytes: u64,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Action {
    /// Run a command in a container.
    Run {
        /// Final argv (the shell prepended for shell form).
        argv: Vec<String>,
        /// Files mounted for the run (heredoc scripts).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        inline_files: Vec<InlineMount>,
        /// `--mount`s, expanded, with their sources resolved.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        mounts: Vec<PlannedMount>,
        /// `--network`.
        network: String,
        /// `--security`.
        security: String,
        /// Proxy variables from build args (not in the cache key or history).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        proxy_env: Vec<String>,
        /// `--add-host` entries (`HOST:IP`), in the cache key as with
        /// BuildKit.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        extra_hosts: Vec<String>,
    },
    /// COPY or ADD.
    Copy {
        /// ADD semantics (URLs, archive extraction).
        add: bool,
        /// Source of the files.
        from: CopyFrom,
        /// Path sources.
        sources: Vec<CopySource>,
        /// Heredoc sources, expanded.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        inline: Vec<InlineFile>,
        /// Absolute destination (trailing slash kept).
        dest: String,
        /// `--chown`.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        chown: String,
        /// `--chmod`.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        chmod: String,
        /// `--link`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        link: bool,
        /// `--parents`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        parents: bool,
        /// `--exclude` patterns.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        exclude: Vec<String>,
        /// ADD `--checksum`.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        checksum: String,
        /// ADD `--unpack`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unpack: Option<bool>,
    },
    /// Create the working directory.
    Mkdir {
        /// Absolute path.
        path: String,
        /// Owner (the USER in force), empty for root.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        user: String,
    },
}

/// One layer-producing job of the graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Stable id within the plan (`s<stage>-<n>`).
    pub id: String,
    /// Stage index.
    pub stage: usize,
    /// Kind of layer.
    pub kind: StepKind,
    /// The instruction as written (continuations joined).
    pub instruction: String,
    /// First Dockerfile line.
    pub line: usize,
    /// Steps that must finish first: the parent layer and every stage read.
    pub depends_on: Vec<String>,
    /// The step whose filesystem this one starts from (`None`: the base).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Stages this step reads from (COPY --from, RUN --mount from=).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reads_stages: Vec<usize>,
    /// Docker's history `created_by` for the layer.
    pub created_by: String,
    /// Config in force.
    pub exec: ExecContext,
    /// What to do.
    pub action: Action,
    /// ARG values this step depends on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args_used: BTreeMap<String, String>,
    /// Cache key (`sha256:...`) over the parent key and every input.
    pub cache_key: String,
    /// `--no-cache` or `--no-cache-filter` applies: ignore cache hits.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_cache: bool,
}

/// A non-fatal finding (unused build args, empty continuation lines).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanWarning {
    /// What was found.
    pub message: String,
    /// Line, 0 when none.
    pub line: usize,
}

/// The job graph of one build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildPlan {
    /// The stages the target needs, in Dockerfile order.
    pub stages: Vec<PlanStage>,
    /// Every step, dependencies before dependents.
    pub steps: Vec<Step>,
    /// Index of the target stage.
    pub target: usize,
    /// Findings that did not stop planning.
    pub warnings: Vec<PlanWarning>,
}

impl BuildPlan {
    /// The target stage.
    pub fn target_stage(&self) -> Option<&PlanStage> {
        self.stages.iter().find(|s| s.index == self.target)
    }

    /// A step by id.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }
}

/// Parses and plans a Dockerfile.
pub fn plan_dockerfile(
    dockerfile: &[u8],
    context: Option<&ContextManifest>,
    opts: &PlanOptions,
    resolver: &dyn ImageResolver,
) -> Result<BuildPlan, PlanError> {
    let parsed = parser::parse_with_limits(dockerfile, &opts.limits)?;
    plan(&parsed, context, opts, resolver)
}

/// Plans an already parsed Dockerfile.
pub fn plan(
    parsed: &ParsedDockerfile,
    context: Option<&ContextManifest>,
    opts: &PlanOptions,
    resolver: &dyn ImageResolver,
) -> Result<BuildPlan, PlanError> {
    let file = stages::split_stages(parsed, &opts.limits)?;
    let mut plan = dispatch::Planner::new(parsed.escape, context, opts, resolver).run(file)?;
    for w in &parsed.warnings {
        plan.warnings.insert(
            0,
            PlanWarning {
                message: w.message.clone(),
                line: w.line,
            },
        );
    }
    Ok(plan)
}

#[cfg(test)]
mod tests;
