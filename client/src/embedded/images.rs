//! The embedded mode's image store: tags pointing at manifests whose
//! config, manifest and layer blobs live in the worker's content store.
//! `images.json` is rewritten atomically on every change.

use anyhow::{Context as _, Result, anyhow};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use strata_scheduler::image::Image;
use strata_worker::store::Store;

/// One stored image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `sha256:` of the manifest.
    pub manifest_digest: String,
    /// `sha256:` of the config (the image ID).
    pub config_digest: String,
    /// RFC 3339 creation time from the config.
    pub created: String,
    /// Sum of the layer blob sizes.
    pub size: u64,
}

/// The tag index.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageIndex {
    /// `name:tag` (normalised) to manifest digest.
    pub tags: BTreeMap<String, String>,
    /// Manifest digest to record.
    pub images: BTreeMap<String, ImageRecord>,
}

fn index_path(home: &Path) -> PathBuf {
    home.join("images.json")
}

impl ImageIndex {
    /// Loads the index (empty when there is none yet).
    pub fn load(home: &Path) -> Result<Self> {
        match std::fs::read(index_path(home)) {
            Ok(b) => serde_json::from_slice(&b)
                .with_context(|| format!("reading {}", index_path(home).display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", index_path(home).display())),
        }
    }

    /// Writes the index atomically.
    pub fn save(&self, home: &Path) -> Result<()> {
        let tmp = home.join("images.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, index_path(home))?;
        Ok(())
    }

    /// Finds an image by `name[:tag]`, full or short image ID, or manifest
    /// digest.
    pub fn find(&self, what: &str) -> Option<&ImageRecord> {
        if let Ok(r) = strata_frontend::plan::ImageRef::parse(what)
            && let Some(m) = self.tags.get(&r.to_string())
        {
            return self.images.get(m);
        }
        let id = what.strip_prefix("sha256:").unwrap_or(what);
        if id.len() < 4 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        self.images.values().find(|r| {
            r.config_digest
                .trim_start_matches("sha256:")
                .starts_with(id)
                || r.manifest_digest
                    .trim_start_matches("sha256:")
                    .starts_with(id)
        })
    }
}

fn put(store: &Store, bytes: &[u8], digest: &str) -> Result<()> {
    if store.has_blob(digest) {
        return Ok(());
    }
    let tmp = store.temp_path("meta");
    std::fs::write(&tmp, bytes)?;
    store
        .commit_blob(&tmp, digest)
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Stores an image's config and manifest blobs and tags it.
pub fn record(home: &Path, store: &Store, image: &Image, tags: &[String]) -> Result<ImageRecord> {
    put(store, &image.config, &image.config_digest)?;
    put(store, &image.manifest, &image.manifest_digest)?;
    let config: serde_json::Value = serde_json::from_slice(&image.config)?;
    let rec = ImageRecord {
        manifest_digest: image.manifest_digest.clone(),
        config_digest: image.config_digest.clone(),
        created: config["created"].as_str().unwrap_or_default().to_string(),
        size: image.layers.iter().map(|l| l.size).sum(),
    };
    let mut index = ImageIndex::load(home)?;
    index
        .images
        .insert(rec.manifest_digest.clone(), rec.clone());
    for t in tags {
        let r = strata_frontend::plan::ImageRef::parse(t)
            .map_err(|e| anyhow!("invalid tag {t:?}: {e}"))?;
        index
            .tags
            .insert(r.to_string(), rec.manifest_digest.clone());
    }
    index.save(home)?;
    Ok(rec)
}

/// Where the embedded worker's store keeps a blob (read-only access: no
/// store is opened, so a running build is never disturbed).
pub fn blob_file(home: &Path, digest: &str) -> Result<PathBuf> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
        .ok_or_else(|| anyhow!("invalid digest {digest:?}"))?;
    Ok(home.join("worker/store/blobs/sha256").join(hex))
}

/// Reads a stored JSON blob (config or manifest).
pub fn read_json(home: &Path, digest: &str) -> Result<serde_json::Value> {
    let path = blob_file(home, digest)?;
    Ok(serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )?)
}
