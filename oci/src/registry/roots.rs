//! The system's root certificates, read once per process for strata's own
//! HTTP clients.
//!
//! A reqwest client left to itself (through rustls-platform-verifier)
//! reads and parses every file of the system's certificate directory each
//! time it is built: about 20 ms on a Debian machine, and one embedded
//! build made five such clients before its first step (two per registry
//! client, one for ADD downloads). On Linux the platform verifier is
//! webpki with the certificates `rustls-native-certs` finds
//! (`SSL_CERT_FILE`, `SSL_CERT_DIR`, then the distribution's paths), so
//! handing every client those same certificates, read once, verifies the
//! same way. (`oci-client` still builds a default reqwest client of its
//! own inside each client it builds, which reads them again: one read per
//! registry transport, on the registry client's own thread.)

use std::sync::LazyLock;

use rustls::pki_types::CertificateDer;

static ROOTS: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!("reading the system's root certificates: {error}");
    }
    // Keep what a root store accepts: a client given a certificate it
    // cannot parse fails to build, where the platform verifier skips it.
    let mut roots = Vec::with_capacity(found.certs.len());
    let mut skipped = 0usize;
    for cert in found.certs {
        let mut probe = rustls::RootCertStore::empty();
        if probe.add(CertificateDer::from(cert.as_ref())).is_ok() {
            roots.push(cert.as_ref().to_vec());
        } else {
            skipped += 1;
        }
    }
    if skipped > 0 {
        tracing::warn!("{skipped} of the system's root certificates could not be parsed");
    }
    roots
});

/// The system's root certificates (DER), read on first use. Empty when
/// none were found; a client should then be built without them, so that
/// it fails as before (no roots is an error there, not a silent
/// "unknown issuer" on every connection).
pub fn system_root_certs() -> &'static [Vec<u8>] {
    &ROOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_roots_all_parse() {
        let first = system_root_certs();
        // The machines strata builds and tests on have a CA bundle
        // (ca-certificates).
        assert!(!first.is_empty(), "no system root certificates were found");
        let mut store = rustls::RootCertStore::empty();
        for der in first {
            store.add(CertificateDer::from(der.as_slice())).unwrap();
        }
        assert_eq!(store.len(), first.len());
    }
}
