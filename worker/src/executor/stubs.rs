//! Mount stubs: empty files and directories created in the rootfs so that a
//! mount has a target, removed after the step when they are still empty,
//! so they never reach the layer (BuildKit's `executor/stubs.go`, in its
//! recursive form, which the Dockerfile frontend uses).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tracing::warn;

use super::MountStub;
use super::rootpath::{container_path, root_path};

/// The stubs of one step, in the order they were found.
#[derive(Debug, Default)]
pub(crate) struct Stubs {
    root: PathBuf,
    entries: Vec<Entry>,
    /// Existing directories that received a stub, with their times.
    parents: Vec<Parent>,
}

#[derive(Debug)]
struct Parent {
    path: PathBuf,
    /// atime and mtime before the stubs were created.
    before: (SystemTime, SystemTime),
    /// mtime right after the stubs were created.
    after: Option<SystemTime>,
}

#[derive(Debug, Clone)]
struct Entry {
    host: PathBuf,
    is_dir: bool,
}

impl Stubs {
    /// Finds the targets (container path, whether a directory is mounted
    /// there) that do not exist in `root`, with their missing parents.
    pub(crate) fn plan(root: &Path, targets: &[(String, bool)]) -> Self {
        let mut entries: Vec<Entry> = Vec::new();
        for (target, target_is_dir) in targets {
            let Ok(real) = root_path(root, target) else {
                continue;
            };
            let mut cur = real.as_path();
            let mut leaf = true;
            while cur != root {
                match fs::symlink_metadata(cur) {
                    Err(e) if is_missing(&e) => {}
                    _ => break,
                }
                if !entries.iter().any(|e| e.host == cur) {
                    entries.push(Entry {
                        host: cur.to_path_buf(),
                        is_dir: !leaf || *target_is_dir,
                    });
                }
                leaf = false;
                match cur.parent() {
                    Some(parent) => cur = parent,
                    None => break,
                }
            }
        }
        let mut parents: Vec<Parent> = Vec::new();
        for entry in &entries {
            let Some(parent) = entry.host.parent() else {
                continue;
            };
            if entries.iter().any(|e| e.host == parent) || parents.iter().any(|p| p.path == parent)
            {
                continue;
            }
            if let Ok(meta) = fs::metadata(parent)
                && let (Ok(atime), Ok(mtime)) = (meta.accessed(), meta.modified())
            {
                parents.push(Parent {
                    path: parent.to_path_buf(),
                    before: (atime, mtime),
                    after: None,
                });
            }
        }
        Self {
            root: root.to_path_buf(),
            entries,
            parents,
        }
    }

    /// Creates the stubs, parents first: directories 0755, files 0644 and
    /// empty, owned by root (what runc would create).
    pub(crate) fn create(&mut self) -> io::Result<()> {
        let mut ordered: Vec<&Entry> = self.entries.iter().collect();
        ordered.sort_by_key(|e| e.host.components().count());
        for entry in ordered {
            let made = if entry.is_dir {
                fs::DirBuilder::new().mode(0o755).create(&entry.host)
            } else {
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(&entry.host)
                    .map(drop)
            };
            match made {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "mount target {}: {e}",
                            container_path(&self.root, &entry.host)
                        ),
                    ));
                }
                _ => {}
            }
        }
        for parent in &mut self.parents {
            parent.after = fs::metadata(&parent.path).and_then(|m| m.modified()).ok();
        }
        Ok(())
    }

    /// Removes the stubs that are still empty, deepest first; reports every
    /// stub. A parent that existed keeps the times it had before the step
    /// if nothing but the stubs touched it, else the times it had before
    /// the removal (BuildKit restores the latter only, which leaves the
    /// stub's creation in the parent's mtime).
    pub(crate) fn remove(&self) -> Vec<MountStub> {
        let untouched: Vec<(&Path, (SystemTime, SystemTime))> = self
            .parents
            .iter()
            .filter(|p| {
                p.after.is_some()
                    && fs::metadata(&p.path).and_then(|m| m.modified()).ok() == p.after
            })
            .map(|p| (p.path.as_path(), p.before))
            .collect();
        let mut ordered: Vec<&Entry> = self.entries.iter().collect();
        ordered.sort_by_key(|e| std::cmp::Reverse(e.host.components().count()));
        ordered
            .into_iter()
            .map(|entry| {
                let path = container_path(&self.root, &entry.host);
                let removed = match self.remove_one(&entry.host, &path, &untouched) {
                    Ok(removed) => removed,
                    Err(e) => {
                        warn!(stub = %path, error = %e, "failed to remove mount stub");
                        false
                    }
                };
                MountStub {
                    path,
                    is_dir: entry.is_dir,
                    removed,
                }
            })
            .collect()
    }

    fn remove_one(
        &self,
        host: &Path,
        path: &str,
        untouched: &[(&Path, (SystemTime, SystemTime))],
    ) -> io::Result<bool> {
        // The step may have replaced a parent with a symlink: only remove
        // what still resolves to the same place inside the rootfs.
        if root_path(&self.root, path)? != host {
            return Ok(false);
        }
        let meta = match fs::symlink_metadata(host) {
            Ok(meta) => meta,
            Err(e) if is_missing(&e) => return Ok(false),
            Err(e) => return Err(e),
        };
        let empty = if meta.is_dir() {
            fs::read_dir(host)?.next().is_none()
        } else {
            meta.len() == 0
        };
        if !empty {
            return Ok(false);
        }
        let parent = host.parent().unwrap_or(&self.root);
        let (atime, mtime) = match untouched.iter().find(|(p, _)| *p == parent) {
            Some((_, before)) => *before,
            None => {
                let meta = fs::metadata(parent)?;
                (meta.accessed()?, meta.modified()?)
            }
        };
        let times = fs::FileTimes::new().set_accessed(atime).set_modified(mtime);
        if meta.is_dir() {
            fs::remove_dir(host)?;
        } else {
            fs::remove_file(host)?;
        }
        // Keep the parent's timestamps for reproducible layers
        // (moby/buildkit#3148).
        fs::File::open(parent)?.set_times(times)?;
        Ok(true)
    }
}

fn is_missing(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_targets_and_parents_are_created_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("var")).unwrap();
        let targets = [
            ("/etc/resolv.conf".to_string(), false),
            ("/etc/hosts".to_string(), false),
            ("/var/cache/apt".to_string(), true),
        ];
        let before = fs::metadata(root.join("var")).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut stubs = Stubs::plan(root, &targets);
        stubs.create().unwrap();
        assert!(root.join("etc/hosts").is_file());
        assert!(root.join("var/cache/apt").is_dir());
        assert_ne!(
            fs::metadata(root.join("var")).unwrap().modified().unwrap(),
            before
        );

        let report = stubs.remove();
        assert!(report.iter().all(|s| s.removed), "{report:?}");
        let paths: Vec<&str> = report.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/var/cache/apt",
                "/etc/resolv.conf",
                "/etc/hosts",
                "/var/cache",
                "/etc"
            ]
        );
        assert!(!root.join("etc").exists());
        assert!(!root.join("var/cache").exists());
        assert_eq!(
            fs::metadata(root.join("var")).unwrap().modified().unwrap(),
            before
        );
    }

    #[test]
    fn stubs_the_step_filled_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut stubs = Stubs::plan(root, &[("/etc/hosts".to_string(), false)]);
        stubs.create().unwrap();
        fs::write(root.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
        let report = stubs.remove();
        assert_eq!(report.len(), 2);
        assert!(report[0].removed && report[0].path == "/etc/hosts");
        assert!(!report[1].removed && report[1].path == "/etc");
        assert!(root.join("etc/passwd").exists());
    }

    #[test]
    fn a_parent_the_step_changed_keeps_its_new_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("etc")).unwrap();
        let mut stubs = Stubs::plan(root, &[("/etc/hosts".to_string(), false)]);
        stubs.create().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(root.join("etc/motd"), b"hi").unwrap();
        let changed = fs::metadata(root.join("etc")).unwrap().modified().unwrap();
        assert!(stubs.remove()[0].removed);
        assert_eq!(
            fs::metadata(root.join("etc")).unwrap().modified().unwrap(),
            changed
        );
    }

    #[test]
    fn existing_targets_are_not_stubs() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        fs::write(dir.path().join("etc/hosts"), b"x").unwrap();
        let stubs = Stubs::plan(dir.path(), &[("/etc/hosts".to_string(), false)]);
        assert!(stubs.remove().is_empty());
    }
}
