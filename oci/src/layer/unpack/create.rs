//! Creating the entries of a layer below their (safely opened) parent.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, futimens, mkdirat, mknodat,
    utimensat,
};
use nix::unistd::{Gid, Uid, fchown, fchownat, linkat, symlinkat};
use xattr::FileExt;

use super::entry::{EntryMeta, normalize, rel_path, set_xattr_result};
use super::fs::{self, ImplicitDirs, fd_path, remove_at, stat_at, walk};
use super::{CONTENT_CHUNK, Target, Unpacker};
use crate::layer::XattrPolicy;
use crate::layer::error::LayerError;
use crate::layer::meta::{self, FileKind, read_full};

impl Unpacker<'_> {
    /// Clears the way for a new entry `name` in `dir`. Returns whether an
    /// existing directory is kept (a directory entry over a directory
    /// merges) and whether an overlay whiteout of this layer was replaced.
    pub(super) fn make_room(
        &mut self,
        dir: BorrowedFd<'_>,
        rel: &Path,
        name: &OsStr,
        want_dir: bool,
        entry: &str,
    ) -> Result<(bool, bool), LayerError> {
        let existing = stat_at(dir, name).map_err(|e| LayerError::unpack(entry, "lstat", e))?;
        let Some(st) = existing else {
            return Ok((false, false));
        };
        if want_dir && fs::is_dir(&st) {
            return Ok((true, false));
        }
        let replaced_whiteout = self.whiteouts.remove(rel) && fs::is_whiteout_device(&st);
        remove_at(dir, name, entry)?;
        Ok((false, replaced_whiteout))
    }

    pub(super) fn file<R: Read>(
        &mut self,
        parent: &[OsString],
        name: &OsStr,
        meta: &EntryMeta,
        size: u64,
        data: &mut R,
        entry: &str,
    ) -> Result<(), LayerError> {
        let dir = self.parent_dir(parent, entry)?;
        let rel = rel_path(parent, name);
        self.make_room(dir.as_fd(), &rel, name, false, entry)?;
        if let Some(file) = self.link_file(dir.as_fd(), parent, name, size, entry)? {
            // The data is the file's own: read past it (the stream is
            // still counted against the limits), then set the metadata
            // as for a written file, starting from no xattrs at all.
            self.content(data, None, entry)?;
            let names = file
                .list_xattr()
                .map_err(|e| LayerError::unpack(entry, "list xattrs", e))?;
            // (An SELinux label cannot be removed; the label is not part of
            // the layer either.)
            for k in names.filter(|k| k.as_bytes() != b"security.selinux") {
                file.remove_xattr(&k)
                    .map_err(|e| LayerError::unpack(entry, "remove xattr", e))?;
            }
            self.linked += 1;
            return self.file_meta(&file, meta, entry);
        }
        let fd = openat(
            dir.as_fd(),
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| LayerError::unpack(entry, "create", e))?;
        let mut file = File::from(fd);
        self.content(data, Some(&mut file), entry)?;
        self.file_meta(&file, meta, entry)
    }

    /// Reads a regular file's data from the stream, counting it against
    /// the byte limit, into `to` (or nowhere: a linked file has it).
    fn content<R: Read>(
        &mut self,
        data: &mut R,
        to: Option<&mut File>,
        entry: &str,
    ) -> Result<(), LayerError> {
        // One buffer serves every file of the layer: a fresh zeroed
        // megabyte per file cost more than most files' contents (a layer
        // of 20,000 small files zeroed 20 GB).
        let mut buf = std::mem::take(&mut self.content_buf);
        if buf.is_empty() {
            buf = vec![0u8; CONTENT_CHUNK];
        }
        let copied = self.content_with(data, to, entry, &mut buf);
        self.content_buf = buf;
        copied
    }

    fn content_with<R: Read>(
        &mut self,
        data: &mut R,
        mut to: Option<&mut File>,
        entry: &str,
        buf: &mut [u8],
    ) -> Result<(), LayerError> {
        loop {
            let n =
                read_full(data, buf).map_err(|e| LayerError::unpack(entry, "read content", e))?;
            if n == 0 {
                return Ok(());
            }
            self.content_bytes += n as u64;
            if self.content_bytes > self.opts.max_bytes {
                return Err(LayerError::LimitExceeded {
                    what: "bytes",
                    limit: self.opts.max_bytes,
                    field: "max_bytes",
                });
            }
            if let Some(f) = to.as_deref_mut() {
                f.write_all(&buf[..n])
                    .map_err(|e| LayerError::unpack(entry, "write", e))?;
            }
        }
    }

    /// Owner, xattrs, mode and times of a regular file, in that order
    /// (a chown clears setuid bits and `security.capability`).
    fn file_meta(&self, file: &File, meta: &EntryMeta, entry: &str) -> Result<(), LayerError> {
        self.chown_fd(file.as_fd(), meta, entry)?;
        for (k, v) in &meta.xattrs {
            set_xattr_result(file.set_xattr(k, v), k, entry)?;
        }
        fchmod(file.as_fd(), Mode::from_bits_truncate(meta.mode))
            .map_err(|e| LayerError::unpack(entry, "chmod", e))?;
        futimens(file.as_fd(), &meta.mtime, &meta.mtime)
            .map_err(|e| LayerError::unpack(entry, "utimens", e))
    }

    /// With [`UnpackOptions::link_from`](super::UnpackOptions): `name`
    /// hardlinked into `dir` from the same place under the link root, if
    /// that is a regular file of `size` bytes with no other name (another
    /// name could be a file outside the snapshot sharing the inode, whose
    /// metadata must not change). `None`: write it from the stream.
    fn link_file(
        &self,
        dir: BorrowedFd<'_>,
        parent: &[OsString],
        name: &OsStr,
        size: u64,
        entry: &str,
    ) -> Result<Option<File>, LayerError> {
        let Some(link_root) = &self.link_root else {
            return Ok(None);
        };
        // A missing or symlinked directory on the way: not this file.
        let Ok(Some(src)) = walk(link_root, parent, entry, None) else {
            return Ok(None);
        };
        let Ok(Some(st)) = stat_at(src.as_fd(), name) else {
            return Ok(None);
        };
        let regular = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
        if !regular || st.st_nlink != 1 || u64::try_from(st.st_size).ok() != Some(size) {
            return Ok(None);
        }
        // Another filesystem (EXDEV) or any other refusal: write it.
        if linkat(src.as_fd(), name, dir, name, AtFlags::empty()).is_err() {
            return Ok(None);
        }
        let fd = openat(
            dir,
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| LayerError::unpack(entry, "open", e))?;
        Ok(Some(File::from(fd)))
    }

    pub(super) fn dir(
        &mut self,
        comps: &[OsString],
        meta: &EntryMeta,
        entry: &str,
    ) -> Result<(), LayerError> {
        let (parent, name) = comps.split_at(comps.len() - 1);
        let name = &name[0];
        let dir = self.parent_dir(parent, entry)?;
        let rel = rel_path(parent, name);
        let (exists, replaced_whiteout) = self.make_room(dir.as_fd(), &rel, name, true, entry)?;
        if !exists {
            mkdirat(
                dir.as_fd(),
                name.as_os_str(),
                Mode::from_bits_truncate(0o700),
            )
            .map_err(|e| LayerError::unpack(entry, "mkdir", e))?;
        }
        let fd =
            fs::open_dir_at(dir.as_fd(), name).map_err(|e| LayerError::unpack(entry, "open", e))?;
        self.chown_fd(fd.as_fd(), meta, entry)?;
        let file = File::from(fd);
        for (k, v) in &meta.xattrs {
            set_xattr_result(file.set_xattr(k, v), k, entry)?;
        }
        if replaced_whiteout {
            // Deleted, then created again in the same layer: the new
            // directory must not show the lower one's children.
            self.mark_opaque(file.as_fd(), entry)?;
        }
        fchmod(file.as_fd(), Mode::from_bits_truncate(meta.mode))
            .map_err(|e| LayerError::unpack(entry, "chmod", e))?;
        self.dir_times.push((comps.to_vec(), meta.mtime));
        Ok(())
    }

    pub(super) fn symlink(
        &mut self,
        parent: &[OsString],
        name: &OsStr,
        target: &[u8],
        meta: &EntryMeta,
        entry: &str,
    ) -> Result<(), LayerError> {
        let dir = self.parent_dir(parent, entry)?;
        let rel = rel_path(parent, name);
        self.make_room(dir.as_fd(), &rel, name, false, entry)?;
        symlinkat(OsStr::from_bytes(target), dir.as_fd(), name)
            .map_err(|e| LayerError::unpack(entry, "symlink", e))?;
        self.finish_at(dir.as_fd(), name, meta, false, entry)
    }

    pub(super) fn node(
        &mut self,
        parent: &[OsString],
        name: &OsStr,
        kind: SFlag,
        dev: u64,
        meta: &EntryMeta,
        entry: &str,
    ) -> Result<(), LayerError> {
        let dir = self.parent_dir(parent, entry)?;
        let rel = rel_path(parent, name);
        self.make_room(dir.as_fd(), &rel, name, false, entry)?;
        mknodat(
            dir.as_fd(),
            name,
            kind,
            Mode::from_bits_truncate(0o600),
            dev,
        )
        .map_err(|e| LayerError::unpack(entry, "mknod", e))?;
        self.finish_at(dir.as_fd(), name, meta, true, entry)
    }

    /// Owner, xattrs, mode (unless a symlink) and times of a just-created
    /// non-regular entry, addressed through its parent directory.
    pub(super) fn finish_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        meta: &EntryMeta,
        chmod: bool,
        entry: &str,
    ) -> Result<(), LayerError> {
        if self.opts.chown {
            fchownat(
                dir,
                name,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| LayerError::unpack(entry, "lchown", e))?;
        }
        let path = fd_path(dir, Some(name));
        for (k, v) in &meta.xattrs {
            set_xattr_result(xattr::set(&path, k, v), k, entry)?;
        }
        if chmod {
            fchmodat(
                dir,
                name,
                Mode::from_bits_truncate(meta.mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| LayerError::unpack(entry, "chmod", e))?;
        }
        utimensat(
            dir,
            name,
            &meta.mtime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| LayerError::unpack(entry, "utimens", e))
    }

    pub(super) fn hardlink(
        &mut self,
        parent: &[OsString],
        name: &OsStr,
        target: &[u8],
        entry: &str,
    ) -> Result<(), LayerError> {
        let tcomps = normalize(target, entry, "hardlink target")?;
        let Some((tname, tparent)) = tcomps.split_last() else {
            return Err(LayerError::unsafe_entry(entry, "hardlink to the root"));
        };
        let tdir = walk(&self.root, tparent, entry, None)?.ok_or_else(|| {
            LayerError::unsafe_entry(entry, "hardlink target's directory does not exist")
        })?;
        let tst = stat_at(tdir.as_fd(), tname)
            .map_err(|e| LayerError::unpack(entry, "lstat hardlink target", e))?
            .ok_or_else(|| LayerError::unsafe_entry(entry, "hardlink target does not exist"))?;
        if fs::is_dir(&tst) {
            return Err(LayerError::unsafe_entry(
                entry,
                "hardlink target is a directory",
            ));
        }
        let dir = self.parent_dir(parent, entry)?;
        let existing =
            stat_at(dir.as_fd(), name).map_err(|e| LayerError::unpack(entry, "lstat", e))?;
        if existing.is_some_and(|st| st.st_ino == tst.st_ino && st.st_dev == tst.st_dev) {
            return Ok(());
        }
        let rel = rel_path(parent, name);
        self.make_room(dir.as_fd(), &rel, name, false, entry)?;
        linkat(
            tdir.as_fd(),
            tname.as_os_str(),
            dir.as_fd(),
            name,
            AtFlags::empty(),
        )
        .map_err(|e| LayerError::unpack(entry, "link", e))
    }

    pub(super) fn chown_fd(
        &self,
        fd: BorrowedFd<'_>,
        meta: &EntryMeta,
        entry: &str,
    ) -> Result<(), LayerError> {
        if !self.opts.chown {
            return Ok(());
        }
        fchown(
            fd,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )
        .map_err(|e| LayerError::unpack(entry, "chown", e))
    }
}

impl ImplicitDirs for Unpacker<'_> {
    fn init(&self, rel: &Path, fd: BorrowedFd<'_>, entry: &str) -> Result<(), LayerError> {
        let Target::OverlayLayer { view, root } = &self.target else {
            return Ok(());
        };
        let Some(node) = view.lookup(root, rel)? else {
            return Ok(());
        };
        let m = node.meta();
        if m.kind != FileKind::Directory {
            return Ok(());
        }
        if self.opts.chown {
            fchown(fd, Some(Uid::from_raw(m.uid)), Some(Gid::from_raw(m.gid)))
                .map_err(|e| LayerError::unpack(entry, "chown implied directory", e))?;
        }
        for (k, v) in meta::read_xattrs(node.source(), XattrPolicy::All)? {
            set_xattr_result(fs::set_xattr_fd(fd, &k, &v), &k, entry)?;
        }
        fchmod(fd, Mode::from_bits_truncate(m.mode))
            .map_err(|e| LayerError::unpack(entry, "chmod implied directory", e))
    }
}
