//! One holder at a time per key. Jobs running side by side often need
//! the same thing at the same moment (four stages built on one base
//! layer): with a [`KeyedLocks`] around fetching a blob or unpacking a
//! layer, the first job does the work and the others wait for it, then
//! find it done, instead of each downloading or unpacking it again.

use std::collections::HashSet;
use std::sync::{Condvar, Mutex, MutexGuard};

/// Keys held, with the means to wait for one: a condition variable for
/// blocking callers, a [`tokio::sync::Notify`] for async ones.
#[derive(Debug, Default)]
pub struct KeyedLocks {
    held: Mutex<HashSet<String>>,
    released: Condvar,
    released_async: tokio::sync::Notify,
}

/// A held key, released when dropped.
#[derive(Debug)]
pub struct KeyGuard<'a> {
    locks: &'a KeyedLocks,
    key: String,
}

impl KeyedLocks {
    fn held(&self) -> MutexGuard<'_, HashSet<String>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits, blocking the thread, until `key` is free, then holds it.
    pub fn lock_blocking(&self, key: &str) -> KeyGuard<'_> {
        let mut held = self.held();
        while held.contains(key) {
            held = self.released.wait(held).unwrap_or_else(|e| e.into_inner());
        }
        held.insert(key.to_string());
        KeyGuard {
            locks: self,
            key: key.to_string(),
        }
    }

    /// Waits until `key` is free, then holds it.
    pub async fn lock(&self, key: &str) -> KeyGuard<'_> {
        loop {
            let released = {
                let mut held = self.held();
                if held.insert(key.to_string()) {
                    return KeyGuard {
                        locks: self,
                        key: key.to_string(),
                    };
                }
                // Created before the set is unlocked, so a release in
                // between still wakes it.
                self.released_async.notified()
            };
            released.await;
        }
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        self.locks.held().remove(&self.key);
        self.locks.released.notify_all();
        self.locks.released_async.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn one_thread_at_a_time_holds_a_key_and_other_keys_are_free() {
        let locks = Arc::new(KeyedLocks::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (locks, inside, most) = (locks.clone(), inside.clone(), most.clone());
                std::thread::spawn(move || {
                    let _g = locks.lock_blocking("a");
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    // Another key is not held up by "a".
                    drop(locks.lock_blocking("b"));
                    std::thread::sleep(Duration::from_millis(20));
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);
        assert!(locks.held().is_empty(), "every key is released");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_holders_wait_for_each_other_and_for_blocking_ones() {
        let locks = Arc::new(KeyedLocks::default());
        let blocking = locks.lock_blocking("k");
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _g = locks.lock("k").await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the key is still held");
        drop(blocking);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("released keys wake async waiters")
            .unwrap();
    }
}
