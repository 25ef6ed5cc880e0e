//! Builds: the event log every watcher reads (`handle`), base-image
//! resolution (`resolve`), and the run itself (`run`): plan, cache
//! lookups, dispatch of ready steps to the worker pool, image assembly.

mod chains;
mod early;
mod handle;
mod job;
pub mod recover;
mod resolve;
mod run;
mod step;
mod wire;

pub use handle::{BuildHandle, is_terminal};
pub use resolve::Resolved;
pub use run::{BuildInput, finished_builds, run_build};
