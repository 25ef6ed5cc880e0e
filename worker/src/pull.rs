//! Pulling base images into the worker's store: resolve a reference to one
//! platform's manifest and config, download each layer blob the store does
//! not hold yet (verified against its digest while it streams), and
//! describe the layers as [`LayerRef`]s. Layers are unpacked later, when a
//! job needs them ([`Store::ensure_unpacked`], which checks each diffID).

use crate::store::{LayerRef, Store, StoreError};
use futures::{StreamExt as _, TryStreamExt as _};
use oci_spec::image::{Descriptor, ImageConfiguration};
use std::sync::Arc;
use strata_oci::registry::{ImageRef, Platform, RegistryClient, RegistryError};
use thiserror::Error;

/// At most this many layer blobs of one image download at once.
const PULL_CONCURRENCY: usize = 3;

/// Layer media types the store can unpack (compression is detected from
/// the blob's magic bytes; these only rule out encrypted and other
/// non-tar layers).
const LAYER_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// Why pulling an image failed; every variant names the image.
#[derive(Debug, Error)]
pub enum PullError {
    /// The registry client failed (reference, auth, network, digests).
    #[error("pulling {reference}: {source}")]
    Registry {
        /// The image as asked for.
        reference: String,
        /// Why.
        #[source]
        source: RegistryError,
    },
    /// The config's `rootfs.diff_ids` and the manifest's layers disagree.
    #[error(
        "pulling {reference}: the manifest lists {layers} layers but the image config has {diff_ids} diff_ids; the image is malformed"
    )]
    LayerCountMismatch {
        /// The image.
        reference: String,
        /// Layers in the manifest.
        layers: usize,
        /// diffIDs in the config.
        diff_ids: usize,
    },
    /// A layer is not a (possibly compressed) tar strata can unpack.
    #[error(
        "pulling {reference}: layer {digest} has media type {media_type}, which strata cannot unpack (only plain, gzip and zstd tar layers are supported)"
    )]
    UnsupportedLayer {
        /// The image.
        reference: String,
        /// The layer blob.
        digest: String,
        /// Its media type.
        media_type: String,
    },
    /// Storing a blob failed.
    #[error("pulling {reference}: {source}")]
    Store {
        /// The image.
        reference: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// A blocking task of the pull panicked or was cancelled.
    #[error("pulling {reference}: worker task failed: {detail}")]
    Task {
        /// The image.
        reference: String,
        /// The join error.
        detail: String,
    },
}

/// A base image whose layer blobs are in the worker's store.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The reference pinned to the manifest digest (`name:tag@sha256:…`).
    pub reference: String,
    /// The digest of the platform's image manifest.
    pub manifest_digest: String,
    /// The digest of the index the manifest was picked from, if any.
    pub index_digest: Option<String>,
    /// The image config.
    pub config: ImageConfiguration,
    /// The config's exact bytes (their digest is the image ID).
    pub config_raw: Vec<u8>,
    /// The layers, base first: diffIDs from the config, blob digests,
    /// media types and sizes from the manifest.
    pub layers: Vec<LayerRef>,
    /// Layer blobs downloaded by this pull (the others were in the store).
    pub downloaded: usize,
}

/// Pulls `reference` for `platform` into `store`: blobs already present
/// are not downloaded again; the others stream to the store's ingest area,
/// are verified against their digest and size, and are committed under
/// their digest.
pub async fn pull_image(
    store: &Arc<Store>,
    reference: &str,
    platform: &Platform,
    registry: &RegistryClient,
) -> Result<PulledImage, PullError> {
    let registry_err = |source| PullError::Registry {
        reference: reference.to_string(),
        source,
    };
    let image_ref = ImageRef::parse(reference).map_err(registry_err)?;
    let resolved = registry
        .resolve(&image_ref, platform)
        .await
        .map_err(registry_err)?;
    let diff_ids = resolved.config.rootfs().diff_ids();
    if diff_ids.len() != resolved.layers.len() {
        return Err(PullError::LayerCountMismatch {
            reference: reference.to_string(),
            layers: resolved.layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    let mut layers = Vec::with_capacity(diff_ids.len());
    for (desc, diff_id) in resolved.layers.iter().zip(diff_ids) {
        let media_type = desc.media_type().to_string();
        if !LAYER_MEDIA_TYPES.contains(&media_type.as_str()) {
            return Err(PullError::UnsupportedLayer {
                reference: reference.to_string(),
                digest: desc.digest().to_string(),
                media_type,
            });
        }
        layers.push(LayerRef {
            diff_id: diff_id.clone(),
            digest: desc.digest().to_string(),
            media_type,
            size: desc.size(),
        });
    }

    // An image may list the same blob twice; fetch it once.
    let mut wanted: Vec<&Descriptor> = Vec::new();
    for desc in &resolved.layers {
        if !wanted.iter().any(|w| w.digest() == desc.digest()) {
            wanted.push(desc);
        }
    }
    let downloaded: Vec<bool> = futures::stream::iter(wanted)
        .map(|desc| fetch_layer(store, &image_ref, desc, registry, reference))
        .buffer_unordered(PULL_CONCURRENCY)
        .try_collect()
        .await?;

    Ok(PulledImage {
        reference: resolved.pinned().to_string(),
        manifest_digest: resolved.manifest_digest.to_string(),
        index_digest: resolved.index_digest.as_ref().map(ToString::to_string),
        config: resolved.config,
        config_raw: resolved.config_raw,
        layers,
        downloaded: downloaded.into_iter().filter(|d| *d).count(),
    })
}

/// Downloads one layer blob into the store unless it is there; returns
/// whether it was downloaded.
async fn fetch_layer(
    store: &Arc<Store>,
    image: &ImageRef,
    desc: &Descriptor,
    registry: &RegistryClient,
    reference: &str,
) -> Result<bool, PullError> {
    let digest = desc.digest().to_string();
    let store_err = |source| PullError::Store {
        reference: reference.to_string(),
        source,
    };
    let blob = store.blob_path(&digest).map_err(store_err)?;
    if tokio::fs::metadata(&blob).await.is_ok_and(|m| m.is_file()) {
        return Ok(false);
    }
    let tmp = store.temp_path("pull");
    // Verified (digest and size) before it appears at `tmp`.
    registry
        .download_blob(image, desc, &tmp)
        .await
        .map_err(|source| PullError::Registry {
            reference: reference.to_string(),
            source,
        })?;
    let store = Arc::clone(store);
    let committed = tokio::task::spawn_blocking(move || {
        let r = store.commit_blob(&tmp, &digest);
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        r
    })
    .await
    .map_err(|e| PullError::Task {
        reference: reference.to_string(),
        detail: e.to_string(),
    })?;
    committed.map_err(store_err)?;
    Ok(true)
}
