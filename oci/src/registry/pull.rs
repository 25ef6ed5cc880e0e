//! Pulling: resolve a reference to one platform's manifest and config,
//! then stream blobs, every byte checked against its digest.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt as _;
use oci_spec::image::{Descriptor, Digest, ImageConfiguration, ImageManifest};
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

use super::error::RegistryError;
use super::manifest::{
    self, ACCEPTED_MANIFESTS, DOCKER_CONFIG, Document, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES,
    OCI_CONFIG,
};
use super::platform::Platform;
use super::reference::{ImageRef, parse_digest};
use super::registry_client::RegistryClient;
use super::verify::{BlobStream, sha256_digest, verify_bytes};

/// A manifest as the registry serves it, its digest verified.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The digest of `raw`: the reference's digest when it was pinned,
    /// else the sha256 of the bytes (checked against the registry's
    /// `Docker-Content-Digest`).
    pub digest: Digest,
    /// The document's media type.
    pub media_type: String,
    /// The exact bytes, as needed to re-push or re-tag the manifest.
    pub raw: Vec<u8>,
}

/// An image resolved for one platform: its manifest and config, verified,
/// and the layers still to fetch (with [`RegistryClient::blob_stream`] and
/// friends, which verify them as they stream).
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The reference as asked for.
    pub reference: ImageRef,
    /// The digest of the platform's image manifest.
    pub manifest_digest: Digest,
    /// The digest of the index the manifest was picked from, when the
    /// reference named an index or manifest list.
    pub index_digest: Option<Digest>,
    /// The image manifest's media type (OCI or Docker schema 2).
    pub manifest_media_type: String,
    /// The image manifest's exact bytes.
    pub manifest_raw: Vec<u8>,
    /// The parsed image manifest.
    pub manifest: ImageManifest,
    /// The parsed image config.
    pub config: ImageConfiguration,
    /// The config's exact bytes (their digest is the image ID).
    pub config_raw: Vec<u8>,
    /// The layer descriptors, base first.
    pub layers: Vec<Descriptor>,
}

impl ResolvedImage {
    /// The reference pinned to the manifest digest, for reproducible
    /// builds (`name:tag@sha256:...`).
    pub fn pinned(&self) -> ImageRef {
        self.reference.with_digest(self.manifest_digest.clone())
    }
}

impl RegistryClient {
    /// Fetches the manifest `reference` names (image manifest or index) as
    /// bytes, verifying its digest.
    pub async fn fetch_manifest(
        &self,
        reference: &ImageRef,
    ) -> Result<FetchedManifest, RegistryError> {
        Ok(self.fetch_document(reference).await?.0)
    }

    /// [`RegistryClient::fetch_manifest`], with the document parsed.
    async fn fetch_document(
        &self,
        reference: &ImageRef,
    ) -> Result<(FetchedManifest, Document), RegistryError> {
        let session = self.session(reference, "fetching the manifest").await?;
        let (raw, _) = session
            .client
            .pull_manifest_raw(&session.oci_ref, &session.auth, ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| session.err(e))?;
        let reference_text = reference.to_string();
        if raw.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(RegistryError::TooLarge {
                reference: reference_text,
                what: "manifest".to_string(),
                size: raw.len() as u64,
                limit: MAX_MANIFEST_BYTES,
            });
        }
        // oci-client checked the bytes against the reference digest and the
        // registry's header already; checking here keeps the guarantee
        // ours, whatever that library does.
        let digest = match reference.digest() {
            Some(d) => {
                verify_bytes(&raw, d, &reference_text, "manifest")?;
                d.clone()
            }
            None => sha256_digest(&raw),
        };
        let (document, media_type) = manifest::parse_document(&raw, &reference_text)?;
        let fetched = FetchedManifest {
            digest,
            media_type,
            raw: raw.to_vec(),
        };
        Ok((fetched, document))
    }

    /// Resolves `reference` to `platform`'s image: fetches the manifest,
    /// picks the platform's entry when it is an index or manifest list,
    /// fetches and verifies the config. Layers are not fetched.
    pub async fn resolve(
        &self,
        reference: &ImageRef,
        platform: &Platform,
    ) -> Result<ResolvedImage, RegistryError> {
        let reference_text = reference.to_string();
        let (top, document) = self.fetch_document(reference).await?;
        let (fetched, manifest, index_digest) = match document {
            Document::Image(m) => (top, *m, None),
            Document::Index(index) => {
                let entry = platform.select(index.manifests()).ok_or_else(|| {
                    RegistryError::PlatformNotFound {
                        reference: reference_text.clone(),
                        platform: platform.to_string(),
                        available: Platform::list(index.manifests()),
                    }
                })?;
                let child_ref = reference.with_digest(entry.digest().clone());
                let (child, child_document) = self.fetch_document(&child_ref).await?;
                if child.raw.len() as u64 != entry.size() {
                    return Err(RegistryError::SizeMismatch {
                        reference: reference_text,
                        what: format!("manifest {}", entry.digest()),
                        expected: entry.size(),
                        actual: child.raw.len() as u64,
                    });
                }
                match child_document {
                    Document::Image(m) => (child, *m, Some(top.digest)),
                    Document::Index(_) => {
                        return Err(RegistryError::UnsupportedManifest {
                            reference: reference_text,
                            reason: format!(
                                "the {platform} entry {} is itself an index",
                                entry.digest()
                            ),
                        });
                    }
                }
            }
        };

        let config_desc = manifest.config();
        let config_type = config_desc.media_type().to_string();
        if config_type != OCI_CONFIG && config_type != DOCKER_CONFIG {
            return Err(RegistryError::UnsupportedManifest {
                reference: reference_text,
                reason: format!(
                    "config media type {config_type} is not a container image config \
                     (an artifact, not an image)"
                ),
            });
        }
        let config_raw = self
            .fetch_blob(reference, config_desc, MAX_CONFIG_BYTES)
            .await?;
        let config: ImageConfiguration =
            serde_json::from_slice(&config_raw).map_err(|e| RegistryError::InvalidDocument {
                reference: reference_text.clone(),
                what: format!("image config {}", config_desc.digest()),
                reason: e.to_string(),
            })?;
        let image_platform = Platform::new(
            &config.os().to_string(),
            &config.architecture().to_string(),
            config.variant().as_deref(),
        );
        if !platform.matches(&image_platform) {
            return Err(RegistryError::PlatformNotFound {
                reference: reference_text,
                platform: platform.to_string(),
                available: image_platform.to_string(),
            });
        }

        self.remember_blob(reference, config_desc.digest().as_ref());
        for layer in manifest.layers() {
            self.remember_blob(reference, layer.digest().as_ref());
        }
        Ok(ResolvedImage {
            reference: reference.clone(),
            manifest_digest: fetched.digest,
            index_digest,
            manifest_media_type: fetched.media_type,
            manifest_raw: fetched.raw,
            layers: manifest.layers().clone(),
            manifest,
            config,
            config_raw,
        })
    }

    /// Streams the blob `descriptor` names from `reference`'s repository,
    /// checking its size and digest as it goes (see [`BlobStream`]).
    pub async fn blob_stream(
        &self,
        reference: &ImageRef,
        descriptor: &Descriptor,
    ) -> Result<BlobStream, RegistryError> {
        let digest = parse_digest(descriptor.digest().as_ref()).map_err(|reason| {
            RegistryError::InvalidDocument {
                reference: reference.to_string(),
                what: "blob descriptor".to_string(),
                reason,
            }
        })?;
        let session = self
            .session(reference, format!("fetching blob {digest}"))
            .await?;
        let sized = session
            .client
            .pull_blob_stream(&session.oci_ref, digest.as_ref())
            .await
            .map_err(|e| session.err(e))?;
        if let Some(len) = sized.content_length
            && len != descriptor.size()
        {
            return Err(RegistryError::SizeMismatch {
                reference: reference.to_string(),
                what: format!("blob {digest}"),
                expected: descriptor.size(),
                actual: len,
            });
        }
        BlobStream::new(sized.stream, digest, descriptor.size(), session.ctx)
    }

    /// Fetches a small blob (a config) into memory, verified; refuses one
    /// whose descriptor is over `limit` bytes.
    pub async fn fetch_blob(
        &self,
        reference: &ImageRef,
        descriptor: &Descriptor,
        limit: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        if descriptor.size() > limit {
            return Err(RegistryError::TooLarge {
                reference: reference.to_string(),
                what: format!("blob {}", descriptor.digest()),
                size: descriptor.size(),
                limit,
            });
        }
        let mut stream = self.blob_stream(reference, descriptor).await?;
        let mut out = Vec::with_capacity(usize::try_from(descriptor.size()).unwrap_or(0));
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    /// Copies a blob into `out`; returns its size. The bytes are written
    /// as they arrive: when this returns an error (digest or size
    /// mismatch included), what `out` received must be thrown away.
    pub async fn copy_blob<W: AsyncWrite + Unpin>(
        &self,
        reference: &ImageRef,
        descriptor: &Descriptor,
        out: &mut W,
    ) -> Result<u64, RegistryError> {
        let stream = self.blob_stream(reference, descriptor).await?;
        drain(stream, out, Path::new("(the caller's writer)")).await
    }

    /// Downloads a blob to `path`; returns its size. The bytes go to a
    /// temporary file beside `path`, renamed into place only once verified,
    /// so `path` never holds unverified content.
    pub async fn download_blob(
        &self,
        reference: &ImageRef,
        descriptor: &Descriptor,
        path: &Path,
    ) -> Result<u64, RegistryError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| RegistryError::Io {
                path: path.to_path_buf(),
                action: "choosing where to download".to_string(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"),
            })?;
        let partial = path.with_file_name(format!(
            ".{file_name}.partial-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let io_err = |path: &Path, action: &str| {
            let path = path.to_path_buf();
            let action = action.to_string();
            move |source| RegistryError::Io {
                path,
                action,
                source,
            }
        };
        let result = async {
            let mut file = tokio::fs::File::create(&partial)
                .await
                .map_err(io_err(&partial, "creating the download file"))?;
            let stream = self.blob_stream(reference, descriptor).await?;
            let size = drain(stream, &mut file, &partial).await?;
            file.sync_all()
                .await
                .map_err(io_err(&partial, "syncing the download file"))?;
            tokio::fs::rename(&partial, path)
                .await
                .map_err(io_err(path, "moving the verified download into place"))?;
            Ok(size)
        }
        .await;
        if result.is_err() {
            // Best effort: the file may not exist if creating it failed.
            let _ = tokio::fs::remove_file(&partial).await;
        }
        result
    }
}

/// Writes a verified stream to `out`; `path` names `out` in errors.
async fn drain<W: AsyncWrite + Unpin>(
    mut stream: BlobStream,
    out: &mut W,
    path: &Path,
) -> Result<u64, RegistryError> {
    let digest = stream.expected_digest().to_string();
    let write_err = |source: std::io::Error| RegistryError::Io {
        path: path.to_path_buf(),
        action: format!("writing blob {digest}"),
        source,
    };
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        out.write_all(&chunk).await.map_err(write_err)?;
        written += chunk.len() as u64;
    }
    out.flush().await.map_err(write_err)?;
    Ok(written)
}
