//! Builds: the event log every watcher reads (`handle`), base-image
//! resolution (`resolve`), and the run itself (`run`): plan, cache
//! lookups, dispatch of ready steps to the worker pool, image assembly.

mod chains;
mod early;
mod ends;
mod handle;
mod job;
mod persist;
pub mod recover;
mod resolve;
mod run;
mod step;
mod wire;

pub use handle::{BuildHandle, is_terminal};
pub use persist::finished_builds;
pub use resolve::Resolved;
pub use run::{BuildInput, run_build};
