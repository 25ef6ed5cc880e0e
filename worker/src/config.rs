//! The worker's command line and environment: the scheduler endpoint (with
//! TLS), the token, the worker id kept in the state directory, labels.

use crate::agent::{AgentConfig, Connector};
use clap::Parser;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The strata worker: runs each RUN/COPY/ADD step it is assigned in runc
/// and stores the resulting layer.
#[derive(Debug, Parser)]
#[command(name = "strata-worker", version, about)]
pub struct Args {
    /// The scheduler's address, e.g. http://127.0.0.1:7390.
    #[arg(long, env = "STRATA_SCHEDULER", value_name = "URL")]
    pub scheduler: String,
    /// State directory: local layer store, snapshots, cache mounts.
    #[arg(
        long,
        default_value = "/var/lib/strata-worker",
        env = "STRATA_WORKER_STATE"
    )]
    pub state: PathBuf,
    /// The worker's id (default: the one saved in the state directory, or
    /// one the scheduler assigns and this worker then keeps).
    #[arg(long, env = "STRATA_WORKER_NAME")]
    pub name: Option<String>,
    /// Jobs to run at once (default: two per CPU, at least four).
    #[arg(long)]
    pub capacity: Option<u32>,
    /// Placement label `key=value`; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Use the copy snapshotter even where overlayfs works.
    #[arg(long)]
    pub copy_snapshotter: bool,
    /// Address to serve /metrics, /healthz and /readyz on (plain HTTP;
    /// ready = registered with the scheduler).
    #[arg(long, value_name = "ADDR", env = "STRATA_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// File holding the worker token (re-read every few seconds).
    #[arg(long, value_name = "FILE", env = "STRATA_WORKER_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) to verify the scheduler's TLS certificate by
    /// (only it: not the system's roots).
    #[arg(long, value_name = "FILE", env = "STRATA_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// The scheduler's public key, pinned instead of a CA:
    /// `sha256//BASE64` (curl's --pinnedpubkey) or `sha256:HEX` of its
    /// certificate's SubjectPublicKeyInfo; several separated by ';'. No CA,
    /// name or date is checked, only that the scheduler holds that key.
    #[arg(
        long,
        value_name = "PIN",
        env = "STRATA_TLS_PIN",
        conflicts_with = "ca_cert"
    )]
    pub tls_pin: Option<String>,
    /// Client certificate (PEM) for mTLS with the scheduler.
    #[arg(
        long,
        value_name = "FILE",
        env = "STRATA_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(
        long,
        value_name = "FILE",
        env = "STRATA_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// OTLP/gRPC endpoint for traces, e.g. http://127.0.0.1:4317.
    #[arg(long, value_name = "URL", env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// On SIGTERM, seconds running jobs may take to finish before they are
    /// handed back to the scheduler (keep it below Kubernetes'
    /// terminationGracePeriodSeconds).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub drain_timeout: u64,
    /// While steps keep this machine's CPUs busy, a layer of 4 MiB or
    /// more is compressed and uploaded once the CPUs have room, once no
    /// step runs here, or once a step or a build waits for it (the
    /// scheduler says so), and at the latest this many seconds after its
    /// step ended; the steps built on it start at once on the unpacked
    /// layer meanwhile. 0 compresses and uploads every layer at once.
    #[arg(
        long,
        default_value_t = 10.0,
        value_name = "SECONDS",
        env = "STRATA_DEFER_UPLOADS"
    )]
    pub defer_uploads: f64,
    /// Idle CPUs the machine must have had over 100 ms for a put-off
    /// layer to go ahead (default: 1, or 0.5 on a machine of one CPU).
    #[arg(long, value_name = "CPUS", env = "STRATA_DEFER_IDLE_CPUS")]
    pub defer_idle_cpus: Option<f64>,
    /// Run steps without no-new-privileges, as docker build and BuildKit
    /// do, so setuid binaries (sudo, su) in RUN can raise privileges
    /// (within the step's capabilities). By default every step runs with
    /// no-new-privileges and such Dockerfiles fail.
    /// STRATA_ALLOW_NEW_PRIVILEGES: y/yes/t/true/on/1 or n/no/f/false/off/0.
    #[arg(long, env = "STRATA_ALLOW_NEW_PRIVILEGES",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_new_privileges: bool,
    /// Keep the local layer store under this many bytes: after each job
    /// the least recently used layers and blobs no running job reads are
    /// removed (they come back from the farm's store when needed). Build
    /// contexts kept materialised for later steps are apart from it (at
    /// most 2 GiB of unused ones).
    #[arg(long, value_name = "BYTES", env = "STRATA_MAX_STORE_BYTES")]
    pub max_store_bytes: Option<u64>,
    /// Most bytes one layer may unpack to (a decompression bomb stops
    /// there): default 64 GiB, or --max-store-bytes when that is less.
    #[arg(long, value_name = "BYTES", env = "STRATA_MAX_LAYER_BYTES")]
    pub max_layer_bytes: Option<u64>,
    /// Most bytes one ADD archive may extract to: default 32 GiB, or
    /// --max-store-bytes when that is less.
    #[arg(long, value_name = "BYTES", env = "STRATA_MAX_ADD_BYTES")]
    pub max_add_bytes: Option<u64>,
    /// Log as JSON lines.
    #[arg(long, env = "STRATA_LOG_JSON")]
    pub log_json: bool,
}

fn read(path: &PathBuf, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("{what} {}: {e}", path.display()))
}

/// TLS towards the scheduler: its CA (else the system's roots), and a
/// client certificate for mTLS.
fn tls(args: &Args) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    if args.ca_cert.is_none() && args.tls_cert.is_none() && !args.scheduler.starts_with("https:") {
        return Ok(None);
    }
    let mut tls = ClientTlsConfig::new();
    tls = match &args.ca_cert {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(read(ca, "--ca-cert")?)),
        None => tls.with_native_roots(),
    };
    if let (Some(c), Some(k)) = (&args.tls_cert, &args.tls_key) {
        tls = tls.identity(Identity::from_pem(
            read(c, "--tls-cert")?,
            read(k, "--tls-key")?,
        ));
    }
    Ok(Some(tls))
}

impl Args {
    /// How to (re)connect to the scheduler.
    pub fn connector(&self) -> anyhow::Result<Connector> {
        let endpoint = |url: String| {
            tonic::transport::Endpoint::from_shared(url)
                .map_err(|e| anyhow::anyhow!("--scheduler {:?}: {e}", self.scheduler))
                .map(|e| {
                    e.connect_timeout(std::time::Duration::from_secs(10))
                        .http2_keep_alive_interval(std::time::Duration::from_secs(20))
                })
        };
        let url = self.scheduler.clone();
        // Every cause, not tonic's bare "transport error" (a pin mismatch
        // says which key the scheduler has).
        let failed = |url: &str, e: tonic::transport::Error| {
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
            format!("cannot reach the scheduler at {url}: {msg}")
        };
        if let Some(pin) = &self.tls_pin {
            use strata_telemetry::pin::Pins;
            let pins: Pins = pin.parse()?;
            let identity = match (&self.tls_cert, &self.tls_key) {
                (Some(c), Some(k)) => Some((read(c, "--tls-cert")?, read(k, "--tls-key")?)),
                _ => None,
            };
            let connector = pins.connector(
                &self.scheduler,
                identity.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
            )?;
            let endpoint = endpoint(Pins::endpoint_url(&self.scheduler)?)?;
            return Ok(Arc::new(move || {
                let (endpoint, connector, url) = (endpoint.clone(), connector.clone(), url.clone());
                Box::pin(async move {
                    endpoint
                        .connect_with_connector(connector)
                        .await
                        .map_err(|e| failed(&url, e))
                })
            }));
        }
        let mut endpoint = endpoint(self.scheduler.clone())?;
        if let Some(tls) = tls(self)? {
            endpoint = endpoint.tls_config(tls)?;
        }
        Ok(Arc::new(move || {
            let endpoint = endpoint.clone();
            let url = url.clone();
            Box::pin(async move { endpoint.connect().await.map_err(|e| failed(&url, e)) })
        }))
    }

    /// The worker id: `--name`, else the one kept in the state directory,
    /// else a new one (kept there for the next start).
    pub fn worker_id(&self) -> anyhow::Result<String> {
        std::fs::create_dir_all(&self.state)?;
        let id_file = self.state.join("worker-id");
        let kept = std::fs::read_to_string(&id_file)
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let id = match &self.name {
            Some(n) => n.clone(),
            None if !kept.is_empty() => kept.clone(),
            None => format!("w-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        };
        if id != kept {
            std::fs::write(&id_file, &id)?;
        }
        Ok(id)
    }

    /// Decompression bomb bounds: (one layer, one ADD archive), in bytes.
    pub fn unpack_limits(&self) -> (u64, u64) {
        let bound = |flag: Option<u64>, default: u64| {
            flag.unwrap_or_else(|| self.max_store_bytes.map_or(default, |s| s.min(default)))
        };
        (
            bound(
                self.max_layer_bytes,
                crate::store::default_max_layer_bytes(),
            ),
            bound(self.max_add_bytes, crate::store::default_max_add_bytes()),
        )
    }

    /// The agent's configuration.
    pub fn agent_config(&self, worker_id: String) -> anyhow::Result<AgentConfig> {
        let mut labels = BTreeMap::new();
        for l in &self.labels {
            let (k, v) = l
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--label {l:?}: expected KEY=VALUE"))?;
            labels.insert(k.to_string(), v.to_string());
        }
        let outgoing = match &self.token_file {
            Some(f) => strata_telemetry::Outgoing::with_token_file(f)
                .map_err(|e| anyhow::anyhow!("--token-file {}: {e}", f.display()))?,
            None => strata_telemetry::Outgoing::default(),
        };
        let bound = std::time::Duration::try_from_secs_f64(self.defer_uploads)
            .map_err(|e| anyhow::anyhow!("--defer-uploads {}: {e}", self.defer_uploads))?;
        let mut defer = crate::headroom::Defer {
            bound,
            ..Default::default()
        };
        if let Some(cpus) = self.defer_idle_cpus {
            anyhow::ensure!(
                cpus.is_finite() && cpus >= 0.0,
                "--defer-idle-cpus {cpus}: expected a number of CPUs, 0 or more"
            );
            defer.idle_cpus = cpus;
        }
        Ok(AgentConfig {
            worker_id,
            capacity: self.capacity.unwrap_or_else(default_capacity),
            labels,
            outgoing,
            drain_timeout: std::time::Duration::from_secs(self.drain_timeout),
            max_store_bytes: self.max_store_bytes,
            defer,
        })
    }
}

/// Jobs a worker runs at once unless told: two per CPU, at least four.
/// BuildKit runs every ready step at once; steps sleep and wait on the
/// network and the disk, so one job per CPU leaves CPUs idle (four
/// independent stages on two cores ran two by two). Steps built on a
/// layer that is still uploading start on the worker that made it while
/// it has a free slot, so this is also how far a fan-out of stages stays
/// on that worker before the others get a share.
pub fn default_capacity() -> u32 {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get() as u32)
        .saturating_mul(2)
        .max(4)
}

#[cfg(test)]
mod tests {
    use super::Args;
    use clap::Parser as _;

    fn limits(flags: &[&str]) -> (u64, u64) {
        let mut argv = vec!["strata-worker", "--scheduler", "http://127.0.0.1:1"];
        argv.extend_from_slice(flags);
        Args::try_parse_from(argv)
            .expect("arguments")
            .unpack_limits()
    }

    #[test]
    fn bomb_limits_default_to_the_store_limit_when_it_is_lower() {
        assert_eq!(limits(&[]), (64 << 30, 32 << 30));
        assert_eq!(limits(&["--max-store-bytes", "1000"]), (1000, 1000));
        assert_eq!(
            limits(&["--max-store-bytes", "1000", "--max-add-bytes", "5000"]),
            (1000, 5000)
        );
        assert_eq!(limits(&["--max-layer-bytes", "7"]), (7, 32 << 30));
    }
}
