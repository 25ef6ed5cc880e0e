//! `BlobService`: workers read and write blobs through the scheduler when
//! it is their blob store.

use crate::Inner;
use crate::blobs::{BlobError, Blobs as Store};
use futures::StreamExt;
use std::io::{Read, Seek, SeekFrom};
use std::pin::Pin;
use std::sync::Arc;
use strata_proto::worker::v1 as wire;
use strata_proto::worker::v1::blob_service_server::BlobService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

const CHUNK: usize = 1 << 20;

/// The one mapping of blob store errors to gRPC codes. A client may retry
/// UNAVAILABLE (the shared store is down or throttling); the others need
/// a different request.
pub(crate) fn status(e: BlobError) -> Status {
    match e {
        BlobError::BadDigest(_)
        | BlobError::BadKey(_)
        | BlobError::Mismatch { .. }
        | BlobError::OutOfOrder { .. } => Status::invalid_argument(e.to_string()),
        BlobError::Missing(_) => Status::not_found(e.to_string()),
        BlobError::Backend { retryable, .. } if retryable => Status::unavailable(e.to_string()),
        BlobError::Io { .. } | BlobError::Backend { .. } => Status::internal(e.to_string()),
    }
}

/// Streams `file` from `offset` in chunks of 1 MiB made into messages by
/// `make(offset, data, last)`, reading on the blocking pool. A file of 0
/// bytes gives one empty, last chunk.
pub(crate) fn read_chunks<T: Send + 'static>(
    mut file: std::fs::File,
    offset: u64,
    mut make: impl FnMut(u64, Vec<u8>, bool) -> T + Send + 'static,
) -> ReceiverStream<Result<T, Status>> {
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        if let Err(e) = file.seek(SeekFrom::Start(offset)) {
            let _ = tx.blocking_send(Err(Status::internal(e.to_string())));
            return;
        }
        let mut at = offset;
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = match read_full(&mut file, &mut buf) {
                Ok(n) => n,
                Err(e) => {
                    let _ = tx.blocking_send(Err(Status::internal(e.to_string())));
                    return;
                }
            };
            buf.truncate(n);
            let last = at + n as u64 >= size;
            if tx.blocking_send(Ok(make(at, buf, last))).is_err() || last {
                return;
            }
            at += n as u64;
        }
    });
    ReceiverStream::new(rx)
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Writes one blob from a stream of chunks; returns (digest, size,
/// existed).
pub(crate) async fn write_stream(
    blobs: &Store,
    mut chunks: impl futures::Stream<Item = Result<wire::BlobData, Status>> + Unpin,
) -> Result<(String, u64, bool), Status> {
    let mut writer = None;
    while let Some(c) = chunks.next().await {
        let c = c?;
        if writer.is_none() {
            if let Some(size) = blobs.stat(&c.digest).await.map_err(status)? {
                return Ok((c.digest, size, true));
            }
            writer = Some(blobs.local().writer(&c.digest).map_err(status)?);
        }
        let w = writer.as_mut().expect("set above");
        if !c.digest.is_empty() && c.digest != w.digest() {
            let digest = w.digest().to_string();
            if let Some(w) = writer.take() {
                w.abort();
            }
            return Err(Status::invalid_argument(format!(
                "chunk for {} inside the write of {digest}",
                c.digest
            )));
        }
        if let Err(e) = w.write_at(c.offset, &c.data) {
            if let Some(w) = writer.take() {
                w.abort();
            }
            return Err(status(e));
        }
        if c.last {
            let w = writer.take().expect("set above");
            let digest = w.digest().to_string();
            let size = blobs.finish(w).await.map_err(status)?;
            return Ok((digest, size, false));
        }
    }
    if let Some(w) = writer {
        let digest = w.digest().to_string();
        w.abort();
        return Err(Status::invalid_argument(format!(
            "the write of {digest} ended without its last chunk"
        )));
    }
    Err(Status::invalid_argument("empty write"))
}

/// The service.
pub struct Blobs {
    inner: Arc<Inner>,
}

impl Blobs {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }
}

type ReadStream = Pin<Box<dyn futures::Stream<Item = Result<wire::BlobData, Status>> + Send>>;

#[tonic::async_trait]
impl BlobService for Blobs {
    async fn stat_blobs(
        &self,
        request: Request<wire::StatBlobsRequest>,
    ) -> Result<Response<wire::StatBlobsResponse>, Status> {
        let blobs = &self.inner.blobs;
        let stats: Vec<_> = futures::stream::iter(request.into_inner().digests)
            .map(|d| async move { blobs.stat(&d).await.map(|s| (d, s)) })
            .buffered(32)
            .collect()
            .await;
        let mut present = Vec::new();
        for s in stats {
            if let (digest, Some(size)) = s.map_err(status)? {
                present.push(wire::BlobStat { digest, size });
            }
        }
        Ok(Response::new(wire::StatBlobsResponse { present }))
    }

    type ReadBlobStream = ReadStream;

    async fn read_blob(
        &self,
        request: Request<wire::ReadBlobRequest>,
    ) -> Result<Response<Self::ReadBlobStream>, Status> {
        let r = request.into_inner();
        let path = self
            .inner
            .blobs
            .ensure_local(&r.digest)
            .await
            .map_err(status)?;
        let file = std::fs::File::open(&path)
            .map_err(|_| Status::not_found(format!("blob {} is not in the store", r.digest)))?;
        let total = file.metadata().map(|m| m.len()).unwrap_or(0);
        let digest = r.digest;
        let stream = read_chunks(file, r.offset, move |offset, data, last| wire::BlobData {
            digest: digest.clone(),
            offset,
            data,
            total_size: total,
            last,
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn write_blob(
        &self,
        request: Request<Streaming<wire::BlobData>>,
    ) -> Result<Response<wire::WriteBlobResponse>, Status> {
        let (digest, size, existed) = write_stream(&self.inner.blobs, request.into_inner()).await?;
        Ok(Response::new(wire::WriteBlobResponse {
            digest,
            size,
            existed,
        }))
    }
}
