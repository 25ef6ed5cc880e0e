//! After a successful build: the `writing image` / `naming to` lines,
//! `--iidfile`, `--metadata-file`, and the client-side outputs (push,
//! docker/oci tarballs, a local directory).

use super::options::OutputSpec;
use super::{BuildArgs, metadata};
use crate::progress::{Mode, Renderer};
use crate::transfer;
use anyhow::{Context as _, Result};
use strata_proto::build::v1 as pb;

/// Reports the result, writes the requested files and fetches outputs.
pub(super) async fn finish(
    client: &mut crate::connect::Client,
    args: &BuildArgs,
    build_id: &str,
    result: &pb::BuildResult,
    outputs: &[OutputSpec],
    mode: Mode,
    renderer: &mut dyn Renderer,
) -> Result<()> {
    let image_id = if result.config_digest.is_empty() {
        result
            .images
            .first()
            .map(|i| i.config_digest.clone())
            .unwrap_or_default()
    } else {
        result.config_digest.clone()
    };
    renderer.message(&format!("writing image {image_id} done"))?;
    for tag in &args.tags {
        renderer.message(&format!("naming to {tag} done"))?;
    }
    if let Some(f) = &args.iidfile {
        tokio::fs::write(f, &image_id)
            .await
            .with_context(|| format!("writing {}", f.display()))?;
    }
    // Outputs refer to the image by a name the scheduler knows.
    let image = args
        .tags
        .first()
        .cloned()
        .unwrap_or_else(|| image_id.clone());
    // A push asked to convert layers (compression=gzip) gives the pushed
    // manifest its own digest: that is the one buildx reports.
    let mut pushed: Option<String> = None;
    for output in outputs {
        match output {
            OutputSpec::Image => {}
            OutputSpec::Registry {
                compression,
                force_compression,
            } => {
                for tag in &args.tags {
                    let how = transfer::PushCompression {
                        compression: *compression,
                        force: *force_compression,
                    };
                    let done = transfer::push_image(client, tag, "", how, &mut |l| {
                        // Progress is best effort; a closed stderr must not fail the push.
                        let _ = renderer.message(l);
                    })
                    .await?;
                    pushed.get_or_insert(done.manifest_digest.clone());
                    renderer.message(&format!(
                        "pushed {}@{}",
                        if done.destination.is_empty() {
                            tag
                        } else {
                            &done.destination
                        },
                        done.manifest_digest
                    ))?;
                }
            }
            OutputSpec::Docker { dest, compression } | OutputSpec::Oci { dest, compression } => {
                let format = if matches!(output, OutputSpec::Docker { .. }) {
                    pb::ArchiveFormat::Docker
                } else {
                    pb::ArchiveFormat::Oci
                };
                let req = pb::ExportImageRequest {
                    image: image.clone(),
                    format: format.into(),
                    names: args.tags.clone(),
                    compression: (*compression).into(),
                    ..Default::default()
                };
                let n = transfer::export_to_file(client, req, dest).await?;
                renderer.message(&format!("exported {n} bytes to {}", dest.display()))?;
            }
            OutputSpec::Local { dest } => {
                transfer::export_local(client, &image, dest).await?;
                renderer.message(&format!("copied the image's files to {}", dest.display()))?;
            }
        }
    }
    if let Some(f) = &args.metadata_file {
        let mut doc = metadata::metadata_json(build_id, result, &renderer.view().steps, &args.tags);
        if let Some(d) = pushed {
            doc["containerimage.digest"] = serde_json::Value::String(d);
        }
        tokio::fs::write(f, serde_json::to_vec_pretty(&doc)?)
            .await
            .with_context(|| format!("writing {}", f.display()))?;
    }
    if mode == Mode::Quiet {
        println!("{image_id}");
    }
    Ok(())
}
