//! The shared layer cache end to end: farms of real processes started by
//! `deploy/local/up.sh` on a real Redis and a real S3 server (s3s-fs), a
//! local registry holding the base image.
//!
//! - A build on one farm's worker is fully cached on another farm (its own
//!   scheduler state, its own worker) sharing only Redis and S3, even after
//!   FLUSHALL: same image ID, no job run, no blob downloaded there; and a
//!   cache mount written on the first worker is read on the second.
//! - Docker's rules on one farm with two workers: a changed COPY source
//!   rebuilds that step and the later ones only; after a failed step is
//!   fixed every earlier step is cached; five identical builds at once run
//!   each RUN once in total; prune empties the cache.

use serde_json::Value;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};
use strata_tests::base_image::push_busybox;
use strata_tests::farm::{LocalFarm, Shared};
use strata_tests::registry::TestRegistry;
use strata_tests::services::{RedisServer, S3Server};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Builds `ctx` on `farm` and returns the metadata file's JSON.
fn build(farm: &LocalFarm, ctx: &Path, extra: &[&str]) -> Value {
    let out = tempfile::NamedTempFile::new().expect("metadata file");
    let meta = out.path().to_str().expect("utf-8").to_string();
    let mut args = vec!["build", "--progress", "plain", "--metadata-file", &meta];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().expect("utf-8"));
    let o = farm.strata(&args);
    assert!(
        o.status.success(),
        "build of {} failed:\n{}\n{}",
        ctx.display(),
        text(&o),
        farm.logs()
    );
    serde_json::from_slice(&std::fs::read(out.path()).expect("metadata")).expect("metadata JSON")
}

/// (instruction, status) of every step, in order.
fn statuses(m: &Value) -> Vec<(String, String)> {
    m["strata.steps"]
        .as_array()
        .expect("strata.steps")
        .iter()
        .map(|s| {
            (
                s["instruction"].as_str().unwrap_or_default().to_string(),
                s["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn status_of(m: &Value, needle: &str) -> String {
    statuses(m)
        .into_iter()
        .find(|(i, _)| i.contains(needle))
        .unwrap_or_else(|| panic!("no step {needle:?} in {m:#}"))
        .1
}

fn write_ctx(dir: &Path, dockerfile: &str, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).expect("context dir");
    std::fs::write(dir.join("Dockerfile"), dockerfile).expect("Dockerfile");
    for (name, body) in files {
        std::fs::write(dir.join(name), body).expect("context file");
    }
}

/// The farm's workers as `strata workers --format json` lists them, once
/// each has sent a heartbeat after `since` (counters ride on heartbeats).
fn workers_after(farm: &LocalFarm, since: Instant) -> Vec<Value> {
    // Heartbeats come every 5 s.
    let wait = Duration::from_secs(6).saturating_sub(since.elapsed());
    std::thread::sleep(wait);
    let o = farm.strata(&["workers", "--format", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice::<Vec<Value>>(&o.stdout).expect("workers JSON")
}

#[test]
fn another_farm_reuses_the_cache_through_redis_and_s3_even_after_flushall() {
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let redis = RedisServer::start();
    let s3 = S3Server::start("strata-cache");
    let shared = Shared {
        redis: Some(&redis.url),
        s3: Some(s3.url("farm/")),
        env: s3.env().to_vec(),
    };
    let work = tempfile::tempdir().expect("work dir");
    let dockerfile = format!(
        "FROM {base}\n\
         RUN echo built-once > /marker && busybox sleep 1\n\
         COPY app.txt /app/app.txt\n\
         RUN --mount=type=cache,id=pkgs,target=/var/cache/pkgs \
             echo written-on-the-first-worker > /var/cache/pkgs/note && cp /app/app.txt /app/copy\n\
         CMD [\"cat\", \"/marker\"]\n"
    );
    let first_ctx = work.path().join("client-a");
    write_ctx(&first_ctx, &dockerfile, &[("app.txt", "the app\n")]);

    let first = {
        let farm = LocalFarm::start_shared(1, 2, &shared);
        let m = build(&farm, &first_ctx, &["-t", "shared/app:1"]);
        assert!(
            statuses(&m).iter().all(|(_, s)| s == "executed"),
            "cold build: {m:#}"
        );
        m
    };
    // Layers and the cache index's records are in S3 now.
    assert!(
        !s3.objects("farm/blobs").is_empty() && !s3.objects("farm/objects/cache").is_empty(),
        "nothing in S3: {:?}",
        s3.objects("farm")
    );

    // Only Redis and S3 are shared with the next farm; Redis forgets all.
    let flushed = redis.command(&["FLUSHALL"]);
    assert!(flushed.starts_with("+OK"), "FLUSHALL: {flushed}");

    let farm = LocalFarm::start_shared(1, 2, &shared);
    let started = Instant::now();
    // Another client: the same files, written anew elsewhere (other mtimes).
    let second_ctx = work.path().join("client-b");
    write_ctx(&second_ctx, &dockerfile, &[("app.txt", "the app\n")]);
    let second = build(&farm, &second_ctx, &["-t", "shared/app:1"]);
    assert!(
        statuses(&second).iter().all(|(_, s)| s == "cached"),
        "the second farm rebuilt steps: {second:#}"
    );
    assert_eq!(
        second["containerimage.config.digest"], first["containerimage.config.digest"],
        "a fully cached build gives the same image ID"
    );
    let workers = workers_after(&farm, started);
    assert_eq!(workers.len(), 1, "{workers:#?}");
    assert_eq!(workers[0]["jobs_completed"], 0, "{workers:#?}");
    assert_eq!(workers[0]["blobs_downloaded"], 0, "{workers:#?}");
    assert_eq!(workers[0]["bytes_downloaded"], 0, "{workers:#?}");

    // The cache mount the first farm's worker wrote is on this worker too.
    let reader_ctx = work.path().join("reader");
    write_ctx(
        &reader_ctx,
        &format!(
            "FROM {base}\n\
             RUN --mount=type=cache,id=pkgs,target=/var/cache/pkgs \
                 cat /var/cache/pkgs/note > /seen\n"
        ),
        &[],
    );
    let out = work.path().join("rootfs");
    let started = Instant::now();
    let m = build(
        &farm,
        &reader_ctx,
        &["-o", &format!("type=local,dest={}", out.display())],
    );
    assert_eq!(
        status_of(&m, "cat /var/cache/pkgs/note"),
        "executed",
        "{m:#}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("seen")).expect("/seen in the image"),
        "written-on-the-first-worker\n"
    );
    // That worker did fetch what the RUN needed as a filesystem: the
    // counters are live, so the zeros above meant something.
    let workers = workers_after(&farm, started);
    assert_eq!(workers[0]["jobs_completed"], 1, "{workers:#?}");
    assert!(
        workers[0]["blobs_downloaded"].as_u64() > Some(0),
        "{workers:#?}"
    );
}

#[test]
fn docker_cache_rules_on_a_shared_cache_with_two_workers() {
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let redis = RedisServer::start();
    let s3 = S3Server::start("strata-rules");
    let farm = LocalFarm::start_shared(
        2,
        2,
        &Shared {
            redis: Some(&redis.url),
            s3: Some(s3.url("")),
            env: s3.env().to_vec(),
        },
    );
    let work = tempfile::tempdir().expect("work dir");

    // A changed COPY source rebuilds that step and the later ones only.
    let ctx = work.path().join("app");
    let dockerfile = format!(
        "FROM {base}\n\
         RUN echo one > /one\n\
         COPY a.txt /a.txt\n\
         RUN cat /a.txt > /a.copy\n\
         COPY b.txt /b.txt\n\
         RUN cat /b.txt > /b.copy\n"
    );
    write_ctx(&ctx, &dockerfile, &[("a.txt", "a1\n"), ("b.txt", "b1\n")]);
    let cold = build(&farm, &ctx, &[]);
    assert!(
        statuses(&cold).iter().all(|(_, s)| s == "executed"),
        "{cold:#}"
    );
    std::fs::write(ctx.join("b.txt"), "b2\n").expect("change b.txt");
    let warm = build(&farm, &ctx, &[]);
    let expected = [
        ("RUN echo one", "cached"),
        ("COPY a.txt", "cached"),
        ("RUN cat /a.txt", "cached"),
        ("COPY b.txt", "executed"),
        ("RUN cat /b.txt", "executed"),
    ];
    for (needle, status) in expected {
        assert_eq!(status_of(&warm, needle), status, "{needle}: {warm:#}");
    }

    // A failing step, fixed: every earlier step comes from the cache.
    let flaky = work.path().join("flaky");
    let failing = format!(
        "FROM {base}\n\
         RUN echo prepared > /prepared\n\
         RUN echo fetching && exit 7\n\
         RUN echo after > /after\n"
    );
    write_ctx(&flaky, &failing, &[]);
    let o = farm.strata(&[
        "build",
        "--progress",
        "plain",
        flaky.to_str().expect("utf-8"),
    ]);
    assert!(
        !o.status.success(),
        "the failing build succeeded:\n{}",
        text(&o)
    );
    assert!(text(&o).contains("exit code: 7"), "{}", text(&o));
    write_ctx(&flaky, &failing.replace("exit 7", "echo fetched"), &[]);
    let fixed = build(&farm, &flaky, &[]);
    assert_eq!(status_of(&fixed, "echo prepared"), "cached", "{fixed:#}");
    assert_eq!(status_of(&fixed, "echo fetched"), "executed", "{fixed:#}");
    assert_eq!(status_of(&fixed, "echo after"), "executed", "{fixed:#}");

    // Five identical builds at once: each RUN runs once in total.
    let same = work.path().join("same");
    write_ctx(
        &same,
        &format!(
            "FROM {base}\n\
             RUN busybox sleep 2 && echo first > /first\n\
             RUN echo second > /second\n"
        ),
        &[],
    );
    let metas: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..5)
            .map(|_| s.spawn(|| build(&farm, &same, &[])))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("build thread"))
            .collect()
    });
    for needle in ["echo first", "echo second"] {
        let runs = metas
            .iter()
            .filter(|m| status_of(m, needle) == "executed")
            .count();
        assert_eq!(runs, 1, "{needle} ran {runs} times: {metas:#?}");
    }
    let ids: Vec<&Value> = metas
        .iter()
        .map(|m| &m["containerimage.config.digest"])
        .collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");

    // Prune: nothing is old enough for until=24h; then everything goes,
    // and the next build runs its steps again.
    let o = farm.strata(&["prune", "--filter", "until=24h"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Removed 0 cache entries"), "{}", text(&o));
    let o = farm.strata(&["prune"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !text(&o).contains("Removed 0 cache entries"),
        "{}",
        text(&o)
    );
    let again = build(&farm, &same, &[]);
    assert_eq!(status_of(&again, "echo first"), "executed", "{again:#}");
}
