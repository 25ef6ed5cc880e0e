//! [`BlobWriter`]: a blob arriving in chunks (an upload to the
//! scheduler), hashed as it is written and committed only if it matches;
//! [`Staged`]: a verified blob on disk that is not visible yet, for a
//! caller that must do something (publish it elsewhere) before it is.

use super::{CHUNK, FsBlobs};
use crate::{BlobError, check_digest, io_err, sha256_of};
use sha2::{Digest as _, Sha256};
use std::io::Write as _;
use std::path::{Path, PathBuf};

impl FsBlobs {
    /// Stages blob `digest` from `bytes` (a small file received whole):
    /// verified first, then written to a temp file and synced.
    pub fn stage(&self, digest: &str, bytes: &[u8]) -> Result<Staged, BlobError> {
        crate::digest_hex(digest)?;
        check_digest(digest, sha256_of(bytes), bytes.len() as u64)?;
        let staged = Staged {
            digest: digest.to_string(),
            tmp: self.temp_path("ingest"),
            size: bytes.len() as u64,
            committed: false,
        };
        let mut file =
            std::fs::File::create(&staged.tmp).map_err(io_err("creating", &staged.tmp))?;
        file.write_all(bytes)
            .map_err(io_err("writing", &staged.tmp))?;
        file.sync_all().map_err(io_err("syncing", &staged.tmp))?;
        Ok(staged)
    }

    /// Starts writing blob `digest`.
    pub fn writer(&self, digest: &str) -> Result<BlobWriter, BlobError> {
        crate::digest_hex(digest)?;
        let tmp = self.temp_path("ingest");
        let file = std::fs::File::create(&tmp).map_err(io_err("creating", &tmp))?;
        Ok(BlobWriter {
            digest: digest.to_string(),
            tmp,
            file: std::io::BufWriter::with_capacity(CHUNK, file),
            hasher: Sha256::new(),
            written: 0,
        })
    }
}

/// A blob being written in chunks; [`BlobWriter::finish`] verifies and
/// commits it. Dropped unfinished, it leaves only a temp file in
/// `<root>/tmp`.
#[derive(Debug)]
pub struct BlobWriter {
    digest: String,
    tmp: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    hasher: Sha256,
    written: u64,
}

impl BlobWriter {
    /// The digest being written.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends a chunk that starts at `offset`.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlobError> {
        if offset != self.written {
            return Err(BlobError::OutOfOrder {
                digest: self.digest.clone(),
                offset,
                expected: self.written,
            });
        }
        self.file
            .write_all(data)
            .map_err(io_err("writing", &self.tmp))?;
        self.hasher.update(data);
        self.written += data.len() as u64;
        Ok(())
    }

    /// Verifies the digest and commits the blob; returns its size.
    pub fn finish(self, store: &FsBlobs) -> Result<u64, BlobError> {
        let staged = self.stage()?;
        let size = staged.size();
        staged.commit(store)?;
        Ok(size)
    }

    /// Syncs the blob to disk and verifies its digest, without making it
    /// visible: see [`Staged::commit`].
    pub fn stage(self) -> Result<Staged, BlobError> {
        let BlobWriter {
            digest,
            tmp,
            file,
            hasher,
            written,
        } = self;
        // From here on, dropping it removes the temp file.
        let staged = Staged {
            digest,
            tmp,
            size: written,
            committed: false,
        };
        file.into_inner()
            .map_err(|e| io_err("writing", &staged.tmp)(e.into_error()))?
            .sync_all()
            .map_err(io_err("syncing", &staged.tmp))?;
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        check_digest(&staged.digest, actual, written)?;
        Ok(staged)
    }

    /// Abandons the write.
    pub fn abort(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// A complete, verified blob in a temp file of the store, synced to
/// disk but not visible under its digest until [`Staged::commit`];
/// dropped uncommitted, its file is removed.
#[derive(Debug)]
pub struct Staged {
    digest: String,
    tmp: PathBuf,
    size: u64,
    committed: bool,
}

impl Staged {
    /// The blob's digest.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The blob's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The temp file, to read the blob from before it is committed.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Makes the blob visible under its digest (a rename); returns its
    /// path.
    pub fn commit(mut self, store: &FsBlobs) -> Result<PathBuf, BlobError> {
        let path = store.commit(&self.tmp, &self.digest)?;
        self.committed = true;
        Ok(path)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_blob_is_verified_before_it_appears() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobs::open(dir.path()).unwrap();
        let digest = sha256_of(b"hello world");
        let mut w = store.writer(&digest).unwrap();
        w.write_at(0, b"hello ").unwrap();
        assert!(!store.has(&digest), "visible before it is complete");
        w.write_at(6, b"world").unwrap();
        assert_eq!(w.finish(&store).unwrap(), 11);
        assert_eq!(store.read(&digest).unwrap(), b"hello world");

        let wrong = sha256_of(b"something else");
        let mut w = store.writer(&wrong).unwrap();
        w.write_at(0, b"hello world").unwrap();
        let err = w.finish(&store).unwrap_err();
        assert!(matches!(err, BlobError::Mismatch { .. }), "{err}");
        assert!(!store.has(&wrong));
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn staged_blobs_appear_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobs::open(dir.path()).unwrap();
        let tmp_files = || std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
        let digest = sha256_of(b"small file");
        let staged = store.stage(&digest, b"small file").unwrap();
        assert_eq!((staged.digest(), staged.size()), (digest.as_str(), 10));
        assert_eq!(std::fs::read(staged.path()).unwrap(), b"small file");
        assert!(!store.has(&digest), "visible before it is committed");
        staged.commit(&store).unwrap();
        assert_eq!(store.read(&digest).unwrap(), b"small file");

        let other = sha256_of(b"dropped");
        drop(store.stage(&other, b"dropped").unwrap());
        assert!(!store.has(&other));
        assert_eq!(tmp_files(), 0, "a dropped stage leaves no temp file");

        let err = store
            .stage(&other, b"not what the digest says")
            .unwrap_err();
        assert!(matches!(err, BlobError::Mismatch { .. }), "{err}");
        let mut w = store.writer(&other).unwrap();
        w.write_at(0, b"not it either").unwrap();
        assert!(matches!(w.stage(), Err(BlobError::Mismatch { .. })));
        assert!(!store.has(&other));
        assert_eq!(tmp_files(), 0);
    }

    #[test]
    fn chunks_must_be_contiguous_and_digests_well_formed() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobs::open(dir.path()).unwrap();
        let mut w = store.writer(&sha256_of(b"ab")).unwrap();
        assert!(matches!(
            w.write_at(1, b"b"),
            Err(BlobError::OutOfOrder { expected: 0, .. })
        ));
        assert!(matches!(
            store.writer("sha256:../../etc/passwd"),
            Err(BlobError::BadDigest(_))
        ));
        assert!(matches!(
            store.read(&sha256_of(b"x")),
            Err(BlobError::Missing(_))
        ));
    }
}
