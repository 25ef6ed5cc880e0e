//! `strata push`: an image's blobs streamed from the store to a registry,
//! skipped where the registry has them, then its manifest.
//!
//! Layers are pushed in the compression the push asks for — gzip unless
//! told otherwise, since older clients cannot read zstd. A zstd layer (or,
//! with `force_compression`, any layer) stored in another compression is
//! re-encoded once (gzip in parallel on all cores,
//! its diffID checked on the way) and the variant is kept in the store and
//! indexed (`<state>/variants.json`), so the next push reuses it. When
//! every layer already has the asked compression, the manifest's exact
//! bytes are pushed and the pushed digest is the local one; otherwise the
//! manifest names the variants (same config, same image ID).

use crate::Inner;
use crate::image::{LayerInfo, layers_of};
use crate::images::ImageRecord;
use bytes::Bytes;
use oci_spec::image::Descriptor;
use std::collections::BTreeMap;
use strata_oci::layer::{Compression, CompressionKind, recompress};
use strata_oci::registry::{BlobPushOutcome, BlobSource, BlobUpload, ImageRef};
use strata_proto::build::v1 as build;
use strata_proto::common::v1 as common;
use tokio::sync::mpsc;
use tonic::Status;

fn progress(digest: &str, phase: build::PushPhase, size: u64) -> build::PushProgress {
    build::PushProgress {
        progress: Some(build::push_progress::Progress::Blob(
            build::BlobPushProgress {
                digest: digest.to_string(),
                phase: phase as i32,
                current: size,
                total: size,
            },
        )),
    }
}

fn kind_of(media_type: &str) -> CompressionKind {
    if media_type.ends_with("+zstd") || media_type.ends_with(".zstd") {
        CompressionKind::Zstd
    } else if media_type.ends_with("gzip") {
        CompressionKind::Gzip
    } else {
        CompressionKind::Uncompressed
    }
}

static VARIANTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The layer `diff_id` compressed as `to`: from the variant index, else
/// re-encoded from `stored` and recorded.
pub fn layer_variant(
    inner: &Inner,
    stored: &LayerInfo,
    to: Compression,
) -> Result<LayerInfo, String> {
    if kind_of(&stored.media_type) == to.kind() {
        return Ok(stored.clone());
    }
    let _guard = VARIANTS.lock().unwrap_or_else(|e| e.into_inner());
    let path = inner.config.state_dir.join("variants.json");
    let mut index: BTreeMap<String, LayerInfo> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let key = format!("{}:{}", stored.diff_id, to.media_type());
    if let Some(v) = index
        .get(&key)
        .filter(|v| inner.blobs.local().has(&v.digest))
    {
        return Ok(v.clone());
    }
    let src = inner
        .blobs
        .local()
        .path(&stored.digest)
        .map_err(|e| e.to_string())?;
    let input = std::fs::File::open(&src).map_err(|e| format!("layer {}: {e}", stored.digest))?;
    let tmp = inner.blobs.temp_path("variant");
    let out = std::fs::File::create(&tmp).map_err(|e| e.to_string())?;
    let desc = recompress(
        std::io::BufReader::with_capacity(1 << 20, input),
        &stored.diff_id,
        to,
        std::io::BufWriter::with_capacity(1 << 20, out),
        0,
    );
    let desc = match desc {
        Ok(d) => d,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("re-encoding layer {}: {e}", stored.digest));
        }
    };
    inner
        .blobs
        .local()
        .commit(&tmp, &desc.digest)
        .map_err(|e| e.to_string())?;
    let variant = LayerInfo {
        diff_id: desc.diff_id,
        digest: desc.digest,
        media_type: desc.media_type,
        size: desc.size,
    };
    index.insert(key, variant.clone());
    crate::blobs::write_atomic(
        &path,
        &serde_json::to_vec(&index).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(variant)
}

/// The compression a push asks for (gzip when unspecified).
pub fn push_compression(c: i32) -> Compression {
    match common::Compression::try_from(c) {
        Ok(common::Compression::Zstd) => Compression::ZSTD,
        Ok(common::Compression::Uncompressed) => Compression::Uncompressed,
        _ => Compression::GZIP,
    }
}

/// Pushes `rec` to `destination` with layers in `compression`, reporting
/// each blob and the result.
pub async fn push(
    inner: &std::sync::Arc<Inner>,
    rec: &ImageRecord,
    destination: &str,
    compression: Compression,
    force: bool,
    tx: &mpsc::Sender<Result<build::PushProgress, Status>>,
) -> Result<(), Status> {
    let target = ImageRef::parse(destination)
        .map_err(|e| Status::invalid_argument(format!("push destination {destination:?}: {e}")))?;
    // A farm's layers may be in the shared store only: bring the image's
    // blobs here once, then stream them.
    crate::archive::localise(&inner.blobs, rec)
        .await
        .map_err(|e| Status::unavailable(format!("pushing {}: {e}", rec.manifest_digest)))?;
    let manifest_raw = inner
        .blobs
        .read(&rec.manifest_digest)
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&manifest_raw).map_err(|e| Status::internal(e.to_string()))?;
    let config_doc: serde_json::Value = serde_json::from_slice(
        &inner
            .blobs
            .read(&rec.config_digest)
            .await
            .map_err(|e| Status::internal(e.to_string()))?,
    )
    .map_err(|e| Status::internal(e.to_string()))?;
    let stored_layers = layers_of(&manifest, &config_doc).map_err(Status::internal)?;
    let mut changed = false;
    if let Some(layers) = manifest["layers"].as_array_mut() {
        for (l, stored) in layers.iter_mut().zip(stored_layers) {
            // As BuildKit without force-compression: only layers a client
            // might not read (zstd) are converted; others stay as they are.
            let kind = kind_of(&stored.media_type);
            if kind == compression.kind() || (!force && kind != CompressionKind::Zstd) {
                continue;
            }
            let _ = tx
                .send(Ok(progress(
                    &stored.digest,
                    build::PushPhase::Compressing,
                    stored.size,
                )))
                .await;
            let (inner2, stored2) = (std::sync::Arc::clone(inner), stored.clone());
            let v =
                tokio::task::spawn_blocking(move || layer_variant(&inner2, &stored2, compression))
                    .await
                    .map_err(|e| Status::internal(e.to_string()))?
                    .map_err(Status::internal)?;
            l["mediaType"] = serde_json::json!(v.media_type);
            l["digest"] = serde_json::json!(v.digest);
            l["size"] = serde_json::json!(v.size);
            changed = true;
        }
    }
    let manifest_raw = if changed {
        serde_json::to_vec(&manifest).map_err(|e| Status::internal(e.to_string()))?
    } else {
        manifest_raw
    };
    let media_type = manifest["mediaType"]
        .as_str()
        .unwrap_or(crate::image::OCI_MANIFEST)
        .to_string();
    let mut descs: Vec<Descriptor> = serde_json::from_value(manifest["layers"].clone())
        .map_err(|e| Status::internal(format!("manifest layers: {e}")))?;
    let config: Descriptor = serde_json::from_value(manifest["config"].clone())
        .map_err(|e| Status::internal(format!("manifest config: {e}")))?;
    descs.push(config);
    for d in descs {
        let digest = d.digest().to_string();
        let size = d.size();
        let path = inner
            .blobs
            .local()
            .path(&digest)
            .map_err(|e| Status::internal(e.to_string()))?;
        if !path.is_file() {
            return Err(Status::failed_precondition(format!(
                "blob {digest} of {} is not in the store",
                rec.manifest_digest
            )));
        }
        let source = if size < (1 << 20) {
            BlobSource::Bytes(Bytes::from(
                std::fs::read(&path).map_err(|e| Status::internal(e.to_string()))?,
            ))
        } else {
            BlobSource::File(path)
        };
        let _ = tx
            .send(Ok(progress(&digest, build::PushPhase::Pushing, size)))
            .await;
        let outcome = inner
            .registry
            .push_blob(
                &target,
                &BlobUpload {
                    descriptor: d,
                    source,
                    mount_from: None,
                },
            )
            .await
            .map_err(|e| Status::unavailable(format!("pushing {digest} to {destination}: {e}")))?;
        let phase = match outcome {
            BlobPushOutcome::AlreadyPresent => build::PushPhase::Exists,
            BlobPushOutcome::Mounted { .. } => build::PushPhase::Mounted,
            BlobPushOutcome::Uploaded { .. } => build::PushPhase::Pushed,
        };
        let _ = tx.send(Ok(progress(&digest, phase, size))).await;
    }
    let digest = inner
        .registry
        .push_manifest(&target, &manifest_raw, &media_type)
        .await
        .map_err(|e| Status::unavailable(format!("pushing the manifest to {destination}: {e}")))?;
    let _ = tx
        .send(Ok(build::PushProgress {
            progress: Some(build::push_progress::Progress::Complete(
                build::PushComplete {
                    destination: target.to_string(),
                    manifest_digest: digest.to_string(),
                    size: rec.size,
                },
            )),
        }))
        .await;
    Ok(())
}
