//! What is kept of a finished build: its event log and summary in the
//! durable store and the state (`strata builds`), and the count of builds
//! still settling that a scheduler shutting down waits for.

use crate::Inner;
use std::collections::BTreeMap;
use strata_proto::build::v1 as build;

use super::handle::BuildHandle;

/// Counts a build in [`Inner::settling`] from its start until its log is
/// saved and its journal dropped (or its task is dropped).
pub(super) struct Settling<'a>(&'a Inner);

impl<'a> Settling<'a> {
    pub(super) fn new(inner: &'a Inner) -> Self {
        inner
            .settling
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self(inner)
    }
}

impl Drop for Settling<'_> {
    fn drop(&mut self) {
        self.0
            .settling
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Keeps a finished build: its whole event log, never clipped, in the
/// durable store (`builds/<id>.pb`), and its summary there and in the
/// state for `strata builds`.
pub(super) async fn persist(inner: &Inner, handle: &BuildHandle) {
    let durable = inner.blobs.durable();
    let id = &handle.id;
    if let Err(e) = durable
        .put_object(&format!("builds/{id}.pb"), handle.encode().into())
        .await
    {
        tracing::warn!(build_id = %id, "cannot keep the build log: {e}");
    }
    let mut summary = handle.info();
    summary.plan = None;
    summary.step_outcomes.clear();
    let summary = prost::Message::encode_to_vec(&summary);
    let kept = durable
        .put_object(&format!("builds/{id}.summary"), summary.clone().into())
        .await
        .map_err(|e| e.to_string());
    let listed = inner
        .state
        .put(&format!("builds/{id}"), &summary, None)
        .await
        .map_err(|e| e.to_string());
    if let Err(e) = kept.and(listed) {
        tracing::warn!(build_id = %id, "cannot record the build: {e}");
    }
}

/// Summaries of finished builds: the state's copies, and the durable
/// store's for builds the state lost (an emptied Redis, an embedded
/// farm's earlier runs), which are put back into the state.
pub async fn finished_builds(inner: &Inner) -> Result<BTreeMap<String, build::BuildInfo>, String> {
    use prost::Message;
    let mut out = BTreeMap::new();
    for (key, bytes) in inner
        .state
        .scan("builds/")
        .await
        .map_err(|e| e.to_string())?
    {
        if let Ok(info) = build::BuildInfo::decode(bytes.as_slice()) {
            out.insert(key.trim_start_matches("builds/").to_string(), info);
        }
    }
    let durable = inner.blobs.durable();
    for key in durable
        .list_objects("builds/")
        .await
        .map_err(|e| e.to_string())?
    {
        let Some(id) = key
            .strip_prefix("builds/")
            .and_then(|k| k.strip_suffix(".summary"))
        else {
            continue;
        };
        if out.contains_key(id) {
            continue;
        }
        if let Ok(Some(bytes)) = durable.get_object(&key).await
            && let Ok(info) = build::BuildInfo::decode(bytes.as_ref())
        {
            let _ = inner.state.put(&format!("builds/{id}"), &bytes, None).await;
            out.insert(id.to_string(), info);
        }
    }
    Ok(out)
}
