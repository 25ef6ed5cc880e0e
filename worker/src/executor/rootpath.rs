//! Paths inside a rootfs: symlinks are followed as the container would see
//! them, never out of the rootfs (containerd's `fs.RootPath`).

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Linux gives up after 40 links; continuity after 255. Either is far above
/// what a real image needs.
const MAX_LINKS: usize = 255;

/// Resolves the container path `path` inside `root`. Symlinks are followed
/// with `root` as `/` and `..` stops at `root`; missing components are kept
/// as they are.
pub(crate) fn root_path(root: &Path, path: &str) -> io::Result<PathBuf> {
    let mut resolved: Vec<String> = Vec::new();
    let mut pending: VecDeque<String> = components(Path::new(path));
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let candidate = join(root, &resolved).join(&name);
        match fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::other(format!(
                        "too many symlinks resolving {path}"
                    )));
                }
                let target = fs::read_link(&candidate)?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for (i, part) in components(&target).into_iter().enumerate() {
                    pending.insert(i, part);
                }
            }
            _ => resolved.push(name),
        }
    }
    Ok(join(root, &resolved))
}

/// The container path of `host` under `root`, e.g. `/etc/hosts`.
pub(crate) fn container_path(root: &Path, host: &Path) -> String {
    let rel = host.strip_prefix(root).unwrap_or(host);
    let mut out = String::new();
    for part in rel.components() {
        if let Component::Normal(name) = part {
            out.push('/');
            out.push_str(&name.to_string_lossy());
        }
    }
    if out.is_empty() { "/".into() } else { out }
}

/// Creates `path` and its missing parents with mode 0755, owned by
/// `uid:gid` (moby's `MkdirAllAndChown`, as BuildKit uses for the working
/// directory). Existing directories are left alone.
pub(crate) fn mkdir_all_chown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut cur = path;
    loop {
        match fs::symlink_metadata(cur) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{} exists and is not a directory", cur.display()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(cur),
            Err(e) => return Err(e),
        }
        match cur.parent() {
            Some(parent) => cur = parent,
            None => break,
        }
    }
    for dir in missing.into_iter().rev() {
        fs::DirBuilder::new().mode(0o755).create(dir)?;
        // The umask may have taken bits away; moby sets the mode exactly.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
    }
    Ok(())
}

fn components(path: &Path) -> VecDeque<String> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

fn join(root: &Path, parts: &[String]) -> PathBuf {
    let mut out = root.to_path_buf();
    out.extend(parts);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("run/systemd")).unwrap();
        fs::create_dir(root.join("etc")).unwrap();
        symlink("/run/systemd/resolv.conf", root.join("etc/resolv.conf")).unwrap();
        symlink("../../../../..", root.join("etc/up")).unwrap();
        symlink("/etc/loop", root.join("etc/loop")).unwrap();

        assert_eq!(
            root_path(root, "/etc/resolv.conf").unwrap(),
            root.join("run/systemd/resolv.conf")
        );
        assert_eq!(
            root_path(root, "/etc/up/passwd").unwrap(),
            root.join("passwd")
        );
        assert_eq!(root_path(root, "/../../x/./y").unwrap(), root.join("x/y"));
        assert!(root_path(root, "/etc/loop").is_err());
    }

    #[test]
    fn container_paths_are_absolute() {
        let root = Path::new("/r/rootfs");
        assert_eq!(
            container_path(root, Path::new("/r/rootfs/etc/hosts")),
            "/etc/hosts"
        );
        assert_eq!(container_path(root, root), "/");
    }

    #[test]
    fn mkdir_all_chown_creates_only_missing_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a/b/c");
        mkdir_all_chown(&target, 1000, 1000).unwrap();
        let meta = fs::metadata(&target).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
        fs::write(dir.path().join("file"), b"").unwrap();
        assert!(mkdir_all_chown(&dir.path().join("file/x"), 0, 0).is_err());
    }
}
