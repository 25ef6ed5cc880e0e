//! Embedded mode end to end: a multi-stage Dockerfile built in-process on
//! runc and overlayfs, from a context holding a static busybox; the image's
//! history, config and flattened tree are what `docker build` gives.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;
use strata_client::embedded::{BuildSpec, Embedded, Event};
use strata_frontend::plan::PlanOptions;
use strata_oci::layer::{UnpackOptions, unpack};
use tokio::sync::mpsc;

const APPLETS: &[&str] = &[
    "sh", "echo", "mkdir", "cat", "ls", "rm", "touch", "id", "sleep", "test", "[",
];

fn busybox() -> &'static Path {
    assert!(
        nix::unistd::geteuid().is_root(),
        "embedded builds run containers: run the tests as root"
    );
    let p = Path::new("/bin/busybox");
    assert!(
        p.is_file(),
        "busybox not found: apt-get install -y busybox-static"
    );
    p
}

fn context(dir: &Path) {
    let root = dir.join("rootfs");
    fs::create_dir_all(root.join("bin")).expect("mkdir");
    fs::create_dir_all(root.join("etc")).expect("mkdir");
    fs::copy(busybox(), root.join("bin/busybox")).expect("copy busybox");
    for a in APPLETS {
        symlink("busybox", root.join("bin").join(a)).expect("symlink");
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .expect("write");
    fs::write(root.join("etc/group"), "root:x:0:\napp:x:1000:\n").expect("write");
    fs::write(dir.join("app.txt"), "application\n").expect("write");
    fs::write(dir.join("secret.key"), "do not ship\n").expect("write");
    fs::write(dir.join(".dockerignore"), "secret.key\n").expect("write");
    fs::write(
        dir.join("Dockerfile"),
        "FROM scratch AS base\n\
         COPY rootfs/ /\n\
         RUN mkdir /data && echo hi > /data/x && rm /bin/ls\n\
         FROM base AS other\n\
         RUN echo other > /other\n\
         FROM base\n\
         COPY --from=other /other /other\n\
         COPY --chown=app:app app.txt /app/\n\
         WORKDIR /app\n\
         ENV A=1\n\
         USER app\n\
         RUN id -u > /app/uid\n\
         CMD [\"sh\"]\n",
    )
    .expect("write");
}

#[tokio::test]
async fn multi_stage_build_produces_docker_equivalent_image() {
    let ctx = tempfile::tempdir().expect("ctx");
    context(ctx.path());
    let state = tempfile::tempdir().expect("state");
    let builder = Embedded::open(state.path(), Default::default())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let spec = BuildSpec {
        dockerfile: fs::read(ctx.path().join("Dockerfile")).expect("read"),
        dockerfile_name: "Dockerfile".into(),
        context: ctx.path().to_path_buf(),
        options: PlanOptions::default(),
        secrets: BTreeMap::new(),
        source_date_epoch: Some(1_700_000_000),
    };
    let (tx, mut rx) = mpsc::channel(256);
    let collect = tokio::spawn(async move {
        let mut v = Vec::new();
        while let Some(e) = rx.recv().await {
            v.push(e);
        }
        v
    });
    let out = builder
        .build(&spec, &tx)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    drop(tx);
    let events = collect.await.expect("events");
    let started = events
        .iter()
        .filter(|e| matches!(e, Event::StepStarted { .. }))
        .count();
    assert_eq!(started, out.plan.steps.len());

    let config: serde_json::Value = serde_json::from_slice(&out.image.config).expect("config");
    let history: Vec<&str> = config["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["created_by"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        history,
        vec![
            "COPY rootfs/ / # buildkit",
            "RUN /bin/sh -c mkdir /data && echo hi > /data/x && rm /bin/ls # buildkit",
            "COPY /other /other # buildkit",
            "COPY --chown=app:app app.txt /app/ # buildkit",
            "WORKDIR /app",
            "ENV A=1",
            "USER app",
            "RUN /bin/sh -c id -u > /app/uid # buildkit",
            "CMD [\"sh\"]",
        ]
    );
    assert_eq!(config["config"]["User"], "app");
    assert_eq!(config["config"]["WorkingDir"], "/app");
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().map(Vec::len),
        Some(out.image.layers.len())
    );

    let flat = tempfile::tempdir().expect("flat");
    for l in &out.image.layers {
        let blob = fs::File::open(builder.worker().store().blob_path(&l.digest).expect("path"))
            .expect("blob");
        unpack(blob, flat.path(), &UnpackOptions::default()).expect("unpack");
    }
    let root = flat.path();
    assert_eq!(fs::read_to_string(root.join("data/x")).expect("x"), "hi\n");
    assert_eq!(
        fs::read_to_string(root.join("other")).expect("other"),
        "other\n"
    );
    assert!(!root.join("bin/ls").exists());
    assert_eq!(
        fs::read_to_string(root.join("app/uid")).expect("uid"),
        "1000\n"
    );
    let app = fs::metadata(root.join("app/app.txt")).expect("app.txt");
    assert_eq!((app.uid(), app.gid()), (1000, 1000));
    assert!(!root.join("secret.key").exists() && !root.join("app/secret.key").exists());
    let busy = fs::metadata(root.join("bin/busybox")).expect("busybox");
    assert_eq!(
        (busy.uid(), busy.gid()),
        (0, 0),
        "context files are owned by root"
    );
}

/// Each step waits (up to 10 s) for a file the other one writes into a
/// shared cache mount: both see each other only if they run at once.
const RENDEZVOUS: &str = "FROM scratch AS base\n\
COPY rootfs/ /\n\
FROM base AS a\n\
RUN --mount=type=cache,target=/sync,id=sync touch /sync/a; i=0; while [ ! -f /sync/b ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; if [ -f /sync/b ]; then echo met > /a; else echo alone > /a; fi\n\
FROM base AS b\n\
RUN --mount=type=cache,target=/sync,id=sync touch /sync/b; i=0; while [ ! -f /sync/a ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; if [ -f /sync/a ]; then echo met > /b; else echo alone > /b; fi\n\
FROM base\n\
COPY --from=a /a /a\n\
COPY --from=b /b /b\n";

#[tokio::test]
async fn independent_stages_run_at_the_same_time() {
    let ctx = tempfile::tempdir().expect("ctx");
    context(ctx.path());
    fs::write(ctx.path().join("Dockerfile"), RENDEZVOUS).expect("write");
    let state = tempfile::tempdir().expect("state");
    let builder = Embedded::open(state.path(), Default::default())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let spec = BuildSpec {
        dockerfile: RENDEZVOUS.as_bytes().to_vec(),
        dockerfile_name: "Dockerfile".into(),
        context: ctx.path().to_path_buf(),
        options: PlanOptions::default(),
        secrets: BTreeMap::new(),
        source_date_epoch: None,
    };
    let (tx, mut rx) = mpsc::channel(256);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let out = builder
        .build(&spec, &tx)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let flat = tempfile::tempdir().expect("flat");
    for l in &out.image.layers {
        let blob = fs::File::open(builder.worker().store().blob_path(&l.digest).expect("path"))
            .expect("blob");
        unpack(blob, flat.path(), &UnpackOptions::default()).expect("unpack");
    }
    assert_eq!(
        fs::read_to_string(flat.path().join("a")).expect("a"),
        "met\n"
    );
    assert_eq!(
        fs::read_to_string(flat.path().join("b")).expect("b"),
        "met\n"
    );
}
