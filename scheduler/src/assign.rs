//! A planned step becomes the `JobAssignment` a worker runs: the parent
//! layer chain, the config in force, and the instruction with every input
//! resolved (stage reads become layer chains, secrets their values).

use crate::image::LayerInfo;
use std::collections::BTreeMap;
use strata_frontend::instructions::{CacheSharing as FeSharing, MountType};
use strata_frontend::plan::{Action, CopyFrom, PlannedMount, Step, StepKind as FeKind};
use strata_proto::common::v1 as common;
use strata_proto::worker::v1 as worker;
use thiserror::Error;

/// Why a step could not be turned into a job.
#[derive(Debug, Error)]
pub enum AssignError {
    /// A stage the step reads has not finished.
    #[error("step {step} reads stage {stage}, which has no result yet")]
    StageNotReady {
        /// The step.
        step: String,
        /// The stage.
        stage: usize,
    },
    /// An image the step copies from was not pulled.
    #[error("step {step} copies from image {reference}, which was not pulled")]
    ImageNotPulled {
        /// The step.
        step: String,
        /// The image.
        reference: String,
    },
    /// A required secret was not provided.
    #[error("step {step} needs secret \"{id}\", which was not provided (--secret id={id},src=...)")]
    MissingSecret {
        /// The step.
        step: String,
        /// The secret id.
        id: String,
    },
}

/// What the scheduler knows when it dispatches a step.
#[derive(Debug, Default)]
pub struct AssignInputs<'a> {
    /// Layers below the step (base image plus earlier steps), bottom first.
    pub parent: &'a [LayerInfo],
    /// Finished stages' layer chains by stage index.
    pub stages: BTreeMap<usize, Vec<LayerInfo>>,
    /// Pulled images' layer chains by normalised reference.
    pub images: BTreeMap<String, Vec<LayerInfo>>,
    /// The build context.
    pub context: Option<common::ContextRef>,
    /// Secret values by id.
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// Default `--network` of the build (`default`, `none`, `host`).
    pub network: &'a str,
    /// SOURCE_DATE_EPOCH.
    pub source_date_epoch: Option<i64>,
    /// Layer compression.
    pub compression: common::Compression,
    /// The cache namespace: cache mount ids are scoped to it.
    pub namespace: &'a str,
}

fn snapshot(layers: &[LayerInfo]) -> common::Snapshot {
    common::Snapshot {
        name: String::new(),
        manifest_digest: String::new(),
        layers: layers
            .iter()
            .map(|l| common::Layer::of_blob(&l.diff_id, &l.media_type, &l.digest, l.size))
            .collect(),
    }
}

fn network(mode: &str) -> common::NetworkMode {
    match mode {
        "none" => common::NetworkMode::None,
        "host" => common::NetworkMode::Host,
        _ => common::NetworkMode::Sandbox,
    }
}

impl AssignInputs<'_> {
    fn stage_source(&self, step: &Step, stage: usize) -> Result<worker::FileSource, AssignError> {
        let layers = self
            .stages
            .get(&stage)
            .ok_or_else(|| AssignError::StageNotReady {
                step: step.id.clone(),
                stage,
            })?;
        Ok(worker::FileSource {
            source: Some(worker::file_source::Source::Snapshot(snapshot(layers))),
        })
    }

    fn context_source(&self) -> worker::FileSource {
        worker::FileSource {
            source: self
                .context
                .clone()
                .map(worker::file_source::Source::Context),
        }
    }

    fn copy_source(
        &self,
        step: &Step,
        from: Option<&CopyFrom>,
    ) -> Result<worker::FileSource, AssignError> {
        match from {
            None | Some(CopyFrom::Context) => Ok(self.context_source()),
            Some(CopyFrom::Stage { index }) => self.stage_source(step, *index),
            Some(CopyFrom::Image { reference }) => {
                let layers =
                    self.images
                        .get(reference)
                        .ok_or_else(|| AssignError::ImageNotPulled {
                            step: step.id.clone(),
                            reference: reference.clone(),
                        })?;
                Ok(worker::FileSource {
                    source: Some(worker::file_source::Source::Snapshot(snapshot(layers))),
                })
            }
        }
    }
}

fn mount(
    step: &Step,
    pm: &PlannedMount,
    inputs: &AssignInputs<'_>,
    secrets: &mut Vec<common::Secret>,
) -> Result<worker::Mount, AssignError> {
    use worker::mount::Kind;
    let m = &pm.spec;
    let kind = match m.kind {
        MountType::Cache => Kind::Cache(worker::CacheMount {
            // One tenant's cache mounts are not another's.
            id: format!(
                "{}/{}",
                inputs.namespace,
                if m.id.is_empty() { &m.target } else { &m.id }
            ),
            sharing: match m.sharing {
                Some(FeSharing::Private) => worker::CacheSharing::Private,
                Some(FeSharing::Locked) => worker::CacheSharing::Locked,
                _ => worker::CacheSharing::Shared,
            } as i32,
            from: None,
            source: m.source.clone(),
            mode: m.mode.unwrap_or(0o755),
            uid: m.uid.unwrap_or(0),
            gid: m.gid.unwrap_or(0),
            archive_digest: String::new(),
        }),
        MountType::Tmpfs => Kind::Tmpfs(worker::TmpfsMount {
            size_bytes: m.size_limit,
        }),
        MountType::Secret => {
            let id = if !m.id.is_empty() {
                m.id.clone()
            } else if !m.source.is_empty() {
                m.source.clone()
            } else {
                m.target.rsplit('/').next().unwrap_or_default().to_string()
            };
            match inputs.secrets.get(&id) {
                Some(v) => secrets.push(common::Secret {
                    id: id.clone(),
                    value: v.clone(),
                }),
                None if m.required => {
                    return Err(AssignError::MissingSecret {
                        step: step.id.clone(),
                        id,
                    });
                }
                None => {}
            }
            Kind::Secret(worker::SecretMount {
                id,
                env: m.env.clone().unwrap_or_default(),
                required: m.required,
                mode: m.mode.unwrap_or(0o400),
                uid: m.uid.unwrap_or(0),
                gid: m.gid.unwrap_or(0),
            })
        }
        MountType::Ssh => Kind::Ssh(worker::SshMount {
            id: if m.id.is_empty() {
                "default".to_string()
            } else {
                m.id.clone()
            },
            required: m.required,
            mode: m.mode.unwrap_or(0o600),
            uid: m.uid.unwrap_or(0),
            gid: m.gid.unwrap_or(0),
        }),
        MountType::Bind => Kind::Bind(worker::BindMount {
            from: Some(inputs.copy_source(step, pm.source.as_ref())?),
            source: m.source.clone(),
        }),
    };
    let target = if m.target.is_empty() && m.kind == MountType::Secret {
        format!(
            "/run/secrets/{}",
            match &kind {
                Kind::Secret(s) => s.id.clone(),
                _ => String::new(),
            }
        )
    } else {
        m.target.clone()
    };
    Ok(worker::Mount {
        target,
        readonly: m.readonly,
        kind: Some(kind),
    })
}

/// Builds the assignment for `step`.
pub fn assignment(
    job_id: &str,
    build_id: &str,
    step: &Step,
    inputs: &AssignInputs<'_>,
) -> Result<worker::JobAssignment, AssignError> {
    use worker::job_assignment::Instruction;
    let mut secrets = Vec::new();
    let mut extra_hosts = Vec::new();
    let (kind, instruction, net, security) = match &step.action {
        Action::Run {
            argv,
            inline_files,
            mounts,
            network: n,
            security,
            extra_hosts: hosts,
            ..
        } => {
            extra_hosts.clone_from(hosts);
            let mut ms = Vec::with_capacity(mounts.len());
            for m in mounts {
                ms.push(mount(step, m, inputs, &mut secrets)?);
            }
            let heredocs = inline_files
                .iter()
                .map(|f| worker::Heredoc {
                    name: f.path.rsplit('/').next().unwrap_or_default().to_string(),
                    content: f.data.clone().into_bytes(),
                    path: f.path.clone(),
                    mode: f.mode,
                })
                .collect();
            let run = worker::RunInstruction {
                argv: argv.clone(),
                shell_form: false,
                env: step.exec.env.iter().map(|e| e.to_string()).collect(),
                heredocs,
                mounts: ms,
            };
            let net = if n == "default" {
                network(inputs.network)
            } else {
                network(n)
            };
            let sec = if security == "insecure" {
                common::SecurityMode::Insecure
            } else {
                common::SecurityMode::Sandbox
            };
            (common::StepKind::Run, Instruction::Run(run), net, sec)
        }
        Action::Copy {
            add,
            from,
            sources,
            dest,
            chown,
            chmod,
            link,
            parents,
            exclude,
            checksum,
            unpack,
            inline,
        } => {
            let from = inputs.copy_source(step, Some(from))?;
            let sources = sources
                .iter()
                .map(|s| worker::CopySource {
                    pattern: if s.url { String::new() } else { s.path.clone() },
                    matches: Vec::new(),
                    url: if s.url { s.path.clone() } else { String::new() },
                    checksum: checksum.clone(),
                })
                .collect();
            let copy = worker::CopyInstruction {
                add: *add,
                from: Some(from),
                sources,
                dest: dest.clone(),
                chown: chown.clone(),
                chmod: chmod.clone(),
                link: *link,
                excludes: exclude.clone(),
                parents: *parents,
                unpack: unpack.unwrap_or(*add),
                keep_git_dir: false,
                heredocs: inline
                    .iter()
                    .map(|f| worker::Heredoc {
                        name: f.name.clone(),
                        content: f.data.clone().into_bytes(),
                        path: String::new(),
                        mode: 0,
                    })
                    .collect(),
            };
            let kind = if *add {
                common::StepKind::Add
            } else {
                common::StepKind::Copy
            };
            (
                kind,
                Instruction::Copy(copy),
                common::NetworkMode::Sandbox,
                common::SecurityMode::Sandbox,
            )
        }
        Action::Mkdir { path, .. } => (
            common::StepKind::Workdir,
            Instruction::Workdir(worker::WorkdirInstruction { path: path.clone() }),
            common::NetworkMode::Sandbox,
            common::SecurityMode::Sandbox,
        ),
    };
    debug_assert!(matches!(
        (step.kind, kind),
        (FeKind::Run, common::StepKind::Run)
            | (FeKind::Copy, common::StepKind::Copy)
            | (FeKind::Add, common::StepKind::Add)
            | (FeKind::Workdir, common::StepKind::Workdir)
    ));
    Ok(worker::JobAssignment {
        job_id: job_id.to_string(),
        lease_id: String::new(),
        attempt: 1,
        build_id: build_id.to_string(),
        step_id: step.id.clone(),
        kind: kind as i32,
        display_name: step.instruction.clone(),
        location: Some(common::SourceLocation {
            file: "Dockerfile".into(),
            start_line: step.line as u32,
            end_line: step.line as u32,
        }),
        platform: None,
        parent: Some(snapshot(inputs.parent)),
        config: Some(common::ImageConfig {
            user: step.exec.user.clone(),
            env: step.exec.env.iter().map(|e| e.to_string()).collect(),
            working_dir: step.exec.workdir.clone(),
            shell: Some(common::StringList {
                values: step.exec.shell.clone(),
            }),
            ..Default::default()
        }),
        instruction: Some(instruction),
        network_mode: net as i32,
        security_mode: security as i32,
        secrets,
        registry_auth: Vec::new(),
        cache_key: step.cache_key.clone(),
        timeout: None,
        source_date_epoch: inputs.source_date_epoch.map(|s| prost_types::Timestamp {
            seconds: s,
            nanos: 0,
        }),
        layer_compression: inputs.compression as i32,
        extra_hosts,
        extra: Default::default(),
        trace_context: Default::default(),
    })
}
