//! [`S3Config`]: where the bucket is, how to reach it, how to upload.

use super::MIB;
use crate::{BlobError, check_key};

/// Where and how to reach the bucket. Its `Debug` hides the secret key.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// `http(s)://host:port` of an S3-compatible server; `None` for AWS
    /// (or `AWS_ENDPOINT_URL` when set).
    pub endpoint: Option<String>,
    /// The bucket, which must exist.
    pub bucket: String,
    /// Prepended to every key; empty or ending with `/`.
    pub prefix: String,
    /// The signing region.
    pub region: String,
    /// `endpoint/bucket/key` URLs instead of `bucket.endpoint/key` (most
    /// self-hosted servers need this).
    pub force_path_style: bool,
    /// Access key; `None` reads `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// Secret key; `None` reads `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
    /// Files this big or bigger go up in a multipart upload.
    pub multipart_threshold: u64,
    /// Bytes per part of a multipart upload (at least 5 MiB; raised for
    /// files that would need more than 10,000 parts).
    pub part_size: u64,
    /// Parts of one upload in flight at once.
    pub concurrency: usize,
    /// Tries per request, the first included (exponential backoff between
    /// them).
    pub max_attempts: u32,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("force_path_style", &self.force_path_style)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<hidden>"),
            )
            .field("multipart_threshold", &self.multipart_threshold)
            .field("part_size", &self.part_size)
            .field("concurrency", &self.concurrency)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: None,
            bucket: String::new(),
            prefix: String::new(),
            region: "us-east-1".to_string(),
            force_path_style: false,
            access_key_id: None,
            secret_access_key: None,
            multipart_threshold: 16 * MIB,
            part_size: 16 * MIB,
            concurrency: 4,
            max_attempts: 4,
        }
    }
}

impl S3Config {
    /// Parses `s3://BUCKET[/PREFIX][?endpoint=URL&region=R&path_style=BOOL]`.
    /// Every parameter is optional: the region defaults to `us-east-1`,
    /// path-style addressing to on when an endpoint is given.
    pub fn from_url(url: &str) -> Result<S3Config, BlobError> {
        let bad = |detail: String| BlobError::Backend {
            store: url.to_string(),
            op: "parse",
            key: "URL".to_string(),
            detail,
            retryable: false,
        };
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            bad("expected s3://BUCKET[/PREFIX][?endpoint=URL&region=R&path_style=true]".into())
        })?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        let mut config = S3Config {
            bucket: bucket.to_string(),
            prefix: normalize_prefix(prefix),
            ..S3Config::default()
        };
        check_bucket(&config.bucket).map_err(bad)?;
        check_config_prefix(&config.prefix).map_err(bad)?;
        let mut path_style = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value).map_err(bad)?;
            match name {
                "endpoint" => {
                    check_endpoint(&value).map_err(bad)?;
                    config.endpoint = Some(value);
                }
                "region" if !value.is_empty() => config.region = value,
                "path_style" => {
                    path_style = Some(match value.as_str() {
                        "true" | "1" | "" => true,
                        "false" | "0" => false,
                        _ => {
                            return Err(bad(format!("path_style={value}: expected true or false")));
                        }
                    })
                }
                _ => {
                    return Err(bad(format!(
                        "unknown parameter {name:?} (expected endpoint, region, path_style)"
                    )));
                }
            }
        }
        config.force_path_style = path_style.unwrap_or(config.endpoint.is_some());
        Ok(config)
    }
}

/// `p/` for `p`, `p/` for `/p//`, empty for empty.
pub(super) fn normalize_prefix(prefix: &str) -> String {
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

pub(super) fn check_bucket(bucket: &str) -> Result<(), String> {
    if !bucket.is_empty()
        && bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        Ok(())
    } else {
        Err(format!("invalid bucket name {bucket:?}"))
    }
}

pub(super) fn check_config_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() || check_key(prefix.trim_end_matches('/')).is_ok() {
        Ok(())
    } else {
        Err(format!(
            "invalid prefix {prefix:?}: use /-separated segments of letters, digits, '.', '_', '-'"
        ))
    }
}

pub(super) fn check_endpoint(endpoint: &str) -> Result<(), String> {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        Ok(())
    } else {
        Err(format!(
            "endpoint {endpoint:?} must start with http:// or https://"
        ))
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex = [bytes.next(), bytes.next()];
                let decoded = match hex {
                    [Some(h), Some(l)] => std::str::from_utf8(&[h, l])
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok()),
                    _ => None,
                };
                out.push(decoded.ok_or_else(|| format!("bad %-escape in {s:?}"))?);
            }
            b'+' => out.push(b' '),
            _ => out.push(b),
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults() {
        let c = S3Config::from_url("s3://cache").unwrap();
        assert_eq!(
            (c.bucket.as_str(), c.prefix.as_str(), c.region.as_str()),
            ("cache", "", "us-east-1")
        );
        assert_eq!((c.endpoint, c.force_path_style), (None, false));

        let c = S3Config::from_url(
            "s3://cache/farm/ci?endpoint=http://127.0.0.1:9000&region=eu-west-3",
        )
        .unwrap();
        assert_eq!(c.prefix, "farm/ci/");
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(c.region, "eu-west-3");
        assert!(c.force_path_style, "an endpoint implies path style");

        let c =
            S3Config::from_url("s3://cache/p/?endpoint=https%3A%2F%2Fr2.example&path_style=false")
                .unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("https://r2.example"));
        assert_eq!((c.prefix.as_str(), c.force_path_style), ("p/", false));
    }

    #[test]
    fn debug_hides_the_secret() {
        let c = S3Config {
            secret_access_key: Some("hunter2".into()),
            ..S3Config::default()
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, says) in [
            ("http://cache", "expected s3://"),
            ("s3://", "bucket"),
            (
                "s3://cache?endpont=http://x",
                "unknown parameter \"endpont\"",
            ),
            ("s3://cache?endpoint=127.0.0.1:9000", "http://"),
            ("s3://cache?path_style=maybe", "path_style"),
            ("s3://cache/a/../b", "prefix"),
        ] {
            let err = S3Config::from_url(url).unwrap_err().to_string();
            assert!(err.contains(says), "{url}: {err}");
        }
    }
}
