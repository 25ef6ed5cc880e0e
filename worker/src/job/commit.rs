//! Turning a finished step's snapshot into a layer: its blob in the store
//! and, where the snapshot's files can be linked, the layer unpacked for
//! the next steps on this worker.
//!
//! Where they can be linked (an overlay snapshot on the store's
//! filesystem) the commit comes in two parts, as BuildKit's next step
//! starts on its parent's snapshot without waiting for any blob:
//!
//! 1. [`commit`]: the layer's tar is written once, hashed (its diffID) and
//!    unpacked as it is written, its files hardlinked from the snapshot;
//!    nothing is compressed. The steps built on the layer can start here
//!    at once.
//! 2. [`PendingBlob::make`]: the same tar again, from the same list of
//!    changes, compressed, hashed and stored as the blob. The agent makes
//!    it when the CPUs have room for it or someone waits for the layer
//!    (`crate::headroom`), then uploads it. The second tar must hash to
//!    the first one's diffID, or the job fails; the snapshot is kept,
//!    untouched, until then.
//!
//! Elsewhere (a plain snapshot, whose files may be links into the
//! worker's context trees; an upper dir on another filesystem) the blob is
//! made at once and the layer is unpacked from it when a step needs it.

use super::JobError;
use crate::snapshot::{ChangeSource, Snapshot};
use crate::store::{Held, LayerRef, Store};
use std::path::PathBuf;
use std::sync::Arc;
use strata_oci::layer::{
    Change, Compression, LayerOptions, diff_id_teed, diff_upper, write_layer,
    write_layer_from_trees, write_layer_from_upper,
};
use tokio_util::task::task_tracker::TaskTrackerToken;

/// A committed step's layer.
pub(super) struct Committed {
    /// The layer; its blob fields are empty while `pending` is `Some`.
    pub(super) layer: LayerRef,
    /// The step changed nothing.
    pub(super) empty: bool,
    /// Keeps the layer (its unpacked dir, and its blob once made) from
    /// eviction; taken before either appears.
    pub(super) held: Held,
    /// The snapshot, for removal once nothing needs it (`None` when
    /// `pending` has it).
    pub(super) snapshot: Option<Box<dyn Snapshot>>,
    /// The blob still to make.
    pub(super) pending: Option<PendingBlob>,
}

/// A layer whose diffID is known and which is unpacked in the store, but
/// whose blob is still to be made from the snapshot it keeps.
pub struct PendingBlob {
    snapshot: Option<Box<dyn Snapshot>>,
    changes: Vec<Change>,
    store: Arc<Store>,
    compression: Compression,
    opts: LayerOptions,
    diff_id: String,
    /// Its tar's size.
    tar_size: u64,
    /// Keeps the worker's `wait_idle` waiting until the snapshot is gone.
    busy: Option<TaskTrackerToken>,
}

impl std::fmt::Debug for PendingBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingBlob")
            .field("diff_id", &self.diff_id)
            .field("changes", &self.changes.len())
            .finish_non_exhaustive()
    }
}

impl PendingBlob {
    /// The diffID the blob's tar must have.
    pub fn diff_id(&self) -> &str {
        &self.diff_id
    }

    /// The size of the layer's tar (uncompressed).
    pub fn tar_size(&self) -> u64 {
        self.tar_size
    }

    /// Makes the blob, stores it and removes the snapshot; returns the
    /// whole layer and a hold on the blob.
    pub async fn make(mut self) -> Result<(LayerRef, Held), JobError> {
        let span = tracing::info_span!("blob");
        tokio::task::spawn_blocking(move || span.in_scope(|| self.make_here()))
            .await
            .map_err(|_| JobError::Invalid("the thread making the layer's blob panicked".into()))?
    }

    fn make_here(&mut self) -> Result<(LayerRef, Held), JobError> {
        let tmp = self.store.temp_path("blob");
        let made = (|| {
            let file = std::fs::File::create(&tmp).map_err(|source| JobError::Io {
                op: "creating",
                path: tmp.clone(),
                source,
            })?;
            let desc = write_layer(
                &self.changes,
                std::io::BufWriter::new(file),
                self.compression,
                &self.opts,
            )?;
            if desc.diff_id != self.diff_id {
                return Err(JobError::Changed {
                    before: self.diff_id.clone(),
                    after: desc.diff_id,
                });
            }
            let held = self.store.hold(&[&desc.digest]);
            self.store.commit_blob(&tmp, &desc.digest)?;
            Ok((layer_ref(&desc), held))
        })();
        if made.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        // Unmount and delete the snapshot here, on this thread.
        drop(self.snapshot.take());
        made
    }
}

impl Drop for PendingBlob {
    fn drop(&mut self) {
        // Not made (the job stopped first): the snapshot is removed in the
        // background, as a committed step's is.
        let (Some(snapshot), busy) = (self.snapshot.take(), self.busy.take()) else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(move || {
                    drop(snapshot);
                    drop(busy);
                });
            }
            Err(_) => drop(snapshot),
        }
    }
}

fn layer_ref(desc: &strata_oci::layer::LayerDescriptor) -> LayerRef {
    LayerRef {
        diff_id: desc.diff_id.clone(),
        digest: desc.digest.clone(),
        media_type: desc.media_type.clone(),
        size: desc.size,
    }
}

/// Commits `snapshot` (the step's root over `lowers`, bottom first): in
/// two parts where its files can be linked (`pending` then set), else at
/// once. `busy` keeps the worker's idle wait waiting for a pending blob.
pub(super) fn commit(
    snapshot: Box<dyn Snapshot>,
    lowers: &[PathBuf],
    store: &Arc<Store>,
    compression: Compression,
    source_date_epoch: Option<i64>,
    busy: TaskTrackerToken,
) -> Result<Committed, JobError> {
    let opts = LayerOptions {
        source_date_epoch,
        ..LayerOptions::default()
    };
    let topmost_first: Vec<&PathBuf> = lowers.iter().rev().collect();
    match snapshot.change() {
        ChangeSource::Upper(upper) if !snapshot.plain() && store.links_from(&upper) => {
            let changes = diff_upper(&upper, &topmost_first, &opts)?;
            let (tee, tar) = strata_oci::layer::pipe::pipe();
            let (hashed, unpacked) = std::thread::scope(|s| {
                let (span, up) = (tracing::Span::current(), &upper);
                let unpacking =
                    s.spawn(move || span.in_scope(|| store.unpack_teed(tar, lowers, up)));
                let hashed = diff_id_teed(&changes, tee, &opts);
                (hashed, unpacking.join())
            });
            let (diff_id, tar_bytes) = match (hashed, unpacked) {
                (Ok(h), Ok(Ok(teed))) => {
                    let held = store.hold(&[&h.0]);
                    let linked = teed.linked;
                    match store.keep_unpacked(teed, &h.0) {
                        Ok(_) => tracing::debug!(linked, "the new layer is unpacked"),
                        // Without its unpacked dir no step can start on
                        // the layer before its blob: make it now.
                        Err(e) => {
                            tracing::warn!("keeping the new layer unpacked: {e}");
                            drop(held);
                            return commit_at_once(
                                snapshot,
                                &topmost_first,
                                store,
                                compression,
                                &opts,
                            );
                        }
                    }
                    (h, held)
                }
                (Err(e), unpacked) => {
                    if let Ok(Ok(teed)) = unpacked {
                        store.discard_unpacked(teed);
                    }
                    return Err(e.into());
                }
                (Ok(_), Ok(Err(e))) => {
                    tracing::warn!("unpacking the new layer as it was written: {e}");
                    return commit_at_once(snapshot, &topmost_first, store, compression, &opts);
                }
                (Ok(_), Err(_)) => {
                    tracing::warn!("unpacking the new layer as it was written panicked");
                    return commit_at_once(snapshot, &topmost_first, store, compression, &opts);
                }
            };
            let ((diff_id, size), held) = (diff_id, tar_bytes);
            Ok(Committed {
                layer: LayerRef {
                    diff_id: diff_id.clone(),
                    digest: String::new(),
                    media_type: compression.media_type().to_owned(),
                    size: 0,
                },
                // An empty tar is 1024 zero bytes.
                empty: size <= 1024,
                held,
                snapshot: None,
                pending: Some(PendingBlob {
                    snapshot: Some(snapshot),
                    changes,
                    store: Arc::clone(store),
                    compression,
                    opts,
                    diff_id,
                    tar_size: size,
                    busy: Some(busy),
                }),
            })
        }
        _ => commit_at_once(snapshot, &topmost_first, store, compression, &opts),
    }
}

/// Makes the blob of `snapshot`'s change now.
fn commit_at_once(
    snapshot: Box<dyn Snapshot>,
    topmost_first: &[&PathBuf],
    store: &Store,
    compression: Compression,
    opts: &LayerOptions,
) -> Result<Committed, JobError> {
    let tmp = store.temp_path("blob");
    let file = std::fs::File::create(&tmp).map_err(|source| JobError::Io {
        op: "creating",
        path: tmp.clone(),
        source,
    })?;
    let out = std::io::BufWriter::new(file);
    let desc = match snapshot.change() {
        ChangeSource::Upper(upper) => {
            write_layer_from_upper(&upper, topmost_first, out, compression, opts)
        }
        ChangeSource::Trees { lower } => {
            write_layer_from_trees(&lower, snapshot.merged(), out, compression, opts)
        }
    };
    let desc = match desc {
        Ok(d) => d,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
    };
    let held = store.hold(&[&desc.digest, &desc.diff_id]);
    store.commit_blob(&tmp, &desc.digest)?;
    Ok(Committed {
        layer: layer_ref(&desc),
        empty: desc.uncompressed_size <= 1024,
        held,
        snapshot: Some(snapshot),
        pending: None,
    })
}
