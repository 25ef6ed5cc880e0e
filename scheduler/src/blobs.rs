//! The scheduler's content store: blobs by sha256 digest under
//! `<root>/blobs/sha256/<hex>`, the layout the worker's store uses too, so
//! an embedded farm shares one directory and copies nothing.
//!
//! A blob is written to `<root>/tmp`, verified against its digest and
//! size, and only then renamed to its final path: a partial or corrupt
//! blob is never visible under a digest.

use sha2::{Digest as _, Sha256};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use thiserror::Error;

/// Why a blob operation failed.
#[derive(Debug, Error)]
pub enum BlobError {
    /// Not a `sha256:` digest of 64 lowercase hex digits.
    #[error("invalid digest {0:?}")]
    BadDigest(String),
    /// The blob is not in the store.
    #[error("blob {0} is not in the store")]
    Missing(String),
    /// The bytes written do not hash to the digest they were sent under.
    #[error("blob {expected}: content hashes to {actual} ({size} bytes)")]
    Mismatch {
        /// The digest claimed.
        expected: String,
        /// The digest of what arrived.
        actual: String,
        /// Bytes received.
        size: u64,
    },
    /// A chunk did not continue where the previous one stopped.
    #[error("blob {digest}: chunk at offset {offset}, expected {expected}")]
    OutOfOrder {
        /// The blob.
        digest: String,
        /// The chunk's offset.
        offset: u64,
        /// Bytes received so far.
        expected: u64,
    },
    /// Filesystem failure.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BlobError + 'a {
    move |source| BlobError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The hex part of a well-formed `sha256:` digest.
pub fn digest_hex(digest: &str) -> Result<&str, BlobError> {
    match digest.strip_prefix("sha256:") {
        Some(h)
            if h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(h)
        }
        _ => Err(BlobError::BadDigest(digest.to_string())),
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Replaces `path` with `bytes` all at once: written beside it, then
/// renamed over it, so a reader sees the old file or the new one, never
/// half of it (the scheduler's indexes and build logs).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// A filesystem blob store.
#[derive(Debug)]
pub struct FsBlobs {
    root: PathBuf,
    counter: AtomicU64,
}

impl FsBlobs {
    /// Opens (creating) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, BlobError> {
        let root = root.into();
        for d in [root.join("blobs/sha256"), root.join("tmp")] {
            std::fs::create_dir_all(&d).map_err(io("creating", &d))?;
        }
        Ok(Self {
            root,
            counter: AtomicU64::new(0),
        })
    }

    /// The store's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where blob `digest` lives, present or not.
    pub fn path(&self, digest: &str) -> Result<PathBuf, BlobError> {
        Ok(self.root.join("blobs/sha256").join(digest_hex(digest)?))
    }

    /// The blob's size, if present.
    pub fn size(&self, digest: &str) -> Option<u64> {
        let p = self.path(digest).ok()?;
        std::fs::metadata(p)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// Whether the blob is present.
    pub fn has(&self, digest: &str) -> bool {
        self.size(digest).is_some()
    }

    /// A fresh temporary path inside the store (same filesystem as the
    /// blobs, so a rename commits it).
    pub fn temp_path(&self, what: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{what}-{}-{n}", std::process::id()))
    }

    /// Stores `bytes` (configs, manifests); returns their digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<String, BlobError> {
        let digest = sha256_of(bytes);
        if self.has(&digest) {
            return Ok(digest);
        }
        let tmp = self.temp_path("put");
        std::fs::write(&tmp, bytes).map_err(io("writing", &tmp))?;
        self.commit(&tmp, &digest)?;
        Ok(digest)
    }

    /// Reads a whole blob (configs, manifests).
    pub fn read(&self, digest: &str) -> Result<Vec<u8>, BlobError> {
        let p = self.path(digest)?;
        match std::fs::read(&p) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(BlobError::Missing(digest.to_string()))
            }
            Err(e) => Err(io("reading", &p)(e)),
        }
    }

    /// Moves a verified temp file in as `digest` (a concurrent writer of
    /// the same digest wrote the same bytes, so either rename wins).
    pub fn commit(&self, tmp: &Path, digest: &str) -> Result<PathBuf, BlobError> {
        let dest = self.path(digest)?;
        std::fs::rename(tmp, &dest).map_err(io("storing blob", &dest))?;
        Ok(dest)
    }

    /// Starts writing blob `digest`.
    pub fn writer(&self, digest: &str) -> Result<BlobWriter, BlobError> {
        digest_hex(digest)?;
        let tmp = self.temp_path("ingest");
        let file = std::fs::File::create(&tmp).map_err(io("creating", &tmp))?;
        Ok(BlobWriter {
            digest: digest.to_string(),
            tmp,
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            written: 0,
        })
    }
}

/// A blob being written in chunks; [`BlobWriter::finish`] verifies and
/// commits it. Dropped unfinished, it leaves only a temp file that the
/// next start removes.
#[derive(Debug)]
pub struct BlobWriter {
    digest: String,
    tmp: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    hasher: Sha256,
    written: u64,
}

impl BlobWriter {
    /// The digest being written.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends a chunk that starts at `offset`.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlobError> {
        if offset != self.written {
            return Err(BlobError::OutOfOrder {
                digest: self.digest.clone(),
                offset,
                expected: self.written,
            });
        }
        self.file
            .write_all(data)
            .map_err(io("writing", &self.tmp))?;
        self.hasher.update(data);
        self.written += data.len() as u64;
        Ok(())
    }

    /// Verifies the digest and commits the blob; returns its size.
    pub fn finish(self, store: &FsBlobs) -> Result<u64, BlobError> {
        let BlobWriter {
            digest,
            tmp,
            file,
            hasher,
            written,
        } = self;
        let result = (|| {
            file.into_inner()
                .map_err(|e| io("writing", &tmp)(e.into_error()))?
                .sync_all()
                .map_err(io("syncing", &tmp))?;
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            if actual != digest {
                return Err(BlobError::Mismatch {
                    expected: digest.clone(),
                    actual,
                    size: written,
                });
            }
            store.commit(&tmp, &digest)?;
            Ok(written)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Abandons the write.
    pub fn abort(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_blob_is_verified_before_it_appears() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobs::open(dir.path()).unwrap();
        let digest = sha256_of(b"hello world");
        let mut w = store.writer(&digest).unwrap();
        w.write_at(0, b"hello ").unwrap();
        assert!(!store.has(&digest), "visible before it is complete");
        w.write_at(6, b"world").unwrap();
        assert_eq!(w.finish(&store).unwrap(), 11);
        assert_eq!(store.read(&digest).unwrap(), b"hello world");

        let wrong = sha256_of(b"something else");
        let mut w = store.writer(&wrong).unwrap();
        w.write_at(0, b"hello world").unwrap();
        let err = w.finish(&store).unwrap_err();
        assert!(matches!(err, BlobError::Mismatch { .. }), "{err}");
        assert!(!store.has(&wrong));
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn chunks_must_be_contiguous_and_digests_well_formed() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobs::open(dir.path()).unwrap();
        let mut w = store.writer(&sha256_of(b"ab")).unwrap();
        assert!(matches!(
            w.write_at(1, b"b"),
            Err(BlobError::OutOfOrder { expected: 0, .. })
        ));
        assert!(matches!(
            store.writer("sha256:../../etc/passwd"),
            Err(BlobError::BadDigest(_))
        ));
        assert!(matches!(
            store.read(&sha256_of(b"x")),
            Err(BlobError::Missing(_))
        ));
    }
}
