//! The build-context files a job reads, materialised from the local store
//! (files by digest) with the modes, owners and modification times the
//! client's manifest records — what BuildKit's context transfer makes —
//! and kept between jobs ([`ContextCache`]), as BuildKit keeps its context
//! snapshot between builds: the next step or build that reads the same
//! files finds them written.

use crate::store::Store;
use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};
use strata_proto::common::v1 as common;
use strata_store::BlobError;

/// Why a context tree could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The manifest itself is wrong (a path that is not clean, an entry
    /// under a symlink it made, an unknown kind): the job is invalid.
    #[error("{0}")]
    Invalid(String),
    /// Writing the tree or reading a blob failed (a full disk, a blob
    /// damaged or gone): the job may succeed on another try.
    #[error("{0}")]
    Io(String),
}

fn set_mtime(path: &Path, mtime: Option<&prost_types::Timestamp>) -> Result<(), ContextError> {
    if let Some(t) = mtime {
        let ts = TimeSpec::new(t.seconds, i64::from(t.nanos));
        utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &ts,
            &ts,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| ContextError::Io(format!("{}: setting mtime: {e}", path.display())))?;
    }
    Ok(())
}

/// Writes `manifest`'s entries under the empty directory `dst`. Every file's
/// blob must be in `store`. Entries are validated: clean relative paths
/// only, and nothing written through a symlink the manifest created.
pub fn materialize(
    store: &Store,
    manifest: &common::ContextManifest,
    dst: &Path,
) -> Result<(), ContextError> {
    let io = |path: &Path, e: &dyn std::fmt::Display| {
        ContextError::Io(format!("{}: {e}", path.display()))
    };
    std::fs::create_dir_all(dst).map_err(|e| io(dst, &e))?;
    let mut links: BTreeSet<&str> = BTreeSet::new();
    let mut files: BTreeSet<&str> = BTreeSet::new();
    let mut dirs = Vec::new();
    for e in &manifest.entries {
        let p = e.path.as_str();
        if p.is_empty()
            || p.starts_with('/')
            || p.split('/').any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(ContextError::Invalid(format!(
                "context entry {p:?} is not a clean relative path"
            )));
        }
        let mut prefix = p;
        while let Some((parent, _)) = prefix.rsplit_once('/') {
            if links.contains(parent) {
                return Err(ContextError::Invalid(format!(
                    "context entry {p:?} lies under the symlink {parent:?}"
                )));
            }
            prefix = parent;
        }
        let to = dst.join(p);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, &e))?;
        }
        let err = |e: std::io::Error| io(&to, &e);
        match common::EntryKind::try_from(e.kind) {
            Ok(common::EntryKind::Directory) => {
                std::fs::create_dir_all(&to).map_err(err)?;
                std::os::unix::fs::lchown(&to, Some(e.uid), Some(e.gid)).map_err(err)?;
                dirs.push(e);
            }
            Ok(common::EntryKind::File)
                if !e.hardlink.is_empty() && files.contains(e.hardlink.as_str()) =>
            {
                std::fs::hard_link(dst.join(&e.hardlink), &to).map_err(err)?;
                files.insert(p);
            }
            Ok(common::EntryKind::File) => {
                let blob = store
                    .blob_path(&e.digest)
                    .map_err(|e| ContextError::Invalid(e.to_string()))?;
                copy_verified(&blob, &to, &e.digest).map_err(|x| match x {
                    BlobError::Mismatch { .. } => {
                        let _ = store.verify_blob(&e.digest);
                        ContextError::Io(format!(
                            "{p}: the stored {x}; removed, to be fetched again"
                        ))
                    }
                    x => ContextError::Io(format!("{p} ({}): {x}", e.digest)),
                })?;
                std::os::unix::fs::lchown(&to, Some(e.uid), Some(e.gid)).map_err(err)?;
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(e.mode & 0o7777))
                    .map_err(err)?;
                set_mtime(&to, e.mtime.as_ref())?;
                files.insert(p);
            }
            Ok(common::EntryKind::Symlink) => {
                std::os::unix::fs::symlink(&e.link_target, &to).map_err(err)?;
                std::os::unix::fs::lchown(&to, Some(e.uid), Some(e.gid)).map_err(err)?;
                set_mtime(&to, e.mtime.as_ref())?;
                links.insert(p);
            }
            _ => {
                return Err(ContextError::Invalid(format!(
                    "context entry {p:?} has an unknown kind"
                )));
            }
        }
    }
    // Directory modes and times last, deepest first: writing their
    // children changed the times, and a read-only mode would stop them.
    for e in dirs.iter().rev() {
        let to = dst.join(&e.path);
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(e.mode & 0o7777))
            .map_err(|x| io(&to, &x))?;
        set_mtime(&to, e.mtime.as_ref())?;
    }
    Ok(())
}

/// Copies a context file's blob to `to`, checking on the way that its
/// bytes hash to `digest` (`Mismatch` if not). The tree is used as found
/// by every COPY from it, so a blob damaged on disk (say, cut short by
/// the machine going down) must not reach it.
fn copy_verified(blob: &Path, to: &Path, digest: &str) -> Result<(), BlobError> {
    let mut src = std::fs::File::open(blob).map_err(strata_store::io_err("opening", blob))?;
    let mut out = std::fs::File::create(to).map_err(strata_store::io_err("creating", to))?;
    let (actual, size) = strata_store::copy_hashing(&mut src, blob, &mut out, to)?;
    strata_store::check_digest(digest, actual, size)
}

/// File digests of a manifest.
pub fn file_digests(manifest: &common::ContextManifest) -> Vec<String> {
    let mut out: Vec<String> = manifest
        .entries
        .iter()
        .filter(|e| e.kind == common::EntryKind::File as i32)
        .map(|e| e.digest.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Unused materialised contexts kept at most (least recently used go
/// first).
const KEEP_UNUSED: usize = 8;
/// Bytes of unused materialised contexts kept at most.
const KEEP_UNUSED_BYTES: u64 = 2 << 30;

/// Materialised contexts under one directory, one per distinct manifest
/// (`<root>/<sha256 of the manifest>`), shared by the jobs that read the
/// same files and kept for later ones within [`KEEP_UNUSED`] directories
/// and [`KEEP_UNUSED_BYTES`]. Jobs only read them: COPY reads its sources,
/// and bind mounts of the context are read-only.
#[derive(Debug)]
pub struct ContextCache {
    root: PathBuf,
    entries: Mutex<HashMap<String, Entry>>,
    counter: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Entry {
    users: usize,
    last_used: Instant,
    bytes: u64,
}

/// A materialised context in use; the directory stays until it is dropped.
#[derive(Debug)]
pub struct ContextLease {
    cache: Arc<ContextCache>,
    key: String,
    dir: PathBuf,
}

impl ContextLease {
    /// The context's root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for ContextLease {
    fn drop(&mut self) {
        let mut entries = self.cache.lock();
        if let Some(e) = entries.get_mut(&self.key) {
            e.users = e.users.saturating_sub(1);
            e.last_used = Instant::now();
            // The next run's idea of "recently used".
            let _ = std::fs::File::open(self.cache.size_file(&self.key))
                .and_then(|f| f.set_modified(SystemTime::now()));
        }
    }
}

/// What identifies a manifest's materialised tree: every field that
/// reaches the files (paths, kinds, contents, modes, owners, times, links).
pub fn manifest_key(manifest: &common::ContextManifest) -> String {
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    for e in &manifest.entries {
        field(e.path.as_bytes());
        field(&e.kind.to_le_bytes());
        field(&e.mode.to_le_bytes());
        field(&e.uid.to_le_bytes());
        field(&e.gid.to_le_bytes());
        field(e.digest.as_bytes());
        field(e.link_target.as_bytes());
        field(e.hardlink.as_bytes());
        let (secs, nanos) = e
            .mtime
            .as_ref()
            .map_or((i64::MIN, 0), |t| (t.seconds, t.nanos));
        field(&secs.to_le_bytes());
        field(&nanos.to_le_bytes());
        let mut xattrs: Vec<_> = e.xattrs.iter().collect();
        xattrs.sort();
        for (k, v) in xattrs {
            field(k.as_bytes());
            field(v);
        }
        field(b"");
    }
    hex::encode(h.finalize())
}

impl ContextCache {
    /// The cache in `root`, keeping the trees an earlier run completed
    /// (an embedded build is a new process each time): a tree counts once
    /// its `<key>.size` file exists, written after the tree was renamed
    /// into place; anything else there is removed.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, String> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        // A tree is used as found by every COPY from it: after the
        // machine went down one may hold a torn file. Then none is kept
        // (the sweep below removes them) and they are made again from the
        // context's blobs.
        let another_boot = crate::boot::opened_in_another_boot(&root);
        if another_boot {
            tracing::warn!(
                dir = %root.display(),
                "the machine went down since these build contexts were made: they are dropped"
            );
        }
        crate::snapshot::spread_new_dirs(&root);
        let listing = std::fs::read_dir(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        let names: Vec<String> = listing
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let (now, system_now) = (Instant::now(), SystemTime::now());
        let mut entries = HashMap::new();
        for name in names.iter().filter(|_| !another_boot) {
            let is_key = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
            if !is_key || !root.join(name).is_dir() {
                continue;
            }
            let size_file = root.join(format!("{name}.size"));
            let Some(bytes) = std::fs::read_to_string(&size_file)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
            else {
                continue;
            };
            let age = std::fs::metadata(&size_file)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| system_now.duration_since(t).ok())
                .unwrap_or_default();
            let last_used = now.checked_sub(age).unwrap_or(now);
            entries.insert(
                name.clone(),
                Entry {
                    users: 0,
                    last_used,
                    bytes,
                },
            );
        }
        for name in &names {
            let key = name.strip_suffix(".size").unwrap_or(name);
            if entries.contains_key(key) || crate::boot::is_record(name) {
                continue;
            }
            let path = root.join(name);
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(|e| format!("{}: {e}", path.display()))?;
        }
        // Only now: a worker stopped before the sweep ended sweeps again.
        crate::boot::record_boot(&root);
        let cache = Self {
            root,
            entries: Mutex::new(entries),
            counter: std::sync::atomic::AtomicU64::new(0),
        };
        cache.evict();
        Ok(cache)
    }

    fn size_file(&self, key: &str) -> PathBuf {
        self.root.join(format!("{key}.size"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The materialised tree of `manifest` (every file's blob must be in
    /// `store`), written now unless a job already wrote it. Blocking.
    pub fn acquire(
        self: &Arc<Self>,
        store: &Store,
        manifest: &common::ContextManifest,
    ) -> Result<ContextLease, ContextError> {
        let key = manifest_key(manifest);
        let dir = self.root.join(&key);
        let lease = |cache: &Arc<Self>| ContextLease {
            cache: Arc::clone(cache),
            key: key.clone(),
            dir: dir.clone(),
        };
        if let Some(e) = self.lock().get_mut(&key) {
            e.users += 1;
            return Ok(lease(self));
        }
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.root.join(format!("tmp-{n}"));
        if let Err(e) = materialize(store, manifest, &tmp) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let bytes: u64 = manifest.entries.iter().map(|e| e.size).sum();
        let raced = {
            let mut entries = self.lock();
            match entries.get_mut(&key) {
                // Another job wrote the same tree meanwhile: use theirs.
                Some(e) => {
                    e.users += 1;
                    true
                }
                None => {
                    let size_file = self.size_file(&key);
                    let placed = std::fs::rename(&tmp, &dir)
                        .map_err(|e| format!("{}: {e}", dir.display()))
                        .and_then(|()| {
                            std::fs::write(&size_file, bytes.to_string())
                                .map_err(|e| format!("{}: {e}", size_file.display()))
                        });
                    if let Err(e) = placed {
                        let _ = std::fs::remove_dir_all(&tmp);
                        let _ = std::fs::remove_dir_all(&dir);
                        return Err(ContextError::Io(e));
                    }
                    entries.insert(
                        key.clone(),
                        Entry {
                            users: 1,
                            last_used: Instant::now(),
                            bytes,
                        },
                    );
                    false
                }
            }
        };
        if raced {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        let held = lease(self);
        self.evict();
        Ok(held)
    }

    /// Removes unused trees beyond the limits, least recently used first.
    /// Blocking.
    pub fn evict(&self) {
        let doomed: Vec<PathBuf> = {
            let mut entries = self.lock();
            let mut unused: Vec<(Instant, u64, String)> = entries
                .iter()
                .filter(|(_, e)| e.users == 0)
                .map(|(k, e)| (e.last_used, e.bytes, k.clone()))
                .collect();
            unused.sort();
            let mut bytes: u64 = unused.iter().map(|u| u.1).sum();
            let mut count = unused.len();
            let mut doomed = Vec::new();
            for (_, size, key) in unused {
                if count <= KEEP_UNUSED && bytes <= KEEP_UNUSED_BYTES {
                    break;
                }
                entries.remove(&key);
                // Unregistered first: a crash from here on leaves a tree
                // that the next open removes.
                let _ = std::fs::remove_file(self.size_file(&key));
                // Renamed under the lock, so a tree being deleted is never
                // found under its key.
                let n = self
                    .counter
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let trash = self.root.join(format!("tmp-{n}"));
                if std::fs::rename(self.root.join(&key), &trash).is_ok() {
                    doomed.push(trash);
                }
                count -= 1;
                bytes -= size;
            }
            doomed
        };
        for d in doomed {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    /// Distinct trees kept (in use or not).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no tree is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
