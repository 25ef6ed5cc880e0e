//! TLS to a scheduler verified by a pinned public key, as curl's
//! `--pinnedpubkey`: the SHA-256 of the certificate's SubjectPublicKeyInfo
//! (the pin survives a renewed certificate that keeps its key). A pin is
//! the whole check: no CA, no name, no validity dates; the handshake's
//! signature is still verified, so only the key's holder gets through.
//!
//! tonic's TLS settings take CAs only, so a pinned connection is made here
//! (TCP, then rustls with [`PinVerifier`]) and handed to tonic as a plain
//! connection ([`PinnedConnector`] with [`Pins::endpoint_url`]).

use crate::http_types;
use base64::Engine as _;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest as _, Sha256};
use std::future::Future;
use std::pin::Pin as StdPin;
use std::sync::Arc;
use std::task::{Context, Poll};
use thiserror::Error;

/// Why a pin or a pinned connection could not be set up.
#[derive(Debug, Error)]
pub enum PinError {
    /// Not `sha256//BASE64` or `sha256:HEX`.
    #[error(
        "invalid TLS pin {0:?}: expected sha256//BASE64 (curl's --pinnedpubkey) or sha256:HEX of the certificate's public key (SubjectPublicKeyInfo), several separated by ';'"
    )]
    Invalid(String),
    /// The client certificate or key (mTLS) is unusable.
    #[error("TLS client certificate: {0}")]
    Identity(String),
    /// The scheduler URL cannot be used.
    #[error("scheduler URL {0:?}: a pinned connection needs https://HOST[:PORT]")]
    Url(String),
}

/// The accepted keys: SHA-256 of each SubjectPublicKeyInfo (several while
/// a key is being rotated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pins(Vec<[u8; 32]>);

impl std::str::FromStr for Pins {
    type Err = PinError;

    fn from_str(s: &str) -> Result<Self, PinError> {
        let invalid = || PinError::Invalid(s.to_string());
        let mut pins = Vec::new();
        for one in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let body = one
                .strip_prefix("sha256//")
                .or_else(|| one.strip_prefix("sha256:"))
                .ok_or_else(invalid)?;
            let bytes = if body.len() == 64 && body.chars().all(|c| c.is_ascii_hexdigit()) {
                hex::decode(body).map_err(|_| invalid())?
            } else {
                base64::engine::general_purpose::STANDARD
                    .decode(body)
                    .map_err(|_| invalid())?
            };
            pins.push(bytes.try_into().map_err(|_| invalid())?);
        }
        if pins.is_empty() {
            return Err(invalid());
        }
        Ok(Self(pins))
    }
}

/// `sha256//BASE64` of a certificate's public key, what a pin names.
pub fn pin_of(cert: &CertificateDer<'_>) -> Result<String, rustls::Error> {
    Ok(format!(
        "sha256//{}",
        base64::engine::general_purpose::STANDARD.encode(spki_sha256(cert)?)
    ))
}

fn spki_sha256(cert: &CertificateDer<'_>) -> Result<[u8; 32], rustls::Error> {
    let parsed = webpki::EndEntityCert::try_from(cert)
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
    Ok(Sha256::digest(parsed.subject_public_key_info().as_ref()).into())
}

/// The scheduler's key did not match: says which key it has.
#[derive(Debug, Error)]
#[error(
    "the scheduler's certificate does not match the pinned key (STRATA_TLS_PIN / --tls-pin): its key is {0}"
)]
struct Mismatch(String);

/// Accepts exactly the pinned keys; checks the handshake's signature.
#[derive(Debug)]
pub struct PinVerifier {
    pins: Pins,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let hash = spki_sha256(end_entity)?;
        // Public values: no need for a constant-time comparison.
        if self.pins.0.contains(&hash) {
            return Ok(ServerCertVerified::assertion());
        }
        // `Other`: rustls prints its message (an `InvalidCertificate`
        // would show only its Debug form).
        Err(rustls::Error::Other(rustls::OtherError(Arc::new(
            Mismatch(pin_of(end_entity)?),
        ))))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl Pins {
    /// A connector to `url` (`https://HOST[:PORT]`) that trusts only these
    /// keys, presenting `identity` (certificate chain and key, PEM) for
    /// mTLS if given.
    pub fn connector(
        &self,
        url: &str,
        identity: Option<(&[u8], &[u8])>,
    ) -> Result<PinnedConnector, PinError> {
        let uri: http_types::Uri = url.parse().map_err(|_| PinError::Url(url.to_string()))?;
        let host = uri
            .host()
            .filter(|_| uri.scheme_str() == Some("https"))
            .ok_or_else(|| PinError::Url(url.to_string()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let name =
            ServerName::try_from(host.clone()).map_err(|_| PinError::Url(url.to_string()))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| PinError::Identity(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier {
                pins: self.clone(),
                provider,
            }));
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| PinError::Identity(e.to_string()))?;
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|e| PinError::Identity(e.to_string()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| PinError::Identity(e.to_string()))?
            }
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(PinnedConnector {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            addr: (host, port),
            name,
        })
    }

    /// The URL to give tonic with a [`PinnedConnector`]: `http://` (the
    /// connector does the TLS; tonic would refuse `https://` without its
    /// own TLS settings), the port made explicit.
    pub fn endpoint_url(url: &str) -> Result<String, PinError> {
        let uri: http_types::Uri = url.parse().map_err(|_| PinError::Url(url.to_string()))?;
        match (uri.scheme_str(), uri.host()) {
            (Some("https"), Some(host)) => {
                Ok(format!("http://{host}:{}", uri.port_u16().unwrap_or(443)))
            }
            _ => Err(PinError::Url(url.to_string())),
        }
    }
}

/// Connects to the scheduler and runs the pinned TLS handshake; a tower
/// service for `Endpoint::connect_with_connector`.
#[derive(Clone)]
pub struct PinnedConnector {
    tls: tokio_rustls::TlsConnector,
    addr: (String, u16),
    name: ServerName<'static>,
}

impl std::fmt::Debug for PinnedConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedConnector")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

type Connecting = StdPin<
    Box<
        dyn Future<
                Output = std::io::Result<
                    TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
                >,
            > + Send,
    >,
>;

impl tower::Service<http_types::Uri> for PinnedConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http_types::Uri) -> Self::Future {
        let (tls, addr, name) = (self.tls.clone(), self.addr.clone(), self.name.clone());
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect((addr.0.as_str(), addr.1)).await?;
            tcp.set_nodelay(true)?;
            Ok(TokioIo::new(tls.connect(name, tcp).await?))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_in_curls_form_and_as_hex() {
        let hash = [7u8; 32];
        let b64 = base64::engine::general_purpose::STANDARD.encode(hash);
        let both = format!("sha256//{b64}; sha256:{}", hex::encode([9u8; 32]));
        assert_eq!(both.parse::<Pins>().unwrap(), Pins(vec![hash, [9u8; 32]]));
        assert_eq!(
            format!("sha256:{b64}").parse::<Pins>().unwrap(),
            Pins(vec![hash])
        );
        for bad in ["", "sha1//abcd", "sha256//not base64!", "sha256:abcd", &b64] {
            let e = bad.parse::<Pins>().unwrap_err().to_string();
            assert!(e.contains("invalid TLS pin"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_endpoint_url_is_plain_with_an_explicit_port() {
        assert_eq!(
            Pins::endpoint_url("https://sched.example").unwrap(),
            "http://sched.example:443"
        );
        assert_eq!(
            Pins::endpoint_url("https://127.0.0.1:7390").unwrap(),
            "http://127.0.0.1:7390"
        );
        assert!(Pins::endpoint_url("http://127.0.0.1:7390").is_err());
    }
}
