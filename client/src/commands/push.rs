//! `strata push IMAGE [DESTINATION]`: push an image to a registry.

use crate::transfer;
use anyhow::Result;
use clap::Args;

/// Arguments of `strata push`.
#[derive(Debug, Clone, Args)]
pub struct PushArgs {
    /// Image in the scheduler's store.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Registry reference to push to (default: the image's own name).
    #[arg(value_name = "DESTINATION")]
    pub destination: Option<String>,
    /// Layer compression to push (default gzip, as docker build --push,
    /// which runtimes older than containerd 1.5 / Docker 23 need; zstd
    /// pushes the layers strata built as stored).
    #[arg(long, value_name = "gzip|zstd|uncompressed")]
    pub compression: Option<String>,
    /// Convert base-image layers too (BuildKit's force-compression).
    #[arg(long)]
    pub force_compression: bool,
}

/// Runs `strata push`: progress on stderr, `pushed NAME@DIGEST` on stdout.
pub async fn run(client: &mut crate::connect::Client, args: &PushArgs) -> Result<()> {
    let dest = args.destination.clone().unwrap_or_default();
    let compression = crate::commands::build::options::compression(args.compression.as_ref())
        .map_err(|e| anyhow::anyhow!("--compression: {e}"))?;
    let how = transfer::PushCompression {
        compression,
        force: args.force_compression,
    };
    let done =
        transfer::push_image(client, &args.image, &dest, how, &mut |l| eprintln!("{l}")).await?;
    let name = if !done.destination.is_empty() {
        done.destination
    } else if dest.is_empty() {
        args.image.clone()
    } else {
        dest
    };
    println!("pushed {name}@{}", done.manifest_digest);
    Ok(())
}
