//! Capabilities, masked and read-only paths and devices: containerd's
//! defaults as BuildKit uses them, and BuildKit's insecure mode
//! (`util/entitlements/security`).

use std::collections::HashSet;
use std::fs;

use oci_spec::runtime::{
    Capabilities, Capability, LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType,
};

/// Docker's default capability set (containerd's `defaultUnixCaps`):
/// `CapEff` 0x00000000a80425fb.
pub(crate) const DEFAULT_CAPS: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// containerd's default masked paths: reading them gives nothing.
pub(crate) const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
];

/// containerd's default read-only paths.
pub(crate) const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Capabilities by bit number (linux/capability.h), as far as oci-spec
/// knows them.
const CAPS_BY_BIT: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// The kernel's name for a capability, e.g. `CAP_SYS_ADMIN`.
pub(crate) fn cap_name(cap: Capability) -> String {
    format!("CAP_{cap}")
}

/// The default set.
pub(crate) fn default_caps() -> Capabilities {
    DEFAULT_CAPS.into_iter().collect()
}

/// Insecure mode: every capability the worker itself has (BuildKit adds
/// `cap.Current()`, the worker's effective set, to all five sets).
pub(crate) fn insecure_caps() -> std::io::Result<Capabilities> {
    let status = fs::read_to_string("/proc/self/status")?;
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or_else(|| std::io::Error::other("no CapEff line in /proc/self/status"))?;
    let mut caps: HashSet<Capability> = default_caps();
    caps.extend(caps_from_mask(mask));
    Ok(caps)
}

fn caps_from_mask(mask: u64) -> impl Iterator<Item = Capability> {
    CAPS_BY_BIT
        .into_iter()
        .enumerate()
        .filter(move |(bit, _)| mask & (1u64 << bit) != 0)
        .map(|(_, cap)| cap)
}

/// Device cgroup rules: deny everything (runc then allows its standard
/// devices), or in insecure mode allow every char and block device.
pub(crate) fn device_rules(insecure: bool) -> Result<Vec<LinuxDeviceCgroup>, String> {
    let rule = |typ: Option<LinuxDeviceType>| {
        let b = LinuxDeviceCgroupBuilder::default()
            .allow(insecure)
            .access("rwm");
        match typ {
            Some(t) => b.typ(t).build(),
            None => b.build(),
        }
        .map_err(|e| e.to_string())
    };
    if insecure {
        Ok(vec![
            rule(Some(LinuxDeviceType::C))?,
            rule(Some(LinuxDeviceType::B))?,
        ])
    } else {
        Ok(vec![rule(None)?])
    }
}

/// The devices BuildKit creates in insecure mode: kmsg, cuse, fuse, kvm,
/// tun, loop-control, and loop0 up to 7 past the first free loop device.
pub(crate) fn insecure_devices() -> Result<Vec<LinuxDevice>, String> {
    let dev = |path: String, typ: LinuxDeviceType, major: i64, minor: i64| {
        LinuxDeviceBuilder::default()
            .path(path)
            .typ(typ)
            .major(major)
            .minor(minor)
            .build()
            .map_err(|e| e.to_string())
    };
    let c = LinuxDeviceType::C;
    let mut out = vec![
        dev("/dev/kmsg".into(), c, 1, 11)?,
        dev("/dev/cuse".into(), c, 10, 203)?,
        dev("/dev/fuse".into(), c, 10, 229)?,
        dev("/dev/kvm".into(), c, 10, 232)?,
        dev("/dev/net/tun".into(), c, 10, 200)?,
        dev("/dev/loop-control".into(), c, 10, 237)?,
    ];
    for i in 0..=first_free_loop() + 7 {
        out.push(dev(format!("/dev/loop{i}"), LinuxDeviceType::B, 7, i)?);
    }
    Ok(out)
}

/// The lowest loop device not bound to a file. BuildKit asks
/// `/dev/loop-control` (an ioctl); sysfs shows the same without unsafe
/// code: a bound device has `/sys/block/loopN/loop`.
fn first_free_loop() -> i64 {
    (0..1024)
        .find(|i| !std::path::Path::new(&format!("/sys/block/loop{i}/loop")).exists())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(caps: impl IntoIterator<Item = Capability>) -> u64 {
        caps.into_iter()
            .map(|c| {
                let bit = CAPS_BY_BIT.iter().position(|b| *b == c).unwrap();
                1u64 << bit
            })
            .fold(0, |a, b| a | b)
    }

    #[test]
    fn default_caps_are_dockers_mask() {
        assert_eq!(mask(DEFAULT_CAPS), 0xa80425fb);
    }

    #[test]
    fn masks_decode_to_capabilities() {
        assert_eq!(mask(caps_from_mask(0x1ff_ffff_ffff)), 0x1ff_ffff_ffff);
        assert_eq!(
            caps_from_mask(1 << 21).collect::<Vec<_>>(),
            vec![Capability::SysAdmin]
        );
        assert_eq!(cap_name(Capability::SysAdmin), "CAP_SYS_ADMIN");
        assert_eq!(cap_name(Capability::DacReadSearch), "CAP_DAC_READ_SEARCH");
    }
}
