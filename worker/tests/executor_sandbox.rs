//! What a step sees inside its container, with real runc: user, network,
//! capabilities, masked paths, seccomp, /etc files, mounts.

mod executor_support;

use std::fs;
use std::os::unix::fs::MetadataExt;

use executor_support::{bare_rootfs, executor, interfaces, rootfs, run, sh, stdout_of, step_id};
use strata_worker::executor::{ExecMount, MountSource, Network};

const DOCKER_DEFAULT_CAPS: &str = "00000000a80425fb";

fn host_cap_eff() -> String {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    line["CapEff:".len()..].trim().to_owned()
}

#[tokio::test]
async fn user_name_resolves_with_supplementary_groups_and_home() {
    let (exec, _state) = executor().await;
    let root = rootfs();
    let mut spec = sh(root.path(), "id; echo $HOME");
    spec.user = "app".into();
    let out = stdout_of(&exec, &step_id("user-app"), spec).await;
    assert_eq!(
        out,
        "uid=1000(app) gid=1000(app) groups=1000(app),2000(extra)\n/home/app\n"
    );

    let out = stdout_of(
        &exec,
        &step_id("user-root"),
        sh(root.path(), "id; echo $HOME"),
    )
    .await;
    assert_eq!(out, "uid=0(root) gid=0(root) groups=0(root)\n/root\n");

    let mut spec = sh(root.path(), "id");
    spec.user = "1000:2000".into();
    let out = stdout_of(&exec, &step_id("user-num"), spec).await;
    assert_eq!(out, "uid=1000(app) gid=2000(extra) groups=2000(extra)\n");
}

#[tokio::test]
async fn network_none_has_only_loopback() {
    let (exec, _state) = executor().await;
    let root = rootfs();
    let mut spec = sh(root.path(), "cat /proc/net/dev");
    spec.network = Network::None;
    let out = stdout_of(&exec, &step_id("net-none"), spec).await;
    assert_eq!(interfaces(&out), ["lo"]);
}

#[tokio::test]
async fn host_network_is_the_default() {
    let (exec, _state) = executor().await;
    let root = rootfs();
    let out = stdout_of(
        &exec,
        &step_id("net-host"),
        sh(root.path(), "cat /proc/net/dev"),
    )
    .await;
    let host = fs::read_to_string("/proc/net/dev").unwrap();
    assert_eq!(interfaces(&out), interfaces(&host));
}

#[tokio::test]
async fn default_capabilities_are_dockers() {
    let (exec, _state) = executor().await;
    let root = rootfs();
    let script = "grep CapEff /proc/self/status; grep CapBnd /proc/self/status";
    let out = stdout_of(&exec, &step_id("caps"), sh(root.path(), script)).await;
    assert_eq!(
        out,
        format!("CapEff:\t{DOCKER_DEFAULT_CAPS}\nCapBnd:\t{DOCKER_DEFAULT_CAPS}\n")
    );
}

#[tokio::test]
async fn insecure_mode_has_all_the_workers_capabilities() {
    let (exec, _state) = executor().await;
    let root = rootfs();
    let mut spec = sh(root.path(), "grep CapEff /proc/self/status");
    spec.security_insecure = true;
    let out = stdout_of(&exec, &step_id("caps-insecure"), spec).await;
    assert_eq!(out, format!("CapEff:\t{}\n", host_cap_eff()));
}

const MASKED_FILES: [&str; 4] = [
    "/proc/kcore",
    "/proc/timer_list",
    "/proc/keys",
    "/proc/sched_debug",
];

fn masked_probe() -> String {
    MASKED_FILES
        .map(|f| format!("[ -e {f} ] && echo \"{f} $(head -c 64 {f} | wc -c)\";"))
        .join(" ")
        + " true"
}

#[tokio::test]
async fn masked_paths_read_nothing() {
    let (exec, _state) = executor().await;
    let root = rootfs();
    let out = stdout_of(&exec, &step_id("masked"), sh(root.path(), &masked_probe())).await;
    let present: Vec<&str> = MASKED_FILES
        .into_iter()
        .filter(|f| fs::metadata(f).is_ok())
        .collect();
    assert!(!present.is_empty(), "the host has none of {MASKED_FILES:?}");
    let expected: String = present.iter().map(|f| format!("{f} 0\n")).collect();
    assert_eq!(out, expected);

    let script = "ls /sys/firmware | wc -l; echo x > /proc/sys/kernel/domainname";
    let (result, out) = run(&exec, &step_id("readonly"), sh(root.path(), script)).await;
    assert_eq!(result.unwrap().code, Some(1));
    assert_eq!(out.stdout, "0\n");
    assert!(
        out.stderr.contains("Read-only file system"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn insecure_mode_masks_nothing() {
    let (exec, _state) = executor().await;
    let root = rootfs();
    let mut spec = sh(root.path(), "head -c 64 /proc/timer_list | wc -c");
    spec.security_insecure = true;
    let out = stdout_of(&exec, &step_id("unmasked"), spec).await;
    assert_eq!(out, "64\n");
}

#[tokio::test]
async fn seccomp_applies_dockers_default_profile() {
    let (exec, _state) = executor().await;
    let root = rootfs();
    let script = "grep Seccomp: /proc/self/status; unshare -U true || echo denied";
    let (result, out) = run(&exec, &step_id("seccomp"), sh(root.path(), script)).await;
    assert!(result.unwrap().success());
    assert_eq!(out.stdout, "Seccomp:\t2\ndenied\n");
    assert!(
        out.stderr.contains("Operation not permitted"),
        "{}",
        out.stderr
    );

    let mut spec = sh(root.path(), "grep Seccomp: /proc/self/status");
    spec.security_insecure = true;
    let out = stdout_of(&exec, &step_id("seccomp-off"), spec).await;
    assert_eq!(out, "Seccomp:\t0\n");
}

#[tokio::test]
async fn etc_files_are_there_during_the_step_and_gone_after() {
    let (exec, _state) = executor().await;
    let root = rootfs();
    let etc = root.path().join("etc");
    let etc_mtime = fs::metadata(&etc).unwrap().modified().unwrap();
    let mut spec = sh(
        root.path(),
        "cat /etc/hosts; grep -c nameserver /etc/resolv.conf; hostname; \
         echo x > /etc/hosts || echo read-only",
    );
    spec.extra_hosts = vec![("mirror.test".into(), "10.1.2.3".into())];
    let (result, out) = run(&exec, &step_id("etc"), spec).await;
    let status = result.unwrap();
    assert!(status.success(), "{}", out.stderr);
    let stdout = out.stdout;
    assert!(
        stdout.starts_with("127.0.0.1\tlocalhost buildkitsandbox\n"),
        "{stdout}"
    );
    assert!(stdout.contains("10.1.2.3\tmirror.test\n"), "{stdout}");
    assert!(!stdout.contains("\n0\n"), "no nameserver: {stdout}");
    assert!(stdout.ends_with("buildkitsandbox\nread-only\n"), "{stdout}");

    for file in ["hosts", "resolv.conf", "hostname"] {
        assert!(!etc.join(file).exists(), "/etc/{file} left in the rootfs");
    }
    assert_eq!(fs::metadata(&etc).unwrap().modified().unwrap(), etc_mtime);
    let stubs: Vec<(&str, bool)> = status
        .mount_stubs
        .iter()
        .map(|s| (s.path.as_str(), s.removed))
        .collect();
    assert_eq!(stubs, [("/etc/resolv.conf", true), ("/etc/hosts", true)]);
}

#[tokio::test]
async fn a_missing_etc_is_removed_unless_the_step_wrote_into_it() {
    let (exec, _state) = executor().await;
    let root = bare_rootfs();
    let out = stdout_of(
        &exec,
        &step_id("no-etc"),
        sh(root.path(), "cat /etc/hosts | wc -l"),
    )
    .await;
    assert_eq!(out, "2\n");
    assert!(!root.path().join("etc").exists(), "/etc left in the rootfs");

    // The step's own /etc/hostname is part of its layer, as with BuildKit.
    let (result, _) = run(
        &exec,
        &step_id("etc-write"),
        sh(root.path(), "echo myhost > /etc/hostname"),
    )
    .await;
    let status = result.unwrap();
    assert!(status.success());
    assert_eq!(
        fs::read_to_string(root.path().join("etc/hostname")).unwrap(),
        "myhost\n"
    );
    assert!(!root.path().join("etc/hosts").exists());
    let etc = status
        .mount_stubs
        .iter()
        .find(|s| s.path == "/etc")
        .unwrap();
    assert!(etc.is_dir && !etc.removed);
}

#[tokio::test]
async fn missing_working_directory_is_created_for_the_user() {
    let (exec, _state) = executor().await;
    let root = rootfs();
    let mut spec = sh(root.path(), "pwd; touch mine");
    spec.cwd = "/work/src".into();
    spec.user = "app".into();
    let out = stdout_of(&exec, &step_id("cwd"), spec).await;
    assert_eq!(out, "/work/src\n");
    for dir in ["work", "work/src"] {
        let meta = fs::metadata(root.path().join(dir)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (1000, 1000, 0o755),
            "{dir}"
        );
    }
    assert!(root.path().join("work/src/mine").exists());
}

#[tokio::test]
async fn extra_mounts_are_bound_and_their_stubs_removed() {
    let (exec, _state) = executor().await;
    let root = rootfs();
    let cache = tempfile::tempdir().unwrap();
    let secret = tempfile::NamedTempFile::new().unwrap();
    fs::write(secret.path(), "s3cret").unwrap();
    let mut spec = sh(
        root.path(),
        "echo cached > /var/cache/app/f; cat /run/secrets/token; echo; \
         echo x > /run/secrets/token || echo ro; echo t > /scratch/t && ls /scratch",
    );
    spec.mounts = vec![
        ExecMount {
            destination: "/var/cache/app".into(),
            source: MountSource::Bind(cache.path().to_path_buf()),
            readonly: false,
        },
        ExecMount {
            destination: "/run/secrets/token".into(),
            source: MountSource::Bind(secret.path().to_path_buf()),
            readonly: true,
        },
        ExecMount {
            destination: "/scratch".into(),
            source: MountSource::Tmpfs {
                size_bytes: Some(1 << 20),
            },
            readonly: false,
        },
    ];
    let (result, out) = run(&exec, &step_id("mounts"), spec).await;
    let status = result.unwrap();
    assert!(status.success(), "{}", out.stderr);
    assert_eq!(out.stdout, "s3cret\nro\nt\n");
    assert_eq!(
        fs::read_to_string(cache.path().join("f")).unwrap(),
        "cached\n"
    );
    for path in ["var", "run", "scratch"] {
        assert!(
            !root.path().join(path).exists(),
            "/{path} left in the rootfs"
        );
    }
    assert!(
        status.mount_stubs.iter().all(|s| s.removed),
        "{:?}",
        status.mount_stubs
    );
}
