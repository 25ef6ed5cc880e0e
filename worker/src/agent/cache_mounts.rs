//! `RUN --mount=type=cache` shared across the fleet. Each cache
//! directory lives on the worker (`<state>/cache-mounts/<hash of id>`);
//! the scheduler tells a job the digest of the fleet's latest archive of
//! each cache it mounts. Before the step, a worker whose copy is not that
//! archive restores it; after the step, it archives the directory again
//! (a deterministic tar, zstd), and when the content changed uploads the
//! archive and reports its digest, which becomes the fleet's latest.
//! Concurrent writers: the last to finish wins, as with a cache directory
//! shared by concurrent steps on one machine. With `sharing=locked` the
//! steps of a worker take turns instead, as with BuildKit: the next one
//! mounts the cache when the one before has ended; with `sharing=private`
//! a step that finds the cache in use gets a new one of its own.
//!
//! `<state>/cache-mounts/<hash>.digest` records which archive the local
//! directory matches, so an unchanged cache is neither restored nor sent.

use super::RemoteBlobs;
use crate::job::{CacheMountUser, Worker, cache_mount_dir};
use crate::store::Store;
use std::path::{Path, PathBuf};
use strata_oci::layer::{Compression, LayerOptions, UnpackOptions, unpack, write_layer_from_trees};
use strata_proto::worker::v1 as wire;

/// A cache a job mounts.
pub(super) struct CacheUse {
    id: String,
    /// The fleet's latest archive; empty when there is none yet.
    digest: String,
    writable: bool,
    /// `sharing=locked`: one step of this worker at a time.
    locked: bool,
    /// `sharing=private`: a new cache for a step that finds it in use.
    private: bool,
    /// Owner and mode of the cache's root directory.
    uid: u32,
    gid: u32,
    mode: u32,
}

/// The cache mounts of an assignment.
pub(super) fn cache_mounts(a: &wire::JobAssignment) -> Vec<CacheUse> {
    let Some(wire::job_assignment::Instruction::Run(run)) = &a.instruction else {
        return Vec::new();
    };
    run.mounts
        .iter()
        .filter_map(|m| match &m.kind {
            Some(wire::mount::Kind::Cache(c)) => Some(CacheUse {
                id: c.id.clone(),
                digest: c.archive_digest.clone(),
                writable: !m.readonly,
                locked: c.sharing == wire::CacheSharing::Locked as i32,
                private: c.sharing == wire::CacheSharing::Private as i32,
                uid: c.uid,
                gid: c.gid,
                mode: if c.mode == 0 { 0o755 } else { c.mode },
            }),
            _ => None,
        })
        .collect()
}

fn marker(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".digest");
    dir.with_file_name(name)
}

fn recorded(dir: &Path) -> String {
    std::fs::read_to_string(marker(dir))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// What [`restore`] gives a job.
pub(super) struct Restored {
    /// The job's use of each cache (in `mounts`' order; `None` for a cache
    /// mounted twice by the step, counted once, or one of its own), to be
    /// held until [`save`] is done.
    pub(super) users: Vec<Option<CacheMountUser>>,
    /// `sharing=private` caches another step was using: (id, the id of
    /// the step's own new cache), for [`Restored::use_own`] and
    /// [`Restored::discard_own`].
    own: Vec<(String, String)>,
}

impl Restored {
    /// Points the job's mounts of caches it got a new one of at that one.
    pub(super) fn use_own(&self, job: &mut crate::job::Job) {
        let crate::job::JobAction::Run { mounts, .. } = &mut job.action else {
            return;
        };
        for m in mounts {
            if let crate::job::RunMount::Cache { id, .. } = m
                && let Some((_, own)) = self.own.iter().find(|(shared, _)| shared == id)
            {
                *id = own.clone();
            }
        }
    }

    /// Deletes the job's own new caches: nothing after it sees them.
    pub(super) fn discard_own(&self, worker: &Worker) {
        for (_, own) in &self.own {
            let _ = std::fs::remove_dir_all(cache_mount_dir(worker.state_dir(), own));
        }
    }
}

/// Brings every cache the job mounts up to the fleet's latest archive,
/// where no other step of this worker is using it (`None` when the job
/// was cancelled while it waited for a `sharing=locked` cache). A cache is a
/// cache: when the fleet's copy cannot be restored (it was pruned, the
/// store is down) the step gets this worker's copy, as it is, and a
/// warning.
pub(super) async fn restore(
    worker: &Worker,
    blobs: &RemoteBlobs,
    mounts: &[CacheUse],
    job_id: &str,
    cancel: &tokio_util::sync::CancellationToken,
) -> Option<Restored> {
    // `sharing=locked` caches first, in the order of their ids: two steps
    // locking the same caches cannot each wait for the other.
    let writable = |id: &str| mounts.iter().any(|o| o.id == id && o.writable);
    let locked: std::collections::BTreeSet<&str> = mounts
        .iter()
        .filter(|m| m.locked)
        .map(|m| m.id.as_str())
        .collect();
    let mut locked_users = std::collections::HashMap::new();
    for id in locked {
        // Waiting for another step is all that may be cut short: a swap
        // once started is finished.
        let user = tokio::select! {
            user = worker.cache_users().enter_locked(id, writable(id)) => user,
            () = cancel.cancelled() => return None,
        };
        locked_users.insert(id, user);
    }
    let private = |id: &str| mounts.iter().any(|o| o.id == id && o.private);
    let mut users = Vec::with_capacity(mounts.len());
    let mut own = Vec::new();
    for (i, m) in mounts.iter().enumerate() {
        let (id, digest) = (&m.id, &m.digest);
        if mounts[..i].iter().any(|o| o.id == *id) {
            users.push(None);
            continue;
        }
        let user = match locked_users.remove(id.as_str()) {
            Some(user) => Some(user),
            None if private(id) => worker.cache_users().enter_private(id, writable(id)),
            None => Some(worker.cache_users().enter(id, writable(id))),
        };
        let Some(mut user) = user else {
            // In use by another step here: a new, empty cache for this
            // step alone, never archived, gone after it.
            tracing::info!(cache = %id, "private cache mount in use by another step here: the step gets a new one");
            own.push((id.clone(), format!("{id}\u{0}private\u{0}{job_id}")));
            users.push(None);
            continue;
        };
        let dir = cache_mount_dir(worker.state_dir(), id);
        let failed = {
            let _one = user.restoring().await;
            if digest.is_empty() || recorded(&dir) == *digest {
                false
            } else if !user.alone() {
                tracing::info!(
                    cache = %id,
                    "cache mount in use by another step here: this worker's copy is used as it is"
                );
                false
            } else if let Err(e) = restore_one(worker, blobs, m, &dir).await {
                tracing::warn!(
                    cache = %id,
                    "restoring cache mount {id} from the fleet's copy {digest}: {e}; the step gets this worker's copy"
                );
                true
            } else {
                tracing::info!(cache = %id, %digest, "restored the fleet's copy of a cache mount");
                false
            }
        };
        user.restore_failed = failed;
        users.push(Some(user));
    }
    Some(Restored { users, own })
}

/// Replaces `dir` with cache `m`'s archive.
async fn restore_one(
    worker: &Worker,
    blobs: &RemoteBlobs,
    m: &CacheUse,
    dir: &Path,
) -> Result<(), String> {
    let digest = &m.digest;
    // Kept from eviction (another job ending) until it is unpacked.
    let _held = worker.store().hold(&[digest]);
    blobs.fetch(digest).await?;
    // Unpacked as found, an archive cut short would restore the cache
    // empty or fail every time: checked first (and, if damaged, removed,
    // so that the next job fetches it again).
    let (store, digest2) = (worker.store_arc(), digest.clone());
    tokio::task::spawn_blocking(move || store.verify_blob(&digest2))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let blob = worker
        .store()
        .blob_path(digest)
        .map_err(|e| e.to_string())?;
    let (dir2, digest2, owner) = (dir.to_path_buf(), digest.clone(), (m.uid, m.gid, m.mode));
    tokio::task::spawn_blocking(move || replace_with(&blob, &dir2, &digest2, owner))
        .await
        .map_err(|e| e.to_string())?
}

/// Unpacks archive `blob` next to `dir`, then swaps it in; only while no
/// step has `dir` mounted ([`restore`]): the old directory is deleted.
fn replace_with(
    blob: &Path,
    dir: &Path,
    digest: &str,
    (uid, gid, mode): (u32, u32, u32),
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let parent = dir.parent().ok_or("cache mount directory has no parent")?;
    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    let fresh = parent.join(format!(".restore-{}", uuid::Uuid::new_v4().simple()));
    let old = parent.join(format!(".old-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&fresh).map_err(|e| e.to_string())?;
    let unpacked = std::fs::File::open(blob)
        .map_err(|e| e.to_string())
        .and_then(|f| {
            unpack(
                std::io::BufReader::with_capacity(1 << 20, f),
                &fresh,
                &UnpackOptions::default(),
            )
            .map_err(|e| e.to_string())
        });
    let owned = unpacked.and_then(|_| {
        std::os::unix::fs::chown(&fresh, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(mode))
            .map_err(|e| e.to_string())
    });
    if let Err(e) = owned {
        let _ = std::fs::remove_dir_all(&fresh);
        return Err(e);
    }
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| e.to_string())?;
    }
    std::fs::rename(&fresh, dir).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&old);
    std::fs::write(marker(dir), digest).map_err(|e| e.to_string())
}

/// Archives every cache the job wrote to of which it is the last writer
/// out on this worker ([`CacheMountUser::claim_archive`]), unless its
/// restore failed (its copy is then not the fleet's to replace); uploads
/// the ones that changed and returns them for the job's result. The
/// step's layer is made by then: a cache that cannot be archived or
/// uploaded is left out with a warning, and the fleet keeps its copy.
pub(super) async fn save(
    worker: &Worker,
    blobs: &RemoteBlobs,
    mounts: &[CacheUse],
    users: &mut [Option<CacheMountUser>],
) -> Vec<wire::CacheMountArchive> {
    let mut out = Vec::new();
    for (m, user) in mounts.iter().zip(users) {
        let Some(user) = user else {
            continue;
        };
        let id = &m.id;
        let dir = cache_mount_dir(worker.state_dir(), id);
        if !user.claim_archive() || user.restore_failed || !dir.is_dir() {
            continue;
        }
        match save_one(worker, blobs, user, &dir).await {
            Ok(Some(digest)) => out.push(wire::CacheMountArchive {
                id: id.clone(),
                digest,
            }),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                cache = %id,
                "archiving cache mount {id}: {e}; the fleet keeps its copy"
            ),
        }
    }
    out
}

/// Archives and uploads `dir`; its digest if it changed. No step of this
/// worker mounts the cache while it is archived (the restore lock).
async fn save_one(
    worker: &Worker,
    blobs: &RemoteBlobs,
    user: &CacheMountUser,
    dir: &Path,
) -> Result<Option<String>, String> {
    let (store, d) = (worker.store_arc(), dir.to_path_buf());
    // Kept from eviction (another job ending) from before it is stored
    // until it is uploaded.
    let (digest, _held) = {
        let _no_mount = user.restoring().await;
        tokio::task::spawn_blocking(move || archive(&store, &d))
            .await
            .map_err(|e| e.to_string())??
    };
    if digest == recorded(dir) {
        return Ok(None);
    }
    blobs.upload(&digest).await?;
    std::fs::write(marker(dir), &digest).map_err(|e| e.to_string())?;
    Ok(Some(digest))
}

/// Writes `dir` as a deterministic zstd tar into the store; its digest,
/// and a hold on the blob taken before it appears.
fn archive(store: &Store, dir: &Path) -> Result<(String, crate::store::Held), String> {
    let empty = store.temp_path("cache-empty");
    let tmp = store.temp_path("cache-archive");
    std::fs::create_dir_all(&empty).map_err(|e| e.to_string())?;
    let result = std::fs::File::create(&tmp)
        .map_err(|e| e.to_string())
        .and_then(|f| {
            write_layer_from_trees(
                &empty,
                dir,
                std::io::BufWriter::with_capacity(1 << 20, f),
                Compression::ZSTD,
                &LayerOptions::default(),
            )
            .map_err(|e| e.to_string())
        });
    let _ = std::fs::remove_dir(&empty);
    let desc = match result {
        Ok(d) => d,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let held = store.hold(&[&desc.digest]);
    store
        .commit_blob(&tmp, &desc.digest)
        .map_err(|e| e.to_string())?;
    Ok((desc.digest, held))
}
