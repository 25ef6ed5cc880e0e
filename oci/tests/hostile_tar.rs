//! Hostile layer tars that `layer_unpack.rs` does not already cover: names
//! smuggled through PAX and GNU long-name records, `..` in the middle of a
//! name, relative symlinks climbing out, whiteouts and opaque markers
//! through a symlink, duplicate entries replacing a symlink, zstd bombs,
//! device nodes, unsupported entry types and broken streams.
//!
//! Runs without root: owners are not applied (`chown: false`) and device
//! nodes are only expected to appear when the test runs as root.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use strata_oci::layer::{Compression, LayerError, LayerWriter, UnpackOptions, unpack};

/// A tar header with the name and link written as raw bytes (the `tar`
/// crate's builder refuses hostile names).
fn header(name: &str, kind: u8, link: &str, size: usize) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_mode(if kind == b'5' { 0o755 } else { 0o644 });
    h.set_size(size as u64);
    h.set_mtime(1_600_000_000);
    h
}

/// One entry: its header block and its data, padded to a block.
fn block(mut h: tar::Header, data: &[u8]) -> Vec<u8> {
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn entry(name: &str, kind: u8, link: &str, data: &[u8]) -> Vec<u8> {
    block(header(name, kind, link, data.len()), data)
}

fn file(name: &str, data: &str) -> Vec<u8> {
    entry(name, b'0', "", data.as_bytes())
}

fn link(name: &str, kind: u8, target: &str) -> Vec<u8> {
    entry(name, kind, target, b"")
}

/// A PAX extended header (`x`) carrying `records` for the next entry.
fn pax(records: &[(&str, &str)]) -> Vec<u8> {
    let mut data = String::new();
    for (k, v) in records {
        // The length prefix counts itself.
        let body = format!(" {k}={v}\n");
        let mut len = body.len() + 1;
        while format!("{len}{body}").len() != len {
            len += 1;
        }
        data.push_str(&format!("{len}{body}"));
    }
    entry("PaxHeaders/x", b'x', "", data.as_bytes())
}

/// A GNU long-name record (`L`) naming the next entry.
fn gnu_long_name(name: &str) -> Vec<u8> {
    entry("././@LongLink", b'L', "", format!("{name}\0").as_bytes())
}

fn tar(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = entries.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn opts() -> UnpackOptions {
    UnpackOptions {
        chown: false,
        ..UnpackOptions::default()
    }
}

/// A scratch directory holding the unpack root `root/` and, next to it,
/// whatever a test wants to protect.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("strata-hostile-tar")
            .tempdir()
            .expect("temp dir");
        fs::create_dir(dir.path().join("root")).expect("root");
        Scratch { dir }
    }

    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("root")
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// Names in the scratch dir: anything but `root` (and what the test
    /// put there) escaped.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn unpack(&self, layer: &[u8]) -> Result<(), LayerError> {
        unpack(layer, &self.root(), &opts()).map(|_| ())
    }
}

/// The error is an `UnsafeEntry` for `entry`, and its text names it and
/// says why (`reason`).
fn rejected(err: LayerError, entry: &str, reason: &str) {
    let text = err.to_string();
    match &err {
        LayerError::UnsafeEntry { entry: e, .. } => assert_eq!(e, entry, "{text}"),
        other => panic!("expected UnsafeEntry for {entry:?}, got {other}"),
    }
    assert!(
        text.contains(&format!("{entry:?}")),
        "names the entry: {text}"
    );
    assert!(text.contains(reason), "says why ({reason}): {text}");
}

#[test]
fn dotdot_in_the_middle_of_a_name_is_rejected() {
    let s = Scratch::new();
    let err = s.unpack(&tar(&[file("a/../../x", "x")])).unwrap_err();
    rejected(err, "a/../../x", "`..`");
    assert_eq!(s.names(), ["root"]);
}

#[test]
fn pax_and_gnu_names_cannot_smuggle_an_escape() {
    let s = Scratch::new();
    // The ustar name is harmless; the PAX `path` record replaces it.
    let layer = tar(&[pax(&[("path", "../evil")]), file("innocent", "x")]);
    rejected(s.unpack(&layer).unwrap_err(), "../evil", "`..`");

    let layer = tar(&[gnu_long_name("../../evil"), file("innocent", "x")]);
    rejected(s.unpack(&layer).unwrap_err(), "../../evil", "`..`");

    let layer = tar(&[pax(&[("path", "/etc/evil")]), file("innocent", "x")]);
    rejected(s.unpack(&layer).unwrap_err(), "/etc/evil", "absolute");

    // A hardlink whose PAX `linkpath` leaves the root.
    let layer = tar(&[
        pax(&[("linkpath", "../../etc/passwd")]),
        link("h", b'1', "harmless"),
    ]);
    rejected(s.unpack(&layer).unwrap_err(), "h", "hardlink target");
    assert_eq!(s.names(), ["root"]);
    assert!(!s.root().join("innocent").exists() && !s.root().join("h").exists());
}

#[test]
fn relative_symlinks_climbing_out_are_never_written_through() {
    let s = Scratch::new();
    let layer = tar(&[link("up", b'2', "../.."), file("up/evil", "pwned")]);
    rejected(
        s.unpack(&layer).unwrap_err(),
        "up/evil",
        "up is a symlink; layer entries may not be written through symlinks",
    );
    // The link itself is kept: it is harmless inside the image.
    assert_eq!(
        fs::read_link(s.root().join("up")).expect("link"),
        Path::new("../..")
    );
    assert_eq!(s.names(), ["root"]);

    // A directory entry through the link is refused the same way.
    let layer = tar(&[link("d", b'2', ".."), entry("d/sub/", b'5', "", b"")]);
    rejected(s.unpack(&layer).unwrap_err(), "d/sub/", "d is a symlink");
    assert_eq!(s.names(), ["root"]);
}

#[test]
fn whiteouts_and_opaque_markers_never_delete_through_a_symlink() {
    let s = Scratch::new();
    let victim = s.path("victim");
    fs::create_dir(&victim).expect("victim");
    fs::write(victim.join("secret"), "keep").expect("secret");
    let target = victim.display().to_string();

    let layer = tar(&[link("l", b'2', &target), file("l/.wh.secret", "")]);
    rejected(
        s.unpack(&layer).unwrap_err(),
        "l/.wh.secret",
        "l is a symlink",
    );
    let layer = tar(&[link("l", b'2', &target), file("l/.wh..wh..opq", "")]);
    rejected(
        s.unpack(&layer).unwrap_err(),
        "l/.wh..wh..opq",
        "l is a symlink",
    );
    assert_eq!(
        fs::read_to_string(victim.join("secret")).expect("still there"),
        "keep"
    );
}

#[test]
fn a_later_entry_replaces_a_symlink_instead_of_writing_through_it() {
    let s = Scratch::new();
    let victim = s.path("victim");
    fs::write(&victim, "keep").expect("victim");
    let outside = s.path("outside");
    fs::create_dir_all(outside.join("sub")).expect("outside");
    let mtime = |p: &Path| fs::metadata(p).expect("stat").mtime();
    let before = mtime(&outside.join("sub"));
    let layer = tar(&[
        link("x", b'2', &victim.display().to_string()),
        file("x", "new content"),
        // Duplicates of every kind: the last one wins, as in containerd.
        entry("d/", b'5', "", b""),
        file("d/f", "f"),
        file("d", "a file now"),
        file("twice", "first"),
        file("twice", "second"),
        // Directories replaced by a link out: their times are not restored
        // through it.
        entry("e/", b'5', "", b""),
        entry("e/sub/", b'5', "", b""),
        link("e", b'2', &outside.display().to_string()),
    ]);
    s.unpack(&layer).expect("duplicates are applied in order");
    assert_eq!(fs::read_to_string(&victim).expect("victim"), "keep");
    let x = fs::symlink_metadata(s.root().join("x")).expect("x");
    assert!(x.is_file(), "x is a regular file, not the link");
    assert_eq!(
        fs::read_to_string(s.root().join("x")).expect("x"),
        "new content"
    );
    assert_eq!(
        fs::read_to_string(s.root().join("d")).expect("d"),
        "a file now"
    );
    assert_eq!(
        fs::read_to_string(s.root().join("twice")).expect("twice"),
        "second"
    );
    assert!(
        fs::symlink_metadata(s.root().join("e"))
            .expect("e")
            .is_symlink()
    );
    assert_eq!(mtime(&outside.join("sub")), before);
}

#[test]
fn zstd_bombs_hit_the_byte_limit() {
    let s = Scratch::new();
    let big = tar(&[entry("zeros", b'0', "", &vec![0u8; 8 << 20])]);
    let mut w = LayerWriter::new(Vec::new(), Compression::ZSTD, 1).expect("writer");
    w.write_all(&big).expect("write");
    let blob = w.finish().expect("finish").1;
    assert!(blob.len() < 64 << 10, "a small blob that inflates to 8 MiB");
    let limited = UnpackOptions {
        max_bytes: 1 << 20,
        ..opts()
    };
    let err = unpack(blob.as_slice(), &s.root(), &limited).unwrap_err();
    assert!(
        matches!(err, LayerError::LimitExceeded { what: "bytes", .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("exceeds the unpack limit of 1048576 bytes"),
        "{err}"
    );
    let written = fs::metadata(s.root().join("zeros")).map_or(0, |m| m.len());
    assert!(written <= 1 << 20, "stopped at the limit, wrote {written}");
}

#[test]
fn device_nodes_and_fifos_are_created_as_containerd_does() {
    let s = Scratch::new();
    let mut null = header("dev/null", b'3', "", 0);
    null.set_device_major(1).expect("major");
    null.set_device_minor(3).expect("minor");
    let dev = block(null, b"");
    let result = s.unpack(&tar(&[
        entry("dev/", b'5', "", b""),
        dev,
        link("fifo", b'6', ""),
    ]));
    if nix::unistd::geteuid().is_root() {
        result.expect("devices unpack as root");
        let m = fs::symlink_metadata(s.root().join("dev/null")).expect("dev/null");
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), nix::sys::stat::makedev(1, 3));
        let fifo = fs::symlink_metadata(s.root().join("fifo")).expect("fifo");
        assert!(fifo.file_type().is_fifo());
    } else {
        let err = result.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("\"dev/null\"") && text.contains("mknod"),
            "{text}"
        );
    }
}

#[test]
fn unsupported_entry_types_name_the_entry_and_type() {
    let s = Scratch::new();
    let err = s.unpack(&tar(&[entry("tape", b'V', "", b"")])).unwrap_err();
    assert!(
        matches!(&err, LayerError::UnsupportedEntry { entry, kind: 'V' } if entry == "tape"),
        "{err}"
    );
    assert!(err.to_string().contains("\"tape\""), "{err}");
}

#[test]
fn truncated_and_garbage_streams_fail_without_panicking() {
    let s = Scratch::new();
    let layer = tar(&[file("f", &"x".repeat(4096))]);
    // Cut in the middle of the file's data.
    let err = s.unpack(&layer[..1024]).unwrap_err();
    assert!(
        matches!(err, LayerError::Read(_)) && err.to_string().contains("unexpected EOF"),
        "{err}"
    );

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layer).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let err = s.unpack(&gz[..gz.len() / 2]).unwrap_err();
    assert!(!err.to_string().is_empty());

    // Garbage after a gzip magic, and a header block with a bad checksum.
    let err = s.unpack(&[0x1f, 0x8b, 0x08, 0, 1, 2, 3, 4, 5]).unwrap_err();
    assert!(
        err.to_string().contains("reading the layer stream"),
        "{err}"
    );
    let mut bad = file("g", "x");
    bad[148] ^= 1;
    let err = s.unpack(&tar(&[bad])).unwrap_err();
    assert!(
        err.to_string().contains("reading the layer stream"),
        "{err}"
    );
}
