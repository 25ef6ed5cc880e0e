//! The strata worker. Not implemented yet (issue #3): the binary only
//! prints its usage and exits with status 2, so nothing pretends to work.

pub mod assignment;
pub mod copy;
pub mod fetch;
pub mod job;
pub mod pull;
pub mod snapshot;
pub mod store;

pub mod executor;

/// The usage text the binary prints.
pub const USAGE: &str = "\
usage: strata-worker [OPTIONS]

Connects to a scheduler, pulls layer jobs over one bidirectional stream and runs them in runc.

options (planned):
  --scheduler URL      scheduler to connect to

strata-worker is not implemented yet; see ARCHITECTURE.md for the plan.
";
