//! Parsing of `strata build` flags: every error names the bad value, and
//! the binary reports it as `error: ...` before contacting any scheduler.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use strata_client::commands::build::options::{
    OutputSpec, SecretSource, SecretSpec, parse_platforms, source_date_epoch,
};
use strata_client::commands::plan::parse_build_args;
use strata_proto::build::v1 as pb;
use strata_proto::common::v1::Compression;

fn err<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    format!("{:#}", r.expect_err("should fail"))
}

#[test]
fn outputs_parse_like_buildx() {
    assert_eq!(
        OutputSpec::parse("type=registry").unwrap(),
        OutputSpec::Registry {
            compression: Compression::Unspecified,
            force_compression: false,
        }
    );
    assert_eq!(
        OutputSpec::parse("type=registry,compression=zstd").unwrap(),
        OutputSpec::Registry {
            compression: Compression::Zstd,
            force_compression: false,
        }
    );
    assert_eq!(
        OutputSpec::parse("type=registry,compression=gzip,force-compression=true").unwrap(),
        OutputSpec::Registry {
            compression: Compression::Gzip,
            force_compression: true,
        }
    );
    let err = OutputSpec::parse("type=registry,force-compression=yes")
        .unwrap_err()
        .to_string();
    assert!(err.contains("force-compression=\"yes\""), "{err}");
    // As BuildKit: forcing alone forces the default, gzip.
    assert_eq!(
        OutputSpec::parse("type=registry,force-compression=true").unwrap(),
        OutputSpec::Registry {
            compression: Compression::Unspecified,
            force_compression: true,
        }
    );
    let err = OutputSpec::parse("type=registry,compression=lz4")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("lz4") && err.contains("gzip, zstd or uncompressed"),
        "{err}"
    );
    assert_eq!(
        OutputSpec::parse("type=docker,dest=out.tar").unwrap(),
        OutputSpec::Docker {
            dest: PathBuf::from("out.tar"),
            compression: Compression::Unspecified
        }
    );
    assert_eq!(
        OutputSpec::parse("type=oci,dest=/tmp/x.tar").unwrap(),
        OutputSpec::Oci {
            dest: PathBuf::from("/tmp/x.tar"),
            compression: Compression::Unspecified
        }
    );
    assert_eq!(
        OutputSpec::parse("type=oci,dest=x.tar,compression=gzip").unwrap(),
        OutputSpec::Oci {
            dest: PathBuf::from("x.tar"),
            compression: Compression::Gzip
        }
    );
    assert_eq!(
        OutputSpec::parse("type=local,dest=rootfs").unwrap(),
        OutputSpec::Local {
            dest: PathBuf::from("rootfs")
        }
    );
    assert_eq!(
        OutputSpec::parse("outdir").unwrap(),
        OutputSpec::Local {
            dest: PathBuf::from("outdir")
        }
    );
    assert_eq!(
        OutputSpec::parse("type=image,push=true").unwrap(),
        OutputSpec::Registry {
            compression: Compression::Unspecified,
            force_compression: false,
        }
    );
    let wire = OutputSpec::parse("type=docker,dest=a.tar")
        .unwrap()
        .to_proto();
    assert_eq!(wire.r#type(), pb::OutputType::Docker);
    assert_eq!(wire.attrs.get("dest").map(String::as_str), Some("a.tar"));
}

#[test]
fn bad_outputs_name_the_value() {
    let e = err(OutputSpec::parse("type=tarball,dest=x"));
    assert!(
        e.contains("\"type=tarball,dest=x\"") && e.contains("unknown type \"tarball\""),
        "{e}"
    );
    let e = err(OutputSpec::parse("type=docker"));
    assert!(e.contains("\"type=docker\"") && e.contains("dest"), "{e}");
    let e = err(OutputSpec::parse("dest=x"));
    assert!(
        e.contains("\"dest=x\"") && e.contains("type is missing"),
        "{e}"
    );
    let e = err(OutputSpec::parse("type=local,dest"));
    assert!(e.contains("\"dest\" is not key=value"), "{e}");
}

#[test]
fn secrets_parse_and_load() {
    let s = SecretSpec::parse("id=npmrc,src=/home/u/.npmrc").unwrap();
    assert_eq!(s.id, "npmrc");
    assert_eq!(s.source, SecretSource::File("/home/u/.npmrc".into()));
    let s = SecretSpec::parse("id=tok,env=MY_TOKEN").unwrap();
    assert_eq!(s.source, SecretSource::Env("MY_TOKEN".into()));
    let s = SecretSpec::parse("id=aws").unwrap();
    assert_eq!(s.source, SecretSource::File("aws".into()));

    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.txt");
    std::fs::write(&f, b"hunter2").unwrap();
    let s = SecretSpec::parse(&format!("id=pw,src={}", f.display())).unwrap();
    let loaded = s.load().unwrap();
    assert_eq!(loaded.value, b"hunter2");

    let missing = dir.path().join("nope");
    let e = err(
        SecretSpec::parse(&format!("id=pw,src={}", missing.display()))
            .unwrap()
            .load(),
    );
    assert!(e.contains("id=pw") && e.contains("nope"), "{e}");
}

#[test]
fn bad_secrets_name_the_value() {
    let e = err(SecretSpec::parse("src=/x"));
    assert!(
        e.contains("\"src=/x\"") && e.contains("id is missing"),
        "{e}"
    );
    let e = err(SecretSpec::parse("id=a,bogus"));
    assert!(e.contains("\"id=a,bogus\""), "{e}");
    let e = err(SecretSpec::parse("id=a,type=ssh"));
    assert!(
        e.contains("\"id=a,type=ssh\"") && e.contains("file or env"),
        "{e}"
    );
}

#[test]
fn build_args_platforms_and_epoch() {
    let args = parse_build_args(&["A=1".into(), "B=x=y".into()]).unwrap();
    assert_eq!(args.get("B").map(String::as_str), Some("x=y"));
    let e = err(parse_build_args(&["=oops".into()]));
    assert!(e.contains("\"=oops\""), "{e}");

    let p = parse_platforms(Some("linux/arm64/v8,linux/amd64")).unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(
        (p[0].architecture.as_str(), p[0].variant.as_str()),
        ("arm64", "v8")
    );
    let e = err(parse_platforms(Some("linux")));
    assert!(e.contains("\"linux\""), "{e}");

    let mut ba = BTreeMap::new();
    assert_eq!(source_date_epoch(&ba, None).unwrap(), None);
    assert_eq!(
        source_date_epoch(&ba, Some("17")).unwrap().unwrap().seconds,
        17
    );
    ba.insert("SOURCE_DATE_EPOCH".to_string(), "42".to_string());
    // The build arg wins over the environment.
    assert_eq!(
        source_date_epoch(&ba, Some("17")).unwrap().unwrap().seconds,
        42
    );
    ba.insert("SOURCE_DATE_EPOCH".to_string(), "yesterday".to_string());
    let e = err(source_date_epoch(&ba, None));
    assert!(e.contains("\"yesterday\""), "{e}");
}

/// The binary rejects bad flags with `error: ...` and status 1, before it
/// tries to reach the (here unreachable) scheduler.
#[test]
fn the_cli_reports_bad_flags_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["--scheduler", "http://127.0.0.1:1", "build"])
            .args(extra)
            .arg(dir.path())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&["--output", "type=nope"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.starts_with("error: invalid --output \"type=nope\""),
        "{stderr}"
    );
    let (code, stderr) = run(&["--secret", "src=/etc/hostname"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("invalid --secret \"src=/etc/hostname\""),
        "{stderr}"
    );
    let (code, stderr) = run(&["--build-arg", "=x"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("\"=x\""), "{stderr}");
    // Valid flags get as far as connecting, and the error names the URL.
    let (code, stderr) = run(&[]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("http://127.0.0.1:1"), "{stderr}");
}
