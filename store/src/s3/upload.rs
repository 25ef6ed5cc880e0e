//! Uploads, each after a HEAD (a blob the bucket has is never sent
//! again): one conditional PUT for a small blob, hashed first; one PUT for
//! a medium one; a multipart upload for a large one, hashed while its
//! parts are in flight and completed only if the hash matches.
//!
//! Blob bodies go up unsigned (`UNSIGNED-PAYLOAD`; the headers are still
//! signed): a blob's key is its sha256, checked here before a PUT and
//! before a multipart upload completes, and checked again by every reader,
//! so signing the payload would only hash every byte twice more (once
//! here, once on the server). Named objects (records, pointers), which no
//! digest vouches for, keep their bodies signed ([`S3Blobs::put_named`]).

use super::{MAX_PARTS, MIB, S3Blobs, status_of};
use crate::{BlobError, Put, blocking, check_digest, io_err, sha256_of};
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use tracing::Instrument as _;

/// Blobs this small go up in one conditional PUT (`If-None-Match: *`,
/// which the server refuses with 412 if it has the blob): when another
/// writer stored it between our HEAD and our PUT, the PUT reports it
/// instead of writing it again.
const CONDITIONAL_PUT_MAX: u64 = MIB;

/// Bytes hashed on the async runtime rather than the blocking pool.
const INLINE_HASH_MAX: usize = 64 << 10;

impl S3Blobs {
    /// Whether a blob of `size` bytes goes up in one conditional PUT.
    fn conditional(&self, size: u64) -> bool {
        size <= CONDITIONAL_PUT_MAX && size < self.multipart_threshold
    }

    /// [`BlobStore::put_file`](crate::BlobStore::put_file).
    pub(super) async fn upload_file(&self, digest: &str, src: &Path) -> Result<Put, BlobError> {
        let key = self.blob_key(digest)?;
        let size = tokio::fs::metadata(src).await.map(|m| m.len());
        // A source that cannot be read is fine if the blob is there.
        if let Some(size) = self.head(&key).await? {
            return Ok(Put {
                size,
                existed: true,
            });
        }
        let size = size.map_err(io_err("reading", src))?;
        let size = if size == 0 || size < self.multipart_threshold {
            let path = src.to_path_buf();
            let (bytes, actual) = blocking(move || {
                let bytes = std::fs::read(&path).map_err(io_err("reading", &path))?;
                let actual = sha256_of(&bytes);
                Ok((Bytes::from(bytes), actual))
            })
            .await?;
            check_digest(digest, actual, bytes.len() as u64)?;
            let size = bytes.len() as u64;
            if self.conditional(size) {
                let existed = self.put_if_absent(&key, bytes).await?;
                return Ok(Put { size, existed });
            }
            self.put_single(&key, bytes).await?;
            size
        } else {
            let path = src.to_path_buf();
            let file =
                blocking(move || std::fs::File::open(&path).map_err(io_err("opening", &path)))
                    .await?;
            let parts = Parts::File {
                path: src.to_path_buf(),
                open: Some((file, Sha256::new())),
                size: 0,
            };
            self.put_multipart(&key, digest, parts, size).await?
        };
        Ok(Put {
            size,
            existed: false,
        })
    }

    /// [`BlobStore::put_bytes`](crate::BlobStore::put_bytes).
    pub(super) async fn upload_bytes(&self, bytes: Bytes) -> Result<String, BlobError> {
        // A small blob's hash costs microseconds: no trip to the blocking
        // pool (a context of 20,000 files makes as many of these calls).
        let digest = if bytes.len() <= INLINE_HASH_MAX {
            sha256_of(&bytes)
        } else {
            let hashed = bytes.clone();
            blocking(move || Ok(sha256_of(&hashed))).await?
        };
        let key = self.blob_key(&digest)?;
        let size = bytes.len() as u64;
        if self.head(&key).await?.is_some() {
            return Ok(digest);
        }
        if self.conditional(size) {
            self.put_if_absent(&key, bytes).await?;
            return Ok(digest);
        }
        if size == 0 || size < self.multipart_threshold {
            self.put_single(&key, bytes).await?;
        } else {
            self.put_multipart(&key, &digest, Parts::Bytes(bytes), size)
                .await?;
        }
        Ok(digest)
    }

    /// One PUT of the blob `bytes` as `key`, its body unsigned (the key is
    /// the body's sha256).
    async fn put_single(&self, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        self.put(key, bytes, false).await
    }

    /// One PUT of a named object (a record, a pointer: no digest names
    /// its body, and no reader checks one), its body signed.
    pub(super) async fn put_named(&self, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        self.put(key, bytes, true).await
    }

    async fn put(&self, key: &str, bytes: Bytes, sign_body: bool) -> Result<(), BlobError> {
        let len = bytes.len() as i64;
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(len)
            .body(SdkByteStream::from(bytes))
            .customize();
        let put = if sign_body {
            put
        } else {
            put.disable_payload_signing()
        };
        put.send()
            .await
            .map(|_| ())
            .map_err(|e| self.sdk_err("PUT", key, e))
    }

    /// One PUT of `bytes` as `key` unless the server has `key` already;
    /// returns whether it had.
    async fn put_if_absent(&self, key: &str, bytes: Bytes) -> Result<bool, BlobError> {
        let sent = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .if_none_match("*")
            .content_length(bytes.len() as i64)
            .body(SdkByteStream::from(bytes.clone()))
            .customize()
            .disable_payload_signing()
            .send()
            .await;
        match sent {
            Ok(_) => Ok(false),
            Err(e) if status_of(&e) == Some(412) => Ok(true),
            // Another conditional write of the key was under way (S3's
            // ConditionalRequestConflict), or the server does not do
            // conditional writes: ask, then write, the plain way.
            Err(e) if matches!(status_of(&e), Some(409 | 501)) => {
                if self.head(key).await?.is_some() {
                    return Ok(true);
                }
                self.put_single(key, bytes).await.map(|()| false)
            }
            Err(e) => Err(self.sdk_err("PUT", key, e)),
        }
    }

    /// Uploads `parts` as `key` in a multipart upload, completed only if
    /// everything went up and (for a file) it hashed to `digest`.
    async fn put_multipart(
        &self,
        key: &str,
        digest: &str,
        mut parts: Parts,
        size: u64,
    ) -> Result<u64, BlobError> {
        let part_size = self.part_size.max(size.div_ceil(MAX_PARTS));
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.sdk_err("CREATE MULTIPART", key, e))?;
        let Some(upload_id) = created.upload_id().map(str::to_string) else {
            return Err(BlobError::Backend {
                store: crate::BlobStore::describe(self),
                op: "CREATE MULTIPART",
                key: key.to_string(),
                detail: "the answer has no upload ID".into(),
                retryable: false,
            });
        };
        let uploaded = self
            .upload_parts(key, &upload_id, digest, &mut parts, part_size)
            .await;
        let completed = match uploaded {
            Ok((completed, total)) => self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(completed))
                        .build(),
                )
                .send()
                .await
                .map(|_| total)
                .map_err(|e| self.sdk_err("COMPLETE MULTIPART", key, e)),
            Err(e) => Err(e),
        };
        if completed.is_err() {
            let aborted = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
            if let Err(e) = aborted {
                // The put's own error is returned; this one would otherwise
                // be lost. The parts stay until a lifecycle rule removes
                // them, and are never visible as an object.
                let e = self.sdk_err("ABORT MULTIPART", key, e);
                tracing::warn!(upload_id, "{e}");
            }
        }
        completed
    }

    /// Reads `parts` once, uploading them `concurrency` at a time; returns
    /// them sorted by number, and the total size.
    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        digest: &str,
        parts: &mut Parts,
        part_size: u64,
    ) -> Result<(Vec<CompletedPart>, u64), BlobError> {
        let mut in_flight = tokio::task::JoinSet::new();
        let mut done = Vec::new();
        let fed = self
            .feed_parts(key, upload_id, parts, part_size, &mut in_flight, &mut done)
            .await
            .and_then(|total| match parts.finish() {
                Some((actual, size)) => check_digest(digest, actual, size).map(|()| total),
                None => Ok(total),
            });
        // Even after a failure, let the parts in flight land: one still
        // arriving after the abort could outlive it.
        let mut part_failed = None;
        while let Some(part) = in_flight.join_next().await {
            match joined(part) {
                Ok(part) => done.push(part),
                Err(e) => {
                    part_failed.get_or_insert(e);
                }
            }
        }
        let total = fed?;
        if let Some(e) = part_failed {
            return Err(e);
        }
        done.sort_by_key(|p| p.part_number());
        Ok((done, total))
    }

    /// Reads the parts in order and starts their uploads, waiting for one
    /// to finish whenever `concurrency` are in flight; returns the size.
    async fn feed_parts(
        &self,
        key: &str,
        upload_id: &str,
        parts: &mut Parts,
        part_size: u64,
        in_flight: &mut tokio::task::JoinSet<Result<CompletedPart, BlobError>>,
        done: &mut Vec<CompletedPart>,
    ) -> Result<u64, BlobError> {
        let mut number = 0i32;
        let mut total = 0u64;
        loop {
            let chunk = parts.next(part_size).await?;
            if chunk.is_empty() && number > 0 {
                return Ok(total);
            }
            let len = chunk.len() as u64;
            number += 1;
            total += len;
            while in_flight.len() >= self.concurrency {
                let Some(part) = in_flight.join_next().await else {
                    break;
                };
                done.push(joined(part)?);
            }
            let request = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(len as i64)
                .body(SdkByteStream::from(chunk))
                .customize()
                .disable_payload_signing();
            let (store, key) = (self.clone(), key.to_string());
            in_flight.spawn(
                async move {
                    let out = request
                        .send()
                        .await
                        .map_err(|e| store.sdk_err("PUT PART", &key, e))?;
                    Ok(CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag)
                        .build())
                }
                .in_current_span(),
            );
            if len < part_size {
                return Ok(total);
            }
        }
    }
}

/// A finished part upload's result; re-raises a panic.
fn joined(
    part: Result<Result<CompletedPart, BlobError>, tokio::task::JoinError>,
) -> Result<CompletedPart, BlobError> {
    part.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Where multipart parts come from.
enum Parts {
    /// A file, hashed as it is read (the hasher and file travel to the
    /// blocking pool and back for each part).
    File {
        path: PathBuf,
        open: Option<(std::fs::File, Sha256)>,
        size: u64,
    },
    /// Bytes whose digest is already known.
    Bytes(Bytes),
}

impl Parts {
    /// The next part, empty at the end.
    async fn next(&mut self, part_size: u64) -> Result<Bytes, BlobError> {
        match self {
            Parts::Bytes(bytes) => {
                let n = bytes.len().min(part_size as usize);
                Ok(bytes.split_to(n))
            }
            Parts::File { path, open, size } => {
                let (mut file, mut hasher) = open.take().expect("parts read after a failure");
                let p = path.clone();
                let (file, hasher, chunk) = blocking(move || {
                    let mut buf = Vec::with_capacity(part_size as usize);
                    (&mut file)
                        .take(part_size)
                        .read_to_end(&mut buf)
                        .map_err(io_err("reading", &p))?;
                    hasher.update(&buf);
                    Ok((file, hasher, buf))
                })
                .await?;
                *size += chunk.len() as u64;
                *open = Some((file, hasher));
                Ok(Bytes::from(chunk))
            }
        }
    }

    /// The digest and size of what was read, for a file.
    fn finish(&mut self) -> Option<(String, u64)> {
        match self {
            Parts::Bytes(_) => None,
            Parts::File { open, size, .. } => {
                let (_, hasher) = open.take()?;
                Some((format!("sha256:{}", hex::encode(hasher.finalize())), *size))
            }
        }
    }
}
