//! Helpers for the registry tests: a real registry on a loopback port
//! (Debian's `docker-registry`), a tiny in-test HTTP registry for what a
//! real one never does (tampered bytes, bearer tokens), and a busybox base
//! image built from `busybox-static`.

// Each `tests/registry_*.rs` uses part of these helpers; the rest would be
// reported as dead code in that test binary.
#![allow(dead_code)]

pub mod fake_registry;
pub mod image;
pub mod registry;

use std::path::PathBuf;

/// The path of `binary`, or a panic naming the Debian package to install.
/// CI installs these; a missing tool is a broken setup, never a skip.
pub fn require_tool(binary: &str, package: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{binary}` not found: the registry tests need it. Install the Debian package \
                 `{package}` (apt-get install -y {package})"
            )
        })
}

/// A `config.json` in `dir` holding `auths` for `host`; returns its path.
pub fn write_docker_config(dir: &std::path::Path, host: &str, user: &str, pass: &str) -> PathBuf {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let json = serde_json::json!({ "auths": { host: { "auth": auth } } });
    let path = dir.join("config.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&json).expect("serialise config.json"),
    )
    .expect("write config.json");
    path
}

/// A client for loopback registries with credentials from `docker_config`
/// (an empty config when `None`, so the tests never read the user's).
pub fn client(
    docker_config: Option<PathBuf>,
    scratch: &std::path::Path,
) -> strata_oci::registry::RegistryClient {
    let path = docker_config.unwrap_or_else(|| {
        let p = scratch.join("empty-config.json");
        std::fs::write(&p, b"{}").expect("write empty config.json");
        p
    });
    strata_oci::registry::RegistryClient::new(strata_oci::registry::RegistryConfig {
        insecure: Vec::new(),
        docker_config: Some(path),
    })
    .expect("build registry client")
}
