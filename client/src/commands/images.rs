//! `strata images`: the scheduler's image store as docker lists it.

use crate::format;
use anyhow::{Result, anyhow};
use clap::Args;
use strata_proto::build::v1 as pb;

/// Arguments of `strata images`.
#[derive(Debug, Clone, Args)]
pub struct ImagesArgs {
    /// Only images matching `REPOSITORY[:TAG]` (`*` wildcards).
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub reference: Option<String>,
    /// Also list untagged images.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only print image IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Do not truncate image IDs.
    #[arg(long)]
    pub no_trunc: bool,
}

/// Renders images as `docker images` does, relative to `now` (Unix
/// seconds).
pub fn render(images: &[pb::ImageSummary], args: &ImagesArgs, now: i64) -> String {
    let id = |i: &pb::ImageSummary| {
        if args.no_trunc {
            i.image_id.clone()
        } else {
            format::short_id(&i.image_id)
        }
    };
    if args.quiet {
        let mut out = String::new();
        let mut seen = std::collections::HashSet::new();
        for i in images {
            if seen.insert(&i.image_id) {
                out.push_str(&id(i));
                out.push('\n');
            }
        }
        return out;
    }
    let rows: Vec<Vec<String>> = images
        .iter()
        .map(|i| {
            vec![
                i.repository.clone(),
                i.tag.clone(),
                id(i),
                format::ago(i.created.as_ref(), now),
                format::human_size(i.size),
            ]
        })
        .collect();
    format::table(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], &rows)
}

/// Runs `strata images`.
pub async fn run(client: &mut crate::connect::Client, args: &ImagesArgs) -> Result<()> {
    let resp = client
        .list_images(pb::ListImagesRequest {
            reference: args.reference.clone().unwrap_or_default(),
            all: args.all,
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow!("{}", s.message()))?
        .into_inner();
    print!("{}", render(&resp.images, args, format::now_unix()));
    Ok(())
}
