//! Where blobs are known to live in registries: per blob digest, the
//! repositories of each registry it was pulled from (base images) or
//! pushed to. A push asks here for a repository of its own registry to
//! mount a blob from (`POST .../blobs/uploads/?mount=DIGEST&from=REPO`)
//! instead of uploading it.
//!
//! Kept as durable named objects (`origins/<digest>`, in the shared store
//! in a farm), so the knowledge outlives a scheduler restart, reaches
//! every scheduler of the farm, and survives an embedded client's exit.
//! It is a hint: a lost update (two schedulers writing one digest at once)
//! or a repository that has since dropped the blob only costs an upload.

use crate::blobs::{BlobStore, digest_hex};
use bytes::Bytes;
use std::collections::BTreeMap;
use strata_oci::registry::ImageRef;

/// Repositories remembered per registry and blob; the oldest go first.
const MAX_REPOSITORIES: usize = 8;

/// registry API host → repositories, most recent last.
type Known = BTreeMap<String, Vec<String>>;

fn key(digest: &str) -> Option<String> {
    digest_hex(digest).ok()?;
    Some(format!("origins/{digest}"))
}

async fn load(store: &dyn BlobStore, key: &str) -> Known {
    match store.get_object(key).await {
        Ok(Some(b)) => serde_json::from_slice(&b).unwrap_or_default(),
        Ok(None) => Known::new(),
        Err(e) => {
            tracing::debug!("reading {key}: {e}");
            Known::new()
        }
    }
}

/// Notes that `image`'s repository holds each of `digests`. Best effort:
/// a store error is logged, never returned (the push or pull it follows
/// succeeded).
pub async fn record(store: &dyn BlobStore, image: &ImageRef, digests: &[String]) {
    for digest in digests {
        let Some(key) = key(digest) else { continue };
        let mut known = load(store, &key).await;
        let repos = known.entry(image.api_host().to_string()).or_default();
        if repos.last().map(String::as_str) == Some(image.repository()) {
            continue;
        }
        repos.retain(|r| r != image.repository());
        repos.push(image.repository().to_string());
        if repos.len() > MAX_REPOSITORIES {
            repos.remove(0);
        }
        match serde_json::to_vec(&known) {
            Ok(bytes) => {
                if let Err(e) = store.put_object(&key, Bytes::from(bytes)).await {
                    tracing::warn!("recording where {digest} lives: {e}");
                }
            }
            Err(e) => tracing::warn!("recording where {digest} lives: {e}"),
        }
    }
}

/// Repositories of `target`'s registry, other than its own, known to hold
/// `digest`, most recent first.
pub async fn sources(store: &dyn BlobStore, target: &ImageRef, digest: &str) -> Vec<String> {
    let Some(key) = key(digest) else {
        return Vec::new();
    };
    let mut known = load(store, &key).await;
    known
        .remove(target.api_host())
        .unwrap_or_default()
        .into_iter()
        .rev()
        .filter(|r| r != target.repository())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_store::FsBlobs;

    #[tokio::test]
    async fn repositories_are_remembered_per_registry() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobs::open(dir.path()).unwrap();
        let digest = crate::blobs::sha256_of(b"layer");
        let a = ImageRef::parse("reg.example:5000/team/a:1").unwrap();
        let b = ImageRef::parse("reg.example:5000/team/b:1").unwrap();
        let other = ImageRef::parse("other.example/team/c:1").unwrap();
        record(&store, &a, std::slice::from_ref(&digest)).await;
        record(&store, &other, std::slice::from_ref(&digest)).await;
        assert_eq!(sources(&store, &b, &digest).await, vec!["team/a"]);
        // A repository is never its own source.
        assert!(sources(&store, &a, &digest).await.is_empty());
        record(&store, &b, std::slice::from_ref(&digest)).await;
        let c = ImageRef::parse("reg.example:5000/team/c:1").unwrap();
        assert_eq!(sources(&store, &c, &digest).await, vec!["team/b", "team/a"]);
        // Unknown blobs and malformed digests have no sources.
        assert!(sources(&store, &c, "sha256:zz").await.is_empty());
        assert!(
            sources(&store, &c, &crate::blobs::sha256_of(b"x"))
                .await
                .is_empty()
        );
    }
}
