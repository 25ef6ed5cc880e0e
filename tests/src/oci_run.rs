//! Running an image the way a user would after pulling it: an OCI image
//! layout (from `skopeo copy`) unpacked into a root filesystem and started
//! with runc, its Entrypoint/Cmd, Env and WorkingDir from the config.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use strata_oci::layer::{UnpackOptions, unpack};

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let path = layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Unpacks the only image of an OCI layout into `rootfs`; returns its
/// config document.
pub fn unpack_layout(layout: &Path, rootfs: &Path) -> Value {
    let index: Value =
        serde_json::from_slice(&blob_file(layout, "index.json")).expect("index.json");
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .expect("a manifest in index.json");
    let manifest: Value =
        serde_json::from_slice(&blob(layout, manifest_digest)).expect("manifest JSON");
    let config: Value = serde_json::from_slice(&blob(
        layout,
        manifest["config"]["digest"]
            .as_str()
            .expect("config digest"),
    ))
    .expect("config JSON");
    std::fs::create_dir_all(rootfs).expect("rootfs dir");
    for l in manifest["layers"].as_array().expect("layers") {
        let data = blob(layout, l["digest"].as_str().expect("layer digest"));
        unpack(data.as_slice(), rootfs, &UnpackOptions::default()).expect("unpack layer");
    }
    config
}

fn blob_file(layout: &Path, name: &str) -> Vec<u8> {
    std::fs::read(layout.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Runs the image's default command (Entrypoint + Cmd) in `rootfs` with
/// runc; `bundle` must be `rootfs`'s parent.
pub fn runc_run(bundle: &Path, config: &Value, id: &str) -> Output {
    let spec = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(bundle)
        .output()
        .expect("runc spec (apt-get install runc)");
    assert!(spec.status.success(), "runc spec: {spec:?}");
    let path = bundle.join("config.json");
    let mut s: Value = serde_json::from_slice(&std::fs::read(&path).expect("config.json"))
        .expect("runc spec JSON");
    let c = &config["config"];
    let mut args: Vec<Value> = c["Entrypoint"].as_array().cloned().unwrap_or_default();
    args.extend(c["Cmd"].as_array().cloned().unwrap_or_default());
    s["process"]["args"] = Value::Array(args);
    s["process"]["terminal"] = Value::Bool(false);
    if let Some(env) = c["Env"].as_array() {
        s["process"]["env"] = Value::Array(env.clone());
    }
    if let Some(wd) = c["WorkingDir"].as_str().filter(|w| !w.is_empty()) {
        s["process"]["cwd"] = Value::String(wd.to_string());
    }
    s["root"]["path"] = Value::String("rootfs".into());
    std::fs::write(&path, serde_json::to_vec_pretty(&s).expect("spec JSON")).expect("write spec");
    let out = Command::new("runc")
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .output()
        .expect("runc run");
    let _ = Command::new("runc").args(["delete", "-f", id]).output();
    out
}
