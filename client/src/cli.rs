//! Command-line definition and dispatch.

use crate::commands::{
    build, builds, cancel, history, images, import, logs, plan, prune, push, rmi, save, tag,
    workers,
};
use crate::connect;
use anyhow::Result;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// strata: remote container image builds with Docker's semantics.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, long_about = None)]
pub struct Cli {
    /// Scheduler to talk to, e.g. `http://127.0.0.1:7390`; without it the
    /// builder runs in this process (when strata was built with it).
    #[arg(long, global = true, env = "STRATA_SCHEDULER", value_name = "URL")]
    pub scheduler: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile.
    Build(Box<build::BuildArgs>),
    /// List images.
    Images(images::ImagesArgs),
    /// Show the history of an image.
    History(history::HistoryArgs),
    /// Write an image as a docker-archive tarball.
    Save(save::SaveArgs),
    /// Push an image to a registry.
    Push(push::PushArgs),
    /// Give an image another name.
    Tag(tag::TagArgs),
    /// Remove images.
    Rmi(rmi::RmiArgs),
    /// Create an image from a root filesystem tarball.
    Import(import::ImportArgs),
    /// Show a build's progress and logs.
    Logs(logs::LogsArgs),
    /// Cancel a build.
    Cancel(cancel::CancelArgs),
    /// List the scheduler's workers.
    Workers(workers::WorkersArgs),
    /// List recent builds.
    Builds(builds::BuildsArgs),
    /// Remove build cache nobody uses.
    Prune(prune::PruneArgs),
    /// Print the per-layer job graph of a Dockerfile without building it.
    Plan(plan::PlanArgs),
}

impl Command {
    /// The subcommand's name, for the trace.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Build(_) => "build",
            Command::Images(_) => "images",
            Command::History(_) => "history",
            Command::Save(_) => "save",
            Command::Push(_) => "push",
            Command::Tag(_) => "tag",
            Command::Rmi(_) => "rmi",
            Command::Import(_) => "import",
            Command::Logs(_) => "logs",
            Command::Cancel(_) => "cancel",
            Command::Workers(_) => "workers",
            Command::Builds(_) => "builds",
            Command::Prune(_) => "prune",
            Command::Plan(_) => "plan",
        }
    }
}

async fn remote(scheduler: Option<&str>, command: Command) -> Result<()> {
    if let Command::Build(args) = &command {
        return build::run(args, scheduler).await;
    }
    let mut conn = connect::connect(scheduler).await?;
    let c = &mut conn.client;
    match &command {
        Command::Images(a) => images::run(c, a).await,
        Command::History(a) => history::run(c, a).await,
        Command::Save(a) => save::run(c, a).await,
        Command::Push(a) => push::run(c, a).await,
        Command::Tag(a) => tag::run(c, a).await,
        Command::Rmi(a) => rmi::run(c, a).await,
        Command::Import(a) => import::run(c, a).await,
        Command::Logs(a) => logs::run(c, a).await,
        Command::Cancel(a) => cancel::run(c, a).await,
        Command::Workers(a) => workers::run(c, a).await,
        Command::Builds(a) => builds::run(c, a).await,
        Command::Prune(a) => prune::run(c, a).await,
        Command::Build(_) | Command::Plan(_) => unreachable!("handled before connecting"),
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Command::Plan(args) = &cli.command {
        return plan::run(args);
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        // With an OTLP endpoint, the command is the root of the build's
        // trace: its calls carry the context to the scheduler and workers.
        let _telemetry = match strata_telemetry::otlp_endpoint_from_env() {
            Some(endpoint) => Some(strata_telemetry::init(&strata_telemetry::Options {
                service: "strata",
                json: false,
                otlp_endpoint: Some(endpoint),
                default_filter: "warn",
            })?),
            None => None,
        };
        let span = tracing::info_span!("strata", command = cli.command.name());
        tracing::Instrument::instrument(remote(cli.scheduler.as_deref(), cli.command), span).await
    })
}

/// Parses the command line, runs the command and maps failure to an exit
/// status: 1 with `error: ...` on stderr, or the status of a [`crate::Exit`].
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(crate::Exit(code)) = e.downcast_ref::<crate::Exit>() {
                return ExitCode::from(*code);
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
