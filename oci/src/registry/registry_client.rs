//! [`RegistryClient`]: configuration, the choice of plain HTTP or TLS per
//! registry, credentials, and what the client remembers about where blobs
//! live (for cross-repository mounts).

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;

use super::auth::{DockerConfig, RegistryCredentials};
use super::error::{Context, RegistryError};
use super::reference::ImageRef;

/// How a [`RegistryClient`] reaches registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// Registries reached over plain HTTP, as `host` (any port) or
    /// `host:port`. Loopback registries (`localhost`, `127.0.0.0/8`,
    /// `[::1]`) always are.
    pub insecure: Vec<String>,
    /// The docker-style `config.json` holding credentials. `None` reads
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json` if present;
    /// a path given here must exist.
    pub docker_config: Option<PathBuf>,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
// Per read, not per transfer: a large layer may take long, a stalled
// connection may not.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
const USER_AGENT: &str = concat!("strata/", env!("CARGO_PKG_VERSION"));

/// A client for the OCI distribution API: pull (with digest verification)
/// and push (skipping blobs the registry has, mounting blobs it has in
/// another repository). Cheap to share behind an `Arc`; it keeps bearer
/// tokens between calls.
pub struct RegistryClient {
    transports: Transports,
    insecure: Vec<String>,
    credentials: Option<DockerConfig>,
    /// (API host, digest) → a repository of that registry known to hold
    /// the blob, learned from pulls and pushes.
    known_blobs: Mutex<HashMap<(String, String), String>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("insecure", &self.insecure)
            .field(
                "credentials",
                &self.credentials.as_ref().map(DockerConfig::path),
            )
            .finish_non_exhaustive()
    }
}

/// One call's view of a registry: the `oci-client` to use (TLS or not),
/// the reference in its terms, and the error context.
pub(crate) struct Session<'a> {
    pub client: &'a oci_client::Client,
    pub oci_ref: oci_client::Reference,
    pub auth: RegistryAuth,
    pub ctx: Context,
}

impl Session<'_> {
    /// Maps an `oci-client` error with this session's context.
    pub(crate) fn err(&self, e: oci_client::errors::OciDistributionError) -> RegistryError {
        self.ctx.map(e)
    }
}

impl RegistryClient {
    /// Builds a client. Reads the docker config file (see
    /// [`RegistryConfig::docker_config`]) once, here.
    pub fn new(config: RegistryConfig) -> Result<Self, RegistryError> {
        let credentials = match &config.docker_config {
            Some(path) => Some(DockerConfig::load(path)?),
            None => match DockerConfig::default_path() {
                Some(path) if path.is_file() => Some(DockerConfig::load(&path)?),
                _ => None,
            },
        };
        Ok(Self {
            transports: Transports::start(),
            insecure: config.insecure,
            credentials,
            known_blobs: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `registry` (`host[:port]`) is reached over plain HTTP:
    /// loopback, or listed in [`RegistryConfig::insecure`].
    pub fn uses_plain_http(&self, registry: &str) -> bool {
        let host = host_of(registry);
        is_loopback(host)
            || self.insecure.iter().any(|entry| {
                let entry = entry
                    .strip_prefix("http://")
                    .or_else(|| entry.strip_prefix("https://"))
                    .unwrap_or(entry)
                    .trim_end_matches('/');
                entry == registry || (!has_port(entry) && entry == host)
            })
    }

    /// The credentials used for `registry`, from the docker config.
    pub fn credentials_for(&self, registry: &str) -> Result<RegistryCredentials, RegistryError> {
        match &self.credentials {
            Some(c) => c.credentials_for(registry),
            None => Ok(RegistryCredentials::Anonymous),
        }
    }

    /// Prepares a call on `reference`: picks the transport, loads the
    /// credentials into `oci-client` (which does the token exchange).
    pub(crate) async fn session(
        &self,
        reference: &ImageRef,
        action: impl Into<String>,
    ) -> Result<Session<'_>, RegistryError> {
        let auth = self.credentials_for(reference.registry())?.to_oci();
        let anonymous = auth == RegistryAuth::Anonymous;
        let client = self
            .transports
            .client(self.uses_plain_http(reference.api_host()))
            .await
            .map_err(|detail| RegistryError::Protocol {
                registry: reference.registry().to_string(),
                reference: reference.to_string(),
                action: "building the HTTP client".to_string(),
                detail,
            })?;
        let oci_ref = reference.to_oci();
        client
            .store_auth_if_needed(oci_ref.resolve_registry(), &auth)
            .await;
        Ok(Session {
            client,
            oci_ref,
            auth,
            ctx: Context {
                registry: reference.registry().to_string(),
                reference: reference.to_string(),
                action: action.into(),
                anonymous,
            },
        })
    }

    /// Notes that `repository` on `reference`'s registry holds `digest`.
    pub(crate) fn remember_blob(&self, reference: &ImageRef, digest: &str) {
        if let Ok(mut known) = self.known_blobs.lock() {
            known.insert(
                (reference.api_host().to_string(), digest.to_string()),
                reference.repository().to_string(),
            );
        }
    }

    /// A repository of `reference`'s registry, other than its own, known to
    /// hold `digest`.
    pub(crate) fn known_source(&self, reference: &ImageRef, digest: &str) -> Option<String> {
        let known = self.known_blobs.lock().ok()?;
        known
            .get(&(reference.api_host().to_string(), digest.to_string()))
            .filter(|repo| repo.as_str() != reference.repository())
            .cloned()
    }
}

type Built = Arc<OnceLock<Result<oci_client::Client, String>>>;

/// The two `oci-client`s (plain HTTP and TLS), built on a thread of their
/// own as the [`RegistryClient`] is made, plain HTTP first (a loopback
/// registry is the one a build is most likely to reach at once), and
/// waited for on first use. Building one takes tens of milliseconds:
/// besides its own client, `oci-client` builds a default reqwest client
/// that reads the system's certificate directory again. An embedded build
/// would otherwise spend that before its first step.
struct Transports {
    plain: Built,
    tls: Built,
}

impl Transports {
    fn start() -> Self {
        let (plain, tls): (Built, Built) = Default::default();
        let (p, t) = (Arc::clone(&plain), Arc::clone(&tls));
        // Without the thread each client is built on first use.
        let _ = std::thread::Builder::new()
            .name("registry-clients".to_string())
            .spawn(move || {
                p.get_or_init(|| build_client(ClientProtocol::Http));
                t.get_or_init(|| build_client(ClientProtocol::Https));
            });
        Self { plain, tls }
    }

    /// The client for plain HTTP or TLS. If the thread has not built it
    /// yet, it is built (or waited for) on tokio's blocking pool, not on
    /// the caller's runtime thread: once per process, before the first
    /// request that would need it anyway.
    async fn client(&self, plain: bool) -> Result<&oci_client::Client, String> {
        let (slot, protocol) = if plain {
            (&self.plain, ClientProtocol::Http)
        } else {
            (&self.tls, ClientProtocol::Https)
        };
        if slot.get().is_none() {
            let waiting = Arc::clone(slot);
            tokio::task::spawn_blocking(move || {
                waiting.get_or_init(|| build_client(protocol));
            })
            .await
            .map_err(|e| e.to_string())?;
        }
        match slot.get() {
            Some(Ok(client)) => Ok(client),
            Some(Err(detail)) => Err(detail.clone()),
            None => Err("the client was not built".to_string()),
        }
    }
}

fn build_client(protocol: ClientProtocol) -> Result<oci_client::Client, String> {
    let config = ClientConfig {
        protocol,
        // Indexes are resolved here, with the caller's platform.
        platform_resolver: None,
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        user_agent: USER_AGENT,
        // The system's roots, read once per process rather than by every
        // client built (the plain-HTTP client too: a registry may redirect
        // a blob to an https URL). Without any, the client's own default
        // reports that.
        tls_certs_only: super::roots::system_root_certs()
            .iter()
            .map(|der| Certificate {
                encoding: CertificateEncoding::Der,
                data: der.clone(),
            })
            .collect(),
        ..ClientConfig::default()
    };
    // `Client::new` would fall back to a default (TLS) client on error;
    // `try_from` lets the error out.
    oci_client::Client::try_from(config).map_err(|e| e.to_string())
}

/// `registry` without its port (`[::1]` keeps its brackets).
fn host_of(registry: &str) -> &str {
    if registry.starts_with('[') {
        return registry.split_inclusive(']').next().unwrap_or(registry);
    }
    registry.split(':').next().unwrap_or(registry)
}

fn has_port(registry: &str) -> bool {
    host_of(registry).len() != registry.len()
}

fn is_loopback(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback());
    }
    host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_listed_hosts_use_plain_http() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("config.json");
        std::fs::write(&empty, b"{}").unwrap();
        let client = RegistryClient::new(RegistryConfig {
            insecure: vec!["reg.lan:5000".into(), "http://other.lan".into()],
            docker_config: Some(empty),
        })
        .unwrap();
        for plain in [
            "127.0.0.1:5000",
            "127.1.2.3",
            "localhost:1",
            "[::1]:5000",
            "reg.lan:5000",
            "other.lan",
            "other.lan:8080",
        ] {
            assert!(client.uses_plain_http(plain), "{plain}");
        }
        for tls in [
            "reg.lan",
            "reg.lan:5001",
            "registry-1.docker.io",
            "10.0.0.1:5000",
            "[::2]:5000",
        ] {
            assert!(!client.uses_plain_http(tls), "{tls}");
        }
    }

    #[test]
    fn an_explicit_config_path_must_exist() {
        let err = RegistryClient::new(RegistryConfig {
            insecure: vec![],
            docker_config: Some("/nonexistent/strata/config.json".into()),
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/strata/config.json"),
            "{err}"
        );
    }
}
