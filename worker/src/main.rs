//! `strata-worker`: connects to a scheduler and runs the layer jobs it
//! assigns.

use clap::Parser;
use std::process::ExitCode;
use std::sync::Arc;
use strata_worker::agent::{self, AgentStats};
use strata_worker::config::Args;
use strata_worker::job::{Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

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
    let connect = args.connector()?;
    let config = args.agent_config(args.worker_id()?)?;
    let worker = Worker::open(WorkerConfig {
        state_dir: args.state.clone(),
        force_copy_snapshotter: args.copy_snapshotter,
        no_new_privileges: !args.allow_new_privileges,
    })
    .await
    .map_err(|e| anyhow::anyhow!("starting the worker in {}: {e}", args.state.display()))?;
    let (max_layer, max_add) = args.unpack_limits();
    worker.store().set_limits(max_layer, max_add);
    let stats = Arc::new(AgentStats::new());
    if let Some(addr) = args.metrics_listen {
        let s = Arc::clone(&stats);
        let ready: strata_telemetry::http::Readiness = Arc::new(move || s.connected.get() == 1);
        let bound = strata_telemetry::http::spawn(addr, stats.registry.clone(), ready).await?;
        tracing::info!(%bound, "metrics, /healthz and /readyz listening");
    }
    // SIGTERM or Ctrl-C: finish or hand back the running jobs, then leave.
    let shutdown = CancellationToken::new();
    let signalled = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        signalled.cancel();
    });
    tracing::info!(
        worker_id = config.worker_id,
        capacity = config.capacity,
        scheduler = args.scheduler,
        "strata-worker starting"
    );
    agent::run(Arc::new(worker), connect, config, stats, shutdown).await;
    Ok(())
}
