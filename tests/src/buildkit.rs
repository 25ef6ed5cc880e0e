//! BuildKit as the reference: strata's images must equal what
//! `docker build` (BuildKit) produces, so whole-system tests and benchmarks
//! build the same Dockerfile with a real `buildkitd` and compare.
//!
//! [`BuildKit::start`] builds buildkitd and buildctl v0.34.2 from source
//! once (cached in `${STRATA_CACHE:-/var/cache/strata}`, see
//! `scripts/buildkit.sh`) and starts a private daemon: OCI worker on the
//! machine's runc, overlayfs snapshotter, host network for `RUN`.
//! [`BuildKit::build`] exports the image as an OCI layout and parses it
//! into a [`BuiltImage`]; [`BuiltImage::flatten`] applies its layers to a
//! directory and [`compare_trees`] lists what differs between two trees.
//!
//! Needs root (runc, overlay mounts), Go (first run only), `runc` and the
//! scripts' tools; a missing piece is a panic that says what to install,
//! never a skip.

mod tree;

use std::io::{Read, Seek as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use sha2::{Digest as _, Sha256};
use strata_oci::layer::{UnpackOptions, unpack};

pub use tree::compare_trees;

/// The BuildKit release the reference builds use (pinned in
/// `scripts/buildkit.sh`).
pub const VERSION: &str = "v0.34.2";

/// A private buildkitd, stopped (and its mounts and state removed) on drop.
pub struct BuildKit {
    state: tempfile::TempDir,
    pid: u32,
    addr: String,
    buildctl: PathBuf,
}

/// Options of one [`BuildKit::build`], as `docker build` flags.
#[derive(Debug, Clone, Default)]
pub struct BuildOpts {
    /// `--target`: the stage to build (the last one when `None`).
    pub target: Option<String>,
    /// `--build-arg K=V`, in order.
    pub build_args: Vec<(String, String)>,
    /// `SOURCE_DATE_EPOCH`: passed as a build arg and, as
    /// `rewrite-timestamp=true`, clamps every layer entry's mtime and every
    /// `created` time to it, for reproducible images.
    pub source_date_epoch: Option<u64>,
    /// `--no-cache`: run every step even if this daemon built it before.
    pub no_cache: bool,
}

/// An image BuildKit built, read from its OCI layout export.
#[derive(Debug)]
pub struct BuiltImage {
    /// The image config (`architecture`, `config`, `rootfs`, `history`...).
    pub config: Value,
    /// The image manifest.
    pub manifest: Value,
    /// The layer blobs as files, bottom layer first; an empty layer listed
    /// twice in the manifest is the same file twice.
    pub layers: Vec<PathBuf>,
    /// What `buildctl build --progress plain` printed: step names, `RUN`
    /// output, export digests.
    pub log: String,
    layout: tempfile::TempDir,
}

impl BuildKit {
    /// Builds BuildKit if the cache lacks it (`scripts/buildkit.sh
    /// install`, about 3 minutes the first time; its progress goes to
    /// stderr) and starts a daemon that reaches `insecure_registries`
    /// (`host:port`) over plain HTTP. Panics with the script's output if
    /// either step fails.
    pub fn start(insecure_registries: &[String]) -> BuildKit {
        let install = Command::new("bash")
            .arg(script())
            .arg("install")
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/buildkit.sh install");
        assert!(
            install.status.success(),
            "scripts/buildkit.sh install failed ({}); its messages are above. It builds BuildKit \
             {VERSION} with Go: install Go (/usr/local/go/bin/go) and give it access to the Go \
             module proxy",
            install.status
        );
        let bin_dir = PathBuf::from(String::from_utf8_lossy(&install.stdout).trim());
        let buildctl = bin_dir.join("buildctl");
        assert!(
            buildctl.is_file(),
            "scripts/buildkit.sh install printed {}, which holds no buildctl",
            bin_dir.display()
        );

        // Short: the socket path must fit a unix socket address.
        let state = tempfile::Builder::new()
            .prefix("strata-bk-")
            .tempdir_in("/tmp")
            .expect("buildkit state dir");
        let started = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(state.path())
            .args(insecure_registries)
            // Stops the daemon if this test process dies without dropping.
            .env("STRATA_BUILDKIT_WATCH_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/buildkit.sh start");
        let stdout = String::from_utf8_lossy(&started.stdout);
        let addr = stdout
            .lines()
            .find_map(|l| l.strip_prefix("BUILDKIT_HOST="))
            .map(str::to_string);
        let pid = std::fs::read_to_string(state.path().join("buildkitd.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok());
        let (Some(addr), Some(pid), true) = (addr, pid, started.status.success()) else {
            let _ = stop(state.path());
            panic!(
                "buildkitd did not start ({}):\n{}",
                started.status,
                output_text(&started)
            );
        };
        BuildKit {
            state,
            pid,
            addr,
            buildctl,
        }
    }

    /// The daemon's address, `unix://…/buildkitd.sock` (`BUILDKIT_HOST`).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Builds `dockerfile` with `context` as `docker build -f dockerfile
    /// context` would, exports the image as an OCI layout (OCI media
    /// types, gzip layers) and reads its manifest, config and layers.
    /// Panics with the build log if the build fails.
    pub fn build(&self, context: &Path, dockerfile: &Path, opts: &BuildOpts) -> BuiltImage {
        let layout = tempfile::tempdir().expect("image layout dir");
        let tarball = layout.path().join("image.tar");
        let dockerfile_dir = dockerfile.parent().unwrap_or(Path::new("."));
        let dockerfile_name = dockerfile
            .file_name()
            .unwrap_or_else(|| panic!("{} names no file", dockerfile.display()));
        let mut output = format!("type=oci,dest={}", tarball.display());
        let mut cmd = Command::new(&self.buildctl);
        cmd.arg("--addr")
            .arg(&self.addr)
            .args([
                "build",
                "--progress",
                "plain",
                "--frontend",
                "dockerfile.v0",
            ])
            .arg("--local")
            .arg(local("context", context))
            .arg("--local")
            .arg(local("dockerfile", dockerfile_dir))
            .arg("--opt")
            .arg(format!("filename={}", dockerfile_name.to_string_lossy()));
        if let Some(target) = &opts.target {
            cmd.arg("--opt").arg(format!("target={target}"));
        }
        for (key, value) in &opts.build_args {
            cmd.arg("--opt").arg(format!("build-arg:{key}={value}"));
        }
        if let Some(epoch) = opts.source_date_epoch {
            cmd.arg("--opt")
                .arg(format!("build-arg:SOURCE_DATE_EPOCH={epoch}"));
            output.push_str(",rewrite-timestamp=true");
        }
        if opts.no_cache {
            cmd.arg("--no-cache");
        }
        cmd.arg("--output").arg(output).stdin(Stdio::null());
        let out = cmd.output().expect("run buildctl");
        let log = output_text(&out);
        assert!(
            out.status.success(),
            "BuildKit failed to build {} ({}):\n{log}",
            dockerfile.display(),
            out.status
        );
        read_layout(layout, &tarball, log)
    }
}

impl Drop for BuildKit {
    fn drop(&mut self) {
        // A panic here would abort a test already unwinding; say it instead.
        if let Err(message) = stop(self.state.path()) {
            eprintln!("stopping buildkitd {}: {message}", self.pid);
        }
    }
}

impl BuiltImage {
    /// The config's `history`, empty if it has none.
    pub fn history(&self) -> &[Value] {
        self.config["history"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Applies every layer, bottom first, onto `dest` (created if missing)
    /// with [`strata_oci::layer::unpack`], checking each against the
    /// config's diffID.
    pub fn flatten(&self, dest: &Path) {
        std::fs::create_dir_all(dest).expect("create flatten destination");
        let diff_ids = self.config["rootfs"]["diff_ids"]
            .as_array()
            .expect("config has rootfs.diff_ids");
        assert_eq!(
            diff_ids.len(),
            self.layers.len(),
            "the config lists {} diffIDs for {} layers",
            diff_ids.len(),
            self.layers.len()
        );
        for (layer, diff_id) in self.layers.iter().zip(diff_ids) {
            let file = std::fs::File::open(layer).expect("open layer blob");
            let report = unpack(
                std::io::BufReader::new(file),
                dest,
                &UnpackOptions::default(),
            )
            .unwrap_or_else(|e| panic!("unpack {}: {e}", layer.display()));
            assert_eq!(
                Some(report.diff_id.as_str()),
                diff_id.as_str(),
                "layer {} does not match the config's diffID",
                layer.display()
            );
        }
    }

    /// The entry names of layer `index` (0 = bottom, a gzip or plain tar
    /// blob) in tar order, as `tar -t` prints them: `dir/`, `dir/file`,
    /// `dir/.wh.deleted`.
    pub fn layer_entries(&self, index: usize) -> Vec<String> {
        let path = &self.layers[index];
        let mut blob = std::fs::File::open(path).expect("open layer blob");
        let mut magic = [0u8; 2];
        let gzip = blob.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
        blob.rewind().expect("rewind layer blob");
        let reader: Box<dyn Read> = if gzip {
            Box::new(flate2::read::GzDecoder::new(blob))
        } else {
            Box::new(blob)
        };
        let mut archive = tar::Archive::new(reader);
        archive
            .entries()
            .unwrap_or_else(|e| panic!("read layer {}: {e}", path.display()))
            .map(|entry| {
                let entry = entry.unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
                String::from_utf8_lossy(&entry.path_bytes()).into_owned()
            })
            .collect()
    }

    /// The directory holding the OCI layout (`index.json`, `blobs/`).
    pub fn layout(&self) -> &Path {
        self.layout.path()
    }
}

/// `scripts/buildkit.sh` of this workspace.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("scripts")
        .join("buildkit.sh")
}

/// Runs `scripts/buildkit.sh stop` on a state directory.
fn stop(state: &Path) -> Result<(), String> {
    let out = Command::new("bash")
        .arg(script())
        .arg("stop")
        .arg(state)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run scripts/buildkit.sh stop: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(output_text(&out))
    }
}

fn local(name: &str, dir: &Path) -> String {
    format!("{name}={}", dir.display())
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Unpacks the exported tarball into `layout` and follows `index.json` to
/// the one image manifest, checking every blob it reads against its digest.
fn read_layout(layout: tempfile::TempDir, tarball: &Path, log: String) -> BuiltImage {
    let file = std::fs::File::open(tarball).expect("open exported image");
    tar::Archive::new(file)
        .unpack(layout.path())
        .expect("unpack exported OCI layout");
    let root = layout.path();
    let mut manifest = read_json(&root.join("index.json"));
    // BuildKit writes an index pointing at the manifest; a multi-platform
    // build would add one more level.
    while manifest["manifests"].is_array() {
        let manifests = manifest["manifests"].as_array().expect("checked");
        assert_eq!(
            manifests.len(),
            1,
            "expected one image in the export, found {manifests:?}"
        );
        manifest = read_blob_json(root, &manifests[0]);
    }
    let config = read_blob_json(root, &manifest["config"]);
    let layers = manifest["layers"]
        .as_array()
        .expect("manifest has layers")
        .iter()
        .map(|d| checked_blob(root, d))
        .collect();
    BuiltImage {
        config,
        manifest,
        layers,
        log,
        layout,
    }
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

fn read_blob_json(root: &Path, descriptor: &Value) -> Value {
    read_json(&checked_blob(root, descriptor))
}

/// The blob file a descriptor names, after checking its size and digest.
fn checked_blob(root: &Path, descriptor: &Value) -> PathBuf {
    let digest = descriptor["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("descriptor without a digest: {descriptor}"));
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("not a sha256 digest: {digest}"));
    let path = root.join("blobs").join("sha256").join(hex);
    let mut file =
        std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut file, &mut hasher).expect("hash blob");
    assert_eq!(
        hex::encode(hasher.finalize()),
        hex,
        "{} does not hash to its name",
        path.display()
    );
    assert_eq!(
        Some(size),
        descriptor["size"].as_u64(),
        "size of {digest} differs from its descriptor"
    );
    path
}
