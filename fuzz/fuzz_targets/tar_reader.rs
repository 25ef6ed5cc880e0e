//! Fuzzes the layer unpacker (`strata_oci::layer::unpack`): whatever the
//! blob (plain, gzip or zstd tar), unpacking must never panic and never
//! create anything outside the unpack root.
//!
//! Each input is unpacked twice into a fresh root, the second time over
//! the result of the first (replacing, merging, whiteouts over existing
//! entries). The root sits two levels below a per-process base directory:
//! `base/sentinel/root`; afterwards `base` must hold only `sentinel` and
//! `sentinel` only `root`, so an entry that climbed out would be seen. The
//! base directory is removed after each input.
#![no_main]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use strata_oci::layer::{UnpackOptions, unpack};

fn base() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        std::env::temp_dir().join(format!("strata-fuzz-tar-{}", std::process::id()))
    })
}

fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

fuzz_target!(|data: &[u8]| {
    let base = base();
    let sentinel = base.join("sentinel");
    let root = sentinel.join("root");
    let _ = fs::remove_dir_all(base);
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
    assert_eq!(
        names(base),
        ["sentinel"],
        "an entry escaped to {}",
        base.display()
    );
    assert_eq!(
        names(&sentinel),
        ["root"],
        "an entry escaped to {}",
        sentinel.display()
    );
    fs::remove_dir_all(base).expect("remove the unpack root");
});
