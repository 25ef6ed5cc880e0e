//! Unpacking: whiteout and opaque semantics, compression detection, and
//! refusal of hostile layers. Needs root (CI runs as root).

#[path = "layer_common/mod.rs"]
mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::Scratch;
use strata_oci::layer::{
    Compression, CompressionKind, LayerError, LayerWriter, UnpackOptions, unpack,
    unpack_to_overlay_layer_dir,
};

/// A tar entry with raw name bytes (the `tar` crate's builder refuses the
/// hostile names these tests need).
fn entry(name: &str, kind: u8, link: &str, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_mode(if kind == b'5' { 0o755 } else { 0o644 });
    h.set_size(data.len() as u64);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn tar(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = entries.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn file(name: &str, data: &str) -> Vec<u8> {
    entry(name, b'0', "", data.as_bytes())
}

fn dir(name: &str) -> Vec<u8> {
    entry(name, b'5', "", b"")
}

fn compress(tar: &[u8], c: Compression) -> Vec<u8> {
    let mut w = LayerWriter::new(Vec::new(), c, 2).expect("writer");
    w.write_all(tar).expect("write");
    w.finish().expect("finish").1
}

fn names(root: &Path) -> Vec<String> {
    common::snapshot(root, common::Xattrs::Capability)
        .keys()
        .map(|p| p.display().to_string())
        .collect()
}

fn rejected(err: LayerError, entry: &str) {
    match &err {
        LayerError::UnsafeEntry { entry: e, .. } => assert_eq!(e, entry, "{err}"),
        other => panic!("expected UnsafeEntry for {entry:?}, got {other}"),
    }
    assert!(
        err.to_string().contains(entry),
        "the message names the entry: {err}"
    );
}

#[test]
fn whiteouts_and_opaque_markers_apply_to_lower_layers_only() {
    let s = Scratch::new();
    let root = s.dir("root");
    let base = tar(&[
        dir("d/"),
        file("d/a", "a"),
        file("d/b", "b"),
        file("e", "e"),
        dir("keep/"),
    ]);
    let layer = tar(&[
        dir("d/"),
        // A child of this layer listed before the marker must survive it.
        file("d/c", "c"),
        file("d/.wh..wh..opq", ""),
        file(".wh.e", ""),
        file("keep/new", "n"),
    ]);
    let opts = UnpackOptions::default();
    unpack(base.as_slice(), &root, &opts).expect("base");
    let report = unpack(layer.as_slice(), &root, &opts).expect("layer");
    assert_eq!(names(&root), ["d", "d/c", "keep", "keep/new"]);
    assert_eq!(report.entries, 5);
    assert_eq!(report.compression, CompressionKind::Uncompressed);
}

#[test]
fn overlay_layer_dirs_keep_whiteouts_overlay_native() {
    let s = Scratch::new();
    let lower = s.dir("lower");
    let upper = s.dir("layer");
    let base = tar(&[dir("d/"), file("d/a", "a"), file("e", "e")]);
    let layer = tar(&[
        dir("d/"),
        file("d/.wh..wh..opq", ""),
        file("d/c", "c"),
        file(".wh.e", ""),
    ]);
    let no_parents: [&Path; 0] = [];
    let opts = UnpackOptions::default();
    unpack_to_overlay_layer_dir(base.as_slice(), &lower, &no_parents, &opts).expect("base");
    unpack_to_overlay_layer_dir(layer.as_slice(), &upper, &[&lower], &opts).expect("layer");
    let wh = fs::symlink_metadata(upper.join("e")).expect("whiteout");
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "e is a 0:0 whiteout"
    );
    assert_eq!(
        xattr::get(upper.join("d"), "trusted.overlay.opaque").expect("xattr"),
        Some(b"y".to_vec())
    );
    let merged = common::Overlay::mount(&[&upper, &lower], None, &s.path("merged"));
    assert_eq!(names(&merged.merged), ["d", "d/c"]);
}

#[test]
fn every_compression_is_detected_and_gives_the_same_diff_id() {
    let s = Scratch::new();
    let layer = tar(&[dir("a/"), file("a/f", "hello")]);
    let mut diff_ids = Vec::new();
    for c in [
        Compression::ZSTD,
        Compression::GZIP,
        Compression::Uncompressed,
    ] {
        let root = s.dir(&format!("root-{c:?}").replace([' ', '{', '}', ':'], ""));
        let report = unpack(
            compress(&layer, c).as_slice(),
            &root,
            &UnpackOptions::default(),
        )
        .expect("unpack");
        assert_eq!(report.compression, c.kind());
        assert_eq!(fs::read(root.join("a/f")).expect("read"), b"hello");
        diff_ids.push(report.diff_id);
    }
    assert!(diff_ids.windows(2).all(|w| w[0] == w[1]), "{diff_ids:?}");
}

#[test]
fn names_escaping_the_root_are_rejected() {
    let s = Scratch::new();
    let root = s.dir("root");
    let opts = UnpackOptions::default();
    let err = unpack(tar(&[file("../x", "x")]).as_slice(), &root, &opts).unwrap_err();
    rejected(err, "../x");
    assert!(!s.path("x").exists());

    let err = unpack(tar(&[file("/abs", "x")]).as_slice(), &root, &opts).unwrap_err();
    rejected(err, "/abs");
    assert!(!Path::new("/abs").exists());

    let err = unpack(tar(&[file(".wh..", "")]).as_slice(), &root, &opts).unwrap_err();
    rejected(err, ".wh..");
}

#[test]
fn writes_through_symlinks_are_rejected() {
    let s = Scratch::new();
    let root = s.dir("root");
    let victim = s.dir("victim");
    let opts = UnpackOptions::default();
    // `a -> /`, then a path through it that would land in the scratch dir.
    let through = format!(
        "a/{}/passwd",
        victim.strip_prefix("/").expect("absolute").display()
    );
    let layer = tar(&[entry("a", b'2', "/", b""), file(&through, "pwned")]);
    let err = unpack(layer.as_slice(), &root, &opts).unwrap_err();
    rejected(err, &through);
    assert!(
        !victim.join("passwd").exists(),
        "nothing written outside the root"
    );

    // The same with the classic target.
    let before = fs::read("/etc/passwd").expect("read /etc/passwd");
    let root2 = s.dir("root2");
    let layer = tar(&[entry("a", b'2', "/", b""), file("a/etc/passwd", "pwned")]);
    let err = unpack(layer.as_slice(), &root2, &opts).unwrap_err();
    rejected(err, "a/etc/passwd");
    assert_eq!(fs::read("/etc/passwd").expect("read /etc/passwd"), before);
}

#[test]
fn hardlinks_leaving_the_root_are_rejected() {
    let s = Scratch::new();
    let opts = UnpackOptions::default();
    let root = s.dir("root");
    let layer = tar(&[entry("l", b'1', "../../etc/passwd", b"")]);
    rejected(unpack(layer.as_slice(), &root, &opts).unwrap_err(), "l");

    // A hardlink target reached through a symlink would link a host file
    // into the image (and let later layers write to it).
    let outside = s.dir("outside");
    fs::write(outside.join("secret"), "s").expect("write");
    let root2 = s.dir("root2");
    let layer = tar(&[
        entry("s", b'2', &outside.display().to_string(), b""),
        entry("l", b'1', "s/secret", b""),
    ]);
    rejected(unpack(layer.as_slice(), &root2, &opts).unwrap_err(), "l");
    assert!(!root2.join("l").exists());
    assert_eq!(
        fs::metadata(outside.join("secret")).expect("stat").nlink(),
        1
    );
}

#[test]
fn decompression_bombs_hit_the_limits() {
    let s = Scratch::new();
    let big = tar(&[entry("zeros", b'0', "", &vec![0u8; 8 << 20])]);
    let blob = compress(&big, Compression::GZIP);
    assert!(blob.len() < 64 << 10, "a small blob that inflates 8 MiB");
    let opts = UnpackOptions {
        max_bytes: 1 << 20,
        ..UnpackOptions::default()
    };
    let err = unpack(blob.as_slice(), &s.dir("bytes"), &opts).unwrap_err();
    assert!(
        matches!(err, LayerError::LimitExceeded { what: "bytes", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("max_bytes"), "{err}");

    let many: Vec<Vec<u8>> = (0..50).map(|i| file(&format!("f{i}"), "")).collect();
    let opts = UnpackOptions {
        max_entries: 10,
        ..UnpackOptions::default()
    };
    let err = unpack(tar(&many).as_slice(), &s.dir("entries"), &opts).unwrap_err();
    assert!(
        matches!(
            err,
            LayerError::LimitExceeded {
                what: "entries",
                ..
            }
        ),
        "{err}"
    );
}
