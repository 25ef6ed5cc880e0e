//! COPY and ADD into a container's root filesystem with Docker's rules
//! (BuildKit's file-op copy, fsutil `copy.Copy`):
//!
//! - a source directory's *contents* are copied, not the directory;
//! - a file goes to `dest/NAME` when `dest` ends with `/` or is an existing
//!   directory, otherwise to `dest` itself;
//! - missing parents of the destination are created 0755 (or with an
//!   octal `--chmod`'s mode), owned by the `--chown` user or root;
//! - a destination that is a symlink is written through, as BuildKit
//!   resolves the whole destination path;
//! - symlinks given as sources are followed (inside the source root); links
//!   inside copied directories are copied as links; hardlinks stay linked;
//! - modes (setuid/setgid/sticky included), xattrs and mtimes are kept;
//!   ownership is kept unless `--chown` is given, `--chmod` replaces modes;
//! - a wildcard that matches nothing copies nothing;
//! - `--parents` ([`copy_parents`]) keeps the matched paths' directories.
//!
//! Every path is resolved inside its root: neither a source nor the
//! destination can reach outside through `..` or symlinks.
//!
//! ADD ([`add`]) copies the same way, except that a source which is a tar
//! archive (plain, gzip, bzip2, xz or zstd, recognised by its content) is
//! extracted into the destination directory instead (`extract.rs` has the
//! rules).

mod archive;
mod extract;
mod parents;
mod resolve;
mod tree;

pub use archive::{ArchiveCompression, archive_compression, decompress};
pub use extract::ArchiveLimits;
pub use parents::copy_parents;
pub use resolve::{resolve_in_root, resolve_wildcards};

use std::path::{Path, PathBuf};
use strata_frontend::dockerignore::PatternMatcher;
use thiserror::Error;

/// A COPY/ADD failure, naming the source or destination path as the user
/// wrote it.
#[derive(Debug, Error)]
pub enum CopyError {
    /// A non-wildcard source does not exist.
    #[error("\"{0}\": not found")]
    NotFound(String),
    /// A filesystem operation failed.
    #[error("{op} \"{path}\": {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// Path inside the source or destination root.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A pattern (source wildcard or `--exclude`) is malformed.
    #[error("bad pattern \"{pattern}\": {reason}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// Why.
        reason: String,
    },
    /// Too many symlinks while resolving a path.
    #[error("\"{0}\": too many levels of symbolic links")]
    SymlinkLoop(String),
    /// An ADD archive entry would escape the destination or is malformed.
    #[error("extracting \"{archive}\": entry \"{entry}\" rejected: {reason}")]
    UnsafeEntry {
        /// The archive, as the ADD source names it.
        archive: String,
        /// The entry name as written in the archive.
        entry: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Reading an ADD archive or writing one of its entries failed.
    #[error("extracting \"{archive}\": {what}: {source}")]
    Archive {
        /// The archive, as the ADD source names it.
        archive: String,
        /// What was attempted (naming the entry when there is one).
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// An ADD archive is larger than [`ArchiveLimits`] allow.
    #[error(
        "extracting \"{archive}\": the archive exceeds the limit of {limit} {what} (a decompression bomb?); raise the worker's --max-add-bytes if it is legitimate"
    )]
    ArchiveLimit {
        /// The archive, as the ADD source names it.
        archive: String,
        /// What was counted (`bytes` or `entries`).
        what: &'static str,
        /// The limit.
        limit: u64,
    },
}

/// `--chmod` as given: an octal mode or symbolic clauses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    /// `--chmod=755`.
    Octal(u32),
    /// `--chmod=u+x,g-w`.
    Symbolic(String),
}

impl Chmod {
    /// Parses a `--chmod` value.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.chars().all(|c| c.is_ascii_digit()) {
            return u32::from_str_radix(s, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .map(Chmod::Octal)
                .ok_or_else(|| format!("invalid chmod parameter: '{s}'. it should be octal string and between 0 and 07777"));
        }
        Ok(Chmod::Symbolic(s.to_string()))
    }

    /// The new mode bits for a file of `old` mode.
    pub fn apply(&self, old: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(spec) => apply_symbolic(spec, old & 0o7777, is_dir),
        }
    }
}

/// chmod(1)-style symbolic modes (`u+x`, `go-w`, `a=rX`).
fn apply_symbolic(spec: &str, mut mode: u32, is_dir: bool) -> u32 {
    for clause in spec.split(',') {
        let who_end = clause.find(['+', '-', '=']).unwrap_or(clause.len());
        let (who, rest) = clause.split_at(who_end);
        let mut mask = 0;
        for c in who.chars() {
            mask |= match c {
                'u' => 0o4700,
                'g' => 0o2070,
                'o' => 0o1007,
                _ => 0o7777,
            };
        }
        if who.is_empty() {
            mask = 0o7777;
        }
        let mut chars = rest.chars().peekable();
        while let Some(op) = chars.next() {
            let mut bits = 0;
            while let Some(&c) = chars.peek() {
                if matches!(c, '+' | '-' | '=') {
                    break;
                }
                chars.next();
                bits |= match c {
                    'r' => 0o444,
                    'w' => 0o222,
                    'x' => 0o111,
                    'X' if is_dir || mode & 0o111 != 0 => 0o111,
                    's' => 0o6000,
                    't' => 0o1000,
                    _ => 0,
                };
            }
            let bits = bits & mask;
            match op {
                '+' => mode |= bits,
                '-' => mode &= !bits,
                _ => mode = (mode & !mask) | bits,
            }
        }
    }
    mode
}

/// How to copy.
#[derive(Debug, Default)]
pub struct CopyOptions {
    /// Owner of everything written (`--chown`, resolved), else kept.
    pub chown: Option<(u32, u32)>,
    /// `--chmod`.
    pub chmod: Option<Chmod>,
    /// `--exclude` patterns, relative to each copied source.
    pub exclude: Option<PatternMatcher>,
    /// Clamp mtimes to this time (SOURCE_DATE_EPOCH), seconds.
    pub utime: Option<i64>,
    /// Bounds on what an ADD archive may extract.
    pub archive_limits: ArchiveLimits,
    /// Regular files whose copy would equal the source in every attribute
    /// (owner, mode, mtime) are hardlinked instead of copied, when the
    /// filesystem allows it. Only for sources nothing writes to (the
    /// worker's materialised contexts) copied into a destination nothing
    /// writes to before its layer is made and it is deleted.
    pub link_sources: bool,
}

/// Copies one source (a path or wildcard pattern inside `src_root`) to
/// `dest` (absolute inside `dst_root`; a trailing `/` means "into this
/// directory").
pub fn copy(
    src_root: &Path,
    source: &str,
    dst_root: &Path,
    dest: &str,
    opts: &CopyOptions,
) -> Result<(), CopyError> {
    let matches = source_matches(src_root, source)?;
    copy_matches(src_root, &matches, dst_root, dest, opts)
}

/// The `/`-rooted paths a COPY/ADD source selects in `src_root`: the
/// wildcard's matches (possibly none), or the path itself, which must
/// exist.
pub fn source_matches(src_root: &Path, source: &str) -> Result<Vec<String>, CopyError> {
    let pattern = clean_rooted(source);
    if has_wildcards(&pattern) {
        return resolve_wildcards(src_root, &pattern);
    }
    let resolved = resolve_in_root(src_root, &pattern, true)?;
    if std::fs::symlink_metadata(&resolved).is_err() {
        return Err(CopyError::NotFound(source.to_string()));
    }
    Ok(vec![pattern])
}

/// Copies already selected paths (from [`source_matches`], taken
/// literally) to `dest`, with [`copy`]'s rules.
pub fn copy_matches(
    src_root: &Path,
    matches: &[String],
    dst_root: &Path,
    dest: &str,
    opts: &CopyOptions,
) -> Result<(), CopyError> {
    let mut copier = tree::Copier::new(opts);
    for m in matches {
        let src = resolve_in_root(src_root, m, true)?;
        let meta = std::fs::symlink_metadata(&src).map_err(|e| io("reading", m, e))?;
        if meta.is_dir() {
            // The directory's contents go into dest, which becomes a directory.
            let dst = copier.ensure_dir(dst_root, dest)?;
            copier.copy_dir_contents(&src, &dst, "")?;
        } else {
            let dst = copier.file_target(dst_root, dest, m)?;
            copier.copy_entry(&src, &dst, base_name(m))?;
        }
    }
    Ok(())
}

/// ADD of one source: like [`copy`], except that, when `unpack`, each
/// selected file that is a tar archive ([`archive_compression`]) is
/// extracted into `dest` (created as a directory) instead of copied.
/// `--chmod` and `--exclude` do not apply to extracted entries (as in
/// BuildKit); `--chown` does.
pub fn add(
    src_root: &Path,
    source: &str,
    dst_root: &Path,
    dest: &str,
    opts: &CopyOptions,
    unpack: bool,
) -> Result<(), CopyError> {
    let matches = source_matches(src_root, source)?;
    add_matches(src_root, &matches, dst_root, dest, opts, unpack, source)
}

/// [`add`] of already selected paths (taken literally); `display` names
/// the source in errors.
pub fn add_matches(
    src_root: &Path,
    matches: &[String],
    dst_root: &Path,
    dest: &str,
    opts: &CopyOptions,
    unpack: bool,
    display: &str,
) -> Result<(), CopyError> {
    for m in matches {
        let src = resolve_in_root(src_root, m, true)?;
        let compression = if unpack {
            archive_compression(&src)
        } else {
            None
        };
        if compression.is_none() {
            copy_matches(src_root, std::slice::from_ref(m), dst_root, dest, opts)?;
            continue;
        }
        let archive = if matches.len() == 1 {
            display.to_string()
        } else {
            m.trim_start_matches('/').to_string()
        };
        let dir = tree::Copier::new(opts).ensure_archive_dir(dst_root, dest)?;
        let file = std::fs::File::open(&src).map_err(|e| io("opening", m, e))?;
        let (_, reader) = decompress(std::io::BufReader::with_capacity(1 << 20, file))
            .map_err(|e| io("reading", m, e))?;
        extract::Extractor::new(dir, &archive, opts).run(reader)?;
    }
    Ok(())
}

pub(crate) fn io(op: &'static str, path: &str, source: std::io::Error) -> CopyError {
    CopyError::Io {
        op,
        path: path.to_string(),
        source,
    }
}

/// `/`-rooted, cleaned form of a path (`a/../b` is `/b`; `..` stops at `/`).
pub fn clean_rooted(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            x => parts.push(x),
        }
    }
    format!("/{}", parts.join("/"))
}

fn has_wildcards(p: &str) -> bool {
    p.contains(['*', '?', '['])
}

fn base_name(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

pub(crate) fn join_inside(root: &Path, rooted: &str) -> PathBuf {
    root.join(rooted.trim_start_matches('/'))
}

#[cfg(test)]
mod add_tests;
#[cfg(test)]
mod tests;
