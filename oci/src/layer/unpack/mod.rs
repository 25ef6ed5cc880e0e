//! Applying a layer blob to a directory.

mod create;
mod entry;
mod fs;

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::sys::stat::{Mode, SFlag, futimens, makedev, mknodat};
use nix::sys::time::TimeSpec;
use sha2::{Digest, Sha256};
use tar::EntryType;

use self::entry::{entry_meta, normalize, rel_path};
use self::fs::{ImplicitDirs, remove_at, stat_at, walk};
use super::compress::{CompressionKind, decompress, sha256_string};
use super::error::LayerError;
use super::meta::read_full;
use super::view::{DirStack, View, ViewKind};

/// Limits and behaviour of [`unpack`] and [`unpack_to_overlay_layer_dir`].
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Refuse layers whose uncompressed tar, or whose file contents, exceed
    /// this many bytes (decompression bombs). Default 64 GiB.
    pub max_bytes: u64,
    /// Refuse layers with more entries than this. Default 4 million.
    pub max_entries: u64,
    /// Set owners from the tar (`lchown`; needs root). Default true.
    pub chown: bool,
    /// The xattr namespace overlay-native layer dirs mark opaque
    /// directories with: `trusted.` (default) or `user.` for overlays
    /// mounted with `userxattr`.
    pub overlay_xattrs: OverlayXattrs,
    /// The directory this very tar was just made from (a snapshot's upper
    /// dir, about to be discarded): a regular file whose counterpart there
    /// is a regular file of the same size with no other name is hardlinked
    /// from it instead of written from the stream, then given the
    /// header's owner, xattrs (any other xattr removed), mode and times,
    /// exactly as a written file is. The tree is the one unpacking the
    /// blob would make; only the file data is not copied. Default none.
    pub link_from: Option<PathBuf>,
    /// Hash the tar for [`UnpackReport::diff_id`]. Off only for a stream
    /// whose diffID the caller computed itself while writing it; the
    /// report's `diff_id` is then empty. Default true.
    pub hash: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            max_bytes: 64 << 30,
            max_entries: 4_000_000,
            chown: true,
            overlay_xattrs: OverlayXattrs::Trusted,
            link_from: None,
            hash: true,
        }
    }
}

/// The xattr namespace of overlayfs markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlayXattrs {
    /// `trusted.overlay.*` (needs CAP_SYS_ADMIN).
    Trusted,
    /// `user.overlay.*` (overlays mounted with `userxattr`).
    User,
}

impl OverlayXattrs {
    fn opaque(self) -> &'static str {
        match self {
            OverlayXattrs::Trusted => "trusted.overlay.opaque",
            OverlayXattrs::User => "user.overlay.opaque",
        }
    }
}

/// What unpacking a layer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackReport {
    /// `sha256:<hex>` of the uncompressed tar: compare it with the image
    /// config's diffID before trusting the result.
    pub diff_id: String,
    /// The compression detected from the blob's magic bytes.
    pub compression: CompressionKind,
    /// Entries applied (whiteouts included).
    pub entries: u64,
    /// Size of the uncompressed tar.
    pub tar_bytes: u64,
    /// Regular files hardlinked from [`UnpackOptions::link_from`] rather
    /// than written.
    pub linked: u64,
}

/// Applies a layer blob (zstd, gzip or plain tar, detected from its magic
/// bytes) onto `root`, the way containerd's `archive.Apply` does when
/// layers are unpacked one after another into one directory: `.wh.NAME`
/// deletes NAME, `.wh..wh..opq` removes everything in its directory that
/// this layer did not itself create, other entries replace what is there
/// (directories merge). Entries are created without ever following a
/// symlink inside `root`; absolute names, `..` components, writes through
/// symlinks and hardlinks leaving the root are rejected with an error
/// naming the entry. Directory mtimes are restored last.
pub fn unpack<R: Read>(
    input: R,
    root: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackReport, LayerError> {
    let unpacker = Unpacker::new(root, opts, Target::Merged)?;
    unpacker.run(input)
}

/// Unpacks a layer blob into its own empty directory `dir` so that `dir`
/// can be used directly as an overlayfs lowerdir: whiteouts become char
/// 0:0 devices and opaque markers the `*.overlay.opaque=y` xattr, as
/// overlayfs writes them itself.
///
/// `parents` are the layer dirs below this one, topmost first; directories
/// the layer implies but does not list are created with the metadata the
/// merged parents show for them (so they do not mask it with defaults).
pub fn unpack_to_overlay_layer_dir<R: Read, P: AsRef<Path>>(
    input: R,
    dir: &Path,
    parents: &[P],
    opts: &UnpackOptions,
) -> Result<UnpackReport, LayerError> {
    let view = View::new(ViewKind::Overlay { strict_top: false });
    let root = view.root(parents);
    let unpacker = Unpacker::new(dir, opts, Target::OverlayLayer { view, root })?;
    unpacker.run(input)
}

enum Target {
    /// Layers applied one after another into the same directory.
    Merged,
    /// One layer per directory, whiteouts kept overlay-native.
    OverlayLayer { view: View, root: DirStack },
}

struct Unpacker<'a> {
    root: OwnedFd,
    /// [`UnpackOptions::link_from`], opened.
    link_root: Option<OwnedFd>,
    linked: u64,
    opts: &'a UnpackOptions,
    target: Target,
    /// Paths this layer created (relative): whiteouts and opaque markers
    /// only apply to what the layers below created.
    created: HashSet<PathBuf>,
    /// Overlay whiteout devices this layer created.
    whiteouts: HashSet<PathBuf>,
    dir_times: Vec<(Vec<OsString>, TimeSpec)>,
    entries: u64,
    content_bytes: u64,
    /// The buffer regular files' contents pass through (empty until the
    /// first one).
    content_buf: Vec<u8>,
}

/// Bytes of a file's content read from the stream at a time.
const CONTENT_CHUNK: usize = 1 << 20;

/// Hashes and counts the uncompressed tar as the tar reader consumes it,
/// failing once it grows beyond the limit.
struct CountingReader<R> {
    inner: R,
    hasher: Option<Sha256>,
    count: u64,
    limit: u64,
    over: Rc<Cell<bool>>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.count += n as u64;
        if self.count > self.limit {
            self.over.set(true);
            return Err(io::Error::other("layer exceeds the unpack byte limit"));
        }
        Ok(n)
    }
}

impl<'a> Unpacker<'a> {
    fn new(root: &Path, opts: &'a UnpackOptions, target: Target) -> Result<Self, LayerError> {
        let link_root = match &opts.link_from {
            Some(dir) => Some(fs::open_root(dir)?),
            None => None,
        };
        Ok(Unpacker {
            root: fs::open_root(root)?,
            link_root,
            linked: 0,
            opts,
            target,
            created: HashSet::new(),
            whiteouts: HashSet::new(),
            dir_times: Vec::new(),
            entries: 0,
            content_bytes: 0,
            content_buf: Vec::new(),
        })
    }

    fn run<R: Read>(mut self, input: R) -> Result<UnpackReport, LayerError> {
        let (compression, reader) = decompress(input).map_err(LayerError::Read)?;
        let over = Rc::new(Cell::new(false));
        let counting = CountingReader {
            inner: reader,
            hasher: self.opts.hash.then(Sha256::new),
            count: 0,
            limit: self.opts.max_bytes,
            over: Rc::clone(&over),
        };
        let limit_error = || LayerError::LimitExceeded {
            what: "bytes",
            limit: self.opts.max_bytes,
            field: "max_bytes",
        };
        let mut archive = tar::Archive::new(counting);
        let entries = archive.entries().map_err(LayerError::Read)?;
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(_) if over.get() => return Err(limit_error()),
                Err(e) => return Err(LayerError::Read(e)),
            };
            match self.entry(entry) {
                // Whatever failed, a stream cut off by the limit is the cause.
                Err(_) if over.get() => return Err(limit_error()),
                other => other?,
            }
        }
        let mut counting = archive.into_inner();
        // The diffID covers the whole stream, including the end blocks.
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match read_full(&mut counting, &mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) if over.get() => return Err(limit_error()),
                Err(e) => return Err(LayerError::Read(e)),
            }
        }
        self.restore_dir_times()?;
        Ok(UnpackReport {
            diff_id: counting.hasher.map(sha256_string).unwrap_or_default(),
            compression,
            entries: self.entries,
            tar_bytes: counting.count,
            linked: self.linked,
        })
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), LayerError> {
        let raw = entry.path_bytes().into_owned();
        let display = String::from_utf8_lossy(&raw).into_owned();
        let etype = entry.header().entry_type();
        if etype == EntryType::XGlobalHeader {
            return Ok(());
        }
        let comps = normalize(&raw, &display, "path")?;
        let Some(name) = comps.last().cloned() else {
            // The root itself: containerd ignores it too.
            return Ok(());
        };
        self.entries += 1;
        if self.entries > self.opts.max_entries {
            return Err(LayerError::LimitExceeded {
                what: "entries",
                limit: self.opts.max_entries,
                field: "max_entries",
            });
        }
        let parent = &comps[..comps.len() - 1];
        if let Some(deleted) = name.as_bytes().strip_prefix(b".wh.") {
            if deleted == b".wh..opq" {
                return self.opaque(parent, &display);
            }
            if deleted.starts_with(b".wh.") {
                // Other AUFS metadata (.wh..wh.plnk...) is not content.
                return Ok(());
            }
            if deleted.is_empty() || deleted == b"." || deleted == b".." {
                return Err(LayerError::unsafe_entry(&display, "invalid whiteout name"));
            }
            return self.whiteout(parent, OsStr::from_bytes(deleted), &display);
        }
        let meta = entry_meta(&mut entry, &display)?;
        match etype {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                // A PAX `size` record (files of 8 GiB and more) wins.
                let size = entry.size();
                self.file(parent, &name, &meta, size, &mut entry, &display)?
            }
            EntryType::Directory => self.dir(&comps, &meta, &display)?,
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| LayerError::unsafe_entry(&display, "symlink without a target"))?
                    .into_owned();
                self.symlink(parent, &name, &target, &meta, &display)?
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| LayerError::unsafe_entry(&display, "hardlink without a target"))?
                    .into_owned();
                self.hardlink(parent, &name, &target, &display)?
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let header = entry.header();
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let kind = match etype {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let dev = makedev(u64::from(major), u64::from(minor));
                self.node(parent, &name, kind, dev, &meta, &display)?
            }
            other => {
                return Err(LayerError::UnsupportedEntry {
                    entry: display,
                    kind: char::from(other.as_byte()),
                });
            }
        }
        self.created.insert(comps.iter().collect());
        Ok(())
    }

    fn implicit(&self) -> &dyn ImplicitDirs {
        self
    }

    /// The parent directory of an entry, created if missing.
    fn parent_dir(&self, parent: &[OsString], entry: &str) -> Result<OwnedFd, LayerError> {
        walk(&self.root, parent, entry, Some(self.implicit()))?
            .ok_or_else(|| LayerError::unsafe_entry(entry, "parent directory could not be created"))
    }

    fn whiteout(
        &mut self,
        parent: &[OsString],
        name: &OsStr,
        entry: &str,
    ) -> Result<(), LayerError> {
        let rel = rel_path(parent, name);
        if let Target::Merged = self.target {
            let Some(dir) = walk(&self.root, parent, entry, None)? else {
                return Ok(()); // Nothing there to delete.
            };
            if self.created.contains(&rel) {
                // Whiteouts apply to the layers below: deleting a directory
                // this layer wrote deletes the lower children it merged with.
                if let Ok(fd) = fs::open_dir_at(dir.as_fd(), name) {
                    self.remove_lower(fd.as_fd(), &rel, entry)?;
                }
                return Ok(());
            }
            return remove_at(dir.as_fd(), name, entry);
        }
        // An overlay layer dir holds only this layer: anything already at
        // `name` was written by it and hides the lower entry by itself.
        let dir = self.parent_dir(parent, entry)?;
        match stat_at(dir.as_fd(), name).map_err(|e| LayerError::unpack(entry, "lstat", e))? {
            Some(st) if fs::is_dir(&st) => {
                let fd = fs::open_dir_at(dir.as_fd(), name)
                    .map_err(|e| LayerError::unpack(entry, "open", e))?;
                self.mark_opaque(fd.as_fd(), entry)
            }
            Some(_) => Ok(()),
            None => {
                mknodat(
                    dir.as_fd(),
                    name,
                    SFlag::S_IFCHR,
                    Mode::empty(),
                    makedev(0, 0),
                )
                .map_err(|e| LayerError::unpack(entry, "mknod whiteout", e))?;
                self.whiteouts.insert(rel);
                Ok(())
            }
        }
    }

    fn opaque(&mut self, dir: &[OsString], entry: &str) -> Result<(), LayerError> {
        if let Target::Merged = self.target {
            let Some(fd) = walk(&self.root, dir, entry, None)? else {
                return Ok(());
            };
            let rel: PathBuf = dir.iter().collect();
            return self.remove_lower(fd.as_fd(), &rel, entry);
        }
        let fd = self.parent_dir(dir, entry)?;
        self.mark_opaque(fd.as_fd(), entry)
    }

    fn mark_opaque(&self, fd: BorrowedFd<'_>, entry: &str) -> Result<(), LayerError> {
        if !matches!(self.target, Target::OverlayLayer { .. }) {
            return Ok(());
        }
        let name = self.opts.overlay_xattrs.opaque();
        fs::set_xattr_fd(fd, OsStr::new(name), b"y")
            .map_err(|e| LayerError::unpack(entry, "set opaque xattr", e))
    }

    /// Removes everything under `dir` that this layer did not create.
    fn remove_lower(&self, dir: BorrowedFd<'_>, rel: &Path, entry: &str) -> Result<(), LayerError> {
        for name in fs::list_at(dir, entry)? {
            let child = rel.join(&name);
            if !self.created.contains(&child) {
                remove_at(dir, &name, entry)?;
            } else if let Ok(sub) = fs::open_dir_at(dir, &name) {
                self.remove_lower(sub.as_fd(), &child, entry)?;
            }
        }
        Ok(())
    }

    fn restore_dir_times(&self) -> Result<(), LayerError> {
        for (comps, time) in &self.dir_times {
            let entry = comps.iter().collect::<PathBuf>().display().to_string();
            let fd = match walk(&self.root, comps, &entry, None) {
                Ok(Some(fd)) => fd,
                // A later entry of this layer replaced the directory (or a
                // parent) with a non-directory or a symlink: containerd
                // applies duplicates in order too, and there is nothing left
                // to restore. The walk never follows the link.
                Ok(None) | Err(LayerError::UnsafeEntry { .. }) => continue,
                Err(e) => return Err(e),
            };
            futimens(fd.as_fd(), time, time)
                .map_err(|e| LayerError::unpack(&entry, "utimens", e))?;
        }
        Ok(())
    }
}
