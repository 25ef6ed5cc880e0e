//! strata against BuildKit: one Dockerfile and one context built by both
//! (BuildKit through [`BuildKit::build`], strata through the `strata`
//! binary in embedded mode) from the same busybox base image in a loopback
//! registry, and every difference a `docker build` user could notice,
//! listed: the flattened file trees (mtimes aside), the image config's
//! `config` object, the history and the number of layers.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use strata_oci::layer::{UnpackOptions, unpack};

use crate::base_image::push_busybox;
use crate::buildkit::{BuildKit, BuildOpts, compare_trees};
use crate::registry::TestRegistry;

/// What `{BASE}` stands for in a [`Case`]'s Dockerfile: the busybox base
/// image's reference in the test registry.
pub const BASE: &str = "{BASE}";
/// What `{REGISTRY}` stands for: the test registry's `127.0.0.1:PORT`, an
/// HTTP server both builders reach (for `ADD <url>`).
pub const REGISTRY: &str = "{REGISTRY}";

/// One Dockerfile to build with both builders.
pub struct Case<'a> {
    /// Names the case in failure messages.
    pub name: &'a str,
    /// The Dockerfile; every [`BASE`] and [`REGISTRY`] is replaced.
    pub dockerfile: &'a str,
    /// `--build-arg K=V`s.
    pub build_args: &'a [(&'a str, &'a str)],
    /// Fills the (empty) context directory.
    pub context: &'a dyn Fn(&Path),
}

/// The history entry fields compared: `created_by`, `empty_layer`,
/// `comment` (never the times).
type HistoryEntry = (String, bool, String);

/// A registry with the base image and a buildkitd that trusts it.
pub struct Equivalence {
    // Dropped first: the daemon, then the registry it pulled from.
    buildkit: BuildKit,
    registry: TestRegistry,
    base: String,
}

impl Default for Equivalence {
    fn default() -> Self {
        Self::new()
    }
}

impl Equivalence {
    /// Starts the registry, pushes busybox, starts buildkitd.
    pub fn new() -> Self {
        let registry = TestRegistry::start();
        let base = push_busybox(&registry, "busybox:latest");
        let buildkit = BuildKit::start(&[registry.host()]);
        Self {
            buildkit,
            registry,
            base,
        }
    }

    /// The base image reference `{BASE}` stands for.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Builds `case` with both builders and panics listing every
    /// difference between the two images.
    pub fn assert_equivalent(&self, case: &Case<'_>) {
        let context = tempfile::tempdir().expect("context dir");
        (case.context)(context.path());
        let dockerfile = context.path().join("Dockerfile");
        let text = case
            .dockerfile
            .replace(BASE, &self.base)
            .replace(REGISTRY, &self.registry.host());
        std::fs::write(&dockerfile, &text).expect("write Dockerfile");

        let opts = BuildOpts {
            build_args: case
                .build_args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..BuildOpts::default()
        };
        let reference = self.buildkit.build(context.path(), &dockerfile, &opts);
        let strata = self.build_strata(case, context.path(), text.as_bytes());

        let mut problems = Vec::new();
        let bk_root = tempfile::tempdir().expect("buildkit rootfs");
        reference.flatten(bk_root.path());
        let strata_root = tempfile::tempdir().expect("strata rootfs");
        strata.flatten(strata_root.path());
        for d in compare_trees(bk_root.path(), strata_root.path(), true) {
            let contents = d
                .split_once(": content sha256")
                .map(|(path, _)| {
                    let rel = path.trim_start_matches('/');
                    format!(
                        "\n    BuildKit: {}\n    strata:   {}",
                        small_text(&bk_root.path().join(rel)),
                        small_text(&strata_root.path().join(rel))
                    )
                })
                .unwrap_or_default();
            problems.push(format!(
                "file tree (a = BuildKit, b = strata): {d}{contents}"
            ));
        }
        problems.extend(config_differences(
            &reference.config["config"],
            &strata.config["config"],
        ));
        problems.extend(history_differences(
            &history(&reference.config),
            &history(&strata.config),
        ));
        if reference.layers.len() != strata.layers.len() {
            problems.push(format!(
                "layers: BuildKit has {}, strata has {}",
                reference.layers.len(),
                strata.layers.len()
            ));
        }
        assert!(
            problems.is_empty(),
            "case {}: strata's image differs from BuildKit's:\n  {}\n\nDockerfile:\n{text}\n\
             strata's build log:\n{}",
            case.name,
            problems.join("\n  "),
            strata.log
        );
    }

    fn build_strata(&self, case: &Case<'_>, context: &Path, dockerfile: &[u8]) -> StrataImage {
        let state = tempfile::tempdir().expect("strata state dir");
        let docker_config = state.path().join("docker");
        std::fs::create_dir_all(&docker_config).expect("docker config dir");
        std::fs::write(docker_config.join("config.json"), b"{}").expect("write empty config.json");
        let file = state.path().join("Dockerfile");
        std::fs::write(&file, dockerfile).expect("write the Dockerfile");
        let metadata = state.path().join("metadata.json");
        let home = state.path().join("home");
        let mut cmd = std::process::Command::new(crate::bin("strata"));
        cmd.env("STRATA_HOME", &home)
            .env("DOCKER_CONFIG", &docker_config)
            .env("STRATA_INSECURE_REGISTRIES", self.registry.host())
            .env_remove("STRATA_SCHEDULER")
            .args(["build", "--progress", "plain", "-f"])
            .arg(&file)
            .arg("--metadata-file")
            .arg(&metadata);
        for (k, v) in case.build_args {
            cmd.arg("--build-arg").arg(format!("{k}={v}"));
        }
        let out = cmd.arg(context).output().expect("run strata build");
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "case {}: strata failed:\n{log}",
            case.name
        );
        let meta: Value = serde_json::from_slice(&std::fs::read(&metadata).expect("metadata file"))
            .expect("metadata JSON");
        let blob = |digest: &str| {
            home.join("worker/store/blobs/sha256")
                .join(digest.trim_start_matches("sha256:"))
        };
        let config_digest = meta["containerimage.config.digest"]
            .as_str()
            .expect("config digest in the metadata");
        let config =
            serde_json::from_slice(&std::fs::read(blob(config_digest)).expect("config blob"))
                .expect("strata config JSON");
        let layers = meta["strata.layers"]
            .as_array()
            .expect("layers in the metadata")
            .iter()
            .map(|l| blob(l["digest"].as_str().expect("layer digest")))
            .collect();
        StrataImage {
            config,
            layers,
            log,
            _state: state,
        }
    }
}

/// What strata built: its config, its layer blobs in the builder's store
/// (kept while `_state` lives) and its RUN output.
struct StrataImage {
    config: Value,
    layers: Vec<PathBuf>,
    log: String,
    _state: tempfile::TempDir,
}

impl StrataImage {
    /// Applies the layers, bottom first, onto `dest`.
    fn flatten(&self, dest: &Path) {
        for layer in &self.layers {
            let file = std::fs::File::open(layer).expect("open strata layer blob");
            unpack(
                std::io::BufReader::new(file),
                dest,
                &UnpackOptions::default(),
            )
            .unwrap_or_else(|e| panic!("unpack {}: {e}", layer.display()));
        }
    }
}

/// A small text file's content, quoted, to show how two versions differ.
fn small_text(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(b) if b.len() <= 4096 => format!("{:?}", String::from_utf8_lossy(&b)),
        Ok(b) => format!("({} bytes)", b.len()),
        Err(e) => format!("({e})"),
    }
}

/// The image config's `config` without what JSON encoders may write or
/// leave out for the same config: `null`s, empty strings, lists and
/// objects, and `false`, at its top level (an empty object as the value of
/// an exposed port or a volume stays: its key is the setting).
pub fn normalized_config(config: &Value) -> Map<String, Value> {
    let mut out = config.as_object().cloned().unwrap_or_default();
    out.retain(|_, v| match v {
        Value::Null | Value::Bool(false) => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Number(_) | Value::Bool(true) => true,
    });
    out
}

fn config_differences(reference: &Value, strata: &Value) -> Vec<String> {
    let (a, b) = (normalized_config(reference), normalized_config(strata));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show = |v: Option<&Value>| v.map_or("(absent)".to_string(), Value::to_string);
            format!(
                "config.{k}: BuildKit {} vs strata {}",
                show(a.get(k)),
                show(b.get(k))
            )
        })
        .collect()
}

/// `(created_by, empty_layer, comment)` of every history entry.
fn history(config: &Value) -> Vec<HistoryEntry> {
    config["history"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|h| {
            (
                h["created_by"].as_str().unwrap_or_default().to_string(),
                h["empty_layer"].as_bool().unwrap_or(false),
                h["comment"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn history_differences(reference: &[HistoryEntry], strata: &[HistoryEntry]) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..reference.len().max(strata.len()) {
        let (a, b) = (reference.get(i), strata.get(i));
        if a != b {
            out.push(format!("history[{i}]: BuildKit {a:?} vs strata {b:?}"));
        }
    }
    out
}
