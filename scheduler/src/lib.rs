//! The strata scheduler. Not implemented yet (issue #4): the binary only
//! prints its usage and exits with status 2, so nothing pretends to work.
//! The library already assembles images from a plan and its layers
//! ([`image`]).

pub mod assign;
pub mod image;

/// The usage text the binary prints.
pub const USAGE: &str = "\
usage: strata-scheduler [OPTIONS]

Serves BuildService to clients and WorkerService to workers, plans builds and dispatches per-layer jobs.

options (planned):
  --listen ADDR        address to serve gRPC on

strata-scheduler is not implemented yet; see ARCHITECTURE.md for the plan.
";
