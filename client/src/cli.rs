//! Command-line definition and dispatch.

use crate::commands;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// strata: remote container image builds with Docker's semantics.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile.
    #[cfg(feature = "embedded")]
    Build(commands::build::BuildArgs),
    /// List images.
    #[cfg(feature = "embedded")]
    Images,
    /// Show the history of an image.
    #[cfg(feature = "embedded")]
    History(commands::images::HistoryArgs),
    /// Print the per-layer job graph of a Dockerfile without building it.
    Plan(commands::plan::PlanArgs),
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        #[cfg(feature = "embedded")]
        Command::Build(args) => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(commands::build::run(&args))
        }
        #[cfg(feature = "embedded")]
        Command::Images => {
            print!("{}", commands::images::images(&commands::build::home())?);
            Ok(())
        }
        #[cfg(feature = "embedded")]
        Command::History(args) => {
            print!(
                "{}",
                commands::images::history(&commands::build::home(), &args)?
            );
            Ok(())
        }
        Command::Plan(args) => commands::plan::run(&args),
    }
}

/// Parses the command line, runs the command and maps failure to exit 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
