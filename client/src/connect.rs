//! Reaching a scheduler: the one given by `--scheduler` / `STRATA_SCHEDULER`,
//! or, with the `embedded` feature, an in-process farm.

use anyhow::{Context as _, Result};
use std::path::PathBuf;
use std::time::Duration;
use strata_proto::build::v1::build_service_client::BuildServiceClient;
use strata_telemetry::Outgoing;
use strata_telemetry::pin::Pins;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// A `BuildService` client whose calls carry the trace context and the
/// client's token.
pub type Client = BuildServiceClient<InterceptedService<Channel, Outgoing>>;

/// How long to wait for the scheduler to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A `BuildService` client plus whatever keeps its server alive.
pub struct Connection {
    /// The client, with strata's message size limits.
    pub client: Client,
    /// The in-process farm when the build is embedded; dropping it stops the
    /// scheduler and worker, so it lives as long as the connection.
    #[cfg(feature = "embedded")]
    _farm: Option<crate::embedded::Farm>,
}

impl Connection {
    /// Ends the connection. An embedded farm is stopped, and its running
    /// steps are waited for ([`crate::embedded::Farm::stop`]); a remote
    /// scheduler is left alone.
    pub async fn close(self) {
        #[cfg(feature = "embedded")]
        if let Some(farm) = self._farm {
            farm.stop().await;
        }
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

/// Wraps a channel in a `BuildService` client that accepts and sends
/// messages up to [`strata_proto::MAX_MESSAGE_SIZE`] and sends `outgoing`
/// metadata with every call.
pub fn client(channel: Channel, outgoing: Outgoing) -> Client {
    BuildServiceClient::with_interceptor(channel, outgoing)
        .max_decoding_message_size(strata_proto::MAX_MESSAGE_SIZE)
        .max_encoding_message_size(strata_proto::MAX_MESSAGE_SIZE)
}

/// The client's credentials: `STRATA_TOKEN`, or the token in the file
/// `STRATA_TOKEN_FILE`.
pub fn outgoing() -> Result<Outgoing> {
    if let Ok(t) = std::env::var("STRATA_TOKEN")
        && !t.is_empty()
    {
        return Ok(Outgoing::with_token(t));
    }
    if let Some(f) = std::env::var_os("STRATA_TOKEN_FILE").filter(|f| !f.is_empty()) {
        return Outgoing::with_token_file(&f).with_context(|| {
            format!(
                "reading STRATA_TOKEN_FILE {}",
                std::path::Path::new(&f).display()
            )
        });
    }
    Ok(Outgoing::default())
}

fn env(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// TLS towards the scheduler for `https://` URLs: verified by the system's
/// roots, or by only the CA (or self-signed certificate) in
/// `STRATA_CA_CERT`. (`STRATA_TLS_PIN` is [`connect_url`]'s.)
fn tls(url: &str) -> Result<Option<ClientTlsConfig>> {
    let ca = env("STRATA_CA_CERT");
    if !url.starts_with("https:") && ca.is_none() {
        return Ok(None);
    }
    let Some(ca) = ca else {
        return Ok(Some(ClientTlsConfig::new().with_native_roots()));
    };
    let pem = std::fs::read(&ca).with_context(|| {
        format!(
            "reading STRATA_CA_CERT {}",
            std::path::Path::new(&ca).display()
        )
    })?;
    Ok(Some(
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
    ))
}

/// Connects to the scheduler at `url` (e.g. `http://127.0.0.1:7390`);
/// with `STRATA_TLS_PIN`, an `https://` scheduler whose certificate has
/// exactly the pinned public key (no CA, no name checked).
pub async fn connect_url(url: &str) -> Result<Client> {
    let invalid = || format!("invalid scheduler address \"{url}\"");
    let connected = if let Some(pin) = env("STRATA_TLS_PIN") {
        if env("STRATA_CA_CERT").is_some() {
            anyhow::bail!(
                "STRATA_TLS_PIN and STRATA_CA_CERT are both set: a pinned key is the whole check, unset one"
            );
        }
        let pins: Pins = pin.to_string_lossy().parse().context("STRATA_TLS_PIN")?;
        let connector = pins.connector(url, None)?;
        Endpoint::from_shared(Pins::endpoint_url(url)?)
            .with_context(invalid)?
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_with_connector(connector)
            .await
    } else {
        let mut endpoint = Endpoint::from_shared(url.to_string())
            .with_context(invalid)?
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(tls) = tls(url)? {
            endpoint = endpoint
                .tls_config(tls)
                .with_context(|| format!("TLS for {url}"))?;
        }
        endpoint.connect().await
    };
    let channel = connected.map_err(|e| {
        // tonic's top-level message is just "transport error"; the cause
        // (connection refused, DNS failure, a pin mismatch) is what the
        // user needs.
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            let text = s.to_string();
            // hyper and tonic repeat their cause in their own message.
            if !msg.contains(&text) {
                msg = format!("{msg}: {text}");
            }
            source = s.source();
        }
        anyhow::anyhow!(
            "cannot connect to the scheduler at {url}: {msg} (check --scheduler / STRATA_SCHEDULER)"
        )
    })?;
    Ok(client(channel, outgoing()?))
}

/// Connects to `scheduler` if given, else starts the embedded farm (or
/// explains that this build has none).
pub async fn connect(scheduler: Option<&str>) -> Result<Connection> {
    if let Some(url) = scheduler.filter(|s| !s.is_empty()) {
        return Ok(Connection {
            client: connect_url(url).await?,
            #[cfg(feature = "embedded")]
            _farm: None,
        });
    }
    embedded().await
}

#[cfg(feature = "embedded")]
async fn embedded() -> Result<Connection> {
    let home = home();
    let (channel, farm) = crate::embedded::start(&home).await?;
    Ok(Connection {
        client: client(channel, Outgoing::default()),
        _farm: Some(farm),
    })
}

#[cfg(not(feature = "embedded"))]
async fn embedded() -> Result<Connection> {
    anyhow::bail!(
        "no scheduler: pass --scheduler URL or set STRATA_SCHEDULER (this strata was built without the embedded builder)"
    )
}

/// Where embedded mode keeps its store and images: `$STRATA_HOME`, else
/// `/var/lib/strata` for root, else `~/.local/share/strata`.
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("STRATA_HOME") {
        return PathBuf::from(h);
    }
    if is_root() {
        return PathBuf::from("/var/lib/strata");
    }
    let base = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    base.join(".local/share/strata")
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}
