//! Filesystem operations for unpacking that never follow a symlink inside
//! the root: every path is reached by opening one directory component at a
//! time with `O_NOFOLLOW | O_DIRECTORY` from the root's file descriptor,
//! and entries are created relative to their parent's descriptor.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::layer::error::LayerError;

/// How directories that a layer implies but does not list are created.
pub(crate) trait ImplicitDirs {
    /// Gives the new directory `rel` (open as `fd`) its metadata.
    fn init(&self, rel: &Path, fd: BorrowedFd<'_>, entry: &str) -> Result<(), LayerError>;
}

/// Opens `path` as the unpack root (the root itself may be a symlink).
pub(crate) fn open_root(path: &Path) -> Result<OwnedFd, LayerError> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| LayerError::io("open", path, e.into()))
}

/// Opens an existing directory `name` in `dir` without following a symlink.
pub(crate) fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Walks `comps` from `root`. A missing directory is created when
/// `implicit` is given, otherwise the walk returns `None`. A component
/// that is a symlink or not a directory rejects the entry.
pub(crate) fn walk(
    root: &OwnedFd,
    comps: &[OsString],
    entry: &str,
    implicit: Option<&dyn ImplicitDirs>,
) -> Result<Option<OwnedFd>, LayerError> {
    let mut cur = root
        .try_clone()
        .map_err(|e| LayerError::unpack(entry, "dup", e))?;
    for (i, comp) in comps.iter().enumerate() {
        let rel: PathBuf = comps[..=i].iter().collect();
        let next = match open_dir_at(cur.as_fd(), comp) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                let Some(implicit) = implicit else {
                    return Ok(None);
                };
                match mkdirat(
                    cur.as_fd(),
                    comp.as_os_str(),
                    Mode::from_bits_truncate(0o755),
                ) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(LayerError::unpack(entry, "mkdir", e)),
                }
                let fd = open_dir_at(cur.as_fd(), comp)
                    .map_err(|e| component_error(cur.as_fd(), comp, entry, &rel, e))?;
                implicit.init(&rel, fd.as_fd(), entry)?;
                fd
            }
            Err(e) => return Err(component_error(cur.as_fd(), comp, entry, &rel, e)),
        };
        cur = next;
    }
    Ok(Some(cur))
}

fn component_error(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    entry: &str,
    rel: &Path,
    e: Errno,
) -> LayerError {
    // Linux fails `O_DIRECTORY | O_NOFOLLOW` on a symlink with ENOTDIR, not
    // ELOOP: look, so the message says what the component really is.
    let symlink = match e {
        Errno::ELOOP => true,
        Errno::ENOTDIR => stat_at(dir, name).ok().flatten().is_some_and(|st| {
            SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK
        }),
        _ => false,
    };
    if symlink {
        return LayerError::unsafe_entry(
            entry,
            format!(
                "{} is a symlink; layer entries may not be written through symlinks",
                rel.display()
            ),
        );
    }
    match e {
        Errno::ENOTDIR => {
            LayerError::unsafe_entry(entry, format!("{} is not a directory", rel.display()))
        }
        e => LayerError::unpack(entry, "open", e),
    }
}

/// `lstat` of `name` in `dir`; `None` if it does not exist.
pub(crate) fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Option<FileStat>, Errno> {
    match fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

pub(crate) fn is_whiteout_device(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR && st.st_rdev == 0
}

/// A path that reaches `name` in `dir` through `/proc/self/fd`, for calls
/// that only take paths (`lsetxattr`, `remove_dir_all`). The directory is
/// the one already opened safely, so only `name` itself is resolved.
pub(crate) fn fd_path(dir: BorrowedFd<'_>, name: Option<&OsStr>) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    if let Some(name) = name {
        p.push(name);
    }
    p
}

/// Sets an xattr on an open file or directory (`fsetxattr`).
pub(crate) fn set_xattr_fd(fd: BorrowedFd<'_>, name: &OsStr, value: &[u8]) -> std::io::Result<()> {
    use xattr::FileExt;
    let file = fs::File::from(fd.try_clone_to_owned()?);
    file.set_xattr(name, value)
}

/// Removes `name` from `dir`: a directory recursively, anything else
/// unlinked. Symlinks are removed, never followed.
pub(crate) fn remove_at(dir: BorrowedFd<'_>, name: &OsStr, entry: &str) -> Result<(), LayerError> {
    let Some(st) = stat_at(dir, name).map_err(|e| LayerError::unpack(entry, "lstat", e))? else {
        return Ok(());
    };
    if is_dir(&st) {
        // std's remove_dir_all opens each level with O_NOFOLLOW.
        fs::remove_dir_all(fd_path(dir, Some(name)))
            .map_err(|e| LayerError::unpack(entry, "remove directory", e))
    } else {
        unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)
            .map_err(|e| LayerError::unpack(entry, "unlink", e))
    }
}

/// The names in the directory `dir`.
pub(crate) fn list_at(dir: BorrowedFd<'_>, entry: &str) -> Result<Vec<OsString>, LayerError> {
    let rd =
        fs::read_dir(fd_path(dir, None)).map_err(|e| LayerError::unpack(entry, "read_dir", e))?;
    let mut names = Vec::new();
    for e in rd {
        names.push(
            e.map_err(|e| LayerError::unpack(entry, "read_dir", e))?
                .file_name(),
        );
    }
    names.sort();
    Ok(names)
}
