//! `strata-scheduler`: serves the build farm's gRPC API.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use strata_oci::registry::RegistryConfig;
use strata_scheduler::{Scheduler, SchedulerConfig};
use strata_state::RedisConfig;
use strata_store::S3Config;

/// The strata scheduler: plans builds into per-layer jobs, dispatches them
/// to connected workers, keeps the layer cache and the image store.
#[derive(Debug, Parser)]
#[command(name = "strata-scheduler", version, about)]
struct Args {
    /// Address to serve gRPC (BuildService, WorkerService, BlobService) on.
    #[arg(long, default_value = "127.0.0.1:7390", env = "STRATA_LISTEN")]
    listen: SocketAddr,
    /// State directory: blob store, cache index, images, build logs.
    #[arg(
        long,
        default_value = "/var/lib/strata-scheduler",
        env = "STRATA_STATE"
    )]
    state: PathBuf,
    /// A registry to reach over plain HTTP (`host` or `host:port`);
    /// loopback registries always are. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registries: Vec<String>,
    /// Docker-style config.json with registry credentials.
    #[arg(long, value_name = "FILE")]
    registry_config: Option<PathBuf>,
    /// Workers a job is tried on before its build fails.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// Shared layer store:
    /// `s3://BUCKET[/PREFIX][?endpoint=URL&region=R&path_style=true]`.
    /// Credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; workers
    /// use the same bucket with their own. Without it the scheduler's
    /// state directory holds every blob.
    #[arg(long, value_name = "URL", env = "STRATA_S3")]
    s3: Option<String>,
    /// Shared state (cache index, claims, build records): `redis://HOST:PORT[/DB]`.
    /// Without it the state lives in this process and the cache index's
    /// records in the blob store.
    #[arg(long, value_name = "URL", env = "STRATA_REDIS")]
    redis: Option<String>,
    /// Let cache namespace NS reuse the cache of OTHER namespaces
    /// (`NS=OTHER[,OTHER...]`); namespaces are apart otherwise. Repeatable.
    #[arg(long = "cache-share", value_name = "NS=OTHER[,OTHER]")]
    cache_shares: Vec<String>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if args.log_json {
        fmt.json().init();
    } else {
        fmt.init();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("strata-scheduler: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata-scheduler: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let mut config = SchedulerConfig::new(&args.state);
    config.registry = RegistryConfig {
        insecure: args.insecure_registries,
        docker_config: args.registry_config,
    };
    config.max_attempts = args.max_attempts;
    if let Some(url) = &args.s3 {
        config.s3 = Some(S3Config::from_url(url).map_err(|e| anyhow::anyhow!("--s3 {url}: {e}"))?);
    }
    config.redis = args.redis.as_deref().map(RedisConfig::new);
    for share in &args.cache_shares {
        let (ns, others) = share
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--cache-share {share:?}: expected NS=OTHER[,OTHER]"))?;
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
    let scheduler = Scheduler::open(config).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        state = %args.state.display(),
        "strata-scheduler listening"
    );
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        tracing::info!("shutting down");
    };
    let pool = scheduler.inner().clone();
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_routes(scheduler.routes())
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            pool.pool.drain_all("scheduler shutting down");
        })
        .await?;
    Ok(())
}
