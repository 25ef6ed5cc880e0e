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
    let mut labels = BTreeMap::new();
    for l in &args.labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--label {l:?}: expected KEY=VALUE"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    let endpoint = tonic::transport::Endpoint::from_shared(args.scheduler.clone())
        .map_err(|e| anyhow::anyhow!("--scheduler {:?}: {e}", args.scheduler))?
        .connect_timeout(std::time::Duration::from_secs(10))
        .http2_keep_alive_interval(std::time::Duration::from_secs(20));
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
        },
        Arc::new(AgentStats::default()),
        shutdown,
    )
    .await;
    Ok(())
}
