//! Builds survive a scheduler restart: each running build's request is
//! kept in the state (`requests/<id>`) and its events journalled there as
//! they happen (`events/<id>`). A scheduler that starts on the same state
//! (Redis) resumes every build it finds unfinished under the same id and
//! numbering: a client reattaching with the last sequence it saw continues
//! without a lost or repeated line, and steps that finished before the
//! restart come from the cache instead of running again. Both keys go once
//! the build's whole log is in the durable store.

use super::handle::{BuildHandle, is_terminal};
use super::run::{persist, run_build};
use crate::Inner;
use prost::Message as _;
use std::sync::Arc;
use strata_proto::build::v1 as build;
use tokio::task::JoinHandle;

fn request_key(id: &str) -> String {
    format!("requests/{id}")
}

fn events_key(id: &str) -> String {
    format!("events/{id}")
}

/// Keeps a build's request and first summary so it can be resumed.
pub async fn remember(inner: &Inner, id: &str, req: &build::BuildRequest, info: &build::BuildInfo) {
    let mut bytes = Vec::new();
    // Encoding into a Vec cannot fail.
    let _ = req.encode_length_delimited(&mut bytes);
    let _ = info.encode_length_delimited(&mut bytes);
    if let Err(e) = inner.state.put(&request_key(id), &bytes, None).await {
        tracing::warn!(
            build_id = id,
            "the build cannot be resumed after a restart: {e}"
        );
    }
}

/// Starts journalling `handle`'s events to the state; the task ends when
/// the journal is closed and everything is written.
pub fn journal(inner: &Arc<Inner>, handle: &BuildHandle) -> JoinHandle<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<build::BuildEvent>();
    handle.journal_to(tx);
    let (state, key) = (Arc::clone(&inner.state), events_key(&handle.id));
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            if let Err(e) = state.append(&key, &ev.encode_to_vec()).await {
                tracing::warn!("journalling {key}: {e}");
            }
        }
    })
}

/// Drops a finished build's request and journal (its log is durable).
pub async fn forget(inner: &Inner, id: &str) {
    for key in [request_key(id), events_key(id)] {
        if let Err(e) = inner.state.delete(&key).await {
            tracing::warn!("removing {key}: {e}");
        }
    }
}

/// Resumes every unfinished build the state remembers.
pub async fn resume_all(inner: &Arc<Inner>) {
    let pending = match inner.state.scan("requests/").await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("cannot look for builds to resume: {e}");
            return;
        }
    };
    for (key, bytes) in pending {
        let id = key.trim_start_matches("requests/").to_string();
        if let Err(e) = resume(inner, &id, &bytes).await {
            tracing::warn!(build_id = id, "cannot resume the build: {e}");
        }
    }
}

async fn resume(inner: &Arc<Inner>, id: &str, bytes: &[u8]) -> Result<(), String> {
    if !BuildHandle::valid_id(id) {
        return Err("not a build id".into());
    }
    if inner
        .builds
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains_key(id)
    {
        return Ok(());
    }
    let mut buf = bytes;
    let req = build::BuildRequest::decode_length_delimited(&mut buf).map_err(|e| e.to_string())?;
    let info = build::BuildInfo::decode_length_delimited(&mut buf).map_err(|e| e.to_string())?;
    let events: Vec<build::BuildEvent> = inner
        .state
        .range(&events_key(id), 0)
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .filter_map(|b| build::BuildEvent::decode(b.as_slice()).ok())
        .collect();
    let handle = Arc::new(BuildHandle::new(id.to_string(), info));
    handle.restore(events);
    inner
        .builds
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.to_string(), Arc::clone(&handle));
    if handle.events_after(0).last().is_some_and(is_terminal) {
        // It ended just before the restart; only its log was not kept.
        persist(inner, &handle).await;
        forget(inner, id).await;
        return Ok(());
    }
    let input = match crate::service::request::build_input(inner, &req).await {
        Ok(i) => i,
        Err(status) => {
            let failure = build::BuildFailed {
                status: build::BuildStatus::Failed as i32,
                error: Some(build::BuildError {
                    code: build::ErrorCode::Internal as i32,
                    message: format!(
                        "cannot resume after a scheduler restart: {}",
                        status.message()
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            };
            handle.emit(build::build_event::Event::BuildFailed(failure));
            persist(inner, &handle).await;
            forget(inner, id).await;
            return Ok(());
        }
    };
    tracing::info!(build_id = id, "resuming a build after a scheduler restart");
    handle.emit(build::build_event::Event::Warning(build::BuildWarning {
        message:
            "the scheduler restarted; the build resumes (steps that finished come from the cache)"
                .into(),
        ..Default::default()
    }));
    let span = tracing::info_span!("build", build_id = %id, resumed = true);
    tokio::spawn(tracing::Instrument::instrument(
        run_build(Arc::clone(inner), handle, input),
        span,
    ));
    Ok(())
}
