//! Connected workers and the job queue.
//!
//! A build submits a `JobAssignment` and gets a stream of [`JobEvent`]s.
//! The pool keeps the job queued until a worker has a free slot, prefers
//! the worker that already holds most of the job's parent layers unpacked
//! and otherwise the least loaded one, and re-queues a job (up to
//! `max_attempts`) when its worker disconnects, is silent past its lease,
//! rejects it or fails it in a way worth retrying (`retryable`). A worker
//! that refuses a job only because it has no free slot or is draining
//! costs the job no attempt: it waits for a slot, on another worker if one
//! is free. A cancelled job keeps its slot until the worker confirms it
//! stopped, so nothing is sent to a worker still tearing a job down.
//! Messages that carry a lease the pool no longer recognises (a late
//! result from a worker that lost the job) are ignored.

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
    /// The job's layer is made and kept by its worker, which uploads it
    /// next: until `Done`, only that worker has it.
    Committed {
        /// The layer as `Done` will report it, or its diffID alone when
        /// the worker makes the blob after reporting it.
        layer: Box<common::Layer>,
        /// The worker holding it.
        worker_id: String,
    },
    /// The job moved to a new phase.
    Progress(wire::JobProgress),
    /// The job succeeded.
    Done {
        /// What it produced.
        result: Box<wire::JobResult>,
        /// The worker that ran it.
        worker_id: String,
    },
    /// The job failed on a worker in a way worth retrying (its
    /// infrastructure, not the command); a `Requeued` follows.
    Retrying {
        /// Why.
        failure: Box<wire::JobFailed>,
        /// The worker that failed it.
        worker_id: String,
    },
    /// The job failed (the command, or the infrastructure on its last
    /// attempt).
    Failed {
        /// Why.
        failure: Box<wire::JobFailed>,
        /// The worker that ran it.
        worker_id: String,
    },
    /// The worker it was sent to refused it without running it (no free
    /// slot, or draining): it is queued again on the same attempt, and the
    /// `Started` that went before it did not happen.
    Refused {
        /// The worker that refused it.
        worker_id: String,
        /// The worker's reason.
        reason: String,
    },
    /// The job waits, and why (no connected worker can run it yet).
    Waiting(String),
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
    /// Jobs cancelled here whose end the worker has not confirmed yet
    /// (job → lease): their slots stay taken.
    cancelling: HashMap<String, String>,
    layers: HashSet<String>,
    draining: bool,
    /// The worker refused a job for want of a slot: it gets nothing more
    /// until a job of its ends or a heartbeat shows a free slot.
    full: bool,
    /// When the worker last sent anything (heartbeats renew its leases).
    seen: Instant,
    /// What it honours beyond the protocol's base (`Register.features`).
    features: HashSet<String>,
}

struct Queued {
    assignment: wire::JobAssignment,
    events: mpsc::UnboundedSender<JobEvent>,
    /// DiffIDs of every layer the job reads, for affinity.
    wants: Vec<String>,
    /// Workers that refused or failed the job: others are preferred.
    avoid: HashSet<String>,
    /// The one worker the job may go to, while that worker alone holds a
    /// layer it reads ([`Pool::submit_on`]).
    only: Option<String>,
    /// Features a worker must have to run it
    /// ([`strata_proto::features_needed`]).
    needs: Vec<&'static str>,
    /// The build was told no connected worker has them.
    told_needs: bool,
    /// Bound to a worker with no free slot, it asked that worker to store
    /// the layers it reads ([`wire::Hurry`]).
    hurried: bool,
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
    /// `drain_all` was called: workers that register from now on are
    /// drained from the start.
    closing: Option<String>,
}

/// The pool.
pub struct Pool {
    state: Mutex<State>,
    max_attempts: u32,
}

/// `JobRejected.reason` of a worker whose slots are all taken (see
/// `worker/src/agent/mod.rs`): not the job's fault, so no attempt is spent.
const REJECT_FULL: &str = "no free slot";
/// `JobRejected.reason` of a draining worker.
const REJECT_DRAINING: &str = "draining";

impl Slot {
    /// Slots taken: running jobs and cancelled ones not yet confirmed.
    fn busy(&self) -> u32 {
        (self.running.len() + self.cancelling.len()) as u32
    }

    fn takes_jobs(&self) -> bool {
        !self.draining && !self.full && self.busy() < self.info.capacity
    }

    /// A job of this worker ended (whatever its lease): a slot is free
    /// on the worker.
    fn job_ended(&mut self, job_id: &str, lease_id: &str) {
        if self.cancelling.get(job_id).is_some_and(|l| l == lease_id) {
            self.cancelling.remove(job_id);
        }
        self.full = false;
    }
}

fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

fn send(tx: &WorkerTx, msg: wire::scheduler_message::Message) -> bool {
    tx.send(Ok(wire::SchedulerMessage { message: Some(msg) }))
        .is_ok()
}

fn drain_message(reason: &str) -> wire::scheduler_message::Message {
    wire::scheduler_message::Message::Drain(wire::Drain {
        reason: reason.to_string(),
        deadline: None,
    })
}

fn hurry_message(diff_ids: Vec<String>, job_ids: Vec<String>) -> wire::scheduler_message::Message {
    wire::scheduler_message::Message::Hurry(wire::Hurry { diff_ids, job_ids })
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
            features: reg.features.clone(),
            ..Default::default()
        };
        // A worker registering while the scheduler shuts down (after its
        // ack, already sent) is told so, and given nothing.
        if let Some(reason) = &st.closing {
            send(&tx, drain_message(reason));
        }
        let draining = st.closing.is_some();
        st.workers.insert(
            worker_id.to_string(),
            Slot {
                info,
                tx,
                session,
                running: HashSet::new(),
                cancelling: HashMap::new(),
                layers: reg.layers_held.iter().cloned().collect(),
                draining,
                full: false,
                seen: Instant::now(),
                features: reg.features.iter().cloned().collect(),
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
        // Jobs waiting for this worker alone wait no more: the build stops
        // them (the layer they read is lost with it) or they go anywhere.
        for q in st.queue.iter_mut() {
            if q.only.as_deref() == Some(worker_id) {
                q.only = None;
            }
        }
        let lost: Vec<String> = st
            .running
            .iter()
            .filter(|(_, r)| r.worker_id == worker_id)
            .map(|(id, _)| id.clone())
            .collect();
        for id in lost {
            let Some(r) = st.running.remove(&id) else {
                continue;
            };
            let reason = format!("{reason} ({worker_id})");
            if r.job.only.as_deref() == Some(worker_id) {
                // A rider: this worker alone held the layer it started on,
                // and losing it is not the rider's failure (the build starts
                // it again once the parent runs again). No attempt is spent,
                // so the loss cannot use up a rider's last one.
                Self::queue_again(st, r.job, &reason);
            } else {
                self.requeue(st, r.job, &reason);
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
        Self::queue_again(st, job, reason);
    }

    /// Back at the head of the queue under a new lease, on the job's
    /// current attempt.
    fn queue_again(st: &mut State, mut job: Queued, reason: &str) {
        job.assignment.lease_id = uuid::Uuid::new_v4().simple().to_string();
        // A job bound to a worker stays bound while that worker takes
        // jobs (only it has the layer the job reads); if it went away or
        // drains, the build stops the job or lets it go anywhere.
        if job
            .only
            .as_ref()
            .is_some_and(|w| st.workers.get(w).is_none_or(|s| s.draining))
        {
            job.only = None;
        }
        let _ = job.events.send(JobEvent::Requeued {
            reason: reason.to_string(),
            attempt: job.assignment.attempt,
        });
        st.queue.push_front(job);
    }

    /// Puts a job a worker refused for want of a slot (or because it is
    /// draining) back at the head of the queue under a new lease, on the
    /// same attempt.
    fn bounce(st: &mut State, mut job: Queued, worker_id: &str, reason: &str) {
        job.avoid.insert(worker_id.to_string());
        job.assignment.lease_id = uuid::Uuid::new_v4().simple().to_string();
        let _ = job.events.send(JobEvent::Refused {
            worker_id: worker_id.to_string(),
            reason: reason.to_string(),
        });
        st.queue.push_front(job);
    }

    /// Queues a job; its lease and attempt (1) are set here.
    pub fn submit(&self, assignment: wire::JobAssignment) -> mpsc::UnboundedReceiver<JobEvent> {
        self.submit_from(assignment, 1)
    }

    /// Queues a job as its attempt `attempt`: a step run again after its
    /// earlier runs keeps counting from there. Its lease is set here.
    pub fn submit_from(
        &self,
        assignment: wire::JobAssignment,
        attempt: u32,
    ) -> mpsc::UnboundedReceiver<JobEvent> {
        self.enqueue(assignment, attempt, None)
    }

    /// Queues a job for worker `worker_id` only, as its attempt
    /// `attempt`: a step built on a layer that worker has made and is
    /// still uploading. It waits for a free slot there until
    /// [`Pool::release`] lets it go anywhere (the layer is in the farm's
    /// store), or it is cancelled. A retry stays bound while that worker
    /// is connected; after its loss it may go anywhere.
    pub fn submit_on(
        &self,
        assignment: wire::JobAssignment,
        attempt: u32,
        worker_id: &str,
    ) -> mpsc::UnboundedReceiver<JobEvent> {
        self.enqueue(assignment, attempt, Some(worker_id.to_string()))
    }

    /// Tells the workers running `job_ids` that steps wait for those
    /// jobs' layers ([`wire::Hurry`]); jobs not running are left alone.
    /// Returns the jobs whose workers were told.
    pub fn hurry(&self, job_ids: &[String]) -> Vec<String> {
        let st = self.lock();
        let mut by_worker: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for id in job_ids {
            if let Some(r) = st.running.get(id) {
                by_worker.entry(&r.worker_id).or_default().push(id.clone());
            }
        }
        let mut told = Vec::new();
        for (worker_id, ids) in by_worker {
            if let Some(w) = st.workers.get(worker_id)
                && send(&w.tx, hurry_message(Vec::new(), ids.clone()))
            {
                told.extend(ids);
            }
        }
        told
    }

    /// Job `job_id`'s layer is stored (its result is in). The jobs of
    /// the same build (ids `<build_id>-<step>...`, build ids being hex),
    /// queued or running, that read it as reported early (its diffID
    /// alone, no blob: only the worker that made it had it) get its blob
    /// before anything is dispatched, so that they, or their retries, can
    /// go to any worker. Other builds' jobs get the blob their own build
    /// pinned.
    fn stored(st: &mut State, job_id: &str, layer: &common::Layer) {
        if layer.blob.as_ref().is_none_or(|b| b.digest.is_empty()) {
            return;
        }
        let Some((build_id, _)) = job_id.split_once('-') else {
            return;
        };
        let prefix = format!("{build_id}-");
        let queued = st.queue.iter_mut().map(|q| &mut q.assignment);
        let running = st.running.values_mut().map(|r| &mut r.job.assignment);
        for a in queued
            .chain(running)
            .filter(|a| a.job_id.starts_with(&prefix))
        {
            strata_proto::fill_blobs(a, |d| (d == layer.diff_id).then(|| layer.clone()));
        }
    }

    /// Lets a job queued with [`Pool::submit_on`] go to any worker; a
    /// job already running, or not bound, is left as it is.
    pub fn release(&self, job_id: &str) {
        let mut st = self.lock();
        // Running: a retry of it need not wait for that worker either.
        if let Some(r) = st.running.get_mut(job_id) {
            r.job.only = None;
        }
        let mut changed = false;
        for q in st.queue.iter_mut() {
            if q.assignment.job_id == job_id && q.only.is_some() {
                q.only = None;
                changed = true;
            }
        }
        if changed {
            self.dispatch(&mut st);
        }
    }

    fn enqueue(
        &self,
        mut assignment: wire::JobAssignment,
        attempt: u32,
        only: Option<String>,
    ) -> mpsc::UnboundedReceiver<JobEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        assignment.attempt = attempt.max(1);
        assignment.lease_id = uuid::Uuid::new_v4().simple().to_string();
        let wants = wants_of(&assignment);
        let needs = strata_proto::features_needed(&assignment);
        let mut st = self.lock();
        st.queue.push_back(Queued {
            assignment,
            events: tx,
            wants,
            avoid: HashSet::new(),
            only,
            needs,
            told_needs: false,
            hurried: false,
        });
        self.dispatch(&mut st);
        rx
    }

    /// Stops a job: dequeued if waiting, cancelled on its worker if
    /// running. Its event stream ends. The worker's slot stays taken until
    /// the worker reports the job ended (or a heartbeat no longer lists
    /// it, or the worker goes away).
    pub fn cancel(&self, job_id: &str, reason: &str) {
        let mut st = self.lock();
        st.queue.retain(|q| q.assignment.job_id != job_id);
        if let Some(r) = st.running.remove(job_id) {
            if let Some(w) = st.workers.get_mut(&r.worker_id) {
                // A job only uploading holds no slot to keep.
                if w.running.remove(job_id) {
                    w.cancelling
                        .insert(job_id.to_string(), r.job.assignment.lease_id.clone());
                }
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

    /// Assigns queued jobs to workers with free slots.
    fn dispatch(&self, st: &mut State) {
        let mut i = 0;
        while i < st.queue.len() {
            let q = &st.queue[i];
            let (wants, avoid, only, needs) = (&q.wants, &q.avoid, &q.only, &q.needs);
            let best = st
                .workers
                .iter()
                .filter(|(id, w)| {
                    w.takes_jobs()
                        && only.as_ref().is_none_or(|o| o == *id)
                        && needs.iter().all(|f| w.features.contains(*f))
                })
                .max_by(|(ia, a), (ib, b)| {
                    let held = |w: &Slot| wants.iter().filter(|d| w.layers.contains(*d)).count();
                    let free = |w: &Slot| {
                        f64::from(w.info.capacity - w.busy()) / f64::from(w.info.capacity)
                    };
                    (!avoid.contains(*ia))
                        .cmp(&!avoid.contains(*ib))
                        .then(held(a).cmp(&held(b)))
                        .then(free(a).total_cmp(&free(b)))
                        .then(ib.cmp(ia))
                })
                .map(|(id, _)| id.clone());
            let Some(worker_id) = best else {
                let missing: Vec<&str> = if needs.is_empty()
                    || st
                        .workers
                        .values()
                        .any(|w| needs.iter().all(|f| w.features.contains(*f)))
                {
                    Vec::new()
                } else {
                    needs.clone()
                };
                let skip = only.is_some() || !needs.is_empty();
                if !missing.is_empty() && !st.queue[i].told_needs {
                    let q = &mut st.queue[i];
                    q.told_needs = true;
                    let _ = q.events.send(JobEvent::Waiting(format!(
                        "waiting for a worker that supports {}: no connected worker does (workers older than this scheduler do not)",
                        missing.join(", ")
                    )));
                }
                if skip {
                    // The workers it may go to are busy (or not connected
                    // yet); later jobs may go elsewhere. A job bound to a
                    // busy worker waits for the layers only it holds to be
                    // stored: that worker is told not to put it off.
                    let q = &mut st.queue[i];
                    if let Some(w) = q.only.as_ref().and_then(|o| st.workers.get(o))
                        && !q.hurried
                    {
                        q.hurried = true;
                        let reads = strata_proto::layers_read(&q.assignment)
                            .into_iter()
                            .map(|l| l.diff_id.clone())
                            .collect();
                        send(&w.tx, hurry_message(reads, Vec::new()));
                    }
                    i += 1;
                    continue;
                }
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
            w.info.running_jobs = w.busy();
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
        // Running in the pool's view but holding no slot on their worker:
        // only uploading their layer.
        let mut uploading: HashMap<&str, Vec<String>> = HashMap::new();
        for (id, r) in &st.running {
            let holds_slot = st
                .workers
                .get(&r.worker_id)
                .is_some_and(|w| w.running.contains(id) || w.cancelling.contains_key(id));
            if !holds_slot {
                uploading.entry(&r.worker_id).or_default().push(id.clone());
            }
        }
        st.workers
            .iter()
            .map(|(worker_id, w)| {
                let mut info = w.info.clone();
                info.running_jobs = w.busy();
                info.job_ids = w
                    .running
                    .iter()
                    .chain(w.cancelling.keys())
                    .cloned()
                    .collect();
                info.job_ids.sort();
                info.uploading_job_ids = uploading.remove(worker_id.as_str()).unwrap_or_default();
                info.uploading_job_ids.sort();
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

    /// Asks every worker to stop taking jobs, and gives them none from
    /// now on (the scheduler is going: a job sent now would be cut short).
    pub fn drain_all(&self, reason: &str) {
        let mut st = self.lock();
        st.closing = Some(reason.to_string());
        for w in st.workers.values_mut() {
            w.draining = true;
            send(&w.tx, drain_message(reason));
        }
    }
}

mod messages;

#[cfg(test)]
mod tests;
