use super::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

struct Roots {
    _tmp: tempfile::TempDir,
    src: PathBuf,
    dst: PathBuf,
}

fn roots() -> Roots {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    fs::create_dir_all(src.join("dir/sub")).expect("mkdir");
    fs::write(src.join("dir/a.txt"), "a").expect("write");
    fs::write(src.join("dir/sub/b.txt"), "b").expect("write");
    fs::write(src.join("top.txt"), "top").expect("write");
    fs::write(src.join("other.md"), "md").expect("write");
    fs::create_dir_all(&dst).expect("mkdir");
    Roots {
        _tmp: tmp,
        src,
        dst,
    }
}

fn read(p: PathBuf) -> String {
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn directory_contents_not_the_directory() {
    let r = roots();
    copy(&r.src, "dir", &r.dst, "/app", &CopyOptions::default()).expect("copy");
    assert_eq!(read(r.dst.join("app/a.txt")), "a");
    assert_eq!(read(r.dst.join("app/sub/b.txt")), "b");
    assert!(!r.dst.join("app/dir").exists());
}

#[test]
fn file_destination_rules() {
    let r = roots();
    copy(&r.src, "top.txt", &r.dst, "/into/", &CopyOptions::default()).expect("copy");
    assert_eq!(read(r.dst.join("into/top.txt")), "top");
    copy(
        &r.src,
        "top.txt",
        &r.dst,
        "/renamed",
        &CopyOptions::default(),
    )
    .expect("copy");
    assert_eq!(read(r.dst.join("renamed")), "top");
    // An existing directory receives the file inside it.
    copy(&r.src, "other.md", &r.dst, "/into", &CopyOptions::default()).expect("copy");
    assert_eq!(read(r.dst.join("into/other.md")), "md");
    let meta = fs::metadata(r.dst.join("into")).expect("stat");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
}

#[test]
fn wildcards_match_per_component_and_may_match_nothing() {
    let r = roots();
    copy(&r.src, "*.txt", &r.dst, "/out/", &CopyOptions::default()).expect("copy");
    assert!(r.dst.join("out/top.txt").exists());
    assert!(!r.dst.join("out/other.md").exists());
    copy(
        &r.src,
        "d*/*.txt",
        &r.dst,
        "/deep/",
        &CopyOptions::default(),
    )
    .expect("copy");
    assert!(r.dst.join("deep/a.txt").exists());
    copy(
        &r.src,
        "*.nothing",
        &r.dst,
        "/none/",
        &CopyOptions::default(),
    )
    .expect("empty wildcard");
    assert!(!r.dst.join("none").exists());
    let err = copy(&r.src, "missing.txt", &r.dst, "/x", &CopyOptions::default()).unwrap_err();
    assert_eq!(err.to_string(), "\"missing.txt\": not found");
}

#[test]
fn links_are_followed_at_the_top_and_kept_inside() {
    let r = roots();
    symlink("dir/a.txt", r.src.join("link.txt")).expect("symlink");
    symlink("a.txt", r.src.join("dir/inner-link")).expect("symlink");
    fs::hard_link(r.src.join("dir/a.txt"), r.src.join("dir/hard.txt")).expect("hardlink");
    copy(&r.src, "link.txt", &r.dst, "/f", &CopyOptions::default()).expect("copy");
    assert!(
        fs::symlink_metadata(r.dst.join("f"))
            .expect("stat")
            .is_file()
    );
    copy(&r.src, "dir", &r.dst, "/d/", &CopyOptions::default()).expect("copy");
    assert_eq!(
        fs::read_link(r.dst.join("d/inner-link"))
            .expect("link")
            .to_str(),
        Some("a.txt")
    );
    let a = fs::metadata(r.dst.join("d/a.txt")).expect("stat");
    let h = fs::metadata(r.dst.join("d/hard.txt")).expect("stat");
    assert_eq!(a.ino(), h.ino(), "hardlinks stay linked");
}

#[test]
fn nothing_outside_the_roots_is_reached() {
    let r = roots();
    // A source link to an absolute path resolves inside the source root.
    fs::create_dir_all(r.src.join("etc")).expect("mkdir");
    fs::write(r.src.join("etc/passwd"), "inside").expect("write");
    symlink("/etc/passwd", r.src.join("pw")).expect("symlink");
    copy(&r.src, "pw", &r.dst, "/pw", &CopyOptions::default()).expect("copy");
    assert_eq!(read(r.dst.join("pw")), "inside");
    copy(
        &r.src,
        "../../../../etc/passwd",
        &r.dst,
        "/pw2",
        &CopyOptions::default(),
    )
    .expect("copy");
    assert_eq!(read(r.dst.join("pw2")), "inside");
    // A destination link to / writes inside the destination root.
    symlink("/", r.dst.join("escape")).expect("symlink");
    copy(
        &r.src,
        "top.txt",
        &r.dst,
        "/escape/tmp/x",
        &CopyOptions::default(),
    )
    .expect("copy");
    assert_eq!(read(r.dst.join("tmp/x")), "top");
}

#[test]
fn chown_chmod_and_excludes() {
    let r = roots();
    let opts = CopyOptions {
        chown: Some((1000, 1001)),
        chmod: Some(Chmod::parse("640").expect("chmod")),
        exclude: Some(PatternMatcher::new(&["sub"]).expect("pattern")),
        utime: Some(1_700_000_000),
        ..CopyOptions::default()
    };
    copy(&r.src, "dir", &r.dst, "/new/parent/", &opts).expect("copy");
    let a = fs::metadata(r.dst.join("new/parent/a.txt")).expect("stat");
    assert_eq!(
        (a.uid(), a.gid(), a.mode() & 0o7777, a.mtime()),
        (1000, 1001, 0o640, 1_700_000_000)
    );
    // Directories the copy creates take an octal --chmod too (fsutil's
    // MkdirAll gets CopyInfo.Mode), as BuildKit makes them.
    let parent = fs::metadata(r.dst.join("new")).expect("stat");
    assert_eq!((parent.uid(), parent.mode() & 0o7777), (1000, 0o640));
    assert!(!r.dst.join("new/parent/sub").exists());
}

#[test]
fn a_destination_symlink_is_written_through() {
    // BuildKit resolves the whole destination (continuity's RootPath): a
    // link stays a link and the file it names gets the content, its
    // missing parents created.
    let r = roots();
    fs::write(r.dst.join("target"), "old").expect("write");
    symlink("target", r.dst.join("link")).expect("symlink");
    symlink("/missing/file", r.dst.join("dangling")).expect("symlink");
    for dest in ["/link", "/dangling"] {
        copy(&r.src, "top.txt", &r.dst, dest, &CopyOptions::default()).expect("copy");
        let meta = fs::symlink_metadata(r.dst.join(&dest[1..])).expect("lstat");
        assert!(meta.file_type().is_symlink(), "{dest} is still a link");
    }
    assert_eq!(read(r.dst.join("target")), "top");
    assert_eq!(read(r.dst.join("missing/file")), "top");
}

#[test]
fn symbolic_chmod() {
    assert_eq!(Chmod::parse("u+x,g-w").unwrap().apply(0o664, false), 0o744);
    assert_eq!(Chmod::parse("a=rX").unwrap().apply(0o600, true), 0o555);
    assert_eq!(Chmod::parse("go=").unwrap().apply(0o755, false), 0o700);
    assert!(Chmod::parse("99999").is_err());
}
