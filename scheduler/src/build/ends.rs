//! How a build's steps end: each step's outcome in the build's summary,
//! the steps a build ending early cancels, and what a resumed build's log
//! already says (so that a step ends once in it, its job ids stay unique
//! and the build starts once).

use super::handle::BuildHandle;
use super::job::{Failure, layer_info};
use super::run::BuildInput;
use super::wire::{duration, layer_proto, location, stage_name};
use crate::Inner;
use crate::image::{LayerInfo, rfc3339};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use strata_frontend::plan::{BuildPlan, Step};
use strata_proto::build::v1 as build;

use build::build_event::Event;

/// Records how `step` ended in the build's summary.
pub(super) fn outcome(
    handle: &BuildHandle,
    step: &Step,
    status: build::StepStatus,
    layer: Option<&LayerInfo>,
    worker_id: &str,
    took: Duration,
    attempts: u32,
) {
    handle.update(|i| {
        i.step_outcomes.push(build::StepOutcome {
            step_id: step.id.clone(),
            status: status as i32,
            worker_id: worker_id.to_string(),
            duration: Some(duration(took)),
            layer: layer.map(layer_proto),
            cache_key: step.cache_key.clone(),
            attempts,
        });
        let counts = i.steps.get_or_insert_with(Default::default);
        match status {
            build::StepStatus::Cached => counts.cached += 1,
            build::StepStatus::Executed => counts.executed += 1,
            build::StepStatus::Failed => counts.failed += 1,
            _ => {}
        }
    });
}

/// Stops a build ending early: its jobs still running are cancelled, and
/// every step without a terminal event gets `StepCancelled` and a
/// cancelled outcome, so that the build's clients see each step end.
pub(super) fn stop_the_rest(
    inner: &Arc<Inner>,
    handle: &BuildHandle,
    plan: &BuildPlan,
    earlier: &Earlier,
    running_jobs: &BTreeSet<String>,
    reason: &str,
) {
    for job in running_jobs {
        inner.pool.cancel(job, reason);
    }
    super::step::mark_jobs(inner, running_jobs.iter().cloned().collect(), "cancelled");
    let ended: BTreeSet<String> = handle
        .info()
        .step_outcomes
        .into_iter()
        .map(|o| o.step_id)
        .collect();
    for step in plan.steps.iter().filter(|s| !ended.contains(&s.id)) {
        // Ended before a scheduler restart: as it ended then.
        if let Some(e) = earlier.ended(&step.id) {
            outcome(
                handle,
                step,
                e.status,
                e.layer.as_ref(),
                &e.worker_id,
                e.took,
                e.attempts,
            );
            continue;
        }
        handle.emit(Event::StepCancelled(build::StepCancelled {
            step_id: step.id.clone(),
            reason: reason.to_string(),
        }));
        outcome(
            handle,
            step,
            build::StepStatus::Cancelled,
            None,
            "",
            Duration::ZERO,
            0,
        );
    }
    in_plan_order(handle, plan);
}

/// Ends a build at its failed `step` (job `job_id`): the step's
/// `StepFailed` and outcome, every other step stopped
/// ([`stop_the_rest`]), and the failure named as `docker build` names it.
#[allow(clippy::too_many_arguments)]
pub(super) fn fail_step(
    inner: &Arc<Inner>,
    handle: &BuildHandle,
    plan: &BuildPlan,
    earlier: &Earlier,
    input: &BuildInput,
    step: &Step,
    job_id: &str,
    running_jobs: &BTreeSet<String>,
    mut f: Failure,
) -> Failure {
    // A step that ended before a scheduler restart (StepDone, StepCached
    // or StepFailed in the log) gets no second end.
    let ended_before = earlier.ended(&step.id).is_some()
        || earlier
            .failed
            .as_ref()
            .is_some_and(|x| x.step_id == step.id);
    if !ended_before {
        handle.emit(Event::StepFailed(build::StepFailed {
            step_id: step.id.clone(),
            worker_id: f.worker_id.clone(),
            job_id: job_id.to_string(),
            attempt: f.attempts,
            exit_code: f.error.exit_code,
            signal: f.error.signal,
            message: f.error.message.clone(),
            log_tail: f.error.log_tail.clone(),
            will_retry: false,
            duration: Some(duration(f.duration)),
            code: f.error.code,
        }));
    }
    outcome(
        handle,
        step,
        build::StepStatus::Failed,
        None,
        &f.worker_id,
        f.duration,
        f.attempts,
    );
    // As BuildKit: one failed step stops the build; the others are
    // cancelled.
    stop_the_rest(
        inner,
        handle,
        plan,
        earlier,
        running_jobs,
        "another step failed",
    );
    f.error.step_id = step.id.clone();
    f.error.stage_name = stage_name(plan, step.stage);
    f.error.instruction = step.instruction.clone();
    f.error.location = Some(location(input, step.line));
    if f.error.code == build::ErrorCode::StepFailed as i32 {
        let code = match (f.error.exit_code, f.error.signal) {
            (Some(c), _) => format!("exit code: {c}"),
            (None, Some(s)) => format!("signal: {s}"),
            _ => f.error.message.clone(),
        };
        f.error.message = format!(
            "{}:{}: {}: did not complete successfully: {code}",
            input.dockerfile_name, step.line, step.instruction
        );
    }
    f
}

/// Gives every step the log shows queued or started, and not ended, a
/// `StepCancelled` (a build failing before it could plan, or a path that
/// did not stop its steps).
pub(super) fn close_open_steps(handle: &BuildHandle, reason: &str) {
    let mut open: Vec<String> = Vec::new();
    for ev in handle.logged() {
        match ev.event {
            Some(Event::StepQueued(q)) if !open.contains(&q.step_id) => open.push(q.step_id),
            Some(Event::StepStarted(s)) if !open.contains(&s.step_id) => open.push(s.step_id),
            Some(Event::StepDone(build::StepDone { step_id, .. }))
            | Some(Event::StepCached(build::StepCached { step_id, .. }))
            | Some(Event::StepCancelled(build::StepCancelled { step_id, .. })) => {
                open.retain(|s| *s != step_id);
            }
            Some(Event::StepFailed(f)) if !f.will_retry => open.retain(|s| *s != f.step_id),
            _ => {}
        }
    }
    for step_id in open {
        handle.emit(Event::StepCancelled(build::StepCancelled {
            step_id,
            reason: reason.to_string(),
        }));
    }
}

/// The failure a `StepFailed` logged before a scheduler restart reported,
/// for the resumed build to end with.
pub(super) fn replayed(sf: &build::StepFailed) -> Failure {
    let code = match build::ErrorCode::try_from(sf.code) {
        Ok(build::ErrorCode::Unspecified) | Err(_) => build::ErrorCode::StepFailed,
        Ok(c) => c,
    };
    let mut f = Failure::new(code, sf.message.clone());
    f.error.step_id = sf.step_id.clone();
    f.error.exit_code = sf.exit_code;
    f.error.signal = sf.signal;
    f.error.log_tail = sf.log_tail.clone();
    f.worker_id = sf.worker_id.clone();
    f.attempts = sf.attempt;
    f.duration = sf
        .duration
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or_default();
    f
}

/// Orders the build's step outcomes as its plan orders the steps (they
/// are recorded as the steps end).
pub(super) fn in_plan_order(handle: &BuildHandle, plan: &BuildPlan) {
    let at: BTreeMap<&str, usize> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    handle.update(|i| {
        i.step_outcomes
            .sort_by_key(|o| at.get(o.step_id.as_str()).copied().unwrap_or(usize::MAX));
    });
}

/// What a build's log says already when the build resumes after a
/// scheduler restart (nothing, for a new build).
#[derive(Debug, Default)]
pub(super) struct Earlier {
    /// `BuildStarted` is in the log.
    pub(super) started: bool,
    /// Steps that ended (done or cached) before the restart.
    ended: BTreeMap<String, Ended>,
    /// Steps started and not ended: (step, attempt) of their last run,
    /// which the restart cut short.
    pub(super) interrupted: Vec<(String, u32)>,
    /// Step → the runs its job ids have numbered so far.
    pub(super) runs: BTreeMap<String, u32>,
    /// A step that failed (not to be retried) before the restart, which
    /// the build did not get to report.
    pub(super) failed: Option<build::StepFailed>,
}

/// How a step ended before a restart.
#[derive(Debug, Clone)]
pub(super) struct Ended {
    pub(super) status: build::StepStatus,
    pub(super) layer: Option<LayerInfo>,
    pub(super) worker_id: String,
    pub(super) took: Duration,
    pub(super) attempts: u32,
    /// When it ended (RFC 3339), for the layer's history entry.
    pub(super) created: String,
}

impl Earlier {
    /// Reads build `build_id`'s log `events`.
    pub(super) fn of(build_id: &str, events: &[build::BuildEvent]) -> Self {
        let mut e = Earlier::default();
        let mut last_run: BTreeMap<String, u32> = BTreeMap::new();
        for ev in events {
            let at = ev
                .timestamp
                .map(|t| rfc3339(t.seconds, t.nanos.max(0) as u32))
                .unwrap_or_default();
            match &ev.event {
                Some(Event::BuildStarted(_)) => e.started = true,
                Some(Event::StepStarted(s)) => {
                    last_run.insert(s.step_id.clone(), s.attempt);
                    let n = run_number(build_id, &s.step_id, &s.job_id);
                    let runs = e.runs.entry(s.step_id.clone()).or_insert(0);
                    *runs = (*runs).max(n);
                }
                // A run withdrawn (queued again) is not interrupted.
                Some(Event::StepQueued(q)) => {
                    last_run.remove(&q.step_id);
                }
                Some(Event::StepDone(d)) => {
                    last_run.remove(&d.step_id);
                    e.ended.insert(
                        d.step_id.clone(),
                        Ended {
                            status: build::StepStatus::Executed,
                            layer: d.layer.clone().map(layer_info),
                            worker_id: d.worker_id.clone(),
                            took: d
                                .duration
                                .and_then(|d| Duration::try_from(d).ok())
                                .unwrap_or_default(),
                            attempts: d.attempt,
                            created: at.clone(),
                        },
                    );
                }
                Some(Event::StepCached(c)) => {
                    last_run.remove(&c.step_id);
                    e.ended.insert(
                        c.step_id.clone(),
                        Ended {
                            status: build::StepStatus::Cached,
                            layer: c.layer.clone().map(layer_info),
                            worker_id: c.source_worker_id.clone(),
                            took: Duration::ZERO,
                            attempts: 0,
                            created: at.clone(),
                        },
                    );
                }
                Some(Event::StepFailed(f)) if !f.will_retry => {
                    last_run.remove(&f.step_id);
                    e.failed = Some(f.clone());
                }
                Some(Event::StepCancelled(c)) => {
                    last_run.remove(&c.step_id);
                }
                _ => {}
            }
        }
        e.interrupted = last_run.into_iter().collect();
        e
    }

    /// How `step_id` ended before the restart: the cache hit the resumed
    /// build finds for it is that end, not a new one.
    pub(super) fn ended(&self, step_id: &str) -> Option<&Ended> {
        self.ended.get(step_id)
    }
}

/// Whether `job_id` is one of the runs of `step_id` in build `build_id`
/// (see `Riding::job_id`): a resumed build's new run finds the claim of
/// its run before the restart.
pub(super) fn run_of(build_id: &str, step_id: &str, job_id: &str) -> bool {
    job_id
        .strip_prefix(build_id)
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|r| r.strip_prefix(step_id))
        .is_some_and(|rest| {
            rest.is_empty()
                || rest
                    .strip_prefix('-')
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// The run a job id numbers (see `Riding::job_id`): 1 for
/// `<build>-<step>`, n for `<build>-<step>-<n>`.
fn run_number(build_id: &str, step_id: &str, job_id: &str) -> u32 {
    job_id
        .strip_prefix(&format!("{build_id}-{step_id}"))
        .and_then(|rest| match rest {
            "" => Some(1),
            _ => rest.strip_prefix('-')?.parse().ok(),
        })
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: Event) -> build::BuildEvent {
        build::BuildEvent {
            event: Some(event),
            ..Default::default()
        }
    }

    fn started(step: &str, job: &str, attempt: u32) -> build::BuildEvent {
        ev(Event::StepStarted(build::StepStarted {
            step_id: step.into(),
            worker_id: "w1".into(),
            job_id: job.into(),
            attempt,
        }))
    }

    #[test]
    fn a_resumed_build_knows_what_ended_what_was_cut_short_and_its_job_ids() {
        let layer = strata_proto::common::v1::Layer {
            blob: Some(strata_proto::common::v1::Descriptor {
                digest: "sha256:a".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let log = [
            ev(Event::BuildStarted(Default::default())),
            started("s1", "b-s1", 1),
            ev(Event::StepDone(build::StepDone {
                step_id: "s1".into(),
                worker_id: "w1".into(),
                attempt: 1,
                layer: Some(layer),
                ..Default::default()
            })),
            started("s2", "b-s2", 1),
            ev(Event::StepQueued(build::StepQueued {
                step_id: "s2".into(),
                attempt: 1,
                ..Default::default()
            })),
            started("s2", "b-s2-2", 1),
            started("s3", "b-s3", 2),
        ];
        let e = Earlier::of("b", &log);
        assert!(e.started);
        assert_eq!(
            e.ended("s1").map(|x| (
                x.status,
                x.worker_id.as_str(),
                x.layer.as_ref().map(|l| l.digest.as_str())
            )),
            Some((build::StepStatus::Executed, "w1", Some("sha256:a")))
        );
        assert!(e.ended("s2").is_none() && e.failed.is_none());
        assert!(run_of("b", "s2", "b-s2-2") && run_of("b", "s2", "b-s2"));
        assert!(!run_of("b", "s2", "b-s2-x") && !run_of("b", "s0-1", "b-s0-10"));
        assert!(!run_of("b", "s2", "c-s2") && !run_of("b", "s2", "b-s2-"));
        assert_eq!(e.interrupted, [("s2".into(), 1), ("s3".into(), 2)]);
        assert_eq!(
            e.runs,
            BTreeMap::from([("s1".into(), 1), ("s2".into(), 2), ("s3".into(), 1)])
        );
        let fresh = Earlier::of("b", &[]);
        assert!(!fresh.started && fresh.interrupted.is_empty());
    }

    #[test]
    fn a_failing_build_leaves_no_step_open() {
        let handle = BuildHandle::new("b".into(), Default::default());
        for e in [
            started("s1", "b-s1", 1),
            ev(Event::StepDone(build::StepDone {
                step_id: "s1".into(),
                ..Default::default()
            })),
            ev(Event::StepQueued(build::StepQueued {
                step_id: "s2".into(),
                ..Default::default()
            })),
            started("s3", "b-s3", 1),
            ev(Event::StepFailed(build::StepFailed {
                step_id: "s3".into(),
                will_retry: true,
                ..Default::default()
            })),
        ] {
            handle.emit(e.event.unwrap());
        }
        close_open_steps(&handle, "boom");
        // Again: nothing more.
        close_open_steps(&handle, "boom");
        let cancelled: Vec<String> = handle
            .logged()
            .into_iter()
            .filter_map(|e| match e.event {
                Some(Event::StepCancelled(c)) => Some(format!("{} {}", c.step_id, c.reason)),
                _ => None,
            })
            .collect();
        assert_eq!(cancelled, ["s2 boom", "s3 boom"]);
        // A final failure in the log is what a resumed build reports.
        handle.emit(Event::StepFailed(build::StepFailed {
            step_id: "s4".into(),
            message: "exit code: 3".into(),
            ..Default::default()
        }));
        let e = Earlier::of("b", &handle.logged());
        let failed = e.failed.expect("the failure");
        assert_eq!(
            (failed.step_id.as_str(), failed.message.as_str()),
            ("s4", "exit code: 3")
        );
    }
}
