//! ADD's archive extraction (BuildKit's `AttemptUnpack`, which untars into
//! the destination with moby's `chrootarchive.Untar`):
//!
//! - entries are created under the destination directory; an existing
//!   entry is replaced unless both are directories (those merge, taking the
//!   archive's metadata);
//! - owners come from the archive unless `--chown` is given; modes
//!   (setuid/setgid/sticky included), mtimes and xattrs (best effort) come
//!   from the archive; `SOURCE_DATE_EPOCH` replaces mtimes, as for COPY;
//! - parents the archive implies without listing them are created 0755
//!   and owned by root, even with `--chown` (moby's
//!   `createImpliedDirectories`); the destination itself takes `--chown`.
//!
//! Nothing can land outside the destination: absolute names and `..`
//! components are rejected, as are hardlinks whose target does, and entries
//! that would be written through a symlink leading out of the destination
//! (an absolute target, or one climbing above it with `..`); symlinks that
//! stay inside are followed, as under moby's chroot. Every rejection names
//! the entry. The bytes and entries read are bounded ([`ArchiveLimits`]).

use super::{CopyError, CopyOptions};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags, makedev, mknod, utimensat};
use nix::sys::time::TimeSpec;
use std::cell::Cell;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use tar::EntryType;

/// Bounds on what one ADD archive may make (decompression bombs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Refuse an archive whose uncompressed tar, or whose file contents,
    /// exceed this many bytes. Default 32 GiB.
    pub max_bytes: u64,
    /// Refuse an archive with more entries. Default 4 million.
    pub max_entries: u64,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        Self {
            max_bytes: 32 << 30,
            max_entries: 4_000_000,
        }
    }
}

const MAX_LINKS: usize = 255;

/// Counts the uncompressed tar as it is read; fails past the limit.
struct Counting<R> {
    inner: R,
    count: u64,
    limit: u64,
    over: Rc<Cell<bool>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.limit {
            self.over.set(true);
            return Err(io::Error::other("archive exceeds the byte limit"));
        }
        Ok(n)
    }
}

pub(super) struct Extractor<'a> {
    /// The destination directory (host path, no symlinks in it).
    dest: PathBuf,
    /// The archive as the user named it, for errors.
    archive: &'a str,
    opts: &'a CopyOptions,
    dir_times: Vec<(PathBuf, TimeSpec)>,
    entries: u64,
    content: u64,
}

impl<'a> Extractor<'a> {
    pub(super) fn new(dest: PathBuf, archive: &'a str, opts: &'a CopyOptions) -> Self {
        Self {
            dest,
            archive,
            opts,
            dir_times: Vec::new(),
            entries: 0,
            content: 0,
        }
    }

    fn limit(&self, what: &'static str) -> CopyError {
        CopyError::ArchiveLimit {
            archive: self.archive.to_string(),
            what,
            limit: match what {
                "entries" => self.opts.archive_limits.max_entries,
                _ => self.opts.archive_limits.max_bytes,
            },
        }
    }

    fn unsafe_entry(&self, entry: &str, reason: impl Into<String>) -> CopyError {
        CopyError::UnsafeEntry {
            archive: self.archive.to_string(),
            entry: entry.to_string(),
            reason: reason.into(),
        }
    }

    fn io(&self, what: String) -> impl FnOnce(io::Error) -> CopyError + '_ {
        move |source| CopyError::Archive {
            archive: self.archive.to_string(),
            what,
            source,
        }
    }

    /// Extracts the (decompressed) tar stream `input`.
    pub(super) fn run(mut self, input: impl Read) -> Result<(), CopyError> {
        let over = Rc::new(Cell::new(false));
        let counting = Counting {
            inner: input,
            count: 0,
            limit: self.opts.archive_limits.max_bytes,
            over: Rc::clone(&over),
        };
        let mut archive = tar::Archive::new(counting);
        let entries = archive
            .entries()
            .map_err(self.io("reading the archive".into()))?;
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(_) if over.get() => return Err(self.limit("bytes")),
                Err(e) => return Err(self.io("reading the archive".into())(e)),
            };
            match self.entry(entry) {
                Err(CopyError::Archive { .. }) if over.get() => return Err(self.limit("bytes")),
                other => other?,
            }
        }
        // Parents first were created first; set their times last, deepest
        // first, so creating children does not change them again.
        for (path, time) in self.dir_times.iter().rev() {
            // A later entry may have replaced the directory, or a parent,
            // with a symlink: never set times through it.
            if !is_dir_inside(&self.dest, path) {
                continue;
            }
            set_times(path, time)
                .map_err(self.io(format!("setting times of {}", path.display())))?;
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), CopyError> {
        let etype = entry.header().entry_type();
        if matches!(etype, EntryType::XGlobalHeader) {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let comps = self.normalize(&raw, &name, "name")?;
        let Some((last, parent)) = comps.split_last() else {
            // The archive's root (`./`): moby skips it too.
            return Ok(());
        };
        self.entries += 1;
        if self.entries > self.opts.archive_limits.max_entries {
            return Err(self.limit("entries"));
        }
        let meta = self.meta(&mut entry, &name)?;
        let dir = self.resolve_dir(parent, &name, true)?;
        let path = dir.join(last);
        let is_dir = matches!(etype, EntryType::Directory);
        if let Ok(existing) = std::fs::symlink_metadata(&path)
            && !(existing.is_dir() && is_dir)
        {
            let r = if existing.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            r.map_err(self.io(format!("entry \"{name}\": replacing")))?;
        }
        match etype {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(&mut entry, &path, &name)?
            }
            EntryType::Directory => {
                if !path.is_dir() {
                    std::fs::create_dir(&path)
                        .map_err(self.io(format!("entry \"{name}\": creating directory")))?;
                }
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.unsafe_entry(&name, "symlink without a target"))?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                    .map_err(self.io(format!("entry \"{name}\": creating symlink")))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.unsafe_entry(&name, "hardlink without a target"))?
                    .into_owned();
                let tcomps = self.normalize(&target, &name, "hardlink target")?;
                let Some((tlast, tparent)) = tcomps.split_last() else {
                    return Err(self.unsafe_entry(&name, "hardlink to the destination itself"));
                };
                let tpath = self.resolve_dir(tparent, &name, false)?.join(tlast);
                match std::fs::symlink_metadata(&tpath) {
                    Ok(m) if !m.is_dir() => {}
                    _ => {
                        return Err(self.unsafe_entry(
                            &name,
                            format!(
                                "hardlink target \"{}\" is not a file in the destination",
                                String::from_utf8_lossy(&target)
                            ),
                        ));
                    }
                }
                std::fs::hard_link(&tpath, &path)
                    .map_err(self.io(format!("entry \"{name}\": creating hardlink")))?;
                // A hardlink shares its target's metadata.
                return Ok(());
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let h = entry.header();
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                let kind = match etype {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let dev = makedev(u64::from(major), u64::from(minor));
                mknod(&path, kind, Mode::from_bits_truncate(meta.mode), dev).map_err(|e| {
                    self.io(format!("entry \"{name}\": creating special file"))(e.into())
                })?;
            }
            other => {
                return Err(self.unsafe_entry(
                    &name,
                    format!(
                        "unsupported tar entry type {:?}",
                        char::from(other.as_byte())
                    ),
                ));
            }
        }
        self.apply_meta(&path, &meta, etype, &name)
    }

    /// Splits a name into components; absolute names and `..` are refused.
    fn normalize(&self, raw: &[u8], entry: &str, what: &str) -> Result<Vec<OsString>, CopyError> {
        if raw.first() == Some(&b'/') {
            return Err(self.unsafe_entry(entry, format!("absolute {what}")));
        }
        let mut comps = Vec::new();
        for c in raw.split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    return Err(self.unsafe_entry(entry, format!("{what} contains `..`")));
                }
                c => comps.push(OsString::from_vec(c.to_vec())),
            }
        }
        Ok(comps)
    }

    /// The directory `comps` names under the destination, following
    /// symlinks only while they stay inside it; missing directories are
    /// created when `create`, else refused.
    fn resolve_dir(
        &mut self,
        comps: &[OsString],
        entry: &str,
        create: bool,
    ) -> Result<PathBuf, CopyError> {
        let mut pending: Vec<OsString> = comps.iter().rev().cloned().collect();
        let mut current: Vec<OsString> = Vec::new();
        let mut links = 0;
        while let Some(part) = pending.pop() {
            match part.as_bytes() {
                b"" | b"." => continue,
                b".." => {
                    if current.pop().is_none() {
                        return Err(self.unsafe_entry(
                            entry,
                            "a symlink on its path leads outside the destination",
                        ));
                    }
                    continue;
                }
                _ => {}
            }
            current.push(part);
            let here: PathBuf = self.dest.join(current.iter().collect::<PathBuf>());
            match std::fs::symlink_metadata(&here) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(self.unsafe_entry(entry, "too many levels of symbolic links"));
                    }
                    let target = std::fs::read_link(&here)
                        .map_err(self.io(format!("entry \"{entry}\": reading link")))?;
                    let target = target.into_os_string().into_vec();
                    if target.first() == Some(&b'/') {
                        return Err(self.unsafe_entry(
                            entry,
                            format!(
                                "its parent {} is a symlink to the absolute path {}, outside the destination",
                                PathBuf::from_iter(&current).display(),
                                String::from_utf8_lossy(&target)
                            ),
                        ));
                    }
                    current.pop();
                    for t in target.split(|&b| b == b'/').rev() {
                        pending.push(OsString::from_vec(t.to_vec()));
                    }
                }
                Ok(_) => {
                    return Err(self.unsafe_entry(
                        entry,
                        format!(
                            "its parent {} is not a directory",
                            PathBuf::from_iter(&current).display()
                        ),
                    ));
                }
                Err(_) if create => self.mkdir_parent(&here, entry)?,
                Err(_) => {
                    return Err(self.unsafe_entry(
                        entry,
                        format!(
                            "directory {} does not exist",
                            PathBuf::from_iter(&current).display()
                        ),
                    ));
                }
            }
        }
        Ok(self.dest.join(current.iter().collect::<PathBuf>()))
    }

    fn mkdir_parent(&mut self, path: &Path, entry: &str) -> Result<(), CopyError> {
        let err = || self.io(format!("entry \"{entry}\": creating parent directory"));
        std::fs::create_dir(path).map_err(err())?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(err())?;
        // moby's createImpliedDirectories owns them by the root of the ID
        // map, whatever `--chown` says (it applies to the entries only).
        std::os::unix::fs::lchown(path, Some(0), Some(0)).map_err(err())?;
        if let Some(t) = self.opts.utime {
            // Set once its children are in.
            self.dir_times
                .push((path.to_path_buf(), TimeSpec::new(t, 0)));
        }
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &Path,
        name: &str,
    ) -> Result<(), CopyError> {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(self.io(format!("entry \"{name}\": creating")))?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io(format!("entry \"{name}\": reading"))(e)),
            };
            // Sparse entries expand beyond the bytes read: count content too.
            self.content += n as u64;
            if self.content > self.opts.archive_limits.max_bytes {
                return Err(self.limit("bytes"));
            }
            out.write_all(&buf[..n])
                .map_err(self.io(format!("entry \"{name}\": writing")))?;
        }
        Ok(())
    }

    fn meta<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
    ) -> Result<EntryMeta, CopyError> {
        // Go's reader (and so Docker) reads numeric fields leniently: NUL-
        // or space-padded octal, empty meaning 0, or GNU base-256.
        let h = entry.header().as_old();
        let bad = |field: &str| self.unsafe_entry(name, format!("invalid {field} field"));
        let mut meta = EntryMeta {
            mode: u32::try_from(numeric(&h.mode).ok_or_else(|| bad("mode"))? & 0o7777)
                .map_err(|_| bad("mode"))?,
            uid: numeric(&h.uid).ok_or_else(|| bad("uid"))?,
            gid: numeric(&h.gid).ok_or_else(|| bad("gid"))?,
            mtime: TimeSpec::new(
                i64::try_from(numeric(&h.mtime).ok_or_else(|| bad("mtime"))?).unwrap_or(i64::MAX),
                0,
            ),
            xattrs: Vec::new(),
        };
        let exts = entry
            .pax_extensions()
            .map_err(self.io(format!("entry \"{name}\": reading PAX records")))?;
        for ext in exts.into_iter().flatten() {
            let ext = ext.map_err(self.io(format!("entry \"{name}\": reading PAX records")))?;
            let value = ext.value_bytes();
            match ext.key_bytes() {
                b"uid" => meta.uid = parse_id(value).ok_or_else(|| bad("PAX uid"))?,
                b"gid" => meta.gid = parse_id(value).ok_or_else(|| bad("PAX gid"))?,
                b"mtime" => meta.mtime = parse_pax_time(value).ok_or_else(|| bad("PAX mtime"))?,
                key => {
                    if let Some(x) = key.strip_prefix(b"SCHILY.xattr.") {
                        meta.xattrs
                            .push((OsString::from_vec(x.to_vec()), value.to_vec()));
                    }
                }
            }
        }
        Ok(meta)
    }

    fn apply_meta(
        &mut self,
        path: &Path,
        meta: &EntryMeta,
        etype: EntryType,
        name: &str,
    ) -> Result<(), CopyError> {
        let (uid, gid) = match self.opts.chown {
            Some(owner) => owner,
            None => (
                u32::try_from(meta.uid).map_err(|_| self.unsafe_entry(name, "uid out of range"))?,
                u32::try_from(meta.gid).map_err(|_| self.unsafe_entry(name, "gid out of range"))?,
            ),
        };
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .map_err(self.io(format!("entry \"{name}\": chown")))?;
        let is_link = matches!(etype, EntryType::Symlink);
        if !is_link {
            // After chown, which clears setuid/setgid.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(meta.mode))
                .map_err(self.io(format!("entry \"{name}\": chmod")))?;
        }
        for (key, value) in &meta.xattrs {
            // Best effort, as BuildKit's `BestEffortXattrs`.
            if let Err(e) = xattr::set(path, key, value) {
                tracing::debug!(entry = name, xattr = %key.to_string_lossy(), error = %e, "xattr not set");
            }
        }
        let time = self.opts.utime.map_or(meta.mtime, |t| TimeSpec::new(t, 0));
        if matches!(etype, EntryType::Directory) {
            self.dir_times.push((path.to_path_buf(), time));
            return Ok(());
        }
        set_times(path, &time).map_err(self.io(format!("entry \"{name}\": setting times")))
    }
}

struct EntryMeta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: TimeSpec,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

/// A tar header number as Go's `archive/tar` parses it: GNU base-256
/// when the high bit of the first byte is set (negative values refused),
/// else octal with surrounding spaces and NULs ignored (none at all is 0).
fn numeric(field: &[u8]) -> Option<u64> {
    if let Some((&first, rest)) = field.split_first()
        && first & 0x80 != 0
    {
        if first & 0x40 != 0 {
            return None;
        }
        let mut v = u64::from(first & 0x3f);
        for &b in rest {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches([' ', '\0']);
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

fn parse_id(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A PAX time, `[-]secs[.fraction]`.
fn parse_pax_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    // One sign only, as Go's ParseInt; `--9223372036854775808` would
    // otherwise overflow the negation below.
    if neg && whole.starts_with(['-', '+']) {
        return None;
    }
    let secs: i64 = whole.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nanos: i64 = digits.parse().ok()?;
    Some(match (neg, nanos) {
        (false, _) => TimeSpec::new(secs, nanos),
        (true, 0) => TimeSpec::new(-secs, 0),
        (true, _) => TimeSpec::new(-secs - 1, 1_000_000_000 - nanos),
    })
}

/// Whether `path` is still a directory below `dest` reached without a
/// symlink.
fn is_dir_inside(dest: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(dest) else {
        return false;
    };
    let mut cur = dest.to_path_buf();
    rel.components().all(|c| {
        cur.push(c);
        std::fs::symlink_metadata(&cur).is_ok_and(|m| m.is_dir())
    })
}

fn set_times(path: &Path, t: &TimeSpec) -> io::Result<()> {
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        t,
        t,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_numbers_parse_like_go() {
        assert_eq!(numeric(b"0000644\0"), Some(0o644));
        assert_eq!(numeric(b"  1750 \0"), Some(0o1750));
        assert_eq!(numeric(b"\0\0\0\0\0\0\0\0"), Some(0), "unset is 0");
        assert_eq!(numeric(&[0x80, 0, 0, 0, 0, 0, 0x01, 0x00]), Some(256));
        assert_eq!(numeric(&[0xff, 0xff, 0xff, 0xff]), None, "negative");
        assert_eq!(numeric(b"12x"), None);
        assert_eq!(
            parse_pax_time(b"-1.5").map(|t| (t.tv_sec(), t.tv_nsec())),
            Some((-2, 500_000_000))
        );
        let parsed = |v: &[u8]| parse_pax_time(v).map(|t| (t.tv_sec(), t.tv_nsec()));
        assert_eq!(parsed(b"--9223372036854775808"), None, "no overflow");
        assert_eq!(parsed(b"-+1"), None);
        assert_eq!(
            parsed(b"-9223372036854775807.5"),
            Some((i64::MIN, 500_000_000))
        );
    }
}
