//! `strata history IMAGE`: an image's layers and the instructions that made
//! them, newest first, as `docker history`.

use crate::format;
use anyhow::{Result, anyhow};
use clap::Args;
use strata_proto::build::v1 as pb;

/// Arguments of `strata history`.
#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// Image name, tag or ID.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Do not truncate CREATED BY (or image IDs).
    #[arg(long)]
    pub no_trunc: bool,
    /// Only print image IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// Width docker gives CREATED BY before cutting it with `…`.
pub const CREATED_BY_WIDTH: usize = 45;

/// Renders history entries (newest first, as the scheduler returns them)
/// like `docker history`, relative to `now` (Unix seconds).
pub fn render(entries: &[pb::HistoryEntry], no_trunc: bool, quiet: bool, now: i64) -> String {
    let id = |i: usize, e: &pb::HistoryEntry| {
        if i > 0 || e.id.is_empty() || e.id == "<missing>" {
            "<missing>".to_string()
        } else if no_trunc {
            e.id.clone()
        } else {
            format::short_id(&e.id)
        }
    };
    if quiet {
        return entries
            .iter()
            .enumerate()
            .map(|(i, e)| id(i, e) + "\n")
            .collect();
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            // Docker shows continuation lines and tabs of a heredoc as spaces.
            let by = e.created_by.replace(['\n', '\t'], " ");
            let by = if no_trunc {
                by
            } else {
                format::truncate(&by, CREATED_BY_WIDTH)
            };
            vec![
                id(i, e),
                format::ago(e.created.as_ref(), now),
                by,
                format::human_size(e.size),
                e.comment.clone(),
            ]
        })
        .collect();
    format::table(
        &["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
        &rows,
    )
}

/// Runs `strata history`.
pub async fn run(client: &mut crate::connect::Client, args: &HistoryArgs) -> Result<()> {
    let resp = client
        .image_history(pb::ImageHistoryRequest {
            image: args.image.clone(),
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow!("{}", s.message()))?
        .into_inner();
    print!(
        "{}",
        render(&resp.entries, args.no_trunc, args.quiet, format::now_unix())
    );
    Ok(())
}
