//! Keeping the worker's local store under a size limit: the least
//! recently used unpacked layers and blobs go first, never those a
//! running job reads. Each layer directory's and blob's mtime is its last
//! use (touched whenever a job uses it: [`Store::ensure_unpacked`],
//! [`Store::has_blob`]) and `layer-sizes/<hex>` records its unpacked
//! size (the layer's tar size), so eviction never walks a tree. The size
//! is kept beside the layer directory, never in it: that directory is an
//! overlay lowerdir, and every step stacked on it would see the file.

use crate::store::Store;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Where sizes are recorded, under the store's root.
const SIZES: &str = "layer-sizes";
/// Where stores before 2026-11-30 kept a layer's size: inside it.
const OLD_SIZE_FILE: &str = ".strata-size";

/// Marks a layer directory or a blob as used now.
pub(crate) fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Where the store under `store_root` records its layers' sizes.
pub(crate) fn sizes_dir(store_root: &Path) -> PathBuf {
    store_root.join(SIZES)
}

/// The file recording the size of the layer directory `dir`.
pub(crate) fn size_file(store_root: &Path, dir: &Path) -> PathBuf {
    store_root
        .join(SIZES)
        .join(dir.file_name().unwrap_or_default())
}

/// Records the size of the layer directory `dir` (about to appear).
pub(crate) fn record_size(store_root: &Path, dir: &Path, bytes: u64) {
    let file = size_file(store_root, dir);
    if let Some(parent) = file.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let _ = std::fs::write(file, bytes.to_string());
}

/// The recorded size of the layer directory `dir`; when the record is
/// missing (lost to a race with eviction, or a failed write), the tree is
/// measured once and the size recorded again.
fn layer_size(store_root: &Path, dir: &Path) -> u64 {
    let recorded = std::fs::read_to_string(size_file(store_root, dir))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    recorded.unwrap_or_else(|| {
        let measured = tree_bytes(dir);
        record_size(store_root, dir, measured);
        measured
    })
}

/// The bytes of every file under `dir`, not following symlinks.
fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(read) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in read.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => total = total.saturating_add(e.metadata().map_or(0, |m| m.len())),
                Err(_) => {}
            }
        }
    }
    total
}

/// Marks a store whose layer directories no longer hold size files.
const MIGRATED: &str = ".moved-out-of-layers";

/// Moves the sizes older stores kept inside their layer directories out
/// of them, so no step sees them. Run when the store opens, before any
/// job stacks on the layers, and only once per store: afterwards a
/// `.strata-size` in a layer directory is the image's own file. A layer
/// that has a record already is left alone for the same reason. The
/// directory's mtime (its last use, for eviction) is kept.
pub(crate) fn move_old_size_files(store_root: &Path) {
    let sizes = store_root.join(SIZES);
    if sizes.join(MIGRATED).exists() {
        return;
    }
    let _ = std::fs::create_dir_all(&sizes);
    if let Ok(read) = std::fs::read_dir(store_root.join("layers")) {
        for e in read.flatten() {
            let (dir, old) = (e.path(), e.path().join(OLD_SIZE_FILE));
            let new = size_file(store_root, &dir);
            if !old.is_file() || new.exists() {
                continue;
            }
            let used = std::fs::metadata(&dir).and_then(|m| m.modified()).ok();
            if std::fs::rename(&old, &new).is_err() {
                let _ = std::fs::remove_file(&old);
            }
            if let (Some(t), Ok(f)) = (used, std::fs::File::open(&dir)) {
                let _ = f.set_modified(t);
            }
        }
    }
    let _ = std::fs::write(sizes.join(MIGRATED), b"");
}

/// What an eviction removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Evicted {
    /// DiffIDs of the layer directories removed.
    pub layers: Vec<String>,
    /// Digests of the blobs removed.
    pub blobs: Vec<String>,
    /// Bytes freed (layer sizes as recorded, blob sizes).
    pub bytes: u64,
}

struct Entry {
    path: PathBuf,
    id: String,
    size: u64,
    used: SystemTime,
    layer: bool,
}

impl Store {
    /// Bytes the store holds: recorded layer sizes plus blob sizes.
    pub fn usage(&self) -> u64 {
        self.entries()
            .iter()
            .fold(0u64, |t, e| t.saturating_add(e.size))
    }

    fn entries(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        let modified = |p: &Path| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH)
        };
        for (dir, layer) in [("layers", true), ("blobs/sha256", false)] {
            let Ok(read) = std::fs::read_dir(self.root().join(dir)) else {
                continue;
            };
            for e in read.flatten() {
                let path = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if name.len() != 64 {
                    continue;
                }
                let size = if layer {
                    layer_size(self.root(), &path)
                } else {
                    e.metadata().map(|m| m.len()).unwrap_or(0)
                };
                out.push(Entry {
                    used: modified(&path),
                    path,
                    id: format!("sha256:{name}"),
                    size,
                    layer,
                });
            }
        }
        out
    }

    /// Removes least recently used layers and blobs until the store holds
    /// at most `limit` bytes, skipping what is held ([`Store::hold`]: what
    /// running jobs read, layers just made until they are uploaded). A
    /// limit the kept entries alone exceed is reached as nearly as it can
    /// be. A layer directory leaves `layers/` in one rename before it is
    /// deleted (from `tmp/`, which the store empties when it opens), so
    /// neither a job nor a worker killed meanwhile sees it half deleted.
    pub fn evict(&self, limit: u64) -> Evicted {
        // One eviction at a time: two jobs ending together would each
        // remove the same excess from the same snapshot of the store.
        let _one = self.evicting.lock().unwrap_or_else(|e| e.into_inner());
        let mut entries = self.entries();
        let mut total: u64 = entries.iter().fold(0u64, |t, e| t.saturating_add(e.size));
        let mut out = Evicted::default();
        if total <= limit {
            return out;
        }
        entries.sort_by_key(|e| e.used);
        for e in entries {
            if total <= limit {
                break;
            }
            // Moved out of the store's view under the hold lock (a job
            // holding it then finds it whole or gone, never half deleted),
            // deleted outside it (a big tree or blob takes a while, and
            // holds wait on the lock); tmp/ is emptied when the store
            // next opens.
            let gone = self.temp_path("evicted");
            let Some(removed) = self.remove_unless_held(&e.id, || {
                if e.layer {
                    // The record first: an unpack of the same layer racing
                    // this removal records its size after it, not before.
                    let _ = std::fs::remove_file(size_file(self.root(), &e.path));
                }
                std::fs::rename(&e.path, &gone)
            }) else {
                continue;
            };
            if removed.is_ok() {
                let deleted = if e.layer {
                    std::fs::remove_dir_all(&gone)
                } else {
                    std::fs::remove_file(&gone)
                };
                if let Err(err) = deleted {
                    tracing::warn!("deleting evicted {}: {err}", gone.display());
                }
            }
            match removed {
                Ok(()) => {
                    total = total.saturating_sub(e.size);
                    out.bytes += e.size;
                    if e.layer {
                        out.layers.push(e.id);
                    } else {
                        out.blobs.push(e.id);
                    }
                }
                Err(err) => tracing::warn!("evicting {}: {err}", e.path.display()),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn fake_layer(store: &Store, n: u8, size: u64, age_secs: u64) -> String {
        let id = format!("sha256:{}", hex::encode([n; 32]));
        let dir = store.layer_dir(&id).unwrap();
        std::fs::create_dir_all(dir.join("usr")).unwrap();
        record_size(store.root(), &dir, size);
        let f = std::fs::File::open(&dir).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(age_secs))
            .unwrap();
        id
    }

    #[test]
    fn least_recently_used_go_first_and_in_use_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let oldest = fake_layer(&store, 1, 400, 300);
        let old_in_use = fake_layer(&store, 2, 400, 200);
        let recent = fake_layer(&store, 3, 400, 10);
        assert_eq!(store.usage(), 1200);
        // A running job reads it: held from its assignment.
        let _read = store.hold(&[&old_in_use]);
        let evicted = store.evict(900);
        assert_eq!(evicted.layers, vec![oldest.clone()]);
        assert_eq!(evicted.bytes, 400);
        // Down to 500: the in-use one is skipped, the recent one goes next.
        let evicted = store.evict(500);
        assert_eq!(evicted.layers, vec![recent.clone()]);
        assert_eq!(store.layers_held(), vec![old_in_use.clone()]);
        // Touching marks use: a later eviction keeps the touched layer.
        let a = fake_layer(&store, 4, 100, 500);
        let b = fake_layer(&store, 5, 100, 400);
        touch(&store.layer_dir(&a).unwrap());
        let evicted = store.evict(500);
        assert_eq!(evicted.layers, vec![b.clone()]);
        assert!(store.layers_held().contains(&a));
        // An evicted layer's size goes with it, and nothing of it is left
        // behind (it left layers/ for tmp/ in one rename, then went).
        assert!(!size_file(store.root(), &store.layer_dir(&b).unwrap()).exists());
        let left: Vec<_> = std::fs::read_dir(dir.path().join("tmp"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn jobs_ending_together_evict_the_excess_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for n in 0..40 {
            fake_layer(&store, n, 100, 1000 - u64::from(n));
        }
        // 100 bytes over: one layer goes, however many evict at once.
        let evicted: u64 = std::thread::scope(|s| {
            let runs: Vec<_> = (0..4).map(|_| s.spawn(|| store.evict(3900))).collect();
            runs.into_iter().map(|r| r.join().unwrap().bytes).sum()
        });
        assert_eq!(evicted, 100);
        assert_eq!(store.usage(), 3900);
        assert_eq!(store.layers_held().len(), 39);
    }

    #[test]
    fn a_layer_held_while_it_uploads_stays_whatever_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = fake_layer(&store, 1, 400, 300);
        // Just made (the newest), bigger than the whole limit, and not
        // read by any running job: only the hold keeps it.
        let new = fake_layer(&store, 2, 800, 0);
        let held = store.hold(&[&new]);
        let again = store.hold(&[&new]);
        let evicted = store.evict(100);
        assert_eq!(evicted.layers, vec![old]);
        assert_eq!(store.layers_held(), vec![new.clone()]);
        // Holds nest: the layer stays until the last one goes.
        drop(held);
        assert!(store.evict(100).layers.is_empty());
        drop(again);
        assert_eq!(store.evict(100).layers, vec![new]);
    }

    #[test]
    fn sizes_kept_inside_layers_by_older_stores_move_out_when_the_store_opens() {
        // A store as older workers left it: no layer-sizes/, the size in
        // the layer directory.
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("layers").join(hex::encode([7u8; 32]));
        std::fs::create_dir_all(&layer).unwrap();
        std::fs::write(layer.join(OLD_SIZE_FILE), "4096").unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(!layer.join(OLD_SIZE_FILE).exists(), "still in the lowerdir");
        assert_eq!(store.usage(), 4096);
        // Once moved, a `.strata-size` in a layer is the image's own file.
        std::fs::write(layer.join(OLD_SIZE_FILE), "an image's file").unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(layer.join(OLD_SIZE_FILE).exists(), "image content moved");
        assert_eq!(store.usage(), 4096);
    }

    #[test]
    fn a_layer_without_a_size_record_is_measured_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = format!("sha256:{}", hex::encode([9u8; 32]));
        let layer = store.layer_dir(&id).unwrap();
        std::fs::create_dir_all(layer.join("usr/bin")).unwrap();
        std::fs::write(layer.join("usr/bin/tool"), vec![0u8; 3000]).unwrap();
        std::fs::write(layer.join("etc"), vec![0u8; 96]).unwrap();
        assert_eq!(store.usage(), 3096);
        assert!(size_file(store.root(), &layer).exists(), "recorded again");
    }
}
