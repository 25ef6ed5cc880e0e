//! The HTTP client under [`S3Blobs`](super::S3Blobs): hyper over TCP
//! (rustls for `https`), as the SDK's default client, but with
//! `TCP_NODELAY` on and `TCP_QUICKACK` set again before every read.
//!
//! Why: a server that leaves Nagle's algorithm on (s3s-fs, and any hyper
//! server that does not set `TCP_NODELAY`) sends a GET's answer as two
//! segments, the headers and then the body, and holds the body until the
//! headers are acknowledged. On a connection reused for request after
//! request, Linux delays that acknowledgement (delayed ACK, 40 ms), so
//! every GET took ~40 ms whatever its size. In quick-ack mode the
//! receiver acknowledges at once; the kernel leaves that mode on its own,
//! hence the option before each read. The SDK's default client also turns
//! `TCP_NODELAY` off, so a request written in several pieces could wait
//! the same way.
//!
//! When the environment routes the endpoint through a proxy
//! (`HTTPS_PROXY`, `ALL_PROXY`...), [`S3Blobs`](super::S3Blobs) keeps the
//! SDK's own client, which speaks the proxy protocols.

use aws_sdk_s3::config::http::{HttpRequest, HttpResponse};
use aws_sdk_s3::config::{HttpClient, RuntimeComponents};
use aws_sdk_s3::primitives::SdkBody;
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_types::retry::ErrorKind;
use hyper::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector as TcpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Whether the environment's proxy settings (`HTTP_PROXY`, `HTTPS_PROXY`,
/// `ALL_PROXY`, `NO_PROXY`, as the SDK reads them) send requests to `url`
/// through a proxy.
pub(super) fn proxied(url: &str) -> bool {
    url.parse::<Uri>()
        .is_ok_and(|uri| Matcher::from_env().intercept(&uri).is_some())
}

/// An [`HttpClient`] for the SDK: one connection pool for every request.
#[derive(Debug, Clone)]
pub(super) struct QuickAckClient {
    connector: SharedHttpConnector,
}

impl QuickAckClient {
    /// A client whose connections time out after `connect_timeout`. It has
    /// no read timeout, as the SDK's client without one configured.
    pub(super) fn new(connect_timeout: Duration) -> Self {
        let mut tcp = TcpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        tcp.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config())
            .https_or_http()
            .enable_http1()
            .wrap_connector(QuickAckConnector(tcp));
        let client = Client::builder(TokioExecutor::new())
            // Idle pooled connections are closed, as the SDK's are.
            .pool_timer(TokioTimer::new())
            .build(https);
        Self {
            connector: SharedHttpConnector::new(Hyper { client }),
        }
    }
}

impl HttpClient for QuickAckClient {
    // The settings carry the SDK's timeouts: S3Blobs gives the same connect
    // timeout to both, and sets no read timeout.
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.connector.clone()
    }
}

/// The system's root certificates, read once per process.
static ROOTS: LazyLock<Arc<rustls::RootCertStore>> = LazyLock::new(|| {
    let found = rustls_native_certs::load_native_certs();
    if !found.errors.is_empty() {
        tracing::warn!("reading the system's root certificates: {:?}", found.errors);
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    Arc::new(roots)
});

/// TLS with aws-lc-rs (the SDK's own choice) and the system's roots.
fn tls_config() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap_or_else(|e| panic!("aws-lc-rs lacks TLS 1.2 and 1.3: {e}"))
    .with_root_certificates(Arc::clone(&ROOTS))
    .with_no_client_auth()
}

type Https = hyper_rustls::HttpsConnector<QuickAckConnector>;

/// Sends the SDK's requests on the pool.
#[derive(Debug)]
struct Hyper {
    client: Client<Https, SdkBody>,
}

impl HttpConnector for Hyper {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let request = match request.try_into_http1x() {
            Ok(request) => request,
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
        let sent = self.client.request(request);
        HttpConnectorFuture::new(async move {
            let response = sent.await.map_err(connector_error)?;
            HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                .map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// Classifies a failed exchange for the SDK's retries as its own client
/// does: connection failures, resets and closed connections are I/O
/// errors (retried), a truncated answer is transient.
fn connector_error(err: hyper_util::client::legacy::Error) -> ConnectorError {
    if err.is_connect() {
        return ConnectorError::io(err.into());
    }
    let Some(hyper_err) = find_source::<hyper::Error>(&err) else {
        return match find_source::<io::Error>(&err) {
            Some(_) => ConnectorError::io(err.into()),
            None => ConnectorError::other(err.into(), None),
        };
    };
    if hyper_err.is_timeout() {
        ConnectorError::timeout(err.into())
    } else if hyper_err.is_user() {
        ConnectorError::user(err.into())
    } else if hyper_err.is_closed()
        || hyper_err.is_canceled()
        || find_source::<io::Error>(hyper_err).is_some()
    {
        ConnectorError::io(err.into())
    } else if hyper_err.is_incomplete_message() {
        ConnectorError::other(err.into(), Some(ErrorKind::TransientError))
    } else {
        ConnectorError::other(err.into(), None)
    }
}

fn find_source<'a, E: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        next = e.source();
    }
    None
}

/// hyper-util's TCP connector, its connections wrapped in [`QuickAck`].
#[derive(Debug, Clone)]
struct QuickAckConnector(TcpConnector);

impl tower::Service<Uri> for QuickAckConnector {
    type Response = QuickAck;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<QuickAck, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move { Ok(QuickAck(connecting.await?)) })
    }
}

/// A TCP connection that sets `TCP_QUICKACK` before each read.
#[derive(Debug)]
struct QuickAck(TokioIo<TcpStream>);

impl Read for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // A failure here only costs latency: the read goes on.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let _ = socket2::SockRef::from(self.0.inner()).set_tcp_quickack(true);
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl Write for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl Connection for QuickAck {
    fn connected(&self) -> Connected {
        self.0.connected()
    }
}
