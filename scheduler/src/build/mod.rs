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

/// A scheduler on a temporary state directory and the plan of a
/// Dockerfile, for the build module's tests.
#[cfg(test)]
pub(crate) async fn test_scheduler(
    dockerfile: &str,
) -> (
    tempfile::TempDir,
    crate::Scheduler,
    strata_frontend::plan::BuildPlan,
) {
    use strata_frontend::plan::{Offline, PlanOptions, plan_dockerfile};
    let dir = tempfile::tempdir().expect("state dir");
    let s = crate::Scheduler::open(crate::SchedulerConfig::new(dir.path()))
        .await
        .expect("scheduler");
    let plan = plan_dockerfile(
        dockerfile.as_bytes(),
        None,
        &PlanOptions::default(),
        &Offline,
    )
    .expect("plan");
    (dir, s, plan)
}
