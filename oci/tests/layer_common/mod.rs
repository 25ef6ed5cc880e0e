//! Helpers shared by the `layer_*` tests: scratch tmpfs mounts, overlay
//! mounts, and a tree snapshot that compares everything a layer must carry.
//! Included by the test files with `#[path = "layer_common/mod.rs"] mod common;`.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use nix::unistd::{Gid, Uid, chown, mkfifo};
use sha2::{Digest, Sha256};

/// Panics unless the test runs as root: these tests need mount, mknod,
/// chown and trusted.* xattrs, and CI runs them as root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (mount, mknod, chown, trusted.* xattrs); run `cargo test` as root"
    );
}

/// A tmpfs mounted on a fresh temporary directory, so overlay upper dirs,
/// whiteout devices and every xattr namespace work whatever /tmp is.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

impl Scratch {
    /// Mounts a fresh tmpfs (panics unless root).
    pub fn new() -> Scratch {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("strata-layer-test")
            .tempdir()
            .expect("create temp dir");
        mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=2g,mode=755"),
        )
        .expect("mount tmpfs for the test");
        Scratch { dir }
    }

    /// A new empty directory inside the scratch space.
    pub fn dir(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::create_dir_all(&p).expect("create scratch dir");
        p
    }

    /// A path inside the scratch space (not created).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = umount2(self.dir.path(), MntFlags::MNT_DETACH);
    }
}

/// An overlayfs mount, unmounted on drop.
pub struct Overlay {
    /// The mount point.
    pub merged: PathBuf,
    mounted: bool,
}

impl Overlay {
    /// Mounts `lowers` (topmost first) with an optional upper dir at
    /// `merged`. Without an upper the mount is read-only.
    pub fn mount(lowers: &[&Path], upper: Option<(&Path, &Path)>, merged: &Path) -> Overlay {
        fs::create_dir_all(merged).expect("create merged dir");
        let lowerdir: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
        let mut data = format!("lowerdir={}", lowerdir.join(":"));
        if let Some((upper, work)) = upper {
            data.push_str(&format!(
                ",upperdir={},workdir={}",
                upper.display(),
                work.display()
            ));
        }
        let flags = if upper.is_some() {
            MsFlags::empty()
        } else {
            MsFlags::MS_RDONLY
        };
        mount(
            Some("overlay"),
            merged,
            Some("overlay"),
            flags,
            Some(data.as_str()),
        )
        .unwrap_or_else(|e| panic!("mount overlay {data}: {e}"));
        Overlay {
            merged: merged.to_path_buf(),
            mounted: true,
        }
    }

    /// Unmounts, failing the test if that fails.
    pub fn unmount(mut self) {
        umount2(&self.merged, MntFlags::empty()).expect("unmount overlay");
        self.mounted = false;
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if self.mounted {
            let _ = umount2(&self.merged, MntFlags::MNT_DETACH);
        }
    }
}

/// What a layer must reproduce about one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `file`, `dir`, `symlink`, `char`, `block`, `fifo` or `socket`.
    pub kind: &'static str,
    /// Permission bits with setuid, setgid and sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size of a regular file.
    pub size: u64,
    /// sha256 of a regular file's content.
    pub content: Option<String>,
    /// A symlink's target.
    pub link: Option<PathBuf>,
    /// A device's number.
    pub rdev: u64,
    /// Recorded xattrs, sorted.
    pub xattrs: Vec<(OsString, Vec<u8>)>,
    /// The other paths sharing this file's inode, for files with nlink > 1.
    pub hardlinks: Vec<PathBuf>,
    /// mtime in seconds, non-directories only (directory mtimes move
    /// whenever their content does), nor overlay whiteouts: a whiteout
    /// device is made when a layer is unpacked and carries that moment,
    /// as containerd's (it is not in any image).
    pub mtime: Option<i64>,
}

/// Which xattrs a snapshot records.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Xattrs {
    /// Only `security.capability` (what BuildKit layers carry).
    Capability,
    /// All but the overlayfs private ones and `security.selinux`.
    All,
}

/// Records every entry under `root` (relative paths), not following
/// symlinks.
pub fn snapshot(root: &Path, xattrs: Xattrs) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
    walk(root, Path::new(""), xattrs, &mut out, &mut inodes);
    for paths in inodes.values() {
        if paths.len() < 2 {
            continue;
        }
        for p in paths {
            let mut others: Vec<PathBuf> = paths.iter().filter(|o| *o != p).cloned().collect();
            others.sort();
            if let Some(e) = out.get_mut(p) {
                e.hardlinks = others;
            }
        }
    }
    out
}

fn walk(
    root: &Path,
    rel: &Path,
    policy: Xattrs,
    out: &mut BTreeMap<PathBuf, Entry>,
    inodes: &mut HashMap<(u64, u64), Vec<PathBuf>>,
) {
    let dir = root.join(rel);
    let mut names: Vec<OsString> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").file_name())
        .collect();
    names.sort();
    for name in names {
        let rel_child = rel.join(&name);
        let path = root.join(&rel_child);
        let m = fs::symlink_metadata(&path).expect("lstat");
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_socket() {
            "socket"
        } else {
            "file"
        };
        let content = (kind == "file").then(|| {
            let bytes = fs::read(&path).expect("read file");
            hex::encode(Sha256::digest(&bytes))
        });
        let link = (kind == "symlink").then(|| fs::read_link(&path).expect("readlink"));
        let mut xs: Vec<(OsString, Vec<u8>)> = xattr::list(&path)
            .map(|names| {
                names
                    .filter(|n| {
                        let b = n.as_bytes();
                        let overlay =
                            b.starts_with(b"trusted.overlay.") || b.starts_with(b"user.overlay.");
                        match policy {
                            Xattrs::Capability => b == b"security.capability",
                            Xattrs::All => !overlay && b != b"security.selinux",
                        }
                    })
                    .filter_map(|n| {
                        let v = xattr::get(&path, &n).ok().flatten()?;
                        Some((n, v))
                    })
                    .collect()
            })
            .unwrap_or_default();
        xs.sort();
        if kind == "file" && m.nlink() > 1 {
            inodes
                .entry((m.dev(), m.ino()))
                .or_default()
                .push(rel_child.clone());
        }
        out.insert(
            rel_child.clone(),
            Entry {
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                size: if kind == "file" { m.size() } else { 0 },
                content,
                link,
                rdev: if kind == "char" || kind == "block" {
                    m.rdev()
                } else {
                    0
                },
                xattrs: xs,
                hardlinks: Vec::new(),
                mtime: (kind != "dir" && !(kind == "char" && m.rdev() == 0)).then(|| m.mtime()),
            },
        );
        if kind == "dir" {
            walk(root, &rel_child, policy, out, inodes);
        }
    }
}

/// Asserts two snapshots are equal, listing every difference.
pub fn assert_same_tree(
    want: &BTreeMap<PathBuf, Entry>,
    got: &BTreeMap<PathBuf, Entry>,
    what: &str,
) {
    let mut problems = Vec::new();
    for (p, w) in want {
        match got.get(p) {
            None => problems.push(format!("missing {}", p.display())),
            Some(g) if g != w => {
                problems.push(format!("{}:\n  want {w:?}\n  got  {g:?}", p.display()))
            }
            _ => {}
        }
    }
    for p in got.keys().filter(|p| !want.contains_key(*p)) {
        problems.push(format!("unexpected {}", p.display()));
    }
    assert!(
        problems.is_empty(),
        "{what}: trees differ:\n{}",
        problems.join("\n")
    );
}

/// Sets the mtime (and atime) of `path` without following a symlink.
pub fn set_mtime(path: &Path, secs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap_or_else(|e| panic!("utimensat {}: {e}", path.display()));
}

/// Sets every mtime under `root` (deepest first, so directories keep it).
pub fn set_all_mtimes(root: &Path, secs: i64) {
    let mut paths: Vec<PathBuf> = snapshot(root, Xattrs::Capability)
        .keys()
        .map(|p| root.join(p))
        .collect();
    paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in paths {
        set_mtime(&p, secs);
    }
    set_mtime(root, secs);
}

/// A version-2 `security.capability` value granting `cap` (effective,
/// permitted).
pub fn capability(cap: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(20);
    v.extend_from_slice(&(0x0200_0001u32).to_le_bytes());
    v.extend_from_slice(&(1u32 << cap).to_le_bytes());
    v.extend_from_slice(&[0u8; 12]);
    v
}

/// Lists the entry names of a layer blob, in order.
pub fn tar_names(blob: &[u8]) -> Vec<String> {
    let tar = decompress(blob);
    let mut archive = tar::Archive::new(tar.as_slice());
    archive
        .entries()
        .expect("tar entries")
        .map(|e| {
            let e = e.expect("tar entry");
            String::from_utf8_lossy(&e.path_bytes()).into_owned()
        })
        .collect()
}

/// The uncompressed tar inside a layer blob.
pub fn decompress(blob: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    match blob {
        [0x1f, 0x8b, ..] => {
            flate2::read::MultiGzDecoder::new(blob)
                .read_to_end(&mut out)
                .expect("gunzip");
        }
        [0x28, 0xb5, 0x2f, 0xfd, ..] => {
            zstd::stream::read::Decoder::new(blob)
                .expect("zstd")
                .read_to_end(&mut out)
                .expect("unzstd");
        }
        _ => out = blob.to_vec(),
    }
    out
}

// The test scenario: a base image and a RUN step's changes.

/// Every mtime the step leaves is later than this, so clamping makes runs
/// at different wall-clock times comparable.
pub const EPOCH: i64 = 1_600_000_000;
/// The mtime of every entry of the base image.
pub const BASE_TIME: i64 = 1_500_000_000;

/// Writes a file with an explicit mode (independent of the umask).
pub fn write(path: &Path, content: &[u8], mode: u32) {
    fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Creates a directory with an explicit mode.
pub fn mkdir(path: &Path, mode: u32) {
    fs::create_dir(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The base image: one of everything a layer can hold.
pub fn build_base(root: &Path) {
    for d in [
        "etc",
        "bin",
        "data",
        "old",
        "old/deep",
        "replace_me",
        "dir_to_file",
        "keep",
    ] {
        mkdir(&root.join(d), 0o755);
    }
    write(
        &root.join("etc/passwd"),
        b"root:x:0:0:root:/root:/bin/sh\n",
        0o644,
    );
    write(&root.join("etc/hosts"), b"127.0.0.1 localhost\n", 0o644);
    write(&root.join("bin/tool"), b"#!/bin/sh\necho tool\n", 0o4755);
    write(&root.join("bin/ping"), b"\x7fELF ping", 0o755);
    xattr::set(
        root.join("bin/ping"),
        "security.capability",
        &capability(13),
    )
    .expect("setcap");
    write(&root.join("data/keep.txt"), b"keep me", 0o644);
    write(&root.join("data/change.txt"), b"before", 0o644);
    write(&root.join("data/hard1"), b"linked content", 0o640);
    fs::hard_link(root.join("data/hard1"), root.join("data/hard2")).expect("link");
    write(&root.join("old/a"), b"a", 0o644);
    write(&root.join("old/deep/b"), b"b", 0o644);
    write(&root.join("replace_me/a"), b"old a", 0o644);
    write(&root.join("replace_me/b"), b"old b", 0o644);
    write(&root.join("dir_to_file/child"), b"child", 0o644);
    write(&root.join("file_to_dir"), b"i was a file", 0o644);
    write(&root.join("keep/x"), b"x", 0o600);
    chown(
        &root.join("keep/x"),
        Some(Uid::from_raw(1000)),
        Some(Gid::from_raw(2000)),
    )
    .expect("chown");
    symlink("etc/hosts", root.join("link_old")).expect("symlink");
    mkdir(&root.join("tmp"), 0o1777);
    mkfifo(&root.join("data/fifo"), Mode::from_bits_truncate(0o644)).expect("mkfifo");
    chmod(&root.join("data/fifo"), 0o644);
    mknod(
        &root.join("data/null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    )
    .expect("mknod");
    chmod(&root.join("data/null"), 0o666);
    set_all_mtimes(root, BASE_TIME);
}

/// The step: what a RUN would do, applied through std::fs and nix to
/// either the overlay's merged view or a plain copy of the lower tree.
pub fn mutate(root: &Path) {
    let p = |s: &str| root.join(s);
    // Content change, deletions, a deleted directory tree.
    write(&p("data/change.txt"), b"after, and longer", 0o644);
    fs::remove_file(p("etc/hosts")).expect("rm hosts");
    fs::remove_dir_all(p("old")).expect("rm -rf old");
    // A directory replaced wholesale (overlayfs makes it opaque).
    fs::remove_dir_all(p("replace_me")).expect("rm -rf replace_me");
    mkdir(&p("replace_me"), 0o750);
    write(&p("replace_me/c"), b"new c", 0o644);
    // Type changes both ways.
    fs::remove_dir_all(p("dir_to_file")).expect("rm dir_to_file");
    write(&p("dir_to_file"), b"now a file", 0o644);
    fs::remove_file(p("file_to_dir")).expect("rm file_to_dir");
    mkdir(&p("file_to_dir"), 0o755);
    write(&p("file_to_dir/x"), b"inside", 0o644);
    // New entries of every type.
    mkdir(&p("new"), 0o755);
    write(&p("new/h1"), b"shared by two names", 0o644);
    fs::hard_link(p("new/h1"), p("new/h2")).expect("link h2");
    symlink("../etc/passwd", p("new/sym")).expect("symlink");
    mkfifo(&p("new/fifo"), Mode::from_bits_truncate(0o600)).expect("mkfifo");
    chmod(&p("new/fifo"), 0o600);
    mknod(
        &p("new/full"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 7),
    )
    .expect("mknod");
    chmod(&p("new/full"), 0o666);
    write(&p("new/suid"), b"suid", 0o755);
    fs::set_permissions(p("new/suid"), fs::Permissions::from_mode(0o6755)).expect("chmod suid");
    mkdir(&p("new/sticky"), 0o755);
    fs::set_permissions(p("new/sticky"), fs::Permissions::from_mode(0o1777)).expect("sticky");
    write(&p("new/owned"), b"owned", 0o640);
    chown(
        &p("new/owned"),
        Some(Uid::from_raw(1234)),
        Some(Gid::from_raw(5678)),
    )
    .expect("chown");
    write(&p("new/cap"), b"\x7fELF cap", 0o755);
    xattr::set(p("new/cap"), "security.capability", &capability(10)).expect("setcap");
    write(&p("new/user_xattr"), b"u", 0o644);
    xattr::set(p("new/user_xattr"), "user.strata.test", b"value").expect("user xattr");
    // Metadata-only changes.
    fs::set_permissions(p("etc/passwd"), fs::Permissions::from_mode(0o600)).expect("chmod");
    chown(&p("bin"), Some(Uid::from_raw(0)), Some(Gid::from_raw(10))).expect("chown bin");
    // A symlink retargeted.
    fs::remove_file(p("link_old")).expect("rm link");
    symlink("etc/passwd", p("link_old")).expect("symlink");
}

/// Sets the mode of `path` exactly (mknod and mkfifo apply the umask).
pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}
