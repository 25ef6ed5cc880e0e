//! [`BlobWriter`]: a blob arriving in chunks (an upload to the
//! scheduler), hashed as it is written and committed only if it matches.

use super::{CHUNK, FsBlobs};
use crate::{BlobError, check_digest, io_err};
use sha2::{Digest as _, Sha256};
use std::io::Write as _;
use std::path::PathBuf;

impl FsBlobs {
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
        let BlobWriter {
            digest,
            tmp,
            file,
            hasher,
            written,
        } = self;
        let result = (|| {
            file.into_inner()
                .map_err(|e| io_err("writing", &tmp)(e.into_error()))?
                .sync_all()
                .map_err(io_err("syncing", &tmp))?;
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            check_digest(&digest, actual, written)?;
            store.commit(&tmp, &digest)?;
            Ok(written)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Abandons the write.
    pub fn abort(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sha256_of;

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
