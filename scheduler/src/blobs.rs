//! The scheduler's view of the blob store: a local directory
//! ([`FsBlobs`], the whole store in embedded mode and in a farm without an
//! object store) in front of an optional shared store (S3) that every
//! scheduler and worker of the farm uses.
//!
//! With a shared store, every blob the scheduler writes (context files
//! from clients, layers workers send through `BlobService`, pulled base
//! layers, configs, manifests, compressed variants) is written to the
//! local directory, verified, then published to the shared store before
//! anyone is told about it; a blob the scheduler needs as bytes (an
//! archive, a push, a config) is fetched into the local directory once.
//! Answering "is it there" asks the shared store, so a layer built by
//! another scheduler's worker, or before this scheduler's disk was wiped,
//! is a cache hit without being downloaded.

use std::path::PathBuf;
use std::sync::Arc;
pub use strata_store::{
    BlobError, BlobStore, BlobWriter, FsBlobs, digest_hex, sha256_of, write_atomic,
};

/// The local directory and, in a farm with an object store, the shared
/// store behind it.
#[derive(Debug)]
pub struct Blobs {
    local: Arc<FsBlobs>,
    shared: Option<Arc<dyn BlobStore>>,
}

impl Blobs {
    /// A store of `local` alone, or `local` in front of `shared`.
    pub fn new(local: FsBlobs, shared: Option<Arc<dyn BlobStore>>) -> Self {
        Self {
            local: Arc::new(local),
            shared,
        }
    }

    /// The local directory.
    pub fn local(&self) -> &FsBlobs {
        &self.local
    }

    /// The local directory as a [`BlobStore`].
    pub fn local_store(&self) -> Arc<dyn BlobStore> {
        Arc::clone(&self.local) as Arc<dyn BlobStore>
    }

    /// The shared store, when there is one.
    pub fn shared(&self) -> Option<&Arc<dyn BlobStore>> {
        self.shared.as_ref()
    }

    /// Where durable named objects live (the cache index's records,
    /// cache-mount pointers, finished build logs): the shared store, else
    /// the local directory.
    pub fn durable(&self) -> Arc<dyn BlobStore> {
        match &self.shared {
            Some(s) => Arc::clone(s),
            None => self.local_store(),
        }
    }

    /// The blob's size, if the farm has it (locally or shared).
    pub async fn stat(&self, digest: &str) -> Result<Option<u64>, BlobError> {
        if let Some(size) = self.local.size(digest) {
            return Ok(Some(size));
        }
        match &self.shared {
            Some(s) => s.stat(digest).await,
            None => {
                digest_hex(digest)?;
                Ok(None)
            }
        }
    }

    /// Whether the farm has the blob; a store that cannot be asked counts
    /// as not having it (the caller then rebuilds or re-uploads).
    pub async fn has(&self, digest: &str) -> bool {
        match self.stat(digest).await {
            Ok(found) => found.is_some(),
            Err(e) => {
                tracing::warn!("checking blob {digest}: {e}");
                false
            }
        }
    }

    /// Makes sure the blob is in the local directory (downloading it,
    /// verified, from the shared store) and returns its path.
    pub async fn ensure_local(&self, digest: &str) -> Result<PathBuf, BlobError> {
        let path = self.local.path(digest)?;
        if self.local.has(digest) {
            return Ok(path);
        }
        let Some(shared) = &self.shared else {
            return Err(BlobError::Missing(digest.to_string()));
        };
        let tmp = self.local.temp_path("fetch");
        shared.get_to_file(digest, &tmp).await?;
        self.local.commit(&tmp, digest)
    }

    /// A whole blob's bytes (configs, manifests).
    pub async fn read(&self, digest: &str) -> Result<Vec<u8>, BlobError> {
        let path = self.ensure_local(digest).await?;
        tokio::fs::read(&path)
            .await
            .map_err(strata_store::io_err("reading", &path))
    }

    /// Publishes a blob of the local directory to the shared store (once:
    /// the shared store is asked first). A no-op without one.
    pub async fn publish(&self, digest: &str) -> Result<(), BlobError> {
        if let Some(shared) = &self.shared {
            let path = self.local.path(digest)?;
            shared.put_file(digest, &path).await?;
        }
        Ok(())
    }

    /// Moves a verified temp file in as `digest` and publishes it.
    pub async fn commit(&self, tmp: &std::path::Path, digest: &str) -> Result<PathBuf, BlobError> {
        let path = self.local.commit(tmp, digest)?;
        self.publish(digest).await?;
        Ok(path)
    }

    /// Stores `bytes` (configs, manifests) and publishes them; returns
    /// their digest.
    pub async fn put_bytes(&self, bytes: &[u8]) -> Result<String, BlobError> {
        let digest = self.local.put_bytes_sync(bytes)?;
        self.publish(&digest).await?;
        Ok(digest)
    }

    /// Finishes a chunked write and publishes the blob; returns its size.
    pub async fn finish(&self, writer: BlobWriter) -> Result<u64, BlobError> {
        let local = Arc::clone(&self.local);
        let digest = writer.digest().to_string();
        let size = tokio::task::spawn_blocking(move || writer.finish(&local))
            .await
            .map_err(|e| BlobError::Io {
                op: "finishing",
                path: PathBuf::from(&digest),
                source: std::io::Error::other(e.to_string()),
            })??;
        self.publish(&digest).await?;
        Ok(size)
    }

    /// A fresh temporary path on the local directory's filesystem.
    pub fn temp_path(&self, what: &str) -> PathBuf {
        self.local.temp_path(what)
    }
}
