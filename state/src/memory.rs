//! [`MemoryState`]: the state in this process, for embedded mode and tests.

use crate::{StateError, StateStore};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How many writes between two sweeps of expired entries. Reads already drop
/// the expired entries they meet; the sweep bounds what claims nobody reads
/// again can hold on to.
const SWEEP_EVERY: u64 = 1024;

/// A [`StateStore`] in memory: values with optional expiry, and logs.
///
/// Like a Redis database, a key names either a value or a log: reading a log
/// as a value (or appending to a value) is an error, [`StateStore::put`]
/// replaces either, [`StateStore::delete`] removes either, and
/// [`StateStore::scan`] lists values only.
#[derive(Default)]
pub struct MemoryState {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: BTreeMap<String, Entry>,
    writes: u64,
}

struct Entry {
    data: Data,
    expires: Option<Instant>,
}

enum Data {
    Value(Vec<u8>),
    Log(Vec<Vec<u8>>),
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| at > now)
    }
}

impl Inner {
    /// The live entry at `key`, dropping it if it has expired.
    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        if self.entries.get(key).is_some_and(|e| !e.live(now)) {
            self.entries.remove(key);
        }
        self.entries.get_mut(key)
    }

    fn insert_value(&mut self, key: &str, value: &[u8], ttl: Option<Duration>, now: Instant) {
        self.writes += 1;
        if self.writes.is_multiple_of(SWEEP_EVERY) {
            self.entries.retain(|_, e| e.live(now));
        }
        self.entries.insert(
            key.to_owned(),
            Entry {
                data: Data::Value(value.to_vec()),
                // A ttl too long to represent never ends.
                expires: ttl.and_then(|ttl| now.checked_add(ttl)),
            },
        );
    }
}

impl MemoryState {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every method leaves the maps consistent before it can panic, so a
        // poisoned lock still guards good data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wrong_type(&self, op: &'static str, key: &str, holds: &str) -> StateError {
        StateError::Backend {
            store: self.describe(),
            op,
            key: key.to_owned(),
            detail: format!("the key holds a {holds}"),
        }
    }
}

impl std::fmt::Debug for MemoryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The contents can be large: show their size, not them.
        f.debug_struct("MemoryState")
            .field("keys", &self.lock().entries.len())
            .finish()
    }
}

#[async_trait]
impl StateStore for MemoryState {
    fn describe(&self) -> String {
        "memory".to_owned()
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let mut inner = self.lock();
        match inner.live(key, Instant::now()) {
            None => Ok(None),
            Some(Entry {
                data: Data::Value(v),
                ..
            }) => Ok(Some(v.clone())),
            Some(_) => Err(self.wrong_type("GET", key, "log")),
        }
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StateError> {
        self.lock().insert_value(key, value, ttl, Instant::now());
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool, StateError> {
        let now = Instant::now();
        let removed = self.lock().entries.remove(key);
        Ok(removed.is_some_and(|e| e.live(now)))
    }

    async fn put_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<Option<Vec<u8>>, StateError> {
        let now = Instant::now();
        let mut inner = self.lock();
        match inner.live(key, now) {
            None => {
                inner.insert_value(key, value, ttl, now);
                Ok(None)
            }
            Some(Entry {
                data: Data::Value(v),
                ..
            }) => Ok(Some(v.clone())),
            Some(_) => Err(self.wrong_type("SETNX", key, "log")),
        }
    }

    async fn delete_if_equals(&self, key: &str, value: &[u8]) -> Result<bool, StateError> {
        let mut inner = self.lock();
        match inner.live(key, Instant::now()) {
            None => Ok(false),
            Some(Entry {
                data: Data::Value(v),
                ..
            }) => {
                let equal = v.as_slice() == value;
                if equal {
                    inner.entries.remove(key);
                }
                Ok(equal)
            }
            Some(_) => Err(self.wrong_type("DELIFEQ", key, "log")),
        }
    }

    async fn expire_if_equals(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StateError> {
        let now = Instant::now();
        let mut inner = self.lock();
        match inner.live(key, now) {
            None => Ok(false),
            Some(Entry {
                data: Data::Value(v),
                expires,
            }) => {
                let equal = v.as_slice() == value;
                if equal {
                    *expires = now.checked_add(ttl);
                }
                Ok(equal)
            }
            Some(_) => Err(self.wrong_type("PEXPIREIFEQ", key, "log")),
        }
    }

    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        let now = Instant::now();
        let mut inner = self.lock();
        let mut found = Vec::new();
        let mut expired = Vec::new();
        for (key, entry) in inner.entries.range::<str, _>((
            std::ops::Bound::Included(prefix),
            std::ops::Bound::Unbounded,
        )) {
            if !key.starts_with(prefix) {
                break;
            }
            if !entry.live(now) {
                expired.push(key.clone());
            } else if let Data::Value(v) = &entry.data {
                found.push((key.clone(), v.clone()));
            }
        }
        for key in expired {
            inner.entries.remove(&key);
        }
        Ok(found)
    }

    async fn append(&self, key: &str, value: &[u8]) -> Result<u64, StateError> {
        let mut inner = self.lock();
        match inner.live(key, Instant::now()) {
            None => {
                inner.entries.insert(
                    key.to_owned(),
                    Entry {
                        data: Data::Log(vec![value.to_vec()]),
                        expires: None,
                    },
                );
                Ok(1)
            }
            Some(Entry {
                data: Data::Log(log),
                ..
            }) => {
                log.push(value.to_vec());
                Ok(log.len() as u64)
            }
            Some(_) => Err(self.wrong_type("RPUSH", key, "value")),
        }
    }

    async fn range(&self, key: &str, from: u64) -> Result<Vec<Vec<u8>>, StateError> {
        let mut inner = self.lock();
        match inner.live(key, Instant::now()) {
            None => Ok(Vec::new()),
            Some(Entry {
                data: Data::Log(log),
                ..
            }) => {
                let from = usize::try_from(from).unwrap_or(usize::MAX).min(log.len());
                Ok(log[from..].to_vec())
            }
            Some(_) => Err(self.wrong_type("LRANGE", key, "value")),
        }
    }
}
