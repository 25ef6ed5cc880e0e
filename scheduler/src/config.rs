//! The scheduler's command line and environment, turned into a
//! [`SchedulerConfig`] and a TLS configuration.

use crate::SchedulerConfig;
use crate::auth::{Auth, Tokens};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use strata_oci::registry::RegistryConfig;
use strata_state::RedisConfig;
use strata_store::S3Config;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// The strata scheduler: plans builds into per-layer jobs, dispatches them
/// to connected workers, keeps the layer cache and the image store.
#[derive(Debug, Parser)]
#[command(name = "strata-scheduler", version, about)]
pub struct Args {
    /// Address to serve gRPC (BuildService, WorkerService, BlobService,
    /// grpc.health.v1) on.
    #[arg(long, default_value = "127.0.0.1:7390", env = "STRATA_LISTEN")]
    pub listen: SocketAddr,
    /// Address to serve /metrics, /healthz and /readyz on (plain HTTP).
    #[arg(long, value_name = "ADDR", env = "STRATA_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// State directory: blob store (or its local copy), image names.
    #[arg(
        long,
        default_value = "/var/lib/strata-scheduler",
        env = "STRATA_STATE"
    )]
    pub state: PathBuf,
    /// A registry to reach over plain HTTP (`host` or `host:port`);
    /// loopback registries always are. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// Docker-style config.json with registry credentials.
    #[arg(long, value_name = "FILE")]
    pub registry_config: Option<PathBuf>,
    /// Workers a job is tried on before its build fails.
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
    /// Seconds a worker may stay silent (no heartbeat, no message) before
    /// its jobs go to other workers; a result it sends later is ignored.
    /// Workers are told to send heartbeats three times per lease (at most
    /// every 5 s).
    #[arg(long, default_value_t = 30, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub lease_timeout: u64,
    /// Shared layer store:
    /// `s3://BUCKET[/PREFIX][?endpoint=URL&region=R&path_style=true]`.
    /// Credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; workers
    /// use the same bucket with their own. Without it the scheduler's
    /// state directory holds every blob.
    #[arg(long, value_name = "URL", env = "STRATA_S3")]
    pub s3: Option<String>,
    /// Shared state (cache index, claims, build records):
    /// `redis://[:PASSWORD@]HOST:PORT[/DB]`. Without it the state lives in
    /// this process and the cache index's records in the blob store.
    #[arg(long, value_name = "URL", env = "STRATA_REDIS")]
    pub redis: Option<String>,
    /// Let cache namespace NS reuse the cache of OTHER namespaces
    /// (`NS=OTHER[,OTHER...]`); namespaces are apart otherwise. Repeatable.
    #[arg(long = "cache-share", value_name = "NS=OTHER[,OTHER]")]
    pub cache_shares: Vec<String>,
    /// Client tokens: a directory (one file per tenant, its content the
    /// token; a mounted Secret) or a file of `TENANT TOKEN` lines. Re-read
    /// every few seconds. Without it clients need no token.
    #[arg(long, value_name = "PATH", env = "STRATA_CLIENT_TOKENS")]
    pub client_tokens: Option<PathBuf>,
    /// Worker tokens, in the same forms. Needed with --client-tokens
    /// (unless --tls-client-ca or --open-worker-api); a token may not be
    /// in both sets.
    #[arg(long, value_name = "PATH", env = "STRATA_WORKER_TOKENS")]
    pub worker_tokens: Option<PathBuf>,
    /// With --client-tokens, let workers register without a token or
    /// certificate: only where no one but trusted hosts reaches the port.
    #[arg(long, env = "STRATA_OPEN_WORKER_API")]
    pub open_worker_api: bool,
    /// TLS certificate chain (PEM) for the gRPC port.
    #[arg(
        long,
        value_name = "FILE",
        env = "STRATA_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(
        long,
        value_name = "FILE",
        env = "STRATA_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) that signs workers' client certificates: with it the
    /// worker API requires one (mTLS).
    #[arg(
        long,
        value_name = "FILE",
        env = "STRATA_TLS_CLIENT_CA",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<PathBuf>,
    /// Let builds that ask for it use an entitlement: `security.insecure`
    /// (`RUN --security=insecure`, a step with every capability of the
    /// worker). Repeatable.
    #[arg(long = "allow-insecure-entitlement", value_name = "ENTITLEMENT", value_parser = ["security.insecure"])]
    pub allow_insecure_entitlements: Vec<String>,
    /// Largest build context, in bytes: the sum of its file sizes, and
    /// what one upload (`UploadBlobs` call) or one context file may store.
    #[arg(long, default_value_t = 32 << 30, value_name = "BYTES", env = "STRATA_MAX_CONTEXT_BYTES")]
    pub max_context_bytes: u64,
    /// OTLP/gRPC endpoint for traces, e.g. http://127.0.0.1:4317.
    #[arg(long, value_name = "URL", env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// On SIGTERM, seconds running builds may take to finish before the
    /// scheduler stops (keep it below Kubernetes'
    /// terminationGracePeriodSeconds).
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub drain_timeout: u64,
    /// Log as JSON lines.
    #[arg(long, env = "STRATA_LOG_JSON")]
    pub log_json: bool,
}

fn read(path: &PathBuf, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("{what} {}: {e}", path.display()))
}

impl Args {
    /// The scheduler configuration these arguments describe.
    pub fn config(&self) -> anyhow::Result<SchedulerConfig> {
        let mut config = SchedulerConfig::new(&self.state);
        config.registry = RegistryConfig {
            insecure: self.insecure_registries.clone(),
            docker_config: self.registry_config.clone(),
        };
        config.max_attempts = self.max_attempts;
        config.lease_duration = Duration::from_secs(self.lease_timeout);
        config.heartbeat_interval = (config.lease_duration / 3).min(Duration::from_secs(5));
        config.max_context_bytes = self.max_context_bytes;
        if let Some(url) = &self.s3 {
            config.s3 =
                Some(S3Config::from_url(url).map_err(|e| anyhow::anyhow!("--s3 {url}: {e}"))?);
        }
        config.redis = self.redis.as_deref().map(RedisConfig::new);
        for share in &self.cache_shares {
            let (ns, others) = share.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("--cache-share {share:?}: expected NS=OTHER[,OTHER]")
            })?;
            config
                .cache_shares
                .entry(ns.to_string())
                .or_default()
                .extend(
                    others
                        .split(',')
                        .filter(|o| !o.is_empty())
                        .map(String::from),
                );
        }
        let tokens = |p: &Option<PathBuf>, what: &str| -> anyhow::Result<_> {
            p.as_ref()
                .map(|p| Tokens::open(p))
                .transpose()
                .map_err(|e| anyhow::anyhow!("{what}: {e}"))
        };
        config.allowed_entitlements = self.allow_insecure_entitlements.iter().cloned().collect();
        config.auth = Auth::new(
            tokens(&self.client_tokens, "--client-tokens")?,
            tokens(&self.worker_tokens, "--worker-tokens")?,
            self.tls_client_ca.is_some(),
            self.open_worker_api,
        )
        .map_err(anyhow::Error::msg)?;
        Ok(config)
    }

    /// TLS for the gRPC port, when a certificate is given.
    pub fn tls(&self) -> anyhow::Result<Option<ServerTlsConfig>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(
            read(cert, "--tls-cert")?,
            read(key, "--tls-key")?,
        ));
        if let Some(ca) = &self.tls_client_ca {
            // Clients (the CLI) need no certificate; the worker API checks
            // that one was presented and verified.
            tls = tls
                .client_ca_root(Certificate::from_pem(read(ca, "--tls-client-ca")?))
                .client_auth_optional(true);
        }
        Ok(Some(tls))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<SchedulerConfig, String> {
        let args = Args::try_parse_from(["strata-scheduler"].iter().chain(args))
            .map_err(|e| e.to_string())?;
        args.config().map_err(|e| e.to_string())
    }

    #[test]
    fn the_lease_sets_the_heartbeat_interval() {
        let c = config(&[]).expect("defaults");
        assert_eq!(c.lease_duration, Duration::from_secs(30));
        assert_eq!(c.heartbeat_interval, Duration::from_secs(5));
        let c = config(&["--lease-timeout", "3"]).expect("a short lease");
        assert_eq!(c.lease_duration, Duration::from_secs(3));
        assert_eq!(c.heartbeat_interval, Duration::from_secs(1));
        let Err(e) = config(&["--lease-timeout", "0"]) else {
            panic!("a zero lease was accepted");
        };
        assert!(e.contains("--lease-timeout"), "{e}");
    }
}
