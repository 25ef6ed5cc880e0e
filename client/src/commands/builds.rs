//! `strata builds`: recent builds, most recent first.

use crate::format;
use anyhow::{Result, anyhow};
use clap::Args;
use strata_proto::build::v1 as pb;

/// Arguments of `strata builds`.
#[derive(Debug, Clone, Args)]
pub struct BuildsArgs {
    /// Only builds that requested this tag.
    #[arg(long, value_name = "NAME:TAG")]
    pub tag: Option<String>,
    /// At most this many builds (default: the scheduler's, 50).
    #[arg(short = 'n', long, value_name = "N")]
    pub limit: Option<u32>,
}

/// A build status in words (`running`, `succeeded`, ...).
pub fn status_word(s: pb::BuildStatus) -> &'static str {
    match s {
        pb::BuildStatus::Unspecified => "unknown",
        pb::BuildStatus::Queued => "queued",
        pb::BuildStatus::Running => "running",
        pb::BuildStatus::Succeeded => "succeeded",
        pb::BuildStatus::Failed => "failed",
        pb::BuildStatus::Cancelled => "cancelled",
    }
}

/// `done/total`, with how many were cached and failed when any were.
fn steps(c: Option<&pb::StepCounts>) -> String {
    let Some(c) = c else {
        return "-".to_string();
    };
    let mut s = format!("{}/{}", c.executed + c.cached, c.total);
    let mut notes = Vec::new();
    if c.cached > 0 {
        notes.push(format!("{} cached", c.cached));
    }
    if c.failed > 0 {
        notes.push(format!("{} failed", c.failed));
    }
    if !notes.is_empty() {
        s.push_str(&format!(" ({})", notes.join(", ")));
    }
    s
}

/// Renders the build table relative to `now` (Unix seconds).
pub fn render(builds: &[pb::BuildInfo], now: i64) -> String {
    let rows: Vec<Vec<String>> = builds
        .iter()
        .map(|b| {
            let tags = if b.tags.is_empty() {
                "<none>".to_string()
            } else {
                b.tags.join(",")
            };
            vec![
                b.build_id.clone(),
                status_word(b.status()).to_string(),
                tags,
                format::ago(b.created_at.as_ref(), now),
                format::seconds(format::duration(b.duration.as_ref())),
                steps(b.steps.as_ref()),
            ]
        })
        .collect();
    format::table(
        &["BUILD ID", "STATUS", "TAGS", "CREATED", "DURATION", "STEPS"],
        &rows,
    )
}

/// Runs `strata builds`.
pub async fn run(client: &mut crate::connect::Client, args: &BuildsArgs) -> Result<()> {
    let resp = client
        .list_builds(pb::ListBuildsRequest {
            tag: args.tag.clone().unwrap_or_default(),
            page_size: args.limit.unwrap_or(0),
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow!("{}", s.message()))?
        .into_inner();
    print!("{}", render(&resp.builds, format::now_unix()));
    Ok(())
}
