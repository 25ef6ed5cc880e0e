//! The flask example in embedded mode, as the README's quickstart runs it:
//! a Debian base made with debootstrap from this machine's mirror
//! (`scripts/debian-base.sh`), imported with `strata import`, then
//! `examples/flask/Dockerfile.debian` built on it (apt-get inside RUN).
//! `strata history` lists each instruction with its layer size, and the
//! image's filesystem has Flask and the app (and not what .dockerignore
//! excludes).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use strata_tests::bin;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

fn strata(home: &Path, args: &[&str]) -> Output {
    Command::new(bin("strata"))
        .env("STRATA_HOME", home)
        .env_remove("STRATA_SCHEDULER")
        .args(args)
        .output()
        .expect("run strata")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The Debian rootfs tarball, made (or reused from its cache) by the
/// script the quickstart uses.
fn debian_rootfs() -> PathBuf {
    let out = Command::new(repo().join("scripts/debian-base.sh"))
        .output()
        .expect("run scripts/debian-base.sh");
    assert!(
        out.status.success(),
        "debian-base.sh failed:\n{}",
        text(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = stdout
        .lines()
        .rev()
        .find(|l| l.ends_with(".tar"))
        .map(|l| PathBuf::from(l.trim()))
        .unwrap_or_else(|| panic!("debian-base.sh printed no tarball path:\n{stdout}\n{stderr}"));
    assert!(path.is_file(), "{} does not exist", path.display());
    path
}

#[test]
fn flask_example_on_a_debootstrapped_base() {
    let rootfs = debian_rootfs();
    let home = tempfile::tempdir().expect("home");
    let suite = rootfs
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("debian-"))
        .and_then(|n| n.strip_suffix("-rootfs.tar"))
        .expect("debian-<suite>-rootfs.tar")
        .to_string();
    let base = format!("strata-local/debian:{suite}");
    let import = strata(
        home.path(),
        &["import", rootfs.to_str().expect("utf-8"), &base],
    );
    assert!(import.status.success(), "{}", text(&import));

    let flask = repo().join("examples/flask");
    let f = flask.to_str().expect("utf-8");
    let dockerfile = flask.join("Dockerfile.debian");
    let build = strata(
        home.path(),
        &[
            "build",
            "--progress",
            "plain",
            "--build-arg",
            &format!("BASE={base}"),
            "-f",
            dockerfile.to_str().expect("utf-8"),
            "-t",
            "my_flask_app:latest",
            f,
        ],
    );
    assert!(build.status.success(), "{}", text(&build));

    let history = strata(
        home.path(),
        &["history", "--no-trunc", "my_flask_app:latest"],
    );
    assert!(history.status.success(), "{}", text(&history));
    let h = String::from_utf8_lossy(&history.stdout).into_owned();
    let row = |needle: &str| {
        h.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in history:\n{h}"))
            .to_string()
    };
    assert!(
        row("ENTRYPOINT [\"flask\" \"run\" \"--host=0.0.0.0\"]").contains(" 0B "),
        "{h}"
    );
    assert!(
        row("ENV FLASK_APP=/opt/my_flask_app/app.py").contains(" 0B "),
        "{h}"
    );
    assert!(row("RUN /bin/sh -c apt-get update").contains("MB"), "{h}");
    assert!(
        row("RUN /bin/sh -c apt-get install -y").contains("MB"),
        "{h}"
    );
    let copy = row("COPY . /opt/my_flask_app");
    assert!(copy.contains("kB") || copy.contains("B "), "{h}");
    assert!(row("Imported from").contains("MB"), "{h}");

    // The filesystem, exported: Flask from Debian and the app, no Dockerfile.
    let dest = tempfile::tempdir().expect("dest");
    let export = strata(
        home.path(),
        &[
            "build",
            "--progress",
            "plain",
            "--build-arg",
            &format!("BASE={base}"),
            "-f",
            dockerfile.to_str().expect("utf-8"),
            "-o",
            &format!("type=local,dest={}", dest.path().display()),
            f,
        ],
    );
    assert!(export.status.success(), "{}", text(&export));
    assert_eq!(
        text(&export).matches(" CACHED").count(),
        3,
        "a rebuild reuses every layer:\n{}",
        text(&export)
    );
    assert!(dest.path().join("usr/bin/flask").exists());
    assert_eq!(
        std::fs::read(dest.path().join("opt/my_flask_app/app.py")).expect("app.py"),
        std::fs::read(flask.join("app.py")).expect("app.py")
    );
    assert!(!dest.path().join("opt/my_flask_app/Dockerfile").exists());
}
