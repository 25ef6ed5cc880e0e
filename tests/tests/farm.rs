//! The farm end to end, with real processes on loopback: a scheduler and
//! two `strata-worker`s started by `deploy/local/up.sh`, a local registry
//! holding the base image. A multi-stage build whose independent stages
//! run on both workers, its step log complete and in order, the image
//! pushed (skopeo sees the same digest), run with runc, saved as a docker
//! archive skopeo reads, and a failing step reported with its exit code.

use std::path::Path;
use std::process::{Command, Output};
use strata_tests::base_image::push_busybox;
use strata_tests::farm::LocalFarm;
use strata_tests::oci_run::{runc_run, unpack_layout};
use strata_tests::procs::runc_containers;
use strata_tests::registry::{TestRegistry, require_tool};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn skopeo(args: &[&str]) -> Output {
    Command::new(require_tool("skopeo", "skopeo"))
        .args(args)
        .output()
        .expect("run skopeo")
}

const LINES: usize = 300;

fn dockerfile(base: &str) -> String {
    format!(
        "FROM {base} AS base\n\
         RUN echo base > /base\n\
         \n\
         FROM base AS a\n\
         RUN i=1; while [ $i -le {LINES} ]; do echo line-$i; i=$((i+1)); done; busybox sleep 2; echo a > /a\n\
         \n\
         FROM base AS b\n\
         RUN busybox sleep 2; echo b > /b\n\
         \n\
         FROM base\n\
         COPY --from=a /a /a\n\
         COPY --from=b /b /b\n\
         COPY greeting.txt /greeting.txt\n\
         CMD [\"cat\", \"/base\", \"/a\", \"/b\", \"/greeting.txt\"]\n"
    )
}

/// The log lines of the step whose instruction contains `needle`, in the
/// order `--progress plain` printed them.
fn step_lines(plain: &str, needle: &str) -> Vec<String> {
    let number = plain
        .lines()
        .find(|l| l.contains(needle) && l.contains(" #"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no step line with {needle:?} in:\n{plain}"))
        .to_string();
    plain
        .lines()
        .filter_map(|l| {
            let mut parts = l.trim_start().splitn(3, ' ');
            let (_, n, rest) = (parts.next()?, parts.next()?, parts.next()?);
            (n == number && rest.starts_with("line-")).then(|| rest.to_string())
        })
        .collect()
}

#[test]
fn multi_stage_build_on_two_workers_push_run_save() {
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let farm = LocalFarm::start(2, 1);
    let ctx = tempfile::tempdir().expect("context");
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile(&base)).expect("Dockerfile");
    std::fs::write(ctx.path().join("greeting.txt"), "hello from the farm\n").expect("file");
    let out_dir = tempfile::tempdir().expect("outputs");
    let meta = out_dir.path().join("metadata.json");
    let name = format!("{}/farm/app:1", registry.host());
    let c = ctx.path().to_str().expect("utf-8 path");

    let built = farm.strata(&[
        "build",
        "--progress",
        "plain",
        "--metadata-file",
        meta.to_str().expect("utf-8"),
        "-t",
        &name,
        // Pushed as stored (a default push converts to gzip, as docker
        // build --push; tests/push.rs covers that).
        "-o",
        "type=registry,compression=zstd",
        c,
    ]);
    assert!(
        built.status.success(),
        "build failed:\n{}\n{}",
        text(&built),
        farm.logs()
    );
    let plain = text(&built);

    // The two independent stages ran at the same time on different workers.
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta).expect("metadata")).expect("metadata JSON");
    let steps = m["strata.steps"].as_array().expect("strata.steps");
    let worker_of = |needle: &str| {
        steps
            .iter()
            .find(|s| {
                s["instruction"]
                    .as_str()
                    .is_some_and(|i| i.contains(needle))
            })
            .and_then(|s| s["worker_id"].as_str())
            .unwrap_or_else(|| panic!("no step {needle:?} in {m:#}"))
            .to_string()
    };
    let (wa, wb) = (worker_of("line-$i"), worker_of("echo b > /b"));
    assert!(!wa.is_empty() && !wb.is_empty(), "{m:#}");
    assert_ne!(wa, wb, "stages a and b ran on the same worker: {m:#}");
    assert!(steps.iter().all(|s| s["status"] == "executed"), "{m:#}");

    // Every line of stage a's log arrived, in order.
    let expected: Vec<String> = (1..=LINES).map(|i| format!("line-{i}")).collect();
    assert_eq!(step_lines(&plain, "line-$i"), expected, "{plain}");

    // The pushed image is the built one.
    let digest = m["containerimage.digest"].as_str().expect("digest");
    let inspect = skopeo(&["inspect", "--tls-verify=false", &format!("docker://{name}")]);
    assert!(inspect.status.success(), "{}", text(&inspect));
    let seen: serde_json::Value = serde_json::from_slice(&inspect.stdout).expect("skopeo JSON");
    assert_eq!(seen["Digest"].as_str(), Some(digest), "{seen:#}");
    // compression=zstd: every layer went up as stored, the built ones
    // zstd, the base one as it was pulled (gzip); the image ID is the
    // built one.
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{name}"),
    ]);
    let raw: serde_json::Value = serde_json::from_slice(&raw.stdout).expect("manifest JSON");
    let pushed_layers: Vec<(&str, &str)> = raw["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            let field = |k: &str| l[k].as_str().unwrap_or_default();
            (field("digest"), field("mediaType"))
        })
        .collect();
    let built_layers: Vec<(&str, &str)> = m["strata.layers"]
        .as_array()
        .expect("strata.layers")
        .iter()
        .map(|l| {
            let field = |k: &str| l[k].as_str().unwrap_or_default();
            (field("digest"), field("media_type"))
        })
        .collect();
    assert_eq!(pushed_layers, built_layers, "{raw:#}");
    assert!(pushed_layers[0].1.ends_with("gzip"), "{raw:#}");
    assert!(
        pushed_layers[1..].iter().all(|(_, t)| t.ends_with("+zstd")),
        "{raw:#}"
    );
    assert_eq!(
        raw["config"]["digest"], m["containerimage.config.digest"],
        "{raw:#}"
    );

    // Pulled back and run with runc, it prints what its CMD says.
    let layout = out_dir.path().join("layout");
    let copy = skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{name}"),
        &format!("oci:{}:app", layout.display()),
    ]);
    assert!(copy.status.success(), "{}", text(&copy));
    let bundle = out_dir.path().join("bundle");
    let config = unpack_layout(&layout, &bundle.join("rootfs"));
    let run = runc_run(
        &bundle,
        &config,
        &format!("strata-farm-test-{}", std::process::id()),
    );
    assert!(run.status.success(), "{}", text(&run));
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "base\na\nb\nhello from the farm\n"
    );

    // `strata save` writes a docker archive skopeo reads, with the same tree.
    let archive = out_dir.path().join("app.tar");
    let save = farm.strata(&["save", &name, "-o", archive.to_str().expect("utf-8")]);
    assert!(save.status.success(), "{}", text(&save));
    let layout2 = out_dir.path().join("layout2");
    let copy = skopeo(&[
        "copy",
        &format!("docker-archive:{}", archive.display()),
        &format!("oci:{}:app", layout2.display()),
    ]);
    assert!(copy.status.success(), "{}", text(&copy));
    let rootfs2 = out_dir.path().join("saved-rootfs");
    let saved = unpack_layout(&layout2, &rootfs2);
    for (file, content) in [("a", "a\n"), ("b", "b\n"), ("base", "base\n")] {
        assert_eq!(
            std::fs::read_to_string(rootfs2.join(file)).expect("file in the saved image"),
            content
        );
    }
    assert_eq!(saved["rootfs"]["diff_ids"], config["rootfs"]["diff_ids"]);

    // The full log stays available after the fact.
    let build_id = m["strata.build_id"].as_str().expect("build id");
    let logs = farm.strata(&["logs", build_id]);
    assert!(logs.status.success(), "{}", text(&logs));
    assert!(
        text(&logs).contains(&format!("line-{LINES}")),
        "{}",
        text(&logs)
    );

    // Both workers are listed.
    let workers = text(&farm.strata(&["workers"]));
    assert!(workers.contains(&wa) && workers.contains(&wb), "{workers}");

    failing_step_reports_exit_code(&farm, &base, out_dir.path());
    cancel_frees_the_worker(&farm, &base, out_dir.path());
}

fn cancel_frees_the_worker(farm: &LocalFarm, base: &str, dir: &Path) {
    let ctx = dir.join("long");
    std::fs::create_dir_all(&ctx).expect("context");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nRUN echo started; busybox sleep 300\n"),
    )
    .expect("Dockerfile");
    let build = Command::new(strata_tests::bin("strata"))
        .env("STRATA_SCHEDULER", &farm.url)
        .args(["build", "--progress", "plain"])
        .arg(&ctx)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start a long build");
    // Wait until the step runs on a worker, then cancel by build id.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let id = loop {
        let builds = text(&farm.strata(&["builds"]));
        if let Some(line) = builds.lines().find(|l| l.contains("running")) {
            let workers = text(&farm.strata(&["workers"]));
            if workers
                .lines()
                .any(|l| l.split_whitespace().nth(4) == Some("1"))
            {
                break line.split_whitespace().next().expect("id").to_string();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the build never ran:\n{builds}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    // Its container runs (which the checks below then see gone).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !worker_holdings(farm)
        .iter()
        .any(|(c, m)| !c.is_empty() && !m.is_empty())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the running step shows no container and mount on any worker: {:?}",
            worker_holdings(farm)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let started = std::time::Instant::now();
    let cancel = farm.strata(&["cancel", &id]);
    assert!(cancel.status.success(), "{}", text(&cancel));
    let out = build.wait_with_output().expect("build exits");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "cancel took {:?}",
        started.elapsed()
    );
    // On the workers themselves: no container left, no mount.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let held = worker_holdings(farm);
        if held.iter().all(|(c, m)| c.is_empty() && m.is_empty()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "10 s after the cancel a worker still holds the step: {held:?}\n{}",
            farm.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // The job slot is free again on every worker.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let workers = text(&farm.strata(&["workers"]));
        let busy = workers
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(4) != Some("0"));
        if !busy {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a worker is still busy:\n{workers}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let builds = text(&farm.strata(&["builds"]));
    assert!(
        builds
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("cancelled")),
        "{builds}"
    );
}

/// Per worker of the farm (`state/worker-N`): the runc containers under
/// its runc root and the mounts under its state directory.
fn worker_holdings(farm: &LocalFarm) -> Vec<(String, Vec<String>)> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let mut out = Vec::new();
    for e in std::fs::read_dir(farm.dir().join("state")).expect("farm state") {
        let path = e.expect("entry").path();
        if !path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("worker-"))
        {
            continue;
        }
        let state = std::fs::canonicalize(&path).expect("worker state");
        let needle = state.to_str().expect("utf-8").to_string();
        out.push((
            runc_containers(&state.join("exec/runc")),
            mountinfo
                .lines()
                .filter(|l| l.contains(&needle))
                .map(String::from)
                .collect(),
        ));
    }
    assert!(
        !out.is_empty(),
        "no worker state under {}",
        farm.dir().display()
    );
    out
}

fn failing_step_reports_exit_code(farm: &LocalFarm, base: &str, dir: &Path) {
    let ctx = dir.join("failing");
    std::fs::create_dir_all(&ctx).expect("context");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nRUN echo before\nRUN echo about to fail; exit 7\n"),
    )
    .expect("Dockerfile");
    let out = farm.strata(&["build", "--progress", "plain", ctx.to_str().expect("utf-8")]);
    assert!(!out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("exit code: 7"), "{t}");
    assert!(t.contains("about to fail"), "{t}");
    assert!(t.contains("Dockerfile:3"), "{t}");
}
