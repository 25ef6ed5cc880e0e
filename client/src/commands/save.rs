//! `strata save IMAGE [-o FILE]`: an image as a docker-archive tarball.

use crate::transfer;
use anyhow::{Result, bail};
use clap::Args;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use strata_proto::build::v1 as pb;

/// Arguments of `strata save`.
#[derive(Debug, Clone, Args)]
pub struct SaveArgs {
    /// Image name, tag or ID.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Write to this file instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Runs `strata save`.
pub async fn run(client: &mut crate::connect::Client, args: &SaveArgs) -> Result<()> {
    let names = if args.image.starts_with("sha256:") {
        Vec::new()
    } else {
        vec![args.image.clone()]
    };
    let req = pb::ExportImageRequest {
        image: args.image.clone(),
        format: pb::ArchiveFormat::Docker.into(),
        names,
        ..Default::default()
    };
    match &args.output {
        Some(f) => {
            transfer::export_to_file(client, req, f).await?;
        }
        None => {
            if std::io::stdout().is_terminal() {
                bail!(
                    "refusing to write an image archive to a terminal: use -o FILE or redirect stdout"
                );
            }
            transfer::export_to(client, req, &mut tokio::io::stdout()).await?;
        }
    }
    Ok(())
}
