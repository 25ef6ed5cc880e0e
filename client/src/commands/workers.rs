//! `strata workers`: the workers the scheduler knows.

use crate::format;
use anyhow::{Result, anyhow};
use clap::Args;
use strata_proto::build::v1 as pb;

/// Arguments of `strata workers`.
#[derive(Debug, Clone, Args)]
pub struct WorkersArgs {
    /// Also list recently disconnected workers.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// `table` (default) or `json` (one object per worker, with its
    /// counters: jobs run, blobs and bytes downloaded, bytes uploaded).
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
}

/// The workers as JSON, for scripts and dashboards.
pub fn render_json(workers: &[pb::WorkerInfo]) -> String {
    let list: Vec<serde_json::Value> = workers
        .iter()
        .map(|w| {
            serde_json::json!({
                "id": w.worker_id,
                "hostname": w.hostname,
                "state": state_word(w.state()),
                "capacity": w.capacity,
                "running_jobs": w.running_jobs,
                "uploading_jobs": w.uploading_job_ids.len(),
                "labels": w.labels,
                "features": w.features,
                "platforms": w.platforms.iter().map(format::platform).collect::<Vec<_>>(),
                "free_disk_bytes": w.free_disk_bytes,
                "layers_held": w.layers_held,
                "jobs_completed": w.jobs_completed,
                "blobs_downloaded": w.blobs_downloaded,
                "bytes_downloaded": w.bytes_downloaded,
                "bytes_uploaded": w.bytes_uploaded,
            })
        })
        .collect();
    let mut out = serde_json::to_string_pretty(&list).unwrap_or_default();
    out.push('\n');
    out
}

fn state_word(s: pb::WorkerState) -> &'static str {
    match s {
        pb::WorkerState::Unspecified => "unknown",
        pb::WorkerState::Ready => "ready",
        pb::WorkerState::Draining => "draining",
        pb::WorkerState::Unresponsive => "unresponsive",
        pb::WorkerState::Disconnected => "disconnected",
    }
}

/// Renders the worker table relative to `now` (Unix seconds).
pub fn render(workers: &[pb::WorkerInfo], now: i64) -> String {
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            let platforms: Vec<String> = w.platforms.iter().map(format::platform).collect();
            vec![
                w.worker_id.clone(),
                w.hostname.clone(),
                state_word(w.state()).to_string(),
                w.capacity.to_string(),
                w.running_jobs.to_string(),
                w.uploading_job_ids.len().to_string(),
                platforms.join(","),
                format::ago(w.last_heartbeat.as_ref(), now),
            ]
        })
        .collect();
    format::table(
        &[
            "ID",
            "HOSTNAME",
            "STATE",
            "CAPACITY",
            "RUNNING",
            "UPLOADING",
            "PLATFORMS",
            "LAST SEEN",
        ],
        &rows,
    )
}

/// Runs `strata workers`.
pub async fn run(client: &mut crate::connect::Client, args: &WorkersArgs) -> Result<()> {
    let resp = client
        .list_workers(pb::ListWorkersRequest {
            include_disconnected: args.all,
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow!("{}", s.message()))?
        .into_inner();
    if args.format == "json" {
        print!("{}", render_json(&resp.workers));
    } else {
        print!("{}", render(&resp.workers, format::now_unix()));
    }
    Ok(())
}
