//! overlayfs snapshots.

use super::{ChangeSource, Snapshot, SnapshotError, Snapshotter, io_err, remove_tree};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use std::path::{Path, PathBuf};

/// Stacks unpacked layers with overlayfs.
#[derive(Debug, Clone)]
pub struct OverlaySnapshotter {
    root: PathBuf,
}

impl OverlaySnapshotter {
    /// Snapshots live under `root` (one directory each).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
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
        // Relative option paths resolve against the current directory, so
        // mount from inside the snapshot dir, on a helper thread that first
        // unshares its filesystem context: its chdir stays its own.
        let result = std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)?;
                nix::unistd::chdir(&dir)?;
                mount(
                    Some("overlay"),
                    &merged,
                    Some("overlay"),
                    MsFlags::empty(),
                    Some(opts.as_str()),
                )
            })
            .join()
            .unwrap_or(Err(nix::Error::EIO))
        });
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
