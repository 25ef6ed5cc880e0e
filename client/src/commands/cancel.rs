//! `strata cancel BUILD_ID`: cancel a build.

use anyhow::{Result, anyhow};
use clap::Args;
use strata_proto::build::v1 as pb;

/// Arguments of `strata cancel`.
#[derive(Debug, Clone, Args)]
pub struct CancelArgs {
    /// The build to cancel.
    #[arg(value_name = "BUILD_ID")]
    pub build_id: String,
}

/// Runs `strata cancel`.
pub async fn run(client: &mut crate::connect::Client, args: &CancelArgs) -> Result<()> {
    let resp = client
        .cancel_build(pb::CancelBuildRequest {
            build_id: args.build_id.clone(),
            reason: "cancelled with strata cancel".to_string(),
        })
        .await
        .map_err(|s| anyhow!("{}", s.message()))?
        .into_inner();
    if resp.already_finished {
        let status = super::builds::status_word(resp.status());
        println!("build {} had already finished ({status})", args.build_id);
    } else {
        println!("cancelling build {}", args.build_id);
    }
    Ok(())
}
