//! Reaching a scheduler: the one given by `--scheduler` / `STRATA_SCHEDULER`,
//! or, with the `embedded` feature, an in-process farm.

use anyhow::{Context as _, Result};
use std::path::PathBuf;
use std::time::Duration;
use strata_proto::build::v1::build_service_client::BuildServiceClient;
use tonic::transport::{Channel, Endpoint};

/// How long to wait for the scheduler to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A `BuildService` client plus whatever keeps its server alive.
pub struct Connection {
    /// The client, with strata's message size limits.
    pub client: BuildServiceClient<Channel>,
    /// The in-process farm when the build is embedded; dropping it stops the
    /// scheduler and worker, so it lives as long as the connection.
    #[cfg(feature = "embedded")]
    _farm: Option<crate::embedded::Farm>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

/// Wraps a channel in a `BuildService` client that accepts and sends
/// messages up to [`strata_proto::MAX_MESSAGE_SIZE`].
pub fn client(channel: Channel) -> BuildServiceClient<Channel> {
    BuildServiceClient::new(channel)
        .max_decoding_message_size(strata_proto::MAX_MESSAGE_SIZE)
        .max_encoding_message_size(strata_proto::MAX_MESSAGE_SIZE)
}

/// Connects to the scheduler at `url` (e.g. `http://127.0.0.1:7390`).
pub async fn connect_url(url: &str) -> Result<BuildServiceClient<Channel>> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .with_context(|| format!("invalid scheduler address \"{url}\""))?
        .connect_timeout(CONNECT_TIMEOUT);
    let channel = endpoint.connect().await.map_err(|e| {
        // tonic's top-level message is just "transport error"; the cause
        // (connection refused, DNS failure) is what the user needs.
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
    Ok(client(channel))
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
        client: client(channel),
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
