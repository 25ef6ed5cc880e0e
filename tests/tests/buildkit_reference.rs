//! BuildKit as the reference builder: a real buildkitd builds Dockerfiles
//! on a base image from a loopback registry, and the harness reads back
//! what `docker build` users see — the files, the config, the history and
//! the layers.

use std::path::Path;

use serde_json::{Value, json};
use strata_tests::base_image::{BASE_CREATED_BY, push_busybox};
use strata_tests::buildkit::{BuildKit, BuildOpts, BuiltImage, compare_trees};
use strata_tests::registry::TestRegistry;

/// diffID of a layer with no entries: 1024 zero bytes, the tar end marker.
const EMPTY_LAYER_DIFF_ID: &str =
    "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

/// A registry holding the busybox base image, a buildkitd that trusts it,
/// and a context directory.
struct Setup {
    // Dropped first: the daemon, then the registry it pulled from.
    buildkit: BuildKit,
    registry: TestRegistry,
    base: String,
    context: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let registry = TestRegistry::start();
        let base = push_busybox(&registry, "busybox:latest");
        let buildkit = BuildKit::start(&[registry.host()]);
        Setup {
            buildkit,
            registry,
            base,
            context: tempfile::tempdir().expect("context dir"),
        }
    }

    /// Builds `body` after `FROM <busybox>`, with `files` in the context.
    fn build(&self, body: &str, files: &[(&str, &str)]) -> BuiltImage {
        let ctx = self.context.path();
        for (name, content) in files {
            std::fs::write(ctx.join(name), content).expect("write context file");
        }
        let dockerfile = ctx.join("Dockerfile");
        std::fs::write(&dockerfile, format!("FROM {}\n{body}", self.base)).expect("Dockerfile");
        let image = self.buildkit.build(ctx, &dockerfile, &BuildOpts::default());
        assert!(
            self.registry.log_text().contains("/v2/busybox/manifests/"),
            "BuildKit did not pull the base image from the test registry"
        );
        image
    }
}

/// `(created_by, empty_layer)` of each history entry.
fn history(image: &BuiltImage) -> Vec<(String, bool)> {
    image
        .history()
        .iter()
        .map(|h| {
            (
                h["created_by"].as_str().unwrap_or_default().to_string(),
                h["empty_layer"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

fn diff_ids(image: &BuiltImage) -> Vec<String> {
    image.config["rootfs"]["diff_ids"]
        .as_array()
        .expect("rootfs.diff_ids")
        .iter()
        .map(|d| d.as_str().expect("diffID string").to_string())
        .collect()
}

fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("read /{rel}: {e}"))
}

#[test]
fn a_dockerfile_built_by_buildkit_reads_back_as_docker_users_see_it() {
    let setup = Setup::new();
    let image = setup.build(
        "RUN echo hi > /hi && rm /bin/wc\nCOPY f /f\nENV A=1\nCMD [\"sh\"]\n",
        &[("f", "from the context\n")],
    );

    let root = tempfile::tempdir().expect("rootfs dir");
    image.flatten(root.path());
    assert_eq!(read(root.path(), "hi"), "hi\n");
    assert_eq!(read(root.path(), "f"), "from the context\n");
    assert!(
        std::fs::symlink_metadata(root.path().join("bin/wc")).is_err(),
        "/bin/wc was deleted by RUN but the flattened image still has it"
    );
    assert!(root.path().join("bin/busybox").is_file());

    assert_eq!(image.config["config"]["Env"], json!(["PATH=/bin", "A=1"]));
    assert_eq!(image.config["config"]["Cmd"], json!(["sh"]));
    assert_eq!(
        history(&image),
        [
            (BASE_CREATED_BY, false),
            (
                "RUN /bin/sh -c echo hi > /hi && rm /bin/wc # buildkit",
                false
            ),
            ("COPY f /f # buildkit", false),
            ("ENV A=1", true),
            ("CMD [\"sh\"]", true),
        ]
        .map(|(c, e)| (c.to_string(), e))
    );
    assert_eq!(
        image.layers.len(),
        3,
        "base, RUN and COPY layers: {}",
        image.manifest
    );
    assert_eq!(diff_ids(&image).len(), 3);
    assert_eq!(
        image.manifest["layers"][2]["mediaType"],
        Value::from("application/vnd.oci.image.layer.v1.tar+gzip")
    );

    // compare_trees: a tree equals itself and another flattening of the
    // same image, and each kind of change shows.
    assert_eq!(
        compare_trees(root.path(), root.path(), false),
        Vec::<String>::new()
    );
    let copy = tempfile::tempdir().expect("second rootfs dir");
    image.flatten(copy.path());
    assert_eq!(
        compare_trees(root.path(), copy.path(), false),
        Vec::<String>::new()
    );

    let b = copy.path();
    std::fs::write(b.join("f"), "changed\n").expect("change /f");
    std::fs::remove_file(b.join("hi")).expect("remove /hi");
    std::fs::hard_link(b.join("bin/busybox"), b.join("bin/busybox2")).expect("hardlink");
    std::os::unix::fs::chown(b.join("bin/busybox"), Some(0), Some(1)).expect("chgrp");
    let setuid = std::os::unix::fs::PermissionsExt::from_mode(0o4755);
    std::fs::set_permissions(b.join("bin/busybox"), setuid).expect("setuid");
    let diffs = compare_trees(root.path(), b, true);
    for expected in [
        "/bin/busybox: mode 0755 vs 4755",
        "/bin/busybox: gid 0 vs 1",
        "/bin/busybox: hardlinked with [] vs [\"bin/busybox2\"]",
        "/bin/busybox2: only in b",
        "/f: size Some(17) vs Some(8)",
        "/hi: only in a",
    ] {
        assert!(
            diffs.iter().any(|d| d == expected),
            "missing {expected:?} in {diffs:#?}"
        );
    }
    assert!(
        diffs.iter().any(|d| d.starts_with("/f: content sha256")),
        "{diffs:#?}"
    );
}

#[test]
fn buildkit_gives_run_and_workdir_a_layer_even_when_they_change_nothing() {
    let setup = Setup::new();
    let image = setup.build("RUN true\nRUN true\nWORKDIR /x\nWORKDIR /x\n", &[]);

    // No step is a metadata-only one: each has a layer and none is marked
    // empty_layer, even those whose layer has no entries.
    assert_eq!(
        history(&image),
        [
            (BASE_CREATED_BY, false),
            ("RUN /bin/sh -c true # buildkit", false),
            ("RUN /bin/sh -c true # buildkit", false),
            ("WORKDIR /x", false),
            ("WORKDIR /x", false),
        ]
        .map(|(c, e)| (c.to_string(), e))
    );
    assert_eq!(image.layers.len(), 5, "{}", image.manifest);
    let diff_ids = diff_ids(&image);
    // The first RUN keeps the mount points runc made in a base image
    // without them.
    assert_eq!(image.layer_entries(1), ["dev/", "proc/", "sys/"]);
    assert_eq!(diff_ids[2], EMPTY_LAYER_DIFF_ID, "the second RUN true");
    assert_eq!(image.layer_entries(2), Vec::<String>::new());
    assert_eq!(image.layer_entries(3), ["x/"], "WORKDIR creates /x");
    assert_eq!(
        diff_ids[4], EMPTY_LAYER_DIFF_ID,
        "WORKDIR of an existing dir"
    );
    assert_eq!(image.config["config"]["WorkingDir"], json!("/x"));
}
