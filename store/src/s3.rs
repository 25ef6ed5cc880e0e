//! The S3 backend: blobs under `<prefix>blobs/sha256/<hex>`, named objects
//! under `<prefix>objects/<key>`, in one bucket of S3 or an S3-compatible
//! server (MinIO, s3s-fs, R2).
//!
//! A blob the bucket has is never sent again: every upload asks with HEAD
//! first. A small one (up to 1 MiB) then goes up, once hashed, in one PUT
//! that the server refuses if another writer stored the key meanwhile
//! (`If-None-Match: *`). A bigger one goes up in one PUT,
//! or, if large, in a multipart upload that reads the file once, hashing
//! it while its parts are in flight, and is completed only if the hash
//! matches (aborted otherwise, and on any error), so a partial or wrong
//! object is never visible under a digest.

mod config;
mod download;
mod http_client;
mod upload;

pub use config::S3Config;

use crate::{BlobError, BlobInfo, BlobStore, ByteStream, Put, check_key, check_prefix, digest_hex};
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use bytes::Bytes;
use config::{check_bucket, check_config_prefix, check_endpoint, normalize_prefix};
use std::path::Path;
use std::time::{Duration, SystemTime};

const MIB: u64 = 1 << 20;
/// S3's smallest part but the last.
const MIN_PART: u64 = 5 * MIB;
/// S3's most parts in one upload.
const MAX_PARTS: u64 = 10_000;
/// How long connecting to the endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A blob store in an S3 bucket. Cheap to clone.
#[derive(Debug, Clone)]
pub struct S3Blobs {
    client: Client,
    bucket: String,
    prefix: String,
    /// The endpoint, for messages.
    endpoint: String,
    multipart_threshold: u64,
    part_size: u64,
    concurrency: usize,
}

impl S3Blobs {
    /// Builds the client (no request is made: see [`S3Blobs::check`]).
    /// Credentials and the endpoint not in `config` come from
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`
    /// and `AWS_ENDPOINT_URL`.
    pub fn new(config: S3Config) -> Result<Self, BlobError> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let endpoint = config.endpoint.clone().or_else(|| env("AWS_ENDPOINT_URL"));
        let described = endpoint
            .clone()
            .unwrap_or_else(|| format!("AWS {}", config.region));
        let prefix = normalize_prefix(&config.prefix);
        let bad = |detail: String| BlobError::Backend {
            store: format!("s3://{}/{prefix} ({described})", config.bucket),
            op: "configure",
            key: "client".to_string(),
            detail,
            retryable: false,
        };
        check_bucket(&config.bucket).map_err(bad)?;
        check_config_prefix(&prefix).map_err(bad)?;
        if let Some(e) = &endpoint {
            check_endpoint(e).map_err(bad)?;
        }
        let credentials = match (&config.access_key_id, &config.secret_access_key) {
            (Some(id), Some(secret)) => Credentials::new(id, secret, None, None, "strata-config"),
            (None, None) => match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                (Some(id), Some(secret)) => Credentials::new(
                    id,
                    secret,
                    env("AWS_SESSION_TOKEN"),
                    None,
                    "strata-environment",
                ),
                _ => {
                    return Err(bad("no credentials: set the access key and secret key, \
                         or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                        .into()));
                }
            },
            _ => return Err(bad("set both the access key and the secret key".into())),
        };
        let retry = RetryConfig::standard().with_max_attempts(config.max_attempts.max(1));
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build();
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(config.force_path_style)
            .retry_config(retry)
            .timeout_config(timeouts)
            // Blobs are verified by their sha256; extra checksums would
            // only cost CPU and trip S3-compatible servers that lack them.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(e) = &endpoint {
            builder = builder.endpoint_url(e);
        }
        // The SDK's own client waits ~40 ms for every GET on servers that
        // keep Nagle's algorithm on (see http_client); it stays in use
        // only where a proxy must be spoken to.
        let url = endpoint.clone().unwrap_or_else(|| {
            let host = format!("s3.{}.amazonaws.com", config.region);
            if config.force_path_style {
                format!("https://{host}")
            } else {
                format!("https://{}.{host}", config.bucket)
            }
        });
        if !http_client::proxied(&url) {
            builder = builder.http_client(http_client::QuickAckClient::new(CONNECT_TIMEOUT));
        }
        Ok(Self {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket,
            prefix,
            endpoint: described,
            multipart_threshold: config.multipart_threshold,
            part_size: config.part_size.max(MIN_PART),
            concurrency: config.concurrency.max(1),
        })
    }

    /// Checks that the bucket is there and the credentials open it (for
    /// startup, so a misconfigured farm stops with a clear message).
    pub async fn check(&self) -> Result<(), BlobError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                // HEAD answers have no body, so no NoSuchBucket code.
                let missing = status_of(&e) == Some(404);
                let mut err = self.sdk_err("HEAD", &format!("bucket {}", self.bucket), e);
                if let BlobError::Backend { detail, .. } = &mut err
                    && missing
                {
                    *detail = format!("bucket {} does not exist (HTTP 404)", self.bucket);
                }
                err
            })
    }

    fn blob_key(&self, digest: &str) -> Result<String, BlobError> {
        Ok(format!(
            "{}blobs/sha256/{}",
            self.prefix,
            digest_hex(digest)?
        ))
    }

    fn objects_prefix(&self) -> String {
        format!("{}objects/", self.prefix)
    }

    fn object_key(&self, key: &str) -> Result<String, BlobError> {
        check_key(key)?;
        Ok(format!("{}{key}", self.objects_prefix()))
    }

    /// Maps an SDK failure to a [`BlobError::Backend`] a person can act on.
    fn sdk_err<E>(&self, op: &'static str, key: &str, err: SdkError<E, HttpResponse>) -> BlobError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let context = error_chain(&err);
        let (detail, retryable) = match &err {
            SdkError::DispatchFailure(f) => (
                format!("cannot reach {}: {context}", self.endpoint),
                !f.is_user(),
            ),
            SdkError::TimeoutError(_) => {
                (format!("{} did not answer in time", self.endpoint), true)
            }
            SdkError::ResponseError(_) => (
                format!("unreadable answer from {}: {context}", self.endpoint),
                true,
            ),
            SdkError::ServiceError(service) => {
                let status = service.raw().status().as_u16();
                let code = err.code().unwrap_or("");
                let message = err.message().unwrap_or("");
                let hint = match (status, code) {
                    (_, "NoSuchBucket") => format!(": bucket {} does not exist", self.bucket),
                    (403, _)
                    | (_, "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch") => {
                        ": check the access key and secret key".to_string()
                    }
                    _ => String::new(),
                };
                let what = [code, message]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(": ");
                let what = match (what.is_empty(), status) {
                    (false, _) => what,
                    (true, 403) => "access denied".into(),
                    (true, 404) => "not found".into(),
                    (true, _) => "error".into(),
                };
                let retryable = status >= 500
                    || status == 429
                    || matches!(
                        code,
                        "SlowDown" | "Throttling" | "ThrottlingException" | "RequestTimeout"
                    );
                (format!("{what} (HTTP {status}){hint}"), retryable)
            }
            _ => (context, false),
        };
        BlobError::Backend {
            store: self.describe(),
            op,
            key: key.to_string(),
            detail,
            retryable,
        }
    }

    /// The size of the object at `key`, if any.
    async fn head(&self, key: &str) -> Result<Option<u64>, BlobError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(self.sdk_err("HEAD", key, e)),
        }
    }
}

/// `outer: inner: innermost`, each message once (the SDK's own
/// `DisplayErrorContext` ends with a debug dump).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let message = e.to_string();
        if !parts.last().is_some_and(|last| last.ends_with(&message)) {
            parts.push(message);
        }
        next = e.source();
    }
    parts.join(": ")
}

fn status_of<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// A 404 about the key (not about the bucket).
fn not_found<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    status_of(err) == Some(404) && err.code() != Some("NoSuchBucket")
}

#[async_trait]
impl BlobStore for S3Blobs {
    fn describe(&self) -> String {
        format!("s3://{}/{} ({})", self.bucket, self.prefix, self.endpoint)
    }

    async fn stat(&self, digest: &str) -> Result<Option<u64>, BlobError> {
        self.head(&self.blob_key(digest)?).await
    }

    async fn get(&self, digest: &str, offset: u64) -> Result<ByteStream, BlobError> {
        self.download(digest, offset).await
    }

    async fn get_to_file(&self, digest: &str, dest: &Path) -> Result<u64, BlobError> {
        self.download_to_file(digest, dest).await
    }

    async fn put_file(&self, digest: &str, src: &Path) -> Result<Put, BlobError> {
        self.upload_file(digest, src).await
    }

    async fn put_bytes(&self, bytes: Bytes) -> Result<String, BlobError> {
        self.upload_bytes(bytes).await
    }

    async fn delete(&self, digest: &str) -> Result<(), BlobError> {
        let key = self.blob_key(digest)?;
        self.delete_key(&key).await
    }

    async fn list(&self) -> Result<Vec<BlobInfo>, BlobError> {
        let under = format!("{}blobs/sha256/", self.prefix);
        let mut blobs = Vec::new();
        self.list_keys(&under, |key, size, modified| {
            let digest = format!("sha256:{key}");
            if digest_hex(&digest).is_ok() {
                blobs.push(BlobInfo {
                    digest,
                    size,
                    modified,
                });
            }
        })
        .await?;
        Ok(blobs)
    }

    async fn put_object(&self, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        let key = self.object_key(key)?;
        self.put_named(&key, bytes).await
    }

    async fn get_object(&self, key: &str) -> Result<Option<Bytes>, BlobError> {
        let key = self.object_key(key)?;
        let Some(body) = self.get_body(&key, 0).await? else {
            return Ok(None);
        };
        let body = body.collect().await.map_err(|e| BlobError::Backend {
            store: self.describe(),
            op: "GET",
            key: key.clone(),
            detail: format!("reading the body: {}", error_chain(&e)),
            retryable: true,
        })?;
        Ok(Some(body.into_bytes()))
    }

    async fn delete_object(&self, key: &str) -> Result<(), BlobError> {
        let key = self.object_key(key)?;
        self.delete_key(&key).await
    }

    async fn list_objects(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
        check_prefix(prefix)?;
        let under = self.objects_prefix();
        let mut keys = Vec::new();
        self.list_keys(&format!("{under}{prefix}"), |key, _, _| {
            let key = format!("{prefix}{key}");
            if check_key(&key).is_ok() {
                keys.push(key);
            }
        })
        .await?;
        keys.sort();
        Ok(keys)
    }
}

impl S3Blobs {
    async fn delete_key(&self, key: &str) -> Result<(), BlobError> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Err(e) if !not_found(&e) => Err(self.sdk_err("DELETE", key, e)),
            _ => Ok(()),
        }
    }

    /// Calls `each(rest of the key, size, modified)` for every object
    /// whose key starts with `under`, page after page.
    async fn list_keys(
        &self,
        under: &str,
        mut each: impl FnMut(&str, u64, SystemTime) + Send,
    ) -> Result<(), BlobError> {
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(under)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.sdk_err("LIST", under, e))?;
            for object in page.contents() {
                let Some(rest) = object.key().and_then(|k| k.strip_prefix(under)) else {
                    continue;
                };
                let modified = object
                    .last_modified()
                    .and_then(|t| SystemTime::try_from(*t).ok())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                each(rest, object.size().unwrap_or(0).max(0) as u64, modified);
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => return Ok(()),
            }
        }
    }
}
