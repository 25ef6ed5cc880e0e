//! Comparing two directory trees the way an image's users would see them.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt::Display;
use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// What is compared of one entry.
struct Entry {
    kind: &'static str,
    /// Permission bits with setuid, setgid and sticky.
    mode: u32,
    uid: u32,
    gid: u32,
    /// Regular files only: directory sizes depend on the filesystem.
    size: Option<u64>,
    /// sha256 of a regular file's content.
    content: Option<String>,
    symlink_target: Option<PathBuf>,
    /// Device number of character and block devices.
    rdev: Option<u64>,
    xattrs: BTreeMap<OsString, Vec<u8>>,
    /// Seconds and nanoseconds.
    mtime: (i64, i64),
    /// The other paths of the tree sharing this regular file's inode.
    hardlinks: Vec<PathBuf>,
}

/// The differences between the trees at `a` and `b`, one line each
/// (`/etc/passwd: mode 0644 vs 0600`, `/hi: only in a`); empty when they
/// are equal. Compared without following symlinks: which paths exist,
/// their type, mode (setuid, setgid and sticky included), owner, size and
/// content of regular files, symlink targets, device numbers, extended
/// attributes, which paths are hardlinks of each other, and, unless
/// `ignore_mtime`, modification times (to the nanosecond). The roots
/// themselves are compared too, shown as `/`, except for their mtimes.
pub fn compare_trees(a: &Path, b: &Path, ignore_mtime: bool) -> Vec<String> {
    let tree_a = scan(a);
    let tree_b = scan(b);
    let mut diffs = Vec::new();
    let mut paths: Vec<&PathBuf> = tree_a.keys().chain(tree_b.keys()).collect();
    paths.sort();
    paths.dedup();
    for path in paths {
        let shown = Path::new("/").join(path);
        let shown = shown.display();
        match (tree_a.get(path), tree_b.get(path)) {
            (Some(_), None) => diffs.push(format!("{shown}: only in a")),
            (None, Some(_)) => diffs.push(format!("{shown}: only in b")),
            (Some(ea), Some(eb)) => {
                // No layer has an entry for the root: its mtime is when the
                // directory was made, not part of the image.
                let ignore_mtime = ignore_mtime || path.as_os_str().is_empty();
                entry_diffs(&shown, ea, eb, ignore_mtime, &mut diffs)
            }
            (None, None) => unreachable!("the path came from one of the trees"),
        }
    }
    diffs
}

fn entry_diffs(
    shown: &impl Display,
    a: &Entry,
    b: &Entry,
    ignore_mtime: bool,
    diffs: &mut Vec<String>,
) {
    if a.kind != b.kind {
        diffs.push(format!("{shown}: type {} vs {}", a.kind, b.kind));
        return;
    }
    let mut differ = |what: &str, va: String, vb: String| {
        if va != vb {
            diffs.push(format!("{shown}: {what} {va} vs {vb}"));
        }
    };
    differ("mode", format!("{:04o}", a.mode), format!("{:04o}", b.mode));
    differ("uid", a.uid.to_string(), b.uid.to_string());
    differ("gid", a.gid.to_string(), b.gid.to_string());
    differ("size", format!("{:?}", a.size), format!("{:?}", b.size));
    differ(
        "content sha256",
        format!("{:?}", a.content),
        format!("{:?}", b.content),
    );
    differ(
        "symlink target",
        format!("{:?}", a.symlink_target),
        format!("{:?}", b.symlink_target),
    );
    differ("rdev", format!("{:?}", a.rdev), format!("{:?}", b.rdev));
    differ("xattrs", xattrs_text(&a.xattrs), xattrs_text(&b.xattrs));
    differ(
        "hardlinked with",
        format!("{:?}", a.hardlinks),
        format!("{:?}", b.hardlinks),
    );
    if !ignore_mtime {
        differ("mtime", mtime_text(a.mtime), mtime_text(b.mtime));
    }
}

fn xattrs_text(xattrs: &BTreeMap<OsString, Vec<u8>>) -> String {
    let items: Vec<String> = xattrs
        .iter()
        .map(|(k, v)| format!("{}={}", k.to_string_lossy(), hex::encode(v)))
        .collect();
    format!("{{{}}}", items.join(", "))
}

fn mtime_text((sec, nsec): (i64, i64)) -> String {
    format!("{sec}.{nsec:09}")
}

/// Every entry under `root` (the root itself as the empty path).
fn scan(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut found = Vec::new();
    walk(root, PathBuf::new(), &mut found);
    let mut inodes: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
    for (rel, meta) in &found {
        if meta.file_type().is_file() {
            inodes
                .entry((meta.dev(), meta.ino()))
                .or_default()
                .push(rel.clone());
        }
    }
    found
        .into_iter()
        .map(|(rel, meta)| {
            let path = root.join(&rel);
            let hardlinks = match inodes.get(&(meta.dev(), meta.ino())) {
                Some(group) if meta.file_type().is_file() => {
                    group.iter().filter(|p| **p != rel).cloned().collect()
                }
                _ => Vec::new(),
            };
            let entry = entry(&path, &meta, hardlinks);
            (rel, entry)
        })
        .collect()
}

fn walk(root: &Path, rel: PathBuf, found: &mut Vec<(PathBuf, Metadata)>) {
    let path = root.join(&rel);
    let meta = std::fs::symlink_metadata(&path)
        .unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
    let is_dir = meta.is_dir();
    found.push((rel.clone(), meta));
    if !is_dir {
        return;
    }
    let mut names: Vec<OsString> = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("read dir {}: {e}", path.display()))
        .map(|e| e.expect("read dir entry").file_name())
        .collect();
    names.sort();
    for name in names {
        walk(root, rel.join(name), found);
    }
}

fn entry(path: &Path, meta: &Metadata, hardlinks: Vec<PathBuf>) -> Entry {
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        "file"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_char_device() {
        "char device"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "socket"
    };
    let content = ft.is_file().then(|| {
        let mut file =
            std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        hex::encode(hasher.finalize())
    });
    let symlink_target = ft.is_symlink().then(|| {
        std::fs::read_link(path).unwrap_or_else(|e| panic!("readlink {}: {e}", path.display()))
    });
    let is_device = ft.is_char_device() || ft.is_block_device();
    // `xattr::list`/`get` do not follow symlinks.
    let xattrs = xattr::list(path)
        .unwrap_or_else(|e| panic!("list xattrs of {}: {e}", path.display()))
        .map(|name| {
            let value = xattr::get(path, &name)
                .unwrap_or_else(|e| panic!("read xattr of {}: {e}", path.display()))
                .unwrap_or_default();
            (name, value)
        })
        .collect();
    Entry {
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        size: ft.is_file().then(|| meta.size()),
        content,
        symlink_target,
        rdev: is_device.then(|| meta.rdev()),
        xattrs,
        mtime: (meta.mtime(), meta.mtime_nsec()),
        hardlinks,
    }
}
