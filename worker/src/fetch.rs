//! ADD's remote sources, as BuildKit's HTTP source fetches them: the URL is
//! downloaded to a file named after the last segment of its path
//! (`__unnamed__` when there is none), mode 0600, owned by root, with the
//! modification time the server's `Last-Modified` gives (the Unix epoch
//! without one). `--checksum` is verified before the file is used.

use sha2::{Digest as _, Sha256, Sha384, Sha512};
use std::fs::FileTimes;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use thiserror::Error;
use tokio::io::AsyncWriteExt as _;

/// The name of a downloaded file whose URL path has no last segment.
pub const UNNAMED: &str = "__unnamed__";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
// Per read, not per transfer: a large file may take long, a stalled
// connection may not.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
const USER_AGENT: &str = concat!("strata-worker/", env!("CARGO_PKG_VERSION"));

/// Why a remote ADD source could not be fetched; every variant names the
/// URL or the file.
#[derive(Debug, Error)]
pub enum FetchError {
    /// The source is not a valid http(s) URL.
    #[error("invalid URL \"{url}\": {reason}")]
    InvalidUrl {
        /// The URL as written.
        url: String,
        /// Why.
        reason: String,
    },
    /// `--checksum` is not `ALGORITHM:HEX` with a supported algorithm.
    #[error(
        "invalid checksum \"{checksum}\": {reason} (expected sha256:, sha384: or sha512: followed by lowercase hex)"
    )]
    InvalidChecksum {
        /// The checksum as given.
        checksum: String,
        /// Why.
        reason: String,
    },
    /// The request failed (connection, TLS, timeout, body).
    #[error("fetching {url}: {source}")]
    Request {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("fetching {url}: invalid response status {status}")]
    Status {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The content does not have the `--checksum` digest.
    #[error(
        "fetching {url}: checksum mismatch: --checksum is {expected} but the content is {actual}"
    )]
    ChecksumMismatch {
        /// The URL.
        url: String,
        /// The `--checksum` digest.
        expected: String,
        /// The digest of what was downloaded.
        actual: String,
    },
    /// Writing the downloaded file failed.
    #[error("fetching {url}: {op} {path}: {source}")]
    Io {
        /// The URL.
        url: String,
        /// What was attempted.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Building the HTTP client failed.
    #[error("building the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Whether an ADD source is a remote URL (BuildKit's `isHTTPSource`).
pub fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// The HTTP client ADD downloads with.
pub fn http_client() -> Result<reqwest::Client, FetchError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT);
    // The system's roots, read once per process (see
    // `strata_oci::registry::system_root_certs`).
    let roots = strata_oci::registry::system_root_certs();
    if !roots.is_empty() {
        let certs = roots
            .iter()
            .map(|der| reqwest::Certificate::from_der(der))
            .collect::<Result<Vec<_>, _>>()
            .map_err(FetchError::Client)?;
        builder = builder.tls_certs_only(certs);
    }
    builder.build().map_err(FetchError::Client)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Sha256,
    Sha384,
    Sha512,
}

/// An ADD `--checksum` (`sha256:<hex>`, also sha384 and sha512).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    algorithm: Algorithm,
    text: String,
}

impl Checksum {
    /// Parses `ALGORITHM:HEX`.
    pub fn parse(s: &str) -> Result<Self, FetchError> {
        let invalid = |reason: &str| FetchError::InvalidChecksum {
            checksum: s.to_string(),
            reason: reason.to_string(),
        };
        let (algorithm, hex) = s.split_once(':').ok_or_else(|| invalid("no algorithm"))?;
        let (algorithm, len) = match algorithm {
            "sha256" => (Algorithm::Sha256, 64),
            "sha384" => (Algorithm::Sha384, 96),
            "sha512" => (Algorithm::Sha512, 128),
            _ => return Err(invalid("unsupported algorithm")),
        };
        if hex.len() != len
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(invalid(&format!("expected {len} lowercase hex digits")));
        }
        Ok(Self {
            algorithm,
            text: s.to_string(),
        })
    }
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

enum Hasher {
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl Hasher {
    fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Self::Sha256(Sha256::new()),
            Algorithm::Sha384 => Self::Sha384(Sha384::new()),
            Algorithm::Sha512 => Self::Sha512(Sha512::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(data),
            Self::Sha384(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
        }
    }

    fn finish(self) -> String {
        match self {
            Self::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Self::Sha384(h) => format!("sha384:{}", hex::encode(h.finalize())),
            Self::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

/// A downloaded ADD source.
#[derive(Debug, Clone)]
pub struct FetchedFile {
    /// The file (`dir/name`).
    pub path: PathBuf,
    /// Its name, from the URL.
    pub name: String,
    /// `sha256:` of its content (or the `--checksum` algorithm's digest).
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// The server's `Last-Modified`, when it sent a valid one.
    pub modified: Option<SystemTime>,
}

/// The file name BuildKit gives a download: the last segment of the URL's
/// (decoded) path, trailing slashes ignored, else [`UNNAMED`].
pub fn file_name(url: &reqwest::Url) -> String {
    let decoded = percent_decode(url.path());
    let trimmed = decoded.trim_end_matches('/');
    let base = trimmed.rsplit('/').next().unwrap_or("");
    if base.is_empty() || base == "." || base == ".." || base.contains('\0') {
        UNNAMED.to_string()
    } else {
        base.to_string()
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(&h), Some(&l)) = (bytes.get(i + 1), bytes.get(i + 2))
            && let (Some(h), Some(l)) = (hex(h), hex(l))
        {
            // Two hex digits make one byte: h * 16 + l < 256.
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'%'));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Downloads `url` into the directory `dir` (created if missing) and
/// verifies `checksum` when given; on any error nothing is left in `dir`.
pub async fn fetch_url(
    client: &reqwest::Client,
    url: &str,
    dir: &Path,
    checksum: Option<&Checksum>,
) -> Result<FetchedFile, FetchError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| FetchError::InvalidUrl {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(FetchError::InvalidUrl {
            url: url.to_string(),
            reason: "only http and https URLs can be added".to_string(),
        });
    }
    let name = file_name(&parsed);
    let path = dir.join(&name);
    let io_err = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| FetchError::Io {
            url: url.to_string(),
            op,
            path,
            source,
        }
    };
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(io_err("creating", dir))?;
    let result = download(client, parsed, url, &path, checksum).await;
    let (digest, size, modified) = match result {
        Ok(r) => r,
        Err(e) => {
            // Best effort: the file may never have been created.
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e);
        }
    };
    let times_path = path.clone();
    let set = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        std::fs::set_permissions(&times_path, std::fs::Permissions::from_mode(0o600))?;
        let file = std::fs::File::options().write(true).open(&times_path)?;
        let mtime = modified.unwrap_or(SystemTime::UNIX_EPOCH);
        file.set_times(FileTimes::new().set_modified(mtime).set_accessed(mtime))
    })
    .await
    .map_err(|e| io_err("setting mode and times of", &path)(std::io::Error::other(e)))?;
    set.map_err(io_err("setting mode and times of", &path))?;
    Ok(FetchedFile {
        path,
        name,
        digest,
        size,
        modified,
    })
}

/// Streams the body to `path`, hashing it; returns its digest, size and
/// `Last-Modified`.
async fn download(
    client: &reqwest::Client,
    parsed: reqwest::Url,
    url: &str,
    path: &Path,
    checksum: Option<&Checksum>,
) -> Result<(String, u64, Option<SystemTime>), FetchError> {
    let request_err = |source| FetchError::Request {
        url: url.to_string(),
        source,
    };
    let io_err = |op: &'static str| {
        move |source| FetchError::Io {
            url: url.to_string(),
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    let mut response = client.get(parsed).send().await.map_err(request_err)?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::Status {
            url: url.to_string(),
            status: status.as_u16(),
        });
    }
    let modified = response
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(io_err("creating"))?;
    let mut hasher = Hasher::new(checksum.map_or(Algorithm::Sha256, |c| c.algorithm));
    let mut size = 0u64;
    // Chunks are network-sized (a few KiB): hashing them here costs less
    // than a hand-off to the blocking pool would.
    while let Some(chunk) = response.chunk().await.map_err(request_err)? {
        hasher.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk).await.map_err(io_err("writing"))?;
    }
    file.sync_all().await.map_err(io_err("syncing"))?;
    let digest = hasher.finish();
    if let Some(expected) = checksum
        && expected.text != digest
    {
        return Err(FetchError::ChecksumMismatch {
            url: url.to_string(),
            expected: expected.text.clone(),
            actual: digest,
        });
    }
    Ok((digest, size, modified))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_last_path_segment() {
        let name = |u: &str| file_name(&reqwest::Url::parse(u).expect("url"));
        assert_eq!(name("http://h/a/b/file.tar.gz?x=1#f"), "file.tar.gz");
        assert_eq!(name("http://h/a/dir/"), "dir");
        assert_eq!(name("http://h/"), UNNAMED);
        assert_eq!(name("http://h"), UNNAMED);
        assert_eq!(name("http://h/my%20file.txt"), "my file.txt");
        assert_eq!(name("http://h/a%2Fb"), "b");
        assert_eq!(name("http://h/x/%2e%2e"), UNNAMED);
    }

    #[test]
    fn checksums_parse() {
        let hex = "ab".repeat(32);
        assert!(Checksum::parse(&format!("sha256:{hex}")).is_ok());
        assert!(Checksum::parse(&format!("sha512:{}", "0".repeat(128))).is_ok());
        for bad in [
            format!("md5:{hex}"),
            hex.clone(),
            format!("sha256:{}", hex.to_uppercase()),
            "sha256:abc".to_string(),
        ] {
            let err = Checksum::parse(&bad).expect_err(&bad);
            assert!(err.to_string().contains(&bad), "{err}");
        }
    }

    #[test]
    fn urls_are_recognised_by_scheme() {
        assert!(is_url("http://h/x") && is_url("https://h/x"));
        assert!(!is_url("HTTP://h/x") && !is_url("ftp://h/x") && !is_url("http.txt"));
    }
}
