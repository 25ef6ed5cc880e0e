//! `UploadBlobs`: a client's build context, stored while it streams in.
//!
//! Every blob that is complete — a small file arrives whole in one chunk,
//! a big one with its last chunk — is stored by a task of its own:
//! verified and synced into a temp file, published to the shared store,
//! then made visible in the local directory ([`Blobs::put_whole`],
//! [`Blobs::commit_staged`]).
//! Up to [`IN_FLIGHT`] such tasks run while the stream keeps being read,
//! so the shared store's round trips and the disk's syncs of thousands of
//! small files overlap instead of adding up (concurrent syncs also share
//! the filesystem's journal commits). The answer waits for all of them:
//! every blob it reports as stored is durable, locally and in the shared
//! store, before the client can start the build that needs it.
//!
//! [`Blobs::put_whole`]: crate::blobs::Blobs::put_whole
//! [`Blobs::commit_staged`]: crate::blobs::Blobs::commit_staged

use super::blob::status as blob_status;
use super::request::size_text;
use crate::Inner;
use crate::blobs::{BlobError, BlobWriter, blocking, digest_hex};
use futures::StreamExt as _;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use strata_proto::build::v1 as build;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tonic::{Status, Streaming};
use tracing::Instrument as _;

/// Blobs of one upload being stored at once. Each holds at most one
/// chunk (1 MiB) in memory, and the stream waits while all are busy.
const IN_FLIGHT: usize = 32;

/// Stores the blobs of `stream`; answers once every one is stored or has
/// failed. A malformed digest fails the whole call (INVALID_ARGUMENT);
/// other failures are reported per blob.
pub(super) async fn upload_blobs(
    inner: &Arc<Inner>,
    mut stream: Streaming<build::UploadBlobsRequest>,
) -> Result<build::UploadBlobsResponse, Status> {
    let mut upload = Upload {
        limit: inner.config.max_context_bytes,
        stored: 0,
        inner: Arc::clone(inner),
        permits: Arc::new(Semaphore::new(IN_FLIGHT)),
        tasks: JoinSet::new(),
        open: BTreeMap::new(),
        failed: BTreeSet::new(),
        results: Vec::new(),
    };
    let mut received = 0u64;
    // Dropped by tonic when the client goes away, the tasks are aborted
    // with the set: a blob is then either fully stored or not at all, and
    // no temp file is left (see Staged and Upload's Drop).
    while let Some(msg) = stream.next().await {
        for chunk in msg?.chunks {
            received += chunk.data.len() as u64;
            upload.chunk(chunk).await?;
        }
        upload.collect_finished();
    }
    let mut results = upload.finish().await;
    inner.metrics.context_bytes.inc_by(received);
    results.sort_by(|a, b| a.digest.cmp(&b.digest));
    Ok(build::UploadBlobsResponse {
        results,
        bytes_received: received,
    })
}

/// One `UploadBlobs` call in progress.
struct Upload {
    /// The most one call, or one blob, may store.
    limit: u64,
    /// Bytes of this call taken to be stored so far.
    stored: u64,
    inner: Arc<Inner>,
    permits: Arc<Semaphore>,
    tasks: JoinSet<build::BlobUploadResult>,
    /// Big blobs whose last chunk has not come yet.
    open: BTreeMap<String, BlobWriter>,
    /// Blobs whose first error is reported: their other chunks are dropped.
    failed: BTreeSet<String>,
    results: Vec<build::BlobUploadResult>,
}

impl Upload {
    async fn chunk(&mut self, c: build::UploadChunk) -> Result<(), Status> {
        digest_hex(&c.digest).map_err(blob_status)?;
        if self.failed.contains(&c.digest) {
            return Ok(());
        }
        let len = c.data.len() as u64;
        // The size the client announces stops a blob at its first chunk;
        // the bytes it sends, one that announced less.
        let end = c.offset.saturating_add(len);
        if c.total_size.max(end) > self.limit {
            if let Some(w) = self.open.remove(&c.digest) {
                w.abort();
            }
            let size = if c.total_size >= end {
                format!("it holds {}", size_text(c.total_size))
            } else {
                "it is bigger".to_string()
            };
            let error = format!(
                "{size}, more than this scheduler's limit of {} for one blob (--max-context-bytes); add it to .dockerignore if the build does not need it",
                size_text(self.limit)
            );
            return self.fail_with(c.digest, error);
        }
        self.stored += len;
        if self.stored > self.limit {
            return Err(Status::resource_exhausted(format!(
                "the upload passed this scheduler's limit of {} for a build context (--max-context-bytes) at blob {}; add what the build does not need to .dockerignore",
                size_text(self.limit),
                c.digest
            )));
        }
        if c.offset == 0 && c.last && !self.open.contains_key(&c.digest) {
            let (digest, data) = (c.digest, c.data);
            return self
                .spawn(digest.clone(), move |inner| async move {
                    let blobs = &inner.blobs;
                    if blobs.local().has(&digest) {
                        // Another upload stored it meanwhile; make sure
                        // the shared store has it too (a HEAD).
                        return blobs.publish(&digest).await;
                    }
                    blobs.put_whole(&digest, data.into()).await
                })
                .await;
        }
        let writer = match self.open.remove(&c.digest) {
            Some(w) => w,
            None => {
                let inner = Arc::clone(&self.inner);
                let d = c.digest.clone();
                match blocking(&c.digest, move || inner.blobs.local().writer(&d)).await {
                    Ok(w) => w,
                    Err(e) => return self.fail(c.digest, e),
                }
            }
        };
        let (offset, data) = (c.offset, c.data);
        let written = blocking(&c.digest, move || {
            let mut w = writer;
            match w.write_at(offset, &data) {
                Ok(()) => Ok(w),
                Err(e) => {
                    w.abort();
                    Err(e)
                }
            }
        })
        .await;
        let writer = match written {
            Ok(w) => w,
            Err(e) => return self.fail(c.digest, e),
        };
        if !c.last {
            self.open.insert(c.digest, writer);
            return Ok(());
        }
        self.spawn(c.digest, move |inner| async move {
            inner.blobs.finish(writer).await.map(|_| ())
        })
        .await
    }

    /// Runs `store` as a task once one of the [`IN_FLIGHT`] slots is free.
    async fn spawn<F, Fut>(&mut self, digest: String, store: F) -> Result<(), Status>
    where
        F: FnOnce(Arc<Inner>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), BlobError>> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| Status::internal("the upload's task slots were closed"))?;
        let inner = Arc::clone(&self.inner);
        self.tasks.spawn(
            async move {
                let stored = store(inner).await;
                drop(permit);
                build::BlobUploadResult {
                    ok: stored.is_ok(),
                    error: stored.err().map(|e| e.to_string()).unwrap_or_default(),
                    digest,
                }
            }
            .in_current_span(),
        );
        Ok(())
    }

    fn fail(&mut self, digest: String, e: BlobError) -> Result<(), Status> {
        self.fail_with(digest, e.to_string())
    }

    /// Reports `digest` as failed with `error`; its later chunks are dropped.
    fn fail_with(&mut self, digest: String, error: String) -> Result<(), Status> {
        self.failed.insert(digest.clone());
        self.results.push(build::BlobUploadResult {
            digest,
            ok: false,
            error,
        });
        Ok(())
    }

    /// Takes the results of the tasks that are done.
    fn collect_finished(&mut self) {
        while let Some(done) = self.tasks.try_join_next() {
            self.results.push(joined(done));
        }
    }

    /// Waits for every task; reports blobs whose last chunk never came.
    async fn finish(&mut self) -> Vec<build::BlobUploadResult> {
        for (digest, w) in std::mem::take(&mut self.open) {
            w.abort();
            self.results.push(build::BlobUploadResult {
                digest,
                ok: false,
                error: "the upload ended before the blob's last chunk".into(),
            });
        }
        while let Some(done) = self.tasks.join_next().await {
            self.results.push(joined(done));
        }
        std::mem::take(&mut self.results)
    }
}

impl Drop for Upload {
    /// A failed or abandoned call leaves no temp files of big blobs.
    fn drop(&mut self) {
        for (_, w) in std::mem::take(&mut self.open) {
            w.abort();
        }
    }
}

/// A finished task's result; re-raises a panic.
fn joined(
    done: Result<build::BlobUploadResult, tokio::task::JoinError>,
) -> build::BlobUploadResult {
    done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}
