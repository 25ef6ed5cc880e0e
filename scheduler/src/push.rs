//! `strata push`: an image's blobs streamed from the store to a registry
//! as they are (no recompression), skipped where the registry has them,
//! then its manifest's exact bytes, so the pushed digest is the local one.

use crate::Inner;
use crate::images::ImageRecord;
use bytes::Bytes;
use oci_spec::image::Descriptor;
use strata_oci::registry::{BlobPushOutcome, BlobSource, BlobUpload, ImageRef};
use strata_proto::build::v1 as build;
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

/// Pushes `rec` to `destination`, reporting each blob and the result.
pub async fn push(
    inner: &Inner,
    rec: &ImageRecord,
    destination: &str,
    tx: &mpsc::Sender<Result<build::PushProgress, Status>>,
) -> Result<(), Status> {
    let target = ImageRef::parse(destination)
        .map_err(|e| Status::invalid_argument(format!("push destination {destination:?}: {e}")))?;
    let manifest_raw = inner
        .blobs
        .read(&rec.manifest_digest)
        .map_err(|e| Status::internal(e.to_string()))?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&manifest_raw).map_err(|e| Status::internal(e.to_string()))?;
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
