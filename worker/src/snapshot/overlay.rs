//! overlayfs snapshots.

use super::{ChangeSource, Snapshot, SnapshotError, Snapshotter, io_err, remove_tree};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Stacks unpacked layers with overlayfs.
///
/// Snapshots are mounted `volatile` where the kernel offers it (5.10 and
/// later): overlayfs then skips every sync of the upper filesystem.
/// Without the option each unmount syncs the whole filesystem the state
/// directory is on, writing back everything dirty there (the new layer's
/// blob included) while the next steps start, and every `fsync` in a step
/// (dpkg issues many) waits for the disk. Those syncs buy nothing: a
/// worker that restarts removes every snapshot it finds, and what outlives
/// a snapshot was never made durable by them either (the new layer's
/// unpacked form, whose files are the upper dir's, hardlinked; its blob).
/// After the machine went down, the worker drops the unpacked layers it
/// holds and makes them again from their blobs (`boot.rs`).
#[derive(Debug, Clone)]
pub struct OverlaySnapshotter {
    root: PathBuf,
    /// Cleared after the kernel refused `volatile` once.
    volatile: Arc<AtomicBool>,
}

impl OverlaySnapshotter {
    /// Snapshots live under `root` (one directory each).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            volatile: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Whether snapshots are mounted `volatile` (until the kernel refuses
    /// the option, when the first snapshot is mounted without it).
    pub fn volatile(&self) -> bool {
        self.volatile.load(Ordering::Relaxed)
    }
}

struct OverlaySnapshot {
    dir: PathBuf,
    merged: PathBuf,
    upper: PathBuf,
    mounted: bool,
}

impl Snapshot for OverlaySnapshot {
    fn merged(&self) -> &Path {
        &self.merged
    }

    fn change(&self) -> ChangeSource {
        ChangeSource::Upper(self.upper.clone())
    }

    fn plain(&self) -> bool {
        !self.mounted
    }
}

impl Drop for OverlaySnapshot {
    fn drop(&mut self) {
        if self.mounted
            && let Err(e) = umount2(&self.merged, MntFlags::empty())
        {
            // A process may still hold the mount busy; detach it so the
            // directory can go and the kernel frees it when released.
            tracing::warn!(path = %self.merged.display(), error = %e, "unmount failed, detaching");
            let _ = umount2(&self.merged, MntFlags::MNT_DETACH);
        }
        if let Err(e) = remove_tree(&self.dir) {
            tracing::warn!(error = %e, "removing snapshot directory");
        }
    }
}

impl Snapshotter for OverlaySnapshotter {
    fn prepare(&self, id: &str, lowers: &[PathBuf]) -> Result<Box<dyn Snapshot>, SnapshotError> {
        let dir = self.root.join(id);
        let merged = dir.join("merged");
        let upper = dir.join("upper");
        let work = dir.join("work");
        let links = dir.join("l");
        if lowers.is_empty() {
            // Nothing to stack on (FROM scratch, COPY --link): the upper dir
            // is the root itself, as containerd binds a parentless
            // snapshot's directory. Writes go straight to the filesystem,
            // and the change is still read from `upper` (no whiteouts can
            // appear: there is nothing below to hide).
            std::fs::create_dir_all(&upper).map_err(io_err("creating", &upper))?;
            return Ok(Box::new(OverlaySnapshot {
                dir,
                merged: upper.clone(),
                upper,
                mounted: false,
            }));
        }
        for d in [&merged, &upper, &work, &links] {
            std::fs::create_dir_all(d).map_err(io_err("creating", d))?;
        }
        let mut snap = OverlaySnapshot {
            dir: dir.clone(),
            merged: merged.clone(),
            upper: upper.clone(),
            mounted: false,
        };
        // overlayfs takes the topmost lower first. Short symlinks keep the
        // option under the one-page limit however deep the layer chain is.
        // A layer can appear twice in a chain (two steps that change
        // nothing both give the empty layer) and overlayfs refuses a
        // lowerdir listed twice (ELOOP). Keeping only its topmost
        // occurrence changes nothing: that one already sets every path the
        // layer has, hiding the lower copy.
        let mut stack: Vec<&PathBuf> = Vec::with_capacity(lowers.len());
        for lower in lowers.iter().rev() {
            if !stack.contains(&lower) {
                stack.push(lower);
            }
        }
        let mut names = Vec::with_capacity(stack.len());
        for (i, lower) in stack.into_iter().enumerate() {
            let link = links.join(i.to_string());
            std::os::unix::fs::symlink(lower, &link).map_err(io_err("linking", &link))?;
            names.push(format!("l/{i}"));
        }
        let lowerdir = names.join(":");
        let opts = format!("lowerdir={lowerdir},upperdir=upper,workdir=work,index=off");
        // Read once: steps mounting at the same moment on an old kernel
        // each retry their own refused mount, whoever clears the flag.
        let volatile = self.volatile();
        let mut result = if volatile {
            mount_in(&dir, &merged, &format!("{opts},volatile"))
        } else {
            mount_in(&dir, &merged, &opts)
        };
        if volatile && result == Err(nix::Error::EINVAL) {
            // A kernel before 5.10 does not know the option: without it
            // the mount works, and later ones go without it at once. The
            // work dir is made afresh, in case the refusal came after
            // overlayfs had marked it for a volatile mount; if the plain
            // mount fails too, its error is the one reported.
            let _ = remove_tree(&work);
            std::fs::create_dir_all(&work).map_err(io_err("creating", &work))?;
            result = mount_in(&dir, &merged, &opts);
            if result.is_ok() {
                tracing::info!(
                    "overlayfs refused the volatile option: snapshots are mounted without it"
                );
                self.volatile.store(false, Ordering::Relaxed);
            }
        }
        result.map_err(|source| SnapshotError::Mount {
            target: merged.clone(),
            lowers: lowers
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
            source,
        })?;
        snap.mounted = true;
        Ok(Box::new(snap))
    }
}

/// Mounts an overlay on `merged` with `opts`, whose relative paths
/// resolve against `dir`: from a helper thread that first unshares its
/// filesystem context, so its chdir stays its own.
fn mount_in(dir: &Path, merged: &Path, opts: &str) -> nix::Result<()> {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)?;
            nix::unistd::chdir(dir)?;
            mount(
                Some("overlay"),
                merged,
                Some("overlay"),
                MsFlags::empty(),
                Some(opts),
            )
        })
        .join()
        .unwrap_or(Err(nix::Error::EIO))
    })
}
