//! The farm's own images (`deploy/images`), built by strata itself: the
//! contexts prepared by the script in `deploy/images/README.md`, both
//! images built with the real `strata` binary (embedded), pushed to a real
//! registry, pulled back with skopeo and checked for size. Unpacked with
//! umoci and run with runc, the scheduler image serves `/healthz` as uid
//! 65532 with a read-only root and its state on a volume, and stops on
//! SIGTERM; the worker image, privileged, registers with a scheduler and
//! runs a build's RUN step with its own runc.

use serde_json::{Value, json};
use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use strata_tests::bin;
use strata_tests::procs::{SchedulerProc, http_get};
use strata_tests::registry::{TestRegistry, free_port, require_tool};

const MB: u64 = 1_000_000;
/// The user the scheduler image runs as.
const NONROOT: u32 = 65532;
/// The images' state directories (their VOLUMEs).
const SCHEDULER_STATE: &str = "/var/lib/strata-scheduler";
const WORKER_STATE: &str = "/var/lib/strata-worker";
const TAG: &str = "test";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `cmd`, panicking with its output unless it succeeds.
fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(out.status.success(), "{what} failed:\n{}", text(&out));
    out
}

fn read_json(path: &Path) -> Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One of the farm's images as the registry has it, read back with skopeo
/// into an OCI layout.
struct Image {
    layout: PathBuf,
    manifest: Value,
    config: Value,
}

impl Image {
    /// Prepares the context of `deploy/images/<role>.Dockerfile` with the
    /// README's script from the binaries next to the test's `strata`,
    /// builds it with `strata` (embedded, its own STRATA_HOME), pushes it
    /// to `registry` and pulls it back.
    fn build(dir: &Path, registry: &TestRegistry, role: &str) -> Self {
        assert!(
            fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0),
            "strata builds run containers and runc runs the images: run the tests as root"
        );
        for (tool, package) in [
            ("runc", "runc"),
            ("umoci", "umoci"),
            ("skopeo", "skopeo"),
            ("objcopy", "binutils"),
            ("ldd", "libc-bin"),
        ] {
            require_tool(tool, package);
        }
        // Taken out of the README the way it tells users to (from the
        // shebang to the closing fence), so the documented script is the
        // tested one.
        let readme = fs::read_to_string(repo().join("deploy/images/README.md")).expect("README");
        let script: Vec<&str> = readme
            .lines()
            .skip_while(|l| *l != "#!/usr/bin/env bash")
            .take_while(|l| *l != "```")
            .collect();
        assert!(
            script.len() > 5,
            "no prepare-context.sh in deploy/images/README.md"
        );
        let prepare = dir.join("prepare-context.sh");
        fs::write(&prepare, script.join("\n") + "\n").expect("write prepare-context.sh");
        let binary = bin(&format!("strata-{role}"));
        let ctx = dir.join(format!("ctx-{role}"));
        let mut cmd = Command::new("bash");
        cmd.arg(&prepare)
            .arg(role)
            .arg(binary.parent().expect("binary directory"))
            .arg(&ctx);
        run(&mut cmd, &format!("prepare-context.sh {role}"));

        let name = format!("{}/strata-{role}:{TAG}", registry.host());
        let meta = dir.join("metadata.json");
        let mut cmd = Command::new(bin("strata"));
        cmd.env("STRATA_HOME", dir.join("strata-home"))
            .env_remove("STRATA_SCHEDULER")
            .args(["build", "--progress", "plain", "--metadata-file"])
            .arg(&meta)
            .arg("-f")
            .arg(repo().join(format!("deploy/images/{role}.Dockerfile")))
            // gzip: umoci (0.4.7 in Debian) unpacks no zstd layers.
            .args(["-t", &name, "-o", "type=registry,compression=gzip"])
            .arg(&ctx);
        run(&mut cmd, &format!("strata build {role}.Dockerfile"));

        let layout = dir.join("layout");
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{name}"),
        ])
        .arg(format!("oci:{}:{TAG}", layout.display()));
        run(&mut cmd, "skopeo copy");
        let blob =
            |digest: &str| read_json(&layout.join("blobs/sha256").join(&digest["sha256:".len()..]));
        let index = read_json(&layout.join("index.json"));
        let digest = index["manifests"][0]["digest"].as_str().expect("manifest");
        assert_eq!(
            digest,
            read_json(&meta)["containerimage.digest"],
            "the pushed image is the built one"
        );
        let manifest = blob(digest);
        let config = blob(manifest["config"]["digest"].as_str().expect("config"));
        Image {
            layout,
            manifest,
            config,
        }
    }

    /// The image's `config` (Entrypoint, User, Env...).
    fn settings(&self) -> &Value {
        &self.config["config"]
    }

    fn env(&self) -> Vec<&str> {
        let env = self.settings()["Env"].as_array();
        env.into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect()
    }

    /// Reports the compressed layer sizes and checks them against
    /// `max_total` and, for all but the layer that copies `binary`,
    /// `max_rest`: a base distribution shipped along (a Debian is over
    /// 25 MB compressed) fails the second.
    fn check_sizes(&self, binary: &str, max_total: u64, max_rest: u64) {
        let history = self.config["history"].as_array().expect("history");
        let made_by: Vec<&str> = history
            .iter()
            .filter(|h| !h["empty_layer"].as_bool().unwrap_or(false))
            .map(|h| h["created_by"].as_str().unwrap_or_default())
            .collect();
        let layers = self.manifest["layers"].as_array().expect("layers");
        assert_eq!(layers.len(), made_by.len(), "{:#}", self.config);
        let sizes: Vec<u64> = layers
            .iter()
            .map(|l| l["size"].as_u64().expect("size"))
            .collect();
        let report: String = made_by
            .iter()
            .zip(&sizes)
            .map(|(by, size)| format!("  {:>6.2} MB  {by}\n", *size as f64 / MB as f64))
            .collect();
        let copies_binary = format!("COPY bin/{binary} ");
        let of_binary: Vec<u64> = made_by
            .iter()
            .zip(&sizes)
            .filter(|(by, _)| by.starts_with(&copies_binary))
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(of_binary.len(), 1, "one layer copies {binary}:\n{report}");
        let total: u64 = sizes.iter().sum();
        let rest = total - of_binary[0];
        let summary = format!(
            "{binary} image: {:.2} MB compressed, {:.2} MB besides the binary\n{report}",
            total as f64 / MB as f64,
            rest as f64 / MB as f64
        );
        eprintln!("{summary}");
        assert!(total < max_total, "over {max_total} bytes: {summary}");
        assert!(
            rest < max_rest,
            "over {max_rest} bytes besides the binary: {summary}"
        );
    }

    /// `umoci unpack`s the image into the runc bundle `bundle`.
    fn unpack(&self, bundle: &Path) {
        let mut cmd = Command::new("umoci");
        cmd.args(["unpack", "--image"])
            .arg(format!("{}:{TAG}", self.layout.display()))
            .arg(bundle);
        run(&mut cmd, "umoci unpack");
    }
}

/// Rewrites the bundle's runtime spec with `edit`.
fn edit_spec(bundle: &Path, edit: impl FnOnce(&mut Value)) {
    let path = bundle.join("config.json");
    let mut spec = read_json(&path);
    edit(&mut spec);
    fs::write(&path, serde_json::to_vec_pretty(&spec).expect("spec")).expect("write spec");
}

/// No terminal; the host's network (loopback ports reachable both ways);
/// and, instead of the tmpfs umoci makes of the VOLUME at `dest`, a bind
/// mount of `source`, as a Kubernetes volume would be.
fn host_network_and_volume(spec: &mut Value, dest: &str, source: &Path) {
    spec["process"]["terminal"] = json!(false);
    let namespaces = spec["linux"]["namespaces"].as_array_mut().expect("ns");
    namespaces.retain(|n| n["type"] != "network");
    let mounts = spec["mounts"].as_array_mut().expect("mounts");
    mounts.retain(|m| m["destination"] != dest);
    mounts.push(json!({
        "destination": dest,
        "type": "bind",
        "source": source,
        "options": ["rbind", "rw", "nosuid", "nodev"],
    }));
}

/// Sets `NAME=value` variables in the spec's environment.
fn set_env(spec: &mut Value, vars: &[(&str, String)]) {
    let env = spec["process"]["env"].as_array_mut().expect("env");
    env.retain(|e| {
        let e = e.as_str().unwrap_or_default();
        !vars.iter().any(|(k, _)| e.starts_with(&format!("{k}=")))
    });
    env.extend(vars.iter().map(|(k, v)| json!(format!("{k}={v}"))));
}

/// Linux capabilities in bit order.
const CAPABILITIES: &str = "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID \
    SETPCAP LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER \
    SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE \
    SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN \
    SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE";

/// What `privileged: true` gives the worker in Kubernetes: every
/// capability this process may pass on (CI may itself run in a container
/// with fewer), all devices, /sys and the cgroups writable, nothing
/// masked, no seccomp.
fn privileged(spec: &mut Value) {
    let status = fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .expect("CapBnd in /proc/self/status");
    let caps: Vec<String> = CAPABILITIES
        .split_whitespace()
        .enumerate()
        .filter(|(bit, _)| bounding & (1 << bit) != 0)
        .map(|(_, name)| format!("CAP_{name}"))
        .collect();
    spec["process"]["capabilities"] = json!({
        "bounding": caps, "effective": caps, "permitted": caps, "inheritable": caps,
    });
    spec["process"]["noNewPrivileges"] = json!(false);
    let linux = spec["linux"].as_object_mut().expect("linux");
    for key in ["maskedPaths", "readonlyPaths", "seccomp"] {
        linux.remove(key);
    }
    spec["linux"]["resources"]["devices"] = json!([{ "allow": true, "access": "rwm" }]);
    for m in spec["mounts"].as_array_mut().expect("mounts") {
        if (m["destination"] == "/sys" || m["destination"] == "/sys/fs/cgroup")
            && let Some(options) = m["options"].as_array_mut()
        {
            options.retain(|o| o != "ro");
        }
    }
}

/// A detached runc container, killed and deleted on drop whatever happens.
struct Container {
    id: String,
    log: PathBuf,
}

impl Container {
    /// `runc run -d` with an id no other test run uses; the container's
    /// output goes to `<dir>/<name>.log`.
    fn start(bundle: &Path, dir: &Path, name: &str) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = fs::File::create(&log).expect("container log");
        let id = format!("strata-farm-images-{}-{name}", std::process::id());
        let container = Container { id, log };
        let status = Command::new("runc")
            .args(["run", "-d", "--bundle"])
            .arg(bundle)
            .arg(&container.id)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .status()
            .expect("run runc");
        assert!(
            status.success(),
            "runc run -d: {status}\n{}",
            container.log()
        );
        container
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `runc state`: (status, host pid).
    fn state(&self) -> (String, u32) {
        let out = run(Command::new("runc").args(["state", &self.id]), "runc state");
        let s: Value = serde_json::from_slice(&out.stdout).expect("runc state JSON");
        let status = s["status"].as_str().unwrap_or_default().to_string();
        (status, s["pid"].as_u64().unwrap_or_default() as u32)
    }

    /// Waits until `GET path` on loopback `port` answers 200; returns the
    /// body. Fails at once, with the container's log, if it stops.
    fn wait_http(&self, port: u16, path: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, _) = self.state();
            assert_eq!(status, "running", "the container stopped:\n{}", self.log());
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                let (code, body) = http_get(port, path);
                if code == 200 {
                    return body;
                }
            }
            assert!(
                Instant::now() < deadline,
                "GET {path} on port {port} not 200 within 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .args(["kill", &self.id, "KILL"])
            .output();
        let _ = Command::new("runc")
            .args(["delete", "--force", &self.id])
            .output();
    }
}

/// The `Uid:` or `Gid:` line of a process: real, effective, saved, fs.
fn ids(pid: u32, field: &str) -> Vec<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = status.lines().find_map(|l| l.strip_prefix(field));
    let line = line.unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace()
        .map(|n| n.parse().expect("id"))
        .collect()
}

#[test]
fn scheduler_image_built_by_strata_runs_as_nonroot_and_serves_healthz() {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = TestRegistry::start();
    let image = Image::build(dir.path(), &registry, "scheduler");
    // A stripped debug build is about 20 MB compressed (a release build
    // less); everything else (libc, certificates, /etc) under 2 MB.
    image.check_sizes("strata-scheduler", 40 * MB, 5 * MB);
    let c = image.settings();
    assert_eq!(c["User"], "65532:65532", "{c:#}");
    assert_eq!(c["Entrypoint"], json!(["/usr/local/bin/strata-scheduler"]));
    assert_eq!(c["WorkingDir"], SCHEDULER_STATE, "{c:#}");
    assert!(c["Volumes"].get(SCHEDULER_STATE).is_some(), "{c:#}");
    for port in ["7390/tcp", "9390/tcp"] {
        assert!(c["ExposedPorts"].get(port).is_some(), "{port}: {c:#}");
    }
    let env = image.env();
    for default in [
        "STRATA_LISTEN=0.0.0.0:7390",
        "STRATA_METRICS_LISTEN=0.0.0.0:9390",
        "STRATA_STATE=/var/lib/strata-scheduler",
    ] {
        assert!(env.contains(&default), "{default}: {env:?}");
    }

    let bundle = dir.path().join("bundle");
    image.unpack(&bundle);
    let rootfs = bundle.join("rootfs");
    // Distroless: no shell, but CA certificates, and the state directory
    // (only it) owned by the user.
    assert!(!rootfs.join("bin/sh").exists(), "a shell in the image");
    let certs = fs::read_to_string(rootfs.join("etc/ssl/certs/ca-certificates.crt"))
        .expect("CA certificates in the image");
    assert!(certs.contains("BEGIN CERTIFICATE"));
    let owner = |p: &str| {
        let m = fs::metadata(rootfs.join(p)).unwrap_or_else(|e| panic!("/{p}: {e}"));
        (m.uid(), m.gid())
    };
    assert_eq!(owner("var/lib/strata-scheduler"), (NONROOT, NONROOT));
    assert_eq!(owner("var/lib"), (0, 0));

    // Run as the chart runs it: the image's entrypoint and user, the listen
    // addresses from the environment (free loopback ports, the host's
    // network), a read-only root, the state on a volume the user owns.
    let (grpc, metrics) = (free_port(), free_port());
    let state = dir.path().join("state-volume");
    fs::create_dir(&state).expect("state volume");
    std::os::unix::fs::chown(&state, Some(NONROOT), Some(NONROOT)).expect("chown state");
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).expect("chmod state");
    edit_spec(&bundle, |s| {
        host_network_and_volume(s, SCHEDULER_STATE, &state);
        let listen = [
            ("STRATA_LISTEN", format!("127.0.0.1:{grpc}")),
            ("STRATA_METRICS_LISTEN", format!("127.0.0.1:{metrics}")),
        ];
        set_env(s, &listen);
        s["root"]["readonly"] = json!(true);
    });
    let container = Container::start(&bundle, dir.path(), "scheduler");
    assert_eq!(container.wait_http(metrics, "/healthz"), "ok\n");
    container.wait_http(metrics, "/readyz");
    TcpStream::connect(("127.0.0.1", grpc))
        .unwrap_or_else(|e| panic!("gRPC port: {e}\n{}", container.log()));
    let (_, pid) = container.state();
    assert_eq!(ids(pid, "Uid:"), vec![NONROOT; 4], "the scheduler's uids");
    assert_eq!(ids(pid, "Gid:"), vec![NONROOT; 4], "the scheduler's gids");
    // Its state went to the volume, written as the user.
    let written: Vec<fs::Metadata> = fs::read_dir(&state)
        .expect("state volume")
        .map(|e| e.and_then(|e| e.metadata()).expect("state entry"))
        .collect();
    assert!(!written.is_empty(), "nothing in the state volume");
    assert!(written.iter().all(|m| m.uid() == NONROOT), "{written:?}");

    // SIGTERM (what Kubernetes sends PID 1) drains and stops it.
    run(
        Command::new("runc").args(["kill", &container.id, "TERM"]),
        "runc kill TERM",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while container.state().0 != "stopped" {
        let log = container.log();
        assert!(
            Instant::now() < deadline,
            "running 30 s after SIGTERM:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        container.log().contains("shutting down"),
        "{}",
        container.log()
    );
}

#[test]
fn worker_image_built_by_strata_runs_build_steps_with_its_runc() {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = TestRegistry::start();
    let image = Image::build(dir.path(), &registry, "worker");
    // runc and libseccomp add about 4 MB compressed.
    image.check_sizes("strata-worker", 40 * MB, 10 * MB);
    let c = image.settings();
    assert_eq!(c["Entrypoint"], json!(["/usr/local/bin/strata-worker"]));
    assert!(c["User"] == "0:0" || c["User"] == "", "{c:#}");
    assert!(c["Volumes"].get(WORKER_STATE).is_some(), "{c:#}");
    assert!(c["ExposedPorts"].get("9391/tcp").is_some(), "{c:#}");
    let env = image.env();
    assert!(
        env.iter()
            .any(|e| e.starts_with("PATH=") && e.contains("/usr/sbin")),
        "the worker finds runc on PATH: {env:?}"
    );

    let bundle = dir.path().join("bundle");
    image.unpack(&bundle);
    let rootfs = bundle.join("rootfs");
    for exe in ["usr/sbin/runc", "usr/local/bin/strata-worker"] {
        let meta = fs::metadata(rootfs.join(exe));
        let mode = meta
            .unwrap_or_else(|e| panic!("/{exe}: {e}"))
            .permissions()
            .mode();
        assert!(mode & 0o111 != 0, "/{exe} is not executable: {mode:o}");
    }
    assert!(!rootfs.join("bin/sh").exists(), "a shell in the image");

    // Both binaries run inside the image: every library they need is there.
    let inside = |name: &str, args: &[&str]| -> String {
        edit_spec(&bundle, |s| {
            s["process"]["terminal"] = json!(false);
            s["process"]["args"] = json!(args);
        });
        let id = format!("strata-farm-images-{}-{name}", std::process::id());
        let mut cmd = Command::new("runc");
        cmd.args(["run", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null());
        let out = cmd.output().expect("runc run");
        let _ = Command::new("runc")
            .args(["delete", "--force", &id])
            .output();
        assert!(
            out.status.success(),
            "{args:?} in the image:\n{}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let version = inside("version", &["/usr/local/bin/strata-worker", "--version"]);
    let host = run(
        Command::new(bin("strata-worker")).arg("--version"),
        "--version",
    );
    assert_eq!(version, String::from_utf8_lossy(&host.stdout));
    let runc = inside("runc", &["runc", "--version"]);
    assert!(
        runc.starts_with("runc version") && runc.contains("libseccomp"),
        "{runc}"
    );

    // And as a farm's worker, privileged as the chart runs it, its state on
    // a volume (overlayfs cannot stack on the container's own root): it
    // registers with a scheduler and runs a build's RUN step with its own
    // runc.
    let scheduler = SchedulerProc::start(dir.path(), &[], &[]);
    let url = format!("http://127.0.0.1:{}", scheduler.port);
    let state = dir.path().join("worker-volume");
    fs::create_dir(&state).expect("worker volume");
    let metrics = free_port();
    edit_spec(&bundle, |s| {
        s["process"]["args"] = c["Entrypoint"].clone();
        host_network_and_volume(s, WORKER_STATE, &state);
        privileged(s);
        let vars = [
            ("STRATA_SCHEDULER", url.clone()),
            ("STRATA_METRICS_LISTEN", format!("127.0.0.1:{metrics}")),
            ("STRATA_WORKER_NAME", "image-worker".to_string()),
        ];
        set_env(s, &vars);
    });
    let worker = Container::start(&bundle, dir.path(), "worker");
    // Ready once registered with the scheduler.
    worker.wait_http(metrics, "/readyz");

    let app = dir.path().join("app");
    fs::create_dir_all(app.join("rootfs/bin")).expect("app context");
    fs::copy("/bin/busybox", app.join("rootfs/bin/busybox"))
        .expect("busybox-static is required: apt-get install -y busybox-static");
    for applet in ["sh", "echo"] {
        let link = app.join("rootfs/bin").join(applet);
        std::os::unix::fs::symlink("busybox", link).expect("symlink");
    }
    let dockerfile = "FROM scratch\nCOPY rootfs/ /\nRUN echo built by the worker image > /proof\n";
    fs::write(app.join("Dockerfile"), dockerfile).expect("Dockerfile");
    let (out, meta) = (dir.path().join("out"), dir.path().join("app.json"));
    let built = Command::new(bin("strata"))
        .env("STRATA_SCHEDULER", &url)
        .args(["build", "--progress", "plain", "--metadata-file"])
        .arg(&meta)
        .arg("-o")
        .arg(format!("type=local,dest={}", out.display()))
        .arg(&app)
        .output()
        .expect("run strata");
    assert!(
        built.status.success(),
        "build on the worker image failed:\n{}\n--- worker\n{}\n{}",
        text(&built),
        worker.log(),
        scheduler.proc.log()
    );
    let proof = fs::read_to_string(out.join("proof")).expect("the RUN step's file");
    assert_eq!(proof, "built by the worker image\n");
    let m = read_json(&meta);
    let steps = m["strata.steps"].as_array().expect("strata.steps");
    let run_step = steps
        .iter()
        .find(|s| {
            s["instruction"]
                .as_str()
                .is_some_and(|i| i.starts_with("RUN"))
        })
        .unwrap_or_else(|| panic!("no RUN step in {m:#}"));
    assert_eq!(run_step["status"], "executed", "{m:#}");
    assert_eq!(run_step["worker_id"], "image-worker", "{m:#}");
}
