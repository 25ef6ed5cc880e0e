//! Base images a build reads (`FROM`, `COPY --from=image`, mounts from an
//! image): the scheduler's own image store first, as Docker's classic
//! builder does with its local images (skipped with `--pull`), then the
//! registry. Registry layers are downloaded into the blob store, verified,
//! once; workers read them from there. Each resolution is noted as a use
//! of the image's blobs, which `strata prune --filter until=` honours.
//!
//! The resolved manifest digest reaches the planner in [`Resolved::plan`]:
//! every step's cache key covers the digest of each image it reads (the
//! stage's base and every `COPY --from` / `RUN --mount from=` image), so a
//! tag that moves rebuilds what was made from the old image.

use crate::Inner;
use crate::image::{LayerInfo, layers_of};
use futures::{StreamExt, TryStreamExt};
use serde_json::Value;
use std::collections::BTreeMap;
use strata_frontend::plan::{
    Action, BaseImage as PlanBase, BaseRef, BuildPlan, CopyFrom, ImageConfig, ImageRef,
    ImageResolver, Platform,
};
use strata_oci::registry::{ImageRef as RegistryRef, Platform as RegistryPlatform};

/// A base image as the planner and image assembly need it.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Digest and config for the planner.
    pub plan: PlanBase,
    /// The raw config document.
    pub config: Value,
    /// Layers, bottom first; their blobs are in the blob store.
    pub layers: Vec<LayerInfo>,
    /// Where it came from: "local" or the registry.
    pub source: &'static str,
}

/// The runtime part of an image config as the planner reads it (Docker's
/// `null`s dropped).
fn plan_config(raw: &Value) -> ImageConfig {
    let mut config = raw.get("config").cloned().unwrap_or_default();
    if let Some(obj) = config.as_object_mut() {
        obj.retain(|_, v| !v.is_null());
    }
    serde_json::from_value(config).unwrap_or_default()
}

const PULL_CONCURRENCY: usize = 4;

/// Resolves `reference` (normalised) for `platform`; a local image only
/// by one of `owner`'s names (see [`crate::images::Viewer`]).
pub async fn resolve(
    inner: &Inner,
    reference: &str,
    platform: &Platform,
    pull: bool,
    owner: crate::images::Viewer<'_>,
) -> Result<Resolved, String> {
    if !pull && let Some(rec) = inner.images.by_tag(owner, reference) {
        let read = async |d: &str| -> Result<Value, String> {
            let b = inner.blobs.read(d).await.map_err(|e| e.to_string())?;
            serde_json::from_slice(&b).map_err(|e| format!("{d}: {e}"))
        };
        let config = read(&rec.config_digest).await?;
        let manifest = read(&rec.manifest_digest).await?;
        let layers = layers_of(&manifest, &config)?;
        return Ok(Resolved {
            plan: PlanBase {
                digest: rec.manifest_digest.clone(),
                config: plan_config(&config),
            },
            config,
            layers,
            source: "local",
        });
    }
    let image = RegistryRef::parse(reference).map_err(|e| e.to_string())?;
    let p = RegistryPlatform::new(
        &platform.os,
        &platform.architecture,
        (!platform.variant.is_empty()).then_some(platform.variant.as_str()),
    );
    let resolved = inner
        .registry
        .resolve(&image, &p)
        .await
        .map_err(|e| e.to_string())?;
    let config: Value =
        serde_json::from_slice(&resolved.config_raw).map_err(|e| format!("image config: {e}"))?;
    let diff_ids = resolved.config.rootfs().diff_ids();
    if diff_ids.len() != resolved.layers.len() {
        return Err(format!(
            "manifest lists {} layers but the config {} diffIDs",
            resolved.layers.len(),
            diff_ids.len()
        ));
    }
    let layers: Vec<LayerInfo> = resolved
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(d, id)| LayerInfo {
            diff_id: id.clone(),
            digest: d.digest().to_string(),
            media_type: d.media_type().to_string(),
            size: d.size(),
        })
        .collect();
    let mut wanted = Vec::new();
    for d in &resolved.layers {
        if !inner.blobs.has(d.digest().as_ref()).await
            && !wanted
                .iter()
                .any(|w: &&oci_spec::image::Descriptor| w.digest() == d.digest())
        {
            wanted.push(d);
        }
    }
    let wanted: Vec<oci_spec::image::Descriptor> = wanted.into_iter().cloned().collect();
    let image_ref = &image;
    futures::stream::iter(wanted)
        .map(|desc| async move {
            let digest = desc.digest().to_string();
            let tmp = inner.blobs.temp_path("pull");
            inner
                .registry
                .download_blob(image_ref, &desc, &tmp)
                .await
                .map_err(|e| e.to_string())?;
            inner
                .blobs
                .commit(&tmp, &digest)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        })
        .buffer_unordered(PULL_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    // Pushes to this registry mount these layers from here.
    let pulled: Vec<String> = layers.iter().map(|l| l.digest.clone()).collect();
    crate::origins::record(&*inner.blobs.durable(), &image, &pulled).await;
    let config_digest = inner
        .blobs
        .put_bytes(&resolved.config_raw)
        .await
        .map_err(|e| e.to_string())?;
    // Prune counts this as a use of the image's blobs (`until=`).
    let mut blobs: Vec<String> = layers.iter().map(|l| l.digest.clone()).collect();
    blobs.push(config_digest);
    crate::prune::note_base_use(inner, resolved.manifest_digest.as_ref(), &blobs).await;
    Ok(Resolved {
        plan: PlanBase {
            digest: resolved.manifest_digest.to_string(),
            config: plan_config(&config),
        },
        config,
        layers,
        source: "registry",
    })
}

/// Base images known to the planner, by normalised reference.
pub(super) struct Known(pub(super) BTreeMap<String, PlanBase>);

impl ImageResolver for Known {
    fn resolve(&self, reference: &ImageRef, _: &Platform) -> Result<Option<PlanBase>, String> {
        Ok(self.0.get(&reference.to_string()).cloned())
    }
}

/// Every image a plan reads: stage bases, `COPY --from=image`, mounts.
pub(crate) fn images_of(plan: &BuildPlan) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |r: &str| {
        if !out.iter().any(|x| x == r) {
            out.push(r.to_string());
        }
    };
    for s in &plan.stages {
        if let BaseRef::Image { reference, .. } = &s.base_ref {
            add(reference);
        }
    }
    for step in &plan.steps {
        match &step.action {
            Action::Copy {
                from: CopyFrom::Image { reference },
                ..
            } => add(reference),
            Action::Run { mounts, .. } => {
                for m in mounts {
                    if let Some(CopyFrom::Image { reference }) = &m.source {
                        add(reference);
                    }
                }
            }
            _ => {}
        }
    }
    out
}
