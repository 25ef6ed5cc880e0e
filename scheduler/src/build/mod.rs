//! Builds: the event log every watcher reads (`handle`), base-image
//! resolution (`resolve`), and the run itself (`run`): plan, cache
//! lookups, dispatch of ready steps to the worker pool, image assembly.

mod handle;
mod resolve;
mod run;

pub use handle::{BuildHandle, is_terminal};
pub use resolve::Resolved;
pub use run::{BuildInput, run_build};
