//! Layers unpacked in the store: from their blobs when a step needs them,
//! or as their tar is written when a step on this worker made them.

use super::{LayerRef, Store, StoreError, io_err};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use strata_oci::layer::{LayerError, UnpackOptions, unpack_to_overlay_layer_dir};

impl Store {
    /// Unpacks `layer` (its blob must be present) into its layer directory
    /// once; `parents` are the layers below it, bottom first. Verifies the
    /// diffID before the directory appears.
    pub fn ensure_unpacked(
        &self,
        layer: &LayerRef,
        parents: &[LayerRef],
    ) -> Result<PathBuf, StoreError> {
        let dir = self.layer_dir(&layer.diff_id)?;
        if dir.is_dir() {
            crate::evict::touch(&dir);
            return Ok(dir);
        }
        // Jobs starting together on one parent unpack it once: the others
        // wait here and find the directory.
        let _one = self.unpacking.lock_blocking(&layer.diff_id);
        if dir.is_dir() {
            crate::evict::touch(&dir);
            return Ok(dir);
        }
        let blob = self.blob_path(&layer.digest)?;
        let file = File::open(&blob).map_err(|_| StoreError::MissingBlob(layer.digest.clone()))?;
        let mut parent_dirs = Vec::with_capacity(parents.len());
        for p in parents.iter().rev() {
            parent_dirs.push(self.layer_dir(&p.diff_id)?);
        }
        let tmp = self.temp_path("layer");
        std::fs::create_dir_all(&tmp).map_err(io_err("creating", &tmp))?;
        let report = unpack_to_overlay_layer_dir(
            BufReader::with_capacity(1 << 20, file),
            &tmp,
            &parent_dirs,
            &UnpackOptions {
                max_bytes: self.max_layer_bytes.load(Ordering::Relaxed),
                ..UnpackOptions::default()
            },
        )
        .map_err(|source| match source {
            LayerError::LimitExceeded { what, limit, .. } if what == "bytes" => {
                StoreError::TooLarge {
                    digest: layer.digest.clone(),
                    what,
                    limit,
                }
            }
            source => StoreError::Unpack {
                digest: layer.digest.clone(),
                source,
            },
        });
        let report = match report {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                if matches!(e, StoreError::Unpack { .. }) {
                    self.drop_if_corrupt(&layer.digest);
                }
                return Err(e);
            }
        };
        if report.diff_id != layer.diff_id {
            let _ = std::fs::remove_dir_all(&tmp);
            self.drop_if_corrupt(&layer.digest);
            return Err(StoreError::DiffIdMismatch {
                digest: layer.digest.clone(),
                expected: layer.diff_id.clone(),
                actual: report.diff_id,
            });
        }
        self.unpacked.fetch_add(1, Ordering::Relaxed);
        self.install_unpacked(&tmp, &dir, report.tar_bytes)
    }

    /// How many layers were unpacked from their blobs since the store
    /// opened (not counting those unpacked as they were written).
    pub fn layers_unpacked(&self) -> u64 {
        self.unpacked.load(Ordering::Relaxed)
    }

    /// Moves a finished unpack from `tmp` to `dir`, its place in the store.
    fn install_unpacked(
        &self,
        tmp: &Path,
        dir: &Path,
        tar_bytes: u64,
    ) -> Result<PathBuf, StoreError> {
        crate::evict::record_size(&self.root, dir, tar_bytes);
        match std::fs::rename(tmp, dir) {
            Ok(()) => Ok(dir.to_path_buf()),
            // Another job unpacked the same layer meanwhile: use theirs.
            Err(_) if dir.is_dir() => {
                let _ = std::fs::remove_dir_all(tmp);
                Ok(dir.to_path_buf())
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(tmp);
                Err(io_err("storing layer", dir)(e))
            }
        }
    }

    /// Unpacks a layer's tar while it is being written (`tar` reads what
    /// the writer tees), hardlinking the files of `upper`, the snapshot it
    /// is made from and which is discarded next, instead of writing their
    /// data again: the layer the next step on this worker stacks on is
    /// ready when the commit ends, with no blob to decompress. The tree is
    /// the one unpacking the blob makes (`UnpackOptions::link_from`).
    /// `parents` are the unpacked layers below, bottom first. The result
    /// waits in a temporary directory for [`Store::keep_unpacked`] or
    /// [`Store::discard_unpacked`], once the writer has the diffID.
    pub fn unpack_teed(
        &self,
        tar: impl std::io::Read,
        parents: &[PathBuf],
        upper: &Path,
    ) -> Result<TeedUnpack, StoreError> {
        let tmp = self.temp_path("layer");
        std::fs::create_dir_all(&tmp).map_err(io_err("creating", &tmp))?;
        let topmost_first: Vec<&PathBuf> = parents.iter().rev().collect();
        let report = unpack_to_overlay_layer_dir(
            tar,
            &tmp,
            &topmost_first,
            &UnpackOptions {
                max_bytes: self.max_layer_bytes.load(Ordering::Relaxed),
                link_from: Some(upper.to_path_buf()),
                // The writer hashes the same bytes for the diffID.
                hash: false,
                ..UnpackOptions::default()
            },
        );
        match report {
            Ok(r) => Ok(TeedUnpack {
                tmp,
                tar_bytes: r.tar_bytes,
                linked: r.linked,
            }),
            Err(source) => {
                let _ = std::fs::remove_dir_all(&tmp);
                Err(StoreError::Unpack {
                    digest: "(the layer being committed)".into(),
                    source,
                })
            }
        }
    }

    /// Keeps a teed unpack as the unpacked form of `diff_id`.
    pub fn keep_unpacked(&self, teed: TeedUnpack, diff_id: &str) -> Result<PathBuf, StoreError> {
        let dir = self.layer_dir(diff_id)?;
        self.install_unpacked(&teed.tmp, &dir, teed.tar_bytes)
    }

    /// Drops a teed unpack (the layer was not committed).
    pub fn discard_unpacked(&self, teed: TeedUnpack) {
        let _ = std::fs::remove_dir_all(&teed.tmp);
    }

    /// Takes the unpacked form of `diff_id` out of the store at once (no
    /// job finds it from now on: it is not what the diffID names) and
    /// deletes it unless a job holds it; a held one is left in `tmp/`,
    /// under the running steps' mounts, until the store next opens.
    pub fn discard_layer(&self, diff_id: &str) {
        let Ok(dir) = self.layer_dir(diff_id) else {
            return;
        };
        let gone = self.temp_path("discarded");
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let _ = std::fs::remove_file(crate::evict::size_file(&self.root, &dir));
        match std::fs::rename(&dir, &gone) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!("removing the unpacked layer {diff_id}: {e}");
                return;
            }
        }
        if held.contains_key(diff_id) {
            return;
        }
        drop(held);
        if let Err(e) = std::fs::remove_dir_all(&gone) {
            tracing::warn!("deleting {}: {e}", gone.display());
        }
    }

    /// The diffIDs of every unpacked layer (reported to the scheduler).
    pub fn layers_held(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.root.join("layers")) else {
            return Vec::new();
        };
        let mut out: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
            .collect();
        out.sort();
        out
    }
}

/// A layer unpacked by [`Store::unpack_teed`], not yet in its place.
#[derive(Debug)]
pub struct TeedUnpack {
    tmp: PathBuf,
    tar_bytes: u64,
    /// Files hardlinked from the snapshot rather than written.
    pub linked: u64,
}
