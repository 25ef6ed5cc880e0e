//! A `BuildRequest` checked and turned into what a build needs: the
//! context manifest (every file uploaded), options, a fail-fast plan.

use super::blob::status as blob_status;
use super::build::image_status;
use crate::Inner;
use crate::blobs::ReadError;
use crate::build::BuildInput;
use crate::images::normalise;
use futures::StreamExt;
use std::collections::BTreeMap;
use strata_frontend::context::{ContextEntry, ContextManifest, EntryKind};
use strata_frontend::hosts::ExtraHost;
use strata_frontend::plan::{Offline, PlanOptions, Platform, plan_dockerfile};
use strata_proto::build::v1 as build;
use strata_proto::common::v1 as common;
use tonic::Status;

/// Largest context manifest read from a blob (`ContextRef.manifest_digest`):
/// far above a million entries' worth (the entry limit), and a bound on
/// what one request can make the scheduler hold in memory.
const MAX_MANIFEST_BYTES: u64 = 256 << 20;

/// `bytes` for people: whole KiB, MiB or GiB when it is one, else with a
/// decimal, and the exact count when rounded.
pub(super) fn size_text(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (unit, name) in UNITS {
        if bytes >= unit {
            return if bytes.is_multiple_of(unit) {
                format!("{} {name}", bytes / unit)
            } else {
                format!("{:.1} {name} ({bytes} bytes)", bytes as f64 / unit as f64)
            };
        }
    }
    format!("{bytes} bytes")
}

/// The bytes of blob `digest`, `what` the request names by digest, if it
/// holds at most `max`.
async fn read_named(inner: &Inner, digest: &str, max: u64, what: &str) -> Result<Vec<u8>, Status> {
    inner
        .blobs
        .read_at_most(digest, max)
        .await
        .map_err(|e| match e {
            ReadError::TooLarge { size, max, .. } => Status::invalid_argument(format!(
                "{what} ({digest}) holds {}, more than the limit of {}",
                size_text(size),
                size_text(max)
            )),
            ReadError::Blob(e) => blob_status(e),
        })
}

pub(super) fn manifest_from(wire: &common::ContextManifest) -> Result<ContextManifest, Status> {
    let mut entries = Vec::with_capacity(wire.entries.len());
    for e in &wire.entries {
        let kind = match common::EntryKind::try_from(e.kind) {
            Ok(common::EntryKind::File) => EntryKind::File,
            Ok(common::EntryKind::Directory) => EntryKind::Dir,
            Ok(common::EntryKind::Symlink) => EntryKind::Symlink,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "context entry {:?}: unknown kind {}",
                    e.path, e.kind
                )));
            }
        };
        if e.path.is_empty()
            || e.path.starts_with('/')
            || e.path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(Status::invalid_argument(format!(
                "context entry {:?}: not a clean relative path",
                e.path
            )));
        }
        entries.push(ContextEntry {
            path: e.path.clone(),
            kind,
            mode: e.mode & 0o7777,
            uid: e.uid,
            gid: e.gid,
            size: e.size,
            digest: (!e.digest.is_empty()).then(|| e.digest.clone()),
            link_target: (kind == EntryKind::Symlink).then(|| e.link_target.clone()),
            mtime: e.mtime.map(|t| (t.seconds, t.nanos.max(0) as u32)),
            hardlink: (!e.hardlink.is_empty()).then(|| e.hardlink.clone()),
        });
    }
    Ok(ContextManifest::from_entries(entries))
}

pub(super) fn platform_of(p: Option<&common::Platform>) -> Result<Platform, Status> {
    let mut out = Platform::default();
    if let Some(p) = p {
        if !p.os.is_empty() {
            out.os = p.os.clone();
        }
        if !p.architecture.is_empty() {
            out.architecture = p.architecture.clone();
        }
        out.variant = p.variant.clone();
    }
    Ok(out)
}

/// Validates a build request into what the build needs.
pub(crate) async fn build_input(
    inner: &Inner,
    req: &build::BuildRequest,
) -> Result<BuildInput, Status> {
    let limits = strata_frontend::limits::Limits::default();
    let dockerfile = match &req.dockerfile {
        Some(build::build_request::Dockerfile::DockerfileContent(b)) => b.clone(),
        Some(build::build_request::Dockerfile::DockerfileDigest(d)) => {
            read_named(
                inner,
                d,
                limits.max_dockerfile_bytes as u64,
                "the Dockerfile",
            )
            .await?
        }
        None => return Err(Status::invalid_argument("the request has no Dockerfile")),
    };
    let name = if req.dockerfile_path.is_empty() {
        "Dockerfile".to_string()
    } else {
        req.dockerfile_path.clone()
    };
    let manifest = match req.context.as_ref().and_then(|c| c.manifest.as_ref()) {
        Some(common::context_ref::Manifest::Inline(m)) => manifest_from(m)?,
        Some(common::context_ref::Manifest::ManifestDigest(d)) => {
            let bytes = read_named(inner, d, MAX_MANIFEST_BYTES, "the context manifest").await?;
            let m = <common::ContextManifest as prost::Message>::decode(bytes.as_slice())
                .map_err(|e| Status::invalid_argument(format!("context manifest {d}: {e}")))?;
            manifest_from(&m)?
        }
        None => ContextManifest::default(),
    };
    if manifest.entries.len() > limits.max_context_entries {
        return Err(Status::invalid_argument(format!(
            "the build context has {} entries, more than the limit of {}; add what the build does not need to .dockerignore",
            manifest.entries.len(),
            limits.max_context_entries
        )));
    }
    let max_context = inner.config.max_context_bytes;
    let context_bytes = manifest
        .entries
        .iter()
        .fold(0u64, |sum, e| sum.saturating_add(e.size));
    if context_bytes > max_context {
        return Err(Status::invalid_argument(format!(
            "the build context holds {}, more than this scheduler's limit of {} (--max-context-bytes); add what the build does not need to .dockerignore",
            size_text(context_bytes),
            size_text(max_context)
        )));
    }
    // Every context file must be in the store (a shared store answers
    // one HEAD per blob: ask many at once, each digest once).
    let mut files: BTreeMap<&str, &str> = BTreeMap::new();
    for e in &manifest.entries {
        if e.kind == EntryKind::File {
            files
                .entry(e.digest.as_deref().unwrap_or_default())
                .or_insert(&e.path);
        }
    }
    let files: Vec<(String, String)> = files
        .into_iter()
        .map(|(d, p)| (d.to_string(), p.to_string()))
        .collect();
    let blobs = &inner.blobs;
    let stats: Vec<_> = futures::stream::iter(files)
        .map(|(digest, path)| async move {
            let stat = blobs.stat(&digest).await;
            (digest, path, stat)
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut missing = None;
    let mut sizes = BTreeMap::new();
    for (digest, path, stat) in stats {
        match stat.map_err(blob_status)? {
            Some(size) => {
                sizes.insert(digest, size);
            }
            None => missing = Some((digest, path)),
        }
    }
    if let Some((digest, path)) = missing {
        return Err(Status::failed_precondition(format!(
            "context file {path:?} ({digest}) was not uploaded; call FindMissingBlobs and UploadBlobs first"
        )));
    }
    // The limit above summed the sizes the client declared: each must be
    // its blob's real one.
    for e in &manifest.entries {
        let real = e.digest.as_ref().and_then(|d| sizes.get(d));
        if e.kind == EntryKind::File
            && let Some(&real) = real
            && real != e.size
        {
            return Err(Status::invalid_argument(format!(
                "context file {:?} is declared as {} bytes but its uploaded blob {} holds {real}; the file changed while the context was read, or the client is broken",
                e.path,
                e.size,
                e.digest.as_deref().unwrap_or_default()
            )));
        }
    }
    let namespace = if req.namespace.is_empty() {
        crate::cache::DEFAULT_NAMESPACE.to_string()
    } else {
        req.namespace.clone()
    };
    crate::cache::check_namespace(&namespace)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    for t in &req.tags {
        normalise(t).map_err(image_status)?;
    }
    if req.labels.keys().any(String::is_empty) {
        return Err(Status::invalid_argument("--label: a label's key is empty"));
    }
    let options = PlanOptions {
        build_args: req.build_args.clone().into_iter().collect(),
        target: (!req.target.is_empty()).then(|| req.target.clone()),
        platform: platform_of(req.platforms.first())?,
        no_cache: req.no_cache,
        no_cache_filter: req.no_cache_filter.clone(),
        labels: req.labels.clone().into_iter().collect(),
        extra_hosts: req
            .add_hosts
            .iter()
            .map(|h| ExtraHost::parse(h).map(|h| h.wire()))
            .collect::<Result<_, _>>()
            .map_err(Status::invalid_argument)?,
        ..PlanOptions::default()
    };
    // Fail fast on what needs no base image: syntax, flags, unknown
    // stages, missing context files.
    let plan = plan_dockerfile(&dockerfile, Some(&manifest), &options, &Offline)
        .map_err(|e| Status::invalid_argument(e.with_file(&name).to_string()))?;
    check_entitlements(inner, req, &plan, &name)?;
    let network = match common::NetworkMode::try_from(req.network_mode) {
        Ok(common::NetworkMode::None) => "none",
        Ok(common::NetworkMode::Host) => "host",
        _ => "default",
    };
    Ok(BuildInput {
        dockerfile,
        dockerfile_name: name,
        manifest,
        options,
        secrets: req
            .secrets
            .iter()
            .map(|s| (s.id.clone(), s.value.clone()))
            .collect::<BTreeMap<_, _>>(),
        source_date_epoch: req.source_date_epoch.map(|t| t.seconds),
        tags: req.tags.clone(),
        network: network.to_string(),
        pull: req.pull,
        namespace,
    })
}

/// `RUN --security=insecure` runs a step with every capability of the
/// worker: as BuildKit, it needs the `security.insecure` entitlement asked
/// for by the client (`strata build --allow security.insecure`) and
/// allowed by the operator (`--allow-insecure-entitlement
/// security.insecure`).
fn check_entitlements(
    inner: &Inner,
    req: &build::BuildRequest,
    plan: &strata_frontend::plan::BuildPlan,
    dockerfile: &str,
) -> Result<(), Status> {
    const INSECURE: &str = "security.insecure";
    let Some(step) = plan.steps.iter().find(|s| {
        matches!(&s.action, strata_frontend::plan::Action::Run { security, .. } if security == "insecure")
    }) else {
        return Ok(());
    };
    let at = format!("{dockerfile}:{}: {}", step.line, step.instruction);
    if !inner.config.allowed_entitlements.contains(INSECURE) {
        return Err(Status::permission_denied(format!(
            "{at}: the entitlement {INSECURE} is not allowed by this scheduler (its operator can start it with --allow-insecure-entitlement {INSECURE})"
        )));
    }
    if !req.entitlements.iter().any(|e| e == INSECURE) {
        return Err(Status::permission_denied(format!(
            "{at}: needs the entitlement {INSECURE}: pass --allow {INSECURE} to strata build"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::size_text;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size_text(512), "512 bytes");
        assert_eq!(size_text(1 << 20), "1 MiB");
        assert_eq!(size_text(32 << 30), "32 GiB");
        assert_eq!(size_text(3 << 19), "1.5 MiB (1572864 bytes)");
    }
}
