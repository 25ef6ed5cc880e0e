//! A tiny base image: `/bin/busybox` from `busybox-static` and a few
//! applet symlinks, as one deterministic gzip layer, with an OCI config.
//! (The real layer writer lives in `strata_oci::layer`; this one is only
//! what the registry tests need.)

use std::io::Write as _;
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use oci_spec::image::{Descriptor, MediaType};
use strata_oci::registry::{BlobSource, BlobUpload, ImagePush, ManifestFormat, sha256_digest};

use super::require_tool;

/// The applets linked to busybox in the test image.
pub const APPLETS: &[&str] = &["sh", "ls", "echo", "cat"];

/// A built layer.
#[derive(Clone)]
pub struct Layer {
    /// The gzip-compressed tar, as pushed.
    pub gz: Vec<u8>,
    /// `sha256:` of the uncompressed tar (the config's diff ID).
    pub diff_id: String,
}

impl Layer {
    /// Its descriptor in a manifest.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            MediaType::ImageLayerGzip,
            self.gz.len() as u64,
            sha256_digest(&self.gz),
        )
    }
}

/// The busybox layer: `bin/`, `bin/busybox`, `bin/<applet>` → `busybox`,
/// all owned by root with mtime 0, so the digest is the same every time.
pub fn busybox_layer() -> Layer {
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
    Layer {
        gz: gz.finish().expect("finish gzip"),
        diff_id,
    }
}

/// An OCI image config for `architecture` over `layers`.
pub fn config_json(architecture: &str, layers: &[&Layer]) -> Vec<u8> {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let config = serde_json::json!({
        "architecture": architecture,
        "os": "linux",
        "config": { "Cmd": ["/bin/sh"], "Env": ["PATH=/bin"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": [{ "created_by": "strata registry test: busybox-static" }],
    });
    serde_json::to_vec(&config).expect("serialise config")
}

/// The busybox image for `architecture`, with its layer in memory.
pub fn busybox_image(layer: &Layer, architecture: &str, format: ManifestFormat) -> ImagePush {
    ImagePush {
        format,
        config: config_json(architecture, &[layer]),
        layers: vec![BlobUpload {
            descriptor: layer.descriptor(),
            source: BlobSource::Bytes(layer.gz.clone().into()),
            mount_from: None,
        }],
        annotations: Default::default(),
    }
}

/// The same image with its layer streamed from a file in `dir`.
pub fn busybox_image_from_file(layer: &Layer, dir: &Path) -> ImagePush {
    let path = dir.join("busybox-layer.tar.gz");
    std::fs::write(&path, &layer.gz).expect("write layer file");
    let mut image = busybox_image(layer, "amd64", ManifestFormat::Oci);
    image.layers[0].source = BlobSource::File(path);
    image
}

/// The paths and symlink targets in a gzip layer, to check what came back.
pub fn layer_entries(gz: &[u8]) -> Vec<(String, Option<String>)> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    archive
        .entries()
        .expect("read layer tar")
        .map(|e| {
            let e = e.expect("tar entry");
            let path = e.path().expect("entry path").display().to_string();
            let link = e
                .link_name()
                .expect("link name")
                .map(|l| l.display().to_string());
            (path, link)
        })
        .collect()
}
