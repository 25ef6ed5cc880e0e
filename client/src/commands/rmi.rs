//! `strata rmi IMAGE...`: remove image names and unreferenced images.

use anyhow::{Result, anyhow};
use clap::Args;
use strata_proto::build::v1 as pb;

/// Arguments of `strata rmi`.
#[derive(Debug, Clone, Args)]
pub struct RmiArgs {
    /// Images to remove (names, tags or IDs).
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
    /// Remove the image even if other names reference it.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Do not delete untagged parents.
    #[arg(long)]
    pub no_prune: bool,
}

/// Runs `strata rmi`: `Untagged:` / `Deleted:` lines as docker prints them;
/// every image is tried, and the command fails if any could not be removed.
pub async fn run(client: &mut crate::connect::Client, args: &RmiArgs) -> Result<()> {
    let mut failed = Vec::new();
    for image in &args.images {
        match client
            .remove_image(pb::RemoveImageRequest {
                image: image.clone(),
                force: args.force,
                no_prune: args.no_prune,
                ..Default::default()
            })
            .await
        {
            Ok(resp) => {
                let resp = resp.into_inner();
                for u in &resp.untagged {
                    println!("Untagged: {u}");
                }
                for d in &resp.deleted {
                    println!("Deleted: {d}");
                }
            }
            Err(s) => failed.push(format!("{image}: {}", s.message())),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow!("{}", failed.join("; ")))
    }
}
