//! The OCI runtime spec of a step: containerd's default Unix spec with the
//! changes BuildKit's `executor/oci` makes (`GenerateSpec`,
//! `generateMountOpts`, `generateSecurityOpts`).

use std::collections::HashMap;
use std::path::{Component, Path};

use oci_spec::runtime::{
    Capabilities, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxResourcesBuilder, Mount, MountBuilder, ProcessBuilder, RootBuilder,
    Spec, SpecBuilder, UserBuilder,
};

use super::security::{self, MASKED_PATHS, READONLY_PATHS};
use super::user::ResolvedUser;
use super::{DEFAULT_HOSTNAME, ExecSpec, MountSource, Network, seccomp};

/// The runtime-spec version runc 1.1 speaks.
const SPEC_VERSION: &str = "1.0.2-dev";
/// Docker's default `PATH`, which BuildKit's LLB sets when the step has none.
pub(crate) const DEFAULT_PATH: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the spec is built from.
pub(crate) struct SpecInput<'a> {
    pub id: &'a str,
    pub exec: &'a ExecSpec,
    pub user: &'a ResolvedUser,
    pub hosts: &'a Path,
    pub resolv_conf: &'a Path,
    /// Unshare the cgroup namespace (BuildKit does on cgroup v2 hosts).
    pub cgroup_ns: bool,
    /// Apply Docker's default seccomp profile (when the kernel has seccomp).
    pub seccomp: bool,
    /// Set no-new-privileges (on unless the operator allows new
    /// privileges).
    pub no_new_privileges: bool,
}

/// Builds the spec.
pub(crate) fn build(input: &SpecInput<'_>) -> Result<Spec, String> {
    let exec = input.exec;
    let insecure = exec.security_insecure;
    let e = |err: oci_spec::OciSpecError| err.to_string();

    let caps = if insecure {
        security::insecure_caps().map_err(|err| format!("failed to read capabilities: {err}"))?
    } else {
        security::default_caps()
    };
    let (inheritable, ambient) = if insecure {
        (caps.clone(), caps.clone())
    } else {
        (Capabilities::new(), Capabilities::new())
    };
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps.clone())
        .inheritable(inheritable)
        .ambient(ambient)
        .build()
        .map_err(e)?;

    let user = UserBuilder::default()
        .uid(input.user.uid)
        .gid(input.user.gid)
        .additional_gids(input.user.additional_gids.clone())
        .build()
        .map_err(e)?;
    let mut process = ProcessBuilder::default()
        .terminal(false)
        .user(user)
        .args(exec.argv.clone())
        .env(process_env(&exec.env, &input.user.home))
        .cwd(exec.cwd.clone())
        .capabilities(capabilities)
        // Unlike BuildKit (containerd's WithNewPrivileges), setuid binaries
        // gain nothing in RUN unless the operator allows new privileges:
        // a step cannot raise itself above what it was started with. An
        // insecure step has every privilege already, as BuildKit's.
        .no_new_privileges(input.no_new_privileges && !insecure)
        .build()
        .map_err(e)?;
    // BuildKit drops containerd's RLIMIT_NOFILE 1024: steps inherit the
    // worker's limits (a deployment sets LimitNOFILE like dockerd's).
    process.set_rlimits(None);

    let mut namespaces = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ];
    if exec.network == Network::None {
        // A fresh namespace; runc brings up its loopback interface.
        namespaces.push(LinuxNamespaceType::Network);
    }
    if input.cgroup_ns {
        namespaces.push(LinuxNamespaceType::Cgroup);
    }
    let namespaces = namespaces
        .into_iter()
        .map(|t| LinuxNamespaceBuilder::default().typ(t).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(e)?;

    let resources = LinuxResourcesBuilder::default()
        .devices(security::device_rules(insecure)?)
        .build()
        .map_err(e)?;
    let (masked, readonly): (Vec<String>, Vec<String>) = if insecure {
        (Vec::new(), Vec::new())
    } else {
        (
            MASKED_PATHS.map(String::from).to_vec(),
            READONLY_PATHS.map(String::from).to_vec(),
        )
    };
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources)
        .cgroups_path(format!("/strata/{}", input.id))
        .masked_paths(masked)
        .readonly_paths(readonly)
        .devices(if insecure {
            security::insecure_devices()?
        } else {
            Vec::new()
        });
    if !insecure && input.seccomp {
        let names: Vec<String> = caps.iter().map(|c| security::cap_name(*c)).collect();
        linux = linux.seccomp(seccomp::default_profile(&names)?);
    }

    let hostname = if exec.hostname.is_empty() {
        DEFAULT_HOSTNAME
    } else {
        &exec.hostname
    };
    SpecBuilder::default()
        .version(SPEC_VERSION)
        .root(
            RootBuilder::default()
                .path(exec.rootfs.clone())
                .readonly(false)
                .build()
                .map_err(e)?,
        )
        .process(process)
        .hostname(hostname)
        .mounts(mounts(input)?)
        .linux(linux.build().map_err(e)?)
        .build()
        .map_err(e)
}

/// The step's environment: containerd's `WithEnv` (replace or append, a
/// bare `NAME` unsets), then BuildKit's default `PATH` and runc's `HOME`.
pub(crate) fn process_env(env: &[String], home: &str) -> Vec<String> {
    let mut out: Vec<Option<String>> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for entry in env {
        match entry.split_once('=') {
            None => {
                if let Some(&i) = index.get(entry.as_str()) {
                    out[i] = None;
                }
            }
            Some((name, _)) => match index.get(name) {
                Some(&i) => out[i] = Some(entry.clone()),
                None => {
                    index.insert(name.to_owned(), out.len());
                    out.push(Some(entry.clone()));
                }
            },
        }
    }
    let mut out: Vec<String> = out.into_iter().flatten().collect();
    let value = |out: &[String], name: &str| {
        out.iter()
            .find_map(|e| e.strip_prefix(name)?.strip_prefix('=').map(str::to_owned))
    };
    if value(&out, "PATH").is_none() {
        out.push(DEFAULT_PATH.to_owned());
    }
    // runc sets HOME from the user's passwd entry when it is unset or empty.
    if value(&out, "HOME").is_none_or(|h| h.is_empty()) {
        out.retain(|e| !e.starts_with("HOME="));
        out.push(format!("HOME={home}"));
    }
    out
}

/// `path` as an absolute, clean container path; `None` for `/` or a path
/// that climbs out with `..`.
pub(crate) fn clean_destination(path: &str) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(name) => parts.push(name.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop()?;
            }
            _ => {}
        }
    }
    if parts.is_empty() {
        None
    } else {
        Some(format!("/{}", parts.join("/")))
    }
}

fn mount(dest: &str, typ: &str, source: &Path, options: &[&str]) -> Result<Mount, String> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(|e| e.to_string())
}

/// containerd's default mounts without `/run` (moby/buildkit#429), the
/// read-only `resolv.conf` and `hosts` binds, cgroupfs, then the step's own
/// mounts; a later mount on the same destination replaces an earlier one.
fn mounts(input: &SpecInput<'_>) -> Result<Vec<Mount>, String> {
    let exec = input.exec;
    let sys_ro = if exec.security_insecure { "rw" } else { "ro" };
    let etc_bind = ["nosuid", "noexec", "nodev", "rbind", "ro"];
    let p = Path::new;
    let mut list: Vec<(String, Mount)> = Vec::new();
    let mut add = |m: Mount| {
        let dest = m.destination().to_string_lossy().into_owned();
        match list.iter().position(|(d, _)| *d == dest) {
            Some(i) => list[i].1 = m,
            None => list.push((dest, m)),
        }
    };
    add(mount(
        "/proc",
        "proc",
        p("proc"),
        &["nosuid", "noexec", "nodev"],
    )?);
    add(mount(
        "/dev",
        "tmpfs",
        p("tmpfs"),
        &["nosuid", "strictatime", "mode=755", "size=65536k"],
    )?);
    add(mount(
        "/dev/pts",
        "devpts",
        p("devpts"),
        &[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
            "gid=5",
        ],
    )?);
    add(mount(
        "/dev/shm",
        "tmpfs",
        p("shm"),
        &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    )?);
    add(mount(
        "/dev/mqueue",
        "mqueue",
        p("mqueue"),
        &["nosuid", "noexec", "nodev"],
    )?);
    add(mount(
        "/sys",
        "sysfs",
        p("sysfs"),
        &["nosuid", "noexec", "nodev", sys_ro],
    )?);
    add(mount(
        "/etc/resolv.conf",
        "bind",
        input.resolv_conf,
        &etc_bind,
    )?);
    add(mount("/etc/hosts", "bind", input.hosts, &etc_bind)?);
    add(mount(
        "/sys/fs/cgroup",
        "cgroup",
        p("cgroup"),
        &[sys_ro, "nosuid", "noexec", "nodev"],
    )?);
    for m in &exec.mounts {
        let dest = clean_destination(&m.destination)
            .ok_or_else(|| format!("invalid mount destination {:?}", m.destination))?;
        let mut options: Vec<String> = Vec::new();
        let (typ, source) = match &m.source {
            MountSource::Bind(src) => {
                options.push("rbind".into());
                ("bind", src.clone())
            }
            MountSource::Tmpfs { .. } => {
                options.push("nosuid".into());
                ("tmpfs", "tmpfs".into())
            }
        };
        if m.readonly {
            options.push("ro".into());
        }
        if let MountSource::Tmpfs {
            size_bytes: Some(size),
        } = m.source
        {
            options.push(format!("size={size}"));
        }
        let opts: Vec<&str> = options.iter().map(String::as_str).collect();
        add(mount(&dest, typ, &source, &opts)?);
    }
    Ok(list.into_iter().map(|(_, m)| m).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::{ExecMount, Network};
    use std::path::PathBuf;

    fn exec() -> ExecSpec {
        ExecSpec {
            rootfs: PathBuf::from("/r/rootfs"),
            argv: vec!["/bin/sh".into(), "-c".into(), "true".into()],
            env: vec!["A=1".into()],
            cwd: "/".into(),
            user: String::new(),
            network: Network::Host,
            security_insecure: false,
            mounts: vec![ExecMount {
                destination: "/etc/hosts".into(),
                source: MountSource::Bind("/h/hosts".into()),
                readonly: true,
            }],
            hostname: String::new(),
            extra_hosts: Vec::new(),
            timeout: None,
        }
    }

    /// The spec of `exec` with the worker's defaults.
    fn spec_json(exec: &ExecSpec) -> serde_json::Value {
        spec_json_with(exec, true)
    }

    fn spec_json_with(exec: &ExecSpec, no_new_privileges: bool) -> serde_json::Value {
        let user = ResolvedUser {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![1000, 2000],
            home: "/home/app".into(),
        };
        let input = SpecInput {
            id: "step1",
            exec,
            user: &user,
            hosts: Path::new("/b/hosts"),
            resolv_conf: Path::new("/b/resolv.conf"),
            cgroup_ns: false,
            seccomp: false,
            no_new_privileges,
        };
        serde_json::to_value(build(&input).unwrap()).unwrap()
    }

    #[test]
    fn an_operator_can_allow_new_privileges() {
        let v = spec_json_with(&exec(), false);
        assert_eq!(v["process"]["noNewPrivileges"], false);
    }

    #[test]
    fn spec_matches_buildkits_defaults() {
        let v = spec_json(&exec());
        assert_eq!(v["hostname"], "buildkitsandbox");
        assert_eq!(v["root"]["readonly"], false);
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert!(v["process"].get("rlimits").is_none());
        assert_eq!(
            v["process"]["user"]["additionalGids"],
            serde_json::json!([1000, 2000])
        );
        assert_eq!(
            v["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            14
        );
        let ns: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "mount"]);
        assert_eq!(v["linux"]["maskedPaths"].as_array().unwrap().len(), 11);
        let dests: Vec<&str> = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys",
                "/etc/resolv.conf",
                "/etc/hosts",
                "/sys/fs/cgroup"
            ]
        );
        assert_eq!(
            v["mounts"][7]["source"], "/h/hosts",
            "the step's mount wins"
        );
    }

    #[test]
    fn isolated_network_gets_its_own_namespace() {
        let mut e = exec();
        e.network = Network::None;
        let v = spec_json(&e);
        assert_eq!(v["linux"]["namespaces"][4]["type"], "network");
    }

    #[test]
    fn env_replaces_unsets_and_defaults() {
        let env = |e: &[&str], home: &str| {
            process_env(&e.iter().map(|s| s.to_string()).collect::<Vec<_>>(), home)
        };
        assert_eq!(
            env(&["A=1", "B=2", "A=3", "B"], "/root"),
            ["A=3", DEFAULT_PATH, "HOME=/root"]
        );
        assert_eq!(env(&["PATH=/x", "HOME="], "/h"), ["PATH=/x", "HOME=/h"]);
        assert_eq!(env(&["HOME=/mine"], "/h"), ["HOME=/mine", DEFAULT_PATH]);
    }

    #[test]
    fn destinations_are_cleaned() {
        assert_eq!(clean_destination("cache//x/").as_deref(), Some("/cache/x"));
        assert_eq!(clean_destination("/a/../b").as_deref(), Some("/b"));
        assert_eq!(clean_destination("/"), None);
        assert_eq!(clean_destination("/.."), None);
    }
}
