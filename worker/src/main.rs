//! `strata-worker`: connects to a scheduler and runs the layer jobs it
//! assigns.

use clap::Parser;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use strata_worker::agent::{self, AgentConfig, AgentStats, Connector};
use strata_worker::job::{Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

/// The strata worker: runs each RUN/COPY/ADD step it is assigned in runc
/// and stores the resulting layer.
#[derive(Debug, Parser)]
#[command(name = "strata-worker", version, about)]
struct Args {
    /// The scheduler's address, e.g. http://127.0.0.1:7390.
    #[arg(long, env = "STRATA_SCHEDULER", value_name = "URL")]
    scheduler: String,
    /// State directory: local layer store, snapshots, cache mounts.
    #[arg(
        long,
        default_value = "/var/lib/strata-worker",
        env = "STRATA_WORKER_STATE"
    )]
    state: PathBuf,
    /// The worker's id (default: the one saved in the state directory, or
    /// one the scheduler assigns and this worker then keeps).
    #[arg(long, env = "STRATA_WORKER_NAME")]
    name: Option<String>,
    /// Jobs to run at once (default: the number of CPUs).
    #[arg(long)]
    capacity: Option<u32>,
    /// Placement label `key=value`; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Use the copy snapshotter even where overlayfs works.
    #[arg(long)]
    copy_snapshotter: bool,
    /// Address to serve /metrics, /healthz and /readyz on (plain HTTP;
    /// ready = registered with the scheduler).
    #[arg(long, value_name = "ADDR", env = "STRATA_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// File holding the worker token (re-read every few seconds).
    #[arg(long, value_name = "FILE", env = "STRATA_WORKER_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) to verify the scheduler's TLS certificate by.
    #[arg(long, value_name = "FILE", env = "STRATA_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS with the scheduler.
    #[arg(
        long,
        value_name = "FILE",
        env = "STRATA_TLS_CERT",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(
        long,
        value_name = "FILE",
        env = "STRATA_TLS_KEY",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// OTLP/gRPC endpoint for traces, e.g. http://127.0.0.1:4317.
    #[arg(long, value_name = "URL", env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Log as JSON lines.
    #[arg(long, env = "STRATA_LOG_JSON")]
    log_json: bool,
}

fn read(path: &PathBuf, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("{what} {}: {e}", path.display()))
}

/// TLS towards the scheduler: its CA, and a client certificate for mTLS.
fn tls(args: &Args) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    if args.ca_cert.is_none() && args.tls_cert.is_none() && !args.scheduler.starts_with("https:") {
        return Ok(None);
    }
    let mut tls = ClientTlsConfig::new().with_native_roots();
    if let Some(ca) = &args.ca_cert {
        tls = tls.ca_certificate(Certificate::from_pem(read(ca, "--ca-cert")?));
    }
    if let (Some(c), Some(k)) = (&args.tls_cert, &args.tls_key) {
        tls = tls.identity(Identity::from_pem(
            read(c, "--tls-cert")?,
            read(k, "--tls-key")?,
        ));
    }
    Ok(Some(tls))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("strata-worker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let _telemetry = strata_telemetry::init(&strata_telemetry::Options {
        service: "strata-worker",
        json: args.log_json,
        otlp_endpoint: args.otlp_endpoint.clone(),
        default_filter: "info",
    })?;
    let mut labels = BTreeMap::new();
    for l in &args.labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--label {l:?}: expected KEY=VALUE"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    let mut endpoint = tonic::transport::Endpoint::from_shared(args.scheduler.clone())
        .map_err(|e| anyhow::anyhow!("--scheduler {:?}: {e}", args.scheduler))?
        .connect_timeout(std::time::Duration::from_secs(10))
        .http2_keep_alive_interval(std::time::Duration::from_secs(20));
    if let Some(tls) = tls(&args)? {
        endpoint = endpoint.tls_config(tls)?;
    }
    let outgoing = match &args.token_file {
        Some(f) => strata_telemetry::Outgoing::with_token_file(f)
            .map_err(|e| anyhow::anyhow!("--token-file {}: {e}", f.display()))?,
        None => strata_telemetry::Outgoing::default(),
    };
    std::fs::create_dir_all(&args.state)?;
    let id_file = args.state.join("worker-id");
    let worker_id = match &args.name {
        Some(n) => n.clone(),
        None => std::fs::read_to_string(&id_file)
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    };
    if worker_id.is_empty() {
        let id = format!("w-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        std::fs::write(&id_file, &id)?;
    } else if args.name.is_some() {
        std::fs::write(&id_file, &worker_id)?;
    }
    let worker_id = std::fs::read_to_string(&id_file)?.trim().to_string();
    let worker = Worker::open(WorkerConfig {
        state_dir: args.state.clone(),
        force_copy_snapshotter: args.copy_snapshotter,
    })
    .await
    .map_err(|e| anyhow::anyhow!("starting the worker in {}: {e}", args.state.display()))?;
    let capacity = args
        .capacity
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as u32));
    let url = args.scheduler.clone();
    let connect: Connector = Arc::new(move || {
        let endpoint = endpoint.clone();
        let url = url.clone();
        Box::pin(async move {
            endpoint
                .connect()
                .await
                .map_err(|e| format!("cannot reach the scheduler at {url}: {e}"))
        })
    });
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing the SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            shutdown.cancel();
        });
    }
    let stats = Arc::new(AgentStats::new());
    if let Some(addr) = args.metrics_listen {
        let s = Arc::clone(&stats);
        let ready: strata_telemetry::http::Readiness = Arc::new(move || s.connected.get() == 1);
        let bound = strata_telemetry::http::spawn(addr, stats.registry.clone(), ready).await?;
        tracing::info!(%bound, "metrics, /healthz and /readyz listening");
    }
    tracing::info!(
        worker_id,
        capacity,
        scheduler = args.scheduler,
        "strata-worker starting"
    );
    agent::run(
        Arc::new(worker),
        connect,
        AgentConfig {
            worker_id,
            capacity,
            labels,
            outgoing,
        },
        stats,
        shutdown,
    )
    .await;
    Ok(())
}
