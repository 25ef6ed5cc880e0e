//! The wire forms a build sends: its plan, context manifests, layers,
//! locations, and each step's `JobAssignment`.

use super::run::BuildInput;
use crate::assign::{AssignInputs, assignment};
use crate::image::LayerInfo;
use std::collections::BTreeMap;
use std::time::Duration;
use strata_frontend::context::ContextManifest;
use strata_frontend::instructions::MountType;
use strata_frontend::plan::{Action, BuildPlan, CopyFrom, Step, context_subset};
use strata_proto::build::v1 as build;
use strata_proto::common::v1 as common;
use strata_proto::worker::v1 as wire;

use super::chains::Chains;

pub(super) fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap_or_default()
}

pub(super) fn location(input: &BuildInput, line: usize) -> common::SourceLocation {
    common::SourceLocation {
        file: input.dockerfile_name.clone(),
        start_line: line as u32,
        end_line: line as u32,
    }
}

pub(super) fn layer_proto(l: &LayerInfo) -> common::Layer {
    common::Layer::of_blob(&l.diff_id, &l.media_type, &l.digest, l.size)
}

pub(super) fn kind_of(step: &Step) -> common::StepKind {
    use strata_frontend::plan::StepKind as K;
    match step.kind {
        K::Run => common::StepKind::Run,
        K::Copy => common::StepKind::Copy,
        K::Add => common::StepKind::Add,
        K::Workdir => common::StepKind::Workdir,
    }
}

pub(super) fn stage_name(plan: &BuildPlan, stage: usize) -> String {
    plan.stages
        .iter()
        .find(|s| s.index == stage)
        .and_then(|s| s.name.clone())
        .unwrap_or_default()
}

/// The wire form of a plan, for `BuildStarted` and `strata logs`.
pub(super) fn plan_proto(plan: &BuildPlan, input: &BuildInput) -> build::BuildPlan {
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
pub(super) fn context_sources(step: &Step) -> Option<Vec<String>> {
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

pub(super) fn manifest_proto(m: &ContextManifest) -> common::ContextManifest {
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

/// The wire job for `step`, given the layers built so far.
pub(super) fn job_assignment(
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
        namespace: &input.namespace,
    };
    let mut a = assignment(job_id, build_id, step, &inputs)
        .map_err(|e| format!("{}: {e}", step.instruction))?;
    a.location = Some(location(input, step.line));
    Ok(a)
}
