//! Removing what a crashed worker left: containers in the runc root and
//! bundle directories.

use std::path::PathBuf;

use serde::Deserialize;
use tracing::info;

use super::ExecError;
use super::runc::{Inner, delete_container, runc_command};

/// What [`RuncExecutor::cleanup_leftovers`](super::RuncExecutor::cleanup_leftovers)
/// removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Ids of the containers killed and deleted.
    pub containers: Vec<String>,
    /// Bundle directories removed.
    pub bundles: Vec<PathBuf>,
}

#[derive(Deserialize)]
struct ListedContainer {
    id: String,
}

pub(crate) async fn cleanup(inner: &Inner) -> Result<CleanupReport, ExecError> {
    let mut report = CleanupReport::default();
    let listed = runc_command(inner, "-", &["list", "--format", "json"]).await?;
    // runc prints `null` when there is no container.
    let containers: Option<Vec<ListedContainer>> =
        serde_json::from_slice(&listed).map_err(|e| ExecError::Runc {
            id: "-".into(),
            command: "list --format json".into(),
            message: format!("unexpected output: {e}"),
        })?;
    for container in containers.unwrap_or_default() {
        let id = container.id;
        // A stopped container refuses `kill`; `delete --force` handles both.
        let _ = runc_command(inner, &id, &["kill", &id, "KILL"]).await;
        delete_container(inner, &id).await?;
        info!(step_id = %id, "deleted a leftover container");
        report.containers.push(id);
    }

    let bundles = inner.bundles.clone();
    let removed = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        for entry in std::fs::read_dir(&bundles)? {
            let path = entry?.path();
            std::fs::remove_dir_all(&path)?;
            removed.push(path);
        }
        removed.sort();
        Ok(removed)
    })
    .await
    .map_err(|e| ExecError::Task {
        id: "-".into(),
        reason: e.to_string(),
    })?
    .map_err(|source| ExecError::Io {
        id: "-".into(),
        action: "remove leftover bundles in",
        path: inner.bundles.clone(),
        source,
    })?;
    for bundle in &removed {
        info!(bundle = %bundle.display(), "removed a leftover bundle");
    }
    report.bundles = removed;
    Ok(report)
}
