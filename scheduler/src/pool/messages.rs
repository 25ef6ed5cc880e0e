//! What a worker's stream tells the pool: results, failures, rejections,
//! early layers, progress and logs, heartbeats, a worker going away.

use super::*;

impl Pool {
    /// Handles one message of session `session`'s stream of a worker. A
    /// stream the worker has since replaced (it reconnected; the old
    /// stream may still deliver what it had buffered) has no say: neither
    /// its heartbeats nor its going away reach the new session.
    pub fn on_message(&self, worker_id: &str, session: u64, msg: wire::worker_message::Message) {
        use wire::worker_message::Message as M;
        let mut st = self.lock();
        match st.workers.get_mut(worker_id) {
            Some(w) if w.session == session => w.seen = Instant::now(),
            _ => return,
        }
        let current = |st: &State, job: &str, lease: &str| {
            st.running
                .get(job)
                .is_some_and(|r| r.worker_id == worker_id && r.job.assignment.lease_id == lease)
        };
        match msg {
            M::Heartbeat(h) => {
                if let Some(w) = st.workers.get_mut(worker_id) {
                    // Cancelled jobs the worker no longer runs free their
                    // slots (their end may have been lost with a message).
                    w.cancelling.retain(|job, lease| {
                        h.running
                            .iter()
                            .any(|a| &a.job_id == job && &a.lease_id == lease)
                    });
                    if h.free_slots > 0 {
                        w.full = false;
                    }
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
                if let Some(w) = st.workers.get_mut(worker_id)
                    && w.cancelling.get(&r.job_id) == Some(&r.lease_id)
                {
                    w.cancelling.remove(&r.job_id);
                }
                if current(&st, &r.job_id, &r.lease_id)
                    && let Some(mut run) = st.running.remove(&r.job_id)
                {
                    let full = r.reason == REJECT_FULL;
                    let draining = r.reason == REJECT_DRAINING;
                    if let Some(w) = st.workers.get_mut(worker_id) {
                        w.running.remove(&r.job_id);
                        w.full |= full;
                        if draining {
                            w.draining = true;
                            w.info.state = build::WorkerState::Draining as i32;
                        }
                    }
                    if full || draining {
                        Self::bounce(&mut st, run.job, worker_id, &r.reason);
                    } else {
                        run.job.avoid.insert(worker_id.to_string());
                        self.requeue(
                            &mut st,
                            run.job,
                            &format!("{worker_id} rejected it: {}", r.reason),
                        );
                    }
                }
            }
            M::JobLog(l) => {
                if current(&st, &l.job_id, &l.lease_id)
                    && let (Some(r), Some(chunk)) = (st.running.get(&l.job_id), l.chunk)
                {
                    let _ = r.job.events.send(JobEvent::Log(chunk));
                }
            }
            M::JobCommitted(c) => {
                if current(&st, &c.job_id, &c.lease_id)
                    && let Some(layer) = c.layer
                {
                    if let Some(w) = st.workers.get_mut(worker_id) {
                        w.layers.insert(layer.diff_id.clone());
                        // Uploading takes no slot on the worker either.
                        w.running.remove(&c.job_id);
                        w.info.running_jobs = w.busy();
                        w.full = false;
                    }
                    if let Some(r) = st.running.get(&c.job_id) {
                        let _ = r.job.events.send(JobEvent::Committed {
                            layer: Box::new(layer),
                            worker_id: worker_id.to_string(),
                        });
                    }
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
                if let Some(w) = st.workers.get_mut(worker_id) {
                    w.job_ended(&res.job_id, &res.lease_id);
                }
                if current(&st, &res.job_id, &res.lease_id)
                    && let Some(r) = st.running.remove(&res.job_id)
                {
                    if let Some(w) = st.workers.get_mut(worker_id) {
                        w.running.remove(&res.job_id);
                        if let Some(l) = &res.layer {
                            w.layers.insert(l.diff_id.clone());
                        }
                    }
                    if let Some(l) = &res.layer {
                        Self::stored(&mut st, &res.job_id, l);
                    }
                    let _ = r.job.events.send(JobEvent::Done {
                        result: Box::new(res),
                        worker_id: worker_id.to_string(),
                    });
                }
            }
            M::JobFailed(f) => {
                if let Some(w) = st.workers.get_mut(worker_id) {
                    w.job_ended(&f.job_id, &f.lease_id);
                }
                if current(&st, &f.job_id, &f.lease_id)
                    && let Some(mut r) = st.running.remove(&f.job_id)
                {
                    if let Some(w) = st.workers.get_mut(worker_id) {
                        w.running.remove(&f.job_id);
                    }
                    // A job the scheduler did not cancel that the worker
                    // reports cancelled was stopped by the worker itself
                    // (draining past its deadline, its session breaking):
                    // the run is lost, not the command's fault.
                    let stopped = f.kind == wire::FailureKind::Cancelled as i32;
                    if stopped {
                        let reason = format!("{worker_id} stopped it: {}", f.message);
                        self.requeue(&mut st, r.job, &reason);
                    } else if f.retryable && r.job.assignment.attempt < self.max_attempts {
                        let reason = format!("{worker_id} failed it: {}", f.message);
                        let _ = r.job.events.send(JobEvent::Retrying {
                            failure: Box::new(f),
                            worker_id: worker_id.to_string(),
                        });
                        r.job.avoid.insert(worker_id.to_string());
                        self.requeue(&mut st, r.job, &reason);
                    } else {
                        let _ = r.job.events.send(JobEvent::Failed {
                            failure: Box::new(f),
                            worker_id: worker_id.to_string(),
                        });
                    }
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
}
