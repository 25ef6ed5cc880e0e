//! The scheduler's view of the blob store: a local directory
//! ([`FsBlobs`], the whole store in embedded mode and in a farm without an
//! object store) in front of an optional shared store (S3) that every
//! scheduler and worker of the farm uses.
//!
//! With a shared store, every blob the scheduler writes (context files
//! from clients, layers workers send through `BlobService`, pulled base
//! layers, configs, manifests, compressed variants) is written to the
//! local directory, verified, then published to the shared store before
//! anyone is told about it (blobs received through the scheduler's RPCs
//! are published before they are even visible locally, see
//! [`Blobs::commit_staged`]); a blob the scheduler needs as bytes (an
//! archive, a push, a config) is fetched into the local directory once.
//! Answering "is it there" asks the shared store, so a layer built by
//! another scheduler's worker, or before this scheduler's disk was wiped,
//! is a cache hit without being downloaded.

use bytes::Bytes;
use std::path::PathBuf;
use std::sync::Arc;
pub use strata_store::{
    BlobError, BlobStore, BlobWriter, FsBlobs, Staged, digest_hex, sha256_of, write_atomic,
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

    /// A whole blob's bytes if it holds at most `max` (a Dockerfile or a
    /// context manifest a client names by digest): its size is asked
    /// first, so a bigger one is neither downloaded nor read.
    pub async fn read_at_most(&self, digest: &str, max: u64) -> Result<Vec<u8>, ReadError> {
        let size = self
            .stat(digest)
            .await?
            .ok_or_else(|| BlobError::Missing(digest.to_string()))?;
        let too_large = |size| ReadError::TooLarge {
            digest: digest.to_string(),
            size,
            max,
        };
        if size > max {
            return Err(too_large(size));
        }
        let path = self.ensure_local(digest).await?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(strata_store::io_err("reading", &path))?;
        let mut bytes = Vec::with_capacity(size as usize);
        tokio::io::AsyncReadExt::read_to_end(
            &mut tokio::io::AsyncReadExt::take(file, max + 1),
            &mut bytes,
        )
        .await
        .map_err(strata_store::io_err("reading", &path))?;
        if bytes.len() as u64 > max {
            return Err(too_large(bytes.len() as u64));
        }
        Ok(bytes)
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
        let digest = writer.digest().to_string();
        let staged = blocking(&digest, move || writer.stage()).await?;
        let size = staged.size();
        self.commit_staged(staged).await?;
        Ok(size)
    }

    /// Stores a small blob received whole (a context file) as
    /// [`Blobs::commit_staged`] does, publishing it from memory.
    pub async fn put_whole(&self, digest: &str, bytes: Bytes) -> Result<(), BlobError> {
        let local = Arc::clone(&self.local);
        let (d, b) = (digest.to_string(), bytes.clone());
        let staged = blocking(digest, move || local.stage(&d, &b)).await?;
        if let Some(shared) = &self.shared {
            shared.put_bytes(bytes).await?;
        }
        let local = Arc::clone(&self.local);
        blocking(digest, move || staged.commit(&local))
            .await
            .map(|_| ())
    }

    /// Publishes a staged blob to the shared store, then makes it visible
    /// in the local directory, so that whatever this scheduler shows is
    /// in the shared store too (an interrupted call leaves neither a
    /// local copy nor a temp file).
    pub async fn commit_staged(&self, staged: Staged) -> Result<PathBuf, BlobError> {
        if let Some(shared) = &self.shared {
            shared.put_file(staged.digest(), staged.path()).await?;
        }
        let local = Arc::clone(&self.local);
        let digest = staged.digest().to_string();
        blocking(&digest, move || staged.commit(&local)).await
    }

    /// A fresh temporary path on the local directory's filesystem.
    pub fn temp_path(&self, what: &str) -> PathBuf {
        self.local.temp_path(what)
    }
}

/// Why [`Blobs::read_at_most`] gave no bytes.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The blob holds more than the caller accepts.
    #[error("blob {digest} holds {size} bytes, more than the limit of {max}")]
    TooLarge {
        /// The blob.
        digest: String,
        /// Its size.
        size: u64,
        /// The caller's limit.
        max: u64,
    },
    /// It could not be found or read.
    #[error(transparent)]
    Blob(#[from] BlobError),
}

/// Runs file work on the blocking pool; `digest` names it in the error of
/// a task that did not finish.
pub(crate) async fn blocking<T: Send + 'static>(
    digest: &str,
    work: impl FnOnce() -> Result<T, BlobError> + Send + 'static,
) -> Result<T, BlobError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| BlobError::Io {
            op: "storing",
            path: PathBuf::from(digest),
            source: std::io::Error::other(e.to_string()),
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scheduler's blobs: a local directory in front of a "shared" one.
    fn farm(dir: &std::path::Path) -> (Blobs, Arc<FsBlobs>) {
        let shared = Arc::new(FsBlobs::open(dir.join("shared")).unwrap());
        let local = FsBlobs::open(dir.join("local")).unwrap();
        let blobs = Blobs::new(local, Some(Arc::clone(&shared) as Arc<dyn BlobStore>));
        (blobs, shared)
    }

    fn temp_files(store: &FsBlobs) -> usize {
        std::fs::read_dir(store.root().join("tmp")).unwrap().count()
    }

    #[tokio::test]
    async fn received_blobs_are_shared_before_they_are_visible() {
        let dir = tempfile::tempdir().unwrap();
        let (blobs, shared) = farm(dir.path());

        let small = sha256_of(b"a context file");
        blobs
            .put_whole(&small, Bytes::from_static(b"a context file"))
            .await
            .unwrap();
        let mut writer = blobs.local().writer(&sha256_of(b"a big one")).unwrap();
        writer.write_at(0, b"a big ").unwrap();
        writer.write_at(6, b"one").unwrap();
        assert_eq!(blobs.finish(writer).await.unwrap(), 9);
        for (digest, bytes) in [
            (small, &b"a context file"[..]),
            (sha256_of(b"a big one"), b"a big one"),
        ] {
            assert_eq!(blobs.local().read(&digest).unwrap(), bytes);
            assert_eq!(shared.read(&digest).unwrap(), bytes);
        }

        let wrong = sha256_of(b"what the client announced");
        let err = blobs
            .put_whole(&wrong, Bytes::from_static(b"what it sent"))
            .await
            .unwrap_err();
        assert!(matches!(err, BlobError::Mismatch { .. }), "{err}");
        assert!(!blobs.local().has(&wrong) && !shared.has(&wrong));
        assert_eq!(temp_files(blobs.local()), 0);
    }

    #[tokio::test]
    async fn a_bounded_read_refuses_a_bigger_blob_without_fetching_it() {
        let dir = tempfile::tempdir().unwrap();
        let (blobs, shared) = farm(dir.path());
        let digest = shared.put_bytes_sync(b"twelve bytes").unwrap();

        let err = blobs.read_at_most(&digest, 11).await.unwrap_err();
        assert!(
            matches!(
                err,
                ReadError::TooLarge {
                    size: 12,
                    max: 11,
                    ..
                }
            ),
            "{err}"
        );
        assert!(!blobs.local().has(&digest), "fetched a blob it refused");
        assert_eq!(
            blobs.read_at_most(&digest, 12).await.unwrap(),
            b"twelve bytes"
        );
        let missing = sha256_of(b"never stored");
        assert!(matches!(
            blobs.read_at_most(&missing, 12).await.unwrap_err(),
            ReadError::Blob(BlobError::Missing(_))
        ));
    }

    #[tokio::test]
    async fn a_blob_the_shared_store_refused_is_not_visible_locally() {
        let dir = tempfile::tempdir().unwrap();
        let (blobs, shared) = farm(dir.path());
        // The shared store can no longer write anything.
        std::fs::remove_dir_all(shared.root().join("tmp")).unwrap();

        let digest = sha256_of(b"a context file");
        let err = blobs
            .put_whole(&digest, Bytes::from_static(b"a context file"))
            .await
            .unwrap_err();
        assert!(matches!(err, BlobError::Io { .. }), "{err}");
        let mut writer = blobs.local().writer(&sha256_of(b"big")).unwrap();
        writer.write_at(0, b"big").unwrap();
        blobs.finish(writer).await.unwrap_err();
        assert!(!blobs.local().has(&digest));
        assert!(!blobs.local().has(&sha256_of(b"big")));
        assert_eq!(temp_files(blobs.local()), 0, "temp files left behind");
    }
}
