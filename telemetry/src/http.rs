//! The plain-HTTP side of a strata process: `/metrics` in Prometheus's
//! text format, `/healthz` (liveness: the process serves) and `/readyz`
//! (readiness: what the process says, e.g. its stores answer or it is
//! connected to its scheduler; 503 otherwise, and while draining).

use crate::TelemetryError;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder as _, Registry, TextEncoder};
use std::net::SocketAddr;
use std::sync::Arc;

/// Whether the process is ready to take work.
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

/// Binds `addr` and serves the endpoints in the background; returns the
/// bound address (port 0 picks one).
pub async fn spawn(
    addr: SocketAddr,
    registry: Registry,
    ready: Readiness,
) -> Result<SocketAddr, TelemetryError> {
    let listener =
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| TelemetryError::Listen {
                addr: addr.to_string(),
                detail: e.to_string(),
            })?;
    let bound = listener.local_addr().map_err(|e| TelemetryError::Listen {
        addr: addr.to_string(),
        detail: e.to_string(),
    })?;
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { metrics(&registry) }
            }),
        )
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route(
            "/readyz",
            get(move || {
                let ready = Arc::clone(&ready);
                async move {
                    if ready() {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics endpoint stopped: {e}");
        }
    });
    Ok(bound)
}

fn metrics(registry: &Registry) -> Response {
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    match encoder.encode(&registry.gather(), &mut buf) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, encoder.format_type().to_string())],
            buf,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain".to_string())],
            e.to_string().into_bytes(),
        )
            .into_response(),
    }
}
