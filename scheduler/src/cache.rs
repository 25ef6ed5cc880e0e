//! The layer cache index: a step's cache key (which covers its parent's
//! key and every input, see the planner) to the layer it produced, per
//! cache namespace (a tenant or project). A hit whose blob is still in the
//! store is Docker's "unchanged layer".
//!
//! Each entry lives twice: as a named object `cache/<ns>/<key>` in the
//! durable blob store (S3 in a farm, the local directory otherwise), which
//! is the source of truth, and as `cache/<ns>/<key>` in the state store
//! (Redis in a farm), the fast copy. A lookup that misses the state falls
//! back to the durable store and repopulates the state, so an emptied
//! Redis costs one object read per step, never a rebuild.
//!
//! The same module holds in-flight claims (`inflight/<ns>/<key>`): the
//! build that claims a step runs it; another build needing the same step
//! at the same moment waits for its entry instead of running it again.

use crate::image::LayerInfo;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use strata_state::StateStore;
use strata_store::BlobStore;
use thiserror::Error;

/// The namespace of builds that name none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A cached layer and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The layer.
    #[serde(flatten)]
    pub layer: LayerInfo,
    /// The build that produced it.
    #[serde(default)]
    pub build_id: String,
    /// The worker that produced it.
    #[serde(default)]
    pub worker_id: String,
    /// When it was built (RFC 3339): the time its history entry keeps.
    #[serde(default)]
    pub created: String,
}

/// Why the index could not answer.
#[derive(Debug, Error)]
pub enum CacheError {
    /// A namespace name the stores would not accept.
    #[error(
        "invalid cache namespace {0:?}: use letters, digits, '.', '_' and '-' (at most 64 characters)"
    )]
    BadNamespace(String),
    /// The durable store failed.
    #[error("cache index: {0}")]
    Durable(#[from] strata_store::BlobError),
    /// The state store failed.
    #[error("cache index: {0}")]
    State(#[from] strata_state::StateError),
    /// A record that does not parse.
    #[error("cache index record {key}: {detail}")]
    Corrupt {
        /// Its key.
        key: String,
        /// Why.
        detail: String,
    },
}

/// Checks a namespace name (it becomes a key segment in S3 and Redis).
pub fn check_namespace(ns: &str) -> Result<(), CacheError> {
    let ok = !ns.is_empty()
        && ns.len() <= 64
        && ns != "."
        && ns != ".."
        && ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(CacheError::BadNamespace(ns.to_string()))
    }
}

/// An entry found by a lookup, and the namespace it was found in.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The entry.
    pub entry: CacheEntry,
    /// Its namespace (the build's own or one shared with it).
    pub namespace: String,
}

/// The index.
#[derive(Debug)]
pub struct CacheIndex {
    state: Arc<dyn StateStore>,
    durable: Arc<dyn BlobStore>,
    /// Namespace → the other namespaces whose entries it may reuse.
    shares: BTreeMap<String, Vec<String>>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn key_of(ns: &str, key: &str) -> String {
    format!("cache/{ns}/{key}")
}

impl CacheIndex {
    /// An index over `state` (hot) and `durable` (truth); `shares` lists,
    /// per namespace, the namespaces it may also read.
    pub fn new(
        state: Arc<dyn StateStore>,
        durable: Arc<dyn BlobStore>,
        shares: BTreeMap<String, Vec<String>>,
    ) -> Self {
        Self {
            state,
            durable,
            shares,
        }
    }

    /// The namespaces a build of `ns` reads, its own first.
    pub fn readable(&self, ns: &str) -> Vec<String> {
        let mut out = vec![ns.to_string()];
        for other in self.shares.get(ns).into_iter().flatten() {
            if !out.contains(other) {
                out.push(other.clone());
            }
        }
        out
    }

    /// The entry for `key` visible to namespace `ns`.
    pub async fn get(&self, ns: &str, key: &str) -> Result<Option<Hit>, CacheError> {
        for namespace in self.readable(ns) {
            if let Some(entry) = self.get_in(&namespace, key).await? {
                self.touch(&namespace, key).await;
                return Ok(Some(Hit { entry, namespace }));
            }
        }
        Ok(None)
    }

    /// A record that does not parse (a file a power loss left empty in
    /// an embedded store) is a miss: the step runs again and its new
    /// record replaces the damaged one.
    async fn get_in(&self, ns: &str, key: &str) -> Result<Option<CacheEntry>, CacheError> {
        let k = key_of(ns, key);
        let parse = |bytes: &[u8], from: &str| match serde_json::from_slice::<CacheEntry>(bytes) {
            Ok(entry) => Some(entry),
            Err(e) => {
                tracing::warn!(
                    "cache record {k} in the {from} store is damaged ({e}); taken as a miss, the step runs again and records anew"
                );
                None
            }
        };
        match self.state.get(&k).await {
            Ok(Some(bytes)) => {
                if let Some(entry) = parse(&bytes, "state") {
                    return Ok(Some(entry));
                }
            }
            Ok(None) => {}
            // The durable store answers for a state store that is down.
            Err(e) => tracing::warn!("{e}; asking the durable store"),
        }
        let Some(bytes) = self.durable.get_object(&k).await? else {
            return Ok(None);
        };
        let Some(entry) = parse(&bytes, "durable") else {
            return Ok(None);
        };
        if let Err(e) = self.state.put(&k, &bytes, None).await {
            tracing::warn!("repopulating {k}: {e}");
        }
        Ok(Some(entry))
    }

    /// Records a layer under `key` in namespace `ns`: the durable record
    /// first, then the state's copy.
    pub async fn insert(&self, ns: &str, key: &str, entry: &CacheEntry) -> Result<(), CacheError> {
        check_namespace(ns)?;
        let k = key_of(ns, key);
        let bytes = serde_json::to_vec(entry).map_err(|e| CacheError::Corrupt {
            key: k.clone(),
            detail: e.to_string(),
        })?;
        self.durable
            .put_object(&k, Bytes::from(bytes.clone()))
            .await?;
        self.state.put(&k, &bytes, None).await?;
        self.touch(ns, key).await;
        Ok(())
    }

    /// Notes that an entry was used now (for `prune --filter until=`).
    async fn touch(&self, ns: &str, key: &str) {
        let k = format!("used/{ns}/{key}");
        if let Err(e) = self
            .state
            .put(&k, now_secs().to_string().as_bytes(), None)
            .await
        {
            tracing::debug!("recording use of {k}: {e}");
        }
    }

    /// When an entry was last used (seconds since the epoch), if known.
    pub async fn last_used(&self, ns: &str, key: &str) -> Option<u64> {
        let bytes = self.state.get(&format!("used/{ns}/{key}")).await.ok()??;
        std::str::from_utf8(&bytes).ok()?.parse().ok()
    }

    /// Every durable entry: (namespace, key, entry).
    pub async fn list(&self) -> Result<Vec<(String, String, CacheEntry)>, CacheError> {
        let mut out = Vec::new();
        for k in self.durable.list_objects("cache/").await? {
            let mut parts = k.splitn(3, '/');
            let (Some(_), Some(ns), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let Some(bytes) = self.durable.get_object(&k).await? else {
                continue;
            };
            match serde_json::from_slice::<CacheEntry>(&bytes) {
                Ok(e) => out.push((ns.to_string(), key.to_string(), e)),
                Err(e) => tracing::warn!("skipping cache record {k}: {e}"),
            }
        }
        Ok(out)
    }

    /// Removes an entry (durable record, state copy, use time).
    pub async fn remove(&self, ns: &str, key: &str) -> Result<(), CacheError> {
        let k = key_of(ns, key);
        self.state.delete(&k).await?;
        self.state.delete(&format!("used/{ns}/{key}")).await?;
        self.durable.delete_object(&k).await?;
        Ok(())
    }

    /// Claims step `key` of namespace `ns` for `owner` (a job id) for
    /// `ttl`. `None`: the caller holds it and runs the step; `Some(o)`:
    /// job `o` is running it.
    pub async fn claim(
        &self,
        ns: &str,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<String>, CacheError> {
        let held = self
            .state
            .put_if_absent(&format!("inflight/{ns}/{key}"), owner.as_bytes(), Some(ttl))
            .await?;
        Ok(held.map(|h| String::from_utf8_lossy(&h).into_owned()))
    }

    /// Extends a claim this owner holds; never another's. `false`: the
    /// claim is no longer this owner's (it expired, and perhaps another
    /// build claimed the step since).
    pub async fn renew(
        &self,
        ns: &str,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        Ok(self
            .state
            .expire_if_equals(&format!("inflight/{ns}/{key}"), owner.as_bytes(), ttl)
            .await?)
    }

    /// Releases a claim this owner holds (never another's).
    pub async fn release(&self, ns: &str, key: &str, owner: &str) -> Result<(), CacheError> {
        self.state
            .delete_if_equals(&format!("inflight/{ns}/{key}"), owner.as_bytes())
            .await?;
        Ok(())
    }

    /// Imports a `cache.json` left by an older strata (one local index
    /// file) into the stores, then renames it aside.
    pub async fn migrate_legacy(&self, state_dir: &std::path::Path) {
        let path = state_dir.join("cache.json");
        let Ok(bytes) = std::fs::read(&path) else {
            return;
        };
        let entries: BTreeMap<String, CacheEntry> =
            serde_json::from_slice(&bytes).unwrap_or_default();
        for (key, entry) in &entries {
            if let Err(e) = self.insert(DEFAULT_NAMESPACE, key, entry).await {
                tracing::warn!("migrating {}: {e}", path.display());
                return;
            }
        }
        let _ = std::fs::rename(&path, state_dir.join("cache.json.migrated"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_state::MemoryState;
    use strata_store::FsBlobs;

    fn entry(n: u8) -> CacheEntry {
        CacheEntry {
            layer: LayerInfo {
                diff_id: format!("sha256:{}", hex::encode([n; 32])),
                digest: format!("sha256:{}", hex::encode([n + 1; 32])),
                media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
                size: 10,
            },
            build_id: "b".into(),
            worker_id: "w".into(),
            created: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[tokio::test]
    async fn emptied_state_falls_back_to_the_durable_record_and_repopulates() {
        let dir = tempfile::tempdir().unwrap();
        let durable: Arc<dyn BlobStore> = Arc::new(FsBlobs::open(dir.path()).unwrap());
        let state = Arc::new(MemoryState::new());
        let index = CacheIndex::new(state.clone(), Arc::clone(&durable), BTreeMap::new());
        index.insert("default", "k1", &entry(1)).await.unwrap();

        // A fresh state (Redis after FLUSHALL) over the same durable store.
        let fresh = Arc::new(MemoryState::new());
        let index = CacheIndex::new(fresh.clone(), durable, BTreeMap::new());
        let hit = index.get("default", "k1").await.unwrap().unwrap();
        assert_eq!(hit.entry, entry(1));
        assert!(fresh.get("cache/default/k1").await.unwrap().is_some());
        assert!(index.get("default", "k2").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_damaged_record_is_a_miss_until_the_step_records_anew() {
        let dir = tempfile::tempdir().unwrap();
        let durable: Arc<dyn BlobStore> = Arc::new(FsBlobs::open(dir.path()).unwrap());
        let state = Arc::new(MemoryState::new());
        let index = CacheIndex::new(state.clone(), Arc::clone(&durable), BTreeMap::new());
        index.insert("default", "k1", &entry(1)).await.unwrap();
        // What a power loss can leave of an unsynced record: an empty file.
        durable
            .put_object("cache/default/k1", Bytes::new())
            .await
            .unwrap();
        let fresh = Arc::new(MemoryState::new());
        let index = CacheIndex::new(fresh.clone(), Arc::clone(&durable), BTreeMap::new());
        assert!(index.get("default", "k1").await.unwrap().is_none());
        // Damaged in the state store alone: the durable record answers.
        index.insert("default", "k1", &entry(2)).await.unwrap();
        fresh
            .put("cache/default/k1", b"{not json", None)
            .await
            .unwrap();
        let hit = index.get("default", "k1").await.unwrap().unwrap();
        assert_eq!(hit.entry, entry(2));
    }

    #[tokio::test]
    async fn namespaces_are_apart_unless_shared() {
        let dir = tempfile::tempdir().unwrap();
        let durable: Arc<dyn BlobStore> = Arc::new(FsBlobs::open(dir.path()).unwrap());
        let shares = BTreeMap::from([("team-b".to_string(), vec!["team-a".to_string()])]);
        let index = CacheIndex::new(Arc::new(MemoryState::new()), durable, shares);
        index.insert("team-a", "k", &entry(1)).await.unwrap();
        assert!(index.get("team-c", "k").await.unwrap().is_none());
        let hit = index.get("team-b", "k").await.unwrap().unwrap();
        assert_eq!(hit.namespace, "team-a");
        assert!(matches!(
            index.insert("../x", "k", &entry(1)).await,
            Err(CacheError::BadNamespace(_))
        ));
        let listed = index.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        index.remove("team-a", "k").await.unwrap();
        assert!(index.get("team-b", "k").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn one_claim_at_a_time_and_only_its_owner_releases_it() {
        let dir = tempfile::tempdir().unwrap();
        let durable: Arc<dyn BlobStore> = Arc::new(FsBlobs::open(dir.path()).unwrap());
        let index = CacheIndex::new(Arc::new(MemoryState::new()), durable, BTreeMap::new());
        let ttl = Duration::from_secs(60);
        assert_eq!(index.claim("d", "k", "job1", ttl).await.unwrap(), None);
        assert_eq!(
            index.claim("d", "k", "job2", ttl).await.unwrap().as_deref(),
            Some("job1")
        );
        index.release("d", "k", "job2").await.unwrap();
        assert!(index.claim("d", "k", "job2", ttl).await.unwrap().is_some());
        index.release("d", "k", "job1").await.unwrap();
        assert_eq!(index.claim("d", "k", "job2", ttl).await.unwrap(), None);
    }

    #[tokio::test]
    async fn renewing_never_takes_over_another_owners_claim() {
        let dir = tempfile::tempdir().unwrap();
        let durable: Arc<dyn BlobStore> = Arc::new(FsBlobs::open(dir.path()).unwrap());
        let state = Arc::new(MemoryState::new());
        let index = CacheIndex::new(state.clone(), durable, BTreeMap::new());
        let ttl = Duration::from_secs(60);
        assert_eq!(index.claim("d", "k", "job1", ttl).await.unwrap(), None);
        assert!(index.renew("d", "k", "job1", ttl).await.unwrap());
        // job1's claim expired and job2 claimed the step.
        index.release("d", "k", "job1").await.unwrap();
        assert_eq!(index.claim("d", "k", "job2", ttl).await.unwrap(), None);
        assert!(!index.renew("d", "k", "job1", ttl).await.unwrap());
        assert_eq!(
            state.get("inflight/d/k").await.unwrap().as_deref(),
            Some(&b"job2"[..]),
            "job2 still holds it"
        );
    }
}
