//! The filesystem backend: blobs by sha256 digest under
//! `<root>/blobs/sha256/<hex>` (the layout the scheduler and the worker
//! share, so an embedded farm keeps one directory and copies nothing),
//! named objects under `<root>/objects/<key>`.
//!
//! Everything is written to `<root>/tmp`, verified, and only then renamed
//! to its final path (same filesystem, so the rename is atomic): a partial
//! or corrupt blob is never visible under a digest, and a reader of an
//! object sees the old bytes or the new ones, never half of them.

use crate::{
    BlobError, BlobInfo, BlobStore, ByteStream, Put, blocking, check_digest, check_key,
    check_prefix, digest_hex, io_err, sha256_of,
};
use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use std::io::{ErrorKind, Read, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

mod writer;

pub use writer::{BlobWriter, Staged};

/// Bytes per chunk of a [`BlobStore::get`] stream and per copy step.
const CHUNK: usize = 1 << 20;

/// Temp file names are unique per process, not per store: the scheduler
/// and the worker of an embedded farm open the same root.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `bytes` all at once: written beside it, then
/// renamed over it, so a reader sees the old file or the new one, never
/// half of it (the scheduler's indexes and build logs).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        NEXT_TEMP.fetch_add(1, Ordering::Relaxed)
    ));
    write_then_rename(&tmp, path, bytes)
}

/// Writes `tmp`, renames it to `path`; removes `tmp` on failure.
fn write_then_rename(tmp: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let written = std::fs::write(tmp, bytes).and_then(|()| std::fs::rename(tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    written
}

/// A filesystem blob store.
#[derive(Debug, Clone)]
pub struct FsBlobs {
    root: PathBuf,
}

impl FsBlobs {
    /// Opens (creating) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, BlobError> {
        let root = root.into();
        for d in [
            root.join("blobs/sha256"),
            root.join("objects"),
            root.join("tmp"),
        ] {
            std::fs::create_dir_all(&d).map_err(io_err("creating", &d))?;
        }
        Ok(Self { root })
    }

    /// The store's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where blob `digest` lives, present or not.
    pub fn path(&self, digest: &str) -> Result<PathBuf, BlobError> {
        Ok(self.root.join("blobs/sha256").join(digest_hex(digest)?))
    }

    /// The blob's size, if present.
    pub fn size(&self, digest: &str) -> Option<u64> {
        let p = self.path(digest).ok()?;
        std::fs::metadata(p)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// Whether the blob is present.
    pub fn has(&self, digest: &str) -> bool {
        self.size(digest).is_some()
    }

    /// A fresh temporary path inside the store (same filesystem as the
    /// blobs, so a rename commits it).
    pub fn temp_path(&self, what: &str) -> PathBuf {
        let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{what}-{}-{n}", std::process::id()))
    }

    /// Stores `bytes` (configs, manifests); returns their digest.
    pub fn put_bytes_sync(&self, bytes: &[u8]) -> Result<String, BlobError> {
        let digest = sha256_of(bytes);
        if self.has(&digest) {
            return Ok(digest);
        }
        let tmp = self.temp_path("put");
        let stored = std::fs::write(&tmp, bytes)
            .map_err(io_err("writing", &tmp))
            .and_then(|()| self.commit(&tmp, &digest));
        if stored.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        stored.map(|_| digest)
    }

    /// Reads a whole blob (configs, manifests).
    pub fn read(&self, digest: &str) -> Result<Vec<u8>, BlobError> {
        let p = self.path(digest)?;
        match std::fs::read(&p) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                Err(BlobError::Missing(digest.to_string()))
            }
            Err(e) => Err(io_err("reading", &p)(e)),
        }
    }

    /// Moves a verified temp file in as `digest` (a concurrent writer of
    /// the same digest wrote the same bytes, so either rename wins).
    pub fn commit(&self, tmp: &Path, digest: &str) -> Result<PathBuf, BlobError> {
        let dest = self.path(digest)?;
        std::fs::rename(tmp, &dest).map_err(io_err("storing blob", &dest))?;
        Ok(dest)
    }

    fn objects_dir(&self) -> PathBuf {
        self.root.join("objects")
    }

    fn object_path(&self, key: &str) -> Result<PathBuf, BlobError> {
        check_key(key)?;
        Ok(self.objects_dir().join(key))
    }

    /// Copies `src` into the store as `digest`, verifying it on the way.
    fn put_file_sync(&self, digest: &str, src: &Path) -> Result<Put, BlobError> {
        digest_hex(digest)?;
        if let Some(size) = self.size(digest) {
            return Ok(Put {
                size,
                existed: true,
            });
        }
        let tmp = self.temp_path("put");
        let stored = (|| {
            let mut input = std::fs::File::open(src).map_err(io_err("opening", src))?;
            let mut output = std::fs::File::create(&tmp).map_err(io_err("creating", &tmp))?;
            let (actual, size) = copy_hashing(&mut input, src, &mut output, &tmp)?;
            output.sync_all().map_err(io_err("syncing", &tmp))?;
            check_digest(digest, actual, size)?;
            self.commit(&tmp, digest)?;
            Ok(Put {
                size,
                existed: false,
            })
        })();
        if stored.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        stored
    }

    /// Copies blob `digest` to `dest`, verifying it; removes `dest` on
    /// failure.
    fn get_to_file_sync(&self, digest: &str, dest: &Path) -> Result<u64, BlobError> {
        let mut input = self.open_blob(digest)?;
        let src = self.path(digest)?;
        let copied = (|| {
            let mut output = std::fs::File::create(dest).map_err(io_err("creating", dest))?;
            let (actual, size) = copy_hashing(&mut input, &src, &mut output, dest)?;
            check_digest(digest, actual, size)?;
            Ok(size)
        })();
        if copied.is_err() {
            let _ = std::fs::remove_file(dest);
        }
        copied
    }

    fn open_blob(&self, digest: &str) -> Result<std::fs::File, BlobError> {
        let p = self.path(digest)?;
        std::fs::File::open(&p).map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                BlobError::Missing(digest.to_string())
            } else {
                io_err("opening", &p)(e)
            }
        })
    }

    fn list_sync(&self) -> Result<Vec<BlobInfo>, BlobError> {
        let dir = self.root.join("blobs/sha256");
        let mut blobs = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let entry = entry.map_err(io_err("listing", &dir))?;
            let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
            if digest_hex(&digest).is_err() {
                continue;
            }
            let meta = match entry.metadata() {
                Ok(m) if m.is_file() => m,
                // Deleted since the directory was read, or not a blob.
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("reading", &entry.path())(e)),
            };
            blobs.push(BlobInfo {
                digest,
                size: meta.len(),
                modified: meta.modified().map_err(io_err("reading", &entry.path()))?,
            });
        }
        Ok(blobs)
    }

    fn put_object_sync(&self, key: &str, bytes: &[u8]) -> Result<(), BlobError> {
        let path = self.object_path(key)?;
        let tmp = self.temp_path("object");
        let parent = path.parent().unwrap_or(&self.root);
        // A concurrent delete may prune the parent directory between its
        // creation and the rename: create it again and retry.
        let mut attempts = 0;
        loop {
            std::fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
            match write_then_rename(&tmp, &path, bytes) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::NotFound && attempts < 3 => attempts += 1,
                Err(e) => return Err(io_err("writing", &path)(e)),
            }
        }
    }

    fn get_object_sync(&self, key: &str) -> Result<Option<Bytes>, BlobError> {
        let path = self.object_path(key)?;
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b.into())),
            Err(e) if absent(&e) => Ok(None),
            Err(e) => Err(io_err("reading", &path)(e)),
        }
    }

    fn delete_object_sync(&self, key: &str) -> Result<(), BlobError> {
        let path = self.object_path(key)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if absent(&e) => return Ok(()),
            Err(e) => return Err(io_err("removing", &path)(e)),
        }
        // Prune directories left empty, so listings stay quick; a failure
        // just means one is not empty (or is being filled again).
        let top = self.objects_dir();
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| *d != top) {
            if std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    fn list_objects_sync(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
        check_prefix(prefix)?;
        let top = self.objects_dir();
        // Walk only the deepest directory the prefix names whole.
        let base = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let start = if !base.is_empty() && check_key(base).is_ok() {
            top.join(base)
        } else {
            top.clone()
        };
        let mut keys = Vec::new();
        let mut dirs = vec![start];
        while let Some(dir) = dirs.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if absent(&e) => continue,
                Err(e) => return Err(io_err("listing", &dir)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(io_err("listing", &dir))?;
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                let path = entry.path();
                if kind.is_dir() {
                    dirs.push(path);
                } else if kind.is_file() {
                    let Some(key) = path
                        .strip_prefix(&top)
                        .ok()
                        .and_then(|rel| rel.to_str())
                        .map(|rel| rel.replace(std::path::MAIN_SEPARATOR, "/"))
                    else {
                        continue;
                    };
                    if key.starts_with(prefix) && check_key(&key).is_ok() {
                        keys.push(key);
                    }
                }
            }
        }
        keys.sort();
        Ok(keys)
    }
}

/// Whether an error means "no such file" (including a path through a
/// file, or a directory where an object was expected).
fn absent(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::IsADirectory
    )
}

/// Copies `input` to `output` in [`CHUNK`]s, hashing; returns the digest
/// and the size. (To hash only, copy to [`std::io::sink`].)
pub fn copy_hashing(
    input: &mut impl Read,
    input_path: &Path,
    output: &mut impl std::io::Write,
    output_path: &Path,
) -> Result<(String, u64), BlobError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("reading", input_path)(e)),
        };
        hasher.update(&buf[..n]);
        output
            .write_all(&buf[..n])
            .map_err(io_err("writing", output_path))?;
        size += n as u64;
    }
    output.flush().map_err(io_err("writing", output_path))?;
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
}

/// An open blob being streamed, hashed when read from the start.
struct Reading {
    file: std::fs::File,
    path: PathBuf,
    digest: String,
    hasher: Option<Sha256>,
    size: u64,
}

/// Reads the next chunk; `None` at the end of a good blob.
fn read_chunk(mut r: Reading) -> Option<(Result<Bytes, BlobError>, Option<Reading>)> {
    let mut buf = Vec::with_capacity(CHUNK);
    if let Err(e) = (&mut r.file).take(CHUNK as u64).read_to_end(&mut buf) {
        return Some((Err(io_err("reading", &r.path)(e)), None));
    }
    if buf.is_empty() {
        let hasher = r.hasher?;
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        return check_digest(&r.digest, actual, r.size)
            .err()
            .map(|e| (Err(e), None));
    }
    if let Some(h) = r.hasher.as_mut() {
        h.update(&buf);
    }
    r.size += buf.len() as u64;
    Some((Ok(Bytes::from(buf)), Some(r)))
}

#[async_trait]
impl BlobStore for FsBlobs {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    async fn stat(&self, digest: &str) -> Result<Option<u64>, BlobError> {
        digest_hex(digest)?;
        let (store, digest) = (self.clone(), digest.to_string());
        blocking(move || Ok(store.size(&digest))).await
    }

    async fn get(&self, digest: &str, offset: u64) -> Result<ByteStream, BlobError> {
        let (store, digest) = (self.clone(), digest.to_string());
        let first = blocking(move || {
            let mut file = store.open_blob(&digest)?;
            let path = store.path(&digest)?;
            if offset > 0 {
                file.seek(SeekFrom::Start(offset))
                    .map_err(io_err("seeking", &path))?;
            }
            Ok(Reading {
                file,
                path,
                hasher: (offset == 0).then(Sha256::new),
                digest,
                size: offset,
            })
        })
        .await?;
        let chunks = futures::stream::unfold(Some(first), |state| async move {
            let reading = state?;
            match blocking(move || Ok(read_chunk(reading))).await {
                Ok(next) => next,
                Err(e) => Some((Err(e), None)),
            }
        });
        Ok(Box::pin(chunks))
    }

    async fn get_to_file(&self, digest: &str, dest: &Path) -> Result<u64, BlobError> {
        let (store, digest, dest) = (self.clone(), digest.to_string(), dest.to_path_buf());
        blocking(move || store.get_to_file_sync(&digest, &dest)).await
    }

    async fn put_file(&self, digest: &str, src: &Path) -> Result<Put, BlobError> {
        let (store, digest, src) = (self.clone(), digest.to_string(), src.to_path_buf());
        blocking(move || store.put_file_sync(&digest, &src)).await
    }

    async fn put_bytes(&self, bytes: Bytes) -> Result<String, BlobError> {
        let store = self.clone();
        blocking(move || store.put_bytes_sync(&bytes)).await
    }

    async fn delete(&self, digest: &str) -> Result<(), BlobError> {
        let path = self.path(digest)?;
        blocking(move || match std::fs::remove_file(&path) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(io_err("removing", &path)(e)),
            _ => Ok(()),
        })
        .await
    }

    async fn list(&self) -> Result<Vec<BlobInfo>, BlobError> {
        let store = self.clone();
        blocking(move || store.list_sync()).await
    }

    async fn put_object(&self, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        let (store, key) = (self.clone(), key.to_string());
        blocking(move || store.put_object_sync(&key, &bytes)).await
    }

    async fn get_object(&self, key: &str) -> Result<Option<Bytes>, BlobError> {
        let (store, key) = (self.clone(), key.to_string());
        blocking(move || store.get_object_sync(&key)).await
    }

    async fn delete_object(&self, key: &str) -> Result<(), BlobError> {
        let (store, key) = (self.clone(), key.to_string());
        blocking(move || store.delete_object_sync(&key)).await
    }

    async fn list_objects(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
        let (store, prefix) = (self.clone(), prefix.to_string());
        blocking(move || store.list_objects_sync(&prefix)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_bytes_sync_is_idempotent_and_committed_files_move_in() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobs::open(dir.path()).unwrap();
        let digest = store.put_bytes_sync(b"config").unwrap();
        assert_eq!(store.put_bytes_sync(b"config").unwrap(), digest);
        assert_eq!(store.size(&digest), Some(6));

        let tmp = store.temp_path("test");
        std::fs::write(&tmp, b"layer").unwrap();
        let moved = store.commit(&tmp, &sha256_of(b"layer")).unwrap();
        assert!(!tmp.exists());
        assert_eq!(std::fs::read(moved).unwrap(), b"layer");
    }

    #[test]
    fn write_atomic_replaces_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.json");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new and longer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new and longer");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
