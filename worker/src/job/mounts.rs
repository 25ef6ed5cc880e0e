//! Preparing RUN `--mount`s and heredoc files as executor mounts.

use super::{FileSource, JobError, RunMount};
use crate::executor::{ExecMount, MountSource};
use crate::snapshot::{Snapshot, Snapshotter};
use crate::store::Store;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::SeqCst;

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

/// The steps of this worker using each cache mount directory. The fleet's
/// copy of a cache is restored only into a directory no running step has
/// mounted (the swap would delete its files under it), one restore at a
/// time; and a cache is archived once, by the last step out that wrote to
/// it, holding the restore lock so that no step mounts it meanwhile.
#[derive(Debug, Default)]
pub struct CacheMountUsers {
    by_id: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<CacheMountUse>>>,
}

#[derive(Debug, Default)]
struct CacheMountUse {
    users: std::sync::atomic::AtomicUsize,
    writers: std::sync::atomic::AtomicUsize,
    swap: tokio::sync::Mutex<()>,
    /// Held by the step using the cache with `sharing=locked`.
    locked: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// One step's use of a cache mount directory, from before its restore to
/// after its archive ([`CacheMountUsers::enter`]).
#[derive(Debug)]
pub struct CacheMountUser {
    entry: std::sync::Arc<CacheMountUse>,
    /// Counted among the writers (until [`CacheMountUser::claim_archive`]).
    writable: bool,
    /// The fleet's copy could not be restored: this step's copy is not to
    /// replace it.
    pub restore_failed: bool,
    /// `sharing=locked`: the cache's lock, until the step's process ends.
    exclusive: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl CacheMountUsers {
    fn entry(&self, id: &str) -> std::sync::Arc<CacheMountUse> {
        std::sync::Arc::clone(
            self.by_id
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(id.to_string())
                .or_default(),
        )
    }

    /// Counts a step in as a user of cache `id` until the returned value
    /// is dropped.
    pub fn enter(&self, id: &str, writable: bool) -> CacheMountUser {
        let entry = self.entry(id);
        entry.users.fetch_add(1, SeqCst);
        Self::user(entry, writable, None)
    }

    /// [`CacheMountUsers::enter`] for `sharing=locked`, as BuildKit's: waits
    /// until no other step of this worker holds cache `id` locked, and
    /// holds it until [`CacheMountUser::unlock`]. A step locking several
    /// caches must lock them in the order of their ids.
    pub async fn enter_locked(&self, id: &str, writable: bool) -> CacheMountUser {
        let entry = self.entry(id);
        let lock = std::sync::Arc::clone(&entry.locked).lock_owned().await;
        entry.users.fetch_add(1, SeqCst);
        Self::user(entry, writable, Some(lock))
    }

    /// [`CacheMountUsers::enter`] for `sharing=private`, as BuildKit's:
    /// the cache itself when no other step of this worker uses it, else
    /// `None`, and the step gets a new cache of its own.
    pub fn enter_private(&self, id: &str, writable: bool) -> Option<CacheMountUser> {
        let entry = self.entry(id);
        entry.users.compare_exchange(0, 1, SeqCst, SeqCst).ok()?;
        Some(Self::user(entry, writable, None))
    }

    /// A user already counted in `entry`'s users.
    fn user(
        entry: std::sync::Arc<CacheMountUse>,
        writable: bool,
        exclusive: Option<tokio::sync::OwnedMutexGuard<()>>,
    ) -> CacheMountUser {
        if writable {
            entry.writers.fetch_add(1, SeqCst);
        }
        CacheMountUser {
            entry,
            writable,
            restore_failed: false,
            exclusive,
        }
    }
}

impl CacheMountUser {
    /// Lets the next `sharing=locked` step in: this one's process is over.
    /// (Its archive, if it makes it, is taken under the restore lock,
    /// which keeps the next step's mount waiting.)
    pub fn unlock(&mut self) {
        self.exclusive = None;
    }

    /// Waits until no other step of this worker is restoring the cache;
    /// holding the guard, [`CacheMountUser::alone`] says whether the
    /// directory may be swapped.
    pub async fn restoring(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.entry.swap.lock().await
    }

    /// Whether no other step of this worker uses the cache.
    pub fn alone(&self) -> bool {
        self.entry.users.load(SeqCst) == 1
    }

    /// Stops counting this step as a writer; true when it was the last
    /// one, which then archives the cache. Of writers leaving together
    /// exactly one is last, so a cache written by several steps is
    /// archived once, after all of them.
    pub fn claim_archive(&mut self) -> bool {
        if !self.writable {
            return false;
        }
        self.writable = false;
        self.entry.writers.fetch_sub(1, SeqCst) == 1
    }
}

impl Drop for CacheMountUser {
    fn drop(&mut self) {
        self.entry.users.fetch_sub(1, SeqCst);
        if self.writable {
            self.entry.writers.fetch_sub(1, SeqCst);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::CacheMountUsers;

    #[test]
    fn a_cache_is_swapped_only_with_no_other_user_and_archived_by_the_last_writer_out() {
        let users = CacheMountUsers::default();
        let mut first = users.enter("pkgs", true);
        assert!(first.alone());
        // A reader and another writer come: the directory is mounted,
        // not to be swapped.
        let mut reader = users.enter("pkgs", false);
        assert!(!reader.alone() && !first.alone());
        let mut second = users.enter("pkgs", true);
        // Another cache is another directory.
        assert!(users.enter("other", true).alone());
        // A reader never archives; of the two writers, whichever leaves
        // last does, even when the first is still busy elsewhere.
        assert!(!reader.claim_archive());
        assert!(!first.claim_archive(), "the second writer is still in");
        assert!(second.claim_archive());
        assert!(!second.claim_archive(), "claimed once");
        drop(first);
        drop(reader);
        assert!(second.alone());
        drop(second);
        assert!(users.enter("pkgs", false).alone());
    }

    #[tokio::test]
    async fn restores_of_one_cache_take_turns() {
        let users = CacheMountUsers::default();
        let (a, b) = (users.enter("pkgs", true), users.enter("pkgs", true));
        let held = a.restoring().await;
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), b.restoring())
                .await
                .is_err(),
            "two restores of one cache at once"
        );
        drop(held);
        let _turn = b.restoring().await;
    }
}
