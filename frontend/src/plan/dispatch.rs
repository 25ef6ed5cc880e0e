//! The planner proper: resolves stages and their dependencies, then walks
//! the needed stages in order, turning instructions into steps and config
//! changes (BuildKit's `dockerfile2llb` dispatch, minus LLB).

use super::env::EnvList;
use super::stages::{RawStage, StagedFile};
use super::{
    BaseRef, BuildPlan, DEFAULT_PATH, ImageConfig, ImageRef, ImageResolver, PlanError, PlanOptions,
    PlanStage, PlanWarning, Platform, Step,
};
use crate::context::ContextManifest;
use crate::instructions::{Command, Instruction};
use crate::parser;
use crate::shell::Lexer;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// Build args BuildKit accepts without an ARG declaration: they reach RUN
/// as proxy settings, never the cache key or history.
pub(crate) const PROXY_ARGS: [&str; 5] = [
    "http_proxy",
    "https_proxy",
    "ftp_proxy",
    "no_proxy",
    "all_proxy",
];

pub(crate) fn is_proxy_arg(key: &str) -> bool {
    PROXY_ARGS.iter().any(|p| p.eq_ignore_ascii_case(key))
}

/// What a `--from` or `FROM` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Stage(usize),
    Image(ImageRef),
}

/// A stage with its base and dependencies resolved, before dispatch.
pub(crate) struct StageSpec {
    pub raw: RawStage,
    pub name: String,
    pub base_text: String,
    pub base: BaseSpec,
    pub platform: Platform,
    /// Instructions to dispatch: inherited ONBUILD triggers, then the stage's own.
    pub instructions: Vec<Instruction>,
    pub deps: BTreeSet<usize>,
    pub triggers_added: bool,
    pub resolved: Option<Option<super::BaseImage>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BaseSpec {
    Scratch,
    Stage(usize),
    Image(ImageRef),
}

/// What a dispatched stage leaves for the stages built on it.
#[derive(Debug, Clone)]
pub(crate) struct StageResult {
    pub config: ImageConfig,
    pub env: EnvList,
    pub build_args: Vec<(String, Option<String>)>,
    pub result_key: String,
    pub last_step: Option<String>,
}

pub(crate) struct Planner<'a> {
    pub(crate) lexer: Lexer,
    pub(crate) context: Option<&'a ContextManifest>,
    pub(crate) opts: &'a PlanOptions,
    pub(crate) resolver: &'a dyn ImageResolver,
    pub(crate) global_args: EnvList,
    pub(crate) consumed: BTreeSet<String>,
    pub(crate) warnings: Vec<PlanWarning>,
    pub(crate) specs: Vec<StageSpec>,
    pub(crate) results: BTreeMap<usize, StageResult>,
    pub(crate) steps: Vec<Step>,
    /// Expanded bytes the plan holds so far (see `Limits::max_plan_bytes`).
    pub(crate) plan_bytes: usize,
}

pub(crate) fn sha256_key(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

impl<'a> Planner<'a> {
    pub(crate) fn new(
        escape: char,
        context: Option<&'a ContextManifest>,
        opts: &'a PlanOptions,
        resolver: &'a dyn ImageResolver,
    ) -> Self {
        Self {
            lexer: Lexer::new(escape),
            context,
            opts,
            resolver,
            global_args: EnvList::default(),
            consumed: BTreeSet::new(),
            warnings: Vec::new(),
            specs: Vec::new(),
            results: BTreeMap::new(),
            steps: Vec::new(),
            plan_bytes: 0,
        }
    }

    /// Counts `bytes` more of expanded values against the plan's budget.
    pub(crate) fn spend(&mut self, bytes: usize, line: usize) -> Result<(), PlanError> {
        self.plan_bytes = self.plan_bytes.saturating_add(bytes);
        let limit = self.opts.limits.max_plan_bytes;
        if self.plan_bytes > limit {
            return Err(PlanError::at(
                line,
                format!(
                    "the expanded build is larger than the limit of {} MiB (variables that grow with each use, e.g. ENV A=$A$A?)",
                    limit >> 20
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn expand(
        &self,
        word: &str,
        env: &EnvList,
        line: usize,
    ) -> Result<String, PlanError> {
        self.lexer
            .process_word(word, env)
            .map(|e| e.value)
            .map_err(|e| PlanError::at(line, e.to_string()))
    }

    /// The predefined platform ARGs, overridable by build args.
    fn default_args(&self, target: &str) -> EnvList {
        let b = &self.opts.build_platform;
        let t = &self.opts.platform;
        let mut env = EnvList::default();
        for (k, v) in [
            ("BUILDPLATFORM", b.to_string()),
            ("BUILDOS", b.os.clone()),
            ("BUILDOSVERSION", String::new()),
            ("BUILDARCH", b.architecture.clone()),
            ("BUILDVARIANT", b.variant.clone()),
            ("TARGETPLATFORM", t.to_string()),
            ("TARGETOS", t.os.clone()),
            ("TARGETOSVERSION", String::new()),
            ("TARGETARCH", t.architecture.clone()),
            ("TARGETVARIANT", t.variant.clone()),
            (
                "TARGETSTAGE",
                if target.is_empty() {
                    "default".to_string()
                } else {
                    target.to_string()
                },
            ),
        ] {
            let v = self.opts.build_args.get(k).cloned().unwrap_or(v);
            env.set(k, &v);
        }
        env
    }

    fn meta_args(&mut self, file: &StagedFile) -> Result<(), PlanError> {
        let target = self.opts.target.clone().unwrap_or_else(|| {
            file.stages
                .last()
                .map(|s| s.from.name.clone())
                .unwrap_or_default()
        });
        self.global_args = self.default_args(&target);
        for (defs, line) in &file.meta_args {
            for def in defs {
                let value = match self.opts.build_args.get(&def.key) {
                    Some(v) => {
                        self.consumed.insert(def.key.clone());
                        Some(v.clone())
                    }
                    None => match &def.value {
                        Some(d) => Some(self.expand(d, &self.global_args, *line)?),
                        None => None,
                    },
                };
                if let Some(v) = value {
                    self.global_args.set(&def.key, &v);
                }
            }
        }
        Ok(())
    }

    /// Parses ONBUILD trigger expressions into instructions located at the
    /// stage's FROM line.
    fn triggers(&self, exprs: &[String], line: usize) -> Result<Vec<Instruction>, PlanError> {
        let mut out = Vec::new();
        for expr in exprs {
            let parsed = parser::parse(expr.as_bytes()).map_err(|e| {
                PlanError::at(line, format!("ONBUILD trigger {expr:?}: {}", e.message))
            })?;
            if parsed.nodes.len() != 1 {
                return Err(PlanError::at(
                    line,
                    "onbuild trigger should be a single expression",
                ));
            }
            let mut node = parsed.nodes[0].clone();
            node.start_line = line;
            node.end_line = line;
            let ins = Instruction::from_node(&node).map_err(|e| PlanError::at(line, e.message))?;
            out.push(ins);
        }
        Ok(out)
    }

    pub(crate) fn run(mut self, file: StagedFile) -> Result<BuildPlan, PlanError> {
        self.meta_args(&file)?;
        self.resolve_stage_bases(file)?;
        let target = self.target_index()?;
        for i in 0..self.specs.len() {
            let mut deps = BTreeSet::new();
            for ins in &self.specs[i].instructions {
                deps.extend(self.instruction_deps(ins, i)?);
            }
            self.specs[i].deps = deps;
        }
        // Resolve bases and add ONBUILD triggers until nothing new is needed.
        loop {
            let reachable = self.reachable(target);
            let mut changed = false;
            for &i in &reachable {
                if self.specs[i].triggers_added {
                    continue;
                }
                let line = self.specs[i].raw.line;
                let exprs: Vec<String> = match &self.specs[i].base {
                    BaseSpec::Stage(j) => self.specs[*j]
                        .raw
                        .instructions
                        .iter()
                        .filter_map(|ins| match &ins.command {
                            Command::Onbuild(e) => Some(e.clone()),
                            _ => None,
                        })
                        .collect(),
                    BaseSpec::Image(r) => {
                        let resolved = self
                            .resolver
                            .resolve(r, &self.specs[i].platform)
                            .map_err(|e| PlanError::at(line, format!("FROM {r}: {e}")))?;
                        let exprs = resolved
                            .as_ref()
                            .map(|b| b.config.on_build.clone())
                            .unwrap_or_default();
                        self.specs[i].resolved = Some(resolved);
                        exprs
                    }
                    BaseSpec::Scratch => Vec::new(),
                };
                self.specs[i].triggers_added = true;
                if exprs.is_empty() {
                    continue;
                }
                let triggers = self.triggers(&exprs, line)?;
                for t in &triggers {
                    let d = self.instruction_deps(t, i)?;
                    changed |= !d.is_empty();
                    self.specs[i].deps.extend(d);
                }
                let own = std::mem::take(&mut self.specs[i].instructions);
                self.specs[i].instructions = triggers.into_iter().chain(own).collect();
            }
            if !changed {
                break;
            }
        }
        let reachable = self.reachable(target);
        let mut stages = Vec::new();
        for &i in &reachable {
            let mut stage = self.dispatch_stage(i)?;
            if i == target {
                for (k, v) in &self.opts.labels {
                    stage.config.labels.insert(k.clone(), v.clone());
                }
            }
            stages.push(stage);
        }
        self.unused_build_args();
        Ok(BuildPlan {
            stages,
            steps: self.steps,
            target,
            warnings: self.warnings,
        })
    }

    fn unused_build_args(&mut self) {
        let unused: Vec<&String> = self
            .opts
            .build_args
            .keys()
            .filter(|k| {
                !self.consumed.contains(*k) && !is_proxy_arg(k) && self.global_args.get(k).is_none()
            })
            .collect();
        if !unused.is_empty() {
            let list: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
            self.warnings.push(PlanWarning {
                message: format!("build-arg(s) not consumed by any ARG: {}", list.join(", ")),
                line: 0,
            });
        }
    }

    fn dispatch_stage(&mut self, i: usize) -> Result<PlanStage, PlanError> {
        let spec = &self.specs[i];
        let platform = spec.platform.clone();
        let (base_ref, mut config, env, build_args, root_key, parent, base_resolved) =
            match &spec.base {
                BaseSpec::Scratch => (
                    BaseRef::Scratch,
                    ImageConfig::default(),
                    None,
                    Vec::new(),
                    sha256_key(format!("scratch\0{platform}").as_bytes()),
                    None,
                    true,
                ),
                BaseSpec::Image(r) => {
                    let resolved = spec.resolved.clone().flatten();
                    let digest = resolved.as_ref().map(|b| b.digest.clone());
                    let key = sha256_key(
                        format!(
                            "image\0{r}\0{}\0{platform}",
                            digest.as_deref().unwrap_or("unresolved")
                        )
                        .as_bytes(),
                    );
                    let mut config = resolved
                        .as_ref()
                        .map(|b| b.config.clone())
                        .unwrap_or_default();
                    config.on_build.clear();
                    (
                        BaseRef::Image {
                            reference: r.to_string(),
                            digest,
                        },
                        config,
                        None,
                        Vec::new(),
                        key,
                        None,
                        resolved.is_some(),
                    )
                }
                BaseSpec::Stage(j) => {
                    let base = self.results.get(j).cloned().ok_or_else(|| {
                        PlanError::at(
                            spec.raw.line,
                            format!("stage {} is needed before it is built", j),
                        )
                    })?;
                    let mut config = base.config.clone();
                    config.on_build.clear();
                    (
                        BaseRef::Stage { index: *j },
                        config,
                        Some(base.env),
                        base.build_args,
                        base.result_key,
                        base.last_step,
                        true,
                    )
                }
            };
        if config.env_get("PATH").is_none() {
            config.env.push(format!("PATH={DEFAULT_PATH}"));
        }
        let env = env.unwrap_or_else(|| EnvList::from_env_strings(&config.env));
        let mut st = super::instr::StageBuild {
            index: i,
            platform: platform.clone(),
            config,
            env,
            build_args,
            parent,
            parent_key: root_key.clone(),
            history: Vec::new(),
            cmd_set: false,
            author: None,
            no_cache: self.opts.no_cache
                || (!spec.name.is_empty()
                    && self
                        .opts
                        .no_cache_filter
                        .iter()
                        .any(|f| f.eq_ignore_ascii_case(&spec.name))),
            step_count: 0,
        };
        let instructions = spec.instructions.clone();
        for ins in &instructions {
            self.dispatch_instruction(&mut st, ins)?;
        }
        let spec = &self.specs[i];
        self.results.insert(
            i,
            StageResult {
                config: st.config.clone(),
                env: st.env.clone(),
                build_args: st.build_args.clone(),
                result_key: st.parent_key.clone(),
                last_step: st.parent.clone(),
            },
        );
        Ok(PlanStage {
            index: i,
            name: (!spec.name.is_empty()).then(|| spec.name.clone()),
            base: spec.base_text.clone(),
            base_ref,
            base_resolved,
            platform,
            line: spec.raw.line,
            history: st.history,
            last_step: st.parent,
            root_key,
            result_key: st.parent_key,
            config: st.config,
            author: st.author,
        })
    }
}
