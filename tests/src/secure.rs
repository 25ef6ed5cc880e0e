//! Helpers for the security tests (`security.rs`, `tenants.rs`,
//! `tls_pin.rs`): the `strata` CLI without the test's own settings, a
//! build context, gRPC requests bearing a token, certificates made by
//! rcgen, and a farm with client tokens per tenant and a worker token.

use crate::procs::{SchedulerProc, WorkerProc, wait_ready};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::Path;
use std::process::{Command, Output};

/// A command's stdout and stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `strata --scheduler url` with only `env` of its own settings
/// (no `STRATA_TOKEN`, `STRATA_CA_CERT`, `STRATA_TLS_PIN` from the test's).
pub fn strata(url: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(crate::bin("strata"))
        .env_remove("STRATA_TOKEN")
        .env_remove("STRATA_CA_CERT")
        .env_remove("STRATA_TLS_PIN")
        .envs(env.iter().copied())
        .arg("--scheduler")
        .arg(url)
        .args(args)
        .output()
        .expect("run strata")
}

/// Writes a one-RUN build context on `base` in `dir`; its path.
pub fn context(dir: &Path, base: &str) -> String {
    std::fs::create_dir_all(dir).expect("context");
    std::fs::write(
        dir.join("Dockerfile"),
        format!("FROM {base}\nRUN echo secured > /proof\n"),
    )
    .expect("Dockerfile");
    dir.to_str().expect("utf-8").to_string()
}

/// `msg` as a request bearing `token`, when there is one.
pub fn with_token<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("header"),
        );
    }
    r
}

/// A CA and certificates it signed, made by rcgen at test time.
pub struct Pki {
    /// The CA certificate (PEM).
    pub ca: String,
    /// The scheduler's certificate, for localhost and 127.0.0.1 (PEM).
    pub server_cert: String,
    /// The scheduler's key (PEM).
    pub server_key: String,
    /// A worker's client certificate, `worker-1` (PEM).
    pub client_cert: String,
    /// The worker's key (PEM).
    pub client_key: String,
}

/// A fresh [`Pki`].
pub fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "strata test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |names: Vec<String>, cn: &str| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &issuer).expect("certificate");
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(
        vec!["localhost".into(), "127.0.0.1".into()],
        "strata-scheduler",
    );
    let (client_cert, client_key) = leaf(vec!["worker-1".into()], "worker-1");
    Pki {
        ca: ca_cert.pem(),
        server_cert,
        server_key,
        client_cert,
        client_key,
    }
}

/// A farm with client tokens for `tenants` (name, token) and a worker
/// token, its worker registered.
pub fn tenant_farm(
    dir: &Path,
    tenants: &[(&str, &str)],
    env: &[(String, String)],
) -> (SchedulerProc, WorkerProc, String) {
    let clients = dir.join("client-tokens");
    std::fs::create_dir_all(&clients).expect("tokens dir");
    for (tenant, token) in tenants {
        std::fs::write(clients.join(tenant), token).expect("token");
    }
    let workers = dir.join("worker-tokens");
    std::fs::write(&workers, "pool wrk-secret-b81d24e6\n").expect("tokens");
    let worker_token = dir.join("worker.token");
    std::fs::write(&worker_token, "wrk-secret-b81d24e6\n").expect("token");
    let sched = SchedulerProc::start(
        dir,
        &[
            "--client-tokens".into(),
            clients.display().to_string(),
            "--worker-tokens".into(),
            workers.display().to_string(),
        ],
        env,
    );
    let url = format!("http://127.0.0.1:{}", sched.port);
    let worker = WorkerProc::start(
        dir,
        "worker-1",
        &url,
        &["--token-file".into(), worker_token.display().to_string()],
        env,
    );
    wait_ready(worker.metrics_port, "/readyz", "the worker with its token");
    (sched, worker, url)
}
