//! ADD's https downloads trust the system's root certificates and nothing
//! else. The roots are read once per process, as `rustls-native-certs`
//! finds them (`SSL_CERT_FILE` first); the downloads run in a child of
//! this binary whose `SSL_CERT_FILE` names a CA of the test's own, so a
//! server that CA signed is trusted and a self-signed one is refused.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use strata_worker::fetch::{fetch_url, http_client};

/// A certificate for `localhost` and its key, signed by `issuer` or
/// self-signed.
fn server_cert(
    issuer: Option<&CertifiedIssuer<'_, KeyPair>>,
) -> (
    rustls::pki_types::CertificateDer<'static>,
    PrivateKeyDer<'static>,
) {
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let cert = match issuer {
        Some(ca) => params.signed_by(&key, ca).expect("signed"),
        None => params.self_signed(&key).expect("self-signed"),
    };
    (
        cert.der().clone(),
        PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
    )
}

/// Serves `body` over TLS on a loopback port, one connection at a time,
/// until the test ends; returns the port.
fn serve(
    cert: rustls::pki_types::CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    body: &'static str,
) -> u16 {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("server config");
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let Ok(conn) = rustls::ServerConnection::new(Arc::clone(&config)) else {
                continue;
            };
            let mut tls = rustls::StreamOwned::new(conn, stream);
            // Read the request head (a refused handshake ends here).
            let mut reader = BufReader::new(&mut tls);
            let mut line = String::new();
            let mut ok = true;
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => {
                        ok = false;
                        break;
                    }
                    Ok(_) if line == "\r\n" => break,
                    Ok(_) => {}
                }
            }
            if ok {
                let _ = write!(
                    tls,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        }
    });
    port
}

/// The ports of the two servers and the directory to download into, for
/// the child that downloads.
const TRUSTED: &str = "STRATA_TEST_TRUSTED_PORT";
const UNTRUSTED: &str = "STRATA_TEST_UNTRUSTED_PORT";
const DIR: &str = "STRATA_TEST_DOWNLOAD_DIR";

#[test]
fn https_downloads_trust_the_system_roots_and_nothing_else() {
    let dir = tempfile::tempdir().expect("dir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
    let bundle = dir.path().join("roots.pem");
    std::fs::write(&bundle, ca.pem()).expect("bundle");
    let (cert, key) = server_cert(Some(&ca));
    let trusted = serve(cert, key, "signed by a system root");
    let (cert, key) = server_cert(None);
    let untrusted = serve(cert, key, "self-signed");
    // The roots are read from the environment once per process: the
    // downloads run in a child of this test binary whose environment
    // names the test CA as the system's only root.
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "downloads", "--ignored", "--nocapture"])
        .env("SSL_CERT_FILE", &bundle)
        .env_remove("SSL_CERT_DIR")
        .env(TRUSTED, trusted.to_string())
        .env(UNTRUSTED, untrusted.to_string())
        .env(DIR, dir.path())
        .output()
        .expect("running the downloads");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{log}");
    assert!(log.contains("1 passed"), "the downloads ran: {log}");
}

#[tokio::test]
#[ignore = "run by https_downloads_trust_the_system_roots_and_nothing_else, with SSL_CERT_FILE set"]
async fn downloads() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set"));
    let dir = std::path::PathBuf::from(var(DIR));
    let client = http_client().expect("client");
    let got = fetch_url(
        &client,
        &format!("https://localhost:{}/file.txt", var(TRUSTED)),
        &dir.join("a"),
        None,
    )
    .await
    .expect("a server a system root signed is trusted");
    assert_eq!(
        std::fs::read_to_string(&got.path).expect("downloaded"),
        "signed by a system root"
    );

    let err = fetch_url(
        &http_client().expect("client"),
        &format!("https://localhost:{}/file.txt", var(UNTRUSTED)),
        &dir.join("b"),
        None,
    )
    .await
    .expect_err("a self-signed server is refused");
    let chain = format!("{err:?}");
    // (rustls says BadSignature or UnknownIssuer, depending on whether
    // the test CA's name matches the certificate's issuer name.)
    assert!(
        chain.contains("InvalidCertificate"),
        "refused for its certificate: {chain}"
    );
    assert!(
        std::fs::read_dir(dir.join("b")).map_or(true, |mut d| d.next().is_none()),
        "nothing is left from the refused download"
    );
}
