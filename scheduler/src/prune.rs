//! `strata prune`: removes build cache nobody is using, safely while builds
//! run, as `docker builder prune` does.
//!
//! 1. Cache entries of the namespace, optionally only those unused for
//!    `until`; with `keep_storage`, the most recently used entries up to
//!    that many bytes stay.
//! 2. Their layer blobs go unless something else holds them: a remaining
//!    entry (any namespace), an image in the image store, a cache-mount
//!    archive, or a running build ([`Pins`]).
//! 3. Blobs no entry ever referenced (context files, abandoned uploads)
//!    go once they are older than a grace period, so an upload whose build
//!    has not started yet survives.
//!
//! Safety against a build that is just taking a cache hit: the build pins
//! the layer and checks its blob under [`Pins::guard`]'s read side; prune
//! checks pins and deletes under its write side. Either the build pinned
//! first (the blob stays) or the blob was already gone (the build sees a
//! miss and rebuilds the step).

use crate::Inner;
use crate::cache::{CacheError, DEFAULT_NAMESPACE};
use crate::image::layers_of;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use strata_proto::build::v1 as build;
use strata_store::{BlobError, BlobStore};
use thiserror::Error;
use tokio::sync::{RwLock, RwLockReadGuard};

/// How old a blob no cache entry or image references must be before
/// prune removes it.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(600);

/// Why prune stopped.
#[derive(Debug, Error)]
pub enum PruneError {
    /// The request was malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The cache index failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// A blob store failed.
    #[error("prune: {0}")]
    Blob(#[from] BlobError),
}

/// Blobs running builds use, by build.
#[derive(Debug, Default)]
pub struct Pins {
    lock: RwLock<()>,
    by_build: Mutex<HashMap<String, BTreeSet<String>>>,
}

impl Pins {
    /// Held (shared) while a build pins a blob and checks it is there.
    pub async fn guard(&self) -> RwLockReadGuard<'_, ()> {
        self.lock.read().await
    }

    /// Pins `digests` for `build_id`.
    pub fn pin<'a>(&self, build_id: &str, digests: impl IntoIterator<Item = &'a str>) {
        let mut map = self.by_build.lock().unwrap_or_else(|e| e.into_inner());
        let set = map.entry(build_id.to_string()).or_default();
        set.extend(digests.into_iter().map(String::from));
    }

    /// Drops every pin of `build_id` (its build ended).
    pub fn release(&self, build_id: &str) {
        self.by_build
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(build_id);
    }

    fn all(&self) -> BTreeSet<String> {
        self.by_build
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .flatten()
            .cloned()
            .collect()
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Every blob an image of the image store needs: manifest, config, layers.
async fn image_blobs(inner: &Inner) -> Result<BTreeSet<String>, PruneError> {
    let mut keep = BTreeSet::new();
    for rec in inner.images.records() {
        keep.insert(rec.manifest_digest.clone());
        keep.insert(rec.config_digest.clone());
        let (Ok(m), Ok(c)) = (
            inner.blobs.read(&rec.manifest_digest).await,
            inner.blobs.read(&rec.config_digest).await,
        ) else {
            continue;
        };
        let (Ok(m), Ok(c)) = (
            serde_json::from_slice::<serde_json::Value>(&m),
            serde_json::from_slice::<serde_json::Value>(&c),
        ) else {
            continue;
        };
        for l in layers_of(&m, &c).unwrap_or_default() {
            keep.insert(l.digest);
        }
    }
    Ok(keep)
}

/// Blobs the cache-mount pointers (`cachemount/...`) name.
async fn cache_mount_blobs(inner: &Inner) -> Result<BTreeSet<String>, PruneError> {
    let durable = inner.blobs.durable();
    let mut keep = BTreeSet::new();
    for key in durable.list_objects("cachemount/").await? {
        if let Some(bytes) = durable.get_object(&key).await? {
            keep.insert(String::from_utf8_lossy(&bytes).trim().to_string());
        }
    }
    Ok(keep)
}

/// Runs a prune request.
pub async fn prune(
    inner: &Inner,
    req: &build::PruneRequest,
) -> Result<build::PruneResponse, PruneError> {
    let ns = if req.namespace.is_empty() {
        DEFAULT_NAMESPACE
    } else {
        req.namespace.as_str()
    };
    crate::cache::check_namespace(ns)?;
    let now = secs(SystemTime::now());
    let until = match (&req.until, req.filters.get("until")) {
        (Some(d), _) => Some(d.seconds.max(0) as u64),
        (None, Some(text)) => Some(
            strata_frontend::instructions::parse_go_duration(text)
                .map_err(|e| PruneError::BadRequest(format!("--filter until={text}: {e}")))?
                .max(0) as u64
                / 1_000_000_000,
        ),
        (None, None) => None,
    };
    if let Some(other) = req.filters.keys().find(|k| *k != "until") {
        return Err(PruneError::BadRequest(format!(
            "unsupported prune filter {other:?}; strata supports until=DURATION"
        )));
    }

    // 1. Which entries go.
    let entries = inner.cache.list().await?;
    let mut candidates = Vec::new();
    let mut remaining: BTreeSet<String> = BTreeSet::new();
    for (entry_ns, key, entry) in &entries {
        if entry_ns != ns {
            remaining.insert(entry.layer.digest.clone());
            continue;
        }
        let used = match inner.cache.last_used(entry_ns, key).await {
            Some(t) => t,
            None => crate::images::parse_rfc3339(&entry.created)
                .map(|(s, _)| s.max(0) as u64)
                .unwrap_or(0),
        };
        let old_enough = until.is_none_or(|u| now.saturating_sub(used) >= u);
        if old_enough {
            candidates.push((used, key.clone(), entry.clone()));
        } else {
            remaining.insert(entry.layer.digest.clone());
        }
    }
    // --keep-storage: the most recently used stay, up to that many bytes.
    candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
    let mut kept_bytes = 0u64;
    let mut doomed = Vec::new();
    for (_, key, entry) in candidates {
        if req.keep_storage_bytes > 0 && kept_bytes + entry.layer.size <= req.keep_storage_bytes {
            kept_bytes += entry.layer.size;
            remaining.insert(entry.layer.digest.clone());
        } else {
            doomed.push((key, entry));
        }
    }

    let mut report = build::PruneResponse::default();
    if !req.dry_run {
        for (key, _) in &doomed {
            inner.cache.remove(ns, key).await?;
        }
    }
    report.deleted_cache_entries = doomed.len() as u64;

    // 2 and 3. Which blobs go.
    let mut keep = remaining;
    keep.extend(image_blobs(inner).await?);
    keep.extend(cache_mount_blobs(inner).await?);
    let freed_layers: BTreeSet<String> =
        doomed.iter().map(|(_, e)| e.layer.digest.clone()).collect();
    let grace = secs(SystemTime::now() - ORPHAN_GRACE);
    let mut stores: Vec<std::sync::Arc<dyn BlobStore>> = Vec::new();
    if let Some(shared) = inner.blobs.shared() {
        stores.push(std::sync::Arc::clone(shared));
    }
    stores.push(inner.blobs.local_store());
    let mut counted: BTreeMap<String, u64> = BTreeMap::new();
    for store in &stores {
        for blob in store.list().await? {
            if keep.contains(&blob.digest) {
                continue;
            }
            let orphan_old = secs(blob.modified) <= grace;
            if !freed_layers.contains(&blob.digest) && !orphan_old {
                continue;
            }
            // Decide and delete under the write side of the pins lock.
            let _guard = inner.pins.lock.write().await;
            if inner.pins.all().contains(&blob.digest) {
                continue;
            }
            if !req.dry_run {
                store.delete(&blob.digest).await?;
            }
            counted.entry(blob.digest).or_insert(blob.size);
        }
    }
    report.deleted_blobs = counted.len() as u64;
    report.reclaimed_bytes = counted.values().sum();
    tracing::info!(
        namespace = ns,
        entries = report.deleted_cache_entries,
        blobs = report.deleted_blobs,
        bytes = report.reclaimed_bytes,
        dry_run = req.dry_run,
        "pruned"
    );
    Ok(report)
}
