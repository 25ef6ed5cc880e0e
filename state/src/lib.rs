//! strata's live state: the hot copy of the cache index, in-flight step
//! claims (two builds that need the same step run it once; only the
//! holder renews or releases one), the worker
//! registry, build records and their event logs. One small trait,
//! [`StateStore`], with two backends:
//!
//! - [`memory::MemoryState`]: in-process (embedded mode, tests);
//! - [`redis::RedisState`]: a Redis server, shared by every scheduler of
//!   a farm.
//!
//! Both are checked by one conformance suite (`tests/conformance.rs`).
//! The state is a cache of what matters: everything durable (layers, the
//! cache index's records, finished build logs) also lives in the blob
//! store, so an emptied Redis costs lookups, never builds.
//!
//! Keys are `/`-separated strings chosen by the caller
//! (`cache/<namespace>/<key>`, `inflight/<namespace>/<key>`,
//! `workers/<id>`, `builds/<id>`, `logs/<id>`); a backend may prefix them.

pub mod memory;
pub mod redis;

use async_trait::async_trait;
use std::time::Duration;
use thiserror::Error;

pub use memory::MemoryState;
pub use redis::{RedisConfig, RedisState};

/// Why a state operation failed.
#[derive(Debug, Error)]
pub enum StateError {
    /// The backend failed after its retries.
    #[error("{store}: {op} {key}: {detail}")]
    Backend {
        /// Which store (its [`StateStore::describe`]).
        store: String,
        /// The operation ("GET", "SET", "SCAN"...).
        op: &'static str,
        /// The key involved.
        key: String,
        /// What went wrong.
        detail: String,
    },
    /// A backend could not be configured (bad URL).
    #[error("state store {0}")]
    Config(String),
}

/// A small, shared key-value store with claims and append-only logs.
#[async_trait]
pub trait StateStore: Send + Sync + std::fmt::Debug + 'static {
    /// Where it is, for messages: `memory` or `redis://host:port/db`.
    fn describe(&self) -> String;

    /// The value of `key`.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError>;

    /// Sets `key`, expiring after `ttl` when given.
    async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StateError>;

    /// Removes `key`; returns whether it existed.
    async fn delete(&self, key: &str) -> Result<bool, StateError>;

    /// Sets `key` only if it is absent (a claim). Returns `None` when this
    /// call set it, else the current value (who holds the claim).
    async fn put_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<Option<Vec<u8>>, StateError>;

    /// Removes `key` only if its value is `value` (releasing a claim one
    /// holds, never another's). Returns whether it was removed.
    async fn delete_if_equals(&self, key: &str, value: &[u8]) -> Result<bool, StateError>;

    /// Makes `key` expire `ttl` from now only if its value is `value`
    /// (renewing a claim one holds, never another's). Returns whether it
    /// was renewed: `false` when the key is gone or holds another value.
    async fn expire_if_equals(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StateError>;

    /// Every key starting with `prefix`, with its value, sorted by key.
    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StateError>;

    /// Appends `value` to the log at `key`; returns the log's new length.
    async fn append(&self, key: &str, value: &[u8]) -> Result<u64, StateError>;

    /// The log at `key` from index `from` on (empty when absent).
    async fn range(&self, key: &str, from: u64) -> Result<Vec<Vec<u8>>, StateError>;
}
