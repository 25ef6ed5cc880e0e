//! Layer bytes equal BuildKit's: the diffIDs below were produced by Go
//! reference code on the very trees these tests build, so a change to the
//! tar writer that would make strata's layers differ from `docker build`'s
//! fails here. Needs root (CI runs as root).
//!
//! To regenerate, run the tests with `STRATA_LAYER_GOLDEN_DIR=<empty dir on
//! a filesystem with trusted xattrs>`, which keeps the trees there, then
//! run this Go program (containerd v2.4.2, BuildKit v0.34.2) on them:
//!
//! ```go
//! // goref trees <epoch> <lower> <new> <out.tar>
//! //   archive.WriteDiff(ctx, f, lower, new, archive.WithSourceDateEpoch(&epoch))
//! // goref upper <epoch> <upper> <upperview> <lower> <out.tar>
//! //   cw := archive.NewChangeWriter(f, upperview, archive.WithModTimeUpperBound(epoch))
//! //   overlay.Changes(ctx, cw.HandleChange, upper, upperview, lower); cw.Close()
//! ```
//!
//! where `upperview` is `mount -t overlay -o lowerdir=<upper>:<empty dir>`
//! (what BuildKit's `overlay.WriteUpperdir` mounts), and `sha256sum` the
//! outputs.

#[path = "layer_common/mod.rs"]
mod common;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::{BASE_TIME, EPOCH, Overlay, Scratch, capability, chmod, mkdir, set_mtime, write};
use nix::unistd::{Gid, Uid, chown};
use strata_oci::layer::{
    Compression, LayerOptions, UnpackOptions, unpack, unpack_to_overlay_layer_dir,
    write_layer_from_trees, write_layer_from_upper,
};

/// `archive.WriteDiff(empty, base)` for [`common::build_base`].
const GOLDEN_BASE: &str = "sha256:ad9da0eaaa4050863e6a014cab63139a33bf5bf1efa86df1166451adb4bffd35";
/// BuildKit's overlay differ and containerd's walking differ for
/// [`common::mutate`] on the base (both give the same bytes).
const GOLDEN_STEP: &str = "sha256:72b3220036bd91c55c55a16c3242651de3d1253381e8294ac1e15d5bb2317987";
/// `archive.WriteDiff(empty, tree)` for [`pax_tree`].
const GOLDEN_PAX: &str = "sha256:1421c4797260b15d35c5ff48dbb35a06ee6f5d2211e55f573fffabcd8fb22afa";

/// A scratch tmpfs, or the directory named by `STRATA_LAYER_GOLDEN_DIR`
/// (kept for regenerating the digests).
fn workdir(name: &str) -> (Option<Scratch>, PathBuf) {
    common::require_root();
    match std::env::var_os("STRATA_LAYER_GOLDEN_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir).join(name);
            fs::create_dir_all(&dir).expect("create golden dir");
            (None, dir)
        }
        None => {
            let s = Scratch::new();
            let dir = s.dir(name);
            (Some(s), dir)
        }
    }
}

fn opts() -> LayerOptions {
    LayerOptions {
        source_date_epoch: Some(EPOCH),
        ..LayerOptions::default()
    }
}

fn dir(root: &Path, name: &str) -> PathBuf {
    let p = root.join(name);
    fs::create_dir_all(&p).expect("mkdir");
    p
}

#[test]
fn base_and_step_layers_equal_buildkit_bytes() {
    let (_scratch, root) = workdir("scenario");
    let src = dir(&root, "base-src");
    let empty = dir(&root, "empty");
    common::build_base(&src);
    let mut base = Vec::new();
    let base_desc =
        write_layer_from_trees(&empty, &src, &mut base, Compression::Uncompressed, &opts())
            .expect("base layer");
    assert_eq!(
        base_desc.diff_id, GOLDEN_BASE,
        "base layer differs from containerd's"
    );

    let lower = dir(&root, "lower");
    let none: [&Path; 0] = [];
    unpack_to_overlay_layer_dir(base.as_slice(), &lower, &none, &UnpackOptions::default())
        .expect("unpack base");
    let upper = dir(&root, "upper");
    let work = dir(&root, "work");
    let ov = Overlay::mount(&[&lower], Some((&upper, &work)), &root.join("merged"));
    common::mutate(&ov.merged);
    ov.unmount();
    let step = write_layer_from_upper(
        &upper,
        &[&lower],
        std::io::sink(),
        Compression::Uncompressed,
        &opts(),
    )
    .expect("step layer from upper");
    assert_eq!(
        step.diff_id, GOLDEN_STEP,
        "overlay layer differs from BuildKit's"
    );

    let tree_lower = dir(&root, "tree-lower");
    let tree_new = dir(&root, "tree-new");
    unpack(base.as_slice(), &tree_lower, &UnpackOptions::default()).expect("unpack");
    unpack(base.as_slice(), &tree_new, &UnpackOptions::default()).expect("unpack");
    common::mutate(&tree_new);
    let trees = write_layer_from_trees(
        &tree_lower,
        &tree_new,
        std::io::sink(),
        Compression::Uncompressed,
        &opts(),
    )
    .expect("step layer from trees");
    assert_eq!(
        trees.diff_id, GOLDEN_STEP,
        "tree layer differs from containerd's"
    );
}

/// Entries that need PAX headers or USTAR prefix splitting.
fn pax_tree(root: &Path) {
    let long_dir = root.join("d".repeat(120));
    mkdir(&long_dir, 0o755);
    write(&long_dir.join("f".repeat(60)), b"x\n", 0o644);
    write(&long_dir.join("hl1"), b"h\n", 0o644);
    fs::hard_link(long_dir.join("hl1"), root.join("h".repeat(120))).expect("link");
    let unsplittable = root.join("e".repeat(200));
    mkdir(&unsplittable, 0o755);
    mkdir(&unsplittable.join("sub"), 0o755);
    write(&unsplittable.join("sub/file"), b"y\n", 0o644);
    write(&root.join("n".repeat(150)), b"z\n", 0o644);
    write(&root.join("caf\u{e9} men\u{fc} \u{2713}"), b"u\n", 0o644);
    mkdir(&root.join("d\u{ef}r"), 0o755);
    write(&root.join("d\u{ef}r/x"), b"1\n", 0o644);
    write(
        &root.join(std::ffi::OsStr::from_bytes(b"inv\xffalid")),
        b"",
        0o644,
    );
    write(&root.join("space name"), b"", 0o644);
    write(&root.join("new\nline"), b"", 0o644);
    write(&root.join("biguid"), b"big\n", 0o644);
    chown(
        &root.join("biguid"),
        Some(Uid::from_raw(3_000_000)),
        Some(Gid::from_raw(4_000_000)),
    )
    .expect("chown");
    xattr::set(root.join("biguid"), "security.capability", &capability(13)).expect("setcap");
    mkdir(&root.join("capdir"), 0o755);
    xattr::set(root.join("capdir"), "security.capability", &capability(13)).expect("setcap");
    symlink("t".repeat(150), root.join("longlink")).expect("symlink");
    write(&root.join("oldfile"), b"old\n", 0o644);
    write(&root.join("future"), b"", 0o644);
    chmod(&root.join("future"), 0o600);
    common::set_all_mtimes(root, BASE_TIME);
    set_mtime(&root.join("oldfile"), -5);
    set_mtime(&root.join("future"), 5_000_000_000);
}

#[test]
fn pax_edge_cases_equal_containerd_bytes() {
    let (_scratch, root) = workdir("pax");
    let empty = dir(&root, "empty");
    let tree = dir(&root, "tree");
    pax_tree(&tree);
    let mut tar = Vec::new();
    let desc = write_layer_from_trees(&empty, &tree, &mut tar, Compression::Uncompressed, &opts())
        .expect("layer");
    assert_eq!(
        desc.diff_id, GOLDEN_PAX,
        "PAX layer differs from containerd's"
    );
    // And it unpacks back to the same tree.
    let back = dir(&root, "back");
    unpack(tar.as_slice(), &back, &UnpackOptions::default()).expect("unpack");
    let mut want = common::snapshot(&tree, common::Xattrs::Capability);
    for e in want.values_mut() {
        e.mtime = e.mtime.map(|t| t.min(EPOCH));
    }
    common::assert_same_tree(
        &want,
        &common::snapshot(&back, common::Xattrs::Capability),
        "PAX tree",
    );
}
