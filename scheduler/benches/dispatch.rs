//! The scheduler's dispatch rate: `strata_scheduler::pool::Pool` with 100
//! simulated workers (capacity 2 each), jobs submitted, assigned, and
//! completed with a `JobResult` through `Pool::on_message`, as the worker
//! stream handler does. Every job reads a chain of 4 parent layers out of
//! 200, and every worker starts with 20 of them unpacked, so the affinity
//! choice (the worker holding most of a job's parents) has real work to do.
//! Each completed job adds a layer to its worker, as a real result does.
//!
//! - `pool/burst_2000`: 2,000 jobs queued at once (a build farm's morning),
//!   drained by the workers answering every assignment in turn, on one
//!   thread: the pool's own cost per job.
//! - `pool/one_at_a_time_2000`: submit one job, complete it, next: the
//!   latency path of a linear Dockerfile.
//! - `tokio/burst_2000`: the workers as 100 tokio tasks on a 2-thread
//!   runtime, each answering its assignments from its own channel, and the
//!   build side awaiting every job's `Done` event: adds the channel hops
//!   and wakeups of the real scheduler (no gRPC, no protobuf encoding).
//!
//! criterion's "thrpt" is jobs dispatched and completed per second (the
//! target of issue #7 is at least 5,000 jobs/s with 100 workers).
//!
//! `cargo bench -p strata-scheduler --bench dispatch`
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, SamplingMode, Throughput};
use strata_proto::common::v1 as common;
use strata_proto::worker::v1 as wire;
use strata_scheduler::pool::{JobEvent, Pool};
use tokio::sync::mpsc;
use tonic::Status;

const WORKERS: usize = 100;
const CAPACITY: u32 = 2;
const JOBS: usize = 2_000;
const LAYERS: usize = 200;
const HELD_PER_WORKER: usize = 20;
const PARENTS: usize = 4;

type WorkerRx = mpsc::UnboundedReceiver<Result<wire::SchedulerMessage, Status>>;

fn diff_id(n: usize) -> String {
    format!("sha256:{n:064x}")
}

/// A pool with the simulated workers registered; their receiving ends.
fn pool_with_workers() -> (Arc<Pool>, Vec<(String, u64, WorkerRx)>) {
    let pool = Arc::new(Pool::new(3));
    let workers = (0..WORKERS)
        .map(|w| {
            let id = format!("worker-{w:03}");
            let (tx, rx) = mpsc::unbounded_channel();
            let reg = wire::Register {
                capacity: CAPACITY,
                layers_held: (0..HELD_PER_WORKER)
                    .map(|k| diff_id((w * 7 + k * 13) % LAYERS))
                    .collect(),
                ..Default::default()
            };
            let session = pool.register(&id, &reg, tx);
            (id, session, rx)
        })
        .collect();
    (pool, workers)
}

fn job(n: usize) -> wire::JobAssignment {
    wire::JobAssignment {
        job_id: format!("job-{n}"),
        build_id: "bench".into(),
        step_id: format!("step-{n}"),
        parent: Some(common::Snapshot {
            layers: (0..PARENTS)
                .map(|k| common::Layer {
                    diff_id: diff_id((n * 31 + k) % LAYERS),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The worker's answer to an assignment: a result with a new layer.
fn result_for(a: &wire::JobAssignment) -> wire::worker_message::Message {
    wire::worker_message::Message::JobResult(wire::JobResult {
        job_id: a.job_id.clone(),
        lease_id: a.lease_id.clone(),
        layer: Some(common::Layer {
            diff_id: format!("sha256:result-of-{}", a.job_id),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn take_assignment(rx: &mut WorkerRx) -> Option<wire::JobAssignment> {
    while let Ok(Ok(m)) = rx.try_recv() {
        if let Some(wire::scheduler_message::Message::AssignJob(a)) = m.message {
            return Some(a);
        }
    }
    None
}

/// Completes every job assigned so far, round after round, until the
/// pool has nothing queued or running. Returns the jobs completed.
fn drain(pool: &Pool, workers: &mut [(String, u64, WorkerRx)]) -> usize {
    let mut completed = 0;
    loop {
        let mut progressed = false;
        for (id, session, rx) in workers.iter_mut() {
            while let Some(a) = take_assignment(rx) {
                pool.on_message(id, *session, result_for(&a));
                completed += 1;
                progressed = true;
            }
        }
        if !progressed {
            return completed;
        }
    }
}

fn burst(pool: &Pool, workers: &mut [(String, u64, WorkerRx)]) -> usize {
    let events: Vec<_> = (0..JOBS).map(|n| pool.submit(job(n))).collect();
    let completed = drain(pool, workers);
    assert_eq!(completed, JOBS, "every job completes");
    assert_eq!(pool.load(), (0, 0, WORKERS));
    drop(events);
    completed
}

fn one_at_a_time(pool: &Pool, workers: &mut [(String, u64, WorkerRx)]) -> usize {
    let mut completed = 0;
    for n in 0..JOBS {
        let mut events = pool.submit(job(n));
        let worker = match events.try_recv() {
            Ok(JobEvent::Started { worker_id, .. }) => worker_id,
            other => panic!("job {n} not started: {other:?}"),
        };
        let (id, session, rx) = workers
            .iter_mut()
            .find(|(id, _, _)| *id == worker)
            .expect("a registered worker");
        let a = take_assignment(rx).expect("the assignment");
        pool.on_message(id, *session, result_for(&a));
        assert!(matches!(events.try_recv(), Ok(JobEvent::Done { .. })));
        completed += 1;
    }
    completed
}

/// The workers as tasks answering from their channels; the build side
/// awaits every job's Done.
async fn burst_tokio(pool: Arc<Pool>, workers: Vec<(String, u64, WorkerRx)>) -> usize {
    let mut tasks = tokio::task::JoinSet::new();
    for (id, session, mut rx) in workers {
        let pool = Arc::clone(&pool);
        tasks.spawn(async move {
            while let Some(Ok(m)) = rx.recv().await {
                if let Some(wire::scheduler_message::Message::AssignJob(a)) = m.message {
                    pool.on_message(&id, session, result_for(&a));
                }
            }
        });
    }
    let events: Vec<_> = (0..JOBS).map(|n| pool.submit(job(n))).collect();
    let mut done = 0;
    for mut ev in events {
        while let Some(e) = ev.recv().await {
            if let JobEvent::Done { .. } = e {
                done += 1;
                break;
            }
        }
    }
    assert_eq!(done, JOBS, "every job completes");
    // The pool (which the tasks share) keeps their channels open.
    tasks.shutdown().await;
    done
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("dispatch_100_workers");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(JOBS as u64));

    g.bench_function("pool/burst_2000", |b| {
        b.iter_batched(
            pool_with_workers,
            |(pool, mut workers)| black_box(burst(&pool, &mut workers)),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("pool/one_at_a_time_2000", |b| {
        b.iter_batched(
            pool_with_workers,
            |(pool, mut workers)| black_box(one_at_a_time(&pool, &mut workers)),
            BatchSize::PerIteration,
        )
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    g.bench_function("tokio/burst_2000", |b| {
        b.iter_batched(
            pool_with_workers,
            |(pool, workers)| black_box(rt.block_on(burst_tokio(pool, workers))),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
