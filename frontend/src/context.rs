//! The build-context manifest: a deterministic, content-addressed listing of
//! the files a build can see.
//!
//! The walk reproduces what BuildKit transfers for a local context (fsutil's
//! filtered walk): `.dockerignore` patterns are applied to every path with
//! `MatchesUsingParentResults`, an excluded directory is only descended into
//! when a `!` exception might re-include something below it, and an excluded
//! directory that does contain re-included entries is listed after all (its
//! children need it). Symlinks are recorded, never followed.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dockerignore::{self, MatchInfo, PatternError, PatternMatcher};

mod digest_cache;
pub use digest_cache::DigestCache;

/// What kind of filesystem object an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (recorded, not followed).
    Symlink,
}

/// One file, directory or symlink of the build context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextEntry {
    /// Path relative to the context root, `/`-separated, no leading `./`.
    pub path: String,
    /// File, directory or symlink.
    pub kind: EntryKind,
    /// Permission bits plus setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Bytes of content: the file length, the link target's length for a
    /// symlink, 0 for a directory.
    pub size: u64,
    /// `sha256:<hex>` of the file content, or of the link target string for
    /// a symlink; `None` for a directory.
    pub digest: Option<String>,
    /// The symlink's target, verbatim.
    pub link_target: Option<String>,
    /// Modification time (seconds, nanoseconds since the epoch). Copied to
    /// the image as BuildKit's context transfer does; never part of a
    /// cache key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<(i64, u32)>,
    /// For a file hard-linked to an earlier entry (in path order): that
    /// entry's path. Never part of a cache key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardlink: Option<String>,
}

/// Every entry of a build context, sorted by path (byte order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RawManifest")]
pub struct ContextManifest {
    /// The entries, sorted by `path`; directories included.
    pub entries: Vec<ContextEntry>,
}

/// Deserialisation goes through [`ContextManifest::from_entries`] so a
/// hand-written or foreign manifest is sorted too.
#[derive(Deserialize)]
struct RawManifest {
    entries: Vec<ContextEntry>,
}

impl From<RawManifest> for ContextManifest {
    fn from(raw: RawManifest) -> Self {
        Self::from_entries(raw.entries)
    }
}

/// Errors from walking a build context.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// A filesystem operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("reading directory", ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The context root is not a directory.
    #[error("build context {} is not a directory", path.display())]
    NotADirectory {
        /// The root given.
        path: PathBuf,
    },
    /// A file name or symlink target that is not UTF-8.
    #[error("{} is not valid UTF-8", path.display())]
    NonUtf8 {
        /// The offending path.
        path: PathBuf,
    },
    /// The `.dockerignore` cannot be parsed.
    #[error("invalid {}: {source}", path.display())]
    Ignore {
        /// The ignore file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: PatternError,
    },
    /// A `.dockerignore` line (not a comment) that is not UTF-8.
    #[error("{} line {line} is not valid UTF-8", path.display())]
    IgnoreNotUtf8 {
        /// The ignore file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// A pattern failed when evaluated against a path (as fsutil's "failed
    /// to match excludepatterns").
    #[error("failed to match exclude patterns against {path:?}: {source}")]
    Match {
        /// The context path being matched.
        path: String,
        /// The pattern error.
        #[source]
        source: PatternError,
    },
    /// A file changed between being listed and being hashed.
    #[error("{} changed while the context was being read", path.display())]
    Changed {
        /// The file.
        path: PathBuf,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ContextError {
    move |source| ContextError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// A directory still being listed, with what its children need.
struct Frame {
    abs: PathBuf,
    rel: String,
    info: MatchInfo,
    /// The directory's own entry while it is excluded and not yet listed.
    pending: Option<ContextEntry>,
    /// Children left to visit, in reverse name order.
    children: Vec<String>,
}

impl ContextManifest {
    /// Walks `root`, applying `root/.dockerignore` if there is one (read as
    /// `ignorefile.ReadAll` does, including its 64 KiB line limit). The
    /// Dockerfile and `.dockerignore` are listed unless a pattern excludes
    /// them, as in BuildKit.
    pub fn walk(root: &Path) -> Result<Self, ContextError> {
        Self::walk_cached(root, None)
    }

    /// [`ContextManifest::walk`], taking the digests of unchanged files
    /// from `cache` and recording the others in it.
    pub fn walk_cached(root: &Path, cache: Option<&mut DigestCache>) -> Result<Self, ContextError> {
        check_root(root)?;
        let path = root.join(".dockerignore");
        let matcher = match fs::read(&path) {
            Ok(bytes) => {
                let text = ignore_file_text(bytes).map_err(|line| ContextError::IgnoreNotUtf8 {
                    path: path.clone(),
                    line,
                })?;
                let patterns = dockerignore::try_read_patterns(&text)
                    .and_then(|p| PatternMatcher::new(&p))
                    .map_err(|source| ContextError::Ignore {
                        path: path.clone(),
                        source,
                    })?;
                Some(patterns)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("reading", &path)(e)),
        };
        Self::walk_inner(root, matcher.as_ref(), cache)
    }

    /// Walks `root` with the given exclude patterns (`None`: keep all).
    /// Never follows symlinks; skips fifos, sockets and devices.
    pub fn walk_with(root: &Path, matcher: Option<&PatternMatcher>) -> Result<Self, ContextError> {
        Self::walk_inner(root, matcher, None)
    }

    fn walk_inner(
        root: &Path,
        matcher: Option<&PatternMatcher>,
        mut cache: Option<&mut DigestCache>,
    ) -> Result<Self, ContextError> {
        check_root(root)?;
        let mut out = Vec::new();
        let mut inodes: HashMap<String, (u64, u64)> = HashMap::new();
        let mut stack = vec![Frame {
            abs: root.to_owned(),
            rel: String::new(),
            info: MatchInfo::default(),
            pending: None,
            children: list_dir(root, false)?.unwrap_or_default(),
        }];
        // Pending (excluded, unlisted) frames always form a suffix of the
        // stack: listing anything lists every pending ancestor first.
        let mut first_pending = stack.len();
        while let Some(top) = stack.last_mut() {
            let Some(name) = top.children.pop() else {
                stack.pop();
                first_pending = first_pending.min(stack.len());
                continue;
            };
            let abs = top.abs.join(&name);
            let rel = if top.rel.is_empty() {
                name
            } else {
                format!("{}/{name}", top.rel)
            };
            let meta = match fs::symlink_metadata(&abs) {
                Ok(m) => m,
                // Vanished since the listing: fsutil skips it too.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("reading", &abs)(e)),
            };
            let is_dir = meta.is_dir();
            let mut info = MatchInfo::default();
            let mut excluded = false;
            if let Some(m) = matcher {
                // The root frame's info is the default, as fsutil passes for
                // top-level entries.
                (excluded, info) =
                    m.matches_using_parent_results(&rel, &top.info)
                        .map_err(|source| ContextError::Match {
                            path: rel.clone(),
                            source,
                        })?;
                if excluded && !(is_dir && m.may_reinclude_under(&rel)) {
                    continue;
                }
            }
            let ft = meta.file_type();
            if ft.is_fifo() || ft.is_socket() || ft.is_block_device() || ft.is_char_device() {
                continue;
            }
            let entry = entry_for(&abs, &rel, &meta, cache.as_deref_mut())?;
            if meta.is_file() && meta.nlink() > 1 {
                inodes.insert(rel.clone(), (meta.dev(), meta.ino()));
            }
            if !is_dir {
                flush(&mut stack, &mut first_pending, &mut out);
                out.push(entry);
                continue;
            }
            // An excluded directory may be unreadable when nothing in it is
            // wanted (fsutil ignores EACCES on skipped paths).
            let Some(children) = list_dir(&abs, excluded)? else {
                continue;
            };
            let pending = if excluded {
                Some(entry)
            } else {
                flush(&mut stack, &mut first_pending, &mut out);
                out.push(entry);
                None
            };
            stack.push(Frame {
                abs,
                rel,
                info,
                pending,
                children,
            });
            if excluded {
                first_pending = first_pending.min(stack.len() - 1);
            } else {
                first_pending = stack.len();
            }
        }
        let mut manifest = Self::from_entries(out);
        // Hard links: each later path of an inode points at the first.
        let mut first: HashMap<(u64, u64), String> = HashMap::new();
        for e in &mut manifest.entries {
            if let Some(key) = inodes.get(&e.path) {
                match first.get(key) {
                    Some(p) => e.hardlink = Some(p.clone()),
                    None => {
                        first.insert(*key, e.path.clone());
                    }
                }
            }
        }
        Ok(manifest)
    }

    /// A manifest of `entries`, sorted by path.
    pub fn from_entries(mut entries: Vec<ContextEntry>) -> Self {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Self { entries }
    }

    /// The entry at `path` (relative, `/`-separated).
    pub fn get(&self, path: &str) -> Option<&ContextEntry> {
        self.entries
            .binary_search_by(|e| e.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// The entries at `dir` or below it, in path order; `""`, `.` or `/`
    /// select everything. `dir` is cleaned first (`./a//b/` is `a/b`).
    pub fn subtree(&self, dir: &str) -> impl Iterator<Item = &ContextEntry> {
        let cleaned = dockerignore::clean(dir);
        let dir = cleaned.trim_start_matches('/');
        if dir.is_empty() || dir == "." {
            return None.into_iter().chain(self.entries.iter());
        }
        // Paths under `dir/` sort contiguously, between "dir/" and "dir0"
        // ('0' follows '/'); `dir` itself may sort elsewhere ("a" < "a-b" < "a/").
        let lo = format!("{dir}/");
        let hi = format!("{dir}0");
        let start = self.entries.partition_point(|e| e.path < lo);
        let end = self.entries.partition_point(|e| e.path < hi);
        self.get(dir)
            .into_iter()
            .chain(self.entries[start..end].iter())
    }

    /// The sum of all entries' sizes.
    pub fn total_size(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }
}

/// The root may be a symlink (the user named it), but must be a directory.
fn check_root(root: &Path) -> Result<(), ContextError> {
    let meta = fs::metadata(root).map_err(io_err("reading", root))?;
    if !meta.is_dir() {
        return Err(ContextError::NotADirectory {
            path: root.to_owned(),
        });
    }
    Ok(())
}

/// Lists the excluded-but-unlisted ancestors (outermost first).
fn flush(stack: &mut [Frame], first_pending: &mut usize, out: &mut Vec<ContextEntry>) {
    for frame in stack.iter_mut().skip(*first_pending) {
        out.extend(frame.pending.take());
    }
    *first_pending = stack.len();
}

/// Child names of `dir`, reverse-sorted for popping. `Ok(None)` when an
/// excluded directory cannot be read for lack of permission.
fn list_dir(dir: &Path, excluded: bool) -> Result<Option<Vec<String>>, ContextError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if excluded && e.kind() == io::ErrorKind::PermissionDenied => return Ok(None),
        Err(e) => return Err(io_err("reading directory", dir)(e)),
    };
    let mut names = Vec::new();
    for ent in rd {
        let ent = ent.map_err(io_err("reading directory", dir))?;
        let name = ent.file_name();
        let name = name
            .into_string()
            .map_err(|_| ContextError::NonUtf8 { path: ent.path() })?;
        names.push(name);
    }
    names.sort_unstable_by(|a, b| b.cmp(a));
    Ok(Some(names))
}

fn entry_for(
    abs: &Path,
    rel: &str,
    meta: &fs::Metadata,
    cache: Option<&mut DigestCache>,
) -> Result<ContextEntry, ContextError> {
    let ft = meta.file_type();
    let (kind, size, digest, link_target) = if ft.is_symlink() {
        let target = fs::read_link(abs).map_err(io_err("reading link", abs))?;
        let target = target
            .into_os_string()
            .into_string()
            .map_err(|_| ContextError::NonUtf8 {
                path: abs.to_owned(),
            })?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(target.as_bytes())));
        (
            EntryKind::Symlink,
            target.len() as u64,
            Some(digest),
            Some(target),
        )
    } else if ft.is_dir() {
        (EntryKind::Dir, 0, None, None)
    } else {
        let (size, digest) = match cache {
            Some(c) => match c.lookup(meta) {
                Some(digest) => (meta.size(), digest),
                None => {
                    let (size, digest) = hash_file(abs, meta)?;
                    // Recorded only when the file did not grow or shrink
                    // while it was read.
                    if size == meta.size() {
                        c.record(meta, &digest);
                    }
                    (size, digest)
                }
            },
            None => hash_file(abs, meta)?,
        };
        (EntryKind::File, size, Some(digest), None)
    };
    Ok(ContextEntry {
        path: rel.to_owned(),
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        size,
        digest,
        link_target,
        mtime: Some((meta.mtime(), meta.mtime_nsec() as u32)),
        hardlink: None,
    })
}

/// Streams the file through SHA-256; returns the bytes read and the digest.
fn hash_file(abs: &Path, meta: &fs::Metadata) -> Result<(u64, String), ContextError> {
    let mut file = File::open(abs).map_err(io_err("opening", abs))?;
    // `open` follows symlinks: make sure this is still the file we lstat'ed.
    let opened = file.metadata().map_err(io_err("reading", abs))?;
    if !opened.is_file() || opened.dev() != meta.dev() || opened.ino() != meta.ino() {
        return Err(ContextError::Changed {
            path: abs.to_owned(),
        });
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("reading", abs)(e)),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, format!("sha256:{}", hex::encode(hasher.finalize()))))
}

/// The ignore file as text. Go reads it as bytes; we need UTF-8 only where
/// it matters: invalid bytes in comment lines become `?` (one per byte, so
/// the 64 KiB line limit is unchanged), elsewhere they are an error with the
/// 1-based line number.
fn ignore_file_text(bytes: Vec<u8>) -> Result<String, usize> {
    let bytes = match String::from_utf8(bytes) {
        Ok(text) => return Ok(text),
        Err(e) => e.into_bytes(),
    };
    let mut out = String::with_capacity(bytes.len());
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let body = if i == 0 {
            line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line)
        } else {
            line
        };
        if std::str::from_utf8(line).is_err() && !body.starts_with(b"#") {
            return Err(i + 1);
        }
        for chunk in line.utf8_chunks() {
            out.push_str(chunk.valid());
            out.extend(std::iter::repeat_n('?', chunk.invalid().len()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
