//! A tiny base image for builds in whole-system tests: `/bin/busybox` from
//! Debian's `busybox-static` and applet symlinks, as one deterministic gzip
//! layer, pushed to a [`TestRegistry`](crate::registry::TestRegistry).
//! Adapted from `oci/tests/common/image.rs`.

use std::io::Write as _;

use flate2::Compression;
use flate2::write::GzEncoder;
use oci_spec::image::{Descriptor, MediaType};
use strata_oci::registry::{
    BlobSource, BlobUpload, ImagePush, ImageRef, ManifestFormat, RegistryClient, RegistryConfig,
    sha256_digest,
};

use crate::registry::{TestRegistry, require_tool};

/// The applets linked to busybox in `/bin`.
pub const APPLETS: &[&str] = &[
    "cat", "echo", "ls", "mkdir", "rm", "sh", "touch", "true", "wc",
];

/// The `created_by` of the base image's only history entry.
pub const BASE_CREATED_BY: &str = "strata tests: busybox-static base layer";

/// Builds the busybox image for this machine's architecture and pushes it
/// to `registry` as `name` (`repository:tag`); returns the reference to
/// use in `FROM`, e.g. `127.0.0.1:PORT/busybox:latest`.
pub fn push_busybox(registry: &TestRegistry, name: &str) -> String {
    let (gz, diff_id) = busybox_layer();
    let config = serde_json::json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": { "Cmd": ["/bin/sh"], "Env": ["PATH=/bin"] },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created_by": BASE_CREATED_BY }],
    });
    let image = ImagePush {
        format: ManifestFormat::Oci,
        config: serde_json::to_vec(&config).expect("serialise config"),
        layers: vec![BlobUpload {
            descriptor: Descriptor::new(
                MediaType::ImageLayerGzip,
                gz.len() as u64,
                sha256_digest(&gz),
            ),
            source: BlobSource::Bytes(gz.into()),
            mount_from: None,
        }],
        annotations: Default::default(),
    };
    let reference = format!("{}/{name}", registry.host());
    let target = ImageRef::parse(&reference).expect("base image reference");
    // An empty credentials file, so the push never reads the user's.
    let docker_config = registry.scratch().join("empty-docker-config.json");
    std::fs::write(&docker_config, b"{}").expect("write empty config.json");
    let client = RegistryClient::new(RegistryConfig {
        insecure: Vec::new(),
        docker_config: Some(docker_config),
    })
    .expect("registry client");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime
        .block_on(client.push_image(&target, &image))
        .unwrap_or_else(|e| {
            panic!(
                "push {reference}: {e}\nregistry log:\n{}",
                registry.log_text()
            )
        });
    reference
}

/// The OCI name of this machine's architecture.
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The gzip layer and its diffID: `bin/`, `bin/busybox`, `bin/<applet>` →
/// `busybox`, owned by root with mtime 0, so its digest never changes.
fn busybox_layer() -> (Vec<u8>, String) {
    let busybox = require_tool("busybox", "busybox-static");
    let binary = std::fs::read(&busybox).expect("read busybox");
    let mut tar = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    };
    let mut dir = header(tar::EntryType::Directory, 0o755, 0);
    tar.append_data(&mut dir, "bin/", std::io::empty())
        .expect("tar bin/");
    let mut file = header(tar::EntryType::Regular, 0o755, binary.len() as u64);
    tar.append_data(&mut file, "bin/busybox", binary.as_slice())
        .expect("tar bin/busybox");
    for applet in APPLETS {
        let mut link = header(tar::EntryType::Symlink, 0o777, 0);
        tar.append_link(&mut link, format!("bin/{applet}"), "busybox")
            .expect("tar applet link");
    }
    let raw = tar.into_inner().expect("finish tar");
    let diff_id = sha256_digest(&raw).to_string();
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&raw).expect("gzip layer");
    (gz.finish().expect("finish gzip"), diff_id)
}
