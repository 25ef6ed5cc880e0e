use super::*;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("strata-context-{}-{tag}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn write(&self, rel: &str, content: &[u8]) -> &Self {
        let path = self.0.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
        self
    }

    fn mkdir(&self, rel: &str) -> &Self {
        fs::create_dir_all(self.0.join(rel)).unwrap();
        self
    }

    fn chmod(&self, rel: &str, mode: u32) -> &Self {
        fs::set_permissions(self.0.join(rel), fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    fn walk(&self) -> ContextManifest {
        ContextManifest::walk(&self.0).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn paths(m: &ContextManifest) -> Vec<&str> {
    m.entries.iter().map(|e| e.path.as_str()).collect()
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[test]
fn walks_sorted_with_metadata_and_digests() {
    let t = TempDir::new("basic");
    t.write("Dockerfile", b"FROM scratch\n")
        .write("a/c", b"hello")
        .write("a-b", b"")
        .write("b/d/e", &vec![7u8; 200_000])
        .mkdir("empty")
        .chmod("a/c", 0o640)
        .chmod("a", 0o750)
        .chmod("a-b", 0o4755);
    let m = t.walk();
    assert_eq!(
        paths(&m),
        [
            "Dockerfile",
            "a",
            "a-b",
            "a/c",
            "b",
            "b/d",
            "b/d/e",
            "empty"
        ]
    );

    let c = m.get("a/c").unwrap();
    let meta = fs::symlink_metadata(t.0.join("a/c")).unwrap();
    assert_eq!(c.kind, EntryKind::File);
    assert_eq!(c.mode, 0o640);
    assert_eq!((c.uid, c.gid), (meta.uid(), meta.gid()));
    assert_eq!(c.size, 5);
    // sha256("hello")
    assert_eq!(
        c.digest.as_deref(),
        Some("sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
    );
    assert_eq!(c.link_target, None);

    let a = m.get("a").unwrap();
    assert_eq!(
        (a.kind, a.mode, a.size, a.digest.as_deref()),
        (EntryKind::Dir, 0o750, 0, None)
    );
    assert_eq!(m.get("a-b").unwrap().mode, 0o4755);
    assert_eq!(
        m.get("a-b").unwrap().digest.as_deref(),
        Some(sha(b"").as_str())
    );
    // Bigger than the 64 KiB read buffer.
    let e = m.get("b/d/e").unwrap();
    assert_eq!(
        (e.size, e.digest.clone()),
        (200_000, Some(sha(&vec![7u8; 200_000])))
    );
    assert_eq!(m.total_size(), 13 + 5 + 200_000);
    // Deterministic.
    assert_eq!(t.walk(), m);
}

#[test]
fn symlinks_are_recorded_not_followed() {
    let outside = TempDir::new("outside");
    outside.write("secret", b"x");
    let t = TempDir::new("links");
    t.write("a/c", b"hello");
    symlink(&outside.0, t.0.join("out")).unwrap();
    symlink("a/c", t.0.join("rel")).unwrap();
    symlink("missing", t.0.join("dangling")).unwrap();
    let m = t.walk();
    assert_eq!(paths(&m), ["a", "a/c", "dangling", "out", "rel"]);
    let rel = m.get("rel").unwrap();
    assert_eq!(rel.kind, EntryKind::Symlink);
    assert_eq!(rel.link_target.as_deref(), Some("a/c"));
    assert_eq!(rel.digest, Some(sha(b"a/c")));
    assert_eq!(rel.size, 3);
    let out = m.get("out").unwrap();
    assert_eq!(out.link_target.as_deref(), outside.0.to_str());
    assert!(m.get("out/secret").is_none());
}

#[test]
fn dockerignore_excludes_and_reincludes() {
    let t = TempDir::new("ignore");
    t.write(
        ".dockerignore",
        b"# build output\n*.log\nbuild\n!build/keep.txt\n",
    )
    .write("app.log", b"")
    .write("src/x.log", b"") // `*.log` is anchored at the root
    .write("main.go", b"")
    .write("build/a.o", b"")
    .write("build/keep.txt", b"keep")
    .write("build/sub/b.o", b"");
    let m = t.walk();
    // `build` is excluded but listed because something inside is not.
    assert_eq!(
        paths(&m),
        [
            ".dockerignore",
            "build",
            "build/keep.txt",
            "main.go",
            "src",
            "src/x.log"
        ]
    );
    assert_eq!(m.get("build").unwrap().kind, EntryKind::Dir);
}

#[test]
fn reincluded_directories_keep_their_contents() {
    let t = TempDir::new("reinclude");
    t.write(
        ".dockerignore",
        b"**\n!.dockerignore\n!vendor/keep\nvendor/keep/*.tmp\n",
    )
    .write("vendor/keep/a/b.go", b"")
    .write("vendor/keep/x.tmp", b"")
    .write("vendor/drop/c.go", b"")
    .write("top.go", b"");
    let m = t.walk();
    assert_eq!(
        paths(&m),
        [
            ".dockerignore",
            "vendor",
            "vendor/keep",
            "vendor/keep/a",
            "vendor/keep/a/b.go"
        ]
    );
}

#[test]
fn excluded_dirs_are_pruned_unless_an_exception_could_match() {
    let t = TempDir::new("prune");
    t.write("skip/ok", b"");
    // A name we cannot represent: reading `skip` would fail the walk.
    fs::write(t.0.join("skip").join(OsStr::from_bytes(b"bad\xff")), b"").unwrap();
    for (ignore, descends) in [
        ("skip", false),
        ("skip\n!other/keep", false),
        ("skip\n!skip/keep", true),
        ("skip\n!**/keep", true),
        // `skip` itself is not excluded, so it is listed and read.
        ("skip/*\n!skip", true),
    ] {
        t.write(".dockerignore", ignore.as_bytes());
        let res = ContextManifest::walk(&t.0);
        assert_eq!(
            matches!(res, Err(ContextError::NonUtf8 { .. })),
            descends,
            "{ignore:?}: {res:?}"
        );
    }
}

#[test]
fn dockerfile_and_dockerignore_only_excluded_by_pattern() {
    let t = TempDir::new("self");
    t.write("Dockerfile", b"")
        .write("x", b"")
        .write(".dockerignore", b"x\n");
    assert_eq!(paths(&t.walk()), [".dockerignore", "Dockerfile"]);
    t.write(".dockerignore", b"Dockerfile\n.dockerignore\n");
    assert_eq!(paths(&t.walk()), ["x"]);
}

#[test]
fn special_files_are_skipped() {
    let t = TempDir::new("special");
    t.write("f", b"");
    let _sock = std::os::unix::net::UnixListener::bind(t.0.join("sock")).unwrap();
    assert_eq!(paths(&t.walk()), ["f"]);
}

#[test]
fn pattern_errors_name_the_path_or_file() {
    let t = TempDir::new("errors");
    t.write("x", b"");
    // Passes New, fails when evaluated (like Docker).
    t.write(".dockerignore", b"[Local-Only]\n");
    let err = ContextManifest::walk(&t.0).unwrap_err();
    assert!(
        matches!(&err, ContextError::Match { path, .. } if path == ".dockerignore"),
        "{err}"
    );
    t.write(".dockerignore", b"a\n!\n");
    let err = ContextManifest::walk(&t.0).unwrap_err();
    assert!(matches!(
        err,
        ContextError::Ignore {
            source: PatternError::IllegalExclusion,
            ..
        }
    ));
    t.write(
        ".dockerignore",
        format!("{}\n", "a".repeat(64 * 1024)).as_bytes(),
    );
    let err = ContextManifest::walk(&t.0).unwrap_err();
    assert!(matches!(
        err,
        ContextError::Ignore {
            source: PatternError::LineTooLong { .. },
            ..
        }
    ));
}

#[test]
fn ignore_file_encoding() {
    let t = TempDir::new("encoding");
    t.write("x", b"").write("y", b"");
    t.write(
        ".dockerignore",
        b"\xEF\xBB\xBF# caf\xE9\nx\n.dockerignore\n",
    );
    assert_eq!(paths(&t.walk()), ["y"]);
    t.write(".dockerignore", b"x\ncaf\xE9\n");
    let err = ContextManifest::walk(&t.0).unwrap_err();
    assert!(
        matches!(err, ContextError::IgnoreNotUtf8 { line: 2, .. }),
        "{err}"
    );
    assert_eq!(
        ignore_file_text(b"#\xff\xfe\n".to_vec()),
        Ok("#??\n".to_owned())
    );
}

#[test]
fn walk_with_and_root_errors() {
    let t = TempDir::new("with");
    t.write("a", b"")
        .write("b/c", b"")
        .write(".dockerignore", b"*\n");
    let all = ContextManifest::walk_with(&t.0, None).unwrap();
    assert_eq!(paths(&all), [".dockerignore", "a", "b", "b/c"]);
    let m = PatternMatcher::new(&["b"]).unwrap();
    assert_eq!(
        paths(&ContextManifest::walk_with(&t.0, Some(&m)).unwrap()),
        [".dockerignore", "a"]
    );
    assert!(matches!(
        ContextManifest::walk(&t.0.join("a")),
        Err(ContextError::NotADirectory { .. })
    ));
    let err = ContextManifest::walk(&t.0.join("nope")).unwrap_err();
    assert!(
        matches!(&err, ContextError::Io { path, .. } if path.ends_with("nope")),
        "{err}"
    );
}

fn entry(path: &str, kind: EntryKind, size: u64) -> ContextEntry {
    ContextEntry {
        path: path.into(),
        kind,
        mode: 0o644,
        uid: 0,
        gid: 0,
        size,
        digest: None,
        link_target: None,
        mtime: None,
        hardlink: None,
    }
}

#[test]
fn lookups_subtrees_and_serde() {
    let m = ContextManifest::from_entries(vec![
        entry("a/c", EntryKind::File, 1),
        entry("b", EntryKind::File, 2),
        entry("a-b", EntryKind::File, 4),
        entry("a", EntryKind::Dir, 0),
        entry("a/d/e", EntryKind::File, 8),
        entry("a/d", EntryKind::Dir, 0),
        entry("ab", EntryKind::File, 16),
    ]);
    assert_eq!(paths(&m), ["a", "a-b", "a/c", "a/d", "a/d/e", "ab", "b"]);
    assert_eq!(m.get("a-b").unwrap().size, 4);
    assert!(m.get("a/").is_none());
    assert_eq!(m.total_size(), 31);
    let sub = |d: &str| m.subtree(d).map(|e| e.path.as_str()).collect::<Vec<_>>();
    assert_eq!(sub("a"), ["a", "a/c", "a/d", "a/d/e"]);
    assert_eq!(sub("./a/"), sub("a"));
    assert_eq!(sub("/a/d"), ["a/d", "a/d/e"]);
    assert_eq!(sub("a/c"), ["a/c"]);
    assert_eq!(sub("").len(), 7);
    assert_eq!(sub(".").len(), 7);
    assert!(sub("zz").is_empty());

    let json = serde_json::to_string(&m).unwrap();
    assert!(json.contains(r#""kind":"dir""#), "{json}");
    assert_eq!(serde_json::from_str::<ContextManifest>(&json).unwrap(), m);
    let unsorted = r#"{"entries":[
        {"path":"b","kind":"file","mode":420,"uid":0,"gid":0,"size":2,"digest":null,"link_target":null},
        {"path":"a","kind":"symlink","mode":511,"uid":0,"gid":0,"size":1,"digest":"sha256:x","link_target":"b"}]}"#;
    let m: ContextManifest = serde_json::from_str(unsorted).unwrap();
    assert_eq!(paths(&m), ["a", "b"]);
}

#[test]
fn the_digest_cache_skips_unchanged_files_and_notices_changed_ones() {
    let t = TempDir::new("digest-cache");
    t.write("a.txt", b"alpha")
        .write("dir/b.txt", b"bravo")
        .write("c.txt", b"charlie");
    let cache_file = t.0.with_extension("digests");
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);

    let mut cache = DigestCache::load_as_of(&cache_file, later);
    let first = ContextManifest::walk_cached(&t.0, Some(&mut cache)).unwrap();
    assert_eq!(
        first,
        t.walk(),
        "a cached walk lists what a plain walk does"
    );
    assert_eq!(cache.hits(), 0);
    cache.save(&cache_file).unwrap();

    // Same size, same mtime, other content: the change time tells.
    let path = t.0.join("c.txt");
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    fs::write(&path, b"CHARLIE").unwrap();
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();

    let mut cache = DigestCache::load_as_of(&cache_file, later);
    let second = ContextManifest::walk_cached(&t.0, Some(&mut cache)).unwrap();
    assert_eq!(cache.hits(), 2, "a.txt and dir/b.txt came from the cache");
    assert_eq!(second.get("c.txt").unwrap().digest, Some(sha(b"CHARLIE")));
    assert_eq!(second, t.walk());

    // Files changed within the clock's granularity of the walk are never
    // saved (racily clean), so the next walk hashes them.
    let mut cache = DigestCache::load(&cache_file);
    ContextManifest::walk_cached(&t.0, Some(&mut cache)).unwrap();
    cache.save(&cache_file).unwrap();
    let mut cache = DigestCache::load(&cache_file);
    ContextManifest::walk_cached(&t.0, Some(&mut cache)).unwrap();
    assert_eq!(cache.hits(), 0, "just-written files were trusted");

    // A damaged cache file is no cache, not an error.
    fs::write(&cache_file, "1 2 x\nnot a line\n").unwrap();
    let mut cache = DigestCache::load(&cache_file);
    assert_eq!(
        ContextManifest::walk_cached(&t.0, Some(&mut cache)).unwrap(),
        t.walk()
    );
    let _ = fs::remove_file(&cache_file);
}
