//! One fault at a time, on real processes on loopback (a scheduler with a
//! 3 s lease, two `strata-worker`s, a registry holding busybox), each at a
//! known point: the middle of a RUN step whose output says it started.
//!
//! - a worker killed (SIGKILL) mid-step: the step runs again on the other
//!   worker (attempt 2) and the image is byte for byte the one an
//!   undisturbed build makes; the killed worker, started again, leaves no
//!   container or mount behind;
//! - a worker frozen (SIGSTOP: its connection stays open) mid-step: its
//!   lease expires, the step runs on the other worker, and when it thaws
//!   (SIGCONT) nothing it says counts: one result per step, same image,
//!   and it registers again;
//! - SIGTERM to a worker with `--drain-timeout 1` mid-step: the step is
//!   handed back, finishes on the other worker, the build succeeds;
//! - a worker whose disk fills while storing a step's layer: the failure is
//!   the worker's (retryable), the step runs again on the other worker and
//!   the build succeeds.
//!
//! Cancelling (Ctrl-C, a cancelled build's slots) is in `cancel.rs`; the
//! farm and its helpers are in `strata_tests::fault_farm`. Builds are
//! followed through `--progress json`, whose events name the worker and
//! the attempt of every step.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use strata_tests::fault_farm::{
    Build, Farm, LONG_STEP, assert_busy, assert_clean, assert_recovered, of_type,
};
use strata_tests::follow::{Ended, dump};

#[test]
fn a_killed_worker_s_step_runs_again_elsewhere_with_the_same_image() {
    let mut farm = Farm::start(&[]);
    let ctx = farm.context("ctx");
    let reference = farm.reference(&ctx);

    let mut b = Build::start(&farm.url(), &ctx, "killed", farm.dir.path());
    let step = b.step(LONG_STEP, &farm);
    let victim = b.running(&step, "started", &farm);
    let v = farm.index(&victim);
    assert_busy(&farm, v);
    let survivor = farm.names[1 - v].clone();
    farm.workers[v] = None; // SIGKILL

    let events = assert_recovered(&farm, &mut b, &step, &survivor, &reference);
    let queued = of_type(&events, "step_queued", &step);
    assert!(
        queued.iter().any(|q| q["attempt"] == 2
            && q["reason"]
                .as_str()
                .is_some_and(|r| r.contains("disconnected") && r.contains(&victim))),
        "no re-queue naming the lost worker:\n{}",
        dump(&events)
    );

    // Started again on the same state, the killed worker removes the
    // container and mounts its crash left.
    farm.start_worker(v);
    assert_clean(&farm, v);
    assert_clean(&farm, 1 - v);
}

#[test]
fn a_frozen_worker_loses_its_lease_and_its_late_result_is_ignored() {
    let farm = Farm::start(&[]);
    let ctx = farm.context("ctx");
    let reference = farm.reference(&ctx);

    let mut b = Build::start(&farm.url(), &ctx, "frozen", farm.dir.path());
    let step = b.step(LONG_STEP, &farm);
    let victim = b.running(&step, "started", &farm);
    let v = farm.index(&victim);
    assert_busy(&farm, v);
    let survivor = farm.names[1 - v].clone();
    farm.worker(v).proc.signal("STOP");
    let frozen = Instant::now();
    // Its connection stays open; only the lease can take the step away.
    let queued = b.wait_for("the re-queue", &farm, |e| {
        e["type"] == "step_queued" && e["step_id"] == step && e["attempt"] == 2
    });
    let reason = queued["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("no heartbeat for 3s") && reason.contains(&victim),
        "{queued}"
    );
    b.wait_for("attempt 2", &farm, |e| {
        e["type"] == "step_started" && e["step_id"] == step && e["attempt"] == 2
    });
    // Thawed while the step runs again elsewhere: whatever it sends under
    // its lost lease (its own run's end) must not reach the build.
    std::thread::sleep(Duration::from_secs(8).saturating_sub(frozen.elapsed()));
    farm.worker(v).proc.signal("CONT");

    assert_recovered(&farm, &mut b, &step, &survivor, &reference);
    // It comes back as a new session, ready for work, and holds nothing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !farm
        .listed()
        .iter()
        .any(|w| w["id"] == victim.as_str() && w["state"] == "ready")
    {
        assert!(
            Instant::now() < deadline,
            "{victim} did not register again:\n{}",
            farm.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_clean(&farm, v);
}

#[test]
fn a_draining_worker_hands_back_its_step_to_the_other() {
    let mut farm = Farm::start(&["--drain-timeout", "1"]);
    let ctx = farm.context("ctx");
    let reference = farm.reference(&ctx);

    let mut b = Build::start(&farm.url(), &ctx, "drained", farm.dir.path());
    let step = b.step(LONG_STEP, &farm);
    let victim = b.running(&step, "started", &farm);
    let v = farm.index(&victim);
    assert_busy(&farm, v);
    let survivor = farm.names[1 - v].clone();
    farm.worker(v).proc.signal("TERM");

    let events = assert_recovered(&farm, &mut b, &step, &survivor, &reference);
    let queued = of_type(&events, "step_queued", &step);
    assert!(
        queued.iter().any(|q| q["attempt"] == 2
            && q["reason"].as_str().is_some_and(|r| r.contains(&victim))),
        "no hand-back from {victim}:\n{}",
        dump(&events)
    );
    // The drained worker left on its own, cleanly, and left nothing.
    let mut w = farm.workers[v].take().expect("worker");
    let exit = w.proc.wait_exit(Duration::from_secs(30));
    assert!(
        exit.is_some_and(|s| s.success()),
        "{victim} did not exit cleanly after draining ({exit:?}):\n{}",
        w.proc.log()
    );
    assert_clean(&farm, v);
}

/// A tmpfs of `size` mounted at `at` (the tests run as root), lazily
/// unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mount a {size} tmpfs (the test runs as root)");
        SmallDisk(at.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_step_its_worker_s_full_disk_failed_runs_on_another() {
    let mut farm = Farm::new(2, &[]);
    // 48 MiB of state for worker-a: room for the step's 30 MB, not for its
    // layer too.
    let _disk = SmallDisk::mount(&farm.state(0), "48m");
    farm.start_worker(0);
    let ctx = farm.dir.path().join("noise");
    std::fs::create_dir_all(&ctx).expect("context");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {}\nRUN echo started; busybox sleep 3; head -c 30000000 /dev/urandom > /noise\n",
            farm.base
        ),
    )
    .expect("Dockerfile");
    let mut b = Build::start(&farm.url(), &ctx, "noise", farm.dir.path());
    let step = b.step("/dev/urandom", &farm);
    assert_eq!(b.running(&step, "started", &farm), "worker-a");
    // worker-b joins while the step runs on worker-a.
    farm.start_worker(1);

    let Ended {
        status,
        events,
        stderr,
    } = b.finish(&farm);
    assert!(
        status.success(),
        "the build failed:\n{stderr}\n{}\n{}",
        dump(&events),
        farm.logs()
    );
    let failed = of_type(&events, "step_failed", &step);
    assert!(
        failed.len() == 1
            && failed[0]["worker_id"] == "worker-a"
            && failed[0]["will_retry"] == true
            && failed[0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("the worker's disk is full")),
        "worker-a's failure is not reported as one to retry:\n{}",
        dump(&events)
    );
    let done = of_type(&events, "step_done", &step);
    assert!(
        done.len() == 1 && done[0]["worker_id"] == "worker-b" && done[0]["attempt"] == 2,
        "{}",
        dump(&events)
    );
}
