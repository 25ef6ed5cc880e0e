//! The build context on the wire: the frontend's manifest as a
//! `strata.common.v1.ContextManifest`.

use sha2::{Digest as _, Sha256};
use std::path::Path;
use strata_frontend::context::{ContextEntry, ContextManifest, EntryKind};
use strata_proto::common::v1 as common;

/// Converts one entry. Per the wire contract only regular files carry a
/// size and digest (a symlink's target is its content).
pub fn entry_to_proto(e: &ContextEntry) -> common::ContextEntry {
    let (kind, size, digest, link_target) = match e.kind {
        EntryKind::File => (
            common::EntryKind::File,
            e.size,
            e.digest.clone().unwrap_or_default(),
            String::new(),
        ),
        EntryKind::Dir => (
            common::EntryKind::Directory,
            0,
            String::new(),
            String::new(),
        ),
        EntryKind::Symlink => (
            common::EntryKind::Symlink,
            0,
            String::new(),
            e.link_target.clone().unwrap_or_default(),
        ),
    };
    common::ContextEntry {
        path: e.path.clone(),
        kind: kind.into(),
        mode: e.mode & 0o7777,
        uid: e.uid,
        gid: e.gid,
        size,
        digest,
        link_target,
        mtime: e.mtime.map(|(seconds, nanos)| prost_types::Timestamp {
            seconds,
            nanos: i32::try_from(nanos).unwrap_or(0),
        }),
        xattrs: Default::default(),
        hardlink: e.hardlink.clone().unwrap_or_default(),
    }
}

/// The wire manifest of a context: every entry (with the modification
/// times the walk recorded; COPY keeps them, as BuildKit does, and they are
/// never part of a cache key), and the digest of the `.dockerignore` under
/// `root` that the walk applied.
pub fn manifest_to_proto(
    manifest: &ContextManifest,
    root: Option<&Path>,
) -> common::ContextManifest {
    let entries = manifest.entries.iter().map(entry_to_proto).collect();
    let dockerignore_digest = root
        .and_then(|r| std::fs::read(r.join(".dockerignore")).ok())
        .map(|b| sha256_digest(&b))
        .unwrap_or_default();
    common::ContextManifest {
        entries,
        dockerignore_digest,
    }
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}
