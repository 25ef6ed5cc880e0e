//! Digest verification: a hasher for the algorithms strata accepts, and a
//! blob stream that checks size and digest as the bytes go by.

use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use futures::stream::{BoxStream, Stream};
use oci_spec::image::{Digest, DigestAlgorithm};
use sha2::Digest as _;

use super::error::{Context, RegistryError};

/// An incremental hash for one of the digest algorithms strata verifies.
pub(crate) enum Hasher {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// A hasher for `digest`'s algorithm. References and descriptors are
    /// parsed with only these three allowed, so `None` means a caller
    /// bypassed that.
    pub(crate) fn for_digest(digest: &Digest) -> Option<Self> {
        match digest.algorithm() {
            DigestAlgorithm::Sha256 => Some(Self::Sha256(sha2::Sha256::new())),
            DigestAlgorithm::Sha384 => Some(Self::Sha384(sha2::Sha384::new())),
            DigestAlgorithm::Sha512 => Some(Self::Sha512(sha2::Sha512::new())),
            _ => None,
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(data),
            Self::Sha384(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
        }
    }

    pub(crate) fn finish(self) -> String {
        match self {
            Self::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Self::Sha384(h) => format!("sha384:{}", hex::encode(h.finalize())),
            Self::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

/// The sha256 digest of `data`, as a typed digest.
pub fn sha256_digest(data: &[u8]) -> Digest {
    let text = format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)));
    // 64 lowercase hex digits after "sha256:" always parse.
    Digest::from_str(&text).unwrap_or_else(|_| unreachable!("sha256 digests parse"))
}

/// Checks `data` against `expected`, naming `what` and `reference` in the
/// error.
pub(crate) fn verify_bytes(
    data: &[u8],
    expected: &Digest,
    reference: &str,
    what: &str,
) -> Result<(), RegistryError> {
    let mut hasher =
        Hasher::for_digest(expected).ok_or_else(|| unsupported(expected, reference, what))?;
    hasher.update(data);
    let actual = hasher.finish();
    if actual == expected.as_ref() {
        Ok(())
    } else {
        Err(RegistryError::DigestMismatch {
            reference: reference.to_string(),
            what: what.to_string(),
            expected: expected.to_string(),
            actual,
        })
    }
}

fn unsupported(digest: &Digest, reference: &str, what: &str) -> RegistryError {
    RegistryError::InvalidDocument {
        reference: reference.to_string(),
        what: what.to_string(),
        reason: format!("digest {digest} uses an algorithm strata cannot verify"),
    }
}

/// A blob's bytes as they arrive, verified: the stream ends with an error
/// instead of `None` if the registry sent more or fewer bytes than the
/// descriptor says, or bytes that do not hash to its digest. Bytes already
/// yielded are not yet trusted until the stream has ended cleanly.
pub struct BlobStream {
    inner: BoxStream<'static, std::io::Result<Bytes>>,
    hasher: Option<Hasher>,
    expected: Digest,
    expected_size: u64,
    received: u64,
    ctx: Context,
    what: String,
}

impl BlobStream {
    pub(crate) fn new(
        inner: BoxStream<'static, std::io::Result<Bytes>>,
        expected: Digest,
        expected_size: u64,
        ctx: Context,
    ) -> Result<Self, RegistryError> {
        let what = format!("blob {expected}");
        let hasher = Hasher::for_digest(&expected)
            .ok_or_else(|| unsupported(&expected, &ctx.reference, &what))?;
        Ok(Self {
            inner,
            hasher: Some(hasher),
            expected,
            expected_size,
            received: 0,
            ctx,
            what,
        })
    }

    /// The size the descriptor promises.
    pub fn expected_size(&self) -> u64 {
        self.expected_size
    }

    /// The digest the bytes must hash to.
    pub fn expected_digest(&self) -> &Digest {
        &self.expected
    }

    fn size_error(&self, actual: u64) -> RegistryError {
        RegistryError::SizeMismatch {
            reference: self.ctx.reference.clone(),
            what: self.what.clone(),
            expected: self.expected_size,
            actual,
        }
    }

    /// The end of the bytes: digest first (the error users need), then
    /// size (a descriptor that lies about the size of the right bytes).
    fn finish(&mut self) -> Option<RegistryError> {
        let hasher = self.hasher.take()?;
        let actual = hasher.finish();
        if actual != self.expected.as_ref() {
            return Some(RegistryError::DigestMismatch {
                reference: self.ctx.reference.clone(),
                what: self.what.clone(),
                expected: self.expected.to_string(),
                actual,
            });
        }
        if self.received != self.expected_size {
            return Some(self.size_error(self.received));
        }
        None
    }
}

impl Stream for BlobStream {
    type Item = Result<Bytes, RegistryError>;

    // Hashing happens here, on the runtime: each chunk is one network read
    // (tens of KiB), hashed in microseconds, so handing it to a blocking
    // pool would cost more than it saves.
    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.hasher.is_none() {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                this.received += chunk.len() as u64;
                if this.received > this.expected_size {
                    this.hasher = None;
                    return Poll::Ready(Some(Err(this.size_error(this.received))));
                }
                if let Some(h) = this.hasher.as_mut() {
                    h.update(&chunk);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                // oci-client verifies too and reports a mismatch as an I/O
                // error at the end; ours names the descriptor's digest, so
                // prefer it when the bytes are all in.
                let mine = this.finish();
                let err = match mine {
                    Some(err @ RegistryError::DigestMismatch { .. }) => err,
                    _ => this.ctx.map_io(e, &this.what),
                };
                this.hasher = None;
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => match this.finish() {
                Some(err) => Poll::Ready(Some(Err(err))),
                None => Poll::Ready(None),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;

    fn ctx() -> Context {
        Context {
            registry: "r".into(),
            reference: "r/a:1".into(),
            action: "fetching".into(),
            anonymous: true,
        }
    }

    async fn drain(
        data: Vec<&'static [u8]>,
        digest: Digest,
        size: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let inner =
            futures::stream::iter(data.into_iter().map(|c| Ok(Bytes::from_static(c)))).boxed();
        let mut s = BlobStream::new(inner, digest, size, ctx())?;
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn good_bytes_pass_and_bad_bytes_name_both_digests() {
        let good = sha256_digest(b"hello world");
        assert_eq!(
            drain(vec![b"hello ", b"world"], good.clone(), 11)
                .await
                .unwrap(),
            b"hello world"
        );
        let err = drain(vec![b"hello", b" WORLD"], good.clone(), 11)
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(good.as_ref()) && msg.contains(sha256_digest(b"hello WORLD").as_ref()),
            "{msg}"
        );
        let err = drain(vec![b"hello world!!"], good.clone(), 11)
            .await
            .unwrap_err();
        assert!(
            matches!(err, RegistryError::SizeMismatch { actual: 13, .. }),
            "{err}"
        );
        let err = drain(vec![b"hello world"], good, 12).await.unwrap_err();
        assert!(
            matches!(err, RegistryError::SizeMismatch { expected: 12, .. }),
            "{err}"
        );
    }

    #[test]
    fn verify_bytes_checks_sha512_too() {
        let d = Digest::from_str(&format!(
            "sha512:{}",
            hex::encode(sha2::Sha512::digest(b"x"))
        ))
        .unwrap();
        verify_bytes(b"x", &d, "r", "config").unwrap();
        assert!(verify_bytes(b"y", &d, "r", "config").is_err());
    }
}
