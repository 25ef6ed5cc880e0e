//! The build-context files a job reads, materialised from the local store
//! (files by digest) with the modes, owners and modification times the
//! client's manifest records — what BuildKit's context transfer makes.

use crate::store::Store;
use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use strata_proto::common::v1 as common;

fn set_mtime(path: &Path, mtime: Option<&prost_types::Timestamp>) -> Result<(), String> {
    if let Some(t) = mtime {
        let ts = TimeSpec::new(t.seconds, i64::from(t.nanos));
        utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &ts,
            &ts,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| format!("{}: setting mtime: {e}", path.display()))?;
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
) -> Result<(), String> {
    std::fs::create_dir_all(dst).map_err(|e| format!("{}: {e}", dst.display()))?;
    let mut links: BTreeSet<&str> = BTreeSet::new();
    let mut files: BTreeSet<&str> = BTreeSet::new();
    let mut dirs = Vec::new();
    for e in &manifest.entries {
        let p = e.path.as_str();
        if p.is_empty()
            || p.starts_with('/')
            || p.split('/').any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(format!("context entry {p:?} is not a clean relative path"));
        }
        let mut prefix = p;
        while let Some((parent, _)) = prefix.rsplit_once('/') {
            if links.contains(parent) {
                return Err(format!(
                    "context entry {p:?} lies under the symlink {parent:?}"
                ));
            }
            prefix = parent;
        }
        let to = dst.join(p);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let err = |e: std::io::Error| format!("{}: {e}", to.display());
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
                let blob = store.blob_path(&e.digest).map_err(|e| e.to_string())?;
                std::fs::copy(&blob, &to).map_err(|x| format!("{p} ({}): {x}", e.digest))?;
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
            _ => return Err(format!("context entry {p:?} has an unknown kind")),
        }
    }
    // Directory modes and times last, deepest first: writing their
    // children changed the times, and a read-only mode would stop them.
    for e in dirs.iter().rev() {
        let to = dst.join(&e.path);
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(e.mode & 0o7777))
            .map_err(|x| format!("{}: {x}", to.display()))?;
        set_mtime(&to, e.mtime.as_ref())?;
    }
    Ok(())
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
