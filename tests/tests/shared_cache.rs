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
//! - `--no-cache` rebuilds every step; `--no-cache-filter` rebuilds one
//!   stage and the steps that read it.
//! - A big build log is kept whole for another scheduler to serve.
//! - Namespaces keep caches and cache mounts apart unless shared.
//!
//! Pruning while builds run and `prune --keep-storage`/`--filter until=`
//! are in `prune.rs`.

use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use strata_proto::build::v1 as pb;
use strata_proto::build::v1::build_service_client::BuildServiceClient;
use strata_tests::base_image::push_busybox;
use strata_tests::build_meta::{build, status_of, statuses, text, write_ctx};
use strata_tests::farm::{LocalFarm, Shared};
use strata_tests::registry::TestRegistry;
use strata_tests::services::{RedisServer, S3Server};

/// The farm's workers as `strata workers --format json` lists them, once
/// each has sent a heartbeat after `ended` (counters ride on heartbeats,
/// every 5 s).
fn workers_after(farm: &LocalFarm, ended: SystemTime) -> Vec<Value> {
    let ended = prost_types_secs(ended);
    let deadline = Instant::now() + Duration::from_secs(30);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    loop {
        let workers = rt.block_on(async {
            let channel = tonic::transport::Endpoint::from_shared(farm.url.clone())
                .expect("farm URL")
                .connect()
                .await
                .expect("connect to the scheduler");
            BuildServiceClient::new(channel)
                .list_workers(pb::ListWorkersRequest::default())
                .await
                .expect("ListWorkers")
                .into_inner()
                .workers
        });
        let fresh = !workers.is_empty()
            && workers.iter().all(|w| {
                w.last_heartbeat
                    .as_ref()
                    .is_some_and(|t| (t.seconds, t.nanos) > ended)
            });
        if fresh {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no heartbeat from every worker within 30 s after the build: {workers:#?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let o = farm.strata(&["workers", "--format", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice::<Vec<Value>>(&o.stdout).expect("workers JSON")
}

/// (seconds, nanos) since the epoch, as a protobuf timestamp has them.
fn prost_types_secs(t: SystemTime) -> (i64, i32) {
    let d = t.duration_since(UNIX_EPOCH).expect("after the epoch");
    (d.as_secs() as i64, d.subsec_nanos() as i32)
}

#[test]
fn another_farm_reuses_the_cache_through_redis_and_s3_even_after_flushall() {
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let redis = RedisServer::start();
    let s3 = S3Server::start("strata-cache");
    let shared = Shared::on(&redis, &s3, "farm/");
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
    let workers = workers_after(&farm, SystemTime::now());
    assert_eq!(workers.len(), 1, "{workers:#?}");
    assert_eq!(workers[0]["jobs_completed"], 0, "{workers:#?}");
    assert_eq!(workers[0]["blobs_downloaded"], 0, "{workers:#?}");
    assert_eq!(workers[0]["bytes_downloaded"], 0, "{workers:#?}");
    // It names what it honours beyond the protocol's base.
    assert_eq!(
        workers[0]["features"],
        serde_json::json!(["extra-hosts", "cache-sharing"]),
        "{workers:#?}"
    );

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
    let workers = workers_after(&farm, SystemTime::now());
    assert_eq!(workers[0]["jobs_completed"], 1, "{workers:#?}");
    assert!(
        workers[0]["blobs_downloaded"].as_u64() > Some(0),
        "{workers:#?}"
    );
    drop(farm);

    // The archive the fleet's pointer names goes (pruned by another
    // scheduler, lost): a cache is a cache, and a worker that cannot
    // restore it runs the step on its own copy (here none) and says so.
    let pointers: Vec<String> = s3
        .objects("farm/objects")
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("cachemount"))
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter(|body| body.starts_with("sha256:"))
        .collect();
    assert_eq!(pointers.len(), 1, "{pointers:?}");
    let hex = &pointers[0].trim()["sha256:".len()..];
    let archives: Vec<_> = s3
        .objects("farm/blobs")
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(hex))
        .collect();
    assert_eq!(archives.len(), 1, "{hex}: {archives:?}");
    std::fs::remove_file(&archives[0]).expect("removing the archive");
    let farm = LocalFarm::start_shared(1, 2, &shared);
    let lister_ctx = work.path().join("lister");
    write_ctx(
        &lister_ctx,
        &format!(
            "FROM {base}\n\
             RUN --mount=type=cache,id=pkgs,target=/var/cache/pkgs \
                 ls -A /var/cache/pkgs > /seen\n"
        ),
        &[],
    );
    let out = work.path().join("rootfs-after-loss");
    let m = build(
        &farm,
        &lister_ctx,
        &["-o", &format!("type=local,dest={}", out.display())],
    );
    assert_eq!(
        std::fs::read_to_string(out.join("seen")).expect("/seen in the image"),
        "",
        "{m:#}"
    );
    let logs = farm.logs();
    assert!(
        logs.contains("restoring cache mount") && logs.contains("the step gets this worker's copy"),
        "{logs}"
    );
}

#[test]
fn docker_cache_rules_on_a_shared_cache_with_two_workers() {
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let redis = RedisServer::start();
    let s3 = S3Server::start("strata-rules");
    let farm = LocalFarm::start_shared(2, 2, &Shared::on(&redis, &s3, ""));
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
#[test]
fn no_cache_rebuilds_everything_and_no_cache_filter_one_stage_and_what_reads_it() {
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let redis = RedisServer::start();
    let s3 = S3Server::start("strata-nocache");
    let farm = LocalFarm::start_shared(2, 2, &Shared::on(&redis, &s3, ""));
    let work = tempfile::tempdir().expect("work dir");
    let ctx = work.path().join("app");
    write_ctx(
        &ctx,
        &format!(
            "FROM {base} AS a\n\
             RUN echo a > /a\n\
             FROM {base} AS b\n\
             RUN echo b > /b\n\
             FROM b AS c\n\
             RUN cat /b > /c\n\
             FROM {base}\n\
             RUN echo final > /final\n\
             COPY --from=a /a /a\n\
             COPY --from=c /c /c\n\
             RUN cat /a /c > /all\n"
        ),
        &[],
    );
    let cold = build(&farm, &ctx, &[]);
    assert!(
        statuses(&cold).iter().all(|(_, s)| s == "executed"),
        "{cold:#}"
    );
    let warm = build(&farm, &ctx, &[]);
    assert!(
        statuses(&warm).iter().all(|(_, s)| s == "cached"),
        "{warm:#}"
    );

    let filtered = build(&farm, &ctx, &["--no-cache-filter", "b"]);
    let expected = [
        ("echo a", "cached"),
        ("echo b", "executed"),
        // Stage c is built on b, the last stage reads c.
        ("cat /b", "executed"),
        ("echo final", "cached"),
        ("COPY --from=a", "cached"),
        ("COPY --from=c", "executed"),
        ("cat /a /c", "executed"),
    ];
    for (needle, status) in expected {
        assert_eq!(
            status_of(&filtered, needle),
            status,
            "--no-cache-filter b, {needle}: {filtered:#}"
        );
    }

    let all = build(&farm, &ctx, &["--no-cache"]);
    assert!(
        statuses(&all).iter().all(|(_, s)| s == "executed"),
        "--no-cache: {all:#}"
    );
    // What --no-cache made is the cache now.
    let after = build(&farm, &ctx, &[]);
    assert!(
        statuses(&after).iter().all(|(_, s)| s == "cached"),
        "{after:#}"
    );
}
#[test]
fn a_big_build_log_is_kept_whole_for_another_scheduler() {
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let redis = RedisServer::start();
    let s3 = S3Server::start("strata-logs");
    let shared = Shared::on(&redis, &s3, "");
    let work = tempfile::tempdir().expect("work dir");
    let ctx = work.path().join("noisy");
    const LINES: usize = 50_000;
    // ~3.3 MiB of distinct numbered lines.
    write_ctx(
        &ctx,
        &format!(
            "FROM {base}\n\
             RUN awk 'BEGIN {{ for (i = 1; i <= {LINES}; i++) printf \"log line %06d abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnop\\n\", i }}'\n"
        ),
        &[],
    );
    let build_id = {
        let farm = LocalFarm::start_shared(1, 2, &shared);
        let m = build(&farm, &ctx, &[]);
        m["strata.build_id"]
            .as_str()
            .expect("strata.build_id")
            .to_string()
    };
    // A second scheduler on the same Redis and S3 (the first one is gone).
    let farm = LocalFarm::start_shared(1, 2, &shared);
    let o = farm.strata(&["logs", &build_id]);
    assert!(o.status.success(), "strata logs {build_id}: {}", text(&o));
    let out = text(&o);
    assert!(out.len() > 3 << 20, "only {} bytes of log", out.len());
    let seen: std::collections::BTreeSet<usize> = out
        .lines()
        .filter_map(|l| {
            let at = l.find("log line ")?;
            l[at + 9..].get(..6)?.parse().ok()
        })
        .collect();
    let missing: Vec<usize> = (1..=LINES).filter(|n| !seen.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "{} of {LINES} lines missing from `strata logs`, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

#[test]
fn namespaces_keep_caches_and_cache_mounts_apart_unless_shared() {
    use strata_tests::procs::{SchedulerProc, WorkerProc, wait_ready};
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let logs = tempfile::tempdir().expect("logs dir");
    let scheduler = SchedulerProc::start(
        logs.path(),
        &["--cache-share".to_string(), "team-c=team-a".to_string()],
        &[],
    );
    let url = format!("http://127.0.0.1:{}", scheduler.port);
    let worker = WorkerProc::start(logs.path(), "worker-1", &url, &[], &[]);
    wait_ready(worker.metrics_port, "/readyz", "worker registered");
    let work = tempfile::tempdir().expect("work dir");
    let strata = |args: &[&str]| {
        std::process::Command::new(strata_tests::bin("strata"))
            .env("STRATA_SCHEDULER", &url)
            .env_remove("STRATA_NAMESPACE")
            .args(args)
            .output()
            .expect("run strata")
    };
    let build_in = |ns: &str, ctx: &Path, extra: &[&str]| -> Value {
        let meta = work.path().join(format!("meta-{ns}.json"));
        let meta = meta.to_str().expect("utf-8");
        let mut args = vec![
            "build",
            "--progress",
            "plain",
            "--namespace",
            ns,
            "--metadata-file",
            meta,
        ];
        args.extend_from_slice(extra);
        args.push(ctx.to_str().expect("utf-8"));
        let o = strata(&args);
        assert!(
            o.status.success(),
            "build in {ns}:\n{}\n{}\n{}",
            text(&o),
            scheduler.proc.log(),
            worker.proc.log()
        );
        serde_json::from_slice(&std::fs::read(meta).expect("metadata")).expect("metadata JSON")
    };

    let app = work.path().join("app");
    write_ctx(
        &app,
        &format!(
            "FROM {base}\n\
             COPY f.txt /f.txt\n\
             RUN cat /f.txt > /g.txt\n"
        ),
        &[("f.txt", "f\n")],
    );
    let all = |m: &Value, status: &str| statuses(m).iter().all(|(_, s)| s == status);
    let a = build_in("team-a", &app, &[]);
    assert!(all(&a, "executed"), "team-a, cold: {a:#}");
    let b = build_in("team-b", &app, &[]);
    assert!(all(&b, "executed"), "team-b reused team-a's cache: {b:#}");
    let c = build_in("team-c", &app, &[]);
    assert!(all(&c, "cached"), "team-c shares team-a's cache: {c:#}");

    // Cache mounts: team-a's writes are not in team-b's mount.
    let writer = work.path().join("writer");
    write_ctx(
        &writer,
        &format!(
            "FROM {base}\n\
             RUN --mount=type=cache,id=pkgs,target=/c echo from-team-a > /c/note\n"
        ),
        &[],
    );
    build_in("team-a", &writer, &[]);
    let reader = work.path().join("reader");
    write_ctx(
        &reader,
        &format!(
            "FROM {base}\n\
             RUN --mount=type=cache,id=pkgs,target=/c \
                 (cat /c/note 2>/dev/null || echo empty) > /seen\n"
        ),
        &[],
    );
    for (ns, expected) in [("team-b", "empty\n"), ("team-a", "from-team-a\n")] {
        let out = work.path().join(format!("seen-{ns}"));
        build_in(
            ns,
            &reader,
            &["-o", &format!("type=local,dest={}", out.display())],
        );
        assert_eq!(
            std::fs::read_to_string(out.join("seen")).expect("/seen"),
            expected,
            "the cache mount as {ns} sees it"
        );
    }
}
