//! Streaming an exported archive to the client.

use super::blob::read_chunks;
use sha2::{Digest, Sha256};
use strata_proto::build::v1 as build;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// Whether `s` names an image by id rather than by name.
pub(super) fn looks_like_id(s: &str) -> bool {
    let h = s.strip_prefix("sha256:").unwrap_or(s);
    h.len() >= 12 && h.chars().all(|c| c.is_ascii_hexdigit())
}

/// Streams a finished archive; its sha256, computed on the way, goes with
/// the last chunk.
pub(super) fn archive_chunks(
    file: std::fs::File,
) -> ReceiverStream<Result<build::ExportImageChunk, Status>> {
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut hasher = Sha256::new();
    read_chunks(file, 0, move |offset, data, last| {
        hasher.update(&data);
        let archive_digest = if last {
            format!("sha256:{}", hex::encode(hasher.clone().finalize()))
        } else {
            String::new()
        };
        build::ExportImageChunk {
            offset,
            data,
            total_size: total,
            archive_digest,
        }
    })
}
