//! Steps started on a layer that is still uploading.
//!
//! A worker reports a job's layer as soon as it is made
//! (`JobCommitted`), then uploads it to the farm's blob store and only
//! then sends the result. Until the result only that worker has the
//! layer, but the steps built on it need not wait for the upload: they
//! may start on that worker at once ("ride" on it), as BuildKit's next
//! step starts on its parent's snapshot. Steps whose layers only other
//! workers hold still wait for the upload.
//!
//! A rider counts as done (StepDone, the cache record) only once the
//! steps it rode on are done ([`Gate`]). If one of those runs again
//! instead (its worker failed the upload or went away, so the layer it
//! made may never be stored and the next run makes another), the riders
//! are cancelled and queued again, to be built on the layer that is
//! stored ([`Riding::revoke`]).

use crate::image::LayerInfo;
use std::collections::{BTreeMap, BTreeSet};
use strata_frontend::plan::Step;
use tokio::sync::{mpsc, watch};

/// What a step's job tells the build loop before its result.
#[derive(Debug)]
pub(super) enum Early {
    /// The layer is made and only `worker_id` has it.
    Committed {
        step_id: String,
        job_id: String,
        worker_id: String,
        layer: LayerInfo,
    },
    /// The layer reported committed is void: the step runs again.
    Revoked { step_id: String, job_id: String },
    /// A rider's job found its layer in the cache: it waits only for the
    /// steps it rode on.
    Waiting { job_id: String },
}

/// A rider's wait for the steps it rode on to be done.
#[derive(Debug, Clone)]
pub(super) struct Gate {
    /// Done steps and their layers (stored).
    done: watch::Receiver<BTreeMap<String, LayerInfo>>,
    parents: Vec<String>,
}

impl Gate {
    /// Waits until every step the rider rode on is done; false when the
    /// build's loop is gone.
    pub(super) async fn open(&mut self) -> bool {
        let parents = &self.parents;
        self.done
            .wait_for(|done| parents.iter().all(|p| done.contains_key(p)))
            .await
            .is_ok()
    }

    /// Whether every step the rider rode on is done already.
    pub(super) fn is_open(&self) -> bool {
        let done = self.done.borrow();
        self.parents.iter().all(|p| done.contains_key(p))
    }

    /// Gives the layers `a` reads as they were reported early (no blob)
    /// the blobs they were stored with, where their steps are done: an
    /// assignment made while they were early, queued after.
    pub(super) fn fill(&self, a: &mut strata_proto::worker::v1::JobAssignment) {
        let done = self.done.borrow();
        strata_proto::fill_blobs(a, |diff_id| {
            done.values()
                .find(|l| l.diff_id == diff_id && !l.digest.is_empty())
                .map(super::wire::layer_proto)
        });
    }
}

impl Link {
    /// For a rider: waits until the steps it rode on are done (a step is
    /// recorded only then, from the cache or not); false when the build's
    /// loop is gone. True at once for other steps.
    pub(super) async fn settled(&self) -> bool {
        match &self.ride {
            Some((_, gate)) => gate.clone().open().await,
            None => true,
        }
    }

    /// For a rider: gives the layers its assignment reads as they were
    /// reported early the blobs they have been stored with since.
    pub(super) fn fill(&self, a: &mut strata_proto::worker::v1::JobAssignment) {
        if let Some((_, gate)) = &self.ride {
            gate.fill(a);
        }
    }

    /// The worker a rider's job must go to: the one holding the layers it
    /// starts on, unless they are all stored by now.
    pub(super) fn bound_to(&self) -> Option<&str> {
        self.ride
            .as_ref()
            .filter(|(_, gate)| !gate.is_open())
            .map(|(w, _)| w.as_str())
    }
}

/// How a step's job is tied to the build loop besides its result.
#[derive(Debug, Clone)]
pub(super) struct Link {
    /// Where the job's early layer, and its revocation, go.
    pub(super) early: mpsc::UnboundedSender<Early>,
    /// For a rider: the worker holding the layers it starts on, and the
    /// wait for their steps.
    pub(super) ride: Option<(String, Gate)>,
}

struct Rider {
    job_id: String,
    parents: BTreeSet<String>,
    abort: futures::future::AbortHandle,
}

/// A rider stopped because a step it rode on runs again.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Stopped {
    pub(super) step_id: String,
    pub(super) job_id: String,
}

/// The build loop's record of early layers and the steps riding on them.
pub(super) struct Riding {
    /// Step → (worker, layer) of layers only their worker has yet.
    early: BTreeMap<String, (String, LayerInfo)>,
    riders: BTreeMap<String, Rider>,
    done: watch::Sender<BTreeMap<String, LayerInfo>>,
    /// Step → how many times its job was started, for fresh job ids.
    runs: BTreeMap<String, u32>,
    /// Step → the job id of its current run: what a stopped run still
    /// had on its way is ignored.
    current: BTreeMap<String, String>,
    /// Runs (job id, diffID) whose early layer their worker was told
    /// steps wait for.
    hurried: BTreeSet<(String, String)>,
    /// Riders' jobs that found their layer in the cache and wait for the
    /// steps they rode on.
    waiting: BTreeSet<String>,
}

impl Riding {
    /// `runs`: step → the runs its job ids numbered before (a resumed
    /// build's), so that a new run's id is new.
    pub(super) fn new(runs: BTreeMap<String, u32>) -> Self {
        Self {
            early: BTreeMap::new(),
            riders: BTreeMap::new(),
            done: watch::channel(BTreeMap::new()).0,
            runs,
            current: BTreeMap::new(),
            hurried: BTreeSet::new(),
            waiting: BTreeSet::new(),
        }
    }

    /// The job id of `step`'s next run: `<build>-<step>` first, then
    /// `<build>-<step>-<n>` (a cancelled run's id stays with it until its
    /// worker confirms it stopped).
    pub(super) fn job_id(&mut self, build_id: &str, step_id: &str) -> String {
        let n = self.runs.entry(step_id.to_string()).or_insert(0);
        *n += 1;
        let id = if *n == 1 {
            format!("{build_id}-{step_id}")
        } else {
            format!("{build_id}-{step_id}-{n}")
        };
        self.current.insert(step_id.to_string(), id.clone());
        id
    }

    fn is_current(&self, step_id: &str, job_id: &str) -> bool {
        self.current.get(step_id).is_some_and(|j| j == job_id)
    }

    /// Where a step not all of whose dependencies are done can start now:
    /// the one worker holding every early layer among them, with those
    /// steps, if the rest are done.
    pub(super) fn placement(
        &self,
        step: &Step,
        done: &BTreeSet<String>,
    ) -> Option<(String, Vec<String>)> {
        let mut worker: Option<&str> = None;
        let mut parents = Vec::new();
        for d in &step.depends_on {
            if done.contains(d) {
                continue;
            }
            let (w, _) = self.early.get(d)?;
            if worker.is_some_and(|x| x != w) {
                return None;
            }
            worker = Some(w);
            parents.push(d.clone());
        }
        worker.map(|w| (w.to_string(), parents))
    }

    /// A rider's job `job_id` found its layer in the cache and waits for
    /// nothing but the steps it rode on.
    pub(super) fn waits(&mut self, job_id: &str) {
        self.waiting.insert(job_id.to_string());
    }

    /// Jobs whose early layers the build now waits for, each named once
    /// per run and layer: those of the steps a step still `pending` (not
    /// started, so not riding) depends on, and of those a rider waiting
    /// with a cache hit rode on; all of them once every job in
    /// `running_jobs` has made its layer or waits so (nothing else is left
    /// to run before they are stored); and, as a rider is done only after
    /// the steps it rode on, theirs too. Their workers are told
    /// ([`crate::pool::Pool::hurry`]), so as not to put off the blobs and
    /// uploads for spare CPU.
    pub(super) fn waited_for(
        &mut self,
        pending: &[&Step],
        running_jobs: &BTreeSet<String>,
    ) -> Vec<String> {
        let idle: BTreeSet<&String> = self
            .early
            .keys()
            .filter_map(|s| self.current.get(s))
            .chain(&self.waiting)
            .collect();
        let mut wanted: Vec<String> = if running_jobs.iter().all(|j| idle.contains(j)) {
            self.early.keys().cloned().collect()
        } else {
            // A step waiting for others still running waits for those
            // first (and may ride once they are made where these are).
            let done = self.done.borrow();
            let blocked: Vec<&&Step> = pending
                .iter()
                .filter(|p| {
                    p.depends_on
                        .iter()
                        .all(|d| done.contains_key(d) || self.early.contains_key(d))
                })
                .collect();
            let needed: Vec<String> = self
                .early
                .keys()
                .filter(|s| blocked.iter().any(|p| p.depends_on.contains(s)))
                .cloned()
                .collect();
            drop(done);
            let ridden = self
                .riders
                .values()
                .filter(|r| self.waiting.contains(&r.job_id))
                .flat_map(|r| r.parents.iter().cloned());
            needed.into_iter().chain(ridden).collect()
        };
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        while let Some(step) = wanted.pop() {
            if !seen.insert(step.clone()) {
                continue;
            }
            if let Some(r) = self.riders.get(&step) {
                wanted.extend(r.parents.iter().cloned());
            }
            if let (Some((_, layer)), Some(job)) = (self.early.get(&step), self.current.get(&step))
                && !self.hurried.contains(&(job.clone(), layer.diff_id.clone()))
            {
                out.push(job.clone());
            }
        }
        out
    }

    /// The workers of jobs `told` were told their layers are waited for
    /// ([`Riding::waited_for`]): not again for the same layer.
    pub(super) fn hurried(&mut self, told: &[String]) {
        for (step, (_, layer)) in &self.early {
            if let Some(job) = self.current.get(step)
                && told.contains(job)
            {
                self.hurried.insert((job.clone(), layer.diff_id.clone()));
            }
        }
    }

    /// The wait for `parents` to be done.
    pub(super) fn gate(&self, parents: Vec<String>) -> Gate {
        Gate {
            done: self.done.subscribe(),
            parents,
        }
    }

    /// `step_id`'s layer is made by its job `job_id` and held by
    /// `worker_id` alone: `Some` with the riders stopped because they
    /// started on another early layer of the step (none, from a worker
    /// that keeps its word); `None` (ignored) when the step is already
    /// done, or the job is a run since stopped.
    pub(super) fn committed(
        &mut self,
        step_id: &str,
        job_id: &str,
        worker_id: &str,
        layer: LayerInfo,
    ) -> Option<Vec<Stopped>> {
        if self.done.borrow().contains_key(step_id) || !self.is_current(step_id, job_id) {
            return None;
        }
        let stopped = match self.early.get(step_id) {
            Some((_, earlier)) if earlier.diff_id != layer.diff_id => self.stop_riders_of(step_id),
            _ => Vec::new(),
        };
        self.early
            .insert(step_id.to_string(), (worker_id.to_string(), layer));
        Some(stopped)
    }

    /// A rider's job started, stopped by `abort` if revoked.
    pub(super) fn started(
        &mut self,
        step_id: &str,
        job_id: &str,
        parents: Vec<String>,
        abort: futures::future::AbortHandle,
    ) {
        self.riders.insert(
            step_id.to_string(),
            Rider {
                job_id: job_id.to_string(),
                parents: parents.into_iter().collect(),
                abort,
            },
        );
    }

    /// `step_id` is done with `layer`. Riders whose every parent is done
    /// now are riders no more: their job ids are returned, to be let go
    /// to any worker if still queued. If the layer is not the one
    /// reported early (it cannot be, from a worker that keeps its
    /// word), the step's riders are stopped instead and returned second.
    /// A layer is the one reported early if its diffID is: a worker
    /// reports a layer before making its blob, so the early report may
    /// have no blob.
    pub(super) fn done(&mut self, step_id: &str, layer: &LayerInfo) -> (Vec<String>, Vec<Stopped>) {
        let differs = self
            .early
            .remove(step_id)
            .is_some_and(|(_, early)| early.diff_id != layer.diff_id);
        let stopped = if differs {
            self.stop_riders_of(step_id)
        } else {
            Vec::new()
        };
        // A rider done (a cache hit waits for its parents too) is no
        // rider any more.
        self.riders.remove(step_id);
        if let Some(job) = self.current.get(step_id) {
            self.waiting.remove(job);
        }
        self.done.send_modify(|d| {
            d.insert(step_id.to_string(), layer.clone());
        });
        let done = self.done.borrow().clone();
        let free: Vec<String> = self
            .riders
            .iter()
            .filter(|(_, r)| r.parents.iter().all(|p| done.contains_key(p)))
            .map(|(s, _)| s.clone())
            .collect();
        let released = free
            .into_iter()
            .filter_map(|s| self.riders.remove(&s))
            .map(|r| r.job_id)
            .collect();
        (released, stopped)
    }

    /// The early layer of `step_id`'s job `job_id` is void: its riders,
    /// and theirs, are stopped (their futures aborted) and returned, to be
    /// cancelled and queued again. `None` when there was no such layer
    /// (the step is done, or the job is a run since stopped).
    pub(super) fn revoke(&mut self, step_id: &str, job_id: &str) -> Option<Vec<Stopped>> {
        if !self.is_current(step_id, job_id) {
            return None;
        }
        self.early.remove(step_id)?;
        // Its next run (the same job id on another attempt) may make the
        // same layer elsewhere: that worker is told anew.
        self.hurried.retain(|(j, _)| j != job_id);
        Some(self.stop_riders_of(step_id))
    }

    fn stop_riders_of(&mut self, step_id: &str) -> Vec<Stopped> {
        let mut out = Vec::new();
        let mut void = vec![step_id.to_string()];
        while let Some(s) = void.pop() {
            let on: Vec<String> = self
                .riders
                .iter()
                .filter(|(_, r)| r.parents.contains(&s))
                .map(|(id, _)| id.clone())
                .collect();
            for id in on {
                let Some(r) = self.riders.remove(&id) else {
                    continue;
                };
                r.abort.abort();
                // Its run is over: whatever it still had on its way is
                // ignored.
                self.current.remove(&id);
                // A rider may have made its own layer early, with riders
                // of its own.
                if self.early.remove(&id).is_some() {
                    void.push(id.clone());
                }
                out.push(Stopped {
                    step_id: id,
                    job_id: r.job_id,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(d: &str) -> LayerInfo {
        LayerInfo {
            diff_id: d.into(),
            digest: d.into(),
            media_type: String::new(),
            size: 1,
        }
    }

    fn step(id: &str, deps: &[&str]) -> Step {
        let plan = strata_frontend::plan::plan_dockerfile(
            b"FROM scratch\nRUN true\n",
            None,
            &Default::default(),
            &strata_frontend::plan::Offline,
        )
        .unwrap();
        let mut s = plan.steps[0].clone();
        s.id = id.into();
        s.depends_on = deps.iter().map(|d| d.to_string()).collect();
        s
    }

    fn handle() -> futures::future::AbortHandle {
        futures::future::AbortHandle::new_pair().0
    }

    #[test]
    fn a_rider_queued_after_its_parent_is_done_reads_the_stored_blob() {
        let mut r = Riding::new(BTreeMap::new());
        let a = r.job_id("b1", "a");
        let early = LayerInfo {
            digest: String::new(),
            size: 0,
            ..layer("la")
        };
        r.committed("a", &a, "w1", early.clone());
        let gate = r.gate(vec!["a".into()]);
        let mut assignment = strata_proto::worker::v1::JobAssignment {
            parent: Some(strata_proto::common::v1::Snapshot {
                layers: vec![super::super::wire::layer_proto(&early)],
                ..Default::default()
            }),
            ..Default::default()
        };
        gate.fill(&mut assignment);
        let read = |a: &strata_proto::worker::v1::JobAssignment| {
            a.parent.as_ref().expect("parent").layers[0].clone()
        };
        assert!(
            read(&assignment).blob.is_none_or(|b| b.digest.is_empty()),
            "not stored yet"
        );
        let _ = r.done("a", &layer("la"));
        gate.fill(&mut assignment);
        assert_eq!(
            read(&assignment),
            super::super::wire::layer_proto(&layer("la"))
        );
    }

    #[test]
    fn early_layers_are_waited_for_by_steps_not_riding_and_at_the_end() {
        let ids = |v: &[&String]| -> BTreeSet<String> { v.iter().map(|s| s.to_string()).collect() };
        let mut r = Riding::new(BTreeMap::new());
        let a = r.job_id("b1", "a");
        let b = r.job_id("b1", "b");
        let s = r.job_id("b1", "s");
        r.committed("a", &a, "w1", layer("la"));
        // a's rider s runs on w1, b runs elsewhere: nothing waits on a.
        r.started("s", &s, vec!["a".into()], handle());
        assert!(r.waited_for(&[], &ids(&[&a, &b, &s])).is_empty());
        // s made its layer early too. A step on s and b (made on another
        // worker) cannot ride: it waits for s's layer, and s is done
        // only after a, so for a's too; and for b's.
        r.committed("s", &s, "w1", layer("ls"));
        r.committed("b", &b, "w2", layer("lb"));
        let both = step("sb", &["s", "b"]);
        let mut told = r.waited_for(&[&both], &ids(&[&a, &b, &s]));
        told.sort();
        assert_eq!(told, vec![a.clone(), b.clone(), s.clone()]);
        // Until their workers are told, then not again.
        assert_eq!(r.waited_for(&[&both], &ids(&[&a, &b, &s])).len(), 3);
        r.hurried(&told);
        assert!(r.waited_for(&[&both], &ids(&[&a, &b, &s])).is_empty());
        // A step that also waits for one still running waits for that
        // first.
        let c = r.job_id("b1", "c");
        let later = step("ac", &["a", "c"]);
        assert!(r.waited_for(&[&later], &ids(&[&a, &b, &s, &c])).is_empty());

        // Everything running has made its layer: all are waited for.
        let mut r = Riding::new(BTreeMap::new());
        let a = r.job_id("b1", "a");
        let s = r.job_id("b1", "s");
        r.committed("a", &a, "w1", layer("la"));
        r.started("s", &s, vec!["a".into()], handle());
        assert!(r.waited_for(&[], &ids(&[&a, &s])).is_empty(), "s runs");
        // s found its layer in the cache and waits for a alone.
        r.waits(&s);
        assert_eq!(r.waited_for(&[], &ids(&[&a, &s])), vec![a.clone()]);
        r.hurried(std::slice::from_ref(&a));
        // a's layer is void (its worker lost) and its next attempt, the
        // same job, makes the same layer elsewhere: told again.
        let _ = r.revoke("a", &a);
        r.committed("a", &a, "w2", layer("la"));
        assert_eq!(r.waited_for(&[], &ids(&[&a])), vec![a.clone()]);
    }

    #[test]
    fn a_step_rides_only_on_layers_one_worker_holds_and_done_steps() {
        let mut r = Riding::new(BTreeMap::new());
        let mut done = BTreeSet::new();
        let s = step("s", &["a", "b"]);
        assert_eq!(r.placement(&s, &done), None, "nothing is ready");
        let a = r.job_id("b1", "a");
        assert_eq!(a, "b1-a");
        assert_eq!(r.committed("a", &a, "w1", layer("la")), Some(vec![]));
        assert_eq!(r.placement(&s, &done), None, "b is neither done nor early");
        done.insert("b".to_string());
        assert_eq!(
            r.placement(&s, &done),
            Some(("w1".into(), vec!["a".into()]))
        );
        let t = step("t", &["a", "c"]);
        let c = r.job_id("b1", "c");
        assert_eq!(r.committed("c", &c, "w2", layer("lc")), Some(vec![]));
        assert_eq!(r.placement(&t, &done), None, "two workers hold its layers");
    }

    #[tokio::test]
    async fn riders_are_let_go_when_their_parents_are_done_and_stopped_when_revoked() {
        let mut r = Riding::new(BTreeMap::new());
        let a = r.job_id("b1", "a");
        r.committed("a", &a, "w1", layer("la"));
        // s rides on a; t rides on s's early layer.
        let s = r.job_id("b1", "s");
        let (s_abort, s_reg) = futures::future::AbortHandle::new_pair();
        r.started("s", &s, vec!["a".into()], s_abort);
        assert_eq!(r.committed("s", &s, "w1", layer("ls")), Some(vec![]));
        let t = r.job_id("b1", "t");
        r.started("t", &t, vec!["s".into()], handle());
        let mut gate = r.gate(vec!["a".into()]);
        let waiting = tokio::spawn(async move { gate.open().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a is not done");

        // a is revoked: s and t, which rode on s, are stopped.
        let stopped = r.revoke("a", &a).expect("a's layer was early");
        assert_eq!(
            stopped,
            vec![
                Stopped {
                    step_id: "s".into(),
                    job_id: "b1-s".into()
                },
                Stopped {
                    step_id: "t".into(),
                    job_id: "b1-t".into()
                }
            ]
        );
        let aborted = futures::future::Abortable::new(std::future::pending::<()>(), s_reg);
        assert!(aborted.await.is_err(), "s's future is aborted");
        assert_eq!(r.revoke("a", &a), None, "revoked once");

        // s starts again under a new job id: what its stopped run still
        // had on its way counts for nothing.
        let s2 = r.job_id("b1", "s");
        assert_eq!(s2, "b1-s-2");
        assert_eq!(r.committed("s", &s, "w1", layer("stale")), None);
        assert_eq!(r.revoke("s", &s), None);

        // a commits again and is done: s rode on it and is let go.
        assert_eq!(r.committed("a", &a, "w1", layer("la2")), Some(vec![]));
        r.started("s", &s2, vec!["a".into()], handle());
        let (released, stopped) = r.done("a", &layer("la2"));
        assert_eq!(released, vec![s2]);
        assert!(stopped.is_empty());
        assert!(waiting.await.unwrap(), "the gate opens once a is done");
        assert_eq!(
            r.committed("a", &a, "w1", layer("la2")),
            None,
            "a late report is ignored"
        );
    }

    #[test]
    fn a_done_layer_other_than_the_early_one_stops_the_riders() {
        let mut r = Riding::new(BTreeMap::new());
        let a = r.job_id("b1", "a");
        r.committed("a", &a, "w1", layer("la"));
        let s = r.job_id("b1", "s");
        r.started("s", &s, vec!["a".into()], handle());
        let (released, stopped) = r.done("a", &layer("other"));
        assert!(released.is_empty());
        assert_eq!(stopped.len(), 1);
    }

    #[test]
    fn an_early_layer_reported_before_its_blob_is_the_layer_done_with_it() {
        let mut r = Riding::new(BTreeMap::new());
        let a = r.job_id("b1", "a");
        let diff_id_only = LayerInfo {
            digest: String::new(),
            size: 0,
            ..layer("la")
        };
        r.committed("a", &a, "w1", diff_id_only);
        let s = r.job_id("b1", "s");
        r.started("s", &s, vec!["a".into()], handle());
        let (released, stopped) = r.done("a", &layer("la"));
        assert_eq!(released, vec![s], "the rider goes on");
        assert!(stopped.is_empty());
    }

    #[test]
    fn riders_of_a_replaced_early_layer_stop_and_a_done_rider_is_no_rider() {
        let mut r = Riding::new(BTreeMap::new());
        let a = r.job_id("b1", "a");
        r.committed("a", &a, "w1", layer("la"));
        let s = r.job_id("b1", "s");
        r.started("s", &s, vec!["a".into()], handle());
        // The same run reports another layer: s started on the first.
        let stopped = r.committed("a", &a, "w1", layer("other")).expect("current");
        assert_eq!(stopped.len(), 1);

        // A rider done from the cache (once a is done) is not stopped
        // when a later step is revoked.
        let t = r.job_id("b1", "t");
        r.started("t", &t, vec!["a".into()], handle());
        let _ = r.done("a", &layer("other"));
        let _ = r.done("t", &layer("lt"));
        assert!(r.revoke("a", &a).is_none());
        assert!(r.stop_riders_of("a").is_empty());
    }
}
