//! A pinned public key instead of a CA, with the real binaries on
//! loopback: the pin (as docs/production.md makes it with openssl) is the
//! whole check of the scheduler's certificate, and a mismatch is refused
//! by name.

use rcgen::{CertificateParams, KeyPair};
use std::path::Path;
use std::process::Command;
use strata_tests::base_image::push_busybox;
use strata_tests::procs::{SchedulerProc, WorkerProc, http_get, wait_ready};
use strata_tests::registry::TestRegistry;
use strata_tests::secure::{context, pki, strata, text};

/// The pin of a PEM certificate's public key as docs/production.md makes
/// it with openssl: `sha256//BASE64`, or with `hex`, `sha256:HEX`.
fn openssl_pin(cert: &Path, hex: bool) -> String {
    let digest = if hex { "-hex" } else { "-binary | base64" };
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 {digest}",
            cert.display()
        ))
        .output()
        .expect("openssl");
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
    if hex {
        let h = out.rsplit(' ').next().expect("digest").to_string();
        format!("sha256:{h}")
    } else {
        format!("sha256//{out}")
    }
}

#[test]
fn a_pinned_key_is_the_whole_check_of_the_scheduler() {
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let dir = tempfile::tempdir().expect("dir");
    let file = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).expect("pem");
        path
    };
    // Self-signed, for a name no one dials: only the key counts.
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["strata-scheduler.invalid".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let (cert, key) = (
        file("self.pem", &cert.pem()),
        file("self.key", &key.serialize_pem()),
    );
    let sched = SchedulerProc::start(
        dir.path(),
        &[
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ],
        &[],
    );
    let url = format!("https://127.0.0.1:{}", sched.port);
    let pin = openssl_pin(&cert, false);
    let worker = WorkerProc::start(
        dir.path(),
        "worker-1",
        &url,
        &["--tls-pin".into(), pin.clone()],
        &[],
    );
    wait_ready(worker.metrics_port, "/readyz", "the worker with a pin");
    let ctx = context(&dir.path().join("ctx"), &base);
    let o = strata(
        &url,
        &[("STRATA_TLS_PIN", &pin)],
        &["build", "--progress", "plain", "-t", "pinned/app:1", &ctx],
    );
    assert!(
        o.status.success(),
        "{}\n{}\n{}",
        text(&o),
        sched.proc.log(),
        worker.proc.log()
    );
    let o = strata(
        &url,
        &[("STRATA_TLS_PIN", &openssl_pin(&cert, true))],
        &["images"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("pinned/app"), "{}", text(&o));

    // A certificate from a CA the client could trust, for the right name,
    // whose key is not the pinned one (the pin is a sibling's from the
    // same CA): refused, naming the pin and the key found.
    let p = pki();
    let (ca, server, server_key, sibling) = (
        file("ca.pem", &p.ca),
        file("server.pem", &p.server_cert),
        file("server.key", &p.server_key),
        file("sibling.pem", &p.client_cert),
    );
    let other = SchedulerProc::start(
        dir.path(),
        &[
            "--tls-cert".into(),
            server.display().to_string(),
            "--tls-key".into(),
            server_key.display().to_string(),
        ],
        &[],
    );
    let other_url = format!("https://127.0.0.1:{}", other.port);
    let wrong = openssl_pin(&sibling, false);
    let o = strata(&other_url, &[("STRATA_TLS_PIN", &wrong)], &["images"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("does not match the pinned key"),
        "{}",
        text(&o)
    );
    assert!(
        text(&o).contains(&openssl_pin(&server, false)),
        "{}",
        text(&o)
    );
    let mut impostor = WorkerProc::start(
        dir.path(),
        "worker-2",
        &other_url,
        &["--tls-pin".into(), wrong],
        &[],
    );
    impostor.proc.wait_log("does not match the pinned key");
    assert_eq!(http_get(impostor.metrics_port, "/readyz").0, 503);
    // The same scheduler by its CA: the refusal was the pin's.
    let ca = ca.display().to_string();
    let o = strata(&other_url, &[("STRATA_CA_CERT", &ca)], &["images"]);
    assert!(o.status.success(), "{}", text(&o));
    // A pin and a CA together are a mistake, said so.
    let o = strata(
        &other_url,
        &[("STRATA_CA_CERT", &ca), ("STRATA_TLS_PIN", &pin)],
        &["images"],
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("STRATA_TLS_PIN and STRATA_CA_CERT"),
        "{}",
        text(&o)
    );
}
