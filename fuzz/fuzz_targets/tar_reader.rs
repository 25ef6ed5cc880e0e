//! Fuzzes the layer unpacker (`strata_oci::layer::unpack`): whatever the
//! blob (plain, gzip or zstd tar), unpacking must never panic and never
//! create anything outside the unpack root.
//!
//! Each input is unpacked twice into a fresh root, the second time over
//! the result of the first (replacing, merging, whiteouts over existing
//! entries). The root is `<tmp>/sentinel/root`, and every directory
//! between it and `/` is watched:
//!
//! - `<tmp>` is a private, empty tmpfs mounted over `/tmp` in a mount
//!   namespace of the fuzzer's own (when it can make one: as root), so
//!   after each input the whole of it must be `sentinel/root` and what is
//!   under `root`: an entry that climbed out by any number of `..`, or
//!   was written through a link to anywhere in `/tmp`, is seen;
//! - `/` must hold the same names as when the fuzzer started (an absolute
//!   name or link target that got through lands there).
//!
//! Without a namespace (not root), `<tmp>` is a fresh directory under the
//! system's temporary directory, checked the same way, with its parent
//! left unwatched: the fuzzer says so when it starts.
#![no_main]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use strata_oci::layer::{UnpackOptions, unpack};

/// The watched directory the root lives in, and `/`'s names at start.
struct Watch {
    tmp: PathBuf,
    top: Vec<String>,
}

fn watch() -> &'static Watch {
    static WATCH: OnceLock<Watch> = OnceLock::new();
    WATCH.get_or_init(|| {
        let tmp = if private_tmp() {
            PathBuf::from("/tmp")
        } else {
            let dir = std::env::temp_dir().join(format!("strata-fuzz-tar-{}", std::process::id()));
            eprintln!(
                "tar_reader: no private /tmp (needs root); watching {} but not its parent",
                dir.display()
            );
            dir
        };
        Watch {
            tmp,
            top: names(Path::new("/")),
        }
    })
}

/// Mounts an empty tmpfs over `/tmp` in a mount namespace of this thread
/// (the one libFuzzer runs inputs on); false where that is not allowed.
fn private_tmp() -> bool {
    // SAFETY: plain system calls with valid, NUL-terminated arguments.
    unsafe {
        libc::unshare(libc::CLONE_NEWNS) == 0
            && libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) == 0
            && libc::mount(
                c"tmpfs".as_ptr(),
                c"/tmp".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                c"size=512m,mode=700".as_ptr().cast(),
            ) == 0
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

fuzz_target!(|data: &[u8]| {
    let w = watch();
    let sentinel = w.tmp.join("sentinel");
    let root = sentinel.join("root");
    fs::create_dir_all(&root).expect("create the unpack root");
    // Small bounds: a decompression bomb must stop at them, not fill the
    // disk or the fuzzer's memory.
    let opts = UnpackOptions {
        max_bytes: 16 << 20,
        max_entries: 10_000,
        ..UnpackOptions::default()
    };
    let _ = unpack(data, &root, &opts);
    let _ = unpack(data, &root, &opts);
    for (dir, only) in [(&w.tmp, "sentinel"), (&sentinel, "root")] {
        assert_eq!(names(dir), [only], "an entry escaped to {}", dir.display());
    }
    assert_eq!(names(Path::new("/")), w.top, "an entry escaped to /");
    fs::remove_dir_all(&sentinel).expect("remove the unpack root");
});
