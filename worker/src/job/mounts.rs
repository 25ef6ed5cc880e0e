//! Preparing RUN `--mount`s and heredoc files as executor mounts.

use super::{FileSource, JobError, RunMount};
use crate::executor::{ExecMount, MountSource};
use crate::snapshot::{Snapshot, Snapshotter};
use crate::store::Store;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Everything mounted for one RUN; dropping it unmounts source snapshots
/// and deletes secret files.
pub(super) struct PreparedMounts {
    pub mounts: Vec<ExecMount>,
    _snapshots: Vec<Box<dyn Snapshot>>,
    scratch: PathBuf,
}

impl Drop for PreparedMounts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> JobError + 'a {
    move |source| JobError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Where the worker keeps cache `id` (already scoped to its namespace by
/// the scheduler): a directory named by the id's hash.
pub fn cache_mount_dir(state: &Path, id: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    state
        .join("cache-mounts")
        .join(hex::encode(Sha256::digest(id.as_bytes())))
}

/// Mounts a read-only view of `from` and returns the path inside it.
pub(super) fn source_root(
    from: &FileSource,
    store: &Store,
    snapshotter: &dyn Snapshotter,
    id: &str,
    keep: &mut Vec<Box<dyn Snapshot>>,
) -> Result<PathBuf, JobError> {
    match from {
        FileSource::Dir(p) => Ok(p.clone()),
        FileSource::Layers(layers) => {
            let mut dirs = Vec::with_capacity(layers.len());
            for (i, l) in layers.iter().enumerate() {
                dirs.push(store.ensure_unpacked(l, &layers[..i])?);
            }
            let snap = snapshotter.prepare(id, &dirs)?;
            let root = snap.merged().to_path_buf();
            keep.push(snap);
            Ok(root)
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn prepare(
    job_id: &str,
    mounts: &[RunMount],
    inline_files: &[(String, Vec<u8>, u32)],
    state: &Path,
    store: &Store,
    snapshotter: &dyn Snapshotter,
) -> Result<PreparedMounts, JobError> {
    let scratch = state.join("run-files").join(job_id);
    std::fs::create_dir_all(&scratch).map_err(io("creating", &scratch))?;
    let mut prepared = PreparedMounts {
        mounts: Vec::new(),
        _snapshots: Vec::new(),
        scratch: scratch.clone(),
    };
    let mut snapshots = Vec::new();
    for (n, m) in mounts.iter().enumerate() {
        let mount = match m {
            RunMount::Cache {
                target,
                id,
                readonly,
                uid,
                gid,
                mode,
            } => {
                let dir = cache_mount_dir(state, id);
                if !dir.is_dir() {
                    std::fs::create_dir_all(&dir).map_err(io("creating cache", &dir))?;
                    std::os::unix::fs::chown(&dir, Some(*uid), Some(*gid))
                        .map_err(io("chown cache", &dir))?;
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(*mode))
                        .map_err(io("chmod cache", &dir))?;
                }
                ExecMount {
                    destination: target.clone(),
                    source: MountSource::Bind(dir),
                    readonly: *readonly,
                }
            }
            RunMount::Secret {
                target,
                data,
                mode,
                uid,
                gid,
            } => {
                let file = scratch.join(format!("secret-{n}"));
                std::fs::write(&file, data).map_err(io("writing secret", &file))?;
                std::os::unix::fs::chown(&file, Some(*uid), Some(*gid))
                    .map_err(io("chown secret", &file))?;
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode))
                    .map_err(io("chmod secret", &file))?;
                ExecMount {
                    destination: target.clone(),
                    source: MountSource::Bind(file),
                    readonly: true,
                }
            }
            RunMount::Tmpfs { target, size } => ExecMount {
                destination: target.clone(),
                source: MountSource::Tmpfs { size_bytes: *size },
                readonly: false,
            },
            RunMount::Bind {
                target,
                from,
                source,
            } => {
                let root = source_root(
                    from,
                    store,
                    snapshotter,
                    &format!("{job_id}-bind{n}"),
                    &mut snapshots,
                )?;
                let path = crate::copy::resolve_in_root(&root, source, true)?;
                ExecMount {
                    destination: target.clone(),
                    source: MountSource::Bind(path),
                    readonly: true,
                }
            }
        };
        prepared.mounts.push(mount);
    }
    for (n, (path, data, mode)) in inline_files.iter().enumerate() {
        let file = scratch.join(format!("inline-{n}"));
        std::fs::write(&file, data).map_err(io("writing", &file))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode))
            .map_err(io("chmod", &file))?;
        prepared.mounts.push(ExecMount {
            destination: path.clone(),
            source: MountSource::Bind(file),
            readonly: true,
        });
    }
    prepared._snapshots = snapshots;
    Ok(prepared)
}
