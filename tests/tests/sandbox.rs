//! The sandbox, end to end: builds on a real scheduler and worker whose RUN
//! steps try to reach what they must not — the worker's environment and
//! files, host processes, the host's kernel settings, mounts, devices,
//! extra privileges — and record what happened in the image, which the
//! test exports (`-o type=local`) and reads as a user would.
//!
//! The worker runs with secrets in its environment and canary files in its
//! state directory and next to its log, at host paths the Dockerfile names
//! outright: a sandbox that leaked would let the step read them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use strata_tests::base_image::push_busybox;
use strata_tests::procs::{SchedulerProc, WorkerProc, wait_ready};
use strata_tests::registry::TestRegistry;

const WORKER_SECRET: &str = "worker-secret-value-5f3a";
const ENV_CANARY: &str = "strata-env-canary-7c1e";
const FILE_CANARY: &str = "strata-file-canary-91d2";

/// Docker's default capability set (`CapEff` of a root step).
const DOCKER_CAPS: &str = "00000000a80425fb";

/// Paths the step may see but must read as empty (containerd's masked
/// paths that hold something on a host).
const MASKED: [&str; 8] = [
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/sched_debug",
    "/proc/latency_stats",
    "/proc/acpi",
    "/proc/scsi",
    "/sys/firmware",
];

/// Defines `try NAME CMD...` in a RUN: runs CMD, keeps its output and exit
/// code in `/probe/NAME` (as `rc=N` on the last line), and always succeeds.
const TRY: &str = r#"try() { n=$1; shift; "$@" > /probe/$n 2>&1; echo "rc=$?" >> /probe/$n; }"#;

/// A scheduler and one worker with secrets, a base image, canary files.
struct Farm {
    worker: WorkerProc,
    sched: SchedulerProc,
    _registry: TestRegistry,
    base: String,
    url: String,
    /// The worker's state directory (every build's layers and bundles).
    worker_state: PathBuf,
    /// The worker's pid on the host.
    worker_pid: u32,
    /// A canary file in the worker's state directory.
    state_canary: PathBuf,
    /// A canary file in the test's directory, next to the process logs.
    host_canary: PathBuf,
    dir: tempfile::TempDir,
}

impl Farm {
    fn start() -> Self {
        Self::start_with(&[])
    }

    /// A farm whose scheduler runs with `sched_args`.
    fn start_with(sched_args: &[String]) -> Self {
        Self::start_full(sched_args, &[])
    }

    /// A farm whose scheduler and worker run with these arguments.
    fn start_full(sched_args: &[String], worker_args: &[String]) -> Self {
        let registry = TestRegistry::start();
        let base = push_busybox(&registry, "busybox:latest");
        let dir = tempfile::tempdir().expect("dir");
        let sched = SchedulerProc::start(dir.path(), sched_args, &[]);
        let url = format!("http://127.0.0.1:{}", sched.port);
        let env = [
            ("AWS_SECRET_ACCESS_KEY", WORKER_SECRET),
            ("STRATA_TEST_CANARY", ENV_CANARY),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let worker = WorkerProc::start(dir.path(), "sandbox-worker", &url, worker_args, &env);
        wait_ready(worker.metrics_port, "/readyz", "worker");
        let (worker_pid, worker_state) = worker_process(worker.metrics_port);
        let state_canary = worker_state.join("canary.txt");
        std::fs::write(&state_canary, FILE_CANARY).expect("state canary");
        let host_canary = dir.path().join("host-canary.txt");
        std::fs::write(&host_canary, FILE_CANARY).expect("host canary");
        Farm {
            worker,
            sched,
            _registry: registry,
            base,
            url,
            worker_state,
            worker_pid,
            state_canary,
            host_canary,
            dir,
        }
    }

    fn logs(&self) -> String {
        format!("{}\n{}", self.sched.proc.log(), self.worker.proc.log())
    }

    /// Builds `FROM base` + `body` (with `try` and a writable `/probe`
    /// ready, every busybox applet linked in `/bin`) and exports the image's
    /// files into `<name>-out`.
    fn build(&self, name: &str, body: &str) -> (Output, PathBuf) {
        self.build_with(name, body, &[])
    }

    /// As [`Farm::build`], with more `strata build` arguments.
    fn build_with(&self, name: &str, body: &str, extra: &[&str]) -> (Output, PathBuf) {
        let ctx = self.dir.path().join(name);
        std::fs::create_dir(&ctx).expect("context");
        let dockerfile = format!(
            "FROM {}\nRUN busybox --install -s /bin && mkdir -m 777 /probe\n{body}",
            self.base
        );
        std::fs::write(ctx.join("Dockerfile"), dockerfile).expect("Dockerfile");
        let out = self.dir.path().join(format!("{name}-out"));
        let o = Command::new(strata_tests::bin("strata"))
            .env_remove("STRATA_TOKEN")
            .args(["--scheduler", &self.url, "build", "--progress", "plain"])
            .arg("-o")
            .arg(format!("type=local,dest={}", out.display()))
            .args(extra)
            .arg(&ctx)
            .output()
            .expect("run strata");
        (o, out)
    }

    /// As [`Farm::build`], which must succeed: its probes.
    fn probe(&self, name: &str, body: &str) -> Probe {
        let (o, root) = self.build(name, body);
        let log = text(&o);
        assert!(o.status.success(), "{log}\n{}", self.logs());
        Probe { root, log }
    }
}

/// The pid and `--state` of the worker serving metrics on `port`.
fn worker_process(port: u16) -> (u32, PathBuf) {
    let listen = format!("127.0.0.1:{port}");
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let entry = entry.expect("/proc entry");
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let value = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
        };
        if value("--metrics-listen") == Some(&listen)
            && let Some(state) = value("--state")
        {
            return (pid, PathBuf::from(state));
        }
    }
    panic!("no worker process listening on {listen}");
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// What a build's `try` calls recorded, and its log.
struct Probe {
    root: PathBuf,
    log: String,
}

impl Probe {
    /// The exit code and output of `try NAME ...`.
    fn get(&self, name: &str) -> (i32, String) {
        let path = self.root.join("probe").join(name);
        let all = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), self.log));
        let (out, rc) = all
            .trim_end()
            .rsplit_once("rc=")
            .unwrap_or_else(|| panic!("no exit code in {}: {all}", path.display()));
        (rc.parse().expect("exit code"), out.to_string())
    }

    /// `try NAME ...` succeeded: its output.
    fn ok(&self, name: &str) -> String {
        let (rc, out) = self.get(name);
        assert_eq!(rc, 0, "{name} failed in the step:\n{out}");
        out
    }

    /// `try NAME ...` failed, saying `why`: its output.
    fn failed(&self, name: &str, why: &str) -> String {
        let (rc, out) = self.get(name);
        assert_ne!(rc, 0, "{name} succeeded in the step:\n{out}");
        assert!(
            out.contains(why),
            "{name} failed without saying {why:?}:\n{out}"
        );
        out
    }

    /// Every file under `probe/` and the build log, concatenated.
    fn everything(&self) -> String {
        let mut all = self.log.clone();
        for e in std::fs::read_dir(self.root.join("probe")).expect("probe dir") {
            all.push_str(&std::fs::read_to_string(e.expect("entry").path()).unwrap_or_default());
        }
        all
    }
}

#[test]
fn a_step_sees_none_of_the_workers_environment_or_files() {
    let farm = Farm::start();
    let canary = farm.host_canary.display();
    let state_canary = farm.state_canary.display();
    let state = farm.worker_state.display();
    let pid = farm.worker_pid;
    let p = farm.probe(
        "files",
        &format!(
            "RUN {TRY}; \
             try env env; \
             try environ-1 cat /proc/1/environ; \
             try environ-self cat /proc/self/environ; \
             try environ-worker cat /proc/{pid}/environ; \
             try canary cat {canary}; \
             try state-canary cat {state_canary}; \
             try state-dir ls {state}; \
             try root-1 cat /proc/1/root{canary}; \
             try root-self cat /proc/self/root{state_canary}; \
             try root-link sh -c 'readlink /proc/1/root; readlink /proc/self/root'; \
             try cwd-link readlink /proc/1/cwd; \
             try hostname hostname; \
             try etc-hostname cat /etc/hostname; \
             try machine-id cat /etc/machine-id; \
             try tmp ls -a /tmp\n\
             RUN --network=none {TRY}; \
             try metrics wget -q -O - http://127.0.0.1:{metrics}/metrics\n",
            metrics = farm.worker.metrics_port,
        ),
    );

    // The environment is the step's own: no worker variable anywhere.
    let all = p.everything();
    for secret in [WORKER_SECRET, ENV_CANARY, "AWS_SECRET_ACCESS_KEY"] {
        assert!(
            !all.contains(secret),
            "{secret} leaked into the step:\n{all}"
        );
    }
    assert!(p.ok("env").contains("PATH="), "{}", p.ok("env"));
    assert!(p.ok("environ-1").contains("PATH="));
    assert!(p.ok("environ-self").contains("PATH="));
    // The worker's process is not there to read.
    p.failed("environ-worker", "No such file or directory");

    // The worker's files, named by their host paths, do not exist.
    p.failed("canary", "No such file or directory");
    p.failed("state-canary", "No such file or directory");
    p.failed("state-dir", "No such file or directory");
    p.failed("root-1", "No such file or directory");
    p.failed("root-self", "No such file or directory");
    assert!(!all.contains(FILE_CANARY), "a canary file leaked:\n{all}");
    // The roots /proc offers are the container's own.
    assert_eq!(p.ok("root-link").lines().collect::<Vec<_>>(), ["/", "/"]);
    assert_eq!(p.ok("cwd-link").trim(), "/");

    // The host's identity is not the step's: its own hostname, no
    // /etc/hostname or machine-id from the host.
    assert_eq!(p.ok("hostname").trim(), "buildkitsandbox");
    p.failed("etc-hostname", "No such file or directory");
    p.failed("machine-id", "No such file or directory");
    // The host's /tmp, where the test and the worker keep their files, is
    // not the step's.
    p.failed("tmp", "No such file or directory");
    // Without the host's network, the worker's own endpoints are out of
    // reach.
    p.failed("metrics", "Connection refused");
}

#[test]
fn a_step_sees_only_its_own_processes() {
    let farm = Farm::start();
    let p = farm.probe(
        "pids",
        &format!(
            "RUN {TRY}; \
             try ps ps -o pid,comm; \
             try proc sh -c 'ls /proc | grep -E \"^[0-9]+$\"'; \
             try pid1 cat /proc/1/cmdline\n"
        ),
    );
    let ps = p.ok("ps");
    for host in [
        "strata-worker",
        "strata-scheduler",
        "docker-registry",
        "runc",
    ] {
        assert!(!ps.contains(host), "a host process is visible:\n{ps}");
    }
    // Only the step's own few processes, numbered from 1 in its namespace.
    let pids: Vec<u32> = p
        .ok("proc")
        .lines()
        .map(|l| l.parse().expect("pid"))
        .collect();
    assert!(pids.contains(&1), "{pids:?}");
    assert!(
        pids.len() < 10 && pids.iter().all(|&pid| pid < 100),
        "more processes than the step's own: {pids:?}\n{ps}"
    );
    assert!(!pids.contains(&farm.worker_pid), "{pids:?}");
    // Pid 1 is the step's shell.
    let pid1 = p.ok("pid1").replace('\0', " ");
    assert!(pid1.starts_with("/bin/sh -c try()"), "{pid1:?}");
}

#[test]
fn a_step_cannot_write_outside_its_rootfs() {
    let farm = Farm::start();
    let escape = farm.dir.path().join("escape");
    // A cgroup hierarchy of the step's own (cgroup v1: one per controller).
    let cgroup = if Path::new("/sys/fs/cgroup/memory").is_dir() {
        "/sys/fs/cgroup/memory"
    } else {
        "/sys/fs/cgroup"
    };
    let marker = format!(
        "/strata-sandbox-{}",
        farm.dir.path().file_name().expect("name").to_string_lossy()
    );
    let p = farm.probe(
        "writes",
        &format!(
            "RUN {TRY}; \
             try sysrq sh -c 'echo h > /proc/sysrq-trigger'; \
             try core-pattern sh -c 'echo \"|/bin/sh\" > /proc/sys/kernel/core_pattern'; \
             try sysfs sh -c 'echo 1 > /sys/kernel/uevent_seqnum'; \
             try cgroup mkdir {cgroup}/strata-escape; \
             try masked sh -c 'for f in {masked}; do [ -e $f ] && echo \"$f $(head -c 4096 $f 2>/dev/null | wc -c) $(ls -A $f | wc -l)\"; done; true'; \
             try host-path sh -c 'mkdir -p {escape} && echo x > {escape}/file'; \
             try root-file sh -c 'echo x > {marker}'\n",
            escape = escape.display(),
            masked = MASKED.join(" "),
        ),
    );
    // The kernel's knobs are read-only (and what this kernel lacks stays
    // missing)...
    let sysrq = if Path::new("/proc/sysrq-trigger").exists() {
        "Read-only file system"
    } else {
        "nonexistent directory"
    };
    p.failed("sysrq", sysrq);
    p.failed("core-pattern", "Read-only file system");
    p.failed("sysfs", "Read-only file system");
    p.failed("cgroup", "Read-only file system");
    // ...and what could reveal the host's memory, keys, timers or firmware
    // is there but empty.
    let masked = p.ok("masked");
    for line in masked.lines() {
        assert!(
            line.ends_with(" 0 0") || line.ends_with(" 0 1"),
            "not masked: {line}"
        );
    }
    for path in MASKED.iter().filter(|m| Path::new(m).exists()) {
        assert!(
            masked.lines().any(|l| l.split(' ').next() == Some(*path)),
            "{path} is on the host, not in the step:\n{masked}"
        );
    }

    // Writes to the rootfs land in the image, never on the host.
    p.ok("host-path");
    p.ok("root-file");
    let in_image = p
        .root
        .join(escape.strip_prefix("/").expect("absolute"))
        .join("file");
    assert_eq!(
        std::fs::read_to_string(&in_image).expect("in the image"),
        "x\n"
    );
    assert!(p.root.join(&marker[1..]).is_file());
    assert!(
        !escape.exists(),
        "the step wrote {} on the host",
        escape.display()
    );
    assert!(
        !Path::new(&marker).exists(),
        "the step wrote {marker} on the host"
    );
}

#[test]
fn a_step_cannot_mount_or_leave_its_namespaces() {
    let farm = Farm::start();
    let (major, minor) = host_block_device();
    let p = farm.probe(
        "mounts",
        &format!(
            "RUN mkdir /mnt && {TRY}; \
             try tmpfs mount -t tmpfs none /mnt; \
             try bind mount -o bind / /mnt; \
             try proc mount -t proc proc /mnt; \
             try remount mount -o remount,rw /proc/sys; \
             try unshare-mnt unshare -m true; \
             try unshare-user unshare -U -r true; \
             try nsenter nsenter -t 1 -m true; \
             try disk sh -c 'mknod /disk b {major} {minor} && head -c 512 /disk > /dev/null'; \
             try mem sh -c 'mknod /mem c 1 1 && head -c 1 /mem > /dev/null'; \
             try mountinfo cat /proc/self/mountinfo\n"
        ),
    );
    for name in ["tmpfs", "bind", "proc", "remount"] {
        p.failed(name, "mount: permission denied");
    }
    p.failed("unshare-mnt", "Operation not permitted");
    p.failed("unshare-user", "Operation not permitted");
    p.failed("nsenter", "Operation not permitted");
    // CAP_MKNOD makes the node, the device cgroup denies opening it.
    p.failed("disk", "Operation not permitted");
    p.failed("mem", "Operation not permitted");
    let mountinfo = p.ok("mountinfo");
    assert!(
        !mountinfo
            .lines()
            .any(|l| l.split(' ').nth(4) == Some("/mnt")),
        "{mountinfo}"
    );
}

/// `(major, minor)` of a block device of this host (from
/// `/proc/partitions`), or sda's.
fn host_block_device() -> (u32, u32) {
    std::fs::read_to_string("/proc/partitions")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.parse().ok()?, f.get(1)?.parse().ok()?))
        })
        .next()
        .unwrap_or((8, 0))
}

/// `Name: value` lines of a `/proc/PID/status` dump.
fn status_fields(status: &str) -> std::collections::BTreeMap<String, String> {
    status
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn a_step_runs_with_dockers_capabilities_and_seccomp() {
    let farm = Farm::start();
    let p = farm.probe(
        "privileges",
        &format!(
            "RUN {TRY}; try root cat /proc/self/status\n\
             USER 1000:1000\n\
             RUN {TRY}; try user cat /proc/self/status\n"
        ),
    );
    let root = status_fields(&p.ok("root"));
    for (field, want) in [
        ("CapInh", "0000000000000000"),
        ("CapPrm", DOCKER_CAPS),
        ("CapEff", DOCKER_CAPS),
        ("CapBnd", DOCKER_CAPS),
        ("CapAmb", "0000000000000000"),
        // Docker's seccomp profile, in filter mode.
        ("Seccomp", "2"),
        // Unlike `docker build`, no-new-privileges: setuid binaries (sudo)
        // gain nothing (see below).
        ("NoNewPrivs", "1"),
    ] {
        assert_eq!(
            root.get(field).map(String::as_str),
            Some(want),
            "root step's {field}"
        );
    }
    let user = status_fields(&p.ok("user"));
    assert_eq!(user["Uid"].split_whitespace().next(), Some("1000"));
    for (field, want) in [
        ("CapPrm", "0000000000000000"),
        ("CapEff", "0000000000000000"),
        ("CapBnd", DOCKER_CAPS),
        ("Seccomp", "2"),
    ] {
        assert_eq!(
            user.get(field).map(String::as_str),
            Some(want),
            "non-root step's {field}"
        );
    }
}

#[test]
fn a_step_sees_only_the_standard_devices() {
    let farm = Farm::start();
    let p = farm.probe(
        "devices",
        &format!(
            "RUN {TRY}; \
             try dev ls -A /dev; \
             try disks sh -c 'ls /dev/sd* /dev/vd* /dev/xvd* /dev/nvme* /dev/loop* /dev/mem /dev/kmsg'; \
             try urandom sh -c 'head -c 16 /dev/urandom | wc -c'\n"
        ),
    );
    let dev: BTreeSet<String> = p.ok("dev").split_whitespace().map(String::from).collect();
    let standard: BTreeSet<String> = [
        "console", "core", "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm",
        "stderr", "stdin", "stdout", "tty", "urandom", "zero",
    ]
    .map(String::from)
    .into();
    assert!(
        dev.is_subset(&standard),
        "devices beyond the standard set: {:?}",
        dev.difference(&standard).collect::<Vec<_>>()
    );
    for needed in ["null", "zero", "urandom", "pts", "shm"] {
        assert!(dev.contains(needed), "no /dev/{needed}: {dev:?}");
    }
    p.failed("disks", "No such file or directory");
    assert_eq!(p.ok("urandom").trim(), "16");
}

/// A step as user 1000 that escalates to root the way `sudo` does: a
/// setuid-root busybox run as `su`, root's password empty. It records `su`'s
/// output (`0`, root's uid, when the escalation worked) and its status.
fn escalate(farm: &Farm, name: &str) -> Probe {
    farm.probe(
        name,
        &format!(
            "RUN mkdir /suid && cp /bin/busybox /suid/busybox && chmod 4755 /suid/busybox \
                 && ln -s busybox /suid/su && rm -f /etc/shadow \
                 && printf 'root::0:0:root:/root:/bin/sh\\napp:x:1000:1000::/:/bin/sh\\n' > /etc/passwd \
                 && printf 'root:x:0:\\napp:x:1000:\\n' > /etc/group\n\
             USER 1000:1000\n\
             RUN {TRY}; try su /suid/su -c 'id -u' root; try status cat /proc/self/status\n"
        ),
    )
}

#[test]
fn setuid_binaries_gain_nothing_unless_the_operator_allows_new_privileges() {
    let farm = Farm::start();
    let p = escalate(&farm, "nnp");
    p.failed("su", "must be suid");
    let status = status_fields(&p.ok("status"));
    assert_eq!(status.get("NoNewPrivs").map(String::as_str), Some("1"));
    assert_eq!(status["Uid"].split_whitespace().next(), Some("1000"));
    drop(farm);

    // `--allow-new-privileges`: as docker build, the escalation works,
    // bounded by Docker's capabilities.
    let farm = Farm::start_full(&[], &["--allow-new-privileges".into()]);
    let p = escalate(&farm, "allowed");
    assert_eq!(p.ok("su").trim(), "0");
    let status = status_fields(&p.ok("status"));
    assert_eq!(status.get("NoNewPrivs").map(String::as_str), Some("0"));
}

#[test]
fn an_insecure_step_is_refused_unless_the_operator_allows_it() {
    const STEP: &str =
        "RUN --security=insecure echo ran-$((40+2)); grep CapEff /proc/self/status > /probe/caps\n";
    let farm = Farm::start();
    let (o, _) = farm.build_with("insecure", STEP, &["--allow", "security.insecure"]);
    let log = text(&o);
    assert!(!o.status.success(), "{log}\n{}", farm.logs());
    assert!(
        log.contains("security.insecure is not allowed by this scheduler"),
        "{log}"
    );
    // The step's output (not its text) would say ran-42.
    assert!(!log.contains("ran-42"), "{log}");

    // The operator allows it: the client must still ask.
    let farm = Farm::start_with(&[
        "--allow-insecure-entitlement".into(),
        "security.insecure".into(),
    ]);
    let (o, _) = farm.build("unasked", STEP);
    let log = text(&o);
    assert!(!o.status.success(), "{log}");
    assert!(log.contains("pass --allow security.insecure"), "{log}");
    assert!(
        log.contains("Dockerfile:3"),
        "the error names the line: {log}"
    );
    let (o, out) = farm.build_with("granted", STEP, &["--allow", "security.insecure"]);
    assert!(o.status.success(), "{}\n{}", text(&o), farm.logs());
    let caps = std::fs::read_to_string(out.join("probe/caps")).expect("caps");
    assert!(
        !caps.contains("00000000a80425fb"),
        "an insecure step kept Docker's default capabilities: {caps}"
    );
}
