//! Pushing: blobs (HEAD first, then a cross-repository mount when the blob
//! is known to be in another repository of the registry, then an upload),
//! the config, the manifest and its tag.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt as _, TryStreamExt as _};
use oci_spec::image::{Descriptor, Digest, MediaType};

use super::error::RegistryError;
use super::manifest::{self, ManifestFormat};
use super::reference::{ImageRef, parse_digest};
use super::registry_client::{RegistryClient, Session};
use super::verify::{sha256_digest, verify_bytes};

/// At most this many blobs of one image go up at once.
const PUSH_CONCURRENCY: usize = 3;

/// Opens a blob's bytes as a stream; see [`BlobSource::Lazy`].
pub type OpenBlob = Arc<
    dyn Fn() -> BoxFuture<'static, std::io::Result<BoxStream<'static, std::io::Result<Bytes>>>>
        + Send
        + Sync,
>;

/// Where a blob's bytes come from.
#[derive(Clone)]
pub enum BlobSource {
    /// In memory (configs, small layers); `Vec<u8>` converts with `.into()`.
    Bytes(Bytes),
    /// A file, streamed (layers).
    File(PathBuf),
    /// Opened only when the registry neither has the blob nor can mount
    /// it, then streamed (from an object store, say, so a blob the
    /// registry has is never fetched). The stream must yield exactly the
    /// descriptor's bytes; a short or long stream fails the upload.
    Lazy(OpenBlob),
}

impl std::fmt::Debug for BlobSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes(b) => f.debug_tuple("Bytes").field(&b.len()).finish(),
            Self::File(p) => f.debug_tuple("File").field(p).finish(),
            Self::Lazy(_) => f.write_str("Lazy"),
        }
    }
}

/// One blob to push.
#[derive(Debug, Clone)]
pub struct BlobUpload {
    /// Its media type, digest and size.
    pub descriptor: Descriptor,
    /// Its bytes.
    pub source: BlobSource,
    /// A repository of the same registry known to hold it (the base
    /// image's), to mount from instead of uploading. The client also
    /// remembers what it pulled and pushed, so this is only needed for
    /// knowledge from elsewhere.
    pub mount_from: Option<String>,
}

/// What pushing one blob took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobPushOutcome {
    /// The registry had it already (HEAD answered 200); nothing was sent.
    AlreadyPresent,
    /// The registry linked it from another repository; nothing was sent.
    Mounted {
        /// The repository it was mounted from.
        from: String,
    },
    /// The bytes were uploaded.
    Uploaded {
        /// How many.
        bytes: u64,
    },
}

/// An image to push: a config and layers, in one manifest schema.
#[derive(Debug, Clone, Default)]
pub struct ImagePush {
    /// The manifest schema and media types.
    pub format: ManifestFormat,
    /// The config JSON, exactly as it will be stored.
    pub config: Vec<u8>,
    /// The layers, base first.
    pub layers: Vec<BlobUpload>,
    /// Manifest annotations.
    pub annotations: BTreeMap<String, String>,
}

/// Counts of what a push did with its blobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushStats {
    /// Blobs whose bytes were uploaded.
    pub uploaded: usize,
    /// Blobs the repository already had.
    pub already_present: usize,
    /// Blobs mounted from another repository.
    pub mounted: usize,
    /// Bytes uploaded.
    pub bytes_uploaded: u64,
}

impl PushStats {
    fn add(&mut self, outcome: &BlobPushOutcome) {
        match outcome {
            BlobPushOutcome::AlreadyPresent => self.already_present += 1,
            BlobPushOutcome::Mounted { .. } => self.mounted += 1,
            BlobPushOutcome::Uploaded { bytes } => {
                self.uploaded += 1;
                self.bytes_uploaded += bytes;
            }
        }
    }
}

/// A pushed image.
#[derive(Debug, Clone)]
pub struct PushedImage {
    /// The target, pinned to the manifest digest.
    pub reference: ImageRef,
    /// The manifest digest.
    pub manifest_digest: Digest,
    /// The manifest's media type.
    pub manifest_media_type: String,
    /// The manifest's bytes.
    pub manifest_raw: Vec<u8>,
    /// What happened to the blobs (config included).
    pub stats: PushStats,
}

impl RegistryClient {
    /// Pushes one blob into `target`'s repository unless it is there: HEAD
    /// first, then a mount from a repository known to hold it, then an
    /// upload.
    pub async fn push_blob(
        &self,
        target: &ImageRef,
        blob: &BlobUpload,
    ) -> Result<BlobPushOutcome, RegistryError> {
        let digest = parse_digest(blob.descriptor.digest().as_ref()).map_err(|reason| {
            RegistryError::InvalidPush {
                reference: target.to_string(),
                reason,
            }
        })?;
        let session = self
            .session(target, format!("pushing blob {digest}"))
            .await?;
        let exists = session
            .client
            .blob_exists(&session.oci_ref, digest.as_ref())
            .await
            .map_err(|e| session.err(e))?;
        if exists {
            self.remember_blob(target, digest.as_ref());
            return Ok(BlobPushOutcome::AlreadyPresent);
        }

        let source = blob
            .mount_from
            .clone()
            .filter(|repo| repo != target.repository())
            .or_else(|| self.known_source(target, digest.as_ref()));
        if let Some(from) = source {
            let from_ref = target.in_repository(&from, "latest")?.to_oci();
            match session
                .client
                .mount_blob(&session.oci_ref, &from_ref, digest.as_ref())
                .await
            {
                Ok(()) => {
                    self.remember_blob(target, digest.as_ref());
                    return Ok(BlobPushOutcome::Mounted { from });
                }
                // A registry that cannot mount answers 202 and opens an
                // upload, which oci-client reports as an error; the upload
                // below is the fallback the spec intends.
                Err(e) => {
                    tracing::debug!(%digest, %from, error = %e, "cross-repository mount refused; uploading");
                }
            }
        }

        let bytes = upload(&session, target, blob, &digest).await?;
        self.remember_blob(target, digest.as_ref());
        Ok(BlobPushOutcome::Uploaded { bytes })
    }

    /// Pushes manifest bytes (image manifest or index) as `media_type` to
    /// `target` (its tag, or its digest); returns the manifest digest.
    pub async fn push_manifest(
        &self,
        target: &ImageRef,
        raw: &[u8],
        media_type: &str,
    ) -> Result<Digest, RegistryError> {
        let digest = match target.digest() {
            Some(d) => {
                verify_bytes(raw, d, &target.to_string(), "manifest to push")?;
                d.clone()
            }
            None => sha256_digest(raw),
        };
        let content_type = media_type.parse().map_err(|_| RegistryError::InvalidPush {
            reference: target.to_string(),
            reason: format!("media type {media_type:?} is not a valid header value"),
        })?;
        let session = self.session(target, "pushing the manifest").await?;
        session
            .client
            .push_manifest_raw(&session.oci_ref, raw.to_vec(), content_type)
            .await
            .map_err(|e| session.err(e))?;
        Ok(digest)
    }

    /// Pushes an image: its layers and config (each skipped when present,
    /// mounted when known elsewhere in the registry), then its manifest
    /// under `target`'s tag.
    pub async fn push_image(
        &self,
        target: &ImageRef,
        image: &ImagePush,
    ) -> Result<PushedImage, RegistryError> {
        let config = BlobUpload {
            descriptor: Descriptor::new(
                MediaType::from(image.format.config_media_type()),
                image.config.len() as u64,
                sha256_digest(&image.config),
            ),
            source: BlobSource::Bytes(Bytes::from(image.config.clone())),
            mount_from: None,
        };
        let outcomes: Vec<BlobPushOutcome> =
            futures::stream::iter(image.layers.iter().chain(std::iter::once(&config)))
                .map(|blob| self.push_blob(target, blob))
                .buffered(PUSH_CONCURRENCY)
                .try_collect()
                .await?;
        let mut stats = PushStats::default();
        for outcome in &outcomes {
            stats.add(outcome);
        }

        let layers: Vec<Descriptor> = image.layers.iter().map(|l| l.descriptor.clone()).collect();
        let raw = manifest::build_manifest(
            image.format,
            config.descriptor,
            &layers,
            &image.annotations,
            &target.to_string(),
        )?;
        let media_type = image.format.manifest_media_type();
        let manifest_digest = self.push_manifest(target, &raw, media_type).await?;
        Ok(PushedImage {
            reference: target.with_digest(manifest_digest.clone()),
            manifest_digest,
            manifest_media_type: media_type.to_string(),
            manifest_raw: raw,
            stats,
        })
    }

    /// Points `tag` of `source`'s repository at the manifest `source` names
    /// (re-pushing its exact bytes); returns the manifest digest.
    pub async fn tag(&self, source: &ImageRef, tag: &str) -> Result<Digest, RegistryError> {
        let fetched = self.fetch_manifest(source).await?;
        let target = source.with_tag(tag)?;
        self.push_manifest(&target, &fetched.raw, &fetched.media_type)
            .await
    }
}

/// Sends the bytes of `blob`, checked against its descriptor first where
/// that is cheap; returns how many were sent.
async fn upload(
    session: &Session<'_>,
    target: &ImageRef,
    blob: &BlobUpload,
    digest: &Digest,
) -> Result<u64, RegistryError> {
    let bytes = match &blob.source {
        BlobSource::Bytes(data) => {
            if data.len() as u64 != blob.descriptor.size() {
                return Err(RegistryError::InvalidPush {
                    reference: target.to_string(),
                    reason: format!(
                        "blob {digest} has {} bytes, its descriptor says {}",
                        data.len(),
                        blob.descriptor.size()
                    ),
                });
            }
            // Catch a wrong descriptor here rather than as the
            // registry's DIGEST_INVALID after the upload.
            let check = data.clone();
            let (expected, reference) = (digest.clone(), target.to_string());
            tokio::task::spawn_blocking(move || {
                verify_bytes(&check, &expected, &reference, "blob to push")
            })
            .await
            .map_err(|e| RegistryError::InvalidPush {
                reference: target.to_string(),
                reason: format!("hashing task failed: {e}"),
            })??;
            session
                .client
                .push_blob(&session.oci_ref, data.clone(), digest.as_ref())
                .await
                .map_err(|e| session.err(e))?;
            data.len() as u64
        }
        BlobSource::File(path) => {
            let io_err = |action: &str, source| RegistryError::Io {
                path: path.clone(),
                action: action.to_string(),
                source,
            };
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|e| io_err("opening the blob to push", e))?;
            let len = file
                .metadata()
                .await
                .map_err(|e| io_err("reading the size of the blob to push", e))?
                .len();
            if len != blob.descriptor.size() {
                return Err(RegistryError::InvalidPush {
                    reference: target.to_string(),
                    reason: format!(
                        "{} has {len} bytes, the descriptor of {digest} says {}",
                        path.display(),
                        blob.descriptor.size()
                    ),
                });
            }
            // The registry checks the digest when the upload is
            // committed, and refuses it (DIGEST_INVALID) on mismatch.
            // Every stream item becomes one PATCH request: send big ones.
            let file = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
            let stream = large_chunks(file)
                .map_err(oci_client::errors::OciDistributionError::from)
                .boxed();
            session
                .client
                .push_blob_stream(&session.oci_ref, stream, digest.as_ref(), Some(len))
                .await
                .map_err(|e| session.err(e))?;
            len
        }
        BlobSource::Lazy(open) => {
            let len = blob.descriptor.size();
            let opened = open().await.map_err(|source| RegistryError::Io {
                path: PathBuf::from(digest.to_string()),
                action: "opening the blob to push".to_string(),
                source,
            })?;
            let stream = large_chunks(exact_length(opened, len, digest.to_string()))
                .map_err(oci_client::errors::OciDistributionError::from)
                .boxed();
            session
                .client
                .push_blob_stream(&session.oci_ref, stream, digest.as_ref(), Some(len))
                .await
                .map_err(|e| session.err(e))?;
            len
        }
    };
    Ok(bytes)
}

/// `stream`, failing with an error item instead of yielding more or fewer
/// than `len` bytes (the registry would otherwise commit a wrong blob's
/// upload only to refuse it by digest, or a truncated one never).
fn exact_length(
    stream: BoxStream<'static, std::io::Result<Bytes>>,
    len: u64,
    digest: String,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send {
    let wrong = move |got: u64| {
        std::io::Error::other(format!(
            "blob {digest} to push: its source has {}{got} bytes, its descriptor says {len}",
            if got > len { "more than " } else { "" }
        ))
    };
    futures::stream::try_unfold((stream, 0u64, false), move |(mut s, seen, done)| {
        let wrong = wrong.clone();
        async move {
            if done {
                return Ok(None);
            }
            match s.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    let seen = seen + chunk.len() as u64;
                    if seen > len {
                        return Err(wrong(seen));
                    }
                    Ok(Some((chunk, (s, seen, false))))
                }
                None if seen == len => Ok(None),
                None => Err(wrong(seen)),
            }
        }
    })
}

/// Bytes handed to oci-client at a time; it sends them in PATCH requests
/// of at most its own chunk limit.
const PUSH_CHUNK: usize = 16 << 20;

/// `source` regrouped into chunks of [`PUSH_CHUNK`] bytes (the last one
/// shorter): a registry upload makes a request per chunk, so 64 KiB
/// pieces would mean thousands of round trips per layer.
fn large_chunks<S>(source: S) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send
where
    S: futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
{
    futures::stream::try_unfold(Some(Box::pin(source)), |source| async move {
        let Some(mut source) = source else {
            return Ok(None);
        };
        let mut buf = bytes::BytesMut::with_capacity(PUSH_CHUNK);
        while buf.len() < PUSH_CHUNK {
            match source.next().await {
                Some(chunk) => buf.extend_from_slice(&chunk?),
                None => return Ok((!buf.is_empty()).then(|| (buf.freeze(), None))),
            }
        }
        Ok(Some((buf.freeze(), Some(source))))
    })
}
