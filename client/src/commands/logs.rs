//! `strata logs BUILD_ID [-f]`: a build's events and step logs, replayed
//! (and followed with `-f`).

use crate::progress::{self, PlainRenderer, Renderer as _};
use crate::watch::{self, Outcome, WatchOptions};
use anyhow::Result;
use clap::Args;

/// Arguments of `strata logs`.
#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// The build.
    #[arg(value_name = "BUILD_ID")]
    pub build_id: String,
    /// Keep following until the build ends.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

/// Runs `strata logs`: plain progress lines on stdout. A failed build's
/// error report follows on stderr; the command itself succeeds.
pub async fn run(client: &mut crate::connect::Client, args: &LogsArgs) -> Result<()> {
    let mut renderer = PlainRenderer::new(std::io::stdout());
    let opts = WatchOptions {
        follow: args.follow,
        ..WatchOptions::default()
    };
    let interrupt = async {
        watch::ctrl_c().await;
    };
    // Ctrl-C while following only stops watching; it must not cancel the
    // build, so the interrupt is handled here rather than by `watch`.
    let outcome = tokio::select! {
        r = watch::watch(client, &args.build_id, &mut renderer, &opts, std::future::pending::<()>()) => r?,
        () = interrupt => return Err(crate::Exit(130).into()),
    };
    match outcome {
        Outcome::Finished(f) => {
            let id = f.result.map(|r| r.config_digest).unwrap_or_default();
            renderer.message(&format!("build succeeded: image {id}"))?;
        }
        Outcome::Failed(f) => {
            if let Some(e) = &f.error {
                eprint!("{}", progress::failure_report(renderer.view(), e, None));
            }
            eprintln!("{}", progress::error_summary(f.status(), f.error.as_ref()));
        }
        Outcome::Interrupted | Outcome::Ended => {}
    }
    Ok(())
}
