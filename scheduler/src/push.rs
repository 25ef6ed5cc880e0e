//! `strata push`: an image's blobs streamed from the store to a registry,
//! then its manifest.
//!
//! A registry push asks for gzip unless told otherwise, as `docker build
//! --push` and BuildKit do (runtimes older than containerd 1.5 / Docker 23
//! read no zstd): the layers strata built (zstd) are converted, base
//! layers stored in another compression stay as they came unless
//! `force_compression` asks for every layer. A converted layer (gzip in
//! parallel on all cores, its diffID checked on the way) is converted
//! once: it is kept in the store and indexed (`variants/<diffID>/<kind>`
//! beside the cache records, so every scheduler of a farm reuses it), and
//! later pushes send the kept bytes. The manifest then names the variants
//! (same config, same image ID, another manifest digest). With
//! `compression=zstd` every layer goes up exactly as stored and the
//! manifest's exact bytes are pushed, so the pushed digest is the local
//! one.
//!
//! Each blob is pushed only if the target repository lacks it: the
//! registry is asked first (HEAD), then asked to mount it from another
//! repository of the same registry known to hold it ([`crate::origins`]:
//! where base images were pulled from and images pushed to), and only then
//! are its bytes read — from the local directory, else streamed from the
//! shared store — and uploaded. A layer the registry has is never fetched.

use crate::Inner;
use crate::blobs::BlobError;
use crate::image::{LayerInfo, layers_of};
use crate::images::ImageRecord;
use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use oci_spec::image::Descriptor;
use std::collections::BTreeMap;
use std::sync::Arc;
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
                mounted_from: String::new(),
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

/// The compression a push or export asks for; `None` (unspecified) keeps
/// every layer as stored.
pub fn push_compression(c: i32) -> Option<Compression> {
    match common::Compression::try_from(c) {
        Ok(common::Compression::Gzip) => Some(Compression::GZIP),
        Ok(common::Compression::Zstd) => Some(Compression::ZSTD),
        Ok(common::Compression::Uncompressed) => Some(Compression::Uncompressed),
        _ => None,
    }
}

/// The compression a registry push asks for: gzip unless the request
/// names one, as `docker build --push` and BuildKit.
pub fn registry_compression(c: i32) -> Compression {
    push_compression(c).unwrap_or(Compression::GZIP)
}

fn kind_name(kind: CompressionKind) -> &'static str {
    match kind {
        CompressionKind::Zstd => "zstd",
        CompressionKind::Gzip => "gzip",
        CompressionKind::Uncompressed => "tar",
    }
}

fn variant_key(stored: &LayerInfo, to: Compression) -> String {
    format!("variants/{}/{}", stored.diff_id, kind_name(to.kind()))
}

/// The farm's kept copy of layer `stored` compressed as `to`
/// (`variants/<diffID>/<kind>` in the durable store), if its blob is
/// there.
async fn kept_variant(
    inner: &Arc<Inner>,
    stored: &LayerInfo,
    to: Compression,
) -> Option<LayerInfo> {
    let raw = inner
        .blobs
        .durable()
        .get_object(&variant_key(stored, to))
        .await
        .ok()??;
    let v = serde_json::from_slice::<LayerInfo>(&raw).ok()?;
    inner.blobs.has(&v.digest).await.then_some(v)
}

/// Layer `stored` re-encoded as `to` ([`layer_variant`], which needs the
/// stored layer's bytes locally), published and recorded as the farm's
/// kept copy.
async fn shared_variant(
    inner: &Arc<Inner>,
    stored: &LayerInfo,
    to: Compression,
) -> Result<LayerInfo, String> {
    let durable = inner.blobs.durable();
    let key = variant_key(stored, to);
    inner
        .blobs
        .ensure_local(&stored.digest)
        .await
        .map_err(|e| format!("layer {}: {e}", stored.digest))?;
    let (inner2, stored2) = (Arc::clone(inner), stored.clone());
    let v = tokio::task::spawn_blocking(move || layer_variant(&inner2, &stored2, to))
        .await
        .map_err(|e| e.to_string())??;
    inner.blobs.publish(&v.digest).await.map_err(|e| {
        format!(
            "storing the {} copy of {}: {e}",
            kind_name(to.kind()),
            stored.digest
        )
    })?;
    let record = serde_json::to_vec(&v).map_err(|e| e.to_string())?;
    if let Err(e) = durable.put_object(&key, Bytes::from(record)).await {
        tracing::warn!("recording {key}: {e}");
    }
    Ok(v)
}

/// Opens blob `digest` for an upload, telling the client it is being
/// pushed: the local file, else a verified stream from the shared store.
fn open_blob(
    inner: &Arc<Inner>,
    digest: &str,
    size: u64,
    tx: &mpsc::Sender<Result<build::PushProgress, Status>>,
) -> BlobSource {
    let (inner, digest, tx) = (Arc::clone(inner), digest.to_string(), tx.clone());
    BlobSource::Lazy(Arc::new(move || {
        let (inner, digest, tx) = (Arc::clone(&inner), digest.clone(), tx.clone());
        Box::pin(async move {
            let _ = tx
                .send(Ok(progress(&digest, build::PushPhase::Pushing, size)))
                .await;
            let missing = || {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("blob {digest} is not in the store"),
                )
            };
            if inner.blobs.local().has(&digest) {
                let path = inner
                    .blobs
                    .local()
                    .path(&digest)
                    .map_err(std::io::Error::other)?;
                let file = tokio::fs::File::open(&path).await?;
                let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
                return Ok(stream.boxed());
            }
            let Some(shared) = inner.blobs.shared() else {
                return Err(missing());
            };
            let stream = shared.get(&digest, 0).await.map_err(|e| match e {
                BlobError::Missing(_) => missing(),
                e => std::io::Error::other(e.to_string()),
            })?;
            Ok(stream
                .map_err(|e| std::io::Error::other(e.to_string()))
                .boxed())
        })
    }))
}

/// Pushes one blob to `target` unless the registry has it or can mount
/// it; reports its phases.
async fn push_one(
    inner: &Arc<Inner>,
    target: &ImageRef,
    descriptor: Descriptor,
    tx: &mpsc::Sender<Result<build::PushProgress, Status>>,
) -> Result<(), Status> {
    let digest = descriptor.digest().to_string();
    let size = descriptor.size();
    let _ = tx
        .send(Ok(progress(&digest, build::PushPhase::Preparing, size)))
        .await;
    let mount_from = crate::origins::sources(&*inner.blobs.durable(), target, &digest)
        .await
        .into_iter()
        .next();
    let upload = BlobUpload {
        source: open_blob(inner, &digest, size, tx),
        descriptor,
        mount_from,
    };
    let outcome = inner
        .registry
        .push_blob(target, &upload)
        .await
        .map_err(|e| Status::unavailable(format!("pushing {digest} to {target}: {e}")))?;
    let mut done = match &outcome {
        BlobPushOutcome::AlreadyPresent => progress(&digest, build::PushPhase::Exists, size),
        BlobPushOutcome::Mounted { .. } => progress(&digest, build::PushPhase::Mounted, size),
        BlobPushOutcome::Uploaded { .. } => progress(&digest, build::PushPhase::Pushed, size),
    };
    if let (BlobPushOutcome::Mounted { from }, Some(build::push_progress::Progress::Blob(b))) =
        (outcome, done.progress.as_mut())
    {
        b.mounted_from = from;
    }
    let _ = tx.send(Ok(done)).await;
    Ok(())
}

/// At most this many blobs of one image go up at once.
const PUSH_CONCURRENCY: usize = 3;

/// Pushes `rec` to `destination`: layers as stored, or converted to
/// `compression` (see the module doc); reports each blob and the result.
pub async fn push(
    inner: &Arc<Inner>,
    rec: &ImageRecord,
    destination: &str,
    compression: Option<Compression>,
    force: bool,
    tx: &mpsc::Sender<Result<build::PushProgress, Status>>,
) -> Result<(), Status> {
    let target = ImageRef::parse(destination)
        .map_err(|e| Status::invalid_argument(format!("push destination {destination:?}: {e}")))?;
    let unavailable =
        |e: BlobError| Status::unavailable(format!("pushing {}: {e}", rec.manifest_digest));
    // The manifest and config are small: read them (fetched once into the
    // local directory); layers are read only if they must be uploaded.
    let manifest_raw = inner
        .blobs
        .read(&rec.manifest_digest)
        .await
        .map_err(unavailable)?;
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&manifest_raw).map_err(|e| Status::internal(e.to_string()))?;
    let config_doc: serde_json::Value = serde_json::from_slice(
        &inner
            .blobs
            .read(&rec.config_digest)
            .await
            .map_err(unavailable)?,
    )
    .map_err(|e| Status::internal(e.to_string()))?;
    let stored_layers = layers_of(&manifest, &config_doc).map_err(Status::internal)?;
    let mut changed = false;
    if let Some(to) = compression
        && let Some(layers) = manifest["layers"].as_array_mut()
    {
        for (l, stored) in layers.iter_mut().zip(stored_layers) {
            // As BuildKit without force-compression: the layers strata
            // built (zstd) are converted; base layers stay as they came.
            let kind = kind_of(&stored.media_type);
            if kind == to.kind() || (!force && kind != CompressionKind::Zstd) {
                continue;
            }
            // Converted once: a kept copy goes up as it is.
            let v = match kept_variant(inner, &stored, to).await {
                Some(v) => v,
                None => {
                    let _ = tx
                        .send(Ok(progress(
                            &stored.digest,
                            build::PushPhase::Compressing,
                            stored.size,
                        )))
                        .await;
                    shared_variant(inner, &stored, to).await.map_err(|e| {
                        Status::internal(format!("converting layer {}: {e}", stored.digest))
                    })?
                }
            };
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
    let mut seen = std::collections::HashSet::new();
    descs.retain(|d| seen.insert(d.digest().to_string()));
    let digests: Vec<String> = descs.iter().map(|d| d.digest().to_string()).collect();
    futures::stream::iter(descs)
        .map(|d| push_one(inner, &target, d, tx))
        .buffered(PUSH_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    let digest = inner
        .registry
        .push_manifest(&target, &manifest_raw, &media_type)
        .await
        .map_err(|e| Status::unavailable(format!("pushing the manifest to {destination}: {e}")))?;
    // Later pushes to this registry mount these blobs from here.
    crate::origins::record(&*inner.blobs.durable(), &target, &digests).await;
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

#[cfg(test)]
mod tests {
    use super::{Compression, common, registry_compression};
    use strata_oci::layer::CompressionKind;

    #[test]
    fn a_registry_push_is_gzip_unless_asked_otherwise() {
        let kind = |c: common::Compression| registry_compression(c as i32).kind();
        assert_eq!(
            kind(common::Compression::Unspecified),
            CompressionKind::Gzip
        );
        assert_eq!(kind(common::Compression::Zstd), CompressionKind::Zstd);
        assert_eq!(
            kind(common::Compression::Uncompressed),
            Compression::Uncompressed.kind()
        );
    }
}
