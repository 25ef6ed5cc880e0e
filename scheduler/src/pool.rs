//! Connected workers and the job queue.
//!
//! A build submits a `JobAssignment` and gets a stream of [`JobEvent`]s.
//! The pool keeps the job queued until a worker has a free slot, prefers
//! the worker that already holds most of the job's parent layers unpacked
//! and otherwise the least loaded one, and re-queues a job (up to
//! `max_attempts`) when its worker disconnects or rejects it. Messages that
//! carry a lease the pool no longer recognises (a late result from a
//! worker that lost the job) are ignored.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};
use strata_proto::build::v1 as build;
use strata_proto::common::v1 as common;
use strata_proto::worker::v1 as wire;
use tokio::sync::mpsc;
use tonic::Status;

/// What happens to a submitted job, in order. The stream ends after
/// `Done`, `Failed` or `Lost`, or when the job is cancelled.
#[derive(Debug, Clone)]
pub enum JobEvent {
    /// A worker took the job.
    Started {
        /// The worker.
        worker_id: String,
        /// The attempt (1-based).
        attempt: u32,
    },
    /// Output of the running job.
    Log(common::LogChunk),
    /// The job moved to a new phase.
    Progress(wire::JobProgress),
    /// The job succeeded.
    Done {
        /// What it produced.
        result: Box<wire::JobResult>,
        /// The worker that ran it.
        worker_id: String,
    },
    /// The job failed (the command, not the infrastructure).
    Failed {
        /// Why.
        failure: Box<wire::JobFailed>,
        /// The worker that ran it.
        worker_id: String,
    },
    /// The worker went away; the job is queued again.
    Requeued {
        /// Why.
        reason: String,
        /// The next attempt.
        attempt: u32,
    },
    /// The job was lost too often; the build cannot finish.
    Lost(String),
}

/// Messages to one worker's stream.
pub type WorkerTx = mpsc::UnboundedSender<Result<wire::SchedulerMessage, Status>>;

struct Slot {
    info: build::WorkerInfo,
    tx: WorkerTx,
    session: u64,
    running: HashSet<String>,
    layers: HashSet<String>,
    draining: bool,
    /// When the worker last sent anything (heartbeats renew its leases).
    seen: Instant,
}

struct Queued {
    assignment: wire::JobAssignment,
    events: mpsc::UnboundedSender<JobEvent>,
    /// DiffIDs of every layer the job reads, for affinity.
    wants: Vec<String>,
}

struct Running {
    job: Queued,
    worker_id: String,
}

#[derive(Default)]
struct State {
    workers: BTreeMap<String, Slot>,
    queue: VecDeque<Queued>,
    running: HashMap<String, Running>,
    sessions: u64,
}

/// The pool.
pub struct Pool {
    state: Mutex<State>,
    max_attempts: u32,
}

fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

fn send(tx: &WorkerTx, msg: wire::scheduler_message::Message) -> bool {
    tx.send(Ok(wire::SchedulerMessage { message: Some(msg) }))
        .is_ok()
}

fn wants_of(a: &wire::JobAssignment) -> Vec<String> {
    a.parent
        .iter()
        .flat_map(|s| s.layers.iter().map(|l| l.diff_id.clone()))
        .collect()
}

impl Pool {
    /// An empty pool; a job is tried on at most `max_attempts` workers.
    pub fn new(max_attempts: u32) -> Self {
        Self {
            state: Mutex::new(State::default()),
            max_attempts: max_attempts.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a worker session; returns its session number (a reconnect
    /// under the same id replaces the old session).
    pub fn register(&self, worker_id: &str, reg: &wire::Register, tx: WorkerTx) -> u64 {
        let mut st = self.lock();
        st.sessions += 1;
        let session = st.sessions;
        let old = st.workers.remove(worker_id);
        let info = build::WorkerInfo {
            worker_id: worker_id.to_string(),
            hostname: reg.hostname.clone(),
            version: reg.version.clone(),
            state: build::WorkerState::Ready as i32,
            capacity: reg.capacity.max(1),
            labels: reg.labels.clone().into_iter().collect(),
            platforms: reg.platforms.clone(),
            free_disk_bytes: reg.free_disk_bytes,
            last_heartbeat: Some(now()),
            connected_at: Some(now()),
            runtime: reg.runtime.clone(),
            layers_held: reg.layers_held.len() as u64,
            ..Default::default()
        };
        st.workers.insert(
            worker_id.to_string(),
            Slot {
                info,
                tx,
                session,
                running: HashSet::new(),
                layers: reg.layers_held.iter().cloned().collect(),
                draining: false,
                seen: Instant::now(),
            },
        );
        if old.is_some() {
            self.requeue_worker_jobs(&mut st, worker_id, "the worker reconnected");
        }
        self.dispatch(&mut st);
        session
    }

    /// Workers silent for longer than `lease` (no heartbeat, no message:
    /// dead, or cut off without their connection closing) lose their
    /// leases: their jobs go back to the queue for another worker and
    /// their stream is closed. A late result under a lost lease is ignored;
    /// the worker reconnects as a new session. Returns the workers dropped.
    pub fn expire(&self, lease: Duration, now: Instant) -> Vec<String> {
        let mut st = self.lock();
        let silent: Vec<String> = st
            .workers
            .iter()
            .filter(|(_, w)| now.saturating_duration_since(w.seen) > lease)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &silent {
            if let Some(w) = st.workers.remove(id) {
                let _ = w.tx.send(Err(Status::unavailable(format!(
                    "no heartbeat for {}s: the worker's leases expired",
                    lease.as_secs()
                ))));
            }
            self.requeue_worker_jobs(
                &mut st,
                id,
                &format!("no heartbeat for {}s", lease.as_secs()),
            );
        }
        if !silent.is_empty() {
            self.dispatch(&mut st);
        }
        silent
    }

    /// Ends a worker session: its jobs go back to the queue.
    pub fn disconnect(&self, worker_id: &str, session: u64) {
        let mut st = self.lock();
        if st
            .workers
            .get(worker_id)
            .is_none_or(|w| w.session != session)
        {
            return;
        }
        st.workers.remove(worker_id);
        self.requeue_worker_jobs(&mut st, worker_id, "the worker disconnected");
        self.dispatch(&mut st);
    }

    fn requeue_worker_jobs(&self, st: &mut State, worker_id: &str, reason: &str) {
        let lost: Vec<String> = st
            .running
            .iter()
            .filter(|(_, r)| r.worker_id == worker_id)
            .map(|(id, _)| id.clone())
            .collect();
        for id in lost {
            if let Some(r) = st.running.remove(&id) {
                self.requeue(st, r.job, &format!("{reason} ({worker_id})"));
            }
        }
    }

    fn requeue(&self, st: &mut State, mut job: Queued, reason: &str) {
        if job.assignment.attempt >= self.max_attempts {
            let _ = job.events.send(JobEvent::Lost(format!(
                "{reason}; gave up after {} attempts",
                job.assignment.attempt
            )));
            return;
        }
        job.assignment.attempt += 1;
        job.assignment.lease_id = uuid::Uuid::new_v4().simple().to_string();
        let _ = job.events.send(JobEvent::Requeued {
            reason: reason.to_string(),
            attempt: job.assignment.attempt,
        });
        st.queue.push_front(job);
    }

    /// Queues a job; its lease and attempt are set here.
    pub fn submit(&self, mut assignment: wire::JobAssignment) -> mpsc::UnboundedReceiver<JobEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        assignment.attempt = 1;
        assignment.lease_id = uuid::Uuid::new_v4().simple().to_string();
        let wants = wants_of(&assignment);
        let mut st = self.lock();
        st.queue.push_back(Queued {
            assignment,
            events: tx,
            wants,
        });
        self.dispatch(&mut st);
        rx
    }

    /// Stops a job: dequeued if waiting, cancelled on its worker if
    /// running. Its event stream ends.
    pub fn cancel(&self, job_id: &str, reason: &str) {
        let mut st = self.lock();
        st.queue.retain(|q| q.assignment.job_id != job_id);
        if let Some(r) = st.running.remove(job_id) {
            if let Some(w) = st.workers.get_mut(&r.worker_id) {
                w.running.remove(job_id);
                send(
                    &w.tx,
                    wire::scheduler_message::Message::CancelJob(wire::CancelJob {
                        job_id: job_id.to_string(),
                        lease_id: r.job.assignment.lease_id.clone(),
                        reason: reason.to_string(),
                        grace_period: None,
                    }),
                );
            }
            self.dispatch(&mut st);
        }
    }

    /// Handles one message of a worker's stream.
    pub fn on_message(&self, worker_id: &str, msg: wire::worker_message::Message) {
        use wire::worker_message::Message as M;
        let mut st = self.lock();
        if let Some(w) = st.workers.get_mut(worker_id) {
            w.seen = Instant::now();
        }
        let current = |st: &State, job: &str, lease: &str| {
            st.running
                .get(job)
                .is_some_and(|r| r.worker_id == worker_id && r.job.assignment.lease_id == lease)
        };
        match msg {
            M::Heartbeat(h) => {
                if let Some(w) = st.workers.get_mut(worker_id) {
                    w.info.last_heartbeat = Some(now());
                    w.info.free_disk_bytes = h.free_disk_bytes;
                    w.info.load_average = h.load_average;
                    w.info.jobs_completed = h.jobs_completed;
                    w.info.blobs_downloaded = h.blobs_downloaded;
                    w.info.bytes_downloaded = h.bytes_downloaded;
                    w.info.bytes_uploaded = h.bytes_uploaded;
                    for l in h.layers_added {
                        w.layers.insert(l);
                    }
                    for l in &h.layers_removed {
                        w.layers.remove(l);
                    }
                    w.info.layers_held = w.layers.len() as u64;
                }
            }
            M::JobAccepted(_) | M::Pong(_) | M::Register(_) => {}
            M::JobRejected(r) => {
                if current(&st, &r.job_id, &r.lease_id)
                    && let Some(run) = st.running.remove(&r.job_id)
                {
                    if let Some(w) = st.workers.get_mut(worker_id) {
                        w.running.remove(&r.job_id);
                    }
                    self.requeue(
                        &mut st,
                        run.job,
                        &format!("{worker_id} rejected it: {}", r.reason),
                    );
                }
            }
            M::JobLog(l) => {
                if current(&st, &l.job_id, &l.lease_id)
                    && let (Some(r), Some(chunk)) = (st.running.get(&l.job_id), l.chunk)
                {
                    let _ = r.job.events.send(JobEvent::Log(chunk));
                }
            }
            M::JobProgress(p) => {
                if current(&st, &p.job_id, &p.lease_id)
                    && let Some(r) = st.running.get(&p.job_id)
                {
                    let _ = r.job.events.send(JobEvent::Progress(p));
                }
            }
            M::JobResult(res) => {
                if current(&st, &res.job_id, &res.lease_id)
                    && let Some(r) = st.running.remove(&res.job_id)
                {
                    if let Some(w) = st.workers.get_mut(worker_id) {
                        w.running.remove(&res.job_id);
                        if let Some(l) = &res.layer {
                            w.layers.insert(l.diff_id.clone());
                        }
                    }
                    let _ = r.job.events.send(JobEvent::Done {
                        result: Box::new(res),
                        worker_id: worker_id.to_string(),
                    });
                }
            }
            M::JobFailed(f) => {
                if current(&st, &f.job_id, &f.lease_id)
                    && let Some(r) = st.running.remove(&f.job_id)
                {
                    if let Some(w) = st.workers.get_mut(worker_id) {
                        w.running.remove(&f.job_id);
                    }
                    let _ = r.job.events.send(JobEvent::Failed {
                        failure: Box::new(f),
                        worker_id: worker_id.to_string(),
                    });
                }
            }
            M::GoingAway(g) => {
                if let Some(w) = st.workers.get_mut(worker_id) {
                    w.draining = true;
                    w.info.state = build::WorkerState::Draining as i32;
                }
                if !g.drain {
                    self.requeue_worker_jobs(&mut st, worker_id, "the worker is shutting down");
                }
            }
        }
        self.dispatch(&mut st);
    }

    /// Assigns queued jobs to workers with free slots.
    fn dispatch(&self, st: &mut State) {
        let mut i = 0;
        while i < st.queue.len() {
            let wants = &st.queue[i].wants;
            let best = st
                .workers
                .iter()
                .filter(|(_, w)| !w.draining && (w.running.len() as u32) < w.info.capacity)
                .max_by(|(ia, a), (ib, b)| {
                    let held = |w: &Slot| wants.iter().filter(|d| w.layers.contains(*d)).count();
                    let free = |w: &Slot| {
                        f64::from(w.info.capacity - w.running.len() as u32)
                            / f64::from(w.info.capacity)
                    };
                    held(a)
                        .cmp(&held(b))
                        .then(free(a).total_cmp(&free(b)))
                        .then(ib.cmp(ia))
                })
                .map(|(id, _)| id.clone());
            let Some(worker_id) = best else {
                return;
            };
            let Some(job) = st.queue.remove(i) else {
                return;
            };
            let w = st.workers.get_mut(&worker_id).expect("chosen from the map");
            let sent = send(
                &w.tx,
                wire::scheduler_message::Message::AssignJob(job.assignment.clone()),
            );
            if !sent {
                // The session is closing; its disconnect re-queues.
                w.draining = true;
                st.queue.insert(i, job);
                i += 1;
                continue;
            }
            w.running.insert(job.assignment.job_id.clone());
            w.info.running_jobs = w.running.len() as u32;
            let _ = job.events.send(JobEvent::Started {
                worker_id: worker_id.clone(),
                attempt: job.assignment.attempt,
            });
            st.running
                .insert(job.assignment.job_id.clone(), Running { job, worker_id });
        }
    }

    /// Connected workers.
    pub fn workers(&self) -> Vec<build::WorkerInfo> {
        let st = self.lock();
        st.workers
            .values()
            .map(|w| {
                let mut info = w.info.clone();
                info.running_jobs = w.running.len() as u32;
                info.job_ids = w.running.iter().cloned().collect();
                info.job_ids.sort();
                info
            })
            .collect()
    }

    /// Jobs waiting for a slot.
    pub fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    /// (queued jobs, running jobs, connected workers), for the metrics.
    pub fn load(&self) -> (usize, usize, usize) {
        let st = self.lock();
        (st.queue.len(), st.running.len(), st.workers.len())
    }

    /// Asks every worker to stop taking jobs.
    pub fn drain_all(&self, reason: &str) {
        let st = self.lock();
        for w in st.workers.values() {
            send(
                &w.tx,
                wire::scheduler_message::Message::Drain(wire::Drain {
                    reason: reason.to_string(),
                    deadline: None,
                }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(
        pool: &Pool,
        id: &str,
        capacity: u32,
        layers: &[&str],
    ) -> (
        u64,
        mpsc::UnboundedReceiver<Result<wire::SchedulerMessage, Status>>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let reg = wire::Register {
            capacity,
            layers_held: layers.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        (pool.register(id, &reg, tx), rx)
    }

    fn job(id: &str, parent: &[&str]) -> wire::JobAssignment {
        wire::JobAssignment {
            job_id: id.into(),
            parent: Some(common::Snapshot {
                layers: parent
                    .iter()
                    .map(|d| common::Layer {
                        diff_id: d.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn assigned(
        rx: &mut mpsc::UnboundedReceiver<Result<wire::SchedulerMessage, Status>>,
    ) -> Vec<wire::JobAssignment> {
        let mut out = Vec::new();
        while let Ok(Ok(m)) = rx.try_recv() {
            if let Some(wire::scheduler_message::Message::AssignJob(a)) = m.message {
                out.push(a);
            }
        }
        out
    }

    fn started(rx: &mut mpsc::UnboundedReceiver<JobEvent>) -> String {
        match rx.try_recv() {
            Ok(JobEvent::Started { worker_id, .. }) => worker_id,
            other => panic!("expected Started, got {other:?}"),
        }
    }

    #[test]
    fn jobs_prefer_the_worker_holding_their_parents_within_capacity() {
        let pool = Pool::new(3);
        let (_, mut a) = register(&pool, "a", 1, &[]);
        let (_, mut b) = register(&pool, "b", 1, &["sha256:p"]);
        let mut j1 = pool.submit(job("j1", &["sha256:p"]));
        assert_eq!(started(&mut j1), "b");
        // b is full: the next job goes to a even though b holds its parent.
        let mut j2 = pool.submit(job("j2", &["sha256:p"]));
        assert_eq!(started(&mut j2), "a");
        // Both full: the third waits until a slot frees.
        let mut j3 = pool.submit(job("j3", &[]));
        assert!(j3.try_recv().is_err());
        assert_eq!(pool.queued(), 1);
        let lease = assigned(&mut a).remove(0).lease_id;
        pool.on_message(
            "a",
            wire::worker_message::Message::JobFailed(wire::JobFailed {
                job_id: "j2".into(),
                lease_id: lease,
                ..Default::default()
            }),
        );
        assert!(matches!(j2.try_recv(), Ok(JobEvent::Failed { .. })));
        assert_eq!(started(&mut j3), "a");
        assert_eq!(assigned(&mut b).len(), 1);
    }

    #[test]
    fn a_lost_worker_s_jobs_are_requeued_and_its_late_results_ignored() {
        let pool = Pool::new(2);
        let (session, mut a) = register(&pool, "a", 1, &[]);
        let mut j = pool.submit(job("j", &[]));
        assert_eq!(started(&mut j), "a");
        let old_lease = assigned(&mut a).remove(0).lease_id;
        pool.disconnect("a", session);
        match j.try_recv() {
            Ok(JobEvent::Requeued { attempt: 2, .. }) => {}
            other => panic!("expected Requeued, got {other:?}"),
        }
        let (_, mut b) = register(&pool, "b", 1, &[]);
        assert_eq!(started(&mut j), "b");
        let new_lease = assigned(&mut b).remove(0).lease_id;
        assert_ne!(old_lease, new_lease);
        // A result under the old lease is dropped; the current one counts.
        pool.on_message(
            "b",
            wire::worker_message::Message::JobResult(wire::JobResult {
                job_id: "j".into(),
                lease_id: old_lease,
                ..Default::default()
            }),
        );
        assert!(j.try_recv().is_err());
        pool.on_message(
            "b",
            wire::worker_message::Message::JobResult(wire::JobResult {
                job_id: "j".into(),
                lease_id: new_lease,
                ..Default::default()
            }),
        );
        assert!(matches!(j.try_recv(), Ok(JobEvent::Done { .. })));
    }

    #[test]
    fn a_silent_worker_loses_its_leases_to_another() {
        let pool = Pool::new(3);
        let (_, mut a) = register(&pool, "a", 1, &[]);
        let mut j = pool.submit(job("j", &[]));
        assert_eq!(started(&mut j), "a");
        let old_lease = assigned(&mut a).remove(0).lease_id;
        let lease = Duration::from_secs(30);
        assert!(pool.expire(lease, Instant::now()).is_empty());
        let (_, mut b) = register(&pool, "b", 1, &[]);
        // a said nothing for 29 s (still leased), then for 31 s; b just
        // sent a heartbeat.
        let age = |pool: &Pool, secs: u64| {
            pool.lock().workers.get_mut("a").expect("a").seen =
                Instant::now() - Duration::from_secs(secs);
        };
        pool.on_message(
            "b",
            wire::worker_message::Message::Heartbeat(wire::Heartbeat::default()),
        );
        age(&pool, 29);
        assert!(pool.expire(lease, Instant::now()).is_empty());
        age(&pool, 31);
        assert_eq!(pool.expire(lease, Instant::now()), vec!["a".to_string()]);
        match j.try_recv() {
            Ok(JobEvent::Requeued { reason, attempt: 2 }) => {
                assert!(reason.contains("no heartbeat"), "{reason}")
            }
            other => panic!("expected Requeued, got {other:?}"),
        }
        assert_eq!(started(&mut j), "b");
        // a's stream was closed with the reason.
        let closed = std::iter::from_fn(|| a.try_recv().ok()).any(|m| m.is_err());
        assert!(closed);
        // a comes back late with a result under its lost lease: ignored.
        let _ = register(&pool, "a", 1, &[]);
        pool.on_message(
            "a",
            wire::worker_message::Message::JobResult(wire::JobResult {
                job_id: "j".into(),
                lease_id: old_lease,
                ..Default::default()
            }),
        );
        assert!(j.try_recv().is_err());
        assert_eq!(assigned(&mut b).len(), 1);
    }

    #[test]
    fn a_job_lost_too_often_fails_the_build() {
        let pool = Pool::new(1);
        let (session, _a) = register(&pool, "a", 1, &[]);
        let mut j = pool.submit(job("j", &[]));
        assert_eq!(started(&mut j), "a");
        pool.disconnect("a", session);
        match j.try_recv() {
            Ok(JobEvent::Lost(why)) => assert!(why.contains("gave up after 1"), "{why}"),
            other => panic!("expected Lost, got {other:?}"),
        }
    }
}
