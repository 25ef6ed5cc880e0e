//! Pruning the shared layer cache end to end: a farm of real processes
//! started by `deploy/local/up.sh` on a real Redis and a real S3 server
//! (s3s-fs), a local registry holding the base image.
//!
//! - `strata prune` running again and again while builds run never leaves
//!   a cache entry whose layer blob is gone from the bucket.
//! - `--keep-storage` keeps the most recently used entries and `--filter
//!   until=` keeps what was used recently.

use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use strata_tests::base_image::push_busybox;
use strata_tests::build_meta::{build, status_of, statuses, text, write_ctx};
use strata_tests::farm::{LocalFarm, Shared};
use strata_tests::registry::TestRegistry;
use strata_tests::services::{RedisServer, S3Server};

/// Every cache entry recorded in the bucket under `prefix`, and whether
/// its layer blob is in the bucket: (record file, layer digest, present).
fn entries_and_blobs(s3: &S3Server, prefix: &str) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for f in s3.objects(&format!("{prefix}objects/cache")) {
        let Ok(entry) = serde_json::from_slice::<Value>(&std::fs::read(&f).unwrap_or_default())
        else {
            continue;
        };
        let Some(digest) = entry["digest"].as_str() else {
            continue;
        };
        let hex = digest.trim_start_matches("sha256:");
        let present = !s3
            .objects(&format!("{prefix}blobs/sha256"))
            .iter()
            .all(|b| b.file_name().and_then(|n| n.to_str()) != Some(hex));
        out.push((f.display().to_string(), digest.to_string(), present));
    }
    out
}

#[test]
fn prune_running_while_builds_run_never_leaves_an_entry_without_its_blob() {
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let redis = RedisServer::start();
    let s3 = S3Server::start("strata-race");
    let farm = LocalFarm::start_shared(2, 2, &Shared::on(&redis, &s3, "farm/"));
    let work = tempfile::tempdir().expect("work dir");
    // The builder stages' layers are in no image: only their cache
    // entries hold them, so every prune removes entries and blobs, and
    // every rebuild makes the very same layers again (SOURCE_DATE_EPOCH),
    // which a worker finds in the store and does not upload: the race.
    let ctx = work.path().join("app");
    write_ctx(
        &ctx,
        &format!(
            "FROM {base} AS one\n\
             COPY a.txt /a.txt\n\
             RUN cat /a.txt > /a.copy && echo one >> /a.copy\n\
             FROM {base} AS two\n\
             COPY b.txt /b.txt\n\
             RUN cat /b.txt > /b.copy && echo two >> /b.copy\n\
             FROM {base}\n\
             COPY --from=one /a.copy /out/a\n\
             COPY --from=two /b.copy /out/b\n"
        ),
        &[("a.txt", "a\n"), ("b.txt", "b\n")],
    );
    let check = |out: &Path| {
        assert_eq!(
            std::fs::read_to_string(out.join("out/a")).expect("/out/a"),
            "a\none\n"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("out/b")).expect("/out/b"),
            "b\ntwo\n"
        );
    };
    let epoch = ["--build-arg", "SOURCE_DATE_EPOCH=0"];
    let building = AtomicBool::new(true);
    let prunes = AtomicUsize::new(0);
    let removed = AtomicUsize::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            while building.load(Ordering::SeqCst) {
                let o = farm.strata(&["prune"]);
                assert!(
                    o.status.success(),
                    "prune failed:\n{}\n{}",
                    text(&o),
                    farm.logs()
                );
                prunes.fetch_add(1, Ordering::SeqCst);
                if !text(&o).contains("Removed 0 cache entries") {
                    removed.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        for i in 0..8 {
            let out = work.path().join(format!("out-{i}"));
            let dest = format!("type=local,dest={}", out.display());
            let mut args = epoch.to_vec();
            args.extend(["-o", &dest]);
            build(&farm, &ctx, &args);
            check(&out);
        }
        building.store(false, Ordering::SeqCst);
    });
    assert!(
        removed.load(Ordering::SeqCst) >= 2,
        "prune ran {} times but removed entries only {} times: the builds did not race it",
        prunes.load(Ordering::SeqCst),
        removed.load(Ordering::SeqCst)
    );

    // No entry points at a missing blob.
    let entries = entries_and_blobs(&s3, "farm/");
    let missing: Vec<_> = entries.iter().filter(|e| !e.2).collect();
    assert!(
        missing.is_empty(),
        "entries without their blob: {missing:#?}"
    );

    // Rebuilds are correct, then fully cached.
    let out = work.path().join("out-again");
    let dest = format!("type=local,dest={}", out.display());
    let mut args = epoch.to_vec();
    args.extend(["-o", &dest]);
    build(&farm, &ctx, &args);
    check(&out);
    let out = work.path().join("out-cached");
    let dest = format!("type=local,dest={}", out.display());
    let mut args = epoch.to_vec();
    args.extend(["-o", &dest]);
    let m = build(&farm, &ctx, &args);
    assert!(
        statuses(&m).iter().all(|(_, s)| s == "cached"),
        "a rebuild with no prune in between: {m:#}"
    );
    check(&out);
}

/// Builds a one-RUN Dockerfile writing `bytes` random bytes, named
/// `name` (a distinct step each), in namespace `ns`.
fn random_layer(farm: &LocalFarm, work: &Path, base: &str, ns: &str, name: &str) -> Value {
    let ctx = work.join(name);
    write_ctx(
        &ctx,
        &format!(
            "FROM {base}\n\
             RUN head -c 300000 /dev/urandom > /{name}\n"
        ),
        &[],
    );
    build(farm, &ctx, &["--namespace", ns])
}

#[test]
fn prune_keep_storage_keeps_the_most_recently_used_and_until_what_is_recent() {
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let redis = RedisServer::start();
    let s3 = S3Server::start("strata-prune");
    let farm = LocalFarm::start_shared(1, 2, &Shared::on(&redis, &s3, ""));
    let work = tempfile::tempdir().expect("work dir");
    let status = |m: &Value| status_of(m, "RUN head");

    // --keep-storage: three ~300 kB layers used one after the other;
    // 700 kB keeps the two most recently used.
    for name in ["p1", "p2", "p3"] {
        random_layer(&farm, work.path(), &base, "ks", name);
        std::thread::sleep(Duration::from_millis(1100));
    }
    // p1 used again: now p2 is the least recently used.
    assert_eq!(
        status(&random_layer(&farm, work.path(), &base, "ks", "p1")),
        "cached"
    );
    let o = farm.strata(&["prune", "--namespace", "ks", "--keep-storage", "700kB"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Removed 1 cache entries"), "{}", text(&o));
    for (name, expected) in [("p3", "cached"), ("p1", "cached"), ("p2", "executed")] {
        let m = random_layer(&farm, work.path(), &base, "ks", name);
        assert_eq!(status(&m), expected, "{name} after --keep-storage 700kB");
    }

    // --filter until=: q1 and q2 old, q3 used just now.
    for name in ["q1", "q2"] {
        random_layer(&farm, work.path(), &base, "until", name);
    }
    std::thread::sleep(Duration::from_secs(8));
    random_layer(&farm, work.path(), &base, "until", "q3");
    let o = farm.strata(&["prune", "--namespace", "until", "--filter", "until=6s"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Removed 2 cache entries"), "{}", text(&o));
    for (name, expected) in [("q3", "cached"), ("q1", "executed"), ("q2", "executed")] {
        let m = random_layer(&farm, work.path(), &base, "until", name);
        assert_eq!(status(&m), expected, "{name} after until=6s");
    }

    // Both: what until keeps counts toward --keep-storage. r3 is too new
    // to go; of r1 and r2 only the more recent fits next to it.
    for name in ["r1", "r2"] {
        random_layer(&farm, work.path(), &base, "both", name);
        std::thread::sleep(Duration::from_millis(1100));
    }
    std::thread::sleep(Duration::from_secs(6));
    random_layer(&farm, work.path(), &base, "both", "r3");
    let o = farm.strata(&[
        "prune",
        "--namespace",
        "both",
        "--filter",
        "until=4s",
        "--keep-storage",
        "700kB",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Removed 1 cache entries"), "{}", text(&o));
    for (name, expected) in [("r3", "cached"), ("r2", "cached"), ("r1", "executed")] {
        let m = random_layer(&farm, work.path(), &base, "both", name);
        assert_eq!(status(&m), expected, "{name} after until=4s and 700kB");
    }

    // A namespace's prune leaves the others' cache alone.
    let m = random_layer(&farm, work.path(), &base, "ks", "p3");
    assert_eq!(
        status(&m),
        "cached",
        "ks after the other namespaces' prunes"
    );
}
