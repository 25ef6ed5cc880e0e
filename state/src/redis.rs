//! [`RedisState`]: the state on a Redis (or Valkey) server, shared by every
//! scheduler of a farm.
//!
//! One multiplexed connection, re-established in the background by
//! [`redis::aio::ConnectionManager`] when it drops. Every operation is tried
//! up to [`RedisConfig::max_attempts`] times on I/O errors and time-outs, with
//! exponential backoff, each attempt bounded by [`RedisConfig::op_timeout`].
//!
//! A retry after a reply was lost can repeat a write the server already did:
//! `put`, `delete` and `delete_if_equals` are idempotent, `put_if_absent` is
//! made so (on a retry, finding one's own value means one's own claim), but
//! `append` may then add its entry twice.
//!
//! Only `redis://` (and `redis+unix://`) URLs: this build has no TLS, so a
//! `rediss://` URL is refused by [`RedisState::connect`].

use crate::{StateError, StateStore};
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, RedisError, RedisResult, RetryMethod, Script};
use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

/// Keys per `SCAN` step.
const SCAN_COUNT: usize = 1000;
/// Keys per `MGET` of a scan.
const MGET_BATCH: usize = 500;
/// The longest wait between two attempts, however many are allowed.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Sets `KEYS[1]` to `ARGV[1]` (for `ARGV[2]` ms when not `0`) unless it is
/// set; returns nil when it set it, else the current value. A script, not
/// `SET NX GET`, so that it runs on servers before 7.0 too.
const PUT_IF_ABSENT: &str = r"
local current = redis.call('GET', KEYS[1])
if current then return current end
if ARGV[2] == '0' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return false
";

/// Deletes `KEYS[1]` if its value is `ARGV[1]`; returns how many keys it
/// deleted.
const DELETE_IF_EQUALS: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
else
  return 0
end
";

/// Makes `KEYS[1]` expire in `ARGV[2]` ms if its value is `ARGV[1]`;
/// returns 1 when it did, else 0.
const EXPIRE_IF_EQUALS: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  return 0
end
";

/// Where and how to reach Redis.
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://[user][:password@]host[:port][/db]` or
    /// `redis+unix:///path?db=N&pass=P`.
    pub url: String,
    /// Put before every key, so farms (or tests) can share a server. No
    /// store's prefix may start another's on the same database, or its
    /// scans would list the other's keys.
    pub key_prefix: String,
    /// Tries per operation (at least one is always made).
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles after each.
    pub retry_base: Duration,
    /// How long one attempt (connecting included) may take.
    pub op_timeout: Duration,
}

impl RedisConfig {
    /// The defaults for `url`: prefix `strata:`, 5 attempts 100 ms apart and
    /// doubling, 5 s per attempt.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key_prefix: "strata:".to_owned(),
            max_attempts: 5,
            retry_base: Duration::from_millis(100),
            op_timeout: Duration::from_secs(5),
        }
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &mask_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("max_attempts", &self.max_attempts)
            .field("retry_base", &self.retry_base)
            .field("op_timeout", &self.op_timeout)
            .finish()
    }
}

/// A [`StateStore`] on a Redis server. Cheap to clone: clones share the
/// connection.
#[derive(Clone)]
pub struct RedisState {
    conn: ConnectionManager,
    /// The URL with its password masked.
    url: String,
    /// The password as written in the URL, and decoded, to scrub from
    /// error texts.
    secrets: Vec<String>,
    key_prefix: String,
    max_attempts: u32,
    retry_base: Duration,
    op_timeout: Duration,
    put_if_absent: Script,
    delete_if_equals: Script,
    expire_if_equals: Script,
}

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState")
            .field("url", &self.url)
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

impl RedisState {
    /// Connects to `config.url` and checks the server answers `PING`.
    ///
    /// Fails with [`StateError::Config`] for a URL it cannot use, and with
    /// [`StateError::Backend`] (op `PING`) naming the URL, password masked,
    /// when the server cannot be reached after the configured attempts.
    pub async fn connect(config: RedisConfig) -> Result<Self, StateError> {
        let url = mask_url(&config.url);
        let secrets = url_secrets(&config.url);
        let scrub = |text: String| scrub(text, &secrets);
        let scheme = config.url.split("://").next().unwrap_or_default();
        if ["rediss", "valkeys"].contains(&scheme.to_ascii_lowercase().as_str()) {
            return Err(StateError::Config(format!(
                "URL {url}: TLS is not supported by this build of strata; use redis://"
            )));
        }
        let client = redis::Client::open(config.url.as_str()).map_err(|e| {
            StateError::Config(scrub(format!("URL {url} is not a usable Redis URL: {e}")))
        })?;
        // One connection attempt per reconnect: the retries, and their
        // backoff, are this store's, so they are bounded per operation.
        let manager_config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(config.op_timeout))
            .set_response_timeout(Some(config.op_timeout));
        let conn =
            ConnectionManager::new_lazy_with_config(client, manager_config).map_err(|e| {
                StateError::Config(scrub(format!("URL {url}: cannot set up a connection: {e}")))
            })?;
        let state = Self {
            conn,
            url,
            secrets,
            key_prefix: config.key_prefix,
            max_attempts: config.max_attempts.max(1),
            retry_base: config.retry_base,
            op_timeout: config.op_timeout,
            put_if_absent: Script::new(PUT_IF_ABSENT),
            delete_if_equals: Script::new(DELETE_IF_EQUALS),
            expire_if_equals: Script::new(EXPIRE_IF_EQUALS),
        };
        state
            .run("PING", "(connection check)", |mut conn| async move {
                redis::cmd("PING").query_async::<String>(&mut conn).await
            })
            .await
            .map_err(|e| match e {
                StateError::Backend {
                    store,
                    op,
                    key,
                    detail,
                } => StateError::Backend {
                    detail: format!(
                        "connection check failed: {detail}; check the URL, its password and \
                         that the server is up"
                    ),
                    store,
                    op,
                    key,
                },
                other => other,
            })?;
        Ok(state)
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.key_prefix)
    }

    fn backend(&self, op: &'static str, key: &str, detail: String) -> StateError {
        StateError::Backend {
            store: self.url.clone(),
            op,
            key: key.to_owned(),
            detail: scrub(detail, &self.secrets),
        }
    }

    /// Runs `attempt` on the connection until it succeeds, fails for a
    /// reason a retry cannot fix, or has been tried `max_attempts` times.
    async fn run<T, F, Fut>(
        &self,
        op: &'static str,
        key: &str,
        mut attempt: F,
    ) -> Result<T, StateError>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let mut delay = self.retry_base;
        let mut tried = 1;
        loop {
            let failure = match tokio::time::timeout(self.op_timeout, attempt(self.conn.clone()))
                .await
            {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) if !retryable(&e) => return Err(self.backend(op, key, e.to_string())),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {:?}", self.op_timeout),
            };
            if tried >= self.max_attempts {
                return Err(self.backend(
                    op,
                    key,
                    format!("{failure} (gave up after {tried} attempts)"),
                ));
            }
            tracing::debug!(
                store = %self.url,
                op,
                key,
                attempt = tried,
                error = %scrub(failure, &self.secrets),
                "Redis operation failed, retrying"
            );
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2).min(MAX_BACKOFF);
            tried += 1;
        }
    }

    /// Runs `cmd` through [`Self::run`].
    async fn query<T: FromRedisValue>(
        &self,
        op: &'static str,
        key: &str,
        cmd: &Cmd,
    ) -> Result<T, StateError> {
        self.run(op, key, |mut conn| async move {
            cmd.query_async(&mut conn).await
        })
        .await
    }

    /// The values of `keys` (full keys), skipping those that are gone or
    /// hold no value.
    async fn mget(
        &self,
        prefix: &str,
        keys: &[Vec<u8>],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError> {
        let mut cmd = redis::cmd("MGET");
        cmd.arg(keys);
        let values: Vec<Option<Vec<u8>>> = self.query("MGET", prefix, &cmd).await?;
        Ok(keys
            .iter()
            .zip(values)
            .filter_map(|(k, v)| Some((k.clone(), v?)))
            .collect())
    }
}

#[async_trait]
impl StateStore for RedisState {
    fn describe(&self) -> String {
        self.url.clone()
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.full_key(key));
        self.query("GET", key, &cmd).await
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StateError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.full_key(key)).arg(value);
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(ttl_millis(ttl));
        }
        self.query("SET", key, &cmd).await
    }

    async fn delete(&self, key: &str) -> Result<bool, StateError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.full_key(key));
        Ok(self.query::<u64>("DEL", key, &cmd).await? > 0)
    }

    async fn put_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<Option<Vec<u8>>, StateError> {
        let full = self.full_key(key);
        let ttl = ttl.map_or(0, ttl_millis);
        let mut retry = false;
        self.run("SETNX", key, |mut conn| {
            let is_retry = std::mem::replace(&mut retry, true);
            let mut call = self.put_if_absent.key(&full);
            call.arg(value).arg(ttl);
            async move {
                let holder = call.invoke_async::<Option<Vec<u8>>>(&mut conn).await?;
                // A retry that finds our own value finds the claim an earlier
                // attempt made before its reply was lost.
                Ok(holder.filter(|h| !(is_retry && h.as_slice() == value)))
            }
        })
        .await
    }

    async fn delete_if_equals(&self, key: &str, value: &[u8]) -> Result<bool, StateError> {
        let full = self.full_key(key);
        self.run("DELIFEQ", key, |mut conn| {
            let mut call = self.delete_if_equals.key(&full);
            call.arg(value);
            async move { call.invoke_async::<u64>(&mut conn).await.map(|n| n > 0) }
        })
        .await
    }

    async fn expire_if_equals(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StateError> {
        let full = self.full_key(key);
        let ttl = ttl_millis(ttl);
        self.run("PEXPIREIFEQ", key, |mut conn| {
            let mut call = self.expire_if_equals.key(&full);
            call.arg(value).arg(ttl);
            async move { call.invoke_async::<u64>(&mut conn).await.map(|n| n > 0) }
        })
        .await
    }

    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        let pattern = format!("{}*", escape_glob(&self.full_key(prefix)));
        let mut keys = BTreeSet::new();
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT);
            let (next, batch): (u64, Vec<Vec<u8>>) = self.query("SCAN", prefix, &cmd).await?;
            // SCAN may return a key more than once: the set keeps one.
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let keys: Vec<Vec<u8>> = keys.into_iter().collect();
        let strip = self.key_prefix.len();
        let mut found = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(MGET_BATCH) {
            for (full, value) in self.mget(prefix, chunk).await? {
                // Keys this crate writes are UTF-8; another client's are not
                // ours to list.
                if let Ok(key) = String::from_utf8(full[strip..].to_vec()) {
                    found.push((key, value));
                }
            }
        }
        // The set sorted the full keys, which share the store's prefix, so
        // `found` is sorted by key.
        Ok(found)
    }

    async fn append(&self, key: &str, value: &[u8]) -> Result<u64, StateError> {
        let mut cmd = redis::cmd("RPUSH");
        cmd.arg(self.full_key(key)).arg(value);
        self.query("RPUSH", key, &cmd).await
    }

    async fn range(&self, key: &str, from: u64) -> Result<Vec<Vec<u8>>, StateError> {
        let from = i64::try_from(from).unwrap_or(i64::MAX);
        let mut cmd = redis::cmd("LRANGE");
        cmd.arg(self.full_key(key)).arg(from).arg(-1);
        self.query("LRANGE", key, &cmd).await
    }
}

/// Whether another attempt may succeed where this one failed: the
/// connection broke or timed out, or the server asked to wait (loading,
/// busy).
fn retryable(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || matches!(e.retry_method(), RetryMethod::WaitAndRetry)
}

/// `ttl` in whole milliseconds, at least 1 (Redis refuses `PX 0`).
fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// `text` with every backslash and glob character (`*?[]`) escaped, for a
/// `MATCH` pattern that matches it literally.
fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `url` with its password (`:pass@` or `pass=`) replaced by `***`; a URL
/// that does not parse is shown by its scheme only.
fn mask_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return match url.split_once("://") {
            Some((scheme, _)) if !scheme.contains(['@', ':', '/']) => {
                format!("{scheme}://(unparsable URL)")
            }
            _ => "(unparsable URL)".to_owned(),
        };
    };
    if parsed.password().is_some() {
        // Cannot fail: a URL with a password has a host.
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query_pairs().any(|(k, _)| k == "pass") {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "pass" { "***".into() } else { v };
                (k.into_owned(), v.into_owned())
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// The password in `url`, as written and decoded.
fn url_secrets(url: &str) -> Vec<String> {
    let Ok(parsed) = url::Url::parse(url) else {
        return Vec::new();
    };
    let mut secrets: Vec<String> = parsed.password().map(str::to_owned).into_iter().collect();
    if let Some(decoded) = parsed
        .password()
        .and_then(|p| percent_encoding::percent_decode_str(p).decode_utf8().ok())
        .map(|d| d.into_owned())
        .filter(|d| !secrets.contains(d))
    {
        secrets.push(decoded);
    }
    secrets.extend(
        parsed
            .query_pairs()
            .filter(|(k, _)| k == "pass")
            .map(|(_, v)| v.into_owned()),
    );
    secrets.retain(|s| !s.is_empty());
    secrets
}

/// `text` with every secret replaced by `***`.
fn scrub(mut text: String, secrets: &[String]) -> String {
    for secret in secrets {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), "***");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_url_hides_passwords() {
        assert_eq!(
            mask_url("redis://:s3cret@10.0.0.1:6380/2"),
            "redis://:***@10.0.0.1:6380/2"
        );
        assert_eq!(
            mask_url("redis://user:p%40ss@host/"),
            "redis://user:***@host/"
        );
        assert_eq!(mask_url("redis://host:6379"), "redis://host:6379");
        let unix = mask_url("redis+unix:///run/redis.sock?db=1&pass=hunter2");
        assert!(!unix.contains("hunter2"), "{unix}");
        assert!(unix.contains("db=1"), "{unix}");
        assert_eq!(mask_url("not a url :secret@"), "(unparsable URL)");
        assert_eq!(mask_url("redis://:secret@[::1"), "redis://(unparsable URL)");
    }

    #[test]
    fn secrets_are_scrubbed_as_written_and_decoded() {
        let secrets = url_secrets("redis://user:p%40ss@host/");
        assert_eq!(secrets, ["p%40ss", "p@ss"]);
        assert_eq!(
            scrub("auth p@ss failed".into(), &secrets),
            "auth *** failed"
        );
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(escape_glob(r"a*b?c[d]e\f"), r"a\*b\?c\[d\]e\\f");
    }

    #[test]
    fn ttl_is_at_least_a_millisecond() {
        assert_eq!(ttl_millis(Duration::ZERO), 1);
        assert_eq!(ttl_millis(Duration::from_micros(2500)), 2);
    }
}
