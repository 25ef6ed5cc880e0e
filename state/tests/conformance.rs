//! The conformance suite of [`StateStore`]: every case runs against
//! [`MemoryState`] and against [`RedisState`] on a real `redis-server`
//! (started here on a free loopback port; `STRATA_REDIS_SERVER` may name the
//! binary), so both backends behave alike. Redis-only behaviour (prefix
//! isolation, a server going away, URL masking) follows the suite.

use futures::future::join_all;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};
use strata_state::{MemoryState, RedisConfig, RedisState, StateError, StateStore};

type Result<T = ()> = std::result::Result<T, StateError>;

/// Runs each suite case as `memory::<case>` and `redis::<case>`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() -> super::Result {
                    super::$case(&super::MemoryState::new()).await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $case() -> super::Result {
                    let server = super::shared_server();
                    let store = super::redis_store(&server, stringify!($case)).await;
                    super::$case(&store).await
                }
            )*
        }
    };
}

conformance!(
    round_trip_and_overwrite,
    values_expire_after_their_ttl,
    first_claim_wins_until_it_expires,
    release_removes_only_ones_own_claim,
    renew_extends_only_ones_own_claim,
    racing_claims_have_one_winner,
    scan_lists_exactly_the_prefix_sorted,
    scan_takes_glob_characters_literally,
    scan_returns_many_keys,
    logs_append_and_range_from_an_offset,
    binary_values_survive,
    a_key_holds_a_value_or_a_log,
);

// ---- the suite ----

/// `Some(bytes)`, to compare with what `get` returns.
fn some(bytes: &[u8]) -> Option<Vec<u8>> {
    Some(bytes.to_vec())
}

/// The op and key of a backend error; panics on anything else.
fn failed_op<T: std::fmt::Debug>(result: Result<T>) -> (&'static str, String) {
    match result {
        Err(StateError::Backend { op, key, .. }) => (op, key),
        other => panic!("expected a backend error, got {other:?}"),
    }
}

/// `op`'s outcome; fails the test if it hangs.
async fn bounded<T>(op: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), op)
        .await
        .expect("an operation hung")
}

/// The keys `scan(prefix)` lists.
async fn keys(s: &dyn StateStore, prefix: &str) -> Result<Vec<String>> {
    Ok(s.scan(prefix).await?.into_iter().map(|(k, _)| k).collect())
}

async fn round_trip_and_overwrite(s: &dyn StateStore) -> Result {
    assert_eq!(s.get("builds/1").await?, None);
    s.put("builds/1", b"queued", None).await?;
    assert_eq!(s.get("builds/1").await?, some(b"queued"));
    s.put("builds/1", b"running", None).await?;
    assert_eq!(s.get("builds/1").await?, some(b"running"));
    assert!(s.delete("builds/1").await?, "delete of a present key");
    assert_eq!(s.get("builds/1").await?, None);
    assert!(!s.delete("builds/1").await?, "delete of an absent key");
    Ok(())
}

async fn values_expire_after_their_ttl(s: &dyn StateStore) -> Result {
    let ttl = Some(Duration::from_millis(300));
    s.put("workers/short", b"w1", ttl).await?;
    s.put("workers/kept", b"w2", None).await?;
    // Overwriting without a ttl makes a value permanent, as Redis SET does.
    s.put("workers/renewed", b"w3", ttl).await?;
    s.put("workers/renewed", b"w3", None).await?;
    assert_eq!(s.get("workers/short").await?, some(b"w1"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(s.get("workers/short").await?, None);
    assert!(!s.delete("workers/short").await?, "an expired key is gone");
    assert_eq!(
        keys(s, "workers/").await?,
        ["workers/kept", "workers/renewed"]
    );
    Ok(())
}

async fn first_claim_wins_until_it_expires(s: &dyn StateStore) -> Result {
    let key = "inflight/ns/step";
    let ttl = Some(Duration::from_millis(300));
    assert_eq!(s.put_if_absent(key, b"build-a", ttl).await?, None);
    assert_eq!(
        s.put_if_absent(key, b"build-b", ttl).await?,
        some(b"build-a"),
        "the second claimant learns who holds the claim"
    );
    assert_eq!(s.get(key).await?, some(b"build-a"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(s.put_if_absent(key, b"build-b", None).await?, None);
    assert_eq!(s.get(key).await?, some(b"build-b"));
    Ok(())
}

async fn release_removes_only_ones_own_claim(s: &dyn StateStore) -> Result {
    let key = "inflight/ns/step";
    assert_eq!(s.put_if_absent(key, b"build-a", None).await?, None);
    assert!(!s.delete_if_equals(key, b"build-b").await?);
    assert_eq!(s.get(key).await?, some(b"build-a"));
    assert!(s.delete_if_equals(key, b"build-a").await?);
    assert_eq!(s.get(key).await?, None);
    assert!(
        !s.delete_if_equals(key, b"build-a").await?,
        "already released"
    );
    assert_eq!(s.put_if_absent(key, b"build-b", None).await?, None);
    Ok(())
}

async fn renew_extends_only_ones_own_claim(s: &dyn StateStore) -> Result {
    let key = "inflight/ns/renewed";
    let short = Some(Duration::from_millis(400));
    assert_eq!(s.put_if_absent(key, b"build-a", short).await?, None);
    assert!(
        !s.expire_if_equals(key, b"build-b", Duration::from_secs(60))
            .await?,
        "another owner cannot renew the claim"
    );
    assert!(
        s.expire_if_equals(key, b"build-a", Duration::from_secs(60))
            .await?
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        s.get(key).await?,
        some(b"build-a"),
        "the renewed claim outlives its first ttl"
    );
    // Expired, then claimed by another: the old owner's renewal fails and
    // leaves the new claim as it is.
    let other = "inflight/ns/taken";
    assert_eq!(s.put_if_absent(other, b"build-a", short).await?, None);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(s.put_if_absent(other, b"build-b", short).await?, None);
    assert!(
        !s.expire_if_equals(other, b"build-a", Duration::from_secs(60))
            .await?
    );
    assert_eq!(s.get(other).await?, some(b"build-b"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(s.get(other).await?, None, "build-b's ttl was not extended");
    assert!(
        !s.expire_if_equals("inflight/ns/never", b"build-a", Duration::from_secs(1))
            .await?,
        "nothing to renew"
    );
    Ok(())
}

async fn racing_claims_have_one_winner(s: &dyn StateStore) -> Result {
    let key = "inflight/ns/raced";
    let claimants: Vec<String> = (0..20).map(|i| format!("build-{i}")).collect();
    let results = join_all(
        claimants
            .iter()
            .map(|c| s.put_if_absent(key, c.as_bytes(), None)),
    )
    .await;
    let results: Vec<Option<Vec<u8>>> = results.into_iter().collect::<Result<_>>()?;
    let winners: Vec<&String> = claimants
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_none())
        .map(|(c, _)| c)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one claimant wins: {winners:?}");
    let winner = winners[0].as_bytes();
    for held in results.iter().flatten() {
        assert_eq!(held.as_slice(), winner, "losers are told the winner");
    }
    assert_eq!(s.get(key).await?.as_deref(), Some(winner));
    Ok(())
}

async fn scan_lists_exactly_the_prefix_sorted(s: &dyn StateStore) -> Result {
    for key in [
        "builds/2",
        "builds/10",
        "builds/1",
        "builds",
        "buildsX/1",
        "workers/1",
    ] {
        s.put(key, key.as_bytes(), None).await?;
    }
    let found = s.scan("builds/").await?;
    let expected: Vec<(String, Vec<u8>)> = ["builds/1", "builds/10", "builds/2"]
        .iter()
        .map(|k| (k.to_string(), k.as_bytes().to_vec()))
        .collect();
    assert_eq!(found, expected);
    assert_eq!(s.scan("nothing/").await?, []);
    assert_eq!(
        keys(s, "").await?,
        [
            "builds",
            "builds/1",
            "builds/10",
            "builds/2",
            "buildsX/1",
            "workers/1"
        ]
    );
    Ok(())
}

async fn scan_takes_glob_characters_literally(s: &dyn StateStore) -> Result {
    let all = [
        "g/a*b", "g/a*b/1", "g/aXb", "g/a?b", "g/aYb", "g/[ab]", "g/a", r"g/\x", "g/x",
    ];
    for key in all {
        s.put(key, b"v", None).await?;
    }
    assert_eq!(keys(s, "g/a*").await?, ["g/a*b", "g/a*b/1"]);
    assert_eq!(keys(s, "g/a?").await?, ["g/a?b"]);
    assert_eq!(keys(s, "g/[").await?, ["g/[ab]"]);
    assert_eq!(keys(s, "g/[ab]").await?, ["g/[ab]"]);
    assert_eq!(keys(s, r"g/\").await?, [r"g/\x"]);
    Ok(())
}

async fn scan_returns_many_keys(s: &dyn StateStore) -> Result {
    // More than one SCAN step and one MGET batch of the Redis store.
    let keys: Vec<String> = (0..2500).map(|i| format!("cache/ns/{i:05}")).collect();
    for chunk in keys.chunks(100) {
        let puts = chunk.iter().map(|k| s.put(k, k.as_bytes(), None));
        join_all(puts)
            .await
            .into_iter()
            .collect::<Result<Vec<()>>>()?;
    }
    s.put("cache/other", b"x", None).await?;
    let expected: Vec<(String, Vec<u8>)> = keys
        .iter()
        .map(|k| (k.clone(), k.clone().into_bytes()))
        .collect();
    let found = s.scan("cache/ns/").await?;
    assert!(found == expected, "all {} keys, in order", keys.len());
    Ok(())
}

async fn logs_append_and_range_from_an_offset(s: &dyn StateStore) -> Result {
    assert!(s.range("logs/absent", 0).await?.is_empty());
    assert!(s.range("logs/absent", 7).await?.is_empty());
    for (i, line) in ["one", "two", "three"].iter().enumerate() {
        assert_eq!(s.append("logs/b1", line.as_bytes()).await?, i as u64 + 1);
    }
    assert_eq!(s.append("logs/b2", b"other").await?, 1);
    let lines = |v: Vec<Vec<u8>>| {
        v.into_iter()
            .map(|l| String::from_utf8(l).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(lines(s.range("logs/b1", 0).await?), ["one", "two", "three"]);
    assert_eq!(lines(s.range("logs/b1", 1).await?), ["two", "three"]);
    assert_eq!(lines(s.range("logs/b1", 2).await?), ["three"]);
    assert!(s.range("logs/b1", 3).await?.is_empty());
    assert!(s.range("logs/b1", u64::MAX).await?.is_empty());
    assert_eq!(lines(s.range("logs/b2", 0).await?), ["other"]);
    assert!(s.delete("logs/b1").await?, "delete removes a log");
    assert!(s.range("logs/b1", 0).await?.is_empty());
    Ok(())
}

async fn binary_values_survive(s: &dyn StateStore) -> Result {
    let all_bytes: Vec<u8> = (0..=255).rev().collect();
    let not_utf8 = b"\xff\xfe\xc3\x28\x00".to_vec();
    s.put("bin/all", &all_bytes, None).await?;
    s.put("bin/empty", b"", None).await?;
    assert_eq!(s.get("bin/all").await?, Some(all_bytes.clone()));
    assert_eq!(s.get("bin/empty").await?, some(b""), "empty is not absent");
    assert_eq!(s.put_if_absent("bin/empty", b"x", None).await?, some(b""));
    assert_eq!(s.put_if_absent("bin/claim", &not_utf8, None).await?, None);
    assert_eq!(
        s.put_if_absent("bin/claim", b"x", None).await?,
        Some(not_utf8.clone())
    );
    assert!(!s.delete_if_equals("bin/claim", &not_utf8[..4]).await?);
    assert!(s.delete_if_equals("bin/claim", &not_utf8).await?);
    s.append("bin/log", &not_utf8).await?;
    s.append("bin/log", b"").await?;
    assert_eq!(s.range("bin/log", 0).await?, [not_utf8, Vec::new()]);
    assert_eq!(
        s.scan("bin/").await?,
        [
            ("bin/all".to_owned(), all_bytes),
            ("bin/empty".to_owned(), Vec::new())
        ]
    );
    Ok(())
}

async fn a_key_holds_a_value_or_a_log(s: &dyn StateStore) -> Result {
    s.append("k/log", b"line").await?;
    s.put("k/value", b"v", None).await?;
    assert_eq!(failed_op(s.get("k/log").await), ("GET", "k/log".into()));
    assert_eq!(
        failed_op(s.append("k/value", b"x").await),
        ("RPUSH", "k/value".into())
    );
    assert_eq!(
        failed_op(s.range("k/value", 0).await),
        ("LRANGE", "k/value".into())
    );
    assert_eq!(
        keys(s, "k/").await?,
        ["k/value"],
        "scan lists values, not logs"
    );
    s.put("k/log", b"replaced", None).await?;
    assert_eq!(s.get("k/log").await?, some(b"replaced"));
    Ok(())
}

// ---- Redis only ----

#[tokio::test]
async fn redis_prefixes_isolate_stores_on_one_server() -> Result {
    let server = shared_server();
    let a = redis_store(&server, "isolation-a").await;
    let b = redis_store(&server, "isolation-b").await;
    a.put("workers/1", b"a", None).await?;
    b.put("workers/1", b"b", None).await?;
    assert_eq!(a.get("workers/1").await?, some(b"a"));
    assert_eq!(b.put_if_absent("claim", b"b", None).await?, None);
    assert_eq!(a.put_if_absent("claim", b"a", None).await?, None);
    a.append("logs/1", b"a").await?;
    assert!(b.range("logs/1", 0).await?.is_empty());
    assert_eq!(
        a.scan("").await?,
        [
            ("claim".to_owned(), b"a".to_vec()),
            ("workers/1".to_owned(), b"a".to_vec())
        ]
    );
    assert!(a.delete("workers/1").await?);
    assert_eq!(b.get("workers/1").await?, some(b"b"));
    Ok(())
}

#[tokio::test]
async fn redis_claims_race_across_connections() -> Result {
    let server = shared_server();
    let prefix = unique_prefix("race");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let mut config = RedisConfig::new(server.url());
        config.key_prefix = prefix.clone();
        tasks.spawn(async move {
            let store = RedisState::connect(config).await?;
            let me = format!("scheduler-{i}");
            let holder = store
                .put_if_absent("inflight/x", me.as_bytes(), None)
                .await?;
            Ok::<_, StateError>(holder.is_none())
        });
    }
    let mut wins = 0;
    while let Some(joined) = tasks.join_next().await {
        wins += usize::from(joined.expect("claim task panicked")?);
    }
    assert_eq!(wins, 1);
    Ok(())
}

#[tokio::test]
async fn redis_gone_fails_fast_naming_the_op_then_recovers() -> Result {
    let mut server = RedisServer::start(&[]);
    let mut config = RedisConfig::new(server.url());
    config.key_prefix = unique_prefix("gone");
    config.max_attempts = 2;
    config.retry_base = Duration::from_millis(50);
    config.op_timeout = Duration::from_millis(500);
    let store = RedisState::connect(config).await?;
    store.put("builds/1", b"running", None).await?;

    server.stop();
    let get = bounded(store.get("builds/1")).await;
    assert_eq!(failed_op(get), ("GET", "builds/1".into()));
    let put = bounded(store.put("builds/1", b"x", None)).await;
    assert_eq!(failed_op(put), ("SET", "builds/1".into()));

    let server = RedisServer::start_on(server.port, &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.put("builds/1", b"again", None).await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not back yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the store did not reconnect to {}: {e}", server.url()),
        }
    }
    assert_eq!(store.get("builds/1").await?, some(b"again"));
    Ok(())
}

#[tokio::test]
async fn redis_unreachable_names_the_url_without_its_password() {
    let port = free_port();
    let mut config = RedisConfig::new(format!("redis://:secret@127.0.0.1:{port}/0"));
    config.max_attempts = 2;
    config.retry_base = Duration::from_millis(10);
    config.op_timeout = Duration::from_secs(1);
    assert!(!format!("{config:?}").contains("secret"));
    let err = RedisState::connect(config)
        .await
        .expect_err("nothing listens there");
    let shown = err.to_string();
    assert!(shown.contains(&format!("127.0.0.1:{port}")), "{shown}");
    assert!(shown.contains("PING"), "{shown}");
    assert!(!shown.contains("secret"), "{shown}");
    assert!(!format!("{err:?}").contains("secret"), "{err:?}");
}

#[tokio::test]
async fn redis_password_is_used_and_masked() -> Result {
    let server = RedisServer::start(&["--requirepass", "hunter2"]);
    let url = format!("redis://:hunter2@127.0.0.1:{}/0", server.port);
    let mut config = RedisConfig::new(&url);
    config.key_prefix = unique_prefix("auth");
    let store = RedisState::connect(config).await?;
    store.put("k", b"v", None).await?;
    assert_eq!(store.get("k").await?, some(b"v"));
    assert!(
        !store.describe().contains("hunter2"),
        "{}",
        store.describe()
    );
    assert!(!format!("{store:?}").contains("hunter2"));

    let wrong = format!("redis://:wrong-pass@127.0.0.1:{}/0", server.port);
    let err = RedisState::connect(RedisConfig::new(wrong))
        .await
        .expect_err("a wrong password is refused");
    let shown = err.to_string();
    assert!(
        shown.contains(&format!("127.0.0.1:{}", server.port)),
        "{shown}"
    );
    assert!(!shown.contains("wrong-pass"), "{shown}");
    Ok(())
}

#[tokio::test]
async fn redis_tls_url_is_refused_clearly() {
    let err = RedisState::connect(RedisConfig::new("rediss://:secret@cache.example:6380"))
        .await
        .expect_err("no TLS in this build");
    let shown = err.to_string();
    assert!(matches!(err, StateError::Config(_)), "{shown}");
    assert!(
        shown.contains("TLS") && !shown.contains("secret"),
        "{shown}"
    );
}

// ---- helpers ----

/// A key prefix no other test uses, with glob characters so that the
/// store's own prefix is matched literally too.
fn unique_prefix(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("conformance[{name}]*{n}:")
}

async fn redis_store(server: &RedisServer, name: &str) -> RedisState {
    let mut config = RedisConfig::new(server.url());
    config.key_prefix = unique_prefix(name);
    RedisState::connect(config)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test server: {e}"))
}

/// The server the suite's cases share; it stops when the last case using
/// it ends.
fn shared_server() -> Arc<RedisServer> {
    static SHARED: Mutex<Weak<RedisServer>> = Mutex::new(Weak::new());
    let mut slot = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(server) = slot.upgrade() {
        return server;
    }
    let server = Arc::new(RedisServer::start(&[]));
    *slot = Arc::downgrade(&server);
    server
}

fn free_port() -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0)).expect("binding a loopback port");
    listener.local_addr().expect("its address").port()
}

/// A `redis-server` on a loopback port, without persistence, killed on drop.
struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server on a free port (trying a few, should another process
    /// take the one picked).
    fn start(extra: &[&str]) -> Self {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(free_port(), extra) {
                Ok(server) => return server,
                Err(e) => last = e,
            }
        }
        panic!("{last}");
    }

    fn start_on(port: u16, extra: &[&str]) -> Self {
        Self::try_start(port, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start(port: u16, extra: &[&str]) -> std::result::Result<Self, String> {
        let binary = redis_server_binary();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = std::fs::File::create(dir.path().join("redis.log")).expect("a log file");
        let child = Command::new(&binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let mut server = Self {
            child: Some(child),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(status) = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let log = std::fs::read_to_string(server.dir.path().join("redis.log"))
                    .unwrap_or_default();
                server.child = None;
                return Err(format!(
                    "redis-server on port {port} exited ({status}):\n{log}"
                ));
            }
            if answers_ping(port) {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "redis-server on port {port} did not answer PING in 15 s"
        ))
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn answers_ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 64];
    // Any reply means the server is up: +PONG, or -NOAUTH with a password.
    conn.write_all(b"PING\r\n").is_ok() && conn.read(&mut reply).is_ok_and(|n| n > 0)
}

/// `STRATA_REDIS_SERVER`, or `redis-server` on the `PATH`.
fn redis_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("STRATA_REDIS_SERVER") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "STRATA_REDIS_SERVER={} is not a file: point it at a redis-server binary",
            path.display()
        );
        return path;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("redis-server"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "redis-server not found on PATH: the Redis conformance tests need a real \
                 server. Install it (Debian: apt-get install redis-server) or set \
                 STRATA_REDIS_SERVER to its path."
            )
        })
}
