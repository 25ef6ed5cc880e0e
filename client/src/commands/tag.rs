//! `strata tag SOURCE TARGET`: add a name to an image.

use anyhow::{Result, anyhow};
use clap::Args;
use strata_proto::build::v1 as pb;

/// Arguments of `strata tag`.
#[derive(Debug, Clone, Args)]
pub struct TagArgs {
    /// Existing image name, tag or ID.
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// New name, `name[:tag]`.
    #[arg(value_name = "TARGET")]
    pub target: String,
}

/// Runs `strata tag` (silent on success, like docker).
pub async fn run(client: &mut crate::connect::Client, args: &TagArgs) -> Result<()> {
    client
        .tag_image(pb::TagImageRequest {
            source: args.source.clone(),
            target: args.target.clone(),
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow!("{}", s.message()))?;
    Ok(())
}
