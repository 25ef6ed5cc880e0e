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
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use strata_oci::layer::{LayerError, UnpackOptions, unpack_to_overlay_layer_dir};
use thiserror::Error;

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
            .map_err(io_err("syncing blob", &path))
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

    /// Unpacks `layer` (its blob must be present) into its layer directory
    /// once; `parents` are the layers below it, bottom first. Verifies the
    /// diffID before the directory appears.
    pub fn ensure_unpacked(
        &self,
        layer: &LayerRef,
        parents: &[LayerRef],
    ) -> Result<PathBuf, StoreError> {
        let dir = self.layer_dir(&layer.diff_id)?;
        if dir.is_dir() {
            crate::evict::touch(&dir);
            return Ok(dir);
        }
        // Jobs starting together on one parent unpack it once: the others
        // wait here and find the directory.
        let _one = self.unpacking.lock_blocking(&layer.diff_id);
        if dir.is_dir() {
            crate::evict::touch(&dir);
            return Ok(dir);
        }
        let blob = self.blob_path(&layer.digest)?;
        let file = File::open(&blob).map_err(|_| StoreError::MissingBlob(layer.digest.clone()))?;
        let mut parent_dirs = Vec::with_capacity(parents.len());
        for p in parents.iter().rev() {
            parent_dirs.push(self.layer_dir(&p.diff_id)?);
        }
        let tmp = self.temp_path("layer");
        std::fs::create_dir_all(&tmp).map_err(io_err("creating", &tmp))?;
        let report = unpack_to_overlay_layer_dir(
            BufReader::with_capacity(1 << 20, file),
            &tmp,
            &parent_dirs,
            &UnpackOptions {
                max_bytes: self.max_layer_bytes.load(Ordering::Relaxed),
                ..UnpackOptions::default()
            },
        )
        .map_err(|source| match source {
            LayerError::LimitExceeded { what, limit, .. } if what == "bytes" => {
                StoreError::TooLarge {
                    digest: layer.digest.clone(),
                    what,
                    limit,
                }
            }
            source => StoreError::Unpack {
                digest: layer.digest.clone(),
                source,
            },
        });
        let report = match report {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                if matches!(e, StoreError::Unpack { .. }) {
                    self.drop_if_corrupt(&layer.digest);
                }
                return Err(e);
            }
        };
        if report.diff_id != layer.diff_id {
            let _ = std::fs::remove_dir_all(&tmp);
            self.drop_if_corrupt(&layer.digest);
            return Err(StoreError::DiffIdMismatch {
                digest: layer.digest.clone(),
                expected: layer.diff_id.clone(),
                actual: report.diff_id,
            });
        }
        self.unpacked.fetch_add(1, Ordering::Relaxed);
        self.install_unpacked(&tmp, &dir, report.tar_bytes)
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

    /// How many layers were unpacked from their blobs since the store
    /// opened (not counting those unpacked as they were written).
    pub fn layers_unpacked(&self) -> u64 {
        self.unpacked.load(Ordering::Relaxed)
    }

    /// Holds blob `digest` for fetching it: a job that finds another
    /// fetching the same blob waits for it, then finds the blob stored.
    pub async fn lock_fetch(&self, digest: &str) -> KeyGuard<'_> {
        self.fetching.lock(digest).await
    }

    /// Moves a finished unpack from `tmp` to `dir`, its place in the store.
    fn install_unpacked(
        &self,
        tmp: &Path,
        dir: &Path,
        tar_bytes: u64,
    ) -> Result<PathBuf, StoreError> {
        crate::evict::record_size(&self.root, dir, tar_bytes);
        match std::fs::rename(tmp, dir) {
            Ok(()) => Ok(dir.to_path_buf()),
            // Another job unpacked the same layer meanwhile: use theirs.
            Err(_) if dir.is_dir() => {
                let _ = std::fs::remove_dir_all(tmp);
                Ok(dir.to_path_buf())
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(tmp);
                Err(io_err("storing layer", dir)(e))
            }
        }
    }

    /// Unpacks a layer's tar while it is being written (`tar` reads what
    /// the writer tees), hardlinking the files of `upper`, the snapshot it
    /// is made from and which is discarded next, instead of writing their
    /// data again: the layer the next step on this worker stacks on is
    /// ready when the commit ends, with no blob to decompress. The tree is
    /// the one unpacking the blob makes (`UnpackOptions::link_from`).
    /// `parents` are the unpacked layers below, bottom first. The result
    /// waits in a temporary directory for [`Store::keep_unpacked`] or
    /// [`Store::discard_unpacked`], once the writer has the diffID.
    pub fn unpack_teed(
        &self,
        tar: impl std::io::Read,
        parents: &[PathBuf],
        upper: &Path,
    ) -> Result<TeedUnpack, StoreError> {
        let tmp = self.temp_path("layer");
        std::fs::create_dir_all(&tmp).map_err(io_err("creating", &tmp))?;
        let topmost_first: Vec<&PathBuf> = parents.iter().rev().collect();
        let report = unpack_to_overlay_layer_dir(
            tar,
            &tmp,
            &topmost_first,
            &UnpackOptions {
                max_bytes: self.max_layer_bytes.load(Ordering::Relaxed),
                link_from: Some(upper.to_path_buf()),
                // The writer hashes the same bytes for the diffID.
                hash: false,
                ..UnpackOptions::default()
            },
        );
        match report {
            Ok(r) => Ok(TeedUnpack {
                tmp,
                tar_bytes: r.tar_bytes,
                linked: r.linked,
            }),
            Err(source) => {
                let _ = std::fs::remove_dir_all(&tmp);
                Err(StoreError::Unpack {
                    digest: "(the layer being committed)".into(),
                    source,
                })
            }
        }
    }

    /// Keeps a teed unpack as the unpacked form of `diff_id`.
    pub fn keep_unpacked(&self, teed: TeedUnpack, diff_id: &str) -> Result<PathBuf, StoreError> {
        let dir = self.layer_dir(diff_id)?;
        self.install_unpacked(&teed.tmp, &dir, teed.tar_bytes)
    }

    /// Drops a teed unpack (the layer was not committed).
    pub fn discard_unpacked(&self, teed: TeedUnpack) {
        let _ = std::fs::remove_dir_all(&teed.tmp);
    }

    /// The diffIDs of every unpacked layer (reported to the scheduler).
    pub fn layers_held(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.root.join("layers")) else {
            return Vec::new();
        };
        let mut out: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
            .collect();
        out.sort();
        out
    }
}

/// A layer unpacked by [`Store::unpack_teed`], not yet in its place.
#[derive(Debug)]
pub struct TeedUnpack {
    tmp: PathBuf,
    tar_bytes: u64,
    /// Files hardlinked from the snapshot rather than written.
    pub linked: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zstd layer of `files` files of 4 MiB each, its blob in `store`;
    /// the blob's bytes too.
    fn stored_layer(store: &Store, files: usize) -> (LayerRef, Vec<u8>) {
        use sha2::{Digest, Sha256};
        let mut tar = tar::Builder::new(Vec::new());
        let data = vec![7u8; 4 << 20];
        for i in 0..files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, format!("f{i}"), &data[..])
                .expect("tar");
        }
        let tar = tar.into_inner().expect("tar");
        let blob = zstd::encode_all(&tar[..], 1).expect("zstd");
        let layer = LayerRef {
            diff_id: format!("sha256:{:x}", Sha256::digest(&tar)),
            digest: format!("sha256:{:x}", Sha256::digest(&blob)),
            media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
            size: blob.len() as u64,
        };
        let staged = store.temp_path("blob");
        std::fs::write(&staged, &blob).expect("write");
        store.commit_blob(&staged, &layer.digest).expect("commit");
        (layer, blob)
    }

    #[test]
    fn jobs_starting_together_on_one_layer_unpack_it_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path()).expect("open");
        let (layer, _) = stored_layer(&store, 8);
        let start = std::sync::Barrier::new(4);
        let dirs: Vec<PathBuf> = std::thread::scope(|s| {
            let jobs: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        store.ensure_unpacked(&layer, &[]).expect("unpack")
                    })
                })
                .collect();
            jobs.into_iter().map(|j| j.join().unwrap()).collect()
        });
        assert_eq!(store.layers_unpacked(), 1, "one job unpacks, three wait");
        assert!(dirs.iter().all(|d| *d == dirs[0]));
        assert_eq!(
            std::fs::read(dirs[0].join("f7")).expect("read").len(),
            4 << 20
        );
    }

    #[test]
    fn unpacked_layers_from_before_the_machine_went_down_are_dropped_and_blobs_kept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path()).expect("open");
        let (layer, _) = stored_layer(&store, 1);
        let dir = store.ensure_unpacked(&layer, &[]).expect("unpack");
        drop(store);
        // The worker restarts, the machine did not go down: all is kept.
        let store = Store::open(tmp.path()).expect("reopen");
        assert!(dir.join("f0").is_file(), "dropped within one boot");
        drop(store);
        // The store was last opened in another boot.
        crate::boot::pretend_opened_in(tmp.path(), "an-earlier-boot");
        let store = Store::open(tmp.path()).expect("reopen after a reboot");
        assert!(!dir.exists(), "an unpacked layer survived a reboot");
        assert!(store.has_blob(&layer.digest), "the blob must stay");
        assert!(store.layers_held().is_empty());
        // It is unpacked again from its blob, and then kept.
        let again = store.ensure_unpacked(&layer, &[]).expect("unpack again");
        assert_eq!(store.layers_unpacked(), 1);
        drop(store);
        Store::open(tmp.path()).expect("reopen");
        assert!(again.join("f0").is_file());
    }

    #[test]
    fn a_blob_that_does_not_hash_to_its_digest_goes_when_it_fails_to_unpack() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path()).expect("open");
        let (layer, blob) = stored_layer(&store, 2);
        // A sound blob named with a wrong diffID fails, and stays: the
        // fault is the name's, and fetching it again would not help.
        let misnamed = LayerRef {
            diff_id: format!("sha256:{}", "0".repeat(64)),
            ..layer.clone()
        };
        let err = store
            .ensure_unpacked(&misnamed, &[])
            .expect_err("wrong diffID");
        assert!(matches!(err, StoreError::DiffIdMismatch { .. }), "{err}");
        assert!(store.has_blob(&layer.digest));
        // The same blob cut short, as a crash can leave it: it fails and
        // goes, so that the next job fetches it again.
        let path = store.blob_path(&layer.digest).expect("path");
        std::fs::write(&path, &blob[..blob.len() / 2]).expect("truncate");
        let err = store.ensure_unpacked(&layer, &[]).expect_err("torn blob");
        assert!(matches!(err, StoreError::Unpack { .. }), "{err}");
        assert!(!path.exists(), "the torn blob is still there");
        assert!(matches!(
            store.ensure_unpacked(&layer, &[]),
            Err(StoreError::MissingBlob(_))
        ));
    }

    #[test]
    fn verify_blob_keeps_a_sound_blob_and_removes_a_damaged_one() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path()).expect("open");
        let (layer, blob) = stored_layer(&store, 1);
        store.verify_blob(&layer.digest).expect("a sound blob");
        assert!(store.has_blob(&layer.digest));
        let path = store.blob_path(&layer.digest).expect("path");
        std::fs::write(&path, &blob[1..]).expect("damage");
        let err = store.verify_blob(&layer.digest).expect_err("damaged");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(&layer.digest), "{err}");
        assert!(!store.has_blob(&layer.digest), "a damaged blob stayed");
    }

    #[test]
    fn digests_are_validated_and_paths_stable() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path()).expect("open");
        let d = format!("sha256:{}", "ab".repeat(32));
        assert!(
            store
                .blob_path(&d)
                .expect("path")
                .ends_with("ab".repeat(32))
        );
        for bad in [
            "sha256:xyz",
            "md5:00",
            "sha256:../../etc",
            &format!("sha256:{}", "AB".repeat(32)),
        ] {
            assert!(
                matches!(store.blob_path(bad), Err(StoreError::BadDigest(_))),
                "{bad}"
            );
        }
        assert!(!store.has_blob(&d));
        assert!(store.layers_held().is_empty());
    }

    #[test]
    fn a_blob_a_job_asks_for_is_kept_over_one_fetched_after_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path()).expect("open");
        let blob = |n: u8, age_secs: u64| {
            let digest = format!("sha256:{}", hex::encode([n; 32]));
            let path = store.blob_path(&digest).expect("path");
            std::fs::write(&path, [n; 100]).expect("blob");
            let f = File::open(&path).expect("open blob");
            f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(age_secs))
                .expect("age");
            digest
        };
        let used_again = blob(1, 300);
        let fetched_later = blob(2, 200);
        assert!(store.has_blob(&used_again));
        let evicted = store.evict(100);
        assert_eq!(evicted.blobs, vec![fetched_later]);
        assert!(store.has_blob(&used_again));
    }
}
