//! Assembling an image from a plan and the layers its steps produced: the
//! OCI image config (Docker's config fields, history with BuildKit's
//! `created_by` text and `empty_layer` markers, rootfs diffIDs) and the
//! manifest.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use strata_frontend::plan::{BaseRef, BuildPlan, ImageConfig, PlanStage};
use thiserror::Error;

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// BuildKit's history comment for Dockerfile instructions.
pub const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// One layer blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
    /// `sha256:` of the blob.
    pub digest: String,
    /// Blob media type.
    pub media_type: String,
    /// Blob size.
    pub size: u64,
}

/// A base image as pulled: its raw config and its layers.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// The image config document.
    pub config: Value,
    /// Layers, bottom first.
    pub layers: Vec<LayerInfo>,
}

/// An assembled image.
#[derive(Debug, Clone)]
pub struct Image {
    /// Config JSON bytes.
    pub config: Vec<u8>,
    /// `sha256:` of the config (the image ID).
    pub config_digest: String,
    /// Manifest JSON bytes.
    pub manifest: Vec<u8>,
    /// `sha256:` of the manifest.
    pub manifest_digest: String,
    /// Layers, bottom first.
    pub layers: Vec<LayerInfo>,
}

/// Why an image could not be assembled.
#[derive(Debug, Error)]
pub enum ImageError {
    /// A step of the plan has no layer.
    #[error("step {0} has no layer: the build is not finished")]
    MissingLayer(String),
    /// A stage's base image is missing.
    #[error("stage {stage} is built on {reference}, which was not provided")]
    MissingBase {
        /// The stage.
        stage: usize,
        /// Its base image.
        reference: String,
    },
    /// A stage index is not in the plan.
    #[error("stage {0} is not part of the plan")]
    UnknownStage(usize),
}

/// Formats Unix time as RFC 3339 UTC (`2024-01-02T03:04:05Z`).
pub fn rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let frac = if nanos == 0 {
        String::new()
    } else {
        format!(".{nanos:09}").trim_end_matches('0').to_string()
    };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{frac}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The stages from the root of the chain to `index` (a stage built FROM
/// another stage continues that stage's image).
fn chain(plan: &BuildPlan, index: usize) -> Result<Vec<&PlanStage>, ImageError> {
    let mut out = Vec::new();
    let mut current = Some(index);
    while let Some(i) = current {
        let stage = plan
            .stages
            .iter()
            .find(|s| s.index == i)
            .ok_or(ImageError::UnknownStage(i))?;
        out.push(stage);
        current = match stage.base_ref {
            BaseRef::Stage { index } => Some(index),
            _ => None,
        };
    }
    out.reverse();
    Ok(out)
}

/// Now, in RFC 3339 with nanoseconds (image and history times).
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now.as_secs() as i64, now.subsec_nanos())
}

/// An image's layers, bottom first: blob descriptors from the manifest,
/// diffIDs from the config (which must list as many).
pub fn layers_of(manifest: &Value, config: &Value) -> Result<Vec<LayerInfo>, String> {
    let descs = manifest["layers"].as_array().cloned().unwrap_or_default();
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if descs.len() != diff_ids.len() {
        return Err(format!(
            "the manifest lists {} layers but the config {} diffIDs",
            descs.len(),
            diff_ids.len()
        ));
    }
    Ok(descs
        .iter()
        .zip(diff_ids)
        .map(|(d, id)| LayerInfo {
            diff_id: id.as_str().unwrap_or_default().to_string(),
            digest: d["digest"].as_str().unwrap_or_default().to_string(),
            media_type: d["mediaType"].as_str().unwrap_or_default().to_string(),
            size: d["size"].as_u64().unwrap_or(0),
        })
        .collect())
}

/// Assembles the image of stage `index`. `layers` maps step ids to the
/// layers they produced; `bases` maps image references to pulled base
/// images; `created` is the build time (or SOURCE_DATE_EPOCH) as RFC 3339.
///
/// `layer_times` maps step ids to when their layer was first built (a
/// cached layer keeps its original time, as BuildKit's cache does): a
/// layer's history entry takes that time, a metadata-only entry the time
/// of the layer before it (or of the first new layer), and the image's
/// `created` is its last history entry's. So a fully cached rebuild gives
/// the same config, hence the same image ID. Steps missing from
/// `layer_times` (and every step with SOURCE_DATE_EPOCH, when the map is
/// empty) take `created`.
pub fn assemble(
    plan: &BuildPlan,
    index: usize,
    layers: &BTreeMap<String, LayerInfo>,
    bases: &BTreeMap<String, BaseImage>,
    created: &str,
    layer_times: &BTreeMap<String, String>,
) -> Result<Image, ImageError> {
    let stages = chain(plan, index)?;
    let root = stages[0];
    let target = stages[stages.len() - 1];
    let (mut doc, mut all_layers, mut history) = match &root.base_ref {
        BaseRef::Image { reference, .. } => {
            let base = bases
                .get(reference)
                .ok_or_else(|| ImageError::MissingBase {
                    stage: root.index,
                    reference: reference.clone(),
                })?;
            let history = base
                .config
                .get("history")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            (
                base.config.as_object().cloned().unwrap_or_default(),
                base.layers.clone(),
                history,
            )
        }
        _ => (Map::new(), Vec::new(), Vec::new()),
    };
    let items: Vec<_> = stages.iter().flat_map(|s| s.history.iter()).collect();
    let time_of = |step: &str| {
        layer_times
            .get(step)
            .filter(|t| !t.is_empty())
            .cloned()
            .unwrap_or_else(|| created.to_string())
    };
    let first_layer_time = items
        .iter()
        .find_map(|i| i.step.as_deref().map(time_of))
        .unwrap_or_else(|| created.to_string());
    let mut last_time = first_layer_time;
    for stage in &stages {
        for item in &stage.history {
            let mut h = Map::new();
            if let Some(step) = &item.step {
                last_time = time_of(step);
            }
            h.insert("created".into(), json!(last_time));
            h.insert("created_by".into(), json!(item.created_by));
            h.insert("comment".into(), json!(HISTORY_COMMENT));
            match &item.step {
                Some(step) => {
                    let layer = layers
                        .get(step)
                        .ok_or_else(|| ImageError::MissingLayer(step.clone()))?;
                    all_layers.push(layer.clone());
                }
                None => {
                    h.insert("empty_layer".into(), json!(true));
                }
            }
            history.push(Value::Object(h));
        }
    }
    let config: &ImageConfig = &target.config;
    doc.insert("architecture".into(), json!(target.platform.architecture));
    doc.insert("os".into(), json!(target.platform.os));
    if target.platform.variant.is_empty() {
        doc.remove("variant");
    } else {
        doc.insert("variant".into(), json!(target.platform.variant));
    }
    doc.insert(
        "config".into(),
        serde_json::to_value(config).unwrap_or_default(),
    );
    let image_created = history
        .last()
        .and_then(|h| h.get("created"))
        .and_then(Value::as_str)
        .unwrap_or(created)
        .to_string();
    doc.insert("created".into(), json!(image_created));
    if let Some(author) = stages.iter().rev().find_map(|s| s.author.clone()) {
        doc.insert("author".into(), json!(author));
    }
    doc.insert("history".into(), Value::Array(history));
    let diff_ids: Vec<&str> = all_layers.iter().map(|l| l.diff_id.as_str()).collect();
    doc.insert(
        "rootfs".into(),
        json!({"type": "layers", "diff_ids": diff_ids}),
    );
    let config_bytes = serde_json::to_vec(&Value::Object(doc)).unwrap_or_default();
    let config_digest = sha256(&config_bytes);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_bytes.len()},
        "layers": all_layers.iter().map(|l| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size})).collect::<Vec<_>>(),
    });
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap_or_default();
    Ok(Image {
        manifest_digest: sha256(&manifest_bytes),
        config: config_bytes,
        config_digest,
        manifest: manifest_bytes,
        layers: all_layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_frontend::plan::{Offline, PlanOptions, plan_dockerfile};

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000, 0), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400, 500_000_000), "2000-02-29T00:00:00.5Z");
    }

    #[test]
    fn history_and_diff_ids_follow_the_stage_chain() {
        let df = "FROM scratch AS a\nCOPY x /x\nENV A=1\nFROM a\nRUN true\nCMD [\"sh\"]\n";
        let plan =
            plan_dockerfile(df.as_bytes(), None, &PlanOptions::default(), &Offline).expect("plan");
        let mut layers = BTreeMap::new();
        for (i, s) in plan.steps.iter().enumerate() {
            let d = format!(
                "sha256:{}",
                format!("{i}")
                    .repeat(64)
                    .chars()
                    .take(64)
                    .collect::<String>()
            );
            layers.insert(
                s.id.clone(),
                LayerInfo {
                    diff_id: d.clone(),
                    digest: d,
                    media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
                    size: 10,
                },
            );
        }
        let image = assemble(
            &plan,
            1,
            &layers,
            &BTreeMap::new(),
            "2024-01-01T00:00:00Z",
            &BTreeMap::new(),
        )
        .expect("assemble");
        let config: Value = serde_json::from_slice(&image.config).expect("json");
        let history: Vec<(&str, bool)> = config["history"]
            .as_array()
            .expect("history")
            .iter()
            .map(|h| {
                (
                    h["created_by"].as_str().unwrap_or(""),
                    h["empty_layer"].as_bool().unwrap_or(false),
                )
            })
            .collect();
        assert_eq!(
            history,
            vec![
                ("COPY x /x # buildkit", false),
                ("ENV A=1", true),
                ("RUN /bin/sh -c true # buildkit", false),
                ("CMD [\"sh\"]", true)
            ]
        );
        assert_eq!(
            config["rootfs"]["diff_ids"].as_array().map(Vec::len),
            Some(2)
        );
        assert_eq!(config["config"]["Cmd"], json!(["sh"]));
        assert_eq!(
            config["config"]["Env"],
            json!([
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "A=1"
            ])
        );
        let manifest: Value = serde_json::from_slice(&image.manifest).expect("json");
        assert_eq!(manifest["config"]["digest"], json!(image.config_digest));
        let missing = assemble(
            &plan,
            1,
            &BTreeMap::new(),
            &BTreeMap::new(),
            "x",
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(matches!(missing, ImageError::MissingLayer(_)));
    }
}
