//! Digests of context files seen by an earlier walk, so a file that did not
//! change is not read and hashed again — BuildKit's context transfer
//! likewise compares stat data before it sends a file.
//!
//! A file is the same when its device, inode, size, modification time and
//! change time are. The change time cannot be set by a user and moves on
//! every write, chmod, chown and rename. A file written within the clock's
//! granularity of its hashing could keep all of them across a change, so,
//! as git does with its "racily clean" entries, a digest is only saved for
//! a file whose change time is well before the walk.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// How much older than the walk a file's change time must be for its
/// digest to be saved.
const RACY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stat {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stat {
    fn of(meta: &fs::Metadata) -> Self {
        Self {
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// File digests by inode, loaded from and saved to a small text file.
#[derive(Debug, Default)]
pub struct DigestCache {
    known: HashMap<(u64, u64), (Stat, String)>,
    seen: HashMap<(u64, u64), (Stat, String)>,
    started: Option<SystemTime>,
    hits: usize,
}

impl DigestCache {
    /// The digests saved at `path`; empty when there is no such file or it
    /// cannot be read (a cache only saves work).
    pub fn load(path: &Path) -> Self {
        let mut cache = Self {
            started: Some(SystemTime::now()),
            ..Self::default()
        };
        let Ok(text) = fs::read_to_string(path) else {
            return cache;
        };
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            let [dev, ino, size, ms, mn, cs, cn, digest] = f[..] else {
                continue;
            };
            let parsed = (|| {
                Some((
                    (dev.parse().ok()?, ino.parse().ok()?),
                    Stat {
                        size: size.parse().ok()?,
                        mtime: (ms.parse().ok()?, mn.parse().ok()?),
                        ctime: (cs.parse().ok()?, cn.parse().ok()?),
                    },
                ))
            })();
            let valid_digest = digest
                .strip_prefix("sha256:")
                .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
            if let Some((key, stat)) = parsed
                && valid_digest
            {
                cache.known.insert(key, (stat, digest.to_string()));
            }
        }
        cache
    }

    /// As [`DigestCache::load`], for a walk that started at `started` (tests
    /// make files look old enough to save).
    #[cfg(test)]
    pub(crate) fn load_as_of(path: &Path, started: SystemTime) -> Self {
        Self {
            started: Some(started),
            ..Self::load(path)
        }
    }

    /// The digest recorded for this file, if it is unchanged.
    pub(super) fn lookup(&mut self, meta: &fs::Metadata) -> Option<String> {
        let key = (meta.dev(), meta.ino());
        let stat = Stat::of(meta);
        let (known, digest) = self.known.get(&key)?;
        if *known != stat {
            return None;
        }
        let digest = digest.clone();
        self.seen.insert(key, (stat, digest.clone()));
        self.hits += 1;
        Some(digest)
    }

    /// Records the digest just computed for this file.
    pub(super) fn record(&mut self, meta: &fs::Metadata, digest: &str) {
        self.seen.insert(
            (meta.dev(), meta.ino()),
            (Stat::of(meta), digest.to_string()),
        );
    }

    /// Files whose digest came from the cache.
    pub fn hits(&self) -> usize {
        self.hits
    }

    /// Saves the digests of the files this walk saw (others are
    /// forgotten), atomically; racily clean files are left out.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let limit = self.started.unwrap_or_else(SystemTime::now) - RACY;
        let limit = limit
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut out = Vec::with_capacity(self.seen.len() * 120);
        for ((dev, ino), (s, digest)) in &self.seen {
            if s.ctime.0 >= limit || s.mtime.0 >= limit {
                continue;
            }
            writeln!(
                out,
                "{dev} {ino} {} {} {} {} {} {digest}",
                s.size, s.mtime.0, s.mtime.1, s.ctime.0, s.ctime.1
            )?;
        }
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        fs::write(&tmp, out)?;
        fs::rename(&tmp, path).inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
    }
}
