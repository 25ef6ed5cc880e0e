//! A scheduler's `JobAssignment` (the wire form) becomes a [`Job`].

use crate::executor::Network;
use crate::job::{FileSource, Job, JobAction, RunMount};
use crate::store::LayerRef;
use std::path::{Path, PathBuf};
use std::time::Duration;
use strata_frontend::hosts::ExtraHost;
use strata_oci::layer::Compression;
use strata_proto::common::v1 as common;
use strata_proto::worker::v1 as wire;
use thiserror::Error;

/// An assignment the worker cannot run.
#[derive(Debug, Error)]
pub enum AssignmentError {
    /// A required field is missing.
    #[error("job {job}: {what} is missing")]
    Missing {
        /// The job id.
        job: String,
        /// What.
        what: &'static str,
    },
    /// A file source refers to the build context but none was provided.
    #[error("job {0}: needs the build context, which this worker was not given")]
    NoContext(String),
    /// A secret mount names a secret the assignment does not carry.
    #[error("job {job}: secret \"{id}\" is required but was not provided")]
    MissingSecret {
        /// The job id.
        job: String,
        /// The secret id.
        id: String,
    },
    /// A field holds what it cannot hold.
    #[error("job {job}: {what}")]
    Invalid {
        /// The job id.
        job: String,
        /// What is wrong.
        what: String,
    },
    /// Something this worker does not support yet.
    #[error("job {job}: {what} is not supported by this worker yet")]
    Unsupported {
        /// The job id.
        job: String,
        /// What.
        what: String,
    },
}

/// Layer references of a wire snapshot, bottom first.
pub fn layers_of(snapshot: &common::Snapshot) -> Vec<LayerRef> {
    snapshot
        .layers
        .iter()
        .map(|l| {
            let blob = l.blob.clone().unwrap_or_default();
            LayerRef {
                diff_id: l.diff_id.clone(),
                digest: blob.digest,
                media_type: blob.media_type,
                size: blob.size,
            }
        })
        .collect()
}

fn file_source(
    job: &str,
    src: Option<&wire::FileSource>,
    context: Option<&Path>,
) -> Result<FileSource, AssignmentError> {
    match src.and_then(|s| s.source.as_ref()) {
        Some(wire::file_source::Source::Snapshot(s)) => Ok(FileSource::Layers(layers_of(s))),
        Some(wire::file_source::Source::Context(_)) | None => context
            .map(|p| FileSource::Dir(PathBuf::from(p)))
            .ok_or_else(|| AssignmentError::NoContext(job.to_string())),
    }
}

/// Converts an assignment. `context` is the materialised build context
/// (needed by COPY/ADD from the context and bind mounts of it).
pub fn job_from_assignment(
    a: &wire::JobAssignment,
    context: Option<&Path>,
) -> Result<Job, AssignmentError> {
    use wire::job_assignment::Instruction;
    let job = a.job_id.clone();
    let config = a.config.clone().unwrap_or_default();
    let instruction = a.instruction.as_ref().ok_or(AssignmentError::Missing {
        job: job.clone(),
        what: "instruction",
    })?;
    let action = match instruction {
        Instruction::Run(r) => {
            let mut mounts = Vec::with_capacity(r.mounts.len());
            for m in &r.mounts {
                let kind = m.kind.as_ref().ok_or(AssignmentError::Missing {
                    job: job.clone(),
                    what: "mount kind",
                })?;
                mounts.push(match kind {
                    wire::mount::Kind::Cache(c) => RunMount::Cache {
                        target: m.target.clone(),
                        id: c.id.clone(),
                        readonly: m.readonly,
                        uid: c.uid,
                        gid: c.gid,
                        mode: c.mode,
                    },
                    wire::mount::Kind::Tmpfs(t) => RunMount::Tmpfs {
                        target: m.target.clone(),
                        size: (t.size_bytes > 0).then_some(t.size_bytes),
                    },
                    wire::mount::Kind::Secret(s) => match a.secrets.iter().find(|x| x.id == s.id) {
                        Some(secret) => RunMount::Secret {
                            target: m.target.clone(),
                            data: secret.value.clone(),
                            mode: s.mode,
                            uid: s.uid,
                            gid: s.gid,
                        },
                        None if s.required => {
                            return Err(AssignmentError::MissingSecret {
                                job,
                                id: s.id.clone(),
                            });
                        }
                        // An optional secret that was not given is simply absent.
                        None => continue,
                    },
                    wire::mount::Kind::Bind(b) => RunMount::Bind {
                        target: m.target.clone(),
                        from: file_source(&job, b.from.as_ref(), context)?,
                        source: b.source.clone(),
                    },
                    wire::mount::Kind::Ssh(_) => {
                        return Err(AssignmentError::Unsupported {
                            job,
                            what: "RUN --mount=type=ssh".into(),
                        });
                    }
                });
            }
            let network = if a.network_mode == common::NetworkMode::None as i32 {
                Network::None
            } else {
                Network::Host
            };
            JobAction::Run {
                argv: r.argv.clone(),
                network,
                insecure: a.security_mode == common::SecurityMode::Insecure as i32,
                mounts,
                inline_files: r
                    .heredocs
                    .iter()
                    .map(|h| (h.path.clone(), h.content.clone(), h.mode))
                    .collect(),
            }
        }
        Instruction::Copy(c) => {
            JobAction::Copy {
                from: file_source(&job, c.from.as_ref(), context)?,
                // URL sources (ADD) are downloaded by the worker.
                sources: c
                    .sources
                    .iter()
                    .map(|s| {
                        if s.url.is_empty() {
                            s.pattern.clone()
                        } else {
                            s.url.clone()
                        }
                    })
                    .collect(),
                dest: c.dest.clone(),
                chown: c.chown.clone(),
                chmod: c.chmod.clone(),
                exclude: c.excludes.clone(),
                add: c.add,
                // The wire's `unpack` is true unless `--unpack=false`:
                // leave Docker's default (local archives only) otherwise.
                unpack: (c.add && !c.unpack).then_some(false),
                parents: c.parents,
                link: c.link,
                checksum: c
                    .sources
                    .iter()
                    .find(|s| !s.checksum.is_empty())
                    .map(|s| s.checksum.clone()),
                inline: c
                    .heredocs
                    .iter()
                    .map(|h| (h.name.clone(), h.content.clone()))
                    .collect(),
            }
        }
        Instruction::Workdir(w) => JobAction::Mkdir {
            path: w.path.clone(),
            user: config.user.clone(),
        },
        Instruction::Pull(_) => {
            return Err(AssignmentError::Unsupported {
                job,
                what: "pull jobs".into(),
            });
        }
    };
    let compression = match common::Compression::try_from(a.layer_compression)
        .unwrap_or(common::Compression::Zstd)
    {
        common::Compression::Gzip => Compression::Gzip { level: 6 },
        common::Compression::Uncompressed => Compression::Uncompressed,
        _ => Compression::Zstd { level: 3 },
    };
    let extra_hosts = a
        .extra_hosts
        .iter()
        .map(|h| {
            ExtraHost::parse(h)
                .map(|h| (h.host, h.ip.to_string()))
                .map_err(|what| AssignmentError::Invalid {
                    job: a.job_id.clone(),
                    what,
                })
        })
        .collect::<Result<_, _>>()?;
    Ok(Job {
        id: if a.attempt > 1 {
            format!("{}-{}", a.job_id, a.attempt)
        } else {
            a.job_id.clone()
        },
        parent: a.parent.as_ref().map(layers_of).unwrap_or_default(),
        action,
        env: config.env.clone(),
        user: config.user.clone(),
        workdir: config.working_dir.clone(),
        source_date_epoch: a.source_date_epoch.as_ref().map(|t| t.seconds),
        compression,
        timeout: a.timeout.as_ref().and_then(|d| Duration::try_from(*d).ok()),
        extra_hosts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_keeps_url_sources_their_checksum_and_heredocs() {
        let copy = wire::CopyInstruction {
            add: true,
            sources: vec![wire::CopySource {
                url: "https://example.com/a.tar.gz".into(),
                checksum: "sha256:00".into(),
                ..Default::default()
            }],
            dest: "/d/".into(),
            unpack: true,
            heredocs: vec![wire::Heredoc {
                name: "EOF".into(),
                content: b"inline\n".to_vec(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let a = wire::JobAssignment {
            job_id: "j".into(),
            instruction: Some(wire::job_assignment::Instruction::Copy(copy)),
            ..Default::default()
        };
        let job = job_from_assignment(&a, Some(Path::new("/ctx"))).expect("job");
        let JobAction::Copy {
            sources,
            checksum,
            inline,
            unpack,
            ..
        } = job.action
        else {
            panic!("not a copy: {:?}", job.action);
        };
        assert_eq!(sources, ["https://example.com/a.tar.gz"]);
        assert_eq!(checksum.as_deref(), Some("sha256:00"));
        assert_eq!(inline, [("EOF".to_string(), b"inline\n".to_vec())]);
        assert_eq!(unpack, None, "Docker's default: downloads stay packed");
    }
}
