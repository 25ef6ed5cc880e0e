//! Shared helpers for the whole-system tests: they run the real binaries.

pub mod base_image;
pub mod build_meta;
pub mod buildkit;
pub mod equivalence;
pub mod farm;
pub mod fault_farm;
pub mod follow;
pub mod oci_run;
pub mod procs;
pub mod registry;
pub mod secure;
pub mod services;

use std::path::PathBuf;
use std::process::{Command, Output};

/// Path of a workspace binary (`strata`, `strata-scheduler`, ...), found
/// next to the running test executable's `deps` directory.
///
/// The test command in README.md builds every binary first
/// (`cargo build --workspace --bins`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} not found; build the binaries first: cargo build --workspace --bins",
        path.display()
    );
    path
}

/// Path of a fixture under `tests/fixtures`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

/// Runs `strata` with `args` and returns its output.
pub fn strata(args: &[&str]) -> Output {
    Command::new(bin("strata"))
        .args(args)
        .output()
        .expect("run strata")
}
