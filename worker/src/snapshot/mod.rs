//! Snapshotters: a writable root filesystem stacked on read-only parent
//! layers, and the change a step made to it.
//!
//! [`OverlaySnapshotter`] mounts overlayfs (the parents as lowerdirs, a fresh
//! upper dir); [`CopySnapshotter`] copies the parents into a plain directory
//! where overlayfs is not available. Either way the caller gets a
//! [`Snapshot`] whose `merged` path is the container's root and which
//! unmounts and removes itself on drop, on every path: success, failure,
//! cancel. [`recover`] cleans what a crashed worker left behind.

mod copy;
mod overlay;

pub use copy::CopySnapshotter;
pub use overlay::OverlaySnapshotter;

use std::path::{Path, PathBuf};
use thiserror::Error;

/// A snapshotter failure, naming the path or mount involved.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The path it was attempted on.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// overlayfs refused the mount.
    #[error("mounting overlayfs at {target} failed: {source} (lowerdirs: {lowers})")]
    Mount {
        /// Mount point.
        target: PathBuf,
        /// The lowerdir option.
        lowers: String,
        /// The OS error.
        #[source]
        source: nix::Error,
    },
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// How a snapshot's change is found after the step ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeSource {
    /// overlayfs upper dir: whiteout devices and opaque xattrs mark deletions.
    Upper(PathBuf),
    /// Compare `merged` against this copy of the parents.
    Trees {
        /// The parents' merged view, untouched by the step.
        lower: PathBuf,
    },
}

/// A mounted, writable root filesystem.
pub trait Snapshot: Send {
    /// The container's root.
    fn merged(&self) -> &Path;
    /// Where the step's change can be read from.
    fn change(&self) -> ChangeSource;
    /// Whether `merged` is a plain directory (no overlay mount over it)
    /// whose files nothing but the step itself reads before the layer is
    /// made: COPY may then hardlink unchanged files from the worker's
    /// read-only context trees instead of copying their bytes.
    fn plain(&self) -> bool {
        false
    }
}

/// Makes snapshots on top of unpacked parent layers.
pub trait Snapshotter: Send + Sync {
    /// Prepares a writable root stacked on `lowers` (the bottom layer
    /// first). `id` names the snapshot's directory.
    fn prepare(&self, id: &str, lowers: &[PathBuf]) -> Result<Box<dyn Snapshot>, SnapshotError>;
}

/// Whether the kernel offers overlayfs (as root).
pub fn overlay_supported() -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .map(|s| s.lines().any(|l| l.trim_end().ends_with("overlay")))
        .unwrap_or(false)
}

/// Unmounts and removes every snapshot directory under `root` left by a
/// worker that died mid-step.
pub fn recover(root: &Path) -> Result<usize, SnapshotError> {
    let mut cleaned = 0;
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err("listing", root)(e)),
    };
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for entry in entries {
        let entry = entry.map_err(io_err("listing", root))?;
        let dir = entry.path();
        let merged = dir.join("merged");
        if mountinfo_has(&mounts, &merged) {
            let _ = nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH);
        }
        remove_tree(&dir)?;
        cleaned += 1;
    }
    Ok(cleaned)
}

/// Whether `/proc/self/mountinfo` text lists `path` as a mount point.
pub fn mountinfo_has(mountinfo: &str, path: &Path) -> bool {
    let p = path.to_string_lossy();
    mountinfo.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|mp| unescape_mountinfo(mp) == p)
    })
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Removes a directory tree, also when it contains read-only directories.
pub(crate) fn remove_tree(path: &Path) -> Result<(), SnapshotError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", path)(e)),
    }
}

/// Marks `dir` (created if missing) as the top of directory hierarchies
/// for ext4's Orlov allocator (`chattr +T`), so each directory made in it
/// — a snapshot, a materialised context, a layer being unpacked — starts
/// in a block group of its own choosing rather than its parent's. Without
/// it, on ext4 without a journal, a step creating thousands of files right
/// after the previous step's snapshot was deleted walks every recently
/// freed inode of that group for each new file (`recently_deleted`): 20,000
/// files took 4-8 s instead of 0.6-0.8 s here. Filesystems without the
/// flag are left alone.
pub fn spread_new_dirs(dir: &Path) {
    use rustix::fs::{IFlags, ioctl_getflags, ioctl_setflags};
    let _ = std::fs::create_dir_all(dir);
    let Ok(file) = std::fs::File::open(dir) else {
        return;
    };
    if let Ok(flags) = ioctl_getflags(&file)
        && !flags.contains(IFlags::TOPDIR)
    {
        let _ = ioctl_setflags(&file, flags | IFlags::TOPDIR);
    }
}
