//! Cancelling builds, on real processes on loopback (a scheduler with a
//! 3 s lease, two `strata-worker`s, a registry holding busybox), in the
//! middle of a RUN step whose output says it started.
//!
//! - Ctrl-C (SIGINT) in `strata build`: the build is cancelled on the
//!   farm, the worker's container and mounts are gone and its slot free;
//! - a build cancelled while another waits for its worker's slots: the
//!   waiting build gets them once the worker has stopped the cancelled
//!   steps, on its first attempt, and succeeds.
//!
//! The farm and its helpers are in `strata_tests::fault_farm`; builds are
//! followed through `--progress json`, whose events name the worker and
//! the attempt of every step.

use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};
use strata_tests::fault_farm::{Build, Farm, assert_busy, assert_clean};
use strata_tests::follow::{Ended, dump};

#[test]
fn ctrl_c_cancels_the_build_on_the_farm() {
    let farm = Farm::start(&[]);
    let ctx = farm.dir.path().join("long");
    std::fs::create_dir_all(&ctx).expect("context");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {}\nRUN echo started; busybox sleep 300\n", farm.base),
    )
    .expect("Dockerfile");
    let mut b = Build::start(&farm.url(), &ctx, "interrupted", farm.dir.path());
    let step = b.step("sleep 300", &farm);
    let worker = b.running(&step, "started", &farm);
    let w = farm.index(&worker);
    assert_busy(&farm, w);
    let build_id = b.wait_for("build_started", &farm, |e| e["type"] == "build_started")["build_id"]
        .as_str()
        .expect("build id")
        .to_string();
    let interrupted = Instant::now();
    let ok = Command::new("kill")
        .args(["-INT", &b.0.pid().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -INT strata");
    let Ended {
        status,
        events,
        stderr: err,
    } = b.finish(&farm);
    assert_eq!(status.code(), Some(130), "{err}\n{}", dump(&events));
    assert!(err.contains("cancelled"), "{err}");
    assert!(
        interrupted.elapsed() < Duration::from_secs(20),
        "Ctrl-C took {:?}",
        interrupted.elapsed()
    );
    // On the farm: the build is cancelled, the container and its mounts
    // are gone, the slot is free.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let builds = farm.strata(&["builds"]);
        if builds
            .lines()
            .any(|l| l.starts_with(&build_id) && l.contains("cancelled"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "build {build_id} not cancelled on the farm:\n{builds}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_clean(&farm, w);
    let deadline = Instant::now() + Duration::from_secs(10);
    while farm
        .listed()
        .iter()
        .any(|x| x["running_jobs"].as_u64() != Some(0))
    {
        assert!(
            Instant::now() < deadline,
            "the scheduler still counts a job: {:#?}",
            farm.listed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_cancelled_build_s_slots_go_to_the_waiting_build() {
    // One worker, two slots, both taken by a build's two long stages.
    let farm = Farm::start_n(1, &[]);
    let ctx = farm.dir.path().join("long");
    std::fs::create_dir_all(&ctx).expect("context");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {base} AS x\nRUN echo started; busybox sleep 300\n\
             FROM {base} AS y\nRUN echo started; busybox sleep 301\n\
             FROM {base}\nCOPY --from=x /etc/passwd /x\nCOPY --from=y /etc/passwd /y\n",
            base = farm.base
        ),
    )
    .expect("Dockerfile");
    let mut long = Build::start(&farm.url(), &ctx, "long", farm.dir.path());
    for needle in ["sleep 300", "sleep 301"] {
        let step = long.step(needle, &farm);
        long.running(&step, "started", &farm);
    }
    let long_id =
        long.wait_for("build_started", &farm, |e| e["type"] == "build_started")["build_id"]
            .as_str()
            .expect("build id")
            .to_string();
    // Another build waits for a slot.
    let next_ctx = farm.context("next");
    let mut next = Build::start(&farm.url(), &next_ctx, "next", farm.dir.path());
    let first = next.step("echo one", &farm);
    next.wait_for("the step queued", &farm, |e| {
        e["type"] == "step_queued" && e["step_id"] == first
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !next
            .events()
            .iter()
            .any(|e| e["type"] == "step_started" && e["step_id"] == first),
        "a step started on a full worker"
    );

    // The long build is cancelled: the next one must not be sent to the
    // worker before it stopped the cancelled steps (it would refuse it,
    // and three refusals used to fail the build).
    farm.strata(&["cancel", &long_id]);
    let end = long.finish(&farm);
    assert!(!end.status.success(), "{}", end.stderr);
    let end = next.finish(&farm);
    assert!(
        end.status.success(),
        "the waiting build failed:\n{}\n{}\n{}",
        end.stderr,
        dump(&end.events),
        farm.logs()
    );
    let retried: Vec<&Value> = end
        .events
        .iter()
        .filter(|e| e["type"] == "step_queued" && e["attempt"].as_u64() != Some(1))
        .collect();
    assert!(
        retried.is_empty(),
        "a refused job spent an attempt: {retried:?}"
    );
    // A refusal re-queued at attempt 1 but then started as a later
    // attempt would still be a spent attempt.
    let started: Vec<&Value> = end
        .events
        .iter()
        .filter(|e| e["type"] == "step_started")
        .collect();
    assert!(!started.is_empty(), "the waiting build started no step");
    let restarted: Vec<&&Value> = started
        .iter()
        .filter(|e| e["attempt"].as_u64() != Some(1))
        .collect();
    assert!(
        restarted.is_empty(),
        "a refused job spent an attempt: {restarted:?}"
    );
    assert_clean(&farm, 0);
}
