//! File metadata as layers see it: `lstat` fields, filtered xattrs, and the
//! "is this entry unchanged" comparison shared by both differs.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::XattrPolicy;
use super::error::LayerError;

/// The type of a filesystem entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A character device (a 0:0 one is an overlayfs whiteout).
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
    /// A unix socket; layers never contain sockets.
    Socket,
}

/// The `lstat` fields a layer records or compares for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// The entry type.
    pub kind: FileKind,
    /// Permission bits plus setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Device number of a character or block device (`st_rdev`).
    pub rdev: u64,
    /// Size in bytes (meaningful for regular files).
    pub size: u64,
    /// Modification time in whole seconds since the Unix epoch, rounded
    /// down like containerd does.
    pub mtime: i64,
    /// Device of the filesystem holding the entry (hardlink detection).
    pub dev: u64,
    /// Inode number (hardlink detection).
    pub ino: u64,
    /// Number of hard links.
    pub nlink: u64,
}

impl FileMeta {
    pub(crate) fn from_metadata(m: &fs::Metadata) -> FileMeta {
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            FileKind::Directory
        } else if ft.is_symlink() {
            FileKind::Symlink
        } else if ft.is_char_device() {
            FileKind::CharDevice
        } else if ft.is_block_device() {
            FileKind::BlockDevice
        } else if ft.is_fifo() {
            FileKind::Fifo
        } else if ft.is_socket() {
            FileKind::Socket
        } else {
            FileKind::Regular
        };
        let is_device = matches!(kind, FileKind::CharDevice | FileKind::BlockDevice);
        FileMeta {
            kind,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            rdev: if is_device { m.rdev() } else { 0 },
            size: if kind == FileKind::Regular {
                m.size()
            } else {
                0
            },
            mtime: m.mtime(),
            dev: m.dev(),
            ino: m.ino(),
            nlink: m.nlink(),
        }
    }

    /// An overlayfs whiteout: a character device with device number 0:0.
    pub(crate) fn is_whiteout(&self) -> bool {
        self.kind == FileKind::CharDevice && self.rdev == 0
    }
}

/// `lstat`, with "does not exist" (including a non-directory parent) as `None`.
pub(crate) fn lstat(path: &Path) -> Result<Option<FileMeta>, LayerError> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(FileMeta::from_metadata(&m))),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(LayerError::io("lstat", path, e)),
    }
}

pub(crate) fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

fn xattrs_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENODATA))
}

/// Extended attributes, sorted by name.
pub(crate) type Xattrs = Vec<(OsString, Vec<u8>)>;

const CAPABILITY: &str = "security.capability";

/// The overlayfs private namespace (`trusted.overlay.*`, or `user.overlay.*`
/// with the `userxattr` mount option): never part of a layer.
pub(crate) fn is_overlay_private(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

impl XattrPolicy {
    /// Whether a layer carries the xattr `name` under this policy.
    pub(crate) fn keeps(self, name: &[u8]) -> bool {
        if is_overlay_private(name) {
            return false;
        }
        match self {
            XattrPolicy::CapabilityOnly => name == CAPABILITY.as_bytes(),
            // SELinux labels belong to the host's policy, not to the image.
            XattrPolicy::All => name != b"security.selinux",
        }
    }
}

/// The xattrs of `path` (not following a symlink) that `policy` keeps.
pub(crate) fn read_xattrs(path: &Path, policy: XattrPolicy) -> Result<Xattrs, LayerError> {
    if policy == XattrPolicy::CapabilityOnly {
        return match xattr::get(path, CAPABILITY) {
            Ok(Some(v)) => Ok(vec![(OsString::from(CAPABILITY), v)]),
            Ok(None) => Ok(Vec::new()),
            Err(e) if xattrs_unsupported(&e) => Ok(Vec::new()),
            Err(e) => Err(LayerError::io("getxattr", path, e)),
        };
    }
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if xattrs_unsupported(&e) => return Ok(Vec::new()),
        Err(e) => return Err(LayerError::io("listxattr", path, e)),
    };
    let mut out = Vec::new();
    for name in names {
        if !policy.keeps(name.as_bytes()) {
            continue;
        }
        match xattr::get(path, &name) {
            Ok(Some(value)) => out.push((name, value)),
            Ok(None) => {}
            Err(e) if xattrs_unsupported(&e) => {}
            Err(e) => return Err(LayerError::io("getxattr", path, e)),
        }
    }
    out.sort();
    Ok(out)
}

/// The first overlayfs xattr on `path` whose meaning the differ cannot
/// reproduce from the directory trees (renamed directories, metadata-only
/// copy-ups).
pub(crate) fn unsupported_overlay_xattr(path: &Path) -> Result<Option<String>, LayerError> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if xattrs_unsupported(&e) => return Ok(None),
        Err(e) => return Err(LayerError::io("listxattr", path, e)),
    };
    Ok(names
        .into_iter()
        .find(|n| {
            let n = n.as_bytes();
            is_overlay_private(n) && (n.ends_with(b".redirect") || n.ends_with(b".metacopy"))
        })
        .map(|n| n.to_string_lossy().into_owned()))
}

/// Whether `a` and `b` carry the same entry for layer purposes: same type,
/// mode, owner, device number, link target, kept xattrs and content. The
/// modification time is deliberately not compared (see the module docs).
pub(crate) fn same_entry(
    a: &Path,
    am: &FileMeta,
    b: &Path,
    bm: &FileMeta,
    policy: XattrPolicy,
) -> Result<bool, LayerError> {
    if am.kind != bm.kind || am.mode != bm.mode || am.uid != bm.uid || am.gid != bm.gid {
        return Ok(false);
    }
    // The same inode is the same content and metadata.
    if am.dev == bm.dev && am.ino == bm.ino {
        return Ok(true);
    }
    match am.kind {
        FileKind::Regular if am.size != bm.size => return Ok(false),
        FileKind::CharDevice | FileKind::BlockDevice if am.rdev != bm.rdev => return Ok(false),
        FileKind::Symlink => {
            let ta = fs::read_link(a).map_err(|e| LayerError::io("readlink", a, e))?;
            let tb = fs::read_link(b).map_err(|e| LayerError::io("readlink", b, e))?;
            if ta != tb {
                return Ok(false);
            }
        }
        _ => {}
    }
    if read_xattrs(a, policy)? != read_xattrs(b, policy)? {
        return Ok(false);
    }
    if am.kind == FileKind::Regular && am.size > 0 {
        return same_content(a, b);
    }
    Ok(true)
}

/// Opens a regular file for reading without following a symlink.
pub(crate) fn open_nofollow(path: &Path) -> Result<File, LayerError> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| LayerError::io("open", path, e))
}

fn same_content(a: &Path, b: &Path) -> Result<bool, LayerError> {
    const CHUNK: usize = 128 * 1024;
    let mut fa = open_nofollow(a)?;
    let mut fb = open_nofollow(b)?;
    let mut ba = vec![0u8; CHUNK];
    let mut bb = vec![0u8; CHUNK];
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(|e| LayerError::io("read", a, e))?;
        let nb = read_full(&mut fb, &mut bb).map_err(|e| LayerError::io("read", b, e))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na < CHUNK {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the end of the file.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
