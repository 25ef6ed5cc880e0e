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
    /// Print the per-layer job graph of a Dockerfile without building it.
    Plan(commands::plan::PlanArgs),
}

/// Parses the command line, runs the command and maps failure to exit 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Plan(args) => commands::plan::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
