//! `--metadata-file`: buildx's keys plus strata's per-layer and per-step
//! provenance.

use crate::format;
use serde_json::{Value, json};
use std::collections::HashMap;
use strata_proto::build::v1 as pb;

/// The metadata document of a finished build: `containerimage.digest`,
/// `containerimage.config.digest`, `image.name` (as buildx writes them),
/// `strata.build_id`, `strata.layers` and `strata.steps`.
pub fn metadata_json(
    build_id: &str,
    result: &pb::BuildResult,
    plan: &[pb::StepPlan],
    tags: &[String],
) -> Value {
    let image = result.images.first();
    let layers: Vec<Value> = image
        .map(|i| i.layers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|l| {
            let layer = l.layer.clone().unwrap_or_default();
            let blob = layer.blob.unwrap_or_default();
            json!({
                "digest": blob.digest,
                "diff_id": layer.diff_id,
                "size": blob.size,
                "media_type": blob.media_type,
                "step_id": l.step_id,
                "cached": l.cached,
                "worker_id": l.worker_id,
            })
        })
        .collect();
    let instructions: HashMap<&str, &str> = plan
        .iter()
        .map(|s| (s.step_id.as_str(), s.instruction.as_str()))
        .collect();
    let steps: Vec<Value> = result
        .steps
        .iter()
        .map(|s| {
            let status = match s.status() {
                pb::StepStatus::Cached => "cached",
                pb::StepStatus::Executed => "executed",
                pb::StepStatus::Applied => "applied",
                pb::StepStatus::Failed => "failed",
                pb::StepStatus::Cancelled => "cancelled",
                pb::StepStatus::Running => "running",
                pb::StepStatus::Queued => "queued",
                pb::StepStatus::Pending => "pending",
                pb::StepStatus::Unspecified => "unknown",
            };
            let blob = s.layer.as_ref().and_then(|l| l.blob.as_ref());
            json!({
                "step_id": s.step_id,
                "instruction": instructions.get(s.step_id.as_str()).copied().unwrap_or_default(),
                "status": status,
                "worker_id": s.worker_id,
                "duration_seconds": format::duration(s.duration.as_ref()).as_secs_f64(),
                "layer_digest": blob.map(|b| b.digest.clone()),
                "layer_size": blob.map(|b| b.size),
            })
        })
        .collect();
    let config = if result.config_digest.is_empty() {
        image.map(|i| i.config_digest.clone()).unwrap_or_default()
    } else {
        result.config_digest.clone()
    };
    let names = if tags.is_empty() { &result.tags } else { tags };
    json!({
        "containerimage.digest": result.manifest_digest,
        "containerimage.config.digest": config,
        "image.name": names.join(","),
        "strata.build_id": build_id,
        "strata.layers": layers,
        "strata.steps": steps,
    })
}
