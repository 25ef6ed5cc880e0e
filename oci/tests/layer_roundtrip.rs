//! A RUN step's changes made on a real overlayfs mount survive diff → tar →
//! unpack, whichever snapshotter produced them, and give the same bytes
//! every time. Needs root (CI runs as root).

#[path = "layer_common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::{
    EPOCH, Overlay, Scratch, Xattrs, assert_same_tree, build_base, capability, mutate, snapshot,
};
use strata_oci::layer::{
    Compression, LayerDescriptor, LayerOptions, UnpackOptions, UnpackReport, WhiteoutStyle,
    XattrPolicy, diff_id_teed, diff_trees, diff_upper, unpack, unpack_to_overlay_layer_dir,
    write_layer, write_layer_from_trees, write_layer_from_upper, write_layer_from_upper_teed,
};

struct Run {
    scratch: Scratch,
    base_blob: Vec<u8>,
    lower: PathBuf,
    upper: PathBuf,
    merged_snapshot: std::collections::BTreeMap<PathBuf, common::Entry>,
}

/// Builds the base layer, unpacks it as an overlay lowerdir, runs the step
/// on the merged view and records the merged view before unmounting.
fn overlay_run(opts: &LayerOptions, snap: Xattrs) -> Run {
    let scratch = Scratch::new();
    let src = scratch.dir("base-src");
    build_base(&src);
    let empty = scratch.dir("empty");
    let mut base_blob = Vec::new();
    write_layer_from_trees(&empty, &src, &mut base_blob, Compression::ZSTD, opts)
        .expect("write base layer");

    let lower = scratch.dir("lower");
    let no_parents: [&Path; 0] = [];
    unpack_to_overlay_layer_dir(
        base_blob.as_slice(),
        &lower,
        &no_parents,
        &UnpackOptions::default(),
    )
    .expect("unpack base layer");
    let upper = scratch.dir("upper");
    let work = scratch.dir("work");
    let merged = scratch.path("merged");
    let ov = Overlay::mount(&[&lower], Some((&upper, &work)), &merged);
    mutate(&ov.merged);
    let merged_snapshot = snapshot(&ov.merged, snap);
    ov.unmount();
    Run {
        scratch,
        base_blob,
        lower,
        upper,
        merged_snapshot,
    }
}

fn clamp(
    mut snap: std::collections::BTreeMap<PathBuf, common::Entry>,
) -> std::collections::BTreeMap<PathBuf, common::Entry> {
    for e in snap.values_mut() {
        e.mtime = e.mtime.map(|t| t.min(EPOCH));
    }
    snap
}

fn check_round_trip(opts: &LayerOptions, snap: Xattrs) {
    let run = overlay_run(opts, snap);
    let mut blob = Vec::new();
    let desc = write_layer_from_upper(
        &run.upper,
        &[&run.lower],
        &mut blob,
        Compression::ZSTD,
        opts,
    )
    .expect("write layer from upper");
    let want = clamp(run.merged_snapshot.clone());

    // Layers applied one by one into a single directory.
    let copy = run.scratch.dir("copy");
    unpack(run.base_blob.as_slice(), &copy, &UnpackOptions::default()).expect("unpack base");
    let report = unpack(blob.as_slice(), &copy, &UnpackOptions::default()).expect("unpack diff");
    assert_eq!(
        report.diff_id, desc.diff_id,
        "unpack reports the layer's diffID"
    );
    assert_same_tree(
        &want,
        &snapshot(&copy, snap),
        "base + layer unpacked into one dir",
    );

    // The layer as its own overlay lowerdir, stacked on the base.
    let layer_dir = run.scratch.dir("layer2");
    unpack_to_overlay_layer_dir(
        blob.as_slice(),
        &layer_dir,
        &[&run.lower],
        &UnpackOptions::default(),
    )
    .expect("unpack layer as overlay dir");
    let stacked = Overlay::mount(
        &[&layer_dir, &run.lower],
        None,
        &run.scratch.path("stacked"),
    );
    assert_same_tree(
        &want,
        &snapshot(&stacked.merged, snap),
        "overlay of layer dirs",
    );
    drop(stacked);

    // The copy snapshotter: the same step on a plain copy of the lower
    // tree gives the same layer, byte for byte.
    let tree_lower = run.scratch.dir("tree-lower");
    let tree_new = run.scratch.dir("tree-new");
    unpack(
        run.base_blob.as_slice(),
        &tree_lower,
        &UnpackOptions::default(),
    )
    .expect("unpack");
    unpack(
        run.base_blob.as_slice(),
        &tree_new,
        &UnpackOptions::default(),
    )
    .expect("unpack");
    mutate(&tree_new);
    let mut tree_blob = Vec::new();
    let tree_desc = write_layer_from_trees(
        &tree_lower,
        &tree_new,
        &mut tree_blob,
        Compression::ZSTD,
        opts,
    )
    .expect("write layer from trees");
    assert_eq!(
        tree_desc.diff_id, desc.diff_id,
        "copy snapshotter and overlay give the same diffID"
    );
    assert_eq!(tree_desc, desc);
    assert!(tree_blob == blob, "same blob bytes");

    // Same entries in the same order, by name.
    let names = common::tar_names(&blob);
    let upper_changes: Vec<_> = diff_upper(&run.upper, &[&run.lower], opts)
        .expect("diff upper")
        .into_iter()
        .map(|c| (c.path, std::mem::discriminant(&c.kind)))
        .collect();
    let tree_changes: Vec<_> = diff_trees(&tree_lower, &tree_new, opts)
        .expect("diff trees")
        .into_iter()
        .map(|c| (c.path, std::mem::discriminant(&c.kind)))
        .collect();
    assert_eq!(upper_changes, tree_changes);
    assert!(!names.iter().any(|n| n.contains("overlay")), "{names:?}");
}

fn epoch_opts() -> LayerOptions {
    LayerOptions {
        source_date_epoch: Some(EPOCH),
        ..LayerOptions::default()
    }
}

#[test]
fn overlay_changes_round_trip_and_match_the_copy_snapshotter() {
    check_round_trip(&epoch_opts(), Xattrs::Capability);
}

#[test]
fn all_xattrs_round_trip_when_asked_for() {
    let opts = LayerOptions {
        xattrs: XattrPolicy::All,
        ..epoch_opts()
    };
    check_round_trip(&opts, Xattrs::All);
}

#[test]
fn opaque_style_round_trips_and_matches_the_copy_snapshotter() {
    let opts = LayerOptions {
        whiteouts: WhiteoutStyle::OpaqueWhenReplaced,
        ..epoch_opts()
    };
    check_round_trip(&opts, Xattrs::Capability);
    let run = overlay_run(&opts, Xattrs::Capability);
    let mut blob = Vec::new();
    write_layer_from_upper(
        &run.upper,
        &[&run.lower],
        &mut blob,
        Compression::ZSTD,
        &opts,
    )
    .expect("write layer");
    let names = common::tar_names(&blob);
    assert!(
        names.contains(&"replace_me/.wh..wh..opq".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"old/.wh..wh..opq".to_string()) || names.contains(&".wh.old".to_string())
    );
}

#[test]
fn layer_entries_are_written_like_buildkit() {
    let opts = epoch_opts();
    let run = overlay_run(&opts, Xattrs::Capability);
    let mut blob = Vec::new();
    write_layer_from_upper(
        &run.upper,
        &[&run.lower],
        &mut blob,
        Compression::Uncompressed,
        &opts,
    )
    .expect("write layer");
    let names = common::tar_names(&blob);
    let expected = [
        "bin/",
        "data/",
        "data/change.txt",
        "dir_to_file",
        "etc/",
        "etc/.wh.hosts",
        "etc/passwd",
        "file_to_dir/",
        "file_to_dir/x",
        "link_old",
        "new/",
        "new/cap",
        "new/fifo",
        "new/full",
        "new/h1",
        "new/h2",
        "new/owned",
        "new/sticky/",
        "new/suid",
        "new/sym",
        "new/user_xattr",
        ".wh.old",
        "replace_me/",
        "replace_me/.wh.a",
        "replace_me/.wh.b",
        "replace_me/c",
    ];
    assert_eq!(names, expected);
    let mut archive = tar::Archive::new(blob.as_slice());
    for e in archive.entries().expect("entries") {
        let mut e = e.expect("entry");
        let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let h = e.header().clone();
        assert_eq!(h.username_bytes(), Some(&b""[..]), "{path}: no user name");
        assert!(
            h.mtime().expect("mtime") <= EPOCH as u64,
            "{path}: clamped mtime"
        );
        match path.as_str() {
            "new/h2" => {
                assert_eq!(h.entry_type(), tar::EntryType::Link);
                assert_eq!(e.link_name_bytes().as_deref(), Some(&b"new/h1"[..]));
            }
            "new/suid" => assert_eq!(h.mode().expect("mode"), 0o6755),
            "new/sticky/" => assert_eq!(h.mode().expect("mode"), 0o1777),
            "new/owned" => assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (1234, 5678)),
            "new/full" => assert_eq!(
                (h.device_major().unwrap(), h.device_minor().unwrap()),
                (Some(1), Some(7))
            ),
            "new/cap" => {
                let exts: Vec<(String, Vec<u8>)> = e
                    .pax_extensions()
                    .expect("pax")
                    .expect("pax present")
                    .map(|x| {
                        let x = x.expect("record");
                        (x.key().expect("key").to_owned(), x.value_bytes().to_vec())
                    })
                    .collect();
                assert_eq!(
                    exts,
                    [(
                        "SCHILY.xattr.security.capability".to_string(),
                        capability(10)
                    )]
                );
            }
            "new/user_xattr" => assert!(
                e.pax_extensions().expect("pax").is_none(),
                "BuildKit keeps only security.capability"
            ),
            p if p.contains(".wh.") => {
                assert_eq!(
                    (h.mode().unwrap(), h.mtime().unwrap(), h.size().unwrap()),
                    (0, 0, 0)
                );
            }
            _ => {}
        }
    }
}

#[test]
fn digests_are_deterministic_across_runs_and_thread_counts() {
    let mut seen: Option<(LayerDescriptor, LayerDescriptor)> = None;
    for threads in [1, 2, 3] {
        let opts = LayerOptions {
            threads,
            ..epoch_opts()
        };
        let run = overlay_run(&opts, Xattrs::Capability);
        let zstd = write_layer_from_upper(
            &run.upper,
            &[&run.lower],
            std::io::sink(),
            Compression::ZSTD,
            &opts,
        )
        .expect("zstd layer");
        let gzip = write_layer_from_upper(
            &run.upper,
            &[&run.lower],
            std::io::sink(),
            Compression::GZIP,
            &opts,
        )
        .expect("gzip layer");
        assert_eq!(zstd.diff_id, gzip.diff_id);
        match &seen {
            None => seen = Some((zstd, gzip)),
            Some((z, g)) => {
                assert_eq!(&zstd, z, "zstd with {threads} threads");
                assert_eq!(&gzip, g, "gzip with {threads} threads");
            }
        }
    }
}

/// Every xattr name of every regular file under `root`, overlay-private
/// ones included (the snapshot leaves those out).
fn raw_xattrs(root: &Path) -> std::collections::BTreeMap<PathBuf, Vec<std::ffi::OsString>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read_dir") {
            let e = e.expect("entry");
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let mut names: Vec<_> = xattr::list(e.path()).expect("list xattrs").collect();
                names.sort();
                out.insert(
                    e.path().strip_prefix(root).expect("under root").into(),
                    names,
                );
            }
        }
    }
    out
}

/// Unpacks `tar` (the run's layer as the writer tees it) into a new
/// directory as the worker does: files linked from the run's upper dir,
/// nothing hashed.
fn unpack_teed(run: &Run, tar: &[u8]) -> (PathBuf, UnpackReport) {
    let teed = run.scratch.dir("teed");
    let report = unpack_to_overlay_layer_dir(
        tar,
        &teed,
        &[&run.lower],
        &UnpackOptions {
            link_from: Some(run.upper.clone()),
            hash: false,
            ..UnpackOptions::default()
        },
    )
    .expect("unpack the teed tar");
    (teed, report)
}

#[test]
fn a_layer_unpacked_as_it_is_written_links_the_upper_and_matches_the_blob() {
    use std::os::unix::fs::MetadataExt as _;
    let opts = LayerOptions {
        xattrs: XattrPolicy::All,
        ..epoch_opts()
    };
    let run = overlay_run(&opts, Xattrs::All);
    // The worker's commit: the blob, and the same tar teed as it is
    // written.
    let (mut blob, mut tar) = (Vec::new(), Vec::new());
    let desc = write_layer_from_upper_teed(
        &run.upper,
        &[&run.lower],
        &mut blob,
        &mut tar,
        Compression::ZSTD,
        &opts,
    )
    .expect("write layer, teed");
    let mut plain = Vec::new();
    let plain_desc = write_layer_from_upper(
        &run.upper,
        &[&run.lower],
        &mut plain,
        Compression::ZSTD,
        &opts,
    )
    .expect("write layer");
    assert_eq!(desc, plain_desc, "the tee changes nothing in the layer");
    assert!(blob == plain, "same blob bytes with and without the tee");

    // What a worker that never saw the upper makes of the blob.
    let from_blob = run.scratch.dir("from-blob");
    unpack_to_overlay_layer_dir(
        blob.as_slice(),
        &from_blob,
        &[&run.lower],
        &UnpackOptions::default(),
    )
    .expect("unpack blob");
    let upper_inode = |rel: &str| {
        std::fs::symlink_metadata(run.upper.join(rel))
            .expect("upper file")
            .ino()
    };
    let (passwd_ino, change_ino, h1_ino) = (
        upper_inode("etc/passwd"),
        upper_inode("data/change.txt"),
        upper_inode("new/h1"),
    );
    let h1_mtime_before = std::fs::symlink_metadata(run.upper.join("new/h1"))
        .expect("h1")
        .mtime();

    let (teed, report) = unpack_teed(&run, &tar);
    assert_eq!(report.diff_id, "", "not hashed when asked not to");
    assert_eq!(report.tar_bytes, desc.uncompressed_size);

    assert_same_tree(
        &snapshot(&from_blob, Xattrs::All),
        &snapshot(&teed, Xattrs::All),
        "unpacked from the blob vs unpacked as written",
    );
    assert_eq!(
        raw_xattrs(&from_blob),
        raw_xattrs(&teed),
        "no overlay-private xattr of the upper survives the link"
    );
    // The data was not copied: the files are the upper's own inodes...
    let ino = |rel: &str| std::fs::symlink_metadata(teed.join(rel)).expect(rel).ino();
    assert_eq!(ino("etc/passwd"), passwd_ino, "a copied-up file is linked");
    assert_eq!(ino("data/change.txt"), change_ino);
    // ...except one with a second name, which could be a file outside
    // the snapshot: written, and the original left as it was.
    assert_ne!(ino("new/h1"), h1_ino, "a file with two names is written");
    assert_eq!(
        std::fs::symlink_metadata(run.upper.join("new/h1"))
            .expect("h1")
            .mtime(),
        h1_mtime_before
    );
    let regular_single = [
        "data/change.txt",
        "dir_to_file",
        "etc/passwd",
        "file_to_dir/x",
        "new/cap",
        "new/owned",
        "new/suid",
        "new/user_xattr",
        "replace_me/c",
    ];
    assert_eq!(report.linked, regular_single.len() as u64, "{report:?}");
}

#[test]
fn a_layer_hashed_and_unpacked_first_and_packed_later_is_the_same_layer() {
    let opts = LayerOptions {
        xattrs: XattrPolicy::All,
        ..epoch_opts()
    };
    let run = overlay_run(&opts, Xattrs::All);
    let mut single = Vec::new();
    let expected = write_layer_from_upper(
        &run.upper,
        &[&run.lower],
        &mut single,
        Compression::ZSTD,
        &opts,
    )
    .expect("write layer");

    // The worker's early commit: the diffID, and the tar unpacked by
    // linking the upper's files (which sets their owners, modes and times
    // again from the tar)...
    let changes = diff_upper(&run.upper, &[&run.lower], &opts).expect("diff");
    let mut tar = Vec::new();
    let (diff_id, size) = diff_id_teed(&changes, &mut tar, &opts).expect("hash the tar");
    assert_eq!(diff_id, expected.diff_id);
    assert_eq!(size, expected.uncompressed_size);
    assert_eq!(size, tar.len() as u64, "the whole tar is teed");
    unpack_teed(&run, &tar);

    // ...then the blob, from the same changes once the next steps run:
    // the same bytes as the one-pass commit.
    let mut later = Vec::new();
    let desc = write_layer(&changes, &mut later, Compression::ZSTD, &opts).expect("the blob");
    assert_eq!(desc, expected);
    assert!(later == single, "same blob bytes in one pass or two");
}
