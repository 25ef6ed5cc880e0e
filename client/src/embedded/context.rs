//! Materialising the build context for the in-process worker: exactly the
//! files of the context manifest (so `.dockerignore`d files stay invisible),
//! owned by root as BuildKit's context transfer makes them, with their
//! modes, modification times and hardlinks.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use strata_frontend::context::{ContextManifest, EntryKind};

/// Copies the manifest's entries from `src` into the empty directory `dst`.
pub fn materialize(src: &Path, manifest: &ContextManifest, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    // Hardlinked context files stay linked, as BuildKit's context transfer
    // (fsutil) keeps them: (dev, inode) of a source to its first copy.
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for e in &manifest.entries {
        let from = src.join(&e.path);
        let to = dst.join(&e.path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match e.kind {
            EntryKind::Dir => std::fs::create_dir_all(&to)?,
            EntryKind::File => {
                let meta = std::fs::symlink_metadata(&from)?;
                match links.get(&(meta.dev(), meta.ino())) {
                    Some(first) => std::fs::hard_link(first, &to)?,
                    None => {
                        std::fs::copy(&from, &to)?;
                        links.insert((meta.dev(), meta.ino()), to.clone());
                    }
                }
            }
            EntryKind::Symlink => {
                let target = e.link_target.clone().unwrap_or_default();
                std::os::unix::fs::symlink(target, &to)?;
            }
        }
        std::os::unix::fs::lchown(&to, Some(0), Some(0))?;
        if e.kind != EntryKind::Symlink {
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(e.mode))?;
        }
    }
    // Times last: creating children changes a directory's mtime.
    for e in manifest.entries.iter().rev() {
        let from = src.join(&e.path);
        let to = dst.join(&e.path);
        if e.kind == EntryKind::Symlink {
            continue;
        }
        if let Ok(meta) = std::fs::symlink_metadata(&from) {
            let mtime = std::time::UNIX_EPOCH
                + std::time::Duration::new(
                    meta.mtime().max(0) as u64,
                    meta.mtime_nsec().clamp(0, 999_999_999) as u32,
                );
            let f = std::fs::File::open(&to)?;
            f.set_modified(mtime)?;
        }
    }
    Ok(())
}
