//! `strata-scheduler`: serves the build farm's gRPC API.

use clap::Parser;
use std::process::ExitCode;
use strata_scheduler::{Scheduler, config::Args};

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("strata-scheduler: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata-scheduler: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let _telemetry = strata_telemetry::init(&strata_telemetry::Options {
        service: "strata-scheduler",
        json: args.log_json,
        otlp_endpoint: args.otlp_endpoint.clone(),
        default_filter: "info",
    })?;
    let config = args.config()?;
    let tls = args.tls()?;
    let scheduler = Scheduler::open(config).await?;
    if let Some(addr) = args.metrics_listen {
        let bound = scheduler.serve_metrics(addr).await?;
        tracing::info!(%bound, "metrics, /healthz and /readyz listening");
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        state = %args.state.display(),
        tls = tls.is_some(),
        "strata-scheduler listening"
    );
    let drain = std::time::Duration::from_secs(args.drain_timeout);
    serve(scheduler, listener, tls, drain).await
}

/// Serves until SIGTERM or Ctrl-C, then drains: not ready, no new builds,
/// workers told, running builds given `drain_timeout` to finish.
async fn serve(
    scheduler: Scheduler,
    listener: tokio::net::TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    drain_timeout: std::time::Duration,
) -> anyhow::Result<()> {
    // Without TCP_NODELAY a small write (a unary answer, a flow-control
    // update letting an upload go on) can wait for the client's delayed
    // ACK, 40 ms, whenever an earlier one is unacknowledged.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .trace_fn(|req| {
            let span = tracing::info_span!("grpc", rpc = %req.uri().path());
            strata_telemetry::set_parent_from_headers(&span, req.headers());
            span
        });
    if let Some(tls) = tls {
        server = server.tls_config(tls)?;
    }
    let draining = scheduler.clone();
    let drained = std::sync::Arc::new(tokio::sync::Notify::new());
    let done = std::sync::Arc::clone(&drained);
    let serving = server
        .add_routes(scheduler.routes())
        .serve_with_incoming_shutdown(incoming, async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing the SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            tracing::info!("shutting down: no new builds; waiting for the running ones");
            draining.drain().await;
            let deadline = tokio::time::Instant::now() + drain_timeout;
            while draining.running_builds() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            let left = draining.running_builds();
            if left > 0 {
                tracing::warn!(left, "drain timeout: stopping with builds still running");
            }
            draining.inner().pool.drain_all("scheduler shutting down");
            done.notify_one();
        });
    // Workers' sessions (and the watch of a build the drain timeout cut
    // short) are streams that never end by themselves, and a graceful
    // shutdown waits for every stream: once drained, the last answers get
    // CLOSE_GRACE to go out, then the process leaves.
    const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
    tokio::select! {
        served = serving => served?,
        () = async {
            drained.notified().await;
            tokio::time::sleep(CLOSE_GRACE).await;
        } => tracing::info!("drained: closing the workers' sessions"),
    }
    Ok(())
}
