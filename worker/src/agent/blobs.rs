//! Moving blobs between the worker's local store and the farm's blob
//! store: the shared S3 store directly when the scheduler advertises one
//! (with the worker's own credentials from its environment), else the
//! scheduler's `BlobService`. Fetch what a job needs and the store lacks
//! (verified before it appears under its digest), upload what a job
//! produced unless the farm has it.

use super::AgentStats;
use crate::store::Store;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::sync::Arc;
use strata_proto::worker::v1 as wire;
use strata_proto::worker::v1::blob_service_client::BlobServiceClient;
use strata_store::{BlobStore, S3Blobs, S3Config};
use strata_telemetry::Outgoing;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Blobs fetched at once for one job.
pub const FETCH_CONCURRENCY: usize = 32;

/// The scheduler's BlobService, with the worker's token on every call.
type SchedulerBlobs = BlobServiceClient<InterceptedService<Channel, Outgoing>>;

#[derive(Clone)]
enum Via {
    Scheduler(SchedulerBlobs),
    Shared(Arc<dyn BlobStore>),
}

/// Blob transfer with the farm.
#[derive(Clone)]
pub struct RemoteBlobs {
    via: Via,
    store: Arc<Store>,
    stats: Arc<AgentStats>,
}

/// The shared store the scheduler advertises, if it is S3 and usable
/// from here.
fn shared_store(advert: Option<&wire::BlobStoreConfig>) -> Option<Arc<dyn BlobStore>> {
    let a = advert.filter(|a| a.kind == wire::BlobStoreKind::S3 as i32)?;
    let config = S3Config {
        endpoint: (!a.endpoint.is_empty()).then(|| a.endpoint.clone()),
        bucket: a.bucket.clone(),
        prefix: a.prefix.clone(),
        region: if a.region.is_empty() {
            S3Config::default().region
        } else {
            a.region.clone()
        },
        force_path_style: a.force_path_style,
        ..S3Config::default()
    };
    match S3Blobs::new(config) {
        Ok(s) => Some(Arc::new(s)),
        Err(e) => {
            tracing::warn!("cannot use the farm's S3 store ({e}); going through the scheduler");
            None
        }
    }
}

impl RemoteBlobs {
    /// Blobs over `channel` or the advertised shared store, into and out
    /// of `store`, counted in `stats`.
    pub fn new(
        channel: Channel,
        outgoing: Outgoing,
        store: Arc<Store>,
        advert: Option<&wire::BlobStoreConfig>,
        stats: Arc<AgentStats>,
    ) -> Self {
        let via = match shared_store(advert) {
            Some(s) => Via::Shared(s),
            None => Via::Scheduler(
                BlobServiceClient::with_interceptor(channel, outgoing)
                    .max_decoding_message_size(strata_proto::MAX_MESSAGE_SIZE)
                    .max_encoding_message_size(strata_proto::MAX_MESSAGE_SIZE),
            ),
        };
        Self { via, store, stats }
    }

    /// Where blobs go, for the log.
    pub fn describe(&self) -> String {
        match &self.via {
            Via::Scheduler(_) => "through the scheduler".into(),
            Via::Shared(s) => s.describe(),
        }
    }

    /// Makes sure every blob of `digests` is in the local store, fetching
    /// up to [`FETCH_CONCURRENCY`] at once (a context of many small files
    /// is mostly round trips).
    pub async fn fetch_all(&self, digests: &[String]) -> Result<(), String> {
        // Owned futures: borrowing closures trip the compiler's
        // higher-ranked lifetime check in spawned tasks.
        let mut fetches = futures::stream::iter(digests.to_vec())
            .map(|d| {
                let this = self.clone();
                async move { this.fetch(&d).await }
            })
            .buffer_unordered(FETCH_CONCURRENCY);
        while let Some(r) = fetches.next().await {
            r?;
        }
        Ok(())
    }

    /// Makes sure blob `digest` is in the local store; returns whether it
    /// was downloaded.
    pub async fn fetch(&self, digest: &str) -> Result<bool, String> {
        if self.store.has_blob(digest) {
            return Ok(false);
        }
        // Another job may be fetching it (stages starting together on one
        // parent): wait for that download instead of making another.
        let _one = self.store.lock_fetch(digest).await;
        if self.store.has_blob(digest) {
            return Ok(false);
        }
        let size = match &self.via {
            Via::Scheduler(client) => self.fetch_from_scheduler(client, digest).await?,
            Via::Shared(shared) => {
                let tmp = self.store.temp_path("fetch");
                let size = shared
                    .get_to_file(digest, &tmp)
                    .await
                    .map_err(|e| format!("fetching {digest}: {e}"))?;
                if let Err(e) = self.store.commit_blob(&tmp, digest) {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e.to_string());
                }
                size
            }
        };
        self.stats.blobs_fetched.inc();
        self.stats.bytes_fetched.inc_by(size);
        Ok(true)
    }

    async fn fetch_from_scheduler(
        &self,
        client: &SchedulerBlobs,
        digest: &str,
    ) -> Result<u64, String> {
        let mut stream = client
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
        let mut size = 0u64;
        let result = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| format!("fetching {digest}: {}", e.message()))?;
                hasher.update(&chunk.data);
                size += chunk.data.len() as u64;
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
            Ok(size)
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
        // Embedded, the scheduler's store is this one: the blob is synced
        // here, before the step reports, or a crash could leave a record
        // of it and a torn blob.
        if self.store.is_durable() {
            let (store, d) = (Arc::clone(&self.store), digest.to_string());
            tokio::task::spawn_blocking(move || store.settle(&d))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("storing {digest}: {e}"))?;
        }
        let client = match &self.via {
            Via::Scheduler(client) => client,
            Via::Shared(shared) => {
                let path = self.store.blob_path(digest).map_err(|e| e.to_string())?;
                let put = shared
                    .put_file(digest, &path)
                    .await
                    .map_err(|e| format!("uploading {digest}: {e}"))?;
                return Ok(if put.existed { 0 } else { put.size });
            }
        };
        let present = client
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
        let r = client
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

#[cfg(test)]
mod tests {
    use super::*;
    use strata_store::FsBlobs;

    #[tokio::test]
    async fn jobs_wanting_one_blob_at_once_download_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let farm = FsBlobs::open(dir.path().join("farm")).unwrap();
        let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
        let digest = farm.put_bytes(data.into()).await.unwrap();
        let store = Arc::new(Store::open(dir.path().join("worker")).unwrap());
        let stats = Arc::new(AgentStats::new());
        let blobs = RemoteBlobs {
            via: Via::Shared(Arc::new(farm)),
            store: Arc::clone(&store),
            stats: Arc::clone(&stats),
        };
        // Eight jobs starting together on the same parent layer.
        let fetched = futures::future::join_all((0..8).map(|_| blobs.fetch(&digest))).await;
        let downloads = fetched
            .into_iter()
            .map(|r| r.unwrap())
            .filter(|&d| d)
            .count();
        assert_eq!(downloads, 1, "one job downloads, the others find it");
        assert_eq!(stats.blobs_fetched.get(), 1);
        assert_eq!(stats.bytes_fetched.get(), 8 << 20);
        assert!(store.has_blob(&digest));
    }
}
