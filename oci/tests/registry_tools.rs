//! What we push is what real tools see: skopeo inspects and copies it,
//! umoci unpacks it into a runnable rootfs, and what skopeo writes in
//! Docker schema 2 we pull back.

mod common;

use std::path::Path;
use std::process::Command;

use common::image::{busybox_image, busybox_layer};
use common::registry::TestRegistry;
use common::require_tool;
use strata_oci::registry::{DOCKER_MANIFEST, ImageRef, ManifestFormat, Platform};

fn run(program: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}\n{}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[tokio::test]
async fn skopeo_and_umoci_see_what_we_pushed() {
    let skopeo = require_tool("skopeo", "skopeo");
    let umoci = require_tool("umoci", "umoci");
    let registry = TestRegistry::start().await;
    let scratch = registry.scratch();
    let client = common::client(None, &scratch);
    let layer = busybox_layer();
    let image = busybox_image(&layer, "amd64", ManifestFormat::Oci);
    let target = ImageRef::parse(&format!("{}/busybox:latest", registry.host())).unwrap();
    let pushed = client.push_image(&target, &image).await.expect("push");

    let url = format!("docker://{}/busybox:latest", registry.host());
    let inspect: serde_json::Value =
        serde_json::from_slice(&run(&skopeo, &["inspect", "--tls-verify=false", &url]))
            .expect("skopeo inspect prints JSON");
    assert_eq!(
        inspect["Digest"],
        pushed.manifest_digest.to_string(),
        "{inspect}"
    );
    assert_eq!(inspect["Architecture"], "amd64", "{inspect}");
    assert_eq!(inspect["Os"], "linux", "{inspect}");
    assert_eq!(
        inspect["Layers"],
        serde_json::json!([layer.descriptor().digest().to_string()]),
        "{inspect}"
    );
    let raw = run(&skopeo, &["inspect", "--raw", "--tls-verify=false", &url]);
    assert_eq!(raw, pushed.manifest_raw, "skopeo sees our manifest bytes");

    // skopeo copies it into an OCI layout, umoci unpacks that, and the
    // rootfs runs.
    let policy = scratch.join("policy.json");
    std::fs::write(
        &policy,
        br#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let layout = scratch.join("layout");
    let policy_arg = format!("--policy={}", policy.display());
    let layout_arg = format!("oci:{}:latest", layout.display());
    run(
        &skopeo,
        &[
            &policy_arg,
            "copy",
            "--src-tls-verify=false",
            &url,
            &layout_arg,
        ],
    );
    let bundle = scratch.join("bundle");
    let image_arg = format!("{}:latest", layout.display());
    run(
        &umoci,
        &[
            "unpack",
            "--image",
            &image_arg,
            &bundle.display().to_string(),
        ],
    );
    let rootfs = bundle.join("rootfs");
    let sh = std::fs::read_link(rootfs.join("bin/sh")).expect("bin/sh is a symlink");
    assert_eq!(sh, Path::new("busybox"));
    let echoed = run(&rootfs.join("bin/busybox"), &["echo", "strata"]);
    assert_eq!(echoed, b"strata\n");

    // Docker schema 2, as we push it and as skopeo writes it.
    let docker_target = target.with_tag("docker").unwrap();
    let docker = client
        .push_image(
            &docker_target,
            &busybox_image(&layer, "amd64", ManifestFormat::Docker),
        )
        .await
        .expect("push schema 2");
    assert_eq!(docker.manifest_media_type, DOCKER_MANIFEST);
    let docker_url = format!("docker://{}/busybox:docker", registry.host());
    let inspect: serde_json::Value = serde_json::from_slice(&run(
        &skopeo,
        &["inspect", "--tls-verify=false", &docker_url],
    ))
    .unwrap();
    assert_eq!(
        inspect["Digest"],
        docker.manifest_digest.to_string(),
        "{inspect}"
    );

    let converted_url = format!("docker://{}/converted:latest", registry.host());
    run(
        &skopeo,
        &[
            &policy_arg,
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--format=v2s2",
            &url,
            &converted_url,
        ],
    );
    let converted = client
        .resolve(
            &ImageRef::parse(&format!("{}/converted:latest", registry.host())).unwrap(),
            &Platform::linux_amd64(),
        )
        .await
        .expect("pull what skopeo wrote");
    assert_eq!(converted.manifest_media_type, DOCKER_MANIFEST);
    assert_eq!(converted.layers.len(), 1);
    assert_eq!(converted.layers[0].digest(), layer.descriptor().digest());
    let mut bytes = Vec::new();
    client
        .copy_blob(&converted.reference, &converted.layers[0], &mut bytes)
        .await
        .expect("pull the converted layer");
    assert_eq!(bytes, layer.gz);
}
