//! A step starts on its parent's layer while that layer uploads, on the
//! worker that made it (`scheduler/src/build/early.rs`), on real
//! processes on loopback (the fault farm: a scheduler, two workers, a
//! registry holding busybox). The parent writes 256 MiB of random data,
//! so its upload takes a while; the next step records the data's
//! checksum and the last checks it, so an image whose layers were built
//! on different runs of the parent fails its own build.
//!
//! - undisturbed: the next step starts before the parent is done (its
//!   layer still uploading), on the same worker, whose one slot the
//!   uploading parent does not take;
//! - the parent's worker killed while the layer uploads and the next step
//!   runs on it: the parent runs again on the other worker, the next step
//!   is queued again and built on the layer that was stored, and the
//!   image checks out.

use std::path::PathBuf;
use strata_tests::fault_farm::{Build, Farm};
use strata_tests::follow::dump;

const BIG: &str = "RUN dd if=/dev/urandom of=/seed bs=1048576 count=256 2>/dev/null";
const SUM: &str = "RUN echo summing; sha256sum /seed > /seed.sum";
const CHECK: &str = "RUN sha256sum -c /seed.sum";

fn context(farm: &Farm, name: &str) -> PathBuf {
    let ctx = farm.dir.path().join(name);
    std::fs::create_dir_all(&ctx).expect("context");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {}\n{BIG}\n{SUM}\n{CHECK}\n", farm.base),
    )
    .expect("Dockerfile");
    ctx
}

/// The position of the first event of type `ty` for `step`.
fn position(events: &[serde_json::Value], ty: &str, step: &str) -> Option<usize> {
    events
        .iter()
        .position(|e| e["type"] == ty && e["step_id"] == step)
}

#[test]
fn the_next_step_starts_on_a_layer_still_uploading_on_the_worker_that_made_it() {
    // One slot each: the parent, only uploading, must not hold it.
    let farm = Farm::start(&["--capacity", "1"]);
    let ctx = context(&farm, "ride");
    let mut b = Build::start(&farm.url(), &ctx, "ride", farm.dir.path());
    let (big, sum) = (b.step("dd if=", &farm), b.step("> /seed.sum", &farm));
    let end = b.finish(&farm);
    let events = b.events();
    assert!(end.status.success(), "{}\n{}", end.stderr, dump(&events));
    // Its container ran (printed) while the parent's layer uploaded.
    let sum_ran = events
        .iter()
        .position(|e| {
            e["type"] == "step_log"
                && e["step_id"] == sum
                && e["data"].as_str().is_some_and(|d| d.contains("summing"))
        })
        .expect("the next step's output");
    let big_done = position(&events, "step_done", &big).expect("big done");
    assert!(
        sum_ran < big_done,
        "the next step waited for the upload:\n{}",
        dump(&events)
    );
    let worker = |ty: &str, step: &str| {
        events[position(&events, ty, step).expect("event")]["worker_id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        worker("step_started", &sum),
        worker("step_done", &big),
        "the next step ran where the layer was made"
    );
}

#[test]
fn a_step_started_on_a_layer_lost_before_it_was_stored_starts_again_on_the_stored_one() {
    let mut farm = Farm::start(&[]);
    let ctx = context(&farm, "lost");
    let mut b = Build::start(&farm.url(), &ctx, "lost", farm.dir.path());
    let (big, sum) = (b.step("dd if=", &farm), b.step("> /seed.sum", &farm));
    let victim = b.running(&sum, "summing", &farm);
    assert!(
        position(&b.events(), "step_done", &big).is_none(),
        "the parent's layer was stored before the next step started:\n{}",
        dump(&b.events())
    );
    let v = farm.index(&victim);
    let survivor = farm.names[1 - v].clone();
    farm.workers[v] = None; // SIGKILL, the parent's upload under way

    let end = b.finish(&farm);
    let events = b.events();
    assert!(
        end.status.success(),
        "the build failed (did the checksum step see layers of two runs?):\n{}\n{}\n{}",
        end.stderr,
        dump(&events),
        farm.logs()
    );
    let last = |ty: &str, step: &str| {
        events
            .iter()
            .rev()
            .find(|e| e["type"] == ty && e["step_id"] == step)
            .unwrap_or_else(|| panic!("no {ty} of {step}:\n{}", dump(&events)))
    };
    assert_eq!(last("step_done", &big)["worker_id"], survivor.as_str());
    assert_eq!(last("step_done", &big)["attempt"], 2);
    assert_eq!(last("step_done", &sum)["worker_id"], survivor.as_str());
    assert!(
        events.iter().any(|e| e["type"] == "step_queued"
            && e["step_id"] == sum
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains(&big) && r.contains("runs again"))),
        "the next step was not queued again for the parent's new run:\n{}",
        dump(&events)
    );
}

/// A Dockerfile in its own context directory.
fn context_with(farm: &Farm, name: &str, dockerfile: &str) -> PathBuf {
    let ctx = farm.dir.path().join(name);
    std::fs::create_dir_all(&ctx).expect("context");
    std::fs::write(ctx.join("Dockerfile"), dockerfile).expect("Dockerfile");
    ctx
}

/// Workers that put off every big layer's blob and upload until no step
/// runs on them (the CPUs never count as idle, the bound is ten minutes),
/// unless the scheduler says a step or a build waits for the layer.
const PUT_OFF: [&str; 4] = ["--defer-uploads", "600", "--defer-idle-cpus", "1000"];

#[test]
fn a_layer_a_step_on_another_worker_waits_for_is_not_put_off() {
    // One slot each. The parent's two stages both start on the worker
    // that made its layer; one takes the slot, the other is bound there
    // too, finds none, and its wait is what gets the layer stored: it
    // runs on the other worker while the first still sleeps. (Put off,
    // the layer would be stored only once the first ended.)
    let mut extra = vec!["--capacity", "1"];
    extra.extend(PUT_OFF);
    let farm = Farm::start(&extra);
    let ctx = context_with(
        &farm,
        "elsewhere",
        &format!(
            "FROM {} AS parent\n\
             RUN dd if=/dev/urandom of=/seed bs=1048576 count=16 2>/dev/null\n\
             FROM parent AS one\n\
             RUN echo one-start; sleep 6; echo one-end\n\
             FROM parent AS two\n\
             RUN echo two-start; sleep 6; echo two-end\n\
             FROM parent\n\
             COPY --from=one /seed /one\n\
             COPY --from=two /seed /two\n",
            farm.base
        ),
    );
    let mut b = Build::start(&farm.url(), &ctx, "elsewhere", farm.dir.path());
    let (one, two) = (b.step("one-start", &farm), b.step("two-start", &farm));
    let end = b.finish(&farm);
    let events = b.events();
    assert!(end.status.success(), "{}\n{}", end.stderr, dump(&events));
    let printed = |step: &str, text: &str| {
        events
            .iter()
            .position(|e| {
                e["type"] == "step_log"
                    && e["step_id"] == step
                    && e["data"].as_str().is_some_and(|d| d.contains(text))
            })
            .unwrap_or_else(|| panic!("{step} printed no {text}:\n{}", dump(&events)))
    };
    let (first, second) = if printed(&one, "one-start") < printed(&two, "two-start") {
        ((&one, "one"), (&two, "two"))
    } else {
        ((&two, "two"), (&one, "one"))
    };
    assert!(
        printed(second.0, &format!("{}-start", second.1))
            < printed(first.0, &format!("{}-end", first.1)),
        "the second stage waited for the first to end (the layer's upload was put off):\n{}",
        dump(&events)
    );
    let worker = |step: &str| {
        events[position(&events, "step_done", step).expect("done")]["worker_id"].clone()
    };
    assert_ne!(worker(&one), worker(&two), "{}", dump(&events));
}

#[test]
fn a_build_left_with_nothing_but_an_upload_is_not_held_up_by_other_steps() {
    // One worker: another build's step keeps a step running there, so
    // the worker alone would put the layer off until that step ends. The
    // build whose layer it is has nothing else to run, and says so.
    let mut extra = vec!["--capacity", "2"];
    extra.extend(PUT_OFF);
    let farm = Farm::start_n(1, &extra);
    let busy_ctx = context_with(
        &farm,
        "busy",
        &format!("FROM {}\nRUN echo sleeping; sleep 15\n", farm.base),
    );
    let mut busy = Build::start(&farm.url(), &busy_ctx, "busy", farm.dir.path());
    let sleeping = busy.step("sleep 15", &farm);
    busy.running(&sleeping, "sleeping", &farm);
    let ctx = context_with(
        &farm,
        "alone",
        &format!(
            "FROM {}\nRUN dd if=/dev/urandom of=/seed bs=1048576 count=16 2>/dev/null\n",
            farm.base
        ),
    );
    let mut b = Build::start(&farm.url(), &ctx, "alone", farm.dir.path());
    let end = b.finish(&farm);
    assert!(
        end.status.success(),
        "{}\n{}",
        end.stderr,
        dump(&b.events())
    );
    assert!(
        !busy
            .events()
            .iter()
            .any(|e| e["type"] == "step_done" && e["step_id"] == sleeping),
        "the build waited for another build's step to end:\n{}",
        dump(&b.events())
    );
    assert!(busy.finish(&farm).status.success());
}
