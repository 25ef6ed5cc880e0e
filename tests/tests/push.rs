//! Pushing to a registry from a farm on Redis and S3, with real processes
//! on loopback and a local `docker-registry`:
//!
//! - With `compression=zstd` the layers go up exactly as stored: the
//!   pushed manifest is the built one (same digest), its built layers
//!   zstd, the base layer as pulled.
//! - The base layer, pulled from repository `base/busybox`, is mounted
//!   into the target repository of the same registry, not uploaded (the
//!   registry's access log shows the mount answered 201).
//! - Layers the workers built are streamed from S3: the scheduler's own
//!   disk never gets a copy.
//! - A second push uploads nothing.
//! - By default, as `docker build --push`, the built layers go up gzip:
//!   converted once (and said so), the gzip copies kept in the farm's
//!   store, so a later push converts nothing; the gzip image, same image
//!   ID, is pulled back and runs.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use strata_tests::base_image::push_busybox;
use strata_tests::farm::{LocalFarm, Shared};
use strata_tests::oci_run::{runc_run, unpack_layout};
use strata_tests::registry::{TestRegistry, require_tool};
use strata_tests::services::{RedisServer, S3Server};

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

/// The manifest the registry holds for `reference`, as pushed.
fn registry_manifest(reference: &str) -> Value {
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]);
    assert!(raw.status.success(), "{}", text(&raw));
    serde_json::from_slice(&raw.stdout).expect("manifest JSON")
}

fn hex(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

fn short(digest: &str) -> &str {
    &hex(digest)[..12]
}

/// Builds `ctx` on `farm` with `extra` flags; returns the output and the
/// metadata file's JSON.
fn build(farm: &LocalFarm, ctx: &Path, extra: &[&str]) -> (String, Value) {
    let meta = tempfile::NamedTempFile::new().expect("metadata file");
    let meta_path = meta.path().to_str().expect("utf-8").to_string();
    let mut args = vec![
        "build",
        "--progress",
        "plain",
        "--metadata-file",
        &meta_path,
    ];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().expect("utf-8"));
    let o = farm.strata(&args);
    assert!(
        o.status.success(),
        "build failed:\n{}\n{}",
        text(&o),
        farm.logs()
    );
    let m = serde_json::from_slice(&std::fs::read(meta.path()).expect("metadata"))
        .expect("metadata JSON");
    (text(&o), m)
}

/// (digest, media type) of each layer of a manifest.
fn manifest_layers(manifest: &Value) -> Vec<(String, String)> {
    manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().expect("digest").to_string(),
                l["mediaType"].as_str().expect("mediaType").to_string(),
            )
        })
        .collect()
}

#[test]
fn a_push_mounts_the_base_sends_gzip_by_default_and_zstd_as_stored() {
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "base/busybox:latest");
    let redis = RedisServer::start();
    let s3 = S3Server::start("strata");
    let farm = LocalFarm::start_shared(1, 2, &Shared::on(&redis, &s3, "farm/"));
    let ctx = tempfile::tempdir().expect("context");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {base}\n\
             RUN echo built > /built\n\
             COPY greeting.txt /greeting.txt\n\
             CMD [\"cat\", \"/built\", \"/greeting.txt\"]\n"
        ),
    )
    .expect("Dockerfile");
    std::fs::write(ctx.path().join("greeting.txt"), "pushed as built\n").expect("file");
    let name = format!("{}/team/app:1", registry.host());

    // Built (not pushed): the local manifest digest and layers.
    let (_, built) = build(&farm, ctx.path(), &["-t", &name]);
    let local_digest = built["containerimage.digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let layers: Vec<(String, String)> = built["strata.layers"]
        .as_array()
        .expect("strata.layers")
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().expect("digest").to_string(),
                l["media_type"].as_str().expect("media type").to_string(),
            )
        })
        .collect();
    assert_eq!(layers.len(), 3, "{built:#}");
    let (base_layer, base_type) = &layers[0];
    assert!(base_type.ends_with("gzip"), "the base came gzip: {built:#}");
    for (_, media_type) in &layers[1..] {
        assert!(media_type.ends_with("+zstd"), "{built:#}");
    }

    // Pushed as stored to another repository of the base's registry.
    let (out, pushed) = build(
        &farm,
        ctx.path(),
        &["-t", &name, "-o", "type=registry,compression=zstd"],
    );
    assert_eq!(
        pushed["containerimage.digest"].as_str(),
        Some(local_digest.as_str()),
        "the pushed manifest is not the built one:\n{out}"
    );
    let manifest = registry_manifest(&name);
    assert_eq!(manifest_layers(&manifest), layers, "{manifest:#}");
    assert_eq!(
        manifest["config"]["digest"], built["containerimage.config.digest"],
        "{manifest:#}"
    );
    // The base layer was mounted from base/busybox, never uploaded.
    assert!(
        out.contains(&format!("{}: Mounted from base/busybox", short(base_layer))),
        "{out}"
    );
    assert!(
        !out.contains(&format!("{}: Pushing", short(base_layer))),
        "{out}"
    );
    let log = registry.log_text();
    let mounted = log.lines().any(|l| {
        l.contains("POST /v2/team/app/blobs/uploads/")
            && l.contains("mount=sha256")
            && l.contains(hex(base_layer))
            && l.contains("\" 201 ")
    });
    assert!(
        mounted,
        "no mount of {base_layer} in the registry log:\n{log}"
    );
    // The built layers went up as built, streamed from S3: the
    // scheduler's disk never held them.
    let scheduler_store = farm.dir().join("state/scheduler/store/blobs/sha256");
    for (digest, _) in &layers[1..] {
        assert!(out.contains(&format!("{}: Pushed", short(digest))), "{out}");
        assert!(
            !scheduler_store.join(hex(digest)).exists(),
            "the push copied {digest} to the scheduler's disk"
        );
    }
    assert!(!out.contains("Converting"), "{out}");

    // Pushed again: the registry has every blob, nothing is uploaded.
    let again = farm.strata(&["push", "--compression", "zstd", &name]);
    assert!(again.status.success(), "{}", text(&again));
    let again_text = text(&again);
    assert!(
        again_text.contains(&format!("pushed {name}@{local_digest}")),
        "{again_text}"
    );
    for (digest, _) in &layers {
        assert!(
            again_text.contains(&format!("{}: Layer already exists", short(digest))),
            "{again_text}"
        );
    }
    assert!(
        !again_text.contains("Pushing") && !again_text.contains("Pushed"),
        "{again_text}"
    );

    // By default (gzip, as docker build --push): the built layers
    // converted, the base layer as it came; same image ID.
    let gz_name = format!("{}/team/app-gzip:1", registry.host());
    let (out, gz) = build(&farm, ctx.path(), &["-t", &gz_name, "--push"]);
    for (digest, _) in &layers[1..] {
        assert!(
            out.contains(&format!(
                "{}: Converting to gzip (compression=gzip)",
                short(digest)
            )),
            "{out}"
        );
    }
    let gz_manifest = registry_manifest(&gz_name);
    let gz_layers = manifest_layers(&gz_manifest);
    assert_eq!(gz_layers.len(), 3, "{gz_manifest:#}");
    assert_eq!(&gz_layers[0], &layers[0], "{gz_manifest:#}");
    for (digest, media_type) in &gz_layers[1..] {
        assert!(
            media_type == "application/vnd.oci.image.layer.v1.tar+gzip",
            "{gz_manifest:#}"
        );
        assert!(!layers.iter().any(|(d, _)| d == digest), "{gz_manifest:#}");
    }
    assert_eq!(
        gz_manifest["config"]["digest"], built["containerimage.config.digest"],
        "{gz_manifest:#}"
    );
    assert_ne!(
        gz["containerimage.digest"].as_str(),
        Some(local_digest.as_str())
    );
    // The gzip copies were kept: pushing the image again (to a new
    // repository, so the layers do go up) converts nothing.
    let gz_again = format!("{}/team/app-gzip-again:1", registry.host());
    let o = farm.strata(&["push", &gz_name, &gz_again]);
    assert!(o.status.success(), "{}", text(&o));
    let o = text(&o);
    assert!(!o.contains("Converting"), "{o}");
    assert_eq!(
        manifest_layers(&registry_manifest(&gz_again)),
        gz_layers,
        "{o}"
    );

    // The gzip image is pulled back and runs.
    let work = tempfile::tempdir().expect("work dir");
    let layout = work.path().join("layout");
    let copy = skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{gz_name}"),
        &format!("oci:{}:app", layout.display()),
    ]);
    assert!(copy.status.success(), "{}", text(&copy));
    let bundle = work.path().join("bundle");
    let config = unpack_layout(&layout, &bundle.join("rootfs"));
    let run = runc_run(
        &bundle,
        &config,
        &format!("strata-push-test-{}", std::process::id()),
    );
    assert!(run.status.success(), "{}", text(&run));
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "built\npushed as built\n"
    );
}

/// Embedded mode: every `strata` command is its own process, so what a
/// build learnt while pulling its base (which repository holds the base
/// layer) must outlive it for a later `strata push` to mount the layer.
#[test]
fn a_later_push_mounts_what_an_earlier_build_pulled() {
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "base/busybox:latest");
    let home = tempfile::tempdir().expect("STRATA_HOME");
    let strata = |args: &[&str]| {
        Command::new(strata_tests::bin("strata"))
            .env("STRATA_HOME", home.path())
            .env_remove("STRATA_SCHEDULER")
            .args(args)
            .output()
            .expect("run strata")
    };
    let ctx = tempfile::tempdir().expect("context");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {base}\nRUN echo embedded > /built\n"),
    )
    .expect("Dockerfile");
    let meta = ctx.path().join("meta.json");
    let built = strata(&[
        "build",
        "--progress",
        "plain",
        "--metadata-file",
        meta.to_str().expect("utf-8"),
        "-t",
        "embedded/app:1",
        ctx.path().to_str().expect("utf-8"),
    ]);
    assert!(built.status.success(), "{}", text(&built));
    let m: Value = serde_json::from_slice(&std::fs::read(&meta).expect("metadata")).expect("JSON");
    let base_layer = m["strata.layers"][0]["digest"]
        .as_str()
        .expect("base layer");
    let local_digest = m["containerimage.digest"].as_str().expect("digest");

    let target = format!("{}/team/embedded:1", registry.host());
    let pushed = strata(&["push", "--compression", "zstd", "embedded/app:1", &target]);
    let out = text(&pushed);
    assert!(pushed.status.success(), "{out}");
    assert!(
        out.contains(&format!("{}: Mounted from base/busybox", short(base_layer))),
        "{out}"
    );
    assert!(
        out.contains(&format!("pushed {target}@{local_digest}")),
        "{out}"
    );
}
