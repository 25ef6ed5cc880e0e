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
    /// Convert the layers strata built to this compression (gzip for
    /// runtimes older than containerd 1.5 / Docker 23, which cannot read
    /// zstd); by default every layer is pushed as stored.
    #[arg(long, value_name = "gzip|zstd|uncompressed")]
    pub compression: Option<String>,
    /// With --compression, convert base-image layers too.
    #[arg(long, requires = "compression")]
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
