//! Hostile ADD archives beyond those `copy/add_tests.rs` covers: a
//! directory replaced by a symlink out after its entries (whose times are
//! restored last), a hardlink whose target is reached through a symlink
//! out, and a zstd bomb. Nothing outside the destination may change, and
//! every rejection names the archive and the entry.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use strata_worker::copy::{ArchiveLimits, CopyError, CopyOptions, add};

/// One raw tar entry (`tar::Builder` refuses hostile names).
fn entry(name: &str, kind: tar::EntryType, link: &str, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(kind);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_size(data.len() as u64);
    h.set_mtime(1_000_000_000);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn dir(name: &str) -> Vec<u8> {
    entry(name, tar::EntryType::Directory, "", b"")
}

fn tar(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = entries.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// A source root holding the archive, an empty destination root and an
/// `outside` directory next to them that must not change.
struct Roots {
    tmp: tempfile::TempDir,
}

impl Roots {
    fn new(archive: &[u8]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        for d in ["src", "dst", "outside/sub"] {
            fs::create_dir_all(tmp.path().join(d)).expect("mkdir");
        }
        fs::write(tmp.path().join("src/bundle.tar"), archive).expect("write");
        fs::write(tmp.path().join("outside/secret"), "keep").expect("write");
        Roots { tmp }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn add(&self, opts: &CopyOptions) -> Result<(), CopyError> {
        add(
            &self.path("src"),
            "bundle.tar",
            &self.path("dst"),
            "/app/",
            opts,
            true,
        )
    }
}

fn mtime(p: &Path) -> i64 {
    fs::symlink_metadata(p).expect("stat").mtime()
}

#[test]
fn directory_times_are_never_restored_through_a_symlink_out() {
    // `x/sub/` is created, then `x` is replaced by a link to the outside
    // directory; directory times are set last, and must not follow it.
    let r = Roots::new(b"");
    let outside = r.path("outside");
    let archive = tar(&[
        dir("x/"),
        dir("x/sub/"),
        entry(
            "x",
            tar::EntryType::Symlink,
            &outside.display().to_string(),
            b"",
        ),
    ]);
    fs::write(r.path("src/bundle.tar"), archive).expect("write");
    let before = mtime(&outside.join("sub"));
    r.add(&CopyOptions::default())
        .expect("the archive applies in order");
    assert!(
        fs::symlink_metadata(r.path("dst/app/x"))
            .expect("x")
            .is_symlink()
    );
    assert_eq!(
        mtime(&outside.join("sub")),
        before,
        "the outside directory's time was set through the link"
    );
    assert_ne!(before, 1_000_000_000);
}

#[test]
fn a_hardlink_reached_through_a_symlink_out_is_rejected() {
    let r = Roots::new(b"");
    let outside = r.path("outside");
    let archive = tar(&[
        entry(
            "s",
            tar::EntryType::Symlink,
            &outside.display().to_string(),
            b"",
        ),
        entry("h", tar::EntryType::Link, "s/secret", b""),
    ]);
    fs::write(r.path("src/bundle.tar"), archive).expect("write");
    let err = r.add(&CopyOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, CopyError::UnsafeEntry { .. }), "{msg}");
    assert!(
        msg.contains("\"bundle.tar\"") && msg.contains("entry \"h\""),
        "{msg}"
    );
    assert!(msg.contains("symlink to the absolute path"), "{msg}");
    assert!(!r.path("dst/app/h").exists());
    assert_eq!(
        fs::metadata(outside.join("secret")).expect("stat").nlink(),
        1
    );
}

#[test]
fn zstd_bombs_are_bounded() {
    let big = tar(&[entry(
        "zeros",
        tar::EntryType::Regular,
        "",
        &vec![0u8; 8 << 20],
    )]);
    let blob = zstd::encode_all(big.as_slice(), 19).expect("zstd");
    assert!(blob.len() < 64 << 10, "a small blob that inflates to 8 MiB");
    let r = Roots::new(&blob);
    let opts = CopyOptions {
        archive_limits: ArchiveLimits {
            max_bytes: 1 << 20,
            ..ArchiveLimits::default()
        },
        ..CopyOptions::default()
    };
    let err = r.add(&opts).unwrap_err();
    assert!(
        matches!(err, CopyError::ArchiveLimit { what: "bytes", .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("\"bundle.tar\": the archive exceeds the limit of 1048576 bytes"),
        "{err}"
    );
}
