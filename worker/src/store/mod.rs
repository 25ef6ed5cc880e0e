//! The worker's local content store: layer blobs by digest and each layer
//! unpacked once, keyed by its diffID, ready to be an overlayfs lowerdir.
//!
//! ```text
//! <root>/blobs/sha256/<hex>      compressed layer blobs
//! <root>/layers/<diffid hex>/    unpacked, overlay-native whiteouts
//! <root>/tmp/                    ingest; emptied on open
//! ```
//! Every entry appears by an atomic rename, so a crash never leaves a
//! partial blob or layer under its final name.

use crate::keyed::{KeyGuard, KeyedLocks};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use strata_oci::layer::{LayerError, UnpackOptions};
use thiserror::Error;

mod unpack;
pub use unpack::TeedUnpack;

/// A store failure naming the digest or path involved.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not a `sha256:<64 hex>` digest.
    #[error("invalid digest \"{0}\": expected sha256 followed by 64 hex digits")]
    BadDigest(String),
    /// The blob of a layer is not in the store.
    #[error("layer blob {0} is not in the local store")]
    MissingBlob(String),
    /// The layer unpacks to more than this worker allows.
    #[error(
        "unpacking layer {digest}: it holds more than this worker's limit of {limit} {what} (a decompression bomb?); raise the worker's --max-layer-bytes if the image is legitimate"
    )]
    TooLarge {
        /// The blob.
        digest: String,
        /// What was counted (`bytes` or `entries`).
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// Unpacking failed.
    #[error("unpacking layer {digest}: {source}")]
    Unpack {
        /// The blob.
        digest: String,
        /// Why.
        #[source]
        source: LayerError,
    },
    /// A stored blob does not hash to its digest; it was removed.
    #[error(
        "the stored blob {digest} hashes to {actual}: it is damaged, and was removed to be fetched again"
    )]
    Corrupt {
        /// The blob.
        digest: String,
        /// What its bytes hashed to.
        actual: String,
    },
    /// The blob's content does not hash to the layer's diffID.
    #[error(
        "layer {digest} unpacks to diffID {actual}, expected {expected}; the blob is corrupt and was not used"
    )]
    DiffIdMismatch {
        /// The blob.
        digest: String,
        /// Expected diffID.
        expected: String,
        /// What the content hashed to.
        actual: String,
    },
}

impl StoreError {
    /// Whether the error is a blob that failed to unpack or did not hash
    /// to what it should (the store removes such a blob as it finds it).
    pub fn blob_damaged(&self) -> bool {
        matches!(
            self,
            StoreError::Unpack { .. }
                | StoreError::Corrupt { .. }
                | StoreError::DiffIdMismatch { .. }
        )
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Identifies one layer of an image or build.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LayerRef {
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
    /// `sha256:` of the blob.
    pub digest: String,
    /// OCI media type of the blob.
    pub media_type: String,
    /// Blob size in bytes.
    pub size: u64,
}

/// The local content store.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    counter: AtomicU64,
    /// Most bytes one layer may unpack to (uncompressed tar and file
    /// contents).
    max_layer_bytes: AtomicU64,
    /// Most bytes one ADD archive may extract to.
    max_add_bytes: AtomicU64,
    /// Blobs being fetched: one download each however many jobs want it.
    fetching: KeyedLocks,
    /// Layers being unpacked from their blobs, by diffID.
    unpacking: KeyedLocks,
    /// Layers unpacked from their blobs since the store opened.
    unpacked: AtomicU64,
    /// Layers and blobs (diffIDs, digests) just made here and held until
    /// the farm's store has them: eviction keeps them ([`Store::hold`]).
    held: Arc<Mutex<HashMap<String, usize>>>,
    /// Taken by [`Store::evict`] for the whole of an eviction.
    pub(crate) evicting: Mutex<()>,
    /// Whether this store is also the build's blob store (embedded mode),
    /// so a new blob is synced before its step reports ([`Store::settle`]).
    durable: std::sync::atomic::AtomicBool,
}

/// A hold on layers and blobs a job has just made: until it is dropped,
/// [`Store::evict`] leaves them alone (this worker may have the only copy
/// while they upload).
#[derive(Debug)]
pub struct Held {
    held: Arc<Mutex<HashMap<String, usize>>>,
    ids: Vec<String>,
}

impl Held {
    /// One hold on what `self` and `other` (of the same store) hold.
    pub fn and(mut self, mut other: Held) -> Held {
        self.ids.append(&mut other.ids);
        self
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for id in &self.ids {
            if let Some(n) = held.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    held.remove(id);
                }
            }
        }
    }
}

/// Default bound on what one layer unpacks to: [`UnpackOptions`]'.
pub fn default_max_layer_bytes() -> u64 {
    UnpackOptions::default().max_bytes
}

/// Default bound on what one ADD archive extracts to.
pub fn default_max_add_bytes() -> u64 {
    crate::copy::ArchiveLimits::default().max_bytes
}

fn hex_of(digest: &str) -> Result<&str, StoreError> {
    match digest.strip_prefix("sha256:") {
        Some(h)
            if h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) =>
        {
            Ok(h)
        }
        _ => Err(StoreError::BadDigest(digest.to_string())),
    }
}

impl Store {
    /// Opens (creating) the store at `root` and empties its ingest area.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io_err("cleaning", &tmp))?;
        }
        std::fs::create_dir_all(&root).map_err(io_err("creating", &root))?;
        if crate::boot::opened_in_another_boot(&root) {
            // Unpacked layers are used as found, never checked again: after
            // the machine went down one may hold a torn file. Blobs stay:
            // each is checked against its digest or diffID where it is used.
            tracing::warn!(
                store = %root.display(),
                "the machine went down since this store was last used: its unpacked layers are dropped, to be unpacked again from their blobs"
            );
            for d in [root.join("layers"), crate::evict::sizes_dir(&root)] {
                if let Err(e) = std::fs::remove_dir_all(&d)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    return Err(io_err("dropping", &d)(e));
                }
            }
        }
        for d in [root.join("blobs/sha256"), root.join("layers"), tmp.clone()] {
            std::fs::create_dir_all(&d).map_err(io_err("creating", &d))?;
        }
        crate::boot::record_boot(&root);
        // Layers are unpacked in tmp/.
        crate::snapshot::spread_new_dirs(&tmp);
        crate::evict::move_old_size_files(&root);
        Ok(Self {
            root,
            counter: AtomicU64::new(0),
            max_layer_bytes: AtomicU64::new(default_max_layer_bytes()),
            max_add_bytes: AtomicU64::new(default_max_add_bytes()),
            fetching: KeyedLocks::default(),
            unpacking: KeyedLocks::default(),
            unpacked: AtomicU64::new(0),
            held: Arc::default(),
            evicting: Mutex::new(()),
            durable: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Marks this store as the build's only blob store (embedded mode,
    /// where the scheduler keeps its blobs in the same directory): no
    /// other copy of a blob made here exists, so [`Store::settle`] syncs
    /// each one before its step reports and the build records it.
    pub fn set_durable(&self, durable: bool) {
        self.durable.store(durable, Ordering::Relaxed);
    }

    /// Whether this store is the build's only blob store
    /// ([`Store::set_durable`]).
    pub fn is_durable(&self) -> bool {
        self.durable.load(Ordering::Relaxed)
    }

    /// Makes blob `digest` durable where this store is the only copy
    /// ([`Store::set_durable`]); nothing otherwise (a worker's store is a
    /// cache of the farm's, which has its own copy once it is uploaded).
    /// Blocking.
    pub fn settle(&self, digest: &str) -> Result<(), StoreError> {
        if !self.is_durable() {
            return Ok(());
        }
        let path = self.blob_path(digest)?;
        File::open(&path)
            .and_then(|f| f.sync_data())
            .map_err(io_err("syncing blob", &path))?;
        // And its name: the blob was renamed into place.
        let dir = path.parent().unwrap_or(&path);
        File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(io_err("syncing the blob directory", dir))
    }

    /// Holds the layers and blobs `ids` (diffIDs, digests) against
    /// eviction until the returned [`Held`] is dropped; holds nest. A
    /// job holds what it reads from the moment it is assigned, and what
    /// it makes until the farm's store has it.
    pub fn hold(&self, ids: &[&str]) -> Held {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            *held.entry((*id).to_string()).or_default() += 1;
        }
        Held {
            held: Arc::clone(&self.held),
            ids: ids.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Runs `remove` unless the layer or blob `id` is held
    /// ([`Store::hold`]); `None` when it is. A hold taken meanwhile waits
    /// for `remove` to finish, so a job holding what it reads finds it
    /// either whole or gone, never half removed.
    pub(crate) fn remove_unless_held<T>(&self, id: &str, remove: impl FnOnce() -> T) -> Option<T> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.contains_key(id) {
            return None;
        }
        Some(remove())
    }

    /// Bounds decompression bombs: what one layer may unpack to and one
    /// ADD archive may extract to, in bytes.
    pub fn set_limits(&self, max_layer_bytes: u64, max_add_bytes: u64) {
        self.max_layer_bytes
            .store(max_layer_bytes, Ordering::Relaxed);
        self.max_add_bytes.store(max_add_bytes, Ordering::Relaxed);
    }

    /// Most bytes one ADD archive may extract to.
    pub fn max_add_bytes(&self) -> u64 {
        self.max_add_bytes.load(Ordering::Relaxed)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A fresh path in the ingest area (not created).
    pub fn temp_path(&self, what: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{what}-{}-{n}", std::process::id()))
    }

    /// Whether `dir` is on the store's filesystem, so its files can be
    /// hardlinked into the store ([`Store::unpack_teed`]).
    pub fn links_from(&self, dir: &Path) -> bool {
        use std::os::unix::fs::MetadataExt as _;
        match (
            std::fs::metadata(dir),
            std::fs::metadata(self.root.join("tmp")),
        ) {
            (Ok(a), Ok(b)) => a.dev() == b.dev(),
            _ => false,
        }
    }

    /// Where a blob lives (whether or not it is there).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        Ok(self.root.join("blobs/sha256").join(hex_of(digest)?))
    }

    /// Whether the blob is present. A job asks before it reads one (its
    /// layers, its context files), so a present blob is marked as used
    /// now: eviction removes the least recently used first.
    pub fn has_blob(&self, digest: &str) -> bool {
        let Ok(path) = self.blob_path(digest) else {
            return false;
        };
        if !path.is_file() {
            return false;
        }
        crate::evict::touch(&path);
        true
    }

    /// Moves a fully written and verified temp file in as blob `digest`.
    pub fn commit_blob(&self, tmp: &Path, digest: &str) -> Result<PathBuf, StoreError> {
        let dest = self.blob_path(digest)?;
        std::fs::rename(tmp, &dest).map_err(io_err("storing blob", &dest))?;
        Ok(dest)
    }

    /// Where a layer's unpacked directory lives.
    pub fn layer_dir(&self, diff_id: &str) -> Result<PathBuf, StoreError> {
        Ok(self.root.join("layers").join(hex_of(diff_id)?))
    }

    /// Checks that blob `digest` (present) hashes to its digest. One that
    /// does not (cut short by the machine going down, or damaged on disk)
    /// is removed, so that the next job needing it fetches it again
    /// instead of failing on it forever, and the error says so.
    pub fn verify_blob(&self, digest: &str) -> Result<(), StoreError> {
        use std::os::unix::fs::MetadataExt as _;
        let path = self.blob_path(digest)?;
        let mut file = File::open(&path).map_err(io_err("reading blob", &path))?;
        let inode = file.metadata().map(|m| m.ino()).ok();
        let (actual, _) = strata_store::copy_hashing(&mut file, &path, &mut std::io::sink(), &path)
            .map_err(|e| StoreError::Io {
                op: "reading blob",
                path: path.clone(),
                source: std::io::Error::other(e),
            })?;
        if actual == digest {
            return Ok(());
        }
        tracing::warn!(
            %digest,
            %actual,
            "a stored blob does not hash to its digest: removed, to be fetched again"
        );
        // Unless a job has fetched it again meanwhile.
        if std::fs::symlink_metadata(&path).map(|m| m.ino()).ok() == inode {
            let _ = std::fs::remove_file(&path);
        }
        Err(StoreError::Corrupt {
            digest: digest.to_string(),
            actual,
        })
    }

    /// [`Store::verify_blob`] where the failure that called for it is the
    /// one to report.
    fn drop_if_corrupt(&self, digest: &str) {
        let _ = self.verify_blob(digest);
    }

    /// Holds blob `digest` for fetching it: a job that finds another
    /// fetching the same blob waits for it, then finds the blob stored.
    pub async fn lock_fetch(&self, digest: &str) -> KeyGuard<'_> {
        self.fetching.lock(digest).await
    }
}

#[cfg(test)]
mod tests;
