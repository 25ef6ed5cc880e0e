//! The pool's placement, re-queue and lease rules.

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

/// The layers and jobs of every Hurry sent to a worker since the last
/// look.
fn hurried(
    rx: &mut mpsc::UnboundedReceiver<Result<wire::SchedulerMessage, Status>>,
) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    while let Ok(Ok(m)) = rx.try_recv() {
        if let Some(wire::scheduler_message::Message::Hurry(h)) = m.message {
            out.push([h.diff_ids, h.job_ids].concat());
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

/// Whether the next event is a refusal by `worker` for `reason`.
fn refused(rx: &mut mpsc::UnboundedReceiver<JobEvent>, worker: &str, reason: &str) -> bool {
    matches!(rx.try_recv(), Ok(JobEvent::Refused { worker_id, reason: r }) if worker_id == worker && r == reason)
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
    msg(
        &pool,
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
    msg(
        &pool,
        "b",
        wire::worker_message::Message::JobResult(wire::JobResult {
            job_id: "j".into(),
            lease_id: old_lease,
            ..Default::default()
        }),
    );
    assert!(j.try_recv().is_err());
    msg(
        &pool,
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
    msg(
        &pool,
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
    msg(
        &pool,
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

/// A message from `worker`'s current stream.
fn msg(pool: &Pool, worker: &str, m: wire::worker_message::Message) {
    let session = pool.lock().workers.get(worker).map_or(0, |w| w.session);
    pool.on_message(worker, session, m);
}

fn rejected(job: &str, lease: &str, reason: &str) -> wire::worker_message::Message {
    wire::worker_message::Message::JobRejected(wire::JobRejected {
        job_id: job.into(),
        lease_id: lease.into(),
        reason: reason.into(),
    })
}

fn failed(job: &str, lease: &str, retryable: bool) -> wire::worker_message::Message {
    wire::worker_message::Message::JobFailed(wire::JobFailed {
        job_id: job.into(),
        lease_id: lease.into(),
        kind: wire::FailureKind::Infrastructure as i32,
        message: "unpacking layer: the worker's disk is full".into(),
        retryable,
        ..Default::default()
    })
}

fn cancels(
    rx: &mut mpsc::UnboundedReceiver<Result<wire::SchedulerMessage, Status>>,
) -> Vec<wire::CancelJob> {
    let mut out = Vec::new();
    while let Ok(Ok(m)) = rx.try_recv() {
        if let Some(wire::scheduler_message::Message::CancelJob(c)) = m.message {
            out.push(c);
        }
    }
    out
}

#[test]
fn a_cancelled_job_keeps_its_slot_until_the_worker_confirms() {
    let pool = Pool::new(3);
    let (_, mut a) = register(&pool, "a", 1, &[]);
    let mut j1 = pool.submit(job("j1", &[]));
    assert_eq!(started(&mut j1), "a");
    let lease = assigned(&mut a).remove(0).lease_id;
    // The build is cancelled; another build's job is queued meanwhile.
    pool.cancel("j1", "build cancelled");
    let mut j2 = pool.submit(job("j2", &[]));
    assert!(j2.try_recv().is_err(), "j2 was sent while j1 was stopping");
    assert_eq!(cancels(&mut a).len(), 1);
    assert_eq!(pool.workers()[0].running_jobs, 1);
    // A heartbeat still listing j1: still stopping.
    msg(
        &pool,
        "a",
        wire::worker_message::Message::Heartbeat(wire::Heartbeat {
            running: vec![wire::ActiveJob {
                job_id: "j1".into(),
                lease_id: lease.clone(),
            }],
            ..Default::default()
        }),
    );
    assert!(j2.try_recv().is_err());
    // The worker reports j1 ended (cancelled): the slot is free, j2 runs.
    msg(&pool, "a", failed("j1", &lease, false));
    assert_eq!(started(&mut j2), "a");
    assert_eq!(assigned(&mut a)[0].attempt, 1);
    assert!(j1.try_recv().is_err(), "events of a cancelled job");
}

#[test]
fn a_cancelled_job_s_slot_frees_when_a_heartbeat_no_longer_lists_it() {
    let pool = Pool::new(3);
    let (_, mut a) = register(&pool, "a", 1, &[]);
    let _j1 = pool.submit(job("j1", &[]));
    assigned(&mut a);
    pool.cancel("j1", "build cancelled");
    let mut j2 = pool.submit(job("j2", &[]));
    assert!(j2.try_recv().is_err());
    msg(
        &pool,
        "a",
        wire::worker_message::Message::Heartbeat(wire::Heartbeat {
            free_slots: 1,
            ..Default::default()
        }),
    );
    assert_eq!(started(&mut j2), "a");
}

#[test]
fn a_refusal_for_want_of_a_slot_costs_no_attempt() {
    // The worker still finishing a job its scheduler thought over refuses
    // a new one three times in a row: the build must not fail.
    let pool = Pool::new(3);
    let (_, mut a) = register(&pool, "a", 1, &[]);
    let mut j = pool.submit(job("j", &[]));
    for _ in 0..5 {
        assert_eq!(started(&mut j), "a");
        let sent = assigned(&mut a).remove(0);
        assert_eq!(sent.attempt, 1);
        msg(&pool, "a", rejected("j", &sent.lease_id, "no free slot"));
        // Refused: the build hears that it did not start after all, and
        // nothing more goes to a until it shows a free slot.
        assert!(refused(&mut j, "a", "no free slot"));
        assert!(j.try_recv().is_err(), "one event for one refusal");
        assert!(assigned(&mut a).is_empty(), "sent straight back to a");
        assert_eq!(pool.queued(), 1);
        msg(
            &pool,
            "a",
            wire::worker_message::Message::Heartbeat(wire::Heartbeat {
                free_slots: 1,
                ..Default::default()
            }),
        );
    }
    assert_eq!(started(&mut j), "a");
}

#[test]
fn a_refused_job_goes_to_another_worker_with_a_free_slot() {
    let pool = Pool::new(3);
    let (_, mut a) = register(&pool, "a", 1, &["sha256:p"]);
    let (_, mut b) = register(&pool, "b", 1, &[]);
    let mut j = pool.submit(job("j", &["sha256:p"]));
    assert_eq!(started(&mut j), "a");
    let lease = assigned(&mut a).remove(0).lease_id;
    msg(&pool, "a", rejected("j", &lease, "no free slot"));
    assert!(refused(&mut j, "a", "no free slot"));
    assert_eq!(started(&mut j), "b");
    let sent = assigned(&mut b).remove(0);
    assert_eq!(sent.attempt, 1);
    assert_ne!(sent.lease_id, lease);
    // A draining worker's refusal costs nothing either, and it gets no
    // more jobs.
    let mut k = pool.submit(job("k", &[]));
    assert!(k.try_recv().is_err());
    msg(
        &pool,
        "a",
        wire::worker_message::Message::Pong(wire::Pong::default()),
    );
    let (_, mut c) = register(&pool, "c", 1, &[]);
    assert_eq!(started(&mut k), "c");
    let lease = assigned(&mut c).remove(0).lease_id;
    msg(&pool, "c", rejected("k", &lease, "draining"));
    assert!(refused(&mut k, "c", "draining"));
    assert!(k.try_recv().is_err());
    assert_eq!(pool.queued(), 1);
    assert!(
        pool.workers()
            .iter()
            .any(|w| w.worker_id == "c" && w.state == build::WorkerState::Draining as i32)
    );
}

#[test]
fn other_refusals_cost_an_attempt() {
    let pool = Pool::new(2);
    let (_, mut a) = register(&pool, "a", 1, &[]);
    let mut j = pool.submit(job("j", &[]));
    assert_eq!(started(&mut j), "a");
    let lease = assigned(&mut a).remove(0).lease_id;
    msg(&pool, "a", rejected("j", &lease, "platform unsupported"));
    assert!(matches!(
        j.try_recv(),
        Ok(JobEvent::Requeued { attempt: 2, .. })
    ));
    assert_eq!(started(&mut j), "a");
    let lease = assigned(&mut a).remove(0).lease_id;
    msg(&pool, "a", rejected("j", &lease, "platform unsupported"));
    match j.try_recv() {
        Ok(JobEvent::Lost(why)) => assert!(why.contains("gave up after 2"), "{why}"),
        other => panic!("expected Lost, got {other:?}"),
    }
}

#[test]
fn a_retryable_failure_runs_again_elsewhere_up_to_max_attempts() {
    let pool = Pool::new(3);
    let (_, mut a) = register(&pool, "a", 1, &["sha256:p"]);
    let (_, mut b) = register(&pool, "b", 1, &[]);
    let mut j = pool.submit(job("j", &["sha256:p"]));
    assert_eq!(started(&mut j), "a");
    let lease = assigned(&mut a).remove(0).lease_id;
    msg(&pool, "a", failed("j", &lease, true));
    match j.try_recv() {
        Ok(JobEvent::Retrying { worker_id, failure }) => {
            assert_eq!(worker_id, "a");
            assert!(failure.message.contains("disk is full"));
        }
        other => panic!("expected Retrying, got {other:?}"),
    }
    match j.try_recv() {
        Ok(JobEvent::Requeued { attempt: 2, reason }) => {
            assert!(
                reason.contains("a failed it") && reason.contains("disk is full"),
                "{reason}"
            )
        }
        other => panic!("expected Requeued, got {other:?}"),
    }
    // a holds the parent layer but failed it: b runs attempt 2.
    assert_eq!(started(&mut j), "b");
    let sent = assigned(&mut b).remove(0);
    assert_eq!(sent.attempt, 2);
    msg(&pool, "b", failed("j", &sent.lease_id, true));
    assert!(matches!(j.try_recv(), Ok(JobEvent::Retrying { .. })));
    assert!(matches!(
        j.try_recv(),
        Ok(JobEvent::Requeued { attempt: 3, .. })
    ));
    let worker = started(&mut j);
    let lease = if worker == "a" {
        assigned(&mut a)
    } else {
        assigned(&mut b)
    }
    .remove(0)
    .lease_id;
    // The last attempt fails: the worker's own message reaches the build.
    msg(&pool, &worker, failed("j", &lease, true));
    match j.try_recv() {
        Ok(JobEvent::Failed { failure, .. }) => {
            assert!(failure.message.contains("disk is full"))
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[test]
fn a_failure_not_worth_retrying_fails_at_once() {
    let pool = Pool::new(3);
    let (_, mut a) = register(&pool, "a", 1, &[]);
    let mut j = pool.submit(job("j", &[]));
    started(&mut j);
    let lease = assigned(&mut a).remove(0).lease_id;
    msg(&pool, "a", failed("j", &lease, false));
    assert!(matches!(j.try_recv(), Ok(JobEvent::Failed { .. })));
    assert!(assigned(&mut a).is_empty());
}

#[test]
fn a_job_its_worker_stopped_on_its_own_is_run_again() {
    // A draining worker past its deadline cancels its jobs before it says
    // it hands them back: the cancellation must not fail the build.
    let pool = Pool::new(3);
    let (_, a) = register(&pool, "a", 1, &[]);
    let (_, b) = register(&pool, "b", 1, &[]);
    let mut j = pool.submit(job("j", &[]));
    let first = started(&mut j);
    let (mut on, mut other, second) = if first == "a" {
        (a, b, "b")
    } else {
        (b, a, "a")
    };
    let lease = assigned(&mut on).remove(0).lease_id;
    msg(
        &pool,
        &first,
        wire::worker_message::Message::GoingAway(wire::GoingAway {
            drain: true,
            ..Default::default()
        }),
    );
    msg(
        &pool,
        &first,
        wire::worker_message::Message::JobFailed(wire::JobFailed {
            job_id: "j".into(),
            lease_id: lease,
            kind: wire::FailureKind::Cancelled as i32,
            message: "cancelled".into(),
            ..Default::default()
        }),
    );
    match j.try_recv() {
        Ok(JobEvent::Requeued { attempt: 2, reason }) => {
            assert!(reason.contains("stopped it"), "{reason}")
        }
        other => panic!("expected Requeued, got {other:?}"),
    }
    assert_eq!(started(&mut j), second);
    assert_eq!(assigned(&mut other)[0].attempt, 2);
}

#[test]
fn a_job_bound_to_a_worker_waits_for_it_until_released_and_commits_are_routed() {
    let pool = Pool::new(3);
    let (_, mut a) = register(&pool, "a", 1, &[]);
    let (_, mut b) = register(&pool, "b", 1, &[]);
    // The parent runs on a and reports its layer made.
    let mut parent = pool.submit_on(job("b1-p", &[]), 1, "a");
    assert_eq!(started(&mut parent), "a");
    let parent_lease = assigned(&mut a).remove(0).lease_id;
    let lease = parent_lease.clone();
    let layer = common::Layer {
        diff_id: "sha256:made".into(),
        ..Default::default()
    };
    msg(
        &pool,
        "a",
        wire::worker_message::Message::JobCommitted(wire::JobCommitted {
            job_id: "b1-p".into(),
            lease_id: lease.clone(),
            layer: Some(layer.clone()),
        }),
    );
    match parent.try_recv() {
        Ok(JobEvent::Committed {
            layer: l,
            worker_id,
        }) => {
            assert_eq!((*l, worker_id.as_str()), (layer, "a"));
        }
        other => panic!("expected Committed, got {other:?}"),
    }
    // A report under another lease is dropped.
    msg(
        &pool,
        "a",
        wire::worker_message::Message::JobCommitted(wire::JobCommitted {
            job_id: "b1-p".into(),
            lease_id: "stale".into(),
            layer: Some(common::Layer::default()),
        }),
    );
    assert!(parent.try_recv().is_err());

    // `strata workers` shows it uploading, not running.
    let listed = pool.workers().into_iter().find(|w| w.worker_id == "a");
    let listed = listed.expect("a is listed");
    assert_eq!(listed.running_jobs, 0);
    assert!(listed.job_ids.is_empty(), "{:?}", listed.job_ids);
    assert_eq!(listed.uploading_job_ids, ["b1-p"]);

    // The parent only uploads now: its slot on a is free, and a rider
    // bound to a starts there at once.
    let mut rider = pool.submit_on(job("r", &["sha256:made"]), 1, "a");
    assert_eq!(started(&mut rider), "a");
    assert_eq!(assigned(&mut a).remove(0).job_id, "r");
    // Another bound to a waits while a is full, though b is free; a job
    // queued after it is not held up.
    let mut second = pool.submit_on(job("b1-r2", &["sha256:made"]), 1, "a");
    let mut other = pool.submit(job("o", &[]));
    assert!(second.try_recv().is_err());
    // a is told a step waits for the layer, so as not to put off its
    // upload; once.
    assert_eq!(hurried(&mut a), vec![vec!["sha256:made".to_string()]]);
    assert_eq!(started(&mut other), "b");
    let lease = assigned(&mut b).remove(0).lease_id;
    msg(
        &pool,
        "b",
        wire::worker_message::Message::JobResult(wire::JobResult {
            job_id: "o".into(),
            lease_id: lease,
            ..Default::default()
        }),
    );
    assert!(second.try_recv().is_err(), "still bound to a");
    assert!(hurried(&mut a).is_empty(), "told once");
    // Hurrying jobs tells the workers running them, by job.
    pool.hurry(&["r".into(), "not-running".into()]);
    assert_eq!(hurried(&mut a), vec![vec!["r".to_string()]]);
    // The parent's layer is stored: it may go anywhere, with the blob
    // it was reported early without.
    let stored = common::Layer::of_blob("sha256:made", "zstd", "sha256:blob", 7);
    msg(
        &pool,
        "a",
        wire::worker_message::Message::JobResult(wire::JobResult {
            job_id: "b1-p".into(),
            lease_id: parent_lease,
            layer: Some(stored.clone()),
            ..Default::default()
        }),
    );
    pool.release("b1-r2");
    assert_eq!(started(&mut second), "b");
    let r2 = assigned(&mut b).remove(0);
    assert_eq!(r2.job_id, "b1-r2");
    assert_eq!(r2.parent.expect("parent").layers, vec![stored]);
}

#[test]
fn a_released_or_orphaned_bound_job_is_never_left_waiting_for_its_worker() {
    let pool = Pool::new(3);
    let (_, mut a) = register(&pool, "a", 1, &[]);
    let (session_b, _b) = register(&pool, "b", 1, &[]);
    // Bound to a and running there; its parent is stored meanwhile.
    let mut rider = pool.submit_on(job("r", &[]), 1, "a");
    assert_eq!(started(&mut rider), "a");
    pool.release("r");
    // a drains and hands it back: it goes to b.
    let lease = assigned(&mut a).remove(0).lease_id;
    msg(
        &pool,
        "a",
        wire::worker_message::Message::GoingAway(wire::GoingAway {
            reason: "shutting down".into(),
            drain: false,
            drain_timeout: None,
        }),
    );
    assert!(matches!(rider.try_recv(), Ok(JobEvent::Requeued { .. })));
    assert_eq!(started(&mut rider), "b");
    drop(lease);

    // A job queued for b alone while b is full: b goes away, and the job
    // may go anywhere.
    let (_, _c) = register(&pool, "c", 2, &[]);
    let mut waiting = pool.submit_on(job("w", &[]), 1, "b");
    assert!(waiting.try_recv().is_err(), "b is full");
    pool.disconnect("b", session_b);
    let mut got = None;
    while let Ok(ev) = waiting.try_recv() {
        if let JobEvent::Started { worker_id, .. } = ev {
            got = Some(worker_id);
        }
    }
    assert_eq!(got.as_deref(), Some("c"));
}

#[test]
fn after_drain_all_no_worker_is_given_a_job() {
    let pool = Pool::new(3);
    let (_, mut a) = register(&pool, "a", 2, &[]);
    pool.drain_all("scheduler shutting down");
    let drained = std::iter::from_fn(|| a.try_recv().ok())
        .flatten()
        .any(|m| matches!(m.message, Some(wire::scheduler_message::Message::Drain(_))));
    assert!(drained, "the worker was not told to drain");
    let mut j = pool.submit(job("j", &[]));
    assert!(j.try_recv().is_err(), "a job started on a drained worker");
    assert!(assigned(&mut a).is_empty());
    assert_eq!(pool.queued(), 1);

    // A worker that registers (or reconnects) during the shutdown is
    // drained from the start.
    let (_, mut b) = register(&pool, "b", 2, &[]);
    let drained = std::iter::from_fn(|| b.try_recv().ok())
        .flatten()
        .any(|m| matches!(m.message, Some(wire::scheduler_message::Message::Drain(_))));
    assert!(drained, "the new worker was not told to drain");
    assert!(
        assigned(&mut b).is_empty(),
        "a job went to a worker registering during shutdown"
    );
    assert_eq!(pool.queued(), 1);
}

#[test]
fn a_stream_the_worker_replaced_has_no_say_over_its_new_session() {
    let pool = Pool::new(3);
    let (old, _old_rx) = register(&pool, "a", 2, &[]);
    // The worker reconnected; its old stream still delivers what it had
    // buffered, a going away among it.
    let (_, mut a) = register(&pool, "a", 2, &[]);
    pool.on_message(
        "a",
        old,
        wire::worker_message::Message::GoingAway(wire::GoingAway {
            reason: "the old stream".into(),
            drain: false,
            drain_timeout: None,
        }),
    );
    let mut j = pool.submit(job("j", &[]));
    assert_eq!(started(&mut j), "a", "the new session still takes jobs");
    assert_eq!(assigned(&mut a).len(), 1);
}

#[test]
fn a_rider_on_its_last_attempt_outlives_the_loss_of_its_parent_s_worker() {
    let pool = Pool::new(3);
    let (session_a, _a) = register(&pool, "a", 2, &[]);
    let (_, _b) = register(&pool, "b", 2, &[]);
    // Bound to a (only a has the layer it starts on), on its last attempt.
    let mut rider = pool.submit_on(job("r", &[]), 3, "a");
    assert_eq!(started(&mut rider), "a");
    pool.disconnect("a", session_a);
    match rider.try_recv() {
        Ok(JobEvent::Requeued { attempt, .. }) => assert_eq!(attempt, 3, "no attempt spent"),
        other => panic!("expected Requeued, got {other:?}"),
    }
    // An unbound job on its last attempt is given up when its worker goes.
    let mut own = pool.submit_from(job("o", &[]), 3);
    let mut on = None;
    while let Ok(ev) = own.try_recv() {
        if let JobEvent::Started { worker_id, .. } = ev {
            on = Some(worker_id);
        }
    }
    let on = on.expect("started");
    let session = pool.lock().workers[&on].session;
    pool.disconnect(&on, session);
    assert!(
        std::iter::from_fn(|| own.try_recv().ok()).any(|e| matches!(e, JobEvent::Lost(_))),
        "an unbound job's last attempt is spent by its worker's loss"
    );
}

#[test]
fn a_job_needing_a_feature_goes_only_to_workers_that_have_it() {
    let pool = Pool::new(3);
    // An older worker, holding the job's parent, that knows no features.
    let (_, mut old) = register(&pool, "old", 2, &["sha256:p"]);
    let mut hosts = job("h", &["sha256:p"]);
    hosts.extra_hosts = vec!["mirror.test:10.1.2.3".into()];
    let mut h = pool.submit(hosts);
    // Not sent to a worker that would drop --add-host; the build is told
    // why it waits, once.
    match h.try_recv() {
        Ok(JobEvent::Waiting(why)) => assert!(why.contains("extra-hosts"), "{why}"),
        other => panic!("expected Waiting, got {other:?}"),
    }
    // It waits without holding up the jobs behind it.
    let mut plain = pool.submit(job("j", &["sha256:p"]));
    assert_eq!(started(&mut plain), "old");
    assert_eq!(assigned(&mut old).len(), 1);
    assert!(h.try_recv().is_err(), "told twice");
    let (tx, mut new) = mpsc::unbounded_channel();
    let reg = wire::Register {
        capacity: 1,
        features: strata_proto::WORKER_FEATURES
            .iter()
            .map(|f| f.to_string())
            .collect(),
        ..Default::default()
    };
    pool.register("new", &reg, tx);
    assert_eq!(started(&mut h), "new");
    assert_eq!(assigned(&mut new)[0].extra_hosts, ["mirror.test:10.1.2.3"]);
}
