//! The layer cache index: a step's cache key (which covers its parent's
//! key and every input, see the planner) to the layer it produced. A hit
//! whose blob is still in the store is Docker's "unchanged layer".
//!
//! This is the local backend (`<state>/cache.json`, rewritten atomically);
//! the shared Redis/S3 index is issue #5.

use crate::image::LayerInfo;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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

/// The index.
#[derive(Debug)]
pub struct CacheIndex {
    path: PathBuf,
    entries: Mutex<BTreeMap<String, CacheEntry>>,
}

impl CacheIndex {
    /// Opens `<state>/cache.json` (an unreadable index starts empty: the
    /// cache is an optimisation, never the only copy of anything).
    pub fn open(state: &Path) -> Self {
        let path = state.join("cache.json");
        let entries = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Self {
            path,
            entries: Mutex::new(entries),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, CacheEntry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry for `key`.
    pub fn get(&self, key: &str) -> Option<CacheEntry> {
        self.lock().get(key).cloned()
    }

    /// Records a layer under `key` and persists the index.
    pub fn insert(&self, key: &str, entry: CacheEntry) -> std::io::Result<()> {
        let mut entries = self.lock();
        entries.insert(key.to_string(), entry);
        crate::blobs::write_atomic(&self.path, &serde_json::to_vec(&*entries)?)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
