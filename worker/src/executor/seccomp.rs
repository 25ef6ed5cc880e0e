//! Docker's default seccomp profile, applied to every step that is not
//! `--security=insecure`, as BuildKit does.
//!
//! `seccomp_default.json` is `default.json` of github.com/moby/profiles
//! (module `seccomp` v0.2.3, the version BuildKit vendors; Apache-2.0,
//! Copyright The Moby Authors), unmodified. [`default_profile`] is a port
//! of that module's `setupSeccomp`: it keeps the rules whose conditions
//! (architecture, capabilities in the bounding set, kernel version) hold.

use std::fs;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompBuilder, LinuxSyscall,
    LinuxSyscallBuilder,
};
use serde::Deserialize;

const DEFAULT_PROFILE: &str = include_str!("seccomp_default.json");

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: LinuxSeccompAction,
    default_errno_ret: Option<u32>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    syscalls: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: Arch,
    sub_architectures: Option<Vec<Arch>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    names: Vec<String>,
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    args: Option<Vec<LinuxSeccompArg>>,
    includes: Option<Filter>,
    excludes: Option<Filter>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    min_kernel: Option<String>,
}

/// What the profile's conditions are evaluated against.
pub(crate) struct Host<'a> {
    /// libseccomp's name of the architecture, e.g. `amd64`.
    pub arch: &'a str,
    /// `(kernel, major)`, e.g. `(6, 1)`.
    pub kernel: (u64, u64),
    /// The bounding set, as `CAP_*` names.
    pub caps: &'a [String],
}

/// The profile for a step with bounding capabilities `caps`, on this host.
pub(crate) fn default_profile(caps: &[String]) -> Result<LinuxSeccomp, String> {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_err(|e| format!("failed to read the kernel version: {e}"))?;
    let host = Host {
        arch: native_arch(),
        kernel: parse_kernel(&kernel),
        caps,
    };
    profile_for(&host)
}

/// Whether the kernel supports seccomp (containerd's `seccomp.IsEnabled`).
pub(crate) fn enabled() -> bool {
    fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Seccomp:")))
}

fn profile_for(host: &Host<'_>) -> Result<LinuxSeccomp, String> {
    let profile: Profile = serde_json::from_str(DEFAULT_PROFILE)
        .map_err(|e| format!("the embedded seccomp profile does not parse: {e}"))?;
    let mut architectures = Vec::new();
    if let Some(native) = seccomp_arch(host.arch)
        && let Some(entry) = profile.arch_map.iter().find(|a| a.architecture == native)
    {
        architectures.push(entry.architecture);
        architectures.extend(entry.sub_architectures.iter().flatten().copied());
    }
    let mut syscalls: Vec<LinuxSyscall> = Vec::new();
    for rule in profile.syscalls {
        if !applies(&rule, host)? {
            continue;
        }
        let mut b = LinuxSyscallBuilder::default()
            .names(rule.names)
            .action(rule.action);
        if let Some(errno) = rule.errno_ret {
            b = b.errno_ret(errno);
        }
        if let Some(args) = rule.args {
            b = b.args(args);
        }
        syscalls.push(b.build().map_err(|e| e.to_string())?);
    }
    let mut b = LinuxSeccompBuilder::default()
        .default_action(profile.default_action)
        .architectures(architectures)
        .syscalls(syscalls);
    if let Some(errno) = profile.default_errno_ret {
        b = b.default_errno_ret(errno);
    }
    b.build().map_err(|e| e.to_string())
}

fn applies(rule: &Rule, host: &Host<'_>) -> Result<bool, String> {
    let has_cap = |c: &String| host.caps.contains(c);
    if let Some(ex) = &rule.excludes {
        if ex.arches.iter().any(|a| a == host.arch) || ex.caps.iter().any(has_cap) {
            return Ok(false);
        }
        if let Some(min) = &ex.min_kernel
            && host.kernel >= parse_min_kernel(min)?
        {
            return Ok(false);
        }
    }
    if let Some(inc) = &rule.includes {
        if !inc.arches.is_empty() && !inc.arches.iter().any(|a| a == host.arch) {
            return Ok(false);
        }
        if !inc.caps.iter().all(has_cap) {
            return Ok(false);
        }
        if let Some(min) = &inc.min_kernel
            && host.kernel < parse_min_kernel(min)?
        {
            return Ok(false);
        }
    }
    Ok(true)
}

fn parse_min_kernel(v: &str) -> Result<(u64, u64), String> {
    let (k, m) = v
        .split_once('.')
        .ok_or_else(|| format!("invalid minKernel {v:?} in the seccomp profile"))?;
    let num = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| format!("invalid minKernel {v:?} in the seccomp profile"))
    };
    Ok((num(k)?, num(m)?))
}

/// `(kernel, major)` of a release string like `6.1.0-18-amd64`; suffixes
/// and minor revisions are ignored, as moby does.
fn parse_kernel(release: &str) -> (u64, u64) {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let kernel = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let major = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (kernel, major)
}

/// libseccomp's name for the architecture this worker was built for.
fn native_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "x86",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    }
}

fn seccomp_arch(native: &str) -> Option<Arch> {
    Some(match native {
        "x86" => Arch::ScmpArchX86,
        "amd64" => Arch::ScmpArchX86_64,
        "arm" => Arch::ScmpArchArm,
        "arm64" => Arch::ScmpArchAarch64,
        "loong64" => Arch::ScmpArchLoongarch64,
        "ppc64" => Arch::ScmpArchPpc64,
        "ppc64le" => Arch::ScmpArchPpc64le,
        "riscv64" => Arch::ScmpArchRiscv64,
        "s390x" => Arch::ScmpArchS390x,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &LinuxSeccomp) -> Vec<String> {
        p.syscalls()
            .iter()
            .flatten()
            .filter(|s| s.action() == LinuxSeccompAction::ScmpActAllow && s.args().is_none())
            .flat_map(|s| s.names().clone())
            .collect()
    }

    fn host(caps: &[String]) -> Host<'_> {
        Host {
            arch: "amd64",
            kernel: (6, 1),
            caps,
        }
    }

    #[test]
    fn default_profile_denies_with_eperm_and_gates_on_caps() {
        let default: Vec<String> = ["CAP_CHOWN", "CAP_SYS_CHROOT"].map(String::from).to_vec();
        let p = profile_for(&host(&default)).unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(1));
        assert_eq!(
            p.architectures().clone().unwrap(),
            vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
        );
        let allowed = names(&p);
        assert!(allowed.contains(&"read".to_string()));
        assert!(allowed.contains(&"chroot".to_string()));
        assert!(
            !allowed.contains(&"mount".to_string()),
            "mount needs CAP_SYS_ADMIN"
        );
        assert!(
            allowed.contains(&"ptrace".to_string()),
            "allowed from kernel 4.8 on"
        );
        let old = Host {
            kernel: (4, 4),
            ..host(&default)
        };
        assert!(!names(&profile_for(&old).unwrap()).contains(&"ptrace".to_string()));

        let admin: Vec<String> = vec!["CAP_SYS_ADMIN".into()];
        assert!(names(&profile_for(&host(&admin)).unwrap()).contains(&"mount".to_string()));
    }

    #[test]
    fn kernel_versions_parse_like_moby() {
        assert_eq!(parse_kernel("6.18.44-fc-v669\n"), (6, 18));
        assert_eq!(parse_kernel("3.12-1-amd64"), (3, 12));
        assert_eq!(parse_min_kernel("4.8").unwrap(), (4, 8));
    }
}
