//! ADD: archives are extracted (whatever their name), other files copied,
//! and no entry escapes the destination.

use super::*;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, symlink};

/// One raw tar entry; names are written as given (`..` and absolute names
/// included, which `tar::Builder` would refuse).
struct E<'a> {
    name: &'a str,
    kind: tar::EntryType,
    data: &'a [u8],
    link: &'a str,
    mode: u32,
    owner: (u64, u64),
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> E<'a> {
    E {
        name,
        kind: tar::EntryType::Regular,
        data,
        link: "",
        mode: 0o644,
        owner: (1234, 5678),
    }
}

fn entry<'a>(name: &'a str, kind: tar::EntryType, link: &'a str) -> E<'a> {
    E {
        name,
        kind,
        data: b"",
        link,
        mode: if kind == tar::EntryType::Directory {
            0o750
        } else {
            0o777
        },
        owner: (1234, 5678),
    }
}

fn tar(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..e.name.len()].copy_from_slice(e.name.as_bytes());
        h.as_old_mut().linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        h.set_entry_type(e.kind);
        h.set_size(e.data.len() as u64);
        h.set_mode(e.mode);
        h.set_uid(e.owner.0);
        h.set_gid(e.owner.1);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        b.append(&h, e.data).expect("append");
    }
    b.into_inner().expect("finish")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

struct Roots {
    tmp: tempfile::TempDir,
    src: PathBuf,
    dst: PathBuf,
}

fn roots(archive: &[u8]) -> Roots {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    fs::create_dir_all(&src).expect("mkdir");
    fs::create_dir_all(&dst).expect("mkdir");
    // Named like anything but an archive: detection is by content.
    fs::write(src.join("bundle.dat"), archive).expect("write");
    Roots { tmp, src, dst }
}

fn add_bundle(r: &Roots, dest: &str, opts: &CopyOptions) -> Result<(), CopyError> {
    add(&r.src, "bundle.dat", &r.dst, dest, opts, true)
}

#[test]
fn archives_extract_with_their_owners_modes_links_and_times() {
    let archive = gzip(&tar(&[
        entry("app/", tar::EntryType::Directory, ""),
        E {
            mode: 0o4755,
            ..file("app/bin/tool", b"#!/bin/sh\n")
        },
        entry("app/bin/alias", tar::EntryType::Symlink, "tool"),
        entry("app/hard", tar::EntryType::Link, "app/bin/tool"),
        file("app/.wh.kept", b"not a whiteout here"),
        file("app/replace", b"new"),
    ]));
    let r = roots(&archive);
    fs::create_dir_all(r.dst.join("opt/app")).expect("mkdir");
    fs::write(r.dst.join("opt/app/existing"), "stays").expect("write");
    fs::write(r.dst.join("opt/app/replace"), "old").expect("write");

    add_bundle(&r, "/opt", &CopyOptions::default()).expect("add");
    let app = r.dst.join("opt/app");
    let tool = fs::metadata(app.join("bin/tool")).expect("tool");
    assert_eq!(
        (tool.uid(), tool.gid(), tool.mode() & 0o7777, tool.mtime()),
        (1234, 5678, 0o4755, 1_600_000_000)
    );
    assert_eq!(
        fs::read_link(app.join("bin/alias")).expect("link"),
        Path::new("tool")
    );
    assert_eq!(
        fs::metadata(app.join("hard")).expect("hard").ino(),
        tool.ino()
    );
    assert_eq!(
        fs::read_to_string(app.join(".wh.kept")).expect("wh"),
        "not a whiteout here"
    );
    assert_eq!(
        fs::read_to_string(app.join("replace")).expect("replace"),
        "new"
    );
    assert_eq!(
        fs::read_to_string(app.join("existing")).expect("kept"),
        "stays"
    );
    let dir = fs::metadata(&app).expect("app");
    assert_eq!((dir.mode() & 0o7777, dir.mtime()), (0o750, 1_600_000_000));
    // A parent the archive implies but does not list.
    let bin = fs::metadata(app.join("bin")).expect("bin");
    assert_eq!((bin.uid(), bin.mode() & 0o7777), (0, 0o755));
    assert!(
        !r.dst.join("opt/bundle.dat").exists(),
        "extracted, not copied"
    );
}

#[test]
fn chown_overrides_the_archive_owners_and_utime_the_times() {
    let r = roots(&tar(&[file("a/f", b"x")]));
    let opts = CopyOptions {
        chown: Some((1000, 1001)),
        utime: Some(1_700_000_000),
        ..CopyOptions::default()
    };
    add_bundle(&r, "/into/", &opts).expect("add");
    let f = fs::metadata(r.dst.join("into/a/f")).expect("into/a/f");
    assert_eq!((f.uid(), f.gid(), f.mtime()), (1000, 1001, 1_700_000_000));
    // `a` is implied by `a/f`, not listed: root's, as moby makes it.
    let a = fs::metadata(r.dst.join("into/a")).expect("into/a");
    assert_eq!((a.uid(), a.gid(), a.mtime()), (0, 0, 1_700_000_000));
    let into = fs::metadata(r.dst.join("into")).expect("into");
    assert_eq!((into.uid(), into.gid()), (1000, 1001));
}

#[test]
fn plain_files_and_unpack_false_copy() {
    let r = roots(&gzip(&tar(&[file("f", b"x")])));
    fs::write(r.src.join("notes.txt"), "notes").expect("write");
    fs::write(r.src.join("fake.tar.gz"), gzip(b"gzip but no tar inside")).expect("write");
    add(
        &r.src,
        "notes.txt",
        &r.dst,
        "/d/",
        &CopyOptions::default(),
        true,
    )
    .expect("add");
    add(
        &r.src,
        "fake.tar.gz",
        &r.dst,
        "/d/",
        &CopyOptions::default(),
        true,
    )
    .expect("add");
    add(
        &r.src,
        "bundle.dat",
        &r.dst,
        "/raw/",
        &CopyOptions::default(),
        false,
    )
    .expect("add");
    assert_eq!(
        fs::read_to_string(r.dst.join("d/notes.txt")).expect("notes"),
        "notes"
    );
    assert!(r.dst.join("d/fake.tar.gz").is_file());
    assert!(r.dst.join("raw/bundle.dat").is_file() && !r.dst.join("raw/f").exists());
    // Wildcards: each match is extracted or copied on its own.
    add(
        &r.src,
        "*.dat",
        &r.dst,
        "/w/",
        &CopyOptions::default(),
        true,
    )
    .expect("add");
    assert!(r.dst.join("w/f").is_file());
}

#[test]
fn relative_symlinks_inside_the_destination_are_followed() {
    let r = roots(&tar(&[
        entry("v1/", tar::EntryType::Directory, ""),
        entry("current", tar::EntryType::Symlink, "v1"),
        file("current/file", b"via link"),
    ]));
    add_bundle(&r, "/app", &CopyOptions::default()).expect("add");
    assert_eq!(
        fs::read_to_string(r.dst.join("app/v1/file")).expect("file"),
        "via link"
    );
}

fn rejected(entries: &[E<'_>], existing_link: Option<(&str, &str)>) -> String {
    let r = roots(&gzip(&tar(entries)));
    fs::create_dir_all(r.dst.join("app")).expect("mkdir");
    if let Some((name, target)) = existing_link {
        symlink(target, r.dst.join("app").join(name)).expect("symlink");
    }
    let err = add_bundle(&r, "/app", &CopyOptions::default()).expect_err("must be rejected");
    assert!(matches!(err, CopyError::UnsafeEntry { .. }), "{err}");
    assert!(!r.tmp.path().join("evil").exists() && !r.dst.join("evil").exists());
    err.to_string()
}

#[test]
fn entries_escaping_the_destination_are_rejected_by_name() {
    let msg = rejected(&[file("ok", b""), file("../evil", b"x")], None);
    assert!(
        msg.contains("\"../evil\"") && msg.contains("bundle.dat"),
        "{msg}"
    );
    let msg = rejected(&[file("a/../../evil", b"x")], None);
    assert!(msg.contains("a/../../evil"), "{msg}");
    let msg = rejected(&[file("/evil", b"x")], None);
    assert!(
        msg.contains("\"/evil\"") && msg.contains("absolute"),
        "{msg}"
    );
    let msg = rejected(&[entry("evil", tar::EntryType::Link, "../outside")], None);
    assert!(msg.contains("hardlink target contains `..`"), "{msg}");
    let msg = rejected(
        &[
            entry("up", tar::EntryType::Symlink, "../.."),
            file("up/evil", b"x"),
        ],
        None,
    );
    assert!(
        msg.contains("\"up/evil\"") && msg.contains("outside"),
        "{msg}"
    );
    let msg = rejected(
        &[
            entry("abs", tar::EntryType::Symlink, "/"),
            file("abs/evil", b"x"),
        ],
        None,
    );
    assert!(msg.contains("\"abs/evil\""), "{msg}");
    // A symlink already in the destination is held to the same rule.
    let msg = rejected(&[file("lib/evil", b"x")], Some(("lib", "/")));
    assert!(msg.contains("\"lib/evil\""), "{msg}");
}

#[test]
fn decompression_bombs_are_bounded() {
    let big = vec![0u8; 4 << 20];
    let r = roots(&gzip(&tar(&[file("zeros", &big)])));
    let small = CopyOptions {
        archive_limits: ArchiveLimits {
            max_bytes: 1 << 20,
            ..ArchiveLimits::default()
        },
        ..CopyOptions::default()
    };
    let err = add_bundle(&r, "/d", &small).expect_err("over the byte limit");
    assert!(
        matches!(err, CopyError::ArchiveLimit { what: "bytes", .. }),
        "{err}"
    );

    let many: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    let entries: Vec<E<'_>> = many.iter().map(|n| file(n, b"")).collect();
    let r = roots(&tar(&entries));
    let few = CopyOptions {
        archive_limits: ArchiveLimits {
            max_entries: 10,
            ..ArchiveLimits::default()
        },
        ..CopyOptions::default()
    };
    let err = add_bundle(&r, "/d", &few).expect_err("over the entry limit");
    assert!(
        matches!(
            err,
            CopyError::ArchiveLimit {
                what: "entries",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("bundle.dat"), "{err}");
}
