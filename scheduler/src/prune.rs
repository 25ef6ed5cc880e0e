//! `strata prune`: removes build cache nobody is using, safely while builds
//! run, with `docker builder prune`'s filters.
//!
//! What can go, each with a "last used" time and a size:
//! - the namespace's cache entries (last used: the last hit or insert);
//! - in a prune of the `default` namespace only, blobs no cache entry of
//!   any namespace references — context files, pulled base-image layers,
//!   abandoned uploads. They belong to no namespace, so one tenant's prune
//!   never removes what another's builds uploaded or pulled. Their last use
//!   is when they were stored or, for base-image layers, when a build last
//!   resolved that image; one used within [`ORPHAN_GRACE`] always stays (an
//!   upload whose build has not started yet).
//!
//! `--filter until=D` keeps what was used within D. `--keep-storage SIZE`
//! then keeps the most recently used of the rest while everything kept —
//! including what `until` kept — fits in SIZE, as BuildKit counts it. A
//! blob goes once nothing kept holds it: a remaining entry (any namespace),
//! an image in the image store, a cache-mount archive, or a running build
//! ([`Pins`]).
//!
//! Safety against a build that is just taking a cache hit or recording a
//! layer it made: the build pins the layer and checks its blob under
//! [`Pins::guard`]'s read side; prune checks pins and deletes under its
//! write side. Either the build pinned first (the blob stays) or the blob
//! was already gone (the build sees a miss and runs the step again). A pin
//! taken at any time during a prune counts until that prune ends, so a
//! build that records an entry after prune listed them and then finishes
//! still keeps its blob. Pins live in the scheduler's memory: this holds
//! for one scheduler per farm (the Helm chart refuses more replicas).

use crate::Inner;
use crate::cache::{CacheError, DEFAULT_NAMESPACE};
use crate::image::layers_of;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use strata_proto::build::v1 as build;
use strata_store::{BlobError, BlobStore};
use thiserror::Error;
use tokio::sync::{RwLock, RwLockReadGuard};

/// How recently a blob no cache entry or image references must have been
/// used for every prune to leave it.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(600);

/// Where the state notes when a build last resolved a base image
/// (`baseuse/<manifest digest>`) and which blobs it has.
const BASE_USE_PREFIX: &str = "baseuse/";

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
    /// An image of the image store could not be read, so which blobs it
    /// needs is unknown.
    #[error("prune aborted: {0}")]
    Image(String),
}

/// Blobs running builds use, by build.
#[derive(Debug, Default)]
pub struct Pins {
    lock: RwLock<()>,
    by_build: Mutex<HashMap<String, BTreeSet<String>>>,
    /// Per running prune: every digest pinned since it started.
    watches: Mutex<HashMap<u64, BTreeSet<String>>>,
    next_watch: AtomicU64,
}

/// Collects the digests pinned while a prune runs; stops when dropped.
struct Watch<'a> {
    pins: &'a Pins,
    id: u64,
}

impl Watch<'_> {
    fn saw(&self, digest: &str) -> bool {
        self.pins
            .watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&self.id)
            .is_some_and(|s| s.contains(digest))
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        self.pins
            .watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl Pins {
    /// Held (shared) while a build pins a blob and checks it is there.
    pub async fn guard(&self) -> RwLockReadGuard<'_, ()> {
        self.lock.read().await
    }

    /// Pins `digests` for `build_id`.
    pub fn pin<'a>(&self, build_id: &str, digests: impl IntoIterator<Item = &'a str>) {
        let digests: Vec<String> = digests.into_iter().map(String::from).collect();
        {
            let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
            for set in watches.values_mut() {
                set.extend(digests.iter().cloned());
            }
        }
        let mut map = self.by_build.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(build_id.to_string()).or_default().extend(digests);
    }

    /// Drops every pin of `build_id` (its build ended).
    pub fn release(&self, build_id: &str) {
        self.by_build
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(build_id);
    }

    /// Whether `digest` is pinned now.
    pub fn is_pinned(&self, digest: &str) -> bool {
        self.by_build
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|s| s.contains(digest))
    }

    /// Starts collecting pins: every digest pinned now or until the watch
    /// is dropped.
    fn watch(&self) -> Watch<'_> {
        let id = self.next_watch.fetch_add(1, Ordering::Relaxed);
        let now: BTreeSet<String> = self
            .by_build
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .flatten()
            .cloned()
            .collect();
        self.watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, now);
        Watch { pins: self, id }
    }
}

/// Notes that a build resolved base image `manifest_digest`, whose blobs
/// (manifest, config, layers) are `blobs`: `--filter until=` and
/// `--keep-storage` count that as a use of those blobs.
pub async fn note_base_use(inner: &Inner, manifest_digest: &str, blobs: &[String]) {
    let record = serde_json::json!({ "used": secs(SystemTime::now()), "blobs": blobs });
    let key = format!("{BASE_USE_PREFIX}{manifest_digest}");
    if let Err(e) = inner
        .state
        .put(&key, record.to_string().as_bytes(), None)
        .await
    {
        tracing::debug!("recording use of base image {manifest_digest}: {e}");
    }
}

/// When each blob of a base image was last used, from the notes above.
async fn base_uses(inner: &Inner) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    let records = match inner.state.scan(BASE_USE_PREFIX).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("prune: base image uses unknown ({e}); their blobs count as stored");
            return out;
        }
    };
    for (_, bytes) in records {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        let used = v["used"].as_u64().unwrap_or(0);
        for b in v["blobs"].as_array().into_iter().flatten() {
            if let Some(d) = b.as_str() {
                let t = out.entry(d.to_string()).or_default();
                *t = (*t).max(used);
            }
        }
    }
    out
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Every blob an image of the image store needs: manifest, config, layers.
/// An image that cannot be read stops the prune: its layers are unknown,
/// and removing them would break the image.
async fn image_blobs(inner: &Inner) -> Result<BTreeSet<String>, PruneError> {
    let mut keep = BTreeSet::new();
    for rec in inner.images.records() {
        keep.insert(rec.manifest_digest.clone());
        keep.insert(rec.config_digest.clone());
        let unreadable = |what: &str, digest: &str, e: &dyn std::fmt::Display| {
            PruneError::Image(format!(
                "could not read image {}: its {what} {digest}: {e}",
                rec.manifest_digest
            ))
        };
        let read = async |what: &str, digest: &str| {
            let bytes = inner
                .blobs
                .read(digest)
                .await
                .map_err(|e| unreadable(what, digest, &e))?;
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .map_err(|e| unreadable(what, digest, &e))
        };
        let m = read("manifest", &rec.manifest_digest).await?;
        let c = read("config", &rec.config_digest).await?;
        let layers =
            layers_of(&m, &c).map_err(|e| unreadable("manifest", &rec.manifest_digest, &e))?;
        for l in layers {
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

/// Something prune may remove.
struct Item {
    /// Last used, seconds since the epoch.
    used: u64,
    /// Its blob.
    digest: String,
    size: u64,
    /// The cache entry's key; `None` for a blob no entry references.
    entry: Option<String>,
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
    // From here on, whatever a build pins stays, even if it already let go.
    let watch = inner.pins.watch();
    let now = secs(SystemTime::now());

    // Every blob something other than this prune's candidates holds.
    let entries = inner.cache.list().await?;
    let mut held: BTreeSet<String> = BTreeSet::new();
    let mut referenced: BTreeSet<String> = BTreeSet::new();
    let mut items = Vec::new();
    for (entry_ns, key, entry) in &entries {
        referenced.insert(entry.layer.digest.clone());
        if entry_ns != ns {
            held.insert(entry.layer.digest.clone());
            continue;
        }
        let used = match inner.cache.last_used(entry_ns, key).await {
            Some(t) => t,
            None => crate::images::parse_rfc3339(&entry.created)
                .map(|(s, _)| s.max(0) as u64)
                .unwrap_or(0),
        };
        items.push(Item {
            used,
            digest: entry.layer.digest.clone(),
            size: entry.layer.size,
            entry: Some(key.clone()),
        });
    }
    held.extend(image_blobs(inner).await?);
    held.extend(cache_mount_blobs(inner).await?);

    let mut stores: Vec<std::sync::Arc<dyn BlobStore>> = Vec::new();
    if let Some(shared) = inner.blobs.shared() {
        stores.push(std::sync::Arc::clone(shared));
    }
    stores.push(inner.blobs.local_store());
    // Every stored blob: its size and when it was last stored anywhere.
    let mut stored: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for store in &stores {
        for blob in store.list().await? {
            let e = stored.entry(blob.digest).or_insert((blob.size, 0));
            e.1 = e.1.max(secs(blob.modified));
        }
    }
    let base_used = base_uses(inner).await;
    // Blobs of no namespace, in a prune of the default namespace only.
    if ns == DEFAULT_NAMESPACE {
        for (digest, (size, modified)) in &stored {
            if referenced.contains(digest) || held.contains(digest) {
                continue;
            }
            let used = (*modified).max(base_used.get(digest).copied().unwrap_or(0));
            items.push(Item {
                used,
                digest: digest.clone(),
                size: *size,
                entry: None,
            });
        }
    }

    // Which items go: too new for `until` (or the grace of unreferenced
    // blobs) stay; then, with --keep-storage, the most recently used stay
    // while everything kept fits.
    let grace = ORPHAN_GRACE.as_secs();
    let (mut candidates, young): (Vec<Item>, Vec<Item>) = items.into_iter().partition(|i| {
        let age = now.saturating_sub(i.used);
        until.is_none_or(|u| age >= u) && (i.entry.is_some() || age >= grace)
    });
    let mut kept: BTreeSet<String> = young.iter().map(|i| i.digest.clone()).collect();
    let mut kept_bytes: u64 = young
        .iter()
        .map(|i| (&i.digest, i.size))
        .collect::<BTreeMap<_, _>>()
        .values()
        .sum();
    candidates.sort_by_key(|c| std::cmp::Reverse(c.used));
    let mut doomed = Vec::new();
    for c in candidates {
        if req.keep_storage_bytes > 0 {
            if kept.contains(&c.digest) {
                continue;
            }
            if kept_bytes + c.size <= req.keep_storage_bytes {
                kept_bytes += c.size;
                kept.insert(c.digest.clone());
                continue;
            }
        }
        doomed.push(c);
    }

    let mut report = build::PruneResponse::default();
    for c in &doomed {
        if let Some(key) = &c.entry {
            if !req.dry_run {
                inner.cache.remove(ns, key).await?;
            }
            report.deleted_cache_entries += 1;
        }
    }

    // Their blobs, unless something kept holds them.
    let mut gone: BTreeMap<String, u64> = BTreeMap::new();
    for c in &doomed {
        if kept.contains(&c.digest) || held.contains(&c.digest) || gone.contains_key(&c.digest) {
            continue;
        }
        let Some((size, _)) = stored.get(&c.digest) else {
            continue;
        };
        // Decide and delete under the write side of the pins lock, from
        // every store at once: a build never sees it in one and not the
        // other.
        let _guard = inner.pins.lock.write().await;
        if inner.pins.is_pinned(&c.digest) || watch.saw(&c.digest) {
            continue;
        }
        if !req.dry_run {
            for store in &stores {
                store.delete(&c.digest).await?;
            }
        }
        gone.insert(c.digest.clone(), *size);
    }
    if !req.dry_run && !gone.is_empty() {
        forget_base_uses(inner, &stored, &gone).await;
    }
    report.deleted_blobs = gone.len() as u64;
    report.reclaimed_bytes = gone.values().sum();
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

/// Drops the use notes of base images none of whose blobs remain.
async fn forget_base_uses(
    inner: &Inner,
    stored: &BTreeMap<String, (u64, u64)>,
    gone: &BTreeMap<String, u64>,
) {
    let Ok(records) = inner.state.scan(BASE_USE_PREFIX).await else {
        return;
    };
    for (key, bytes) in records {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        let remains = v["blobs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b.as_str())
            .any(|d| stored.contains_key(d) && !gone.contains_key(d));
        if !remains && let Err(e) = inner.state.delete(&key).await {
            tracing::debug!("forgetting {key}: {e}");
        }
    }
}

#[cfg(test)]
mod tests;
