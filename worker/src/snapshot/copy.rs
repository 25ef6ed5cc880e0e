//! Copy-based snapshots for hosts without overlayfs: the parents are
//! applied into a plain directory; the change is found by comparing it with
//! a second, untouched copy.

use super::{ChangeSource, Snapshot, SnapshotError, Snapshotter, io_err, remove_tree};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Copies unpacked layers into plain directories.
#[derive(Debug, Clone)]
pub struct CopySnapshotter {
    root: PathBuf,
}

impl CopySnapshotter {
    /// Snapshots live under `root` (one directory each).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
}

struct CopySnapshot {
    dir: PathBuf,
    merged: PathBuf,
    lower: PathBuf,
}

impl Snapshot for CopySnapshot {
    fn merged(&self) -> &Path {
        &self.merged
    }

    fn change(&self) -> ChangeSource {
        ChangeSource::Trees {
            lower: self.lower.clone(),
        }
    }
}

impl Drop for CopySnapshot {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(&self.dir) {
            tracing::warn!(error = %e, "removing snapshot directory");
        }
    }
}

impl Snapshotter for CopySnapshotter {
    fn prepare(&self, id: &str, lowers: &[PathBuf]) -> Result<Box<dyn Snapshot>, SnapshotError> {
        let dir = self.root.join(id);
        let merged = dir.join("merged");
        let lower = dir.join("lower");
        for d in [&merged, &lower] {
            std::fs::create_dir_all(d).map_err(io_err("creating", d))?;
        }
        let snap = CopySnapshot {
            dir,
            merged: merged.clone(),
            lower: lower.clone(),
        };
        for layer in lowers {
            apply_layer_dir(layer, &merged)?;
            apply_layer_dir(layer, &lower)?;
        }
        Ok(Box::new(snap))
    }
}

/// Applies an overlay-native layer directory (whiteouts as char 0:0
/// devices, opaque directories marked by xattr) onto a plain directory.
fn apply_layer_dir(src: &Path, dst: &Path) -> Result<(), SnapshotError> {
    let mut names: Vec<_> = std::fs::read_dir(src)
        .map_err(io_err("listing", src))?
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let from = src.join(&name);
        let to = dst.join(&name);
        let meta = std::fs::symlink_metadata(&from).map_err(io_err("reading", &from))?;
        let existing = std::fs::symlink_metadata(&to).ok();
        if meta.file_type().is_char_device() && meta.rdev() == 0 {
            remove_any(&to, existing.as_ref())?;
            continue;
        }
        if meta.is_dir() {
            let opaque = xattr::get(&from, "trusted.overlay.opaque")
                .ok()
                .flatten()
                .is_some_and(|v| v == b"y");
            if existing.as_ref().is_some_and(|e| !e.is_dir()) || opaque {
                remove_any(&to, existing.as_ref())?;
            }
            if !to.is_dir() {
                std::fs::create_dir(&to).map_err(io_err("creating", &to))?;
            }
            apply_layer_dir(&from, &to)?;
        } else {
            remove_any(&to, existing.as_ref())?;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&from).map_err(io_err("reading link", &from))?;
                std::os::unix::fs::symlink(target, &to).map_err(io_err("creating link", &to))?;
            } else if meta.is_file() {
                std::fs::copy(&from, &to).map_err(io_err("copying", &from))?;
            } else {
                let kind = nix::sys::stat::SFlag::from_bits_truncate(meta.mode() & libc::S_IFMT);
                let perm = nix::sys::stat::Mode::from_bits_truncate(meta.mode() & 0o7777);
                nix::sys::stat::mknod(&to, kind, perm, meta.rdev())
                    .map_err(|e| io_err("creating", &to)(e.into()))?;
            }
        }
        copy_meta(&from, &to, &meta)?;
    }
    Ok(())
}

fn remove_any(path: &Path, meta: Option<&std::fs::Metadata>) -> Result<(), SnapshotError> {
    match meta {
        None => Ok(()),
        Some(m) if m.is_dir() => std::fs::remove_dir_all(path).map_err(io_err("removing", path)),
        Some(_) => std::fs::remove_file(path).map_err(io_err("removing", path)),
    }
}

fn copy_meta(from: &Path, to: &Path, meta: &std::fs::Metadata) -> Result<(), SnapshotError> {
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))
        .map_err(io_err("chown", to))?;
    if !meta.file_type().is_symlink() {
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(io_err("chmod", to))?;
    }
    if let Ok(names) = xattr::list(from) {
        for name in names {
            if name.to_string_lossy().starts_with("trusted.overlay.") {
                continue;
            }
            if let Ok(Some(v)) = xattr::get(from, &name) {
                let _ = xattr::set(to, &name, &v);
            }
        }
    }
    let t = nix::sys::time::TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        to,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| io_err("setting times", to)(e.into()))
}
