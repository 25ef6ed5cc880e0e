//! Downloads: a blob's body as a stream, verified against its digest when
//! read from the start.

use super::{MIB, S3Blobs, error_chain, not_found, status_of};
use crate::{BlobError, BlobStore as _, ByteStream, check_digest, io_err};
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use bytes::Bytes;
use futures::StreamExt as _;
use sha2::{Digest as _, Sha256};
use std::path::Path;
use tokio::io::AsyncWriteExt as _;

impl S3Blobs {
    /// The body of `key` from `offset` on; `None` if there is no such
    /// object.
    pub(super) async fn get_body(
        &self,
        key: &str,
        offset: u64,
    ) -> Result<Option<SdkByteStream>, BlobError> {
        let mut request = self.client.get_object().bucket(&self.bucket).key(key);
        if offset > 0 {
            request = request.range(format!("bytes={offset}-"));
        }
        match request.send().await {
            Ok(out) => Ok(Some(out.body)),
            // Asked from its end or past it: nothing more to read.
            Err(e) if offset > 0 && status_of(&e) == Some(416) => Ok(Some(SdkByteStream::new(
                aws_sdk_s3::primitives::SdkBody::empty(),
            ))),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(self.sdk_err("GET", key, e)),
        }
    }

    /// [`BlobStore::get`](crate::BlobStore::get).
    pub(super) async fn download(
        &self,
        digest: &str,
        offset: u64,
    ) -> Result<ByteStream, BlobError> {
        let key = self.blob_key(digest)?;
        let body = self
            .get_body(&key, offset)
            .await?
            .ok_or_else(|| BlobError::Missing(digest.to_string()))?;
        let first = Receiving {
            body,
            hasher: (offset == 0).then(Sha256::new),
            digest: digest.to_string(),
            size: offset,
            store: self.describe(),
            key,
        };
        let chunks =
            futures::stream::unfold(Some(first), |state| async move { state?.next().await });
        Ok(Box::pin(chunks))
    }

    /// [`BlobStore::get_to_file`](crate::BlobStore::get_to_file).
    pub(super) async fn download_to_file(
        &self,
        digest: &str,
        dest: &Path,
    ) -> Result<u64, BlobError> {
        let mut chunks = self.download(digest, 0).await?;
        let copied = async {
            let file = tokio::fs::File::create(dest)
                .await
                .map_err(io_err("creating", dest))?;
            let mut file = tokio::io::BufWriter::with_capacity(MIB as usize, file);
            let mut size = 0u64;
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk?;
                file.write_all(&chunk)
                    .await
                    .map_err(io_err("writing", dest))?;
                size += chunk.len() as u64;
            }
            file.flush().await.map_err(io_err("writing", dest))?;
            Ok(size)
        }
        .await;
        if copied.is_err() {
            let _ = tokio::fs::remove_file(dest).await;
        }
        copied
    }
}

/// A blob's body being read, hashed when read from the start.
struct Receiving {
    body: SdkByteStream,
    hasher: Option<Sha256>,
    digest: String,
    size: u64,
    store: String,
    key: String,
}

impl Receiving {
    /// The next chunk; `None` at the end of a good blob.
    async fn next(mut self) -> Option<(Result<Bytes, BlobError>, Option<Receiving>)> {
        match self.body.next().await {
            // Network reads are small (tens of KiB), so hashing each one
            // inline costs microseconds.
            Some(Ok(chunk)) => {
                if let Some(h) = self.hasher.as_mut() {
                    h.update(&chunk);
                }
                self.size += chunk.len() as u64;
                Some((Ok(chunk), Some(self)))
            }
            Some(Err(e)) => Some((
                Err(BlobError::Backend {
                    store: self.store,
                    op: "GET",
                    key: self.key,
                    detail: format!("reading the body: {}", error_chain(&e)),
                    retryable: true,
                }),
                None,
            )),
            None => {
                let actual = format!("sha256:{}", hex::encode(self.hasher?.finalize()));
                check_digest(&self.digest, actual, self.size)
                    .err()
                    .map(|e| (Err(e), None))
            }
        }
    }
}
