//! The recursive copy: files, directories, links, special files and their
//! metadata.

use super::{Chmod, CopyError, CopyOptions, io, resolve_in_root};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags, mknod, utimensat};
use nix::sys::time::TimeSpec;
use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub(super) struct Copier<'o> {
    opts: &'o CopyOptions,
    /// Hardlinked sources already copied: (dev, inode) to their copy.
    links: HashMap<(u64, u64), PathBuf>,
}

fn disp(p: &Path) -> String {
    p.display().to_string()
}

impl<'o> Copier<'o> {
    pub(super) fn new(opts: &'o CopyOptions) -> Self {
        Self {
            opts,
            links: HashMap::new(),
        }
    }

    fn owner_of_new(&self) -> (u32, u32) {
        self.opts.chown.unwrap_or((0, 0))
    }

    /// The mode of a directory the copy creates on the way to its
    /// destination: an octal `--chmod`'s, else 0755 (fsutil's `MkdirAll`
    /// takes `CopyInfo.Mode`, which only an octal `--chmod` sets).
    fn new_dir_mode(&self) -> u32 {
        match self.opts.chmod {
            Some(Chmod::Octal(m)) => m,
            _ => 0o755,
        }
    }

    /// Creates missing directories along `rooted` inside `root`, `mode`
    /// and owned by the `--chown` user (or root); returns the resolved
    /// path.
    fn mkdir_all(&self, root: &Path, rooted: &str, mode: u32) -> Result<PathBuf, CopyError> {
        let mut current = String::new();
        for part in rooted.split('/').filter(|s| !s.is_empty()) {
            current.push('/');
            current.push_str(part);
            let path = resolve_in_root(root, &current, true)?;
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(io(
                        "creating directory",
                        &current,
                        std::io::Error::from_raw_os_error(libc::ENOTDIR),
                    ));
                }
                Err(_) => {
                    std::fs::create_dir(&path)
                        .map_err(|e| io("creating directory", &current, e))?;
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                        .map_err(|e| io("chmod", &current, e))?;
                    let (uid, gid) = self.owner_of_new();
                    chown(&path, uid, gid).map_err(|e| io("chown", &current, e))?;
                    if let Some(t) = self.opts.utime {
                        set_times(&path, t, 0).map_err(|e| io("setting times", &current, e))?;
                    }
                }
            }
        }
        resolve_in_root(root, rooted, true)
    }

    /// Creates the destination directory of a directory copy (and its
    /// missing parents) as [`Self::new_dir_mode`] says.
    pub(super) fn ensure_dir(&mut self, dst_root: &Path, dest: &str) -> Result<PathBuf, CopyError> {
        self.mkdir_all(dst_root, dest, self.new_dir_mode())
    }

    /// Creates the directory an archive is extracted into: 0755 whatever
    /// `--chmod` says (BuildKit's unpack calls `MkdirAll(dest, 0755, ..)`).
    pub(super) fn ensure_archive_dir(
        &mut self,
        dst_root: &Path,
        dest: &str,
    ) -> Result<PathBuf, CopyError> {
        self.mkdir_all(dst_root, dest, 0o755)
    }

    /// Where a copied file lands: `dest/NAME` when `dest` ends with `/` or
    /// is an existing directory, else `dest` — or, when `dest` is a
    /// symlink, the path it leads to (BuildKit resolves the whole
    /// destination with continuity's `RootPath` and writes through the
    /// link), its missing parents created.
    pub(super) fn file_target(
        &mut self,
        dst_root: &Path,
        dest: &str,
        src: &str,
    ) -> Result<PathBuf, CopyError> {
        let name = src.rsplit('/').next().unwrap_or(src);
        let resolved = resolve_in_root(dst_root, dest, true)?;
        let into_dir = dest.ends_with('/')
            || std::fs::metadata(&resolved)
                .map(|m| m.is_dir())
                .unwrap_or(false);
        let mode = self.new_dir_mode();
        if into_dir {
            let dir = self.mkdir_all(dst_root, dest, mode)?;
            return Ok(dir.join(name));
        }
        let parent = match dest.rfind('/') {
            Some(0) | None => "/",
            Some(i) => &dest[..i],
        };
        let dir = self.mkdir_all(dst_root, parent, mode)?;
        let file = dest.rsplit('/').next().unwrap_or(dest);
        let target = dir.join(file);
        if !std::fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_symlink()) {
            return Ok(target);
        }
        let Some(rooted_parent) = resolved
            .parent()
            .and_then(|p| p.strip_prefix(dst_root).ok())
            .map(|p| format!("/{}", p.display()))
        else {
            return Ok(resolved);
        };
        self.mkdir_all(dst_root, &rooted_parent, mode)?;
        Ok(resolved)
    }

    fn excluded(&self, rel: &str) -> bool {
        !rel.is_empty()
            && self
                .opts
                .exclude
                .as_ref()
                .is_some_and(|m| m.matches_or_parent_matches(rel))
    }

    pub(super) fn copy_dir_contents(
        &mut self,
        src: &Path,
        dst: &Path,
        rel: &str,
    ) -> Result<(), CopyError> {
        let mut names: Vec<_> = std::fs::read_dir(src)
            .map_err(|e| io("listing", &disp(src), e))?
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for name in names {
            let child_rel = if rel.is_empty() {
                name.to_string_lossy().into_owned()
            } else {
                format!("{rel}/{}", name.to_string_lossy())
            };
            self.copy_entry(&src.join(&name), &dst.join(&name), &child_rel)?;
        }
        Ok(())
    }

    pub(super) fn copy_entry(
        &mut self,
        src: &Path,
        dst: &Path,
        rel: &str,
    ) -> Result<(), CopyError> {
        if self.excluded(rel) {
            return Ok(());
        }
        let meta = std::fs::symlink_metadata(src).map_err(|e| io("reading", &disp(src), e))?;
        let ft = meta.file_type();
        let existing = std::fs::symlink_metadata(dst).ok();
        if let Some(ex) = &existing
            && !(ex.is_dir() && ft.is_dir())
        {
            let r = if ex.is_dir() {
                std::fs::remove_dir_all(dst)
            } else {
                std::fs::remove_file(dst)
            };
            r.map_err(|e| io("replacing", &disp(dst), e))?;
        }
        if !ft.is_dir() && meta.nlink() > 1 {
            if let Some(first) = self.links.get(&(meta.dev(), meta.ino())) {
                std::fs::hard_link(first, dst).map_err(|e| io("linking", &disp(dst), e))?;
                return Ok(());
            }
            self.links
                .insert((meta.dev(), meta.ino()), dst.to_path_buf());
        }
        if ft.is_dir() {
            if existing.as_ref().is_none_or(|e| !e.is_dir()) {
                std::fs::create_dir(dst).map_err(|e| io("creating directory", &disp(dst), e))?;
            }
            self.copy_dir_contents(src, dst, rel)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(src).map_err(|e| io("reading link", &disp(src), e))?;
            std::os::unix::fs::symlink(&target, dst)
                .map_err(|e| io("creating link", &disp(dst), e))?;
        } else if ft.is_file() {
            return self.copy_file(src, dst, &meta);
        } else {
            let kind = SFlag::from_bits_truncate(meta.mode() & libc::S_IFMT);
            mknod(
                dst,
                kind,
                Mode::from_bits_truncate(meta.mode() & 0o7777),
                meta.rdev(),
            )
            .map_err(|e| io("creating special file", &disp(dst), e.into()))?;
        }
        self.copy_metadata(src, dst, &meta)
    }

    /// A regular file with its metadata, through file descriptors: one
    /// path lookup per side instead of one per attribute (COPY of many
    /// small files is mostly lookups through the overlay).
    fn copy_file(&self, src: &Path, dst: &Path, meta: &std::fs::Metadata) -> Result<(), CopyError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        use xattr::FileExt as _;
        // Another filesystem or too many links: copied below instead.
        if self.link_keeps(meta) && std::fs::hard_link(src, dst).is_ok() {
            return Ok(());
        }
        let mut from = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(src)
            .map_err(|e| io("reading", &disp(src), e))?;
        let mut to = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dst)
            .map_err(|e| io("copying", &disp(dst), e))?;
        // copy_file_range (in-kernel) where the filesystems allow it.
        std::io::copy(&mut from, &mut to).map_err(|e| io("copying", &disp(src), e))?;
        let (uid, gid) = self.opts.chown.unwrap_or((meta.uid(), meta.gid()));
        std::os::unix::fs::fchown(&to, Some(uid), Some(gid))
            .map_err(|e| io("chown", &disp(dst), e))?;
        // chown clears setuid/setgid, so the mode comes after it.
        let mode = match &self.opts.chmod {
            Some(c) => c.apply(meta.mode() & 0o7777, false),
            None => meta.mode() & 0o7777,
        };
        to.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| io("chmod", &disp(dst), e))?;
        if let Ok(names) = from.list_xattr() {
            for name in names {
                if let Ok(Some(value)) = from.get_xattr(&name) {
                    // As copy_metadata: unsupported namespaces are skipped.
                    let _ = to.set_xattr(&name, &value);
                }
            }
        }
        let (secs, nanos) = match self.opts.utime {
            Some(t) => (t, 0),
            None => (meta.mtime(), meta.mtime_nsec()),
        };
        let t = TimeSpec::new(secs, nanos);
        nix::sys::stat::futimens(&to, &t, &t).map_err(|e| io("setting times", &disp(dst), e.into()))
    }

    /// Whether a hardlink to a source with `meta` would be exactly the copy
    /// this COPY makes: same owner, mode and mtime (xattrs are shared).
    /// Layers record no link count, inode or ctime, so the layer is the
    /// same byte for byte.
    fn link_keeps(&self, meta: &std::fs::Metadata) -> bool {
        let mode = meta.mode() & 0o7777;
        self.opts.link_sources
            && self
                .opts
                .chown
                .is_none_or(|(uid, gid)| (uid, gid) == (meta.uid(), meta.gid()))
            && self
                .opts
                .chmod
                .as_ref()
                .is_none_or(|c| c.apply(mode, false) == mode)
            && self
                .opts
                .utime
                .is_none_or(|t| (t, 0) == (meta.mtime(), meta.mtime_nsec()))
    }

    /// Makes `dst` a directory (if it is not one yet) with the metadata of
    /// the source directory `src`, `--chown`/`--chmod` applied.
    pub(super) fn make_dir_like(&self, src: &Path, dst: &Path) -> Result<(), CopyError> {
        let meta = std::fs::metadata(src).map_err(|e| io("reading", &disp(src), e))?;
        if !std::fs::symlink_metadata(dst).is_ok_and(|m| m.is_dir()) {
            std::fs::create_dir(dst).map_err(|e| io("creating directory", &disp(dst), e))?;
        }
        self.copy_metadata(src, dst, &meta)
    }

    fn copy_metadata(
        &self,
        src: &Path,
        dst: &Path,
        meta: &std::fs::Metadata,
    ) -> Result<(), CopyError> {
        let is_link = meta.file_type().is_symlink();
        let (uid, gid) = self.opts.chown.unwrap_or((meta.uid(), meta.gid()));
        chown(dst, uid, gid).map_err(|e| io("chown", &disp(dst), e))?;
        if !is_link {
            // chown clears setuid/setgid, so the mode comes after it.
            let mode = match &self.opts.chmod {
                Some(c) => c.apply(meta.mode() & 0o7777, meta.is_dir()),
                None => meta.mode() & 0o7777,
            };
            std::fs::set_permissions(dst, std::fs::Permissions::from_mode(mode))
                .map_err(|e| io("chmod", &disp(dst), e))?;
        }
        if let Ok(names) = xattr::list(src) {
            for name in names {
                if let Ok(Some(value)) = xattr::get(src, &name) {
                    // Unsupported namespaces on the destination filesystem
                    // are skipped, as BuildKit's copy does.
                    let _ = xattr::set(dst, &name, &value);
                }
            }
        }
        let (secs, nanos) = match self.opts.utime {
            Some(t) => (t, 0),
            None => (meta.mtime(), meta.mtime_nsec()),
        };
        set_times(dst, secs, nanos).map_err(|e| io("setting times", &disp(dst), e))
    }
}

fn chown(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
}

fn set_times(path: &Path, secs: i64, nanos: i64) -> std::io::Result<()> {
    let t = TimeSpec::new(secs, nanos);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(std::io::Error::from)
}
