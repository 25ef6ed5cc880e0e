//! Moving blobs between the worker's local store and the scheduler's
//! `BlobService`: fetch what a job needs and the store lacks (verified
//! before it appears under its digest), upload what a job produced unless
//! the scheduler has it.

use crate::store::Store;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::sync::Arc;
use strata_proto::worker::v1 as wire;
use strata_proto::worker::v1::blob_service_client::BlobServiceClient;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// Blob transfer with the scheduler.
#[derive(Clone)]
pub struct RemoteBlobs {
    client: BlobServiceClient<Channel>,
    store: Arc<Store>,
}

impl RemoteBlobs {
    /// Blobs over `channel`, into and out of `store`.
    pub fn new(channel: Channel, store: Arc<Store>) -> Self {
        Self {
            client: BlobServiceClient::new(channel)
                .max_decoding_message_size(strata_proto::MAX_MESSAGE_SIZE)
                .max_encoding_message_size(strata_proto::MAX_MESSAGE_SIZE),
            store,
        }
    }

    /// Makes sure blob `digest` is in the local store; returns whether it
    /// was downloaded.
    pub async fn fetch(&self, digest: &str) -> Result<bool, String> {
        if self.store.has_blob(digest) {
            return Ok(false);
        }
        let mut stream = self
            .client
            .clone()
            .read_blob(wire::ReadBlobRequest {
                digest: digest.to_string(),
                offset: 0,
            })
            .await
            .map_err(|e| format!("fetching {digest}: {}", e.message()))?
            .into_inner();
        let tmp = self.store.temp_path("fetch");
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        let mut hasher = Sha256::new();
        let result = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| format!("fetching {digest}: {}", e.message()))?;
                hasher.update(&chunk.data);
                file.write_all(&chunk.data)
                    .await
                    .map_err(|e| format!("{}: {e}", tmp.display()))?;
            }
            file.flush().await.map_err(|e| e.to_string())?;
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            if actual != digest {
                return Err(format!("fetching {digest}: the content hashes to {actual}"));
            }
            self.store
                .commit_blob(&tmp, digest)
                .map_err(|e| e.to_string())?;
            Ok(true)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    /// Uploads blob `digest` from the local store unless the scheduler has
    /// it; returns the bytes sent.
    pub async fn upload(&self, digest: &str) -> Result<u64, String> {
        let present = self
            .client
            .clone()
            .stat_blobs(wire::StatBlobsRequest {
                digests: vec![digest.to_string()],
            })
            .await
            .map_err(|e| format!("checking {digest}: {}", e.message()))?
            .into_inner()
            .present;
        if present.iter().any(|p| p.digest == digest) {
            return Ok(0);
        }
        let path = self.store.blob_path(digest).map_err(|e| e.to_string())?;
        let mut file =
            std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let total = file.metadata().map(|m| m.len()).unwrap_or(0);
        let (tx, rx) = mpsc::channel::<wire::BlobData>(4);
        let d = digest.to_string();
        let reader = tokio::task::spawn_blocking(move || {
            let mut offset = 0u64;
            loop {
                let mut buf = vec![0u8; 1 << 20];
                let mut n = 0;
                while n < buf.len() {
                    match file.read(&mut buf[n..]) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) => return Err(e.to_string()),
                    }
                }
                buf.truncate(n);
                let last = offset + n as u64 >= total;
                let chunk = wire::BlobData {
                    digest: d.clone(),
                    offset,
                    data: buf,
                    total_size: total,
                    last,
                };
                if tx.blocking_send(chunk).is_err() || last {
                    return Ok(());
                }
                offset += n as u64;
            }
        });
        let r = self
            .client
            .clone()
            .write_blob(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(|e| format!("uploading {digest}: {}", e.message()))?
            .into_inner();
        reader
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("reading {digest}: {e}"))?;
        Ok(if r.existed { 0 } else { total })
    }
}
