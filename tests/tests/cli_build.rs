//! `strata build` in embedded mode, through the real binary: a fresh build,
//! a fully cached rebuild, a change that rebuilds only what follows it, a
//! failing step fixed and re-run with the earlier layers reused, and
//! `strata images` / `strata history` afterwards.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output};
use strata_tests::bin;
use strata_tests::procs::{mounts_under, runc_containers};

fn strata(home: &Path, args: &[&str]) -> Output {
    Command::new(bin("strata"))
        .env("STRATA_HOME", home)
        .env_remove("STRATA_SCHEDULER")
        .args(args)
        .output()
        .expect("run strata")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn context(dir: &Path, dockerfile: &str) {
    assert!(
        nix_root(),
        "embedded builds run containers: run the tests as root"
    );
    let rootfs = dir.join("rootfs/bin");
    if !rootfs.exists() {
        fs::create_dir_all(&rootfs).expect("mkdir");
        fs::copy("/bin/busybox", rootfs.join("busybox"))
            .expect("busybox-static is required: apt-get install -y busybox-static");
        for a in ["sh", "echo", "cat", "ls", "mkdir"] {
            symlink("busybox", rootfs.join(a)).expect("symlink");
        }
    }
    fs::write(dir.join("Dockerfile"), dockerfile).expect("write");
}

fn nix_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

const DOCKERFILE: &str = "FROM scratch\nCOPY rootfs/ /\nRUN echo base > /base\nCOPY app.txt /app/app.txt\nRUN cat /app/app.txt > /app/copy\nCMD [\"sh\"]\n";

fn count(s: &str, needle: &str) -> usize {
    s.matches(needle).count()
}

#[test]
fn build_cache_change_failure_and_views() {
    let home = tempfile::tempdir().expect("home");
    let ctx = tempfile::tempdir().expect("ctx");
    let c = ctx.path().to_str().expect("utf-8");
    context(ctx.path(), DOCKERFILE);
    fs::write(ctx.path().join("app.txt"), "v1\n").expect("write");

    let ids = tempfile::tempdir().expect("iid files");
    let iid = |n: &str| ids.path().join(n).to_str().expect("utf-8").to_string();
    let first = strata(
        home.path(),
        &[
            "build",
            "--progress",
            "plain",
            "--iidfile",
            &iid("1"),
            "-t",
            "app:1",
            c,
        ],
    );
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(count(&stderr(&first), " CACHED"), 0);
    assert_eq!(count(&stderr(&first), " DONE "), 4);

    let again = strata(
        home.path(),
        &[
            "build",
            "--progress",
            "plain",
            "--iidfile",
            &iid("2"),
            "-t",
            "app:1",
            c,
        ],
    );
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(count(&stderr(&again), " CACHED"), 4, "{}", stderr(&again));
    // Nothing changed, so neither did the image: same ID, as docker build.
    let read = |n: &str| fs::read_to_string(iid(n)).expect("iidfile");
    assert!(read("1").starts_with("sha256:"), "{}", read("1"));
    assert_eq!(read("1"), read("2"));

    // Changing the COPY source rebuilds that step and the one after it.
    fs::write(ctx.path().join("app.txt"), "v2\n").expect("write");
    let changed = strata(
        home.path(),
        &["build", "--progress", "plain", "-t", "app:2", c],
    );
    assert!(changed.status.success(), "{}", stderr(&changed));
    assert_eq!(
        count(&stderr(&changed), " CACHED"),
        2,
        "{}",
        stderr(&changed)
    );
    assert_eq!(count(&stderr(&changed), " DONE "), 2);
    // Only the changed file travelled to the scheduler.
    assert!(
        stderr(&changed).contains("uploaded 1 ("),
        "{}",
        stderr(&changed)
    );

    // A failing step: non-zero exit, the instruction and exit code named.
    context(
        ctx.path(),
        &DOCKERFILE.replace(
            "RUN cat /app/app.txt > /app/copy",
            "RUN echo broken; exit 7",
        ),
    );
    let failed = strata(home.path(), &["build", "--progress", "plain", c]);
    assert_eq!(failed.status.code(), Some(1));
    let err = stderr(&failed);
    assert!(
        err.contains("RUN echo broken; exit 7") && err.contains("exit code: 7"),
        "{err}"
    );
    assert!(err.contains("broken"), "the step's log is shown: {err}");
    // Fixed and re-run: every earlier step comes from the cache.
    context(
        ctx.path(),
        &DOCKERFILE.replace(
            "RUN cat /app/app.txt > /app/copy",
            "RUN echo fixed > /fixed",
        ),
    );
    let fixed = strata(
        home.path(),
        &["build", "--progress", "plain", "-t", "app:fixed", c],
    );
    assert!(fixed.status.success(), "{}", stderr(&fixed));
    assert_eq!(count(&stderr(&fixed), " CACHED"), 3, "{}", stderr(&fixed));

    let images = strata(home.path(), &["images"]);
    let out = String::from_utf8_lossy(&images.stdout);
    assert!(images.status.success());
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0][..3],
        ["REPOSITORY", "TAG", "IMAGE"],
        "images: {out}"
    );
    for tag in ["1", "2", "fixed"] {
        assert!(
            rows.iter()
                .any(|r| r.len() >= 3 && r[0] == "app" && r[1] == tag),
            "no app:{tag} in images: {out}"
        );
    }
    let history = strata(home.path(), &["history", "--no-trunc", "app:fixed"]);
    let out = String::from_utf8_lossy(&history.stdout);
    assert!(history.status.success(), "{}", stderr(&history));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("IMAGE"));
    assert!(
        lines[1].contains("CMD [\"sh\"]") && lines[1].contains("0B"),
        "{out}"
    );
    assert!(
        lines[2].contains("RUN /bin/sh -c echo fixed > /fixed # buildkit"),
        "{out}"
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains("COPY rootfs/ / # buildkit") && l.contains("MB")),
        "{out}"
    );

    // Archives in the compression asked for: OCI keeps the stored zstd
    // unless told otherwise; the image ID stays the same either way.
    let out_dir = tempfile::tempdir().expect("outputs");
    for (compression, suffix) in [("", "zstd"), (",compression=gzip", "gzip")] {
        let archive = out_dir.path().join(format!("app-{suffix}.tar"));
        let spec = format!("type=oci,dest={}{compression}", archive.display());
        let built = strata(
            home.path(),
            &[
                "build",
                "--progress",
                "plain",
                "--iidfile",
                &iid("oci"),
                "-o",
                &spec,
                c,
            ],
        );
        assert!(built.status.success(), "{}", stderr(&built));
        let raw = Command::new(strata_tests::registry::require_tool("skopeo", "skopeo"))
            .args([
                "inspect",
                "--raw",
                &format!("oci-archive:{}", archive.display()),
            ])
            .output()
            .expect("skopeo");
        assert!(
            raw.status.success(),
            "{}",
            String::from_utf8_lossy(&raw.stderr)
        );
        let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).expect("manifest");
        for l in manifest["layers"].as_array().expect("layers") {
            assert!(
                l["mediaType"].as_str().is_some_and(|m| m.ends_with(suffix)),
                "{manifest:#}"
            );
        }
        assert_eq!(
            manifest["config"]["digest"].as_str(),
            Some(read("oci").as_str())
        );
    }
}

#[test]
fn ctrl_c_in_an_embedded_build_leaves_no_step_running_behind_it() {
    use std::io::{BufRead as _, BufReader};
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let home = tempfile::tempdir().expect("home");
    let ctx = tempfile::tempdir().expect("ctx");
    // A sleep no other test runs, to find its process by.
    context(
        ctx.path(),
        "FROM scratch\nCOPY rootfs/ /\nRUN echo started && busybox sleep 293\n",
    );
    let mut child = Command::new(bin("strata"))
        .env("STRATA_HOME", home.path())
        .env_remove("STRATA_SCHEDULER")
        .args(["build", "--progress", "plain", "-t", "interrupted:latest"])
        .arg(ctx.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start strata build");
    let err_pipe = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !seen.iter().any(|l: &String| l.ends_with(" started")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("the step never started:\n{}", seen.join("\n")),
        }
    }
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -INT strata");
    let status = child.wait().expect("wait");
    seen.extend(rx.try_iter());
    assert_eq!(status.code(), Some(130), "{}", seen.join("\n"));
    // The moment strata is gone, so is everything of its step: the
    // container, its processes and its mounts.
    let home_dir = fs::canonicalize(home.path()).expect("home");
    assert_eq!(
        runc_containers(&home_dir.join("worker/exec/runc")),
        "",
        "a container is left"
    );
    let sleeping = Command::new("pgrep")
        .args(["-f", "sleep 293"])
        .output()
        .expect("pgrep");
    assert!(
        sleeping.stdout.is_empty(),
        "the step's process outlived strata: {}",
        String::from_utf8_lossy(&sleeping.stdout)
    );
    let mounts = mounts_under(&home_dir);
    assert!(mounts.is_empty(), "mounts are left: {mounts:#?}");
}

/// Builds two stages at once (nothing orders them) that mount one cache
/// with `sharing`, each failing if it finds the other inside, as apt-get
/// does with its lock file; returns what each saw in the cache's log.
fn two_stages_on_one_cache(sharing: &str) -> (String, String) {
    let home = tempfile::tempdir().expect("home");
    let ctx = tempfile::tempdir().expect("ctx");
    let step = |name: &str| {
        format!(
            "FROM base AS {name}\n\
             RUN --mount=type=cache,target=/cache,sharing={sharing} \
             if [ -e /cache/busy ]; then echo the other step is inside; exit 1; fi; \
             echo {name} > /cache/busy && busybox sleep 2 && busybox rm /cache/busy \
             && echo {name} >> /cache/log && cat /cache/log > /seen\n"
        )
    };
    let dockerfile = format!(
        "FROM scratch AS base\nCOPY rootfs/ /\n{}{}FROM base\n\
         COPY --from=one /seen /one\nCOPY --from=two /seen /two\n",
        step("one"),
        step("two")
    );
    context(ctx.path(), &dockerfile);
    let ctx_arg = ctx.path().to_str().expect("utf-8 path");
    let rootfs = ctx.path().join("out");
    let dest = format!("type=local,dest={}", rootfs.display());
    let out = strata(
        home.path(),
        &["build", "--progress", "plain", "-o", &dest, ctx_arg],
    );
    let err = stderr(&out);
    // A step that found the other inside failed the build.
    assert!(out.status.success(), "{err}");
    let one = fs::read_to_string(rootfs.join("one")).expect("one");
    let two = fs::read_to_string(rootfs.join("two")).expect("two");
    (one, two)
}

#[test]
fn steps_with_a_private_cache_mount_in_use_get_one_of_their_own() {
    let (one, two) = two_stages_on_one_cache("private");
    // Neither saw the other's line: the second to start had a new cache.
    assert_eq!((one.as_str(), two.as_str()), ("one\n", "two\n"));
}

#[test]
fn steps_locking_a_cache_mount_take_turns() {
    let (one, two) = two_stages_on_one_cache("locked");
    // One after the other: the second saw the first's line in the cache.
    let (first, second) = if one.lines().count() == 1 {
        (one, two)
    } else {
        (two, one)
    };
    assert_eq!(first.lines().count(), 1, "{first:?} {second:?}");
    assert_eq!(second.lines().count(), 2, "{first:?} {second:?}");
    assert!(second.starts_with(&first), "{first:?} {second:?}");
}

/// One stage fails while another runs and the last waits for both: as
/// with BuildKit the build stops at once, and a client following it sees
/// every step end exactly once: the failed one failed, the running one and
/// the waiting ones cancelled, in the plan's order at the end.
#[test]
fn a_failed_step_ends_every_other_step_of_the_build() {
    let home = tempfile::tempdir().expect("home");
    let ctx = tempfile::tempdir().expect("ctx");
    context(
        ctx.path(),
        "FROM scratch AS base\nCOPY rootfs/ /\n\
         FROM base AS slow\nRUN echo started; busybox sleep 60\n\
         FROM base AS bad\nRUN busybox sleep 2; exit 3\n\
         FROM base\nCOPY --from=slow /bin/sh /slow\nCOPY --from=bad /bin/sh /bad\n",
    );
    let began = std::time::Instant::now();
    let out = strata(
        home.path(),
        &[
            "build",
            "--progress",
            "json",
            ctx.path().to_str().expect("utf-8"),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        began.elapsed() < std::time::Duration::from_secs(45),
        "the running step was not stopped: {:?}",
        began.elapsed()
    );
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(err.lines())
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let plan: Vec<(String, String)> = events
        .iter()
        .find(|e| e["type"] == "build_started")
        .and_then(|e| e["steps"].as_array())
        .unwrap_or_else(|| panic!("no plan in {err}"))
        .iter()
        .map(|s| {
            let field = |k: &str| s[k].as_str().unwrap_or_default().to_string();
            (field("step_id"), field("instruction"))
        })
        .collect();
    let id_of = |needle: &str| {
        plan.iter()
            .find(|(_, i)| i.contains(needle))
            .unwrap_or_else(|| panic!("no step {needle:?} in {plan:?}"))
            .0
            .clone()
    };
    let terminal = ["step_done", "step_cached", "step_failed", "step_cancelled"];
    let ends = |id: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["step_id"] == id && terminal.contains(&e["type"].as_str().unwrap_or("")))
            .filter(|e| e["type"] != "step_failed" || e["will_retry"] == false)
            .map(|e| e["type"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(ends(&id_of("exit 3")), ["step_failed"], "{err}");
    let failed_step = events
        .iter()
        .find(|e| e["type"] == "step_failed" && e["step_id"] == id_of("exit 3").as_str())
        .expect("step_failed");
    assert_eq!(
        (
            failed_step["exit_code"].as_i64(),
            failed_step["code"].as_str()
        ),
        (Some(3), Some("step_failed")),
        "{err}"
    );
    assert_eq!(ends(&id_of("sleep 60")), ["step_cancelled"], "{err}");
    assert_eq!(ends(&id_of("/slow")), ["step_cancelled"], "{err}");
    assert_eq!(ends(&id_of("/bad")), ["step_cancelled"], "{err}");
    let failed = events
        .iter()
        .find(|e| e["type"] == "build_failed")
        .unwrap_or_else(|| panic!("no build_failed in {err}"));
    let outcomes: Vec<(String, String)> = failed["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|o| {
            let field = |k: &str| o[k].as_str().unwrap_or_default().to_string();
            (field("step_id"), field("status"))
        })
        .collect();
    let ids: Vec<&String> = outcomes.iter().map(|(id, _)| id).collect();
    assert_eq!(ids, plan.iter().map(|(id, _)| id).collect::<Vec<_>>());
    let status = |id: String| {
        outcomes
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    };
    assert_eq!(status(id_of("exit 3")), "failed");
    assert_eq!(status(id_of("sleep 60")), "cancelled");
    assert!(
        events
            .iter()
            .skip_while(|e| e["type"] != "build_failed")
            .count()
            == 1,
        "events after build_failed: {err}"
    );
}

/// `--label` and `--add-host`, as with `docker build`: the labels end up
/// in the image's config over the Dockerfile's, and RUN steps resolve the
/// extra host; buildx's `--cache-from` and `--load` are taken. A malformed
/// `--add-host` is refused before anything runs.
#[test]
fn label_and_add_host_flags_reach_the_image_and_its_steps() {
    let home = tempfile::tempdir().expect("home");
    let ctx = tempfile::tempdir().expect("ctx");
    context(
        ctx.path(),
        "FROM scratch\nCOPY rootfs/ /\nLABEL kept=1 over=dockerfile\nRUN cat /etc/hosts > /hosts\n",
    );
    let out_dir = tempfile::tempdir().expect("out");
    let archive = out_dir.path().join("image.tar");
    let root = out_dir.path().join("root");
    let ctx_arg = ctx.path().to_str().expect("utf-8");
    let o = strata(
        home.path(),
        &[
            "build",
            "--progress",
            "plain",
            "--label",
            "over=flag",
            "--label",
            "org.opencontainers.image.revision=abc123",
            "--add-host",
            "mirror.test:10.1.2.3",
            "--cache-from",
            "type=registry,ref=127.0.0.1:1/app:cache",
            "--load",
            "-o",
            &format!("type=docker,dest={}", archive.display()),
            "-o",
            &format!("type=local,dest={}", root.display()),
            ctx_arg,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // buildx's cache flags are taken, and said to be unused.
    assert!(
        stderr(&o).contains("--cache-from/--cache-to are not used"),
        "{}",
        stderr(&o)
    );
    let hosts = fs::read_to_string(root.join("hosts")).expect("/hosts");
    assert!(hosts.contains("10.1.2.3\tmirror.test\n"), "{hosts}");
    let unpacked = out_dir.path().join("archive");
    fs::create_dir(&unpacked).expect("mkdir");
    let tar = Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .expect("tar");
    assert!(tar.success());
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(unpacked.join("manifest.json")).expect("manifest.json"))
            .expect("json");
    let config_path = manifest[0]["Config"].as_str().expect("Config");
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(unpacked.join(config_path)).expect("config"))
            .expect("json");
    assert_eq!(
        config["config"]["Labels"],
        serde_json::json!({
            "kept": "1",
            "over": "flag",
            "org.opencontainers.image.revision": "abc123",
        })
    );

    let bad = strata(
        home.path(),
        &["build", "--add-host", "mirror.test", ctx_arg],
    );
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("--add-host \"mirror.test\": expected HOST:IP"),
        "{}",
        stderr(&bad)
    );
}
