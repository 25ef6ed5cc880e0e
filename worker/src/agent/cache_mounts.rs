//! `RUN --mount=type=cache` shared across the fleet. Each cache
//! directory lives on the worker (`<state>/cache-mounts/<hash of id>`);
//! the scheduler tells a job the digest of the fleet's latest archive of
//! each cache it mounts. Before the step, a worker whose copy is not that
//! archive restores it; after the step, it archives the directory again
//! (a deterministic tar, zstd), and when the content changed uploads the
//! archive and reports its digest, which becomes the fleet's latest.
//! Concurrent writers: the last to finish wins, as with a cache directory
//! shared by concurrent steps on one machine.
//!
//! `<state>/cache-mounts/<hash>.digest` records which archive the local
//! directory matches, so an unchanged cache is neither restored nor sent.

use super::RemoteBlobs;
use crate::job::{Worker, cache_mount_dir};
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

/// Brings every cache the job mounts up to the fleet's latest archive.
pub(super) async fn restore(
    worker: &Worker,
    blobs: &RemoteBlobs,
    mounts: &[CacheUse],
) -> Result<(), String> {
    for m in mounts {
        let (id, digest) = (&m.id, &m.digest);
        let dir = cache_mount_dir(worker.state_dir(), id);
        if digest.is_empty() || recorded(&dir) == *digest {
            continue;
        }
        blobs.fetch(digest).await?;
        // Unpacked as found, an archive cut short would restore the cache
        // empty or fail every time: checked first (and, if damaged,
        // removed, so that the next job fetches it again).
        let (store, digest2) = (worker.store_arc(), digest.clone());
        tokio::task::spawn_blocking(move || store.verify_blob(&digest2))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("restoring cache mount {id}: {e}"))?;
        let blob = worker
            .store()
            .blob_path(digest)
            .map_err(|e| e.to_string())?;
        let (dir2, digest2, owner) = (dir.clone(), digest.clone(), (m.uid, m.gid, m.mode));
        tokio::task::spawn_blocking(move || replace_with(&blob, &dir2, &digest2, owner))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("restoring cache mount {id}: {e}"))?;
        tracing::info!(cache = %id, %digest, "restored the fleet's copy of a cache mount");
    }
    Ok(())
}

/// Unpacks archive `blob` next to `dir`, then swaps it in (a step already
/// running with the old directory keeps it until it ends).
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

/// Archives every writable cache the job mounted; uploads the ones that
/// changed and returns them for the job's result.
pub(super) async fn save(
    worker: &Worker,
    blobs: &RemoteBlobs,
    mounts: &[CacheUse],
) -> Result<Vec<wire::CacheMountArchive>, String> {
    let mut out = Vec::new();
    for m in mounts {
        let id = &m.id;
        let dir = cache_mount_dir(worker.state_dir(), id);
        if !m.writable || !dir.is_dir() {
            continue;
        }
        let (store, d) = (worker.store_arc(), dir.clone());
        let digest = tokio::task::spawn_blocking(move || archive(&store, &d))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("archiving cache mount {id}: {e}"))?;
        if digest == recorded(&dir) {
            continue;
        }
        blobs.upload(&digest).await?;
        std::fs::write(marker(&dir), &digest).map_err(|e| e.to_string())?;
        out.push(wire::CacheMountArchive {
            id: id.clone(),
            digest,
        });
    }
    Ok(out)
}

/// Writes `dir` as a deterministic zstd tar into the store; its digest.
fn archive(store: &Store, dir: &Path) -> Result<String, String> {
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
    store
        .commit_blob(&tmp, &desc.digest)
        .map_err(|e| e.to_string())?;
    Ok(desc.digest)
}
