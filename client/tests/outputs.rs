//! What a finished build writes locally: the metadata file, and a local
//! output's unpacking, which must stay inside its directory.

use strata_client::commands::build::metadata;
use strata_proto::build::v1 as pb;
use strata_proto::common::v1 as wire;

fn step(id: &str, instruction: &str) -> pb::StepPlan {
    pb::StepPlan {
        step_id: id.into(),
        instruction: instruction.into(),
        ..Default::default()
    }
}

fn secs(ms: i32) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: 0,
        nanos: ms * 1_000_000,
    })
}

#[test]
fn metadata_lists_digests_layers_and_steps() {
    let layer = |d: &str, size: u64| wire::Layer {
        diff_id: format!("sha256:diff-{d}"),
        blob: Some(wire::Descriptor {
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            digest: format!("sha256:{d}"),
            size,
            ..Default::default()
        }),
        uncompressed_size: size * 2,
    };
    let result = pb::BuildResult {
        manifest_digest: "sha256:man".into(),
        config_digest: "sha256:cfg".into(),
        images: vec![pb::PlatformImage {
            layers: vec![
                pb::ImageLayer {
                    layer: Some(layer("base", 100)),
                    ..Default::default()
                },
                pb::ImageLayer {
                    layer: Some(layer("run", 42)),
                    step_id: "s2".into(),
                    cached: false,
                    worker_id: "w-1".into(),
                },
            ],
            ..Default::default()
        }],
        steps: vec![
            pb::StepOutcome {
                step_id: "s1".into(),
                status: pb::StepStatus::Cached.into(),
                ..Default::default()
            },
            pb::StepOutcome {
                step_id: "s2".into(),
                status: pb::StepStatus::Executed.into(),
                worker_id: "w-1".into(),
                duration: secs(500),
                layer: Some(layer("run", 42)),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let plan = [step("s1", "FROM busybox"), step("s2", "RUN make")];
    let doc = metadata::metadata_json(
        "b-7",
        &result,
        &plan,
        &["app:1".into(), "app:latest".into()],
    );
    assert_eq!(doc["containerimage.digest"], "sha256:man");
    assert_eq!(doc["containerimage.config.digest"], "sha256:cfg");
    assert_eq!(doc["image.name"], "app:1,app:latest");
    assert_eq!(doc["strata.build_id"], "b-7");
    let layers = doc["strata.layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[1]["digest"], "sha256:run");
    assert_eq!(layers[1]["diff_id"], "sha256:diff-run");
    assert_eq!(layers[1]["step_id"], "s2");
    assert_eq!(layers[1]["worker_id"], "w-1");
    assert_eq!(layers[1]["cached"], false);
    let steps = doc["strata.steps"].as_array().unwrap();
    assert_eq!(steps[0]["status"], "cached");
    assert_eq!(steps[1]["status"], "executed");
    assert_eq!(steps[1]["instruction"], "RUN make");
    assert_eq!(steps[1]["duration_seconds"], 0.5);
    assert_eq!(steps[1]["layer_digest"], "sha256:run");
    assert_eq!(steps[1]["layer_size"], 42);
}

#[test]
fn local_outputs_refuse_entries_outside_the_directory() {
    let mut good = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    h.set_mode(0o644);
    h.set_cksum();
    good.append_data(&mut h, "etc/hi", &b"hi"[..]).unwrap();
    let good = good.into_inner().unwrap();
    let dir = tempfile::tempdir().unwrap();
    strata_client::transfer::unpack(&good[..], dir.path()).unwrap();
    assert_eq!(std::fs::read(dir.path().join("etc/hi")).unwrap(), b"hi");

    // A hand-made header: tar's builder refuses to write `..` itself.
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..9].copy_from_slice(b"../escape");
    h.set_size(1);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut bad = h.as_bytes().to_vec();
    bad.extend_from_slice(b"x");
    bad.resize(1024 + 512 * 2, 0);
    let inner = dir.path().join("out");
    std::fs::create_dir(&inner).unwrap();
    let e = strata_client::transfer::unpack(&bad[..], &inner).unwrap_err();
    assert!(
        e.to_string().contains("refusing to unpack \"../escape\""),
        "{e}"
    );
    assert!(!dir.path().join("escape").exists());
}
