//! strata's telemetry, shared by the scheduler, the worker and the client:
//!
//! - [`init`]: logs (text, or JSON lines) through `tracing`, and, when an
//!   OTLP endpoint is configured, every span exported as OpenTelemetry
//!   traces (batched, flushed when the returned [`Guard`] is dropped);
//! - W3C trace context across process boundaries: [`inject_current`] puts
//!   the current span's `traceparent` into gRPC metadata or any string map
//!   (a job assignment), [`parent_from`] / [`set_parent`] continue the
//!   trace on the other side, so one trace shows a whole build, client to
//!   scheduler to worker;
//! - [`http::spawn`]: the `/metrics` (Prometheus text), `/healthz` and
//!   `/readyz` endpoints;
//! - what outgoing calls carry ([`Outgoing`]: the trace context, a bearer
//!   token) and how they reach a scheduler by pinned key ([`pin`]).

pub mod http;
pub mod metrics;
pub mod pin;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use thiserror::Error;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Why telemetry could not start.
#[derive(Debug, Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built.
    #[error("OTLP exporter for {endpoint}: {detail}")]
    Otlp {
        /// The endpoint.
        endpoint: String,
        /// Why.
        detail: String,
    },
    /// A global subscriber was already installed.
    #[error("logging is already initialised: {0}")]
    Init(String),
    /// The metrics and health endpoint could not listen.
    #[error("cannot listen on {addr} for /metrics: {detail}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        detail: String,
    },
}

/// How a process logs and traces.
#[derive(Debug, Clone)]
pub struct Options {
    /// Default `service.name` of its spans (`strata-scheduler`,
    /// `strata-worker`, `strata`); `OTEL_SERVICE_NAME`, when set, wins, as
    /// the OpenTelemetry specification says.
    pub service: &'static str,
    /// JSON lines instead of text: one object per event with `timestamp`,
    /// `level`, `target`, `message` and the event's fields at the top
    /// level, `span` (the current span's name and fields: `build_id`,
    /// `step_id`, `worker_id`...) and `spans` (every enclosing span).
    pub json: bool,
    /// OTLP/gRPC endpoint (`http://collector:4317`); no export without.
    pub otlp_endpoint: Option<String>,
    /// Filter when `STRATA_LOG` is unset (`info`, `warn`...).
    pub default_filter: &'static str,
}

/// Keeps the trace exporter alive; dropping it flushes pending spans.
#[must_use = "dropping the guard stops trace export"]
pub struct Guard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("flushing traces: {e}");
        }
    }
}

/// Installs logging (to stderr) and, with an endpoint, trace export. Call
/// it inside a Tokio runtime (the exporter's channel needs one).
pub fn init(opts: &Options) -> Result<Guard, TelemetryError> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(opts.default_filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    type Boxed = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;
    // STRATA_LOG_SPANS=1 also prints a line as each span closes, with the
    // time it was busy and idle: where a step's time went (fetch, unpack,
    // run, commit, upload) without a trace collector.
    let span_events = if std::env::var_os("STRATA_LOG_SPANS").is_some_and(|v| v == "1") {
        tracing_subscriber::fmt::format::FmtSpan::CLOSE
    } else {
        tracing_subscriber::fmt::format::FmtSpan::NONE
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi && !opts.json)
        .with_span_events(span_events);
    // Each layer has its own filter: STRATA_LOG decides what is printed,
    // the trace export takes every span at INFO and above.
    let mut layers: Vec<Boxed> = vec![if opts.json {
        fmt.json().flatten_event(true).with_filter(filter).boxed()
    } else {
        fmt.with_filter(filter).boxed()
    }];
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let service = service_name(std::env::var("OTEL_SERVICE_NAME").ok(), opts.service);
    let provider = match &opts.otlp_endpoint {
        Some(endpoint) if !endpoint.is_empty() => Some(provider(service.clone(), endpoint)?),
        _ => None,
    };
    if let Some(p) = &provider {
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer(service))
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
                .boxed(),
        );
    }
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| TelemetryError::Init(e.to_string()))?;
    Ok(Guard { provider })
}

/// The `service.name` spans carry: `OTEL_SERVICE_NAME` when set and not
/// empty, else the process's default.
fn service_name(from_env: Option<String>, default: &'static str) -> String {
    from_env
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn provider(service: String, endpoint: &str) -> Result<SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| TelemetryError::Otlp {
            endpoint: endpoint.to_string(),
            detail: e.to_string(),
        })?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build())
}

/// The OTLP endpoint from `OTEL_EXPORTER_OTLP_ENDPOINT`, if set.
pub fn otlp_endpoint_from_env() -> Option<String> {
    std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|s| !s.is_empty())
}

struct MapCarrier<'a>(&'a mut HashMap<String, String>);

impl Injector for MapCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
}

struct MapSource<'a>(&'a HashMap<String, String>);

impl Extractor for MapSource<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// The current span's W3C trace context (`traceparent`, `tracestate`) as
/// string pairs; empty when it is not being traced.
pub fn inject_current() -> HashMap<String, String> {
    let mut map = HashMap::new();
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut MapCarrier(&mut map));
    map
}

/// Adds the current span's trace context to gRPC request metadata.
pub fn inject_metadata(metadata: &mut tonic::metadata::MetadataMap) {
    for (k, v) in inject_current() {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(k.as_bytes()),
            v.parse(),
        ) {
            metadata.insert(key, value);
        }
    }
}

/// The trace context carried by HTTP/gRPC headers.
pub fn parent_from(headers: &http_types::HeaderMap) -> opentelemetry::Context {
    let mut map = HashMap::new();
    for key in ["traceparent", "tracestate"] {
        if let Some(v) = headers.get(key).and_then(|v| v.to_str().ok()) {
            map.insert(key.to_string(), v.to_string());
        }
    }
    TraceContextPropagator::new().extract(&MapSource(&map))
}

/// Makes `span` a child of the trace context in `carrier` (from
/// [`inject_current`] on the other side); no-op when it holds none.
pub fn set_parent(span: &tracing::Span, carrier: &HashMap<String, String>) {
    if carrier.contains_key("traceparent") {
        let cx = TraceContextPropagator::new().extract(&MapSource(carrier));
        let _ = span.set_parent(cx);
    }
}

/// Makes `span` a child of the trace context in request headers.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http_types::HeaderMap) {
    if headers.contains_key("traceparent") {
        let _ = span.set_parent(parent_from(headers));
    }
}

/// Re-exported `http` types (the gRPC servers' request headers).
pub use axum::http as http_types;

/// How often a token file is read again.
const TOKEN_RELOAD: std::time::Duration = std::time::Duration::from_secs(5);

/// Where an outgoing call's bearer token comes from.
enum TokenSource {
    Fixed(String),
    /// Read again every few seconds, so a rotated Secret is picked up.
    File {
        path: std::path::PathBuf,
        cached: std::sync::Mutex<(std::time::Instant, String)>,
    },
}

/// Never the token: where it comes from only.
impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fixed(_) => f.write_str("Fixed(<redacted>)"),
            Self::File { path, .. } => f
                .debug_struct("File")
                .field("path", path)
                .finish_non_exhaustive(),
        }
    }
}

/// What every outgoing gRPC call of a strata process carries: the current
/// span's W3C trace context and, when configured, `authorization: Bearer`
/// (marked sensitive: never printed, never put in HPACK's tables).
/// A tonic interceptor. Its `Debug` never shows the token.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    token: Option<std::sync::Arc<TokenSource>>,
}

impl Outgoing {
    /// Calls with `token`.
    pub fn with_token(token: impl Into<String>) -> Self {
        Self {
            token: Some(std::sync::Arc::new(TokenSource::Fixed(token.into()))),
        }
    }

    /// Calls with the token in `path` (trimmed), re-read every 5 s (a file
    /// that is then unreadable or empty keeps the previous token).
    pub fn with_token_file(path: impl Into<std::path::PathBuf>) -> std::io::Result<Self> {
        let path = path.into();
        let token = std::fs::read_to_string(&path)?.trim().to_string();
        Ok(Self {
            token: Some(std::sync::Arc::new(TokenSource::File {
                path,
                cached: std::sync::Mutex::new((std::time::Instant::now(), token)),
            })),
        })
    }

    fn token(&self) -> Option<String> {
        match self.token.as_deref()? {
            TokenSource::Fixed(t) => Some(t.clone()),
            TokenSource::File { path, cached } => {
                let mut c = cached.lock().unwrap_or_else(|e| e.into_inner());
                if c.0.elapsed() >= TOKEN_RELOAD {
                    // A file being rewritten may be briefly absent or empty.
                    if let Ok(t) = std::fs::read_to_string(path)
                        && !t.trim().is_empty()
                    {
                        c.1 = t.trim().to_string();
                    }
                    c.0 = std::time::Instant::now();
                }
                Some(c.1.clone())
            }
        }
    }
}

impl tonic::service::Interceptor for Outgoing {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        inject_metadata(req.metadata_mut());
        if let Some(t) = self.token() {
            let mut value: tonic::metadata::AsciiMetadataValue =
                format!("Bearer {t}").parse().map_err(|_| {
                    tonic::Status::unauthenticated("the token has characters a header cannot carry")
                })?;
            value.set_sensitive(true);
            req.metadata_mut().insert("authorization", value);
        }
        Ok(req)
    }
}

#[cfg(test)]
mod token_tests {
    use super::*;
    use tonic::service::Interceptor as _;

    fn sent(outgoing: &mut Outgoing) -> tonic::metadata::AsciiMetadataValue {
        let req = outgoing.call(tonic::Request::new(())).expect("intercepted");
        req.metadata()
            .get("authorization")
            .expect("an authorization header")
            .clone()
    }

    #[test]
    fn the_token_is_sensitive_and_never_in_debug_output() {
        let mut fixed = Outgoing::with_token("s3cr3t-fixed");
        let value = sent(&mut fixed);
        assert_eq!(value.to_str().unwrap(), "Bearer s3cr3t-fixed");
        assert!(value.is_sensitive());
        assert!(!format!("{value:?}").contains("s3cr3t"), "{value:?}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cr3t-file\n").unwrap();
        let file = Outgoing::with_token_file(&path).unwrap();
        for shown in [format!("{fixed:?}"), format!("{file:#?}")] {
            assert!(!shown.contains("s3cr3t"), "{shown}");
        }
        assert!(format!("{file:?}").contains("token"));
    }

    /// A worker's token file rewritten (a rotated Secret) is sent from
    /// the next read on, without a restart.
    #[test]
    fn a_rotated_token_file_is_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "old-token\n").unwrap();
        let mut outgoing = Outgoing::with_token_file(&path).unwrap();
        assert_eq!(sent(&mut outgoing).to_str().unwrap(), "Bearer old-token");
        std::fs::write(&path, "new-token\n").unwrap();
        let age = |o: &Outgoing| {
            if let Some(TokenSource::File { cached, .. }) = o.token.as_deref() {
                cached.lock().unwrap().0 -= TOKEN_RELOAD;
            }
        };
        age(&outgoing);
        assert_eq!(sent(&mut outgoing).to_str().unwrap(), "Bearer new-token");
        // Mid-rotation the file is briefly empty or gone: the last token
        // stays.
        std::fs::write(&path, "").unwrap();
        age(&outgoing);
        assert_eq!(sent(&mut outgoing).to_str().unwrap(), "Bearer new-token");
        std::fs::remove_file(&path).unwrap();
        age(&outgoing);
        assert_eq!(sent(&mut outgoing).to_str().unwrap(), "Bearer new-token");
    }
}

#[cfg(test)]
mod service_name_tests {
    use super::*;

    #[test]
    fn otel_service_name_wins_over_the_default() {
        assert_eq!(service_name(None, "strata-worker"), "strata-worker");
        assert_eq!(
            service_name(Some(" ".into()), "strata-worker"),
            "strata-worker"
        );
        assert_eq!(
            service_name(Some("ci-workers".into()), "strata-worker"),
            "ci-workers"
        );
    }
}
