//! strata's blob stores: content-addressed blobs (layers, configs,
//! manifests, context files, cache-mount archives) and small named objects
//! (the durable copy of the cache index, cache-mount pointers, finished
//! build logs), behind one trait with two backends:
//!
//! - [`fs::FsBlobs`]: a directory (embedded mode, a scheduler without an
//!   object store, and every node's local cache);
//! - [`s3::S3Blobs`]: S3 or an S3-compatible server (MinIO, s3s-fs, R2),
//!   shared by every scheduler and worker of a farm.
//!
//! Both keep the same promises, checked by one conformance suite
//! (`tests/conformance.rs`): a blob becomes visible under its digest only
//! once all of it is there and it hashes to that digest; an existing blob
//! is never stored again; reads are verified too.
//!
//! ```text
//! <root or prefix>/blobs/sha256/<hex>   blobs
//! <root or prefix>/objects/<key>        named objects
//! <root>/tmp/                            (filesystem) ingest
//! ```

pub mod fs;
pub mod s3;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use thiserror::Error;

pub use fs::{BlobWriter, FsBlobs, Staged, copy_hashing, write_atomic};
pub use s3::{S3Blobs, S3Config};

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum BlobError {
    /// Not a `sha256:` digest of 64 lowercase hex digits.
    #[error("invalid digest {0:?}: expected sha256: followed by 64 lowercase hex digits")]
    BadDigest(String),
    /// An object key with characters or segments a store must not accept.
    #[error("invalid object key {0:?}")]
    BadKey(String),
    /// The blob is not in the store.
    #[error("blob {0} is not in the store")]
    Missing(String),
    /// The bytes do not hash to the digest they were stored or sent under.
    #[error("blob {expected}: content hashes to {actual} ({size} bytes)")]
    Mismatch {
        /// The digest claimed.
        expected: String,
        /// The digest of the content.
        actual: String,
        /// Bytes seen.
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
    /// Local filesystem failure.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The remote store failed (after its retries, when `retryable`).
    #[error("{store}: {op} {key}: {detail}")]
    Backend {
        /// Which store (its [`BlobStore::describe`]).
        store: String,
        /// What was being done ("PUT", "GET", "HEAD", "LIST"...).
        op: &'static str,
        /// The object key.
        key: String,
        /// What went wrong.
        detail: String,
        /// Whether trying again later may succeed (throttling, a server
        /// that is down) as opposed to bad credentials or a missing bucket.
        retryable: bool,
    },
}

impl BlobError {
    /// Whether the caller may retry later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            BlobError::Backend {
                retryable: true,
                ..
            }
        )
    }
}

/// Builds an [`BlobError::Io`] mapper.
pub fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> BlobError + 'a {
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

/// The punctuation an object key may use besides letters and digits.
const KEY_PUNCT: &[u8] = b"._:-";

/// Checks a named object's key: non-empty `/`-separated segments of
/// `[A-Za-z0-9._:-]` (`:` for digests such as cache keys), none of them
/// `.` or `..`.
pub fn check_key(key: &str) -> Result<(), BlobError> {
    let ok = !key.is_empty()
        && key.len() <= 512
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || KEY_PUNCT.contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(BlobError::BadKey(key.to_string()))
    }
}

/// Checks a listing prefix: the start of a possible key, so whole
/// segments (those a `/` ends) are valid key segments and the last,
/// partial one uses key characters.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), BlobError> {
    let (whole, partial) = prefix.rsplit_once('/').unwrap_or(("", prefix));
    let whole_ok = !prefix.contains('/') || check_key(whole).is_ok();
    if prefix.len() <= 512
        && whole_ok
        && partial
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || KEY_PUNCT.contains(&b))
    {
        Ok(())
    } else {
        Err(BlobError::BadKey(prefix.to_string()))
    }
}

/// `Mismatch` unless `actual` is `expected`.
pub fn check_digest(expected: &str, actual: String, size: u64) -> Result<(), BlobError> {
    if actual == expected {
        Ok(())
    } else {
        Err(BlobError::Mismatch {
            expected: expected.to_string(),
            actual,
            size,
        })
    }
}

/// Runs file work and hashing off the async runtime; re-raises a panic.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BlobError> + Send + 'static,
) -> Result<T, BlobError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => Err(BlobError::Io {
                op: "running blocking task",
                path: PathBuf::new(),
                source: std::io::Error::other(e),
            }),
        },
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A blob's listing entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was stored.
    pub modified: SystemTime,
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Put {
    /// The blob's size.
    pub size: u64,
    /// It was already there: nothing was stored (S3 may have received a
    /// small blob's bytes and refused them).
    pub existed: bool,
}

/// A stream of a blob's bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, BlobError>>;

/// A content-addressed blob store with small named objects beside it.
#[async_trait]
pub trait BlobStore: Send + Sync + std::fmt::Debug + 'static {
    /// Where it is, for messages: a directory or `s3://bucket/prefix`.
    fn describe(&self) -> String;

    /// The blob's size, if present.
    async fn stat(&self, digest: &str) -> Result<Option<u64>, BlobError>;

    /// The blob's bytes from `offset` on. Read from 0, the stream ends
    /// with a [`BlobError::Mismatch`] item instead of its last chunk's
    /// successor if the content does not hash to `digest`.
    async fn get(&self, digest: &str, offset: u64) -> Result<ByteStream, BlobError>;

    /// Downloads the blob into `dest` (created or truncated), verifying
    /// it; on any failure `dest` is removed. Returns its size.
    async fn get_to_file(&self, digest: &str, dest: &Path) -> Result<u64, BlobError>;

    /// Stores file `src` as blob `digest` unless the store has it (checked
    /// first, so an existing blob is never stored again; S3 asks with the
    /// PUT itself for a small blob). The content is verified against
    /// `digest` before it becomes visible.
    async fn put_file(&self, digest: &str, src: &Path) -> Result<Put, BlobError>;

    /// Stores `bytes` (configs, manifests, small files); returns their
    /// digest.
    async fn put_bytes(&self, bytes: Bytes) -> Result<String, BlobError>;

    /// Removes a blob; absent is not an error.
    async fn delete(&self, digest: &str) -> Result<(), BlobError>;

    /// Every blob, for pruning.
    async fn list(&self) -> Result<Vec<BlobInfo>, BlobError>;

    /// Writes named object `key` (replacing it atomically).
    async fn put_object(&self, key: &str, bytes: Bytes) -> Result<(), BlobError>;

    /// Reads named object `key`.
    async fn get_object(&self, key: &str) -> Result<Option<Bytes>, BlobError>;

    /// Removes named object `key`; absent is not an error.
    async fn delete_object(&self, key: &str) -> Result<(), BlobError>;

    /// Keys of the named objects that start with `prefix`, sorted.
    async fn list_objects(&self, prefix: &str) -> Result<Vec<String>, BlobError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_keys_are_checked() {
        assert!(digest_hex(&sha256_of(b"x")).is_ok());
        for bad in ["sha256:../../etc/passwd", "md5:00", "sha256:ABCD"] {
            assert!(matches!(digest_hex(bad), Err(BlobError::BadDigest(_))));
        }
        check_key("cache/default/0123abcd").unwrap();
        check_key("cache/default/sha256:0123abcd").unwrap();
        for bad in ["", "/abs", "a//b", "a/../b", "a/./b", "a b", "a\\b"] {
            assert!(matches!(check_key(bad), Err(BlobError::BadKey(_))), "{bad}");
        }
    }
}
