//! The scheduler's image store: names (`name:tag`) pointing at manifests
//! whose config, manifest and layer blobs live in the blob store. This is
//! what `strata images`, `strata history`, `strata save` and `FROM` of a
//! locally built or imported image read. `images.json` is rewritten
//! atomically on every change.
//!
//! With client tokens every tenant has its own names and sees only the
//! images it built, imported or was given a name for: another tenant's
//! image is "No such image", by name or by id, so names and ids cannot be
//! probed. Without tokens (embedded mode, a trusted network) there is one
//! set of names and every image is visible.

use crate::blobs::Blobs;
use crate::image::Image;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use strata_frontend::plan::ImageRef;
use strata_proto::build::v1 as build;
use thiserror::Error;

/// Why an image operation failed.
#[derive(Debug, Error)]
pub enum ImageStoreError {
    /// No image by that name or id.
    #[error("No such image: {0}")]
    NotFound(String),
    /// A name that is not a valid reference.
    #[error("invalid image name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The index or a blob could not be read or written.
    #[error("image store: {0}")]
    Io(String),
}

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
    /// The build that produced it, if any.
    #[serde(default)]
    pub build_id: String,
    /// The tenants that built, imported or named it (`""`: a scheduler
    /// without client tokens).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub owners: BTreeSet<String>,
}

/// Who is asking: `Some(tenant)` with client tokens, `None` without (sees
/// every image; its names are the untenanted ones).
pub type Viewer<'a> = Option<&'a str>;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Index {
    /// Normalised `name:tag` to manifest digest, without a tenant.
    tags: BTreeMap<String, String>,
    /// Per tenant, its own normalised `name:tag` to manifest digest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    tenant_tags: BTreeMap<String, BTreeMap<String, String>>,
    /// Manifest digest to record.
    images: BTreeMap<String, ImageRecord>,
}

impl Index {
    /// The names `viewer` sees.
    fn names(&self, viewer: Viewer<'_>) -> Option<&BTreeMap<String, String>> {
        match viewer {
            None => Some(&self.tags),
            Some(t) => self.tenant_tags.get(t),
        }
    }

    fn names_mut(&mut self, viewer: Viewer<'_>) -> &mut BTreeMap<String, String> {
        match viewer {
            None => &mut self.tags,
            Some(t) => self.tenant_tags.entry(t.to_string()).or_default(),
        }
    }

    /// Whether any name of any tenant points at `manifest`.
    fn named_anywhere(&self, manifest: &str) -> bool {
        self.tags
            .values()
            .chain(self.tenant_tags.values().flat_map(|t| t.values()))
            .any(|m| m == manifest)
    }
}

/// Whether `viewer` may see `rec`.
fn visible(viewer: Viewer<'_>, rec: &ImageRecord) -> bool {
    viewer.is_none_or(|t| rec.owners.contains(t))
}

/// The image store.
#[derive(Debug)]
pub struct ImageStore {
    path: PathBuf,
    index: Mutex<Index>,
}

/// `name:tag` normalised as Docker does (`busybox` =
/// `docker.io/library/busybox:latest`).
pub fn normalise(name: &str) -> Result<String, ImageStoreError> {
    ImageRef::parse(name)
        .map(|r| r.to_string())
        .map_err(|reason| ImageStoreError::InvalidName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
}

/// Seconds since the epoch of an RFC 3339 time (`2024-01-02T03:04:05Z`,
/// fractions and offsets accepted, offsets applied).
pub fn parse_rfc3339(s: &str) -> Option<(i64, u32)> {
    let (date, time) = s.split_once(['T', 't', ' '])?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, dd) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (clock, offset) = match time.find(['Z', 'z', '+', '-']) {
        Some(i) => (&time[..i], &time[i..]),
        None => (time, ""),
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let nanos = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(9).collect();
        digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32)
    };
    let off = match offset.as_bytes().first() {
        Some(b'+') | Some(b'-') => {
            let (h, m) = offset[1..].split_once(':').unwrap_or((&offset[1..], "0"));
            let secs = h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60;
            if offset.starts_with('-') { -secs } else { secs }
        }
        _ => 0,
    };
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60 + ss - off, nanos))
}

fn timestamp(rfc3339: &str) -> Option<prost_types::Timestamp> {
    parse_rfc3339(rfc3339).map(|(seconds, nanos)| prost_types::Timestamp {
        seconds,
        nanos: nanos as i32,
    })
}

impl ImageStore {
    /// Opens the store whose index is `<state>/images.json`.
    pub fn open(state: &Path) -> Result<Self, ImageStoreError> {
        let path = state.join("images.json");
        let index = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| ImageStoreError::Io(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Index::default(),
            Err(e) => return Err(ImageStoreError::Io(format!("{}: {e}", path.display()))),
        };
        Ok(Self {
            path,
            index: Mutex::new(index),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, index: &Index) -> Result<(), ImageStoreError> {
        let bytes =
            serde_json::to_vec_pretty(index).map_err(|e| ImageStoreError::Io(e.to_string()))?;
        crate::blobs::write_atomic(&self.path, &bytes)
            .map_err(|e| ImageStoreError::Io(format!("{}: {e}", self.path.display())))
    }

    /// Stores an image's config and manifest (published with its layers
    /// to the shared store, if any) and points `tags` of `owner` at it.
    pub async fn record(
        &self,
        blobs: &Blobs,
        image: &Image,
        tags: &[String],
        build_id: &str,
        owner: Viewer<'_>,
    ) -> Result<ImageRecord, ImageStoreError> {
        let normalised: Vec<String> = tags
            .iter()
            .map(|t| normalise(t))
            .collect::<Result<_, _>>()?;
        let io = |e: crate::blobs::BlobError| ImageStoreError::Io(e.to_string());
        for l in &image.layers {
            blobs.publish(&l.digest).await.map_err(io)?;
        }
        blobs.put_bytes(&image.config).await.map_err(io)?;
        blobs.put_bytes(&image.manifest).await.map_err(io)?;
        let config: serde_json::Value = serde_json::from_slice(&image.config).unwrap_or_default();
        let mut index = self.lock();
        // The same image made by another tenant stays theirs too.
        let mut owners = index
            .images
            .get(&image.manifest_digest)
            .map(|r| r.owners.clone())
            .unwrap_or_default();
        owners.insert(owner.unwrap_or_default().to_string());
        let rec = ImageRecord {
            manifest_digest: image.manifest_digest.clone(),
            config_digest: image.config_digest.clone(),
            created: config["created"].as_str().unwrap_or_default().to_string(),
            size: image.layers.iter().map(|l| l.size).sum(),
            build_id: build_id.to_string(),
            owners,
        };
        index
            .images
            .insert(rec.manifest_digest.clone(), rec.clone());
        let names = index.names_mut(owner);
        for t in normalised {
            names.insert(t, rec.manifest_digest.clone());
        }
        self.save(&index)?;
        Ok(rec)
    }

    /// Every image record.
    pub fn records(&self) -> Vec<ImageRecord> {
        self.lock().images.values().cloned().collect()
    }

    /// Finds an image `viewer` may see by `name[:tag]` (one of its
    /// names), full or short (≥ 4 hex digits) image ID, or manifest digest.
    pub fn find(&self, viewer: Viewer<'_>, what: &str) -> Option<ImageRecord> {
        let index = self.lock();
        if let Ok(name) = normalise(what)
            && let Some(m) = index.names(viewer).and_then(|n| n.get(&name))
        {
            return index.images.get(m).cloned();
        }
        let id = what.strip_prefix("sha256:").unwrap_or(what);
        if id.len() < 4 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        index
            .images
            .values()
            .filter(|r| visible(viewer, r))
            .find(|r| {
                r.config_digest
                    .trim_start_matches("sha256:")
                    .starts_with(id)
                    || r.manifest_digest
                        .trim_start_matches("sha256:")
                        .starts_with(id)
            })
            .cloned()
    }

    /// Like [`ImageStore::find`], as an error when absent (or not
    /// `viewer`'s: the same error, so ids cannot be probed).
    pub fn get(&self, viewer: Viewer<'_>, what: &str) -> Result<ImageRecord, ImageStoreError> {
        self.find(viewer, what)
            .ok_or_else(|| ImageStoreError::NotFound(what.to_string()))
    }

    /// The image one of `viewer`'s tags names, by normalised `name:tag`
    /// only (what `FROM` consults before a registry).
    pub fn by_tag(&self, viewer: Viewer<'_>, normalised: &str) -> Option<ImageRecord> {
        let index = self.lock();
        index
            .names(viewer)?
            .get(normalised)
            .and_then(|m| index.images.get(m))
            .cloned()
    }

    /// Points `viewer`'s name `target` at the image `source` names.
    pub fn tag(
        &self,
        viewer: Viewer<'_>,
        source: &str,
        target: &str,
    ) -> Result<ImageRecord, ImageStoreError> {
        let rec = self.get(viewer, source)?;
        let target = normalise(target)?;
        let mut index = self.lock();
        index
            .names_mut(viewer)
            .insert(target, rec.manifest_digest.clone());
        if let Some(r) = index.images.get_mut(&rec.manifest_digest) {
            r.owners.insert(viewer.unwrap_or_default().to_string());
        }
        self.save(&index)?;
        Ok(rec)
    }

    /// Removes one of `viewer`'s tags (or, given an id, every tag of that
    /// image it sees); returns the names untagged and the image forgotten
    /// once `viewer` has no name for it. Other tenants keep theirs. Blobs
    /// stay until a prune.
    pub fn remove(
        &self,
        viewer: Viewer<'_>,
        what: &str,
    ) -> Result<(Vec<String>, Vec<String>), ImageStoreError> {
        let rec = self.get(viewer, what)?;
        let manifest = rec.manifest_digest.as_str();
        let mut index = self.lock();
        let by_name = normalise(what)
            .ok()
            .filter(|n| index.names(viewer).is_some_and(|t| t.contains_key(n)));
        let mut untagged: Vec<String> = Vec::new();
        if let Some(n) = by_name {
            index.names_mut(viewer).remove(&n);
            untagged.push(n);
        } else {
            // By id: every name the viewer has for it (without tokens,
            // every name there is).
            let mut strip = |names: &mut BTreeMap<String, String>| {
                names.retain(|t, m| {
                    let hit = m == manifest;
                    if hit {
                        untagged.push(t.clone());
                    }
                    !hit
                });
            };
            let index = &mut *index;
            match viewer {
                None => {
                    strip(&mut index.tags);
                    index.tenant_tags.values_mut().for_each(&mut strip);
                }
                Some(_) => strip(index.names_mut(viewer)),
            }
        }
        index.tenant_tags.retain(|_, names| !names.is_empty());
        let mut deleted = Vec::new();
        if !index
            .names(viewer)
            .is_some_and(|n| n.values().any(|m| m == manifest))
        {
            let named = index.named_anywhere(manifest);
            if let Some(r) = index.images.get_mut(manifest) {
                r.owners.remove(viewer.unwrap_or_default());
                if !named && (viewer.is_none() || r.owners.is_empty()) {
                    index.images.remove(manifest);
                }
            }
            deleted.push(rec.config_digest.clone());
        }
        self.save(&index)?;
        Ok((untagged, deleted))
    }

    /// `docker images`: one row per tag of `viewer`, newest first; with
    /// `all`, the images it sees under none of its names too.
    pub fn list(
        &self,
        viewer: Viewer<'_>,
        filter: Option<&str>,
        all: bool,
    ) -> Vec<build::ImageSummary> {
        let index = self.lock();
        let mut rows = Vec::new();
        let mut tagged = BTreeSet::new();
        let no_names = BTreeMap::new();
        for (tag, manifest) in index.names(viewer).unwrap_or(&no_names) {
            let Some(rec) = index.images.get(manifest) else {
                continue;
            };
            tagged.insert(manifest.clone());
            let familiar = ImageRef::parse(tag)
                .map(|r| r.familiar())
                .unwrap_or(tag.clone());
            let (repo, t) = match familiar.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
                _ => (familiar.clone(), "latest".to_string()),
            };
            if let Some(f) = filter
                && !(familiar == f || repo == f || tag == f)
            {
                continue;
            }
            rows.push(summary(&repo, &t, rec));
        }
        if all && filter.is_none() {
            for (m, rec) in &index.images {
                if !tagged.contains(m) && visible(viewer, rec) {
                    rows.push(summary("<none>", "<none>", rec));
                }
            }
        }
        rows.sort_by(|a, b| {
            let ta = a.created.as_ref().map(|t| (t.seconds, t.nanos));
            let tb = b.created.as_ref().map(|t| (t.seconds, t.nanos));
            tb.cmp(&ta)
                .then(a.repository.cmp(&b.repository))
                .then(a.tag.cmp(&b.tag))
        });
        rows
    }

    /// `docker history`: newest entry first; each non-empty history entry
    /// paired with its layer's blob size, metadata-only ones with 0.
    pub async fn history(
        &self,
        viewer: Viewer<'_>,
        blobs: &Blobs,
        what: &str,
    ) -> Result<Vec<build::HistoryEntry>, ImageStoreError> {
        let rec = self.get(viewer, what)?;
        let read = async |d: &str| -> Result<serde_json::Value, ImageStoreError> {
            let bytes = blobs
                .read(d)
                .await
                .map_err(|e| ImageStoreError::Io(e.to_string()))?;
            serde_json::from_slice(&bytes).map_err(|e| ImageStoreError::Io(format!("{d}: {e}")))
        };
        let config = read(&rec.config_digest).await?;
        let manifest = read(&rec.manifest_digest).await?;
        let layers: Vec<(String, u64)> = manifest["layers"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|x| {
                        (
                            x["digest"].as_str().unwrap_or_default().to_string(),
                            x["size"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let tags: Vec<String> = {
            let index = self.lock();
            index
                .names(viewer)
                .into_iter()
                .flatten()
                .filter(|(_, m)| **m == rec.manifest_digest)
                .map(|(t, _)| {
                    ImageRef::parse(t)
                        .map(|r| r.familiar())
                        .unwrap_or(t.clone())
                })
                .collect()
        };
        let mut next = 0;
        let mut out = Vec::new();
        for h in config["history"].as_array().into_iter().flatten() {
            let empty = h["empty_layer"].as_bool().unwrap_or(false);
            let (digest, size) = if empty {
                (String::new(), 0)
            } else {
                let l = layers.get(next).cloned().unwrap_or_default();
                next += 1;
                l
            };
            out.push(build::HistoryEntry {
                id: "<missing>".into(),
                layer_digest: digest,
                created: h["created"].as_str().and_then(timestamp),
                created_by: h["created_by"].as_str().unwrap_or_default().to_string(),
                size,
                empty_layer: empty,
                comment: h["comment"].as_str().unwrap_or_default().to_string(),
                tags: Vec::new(),
            });
        }
        out.reverse();
        if let Some(top) = out.first_mut() {
            top.id = rec.config_digest.clone();
            top.tags = tags;
        }
        Ok(out)
    }
}

fn summary(repo: &str, tag: &str, rec: &ImageRecord) -> build::ImageSummary {
    build::ImageSummary {
        repository: repo.to_string(),
        tag: tag.to_string(),
        image_id: rec.config_digest.clone(),
        manifest_digest: rec.manifest_digest.clone(),
        created: timestamp(&rec.created),
        size: rec.size,
        build_id: rec.build_id.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(hex: char, owners: &[&str]) -> serde_json::Value {
        let d = format!("sha256:{}", hex.to_string().repeat(64));
        serde_json::json!({"manifest_digest": d, "config_digest": d, "created": "", "size": 1, "owners": owners})
    }

    /// Team a and team b each name `app:1`; image m is both teams' (b's
    /// untagged), n team b's; `old:1` is from before tenants.
    #[test]
    fn tenants_have_their_own_names_and_see_only_their_images() {
        let dir = tempfile::tempdir().unwrap();
        let (m, n, o) = ("c".repeat(64), "e".repeat(64), "0".repeat(64));
        let (m, n, o) = (
            format!("sha256:{m}"),
            format!("sha256:{n}"),
            format!("sha256:{o}"),
        );
        let app = normalise("app:1").unwrap();
        let index = serde_json::json!({
            "tags": {normalise("old:1").unwrap(): o},
            "tenant_tags": {"a": {&app: m}, "b": {&app: n}},
            "images": {&m: rec('c', &["a", "b"]), &n: rec('e', &["b"]), &o: rec('0', &[])},
        });
        std::fs::write(dir.path().join("images.json"), index.to_string()).unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let id = |r: Option<ImageRecord>| r.map(|r| r.manifest_digest);
        assert_eq!(id(store.find(Some("a"), "app:1")), Some(m.clone()));
        assert_eq!(id(store.find(Some("b"), "app:1")), Some(n.clone()));
        // Not a's: by name, by id or by short id, as if it did not exist.
        assert_eq!(id(store.find(Some("a"), &n)), None);
        assert_eq!(id(store.find(Some("a"), "eeeeeeee")), None);
        assert_eq!(id(store.find(Some("a"), "old:1")), None);
        assert!(matches!(
            store.tag(Some("a"), &n, "mine:1"),
            Err(ImageStoreError::NotFound(_))
        ));
        // Without tokens: the old names, and every image by id.
        assert_eq!(id(store.find(None, "old:1")), Some(o.clone()));
        assert_eq!(id(store.find(None, "eeee")), Some(n.clone()));
        let rows = |v: Viewer<'_>| -> Vec<(String, String)> {
            store
                .list(v, None, true)
                .into_iter()
                .map(|r| (r.repository, r.manifest_digest))
                .collect()
        };
        assert_eq!(rows(Some("a")), vec![("app".to_string(), m.clone())]);
        let b = rows(Some("b"));
        assert!(
            b.contains(&("app".into(), n.clone())) && b.contains(&("<none>".into(), m.clone()))
        );
        assert_eq!(b.len(), 2, "{b:?}");

        // a removes its name: m stays b's (untagged); b's app:1 is n still.
        let (untagged, deleted) = store.remove(Some("a"), "app:1").unwrap();
        assert_eq!((untagged, deleted.len()), (vec![app.clone()], 1));
        assert_eq!(id(store.find(Some("a"), &m)), None);
        assert_eq!(id(store.find(Some("b"), &m)), Some(m.clone()));
        assert_eq!(id(store.find(Some("b"), "app:1")), Some(n.clone()));
        // Kept across a restart.
        let store = ImageStore::open(dir.path()).unwrap();
        assert_eq!(id(store.find(Some("b"), &m)), Some(m.clone()));
        store.remove(Some("b"), &m).unwrap();
        assert!(store.records().iter().all(|r| r.manifest_digest != m));
    }

    #[test]
    fn rfc3339_times_parse_with_fractions_and_offsets() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(
            parse_rfc3339("2024-02-29T12:34:56.5Z"),
            Some((1_709_210_096, 500_000_000))
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T14:34:56+02:00"),
            Some((1_709_210_096, 0))
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
