//! What [`S3Blobs`] does on the wire, seen by a TCP proxy between it and a
//! real S3 server (s3s-fs, as in `conformance.rs`): a large blob's parts
//! go up at the same time, and a server that answers 503 for a while is
//! retried with backoff until it answers, or until the attempts run out,
//! with a retryable error that says what the server said. (The proxy
//! refuses the first requests on fresh connections: a put's first request
//! is its HEAD, so that is the request retried; the SDK's retry layer is
//! the same for every operation.)

#[allow(dead_code)] // the helpers conformance.rs uses too
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use strata_store::{BlobStore as _, S3Blobs, S3Config, sha256_of};
use support::{LARGE, S3sFs, noise, read_all};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy saw.
#[derive(Default)]
struct Seen {
    /// Requests still to be refused with 503.
    refuse: AtomicUsize,
    /// Requests refused.
    refused: AtomicUsize,
    /// Connections open now, and the most open at once.
    open: AtomicUsize,
    max_open: AtomicUsize,
}

/// A proxy to `upstream` on a free loopback port: the first `refuse`
/// requests are read whole and answered `503 SlowDown` (the connection
/// then closed); every later connection is piped through, each piece of
/// the server's answers held back `lag` (a far-away server: on loopback
/// a part lands before the next one is even read, and a lone connection
/// carries them all however many may be in flight).
async fn proxy(upstream: String, refuse: usize, lag: Duration) -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Seen::default());
    seen.refuse.store(refuse, Ordering::SeqCst);
    let s = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let (s, upstream) = (Arc::clone(&s), upstream.clone());
            tokio::spawn(async move {
                let open = s.open.fetch_add(1, Ordering::SeqCst) + 1;
                s.max_open.fetch_max(open, Ordering::SeqCst);
                let refusing = s
                    .refuse
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if refusing {
                    read_request(&mut client).await;
                    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
                    let answer = format!(
                        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    // Counted before the client can read the answer.
                    s.refused.fetch_add(1, Ordering::SeqCst);
                    let _ = client.write_all(answer.as_bytes()).await;
                    let _ = client.shutdown().await;
                } else if let Ok(server) = TcpStream::connect(&upstream).await {
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_server, mut to_server) = server.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
                        let _ = to_server.shutdown().await;
                    });
                    let mut chunk = vec![0u8; 64 << 10];
                    while let Ok(n) = from_server.read(&mut chunk).await {
                        if n == 0 {
                            break;
                        }
                        tokio::time::sleep(lag).await;
                        if to_client.write_all(&chunk[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = to_client.shutdown().await;
                    up.abort();
                }
                s.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (endpoint, seen)
}

/// Reads one HTTP request: its head, then `Content-Length` bytes of body.
async fn read_request(conn: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf.len() - head_end;
    while body < length {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body += n,
        }
    }
}

fn through(server: &S3sFs, endpoint: &str, max_attempts: u32) -> S3Blobs {
    S3Blobs::new(S3Config {
        endpoint: Some(endpoint.to_string()),
        max_attempts,
        ..server.config()
    })
    .expect("client")
}

fn upstream(server: &S3sFs) -> String {
    server.endpoint().trim_start_matches("http://").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_blobs_parts_go_up_at_the_same_time() {
    let server = S3sFs::start();
    let (endpoint, seen) = proxy(upstream(&server), 0, Duration::from_millis(200)).await;
    let store = through(&server, &endpoint, 2);
    let data = noise(LARGE, 11);
    let digest = sha256_of(&data);
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("layer");
    std::fs::write(&src, &data).expect("write");
    store.put_file(&digest, &src).await.expect("put");
    // One connection carries requests one after another; parts sent at
    // the same time need one each (and the store sends two at once).
    assert!(
        seen.max_open.load(Ordering::SeqCst) >= 2,
        "the parts went up one at a time ({} connection open at most)",
        seen.max_open.load(Ordering::SeqCst)
    );
    // Read back past the proxy, which would hold back every piece.
    let direct = S3Blobs::new(server.config()).expect("client");
    let back = read_all(&direct, &digest, 0).await.expect("get");
    assert!(back == data, "the blob read back differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_whose_first_requests_get_503_is_retried_until_the_server_answers() {
    let server = S3sFs::start();
    let (endpoint, seen) = proxy(upstream(&server), 2, Duration::ZERO).await;
    let store = through(&server, &endpoint, 4);
    let data = b"written once the server is back".to_vec();
    let digest = store
        .put_bytes(bytes::Bytes::from(data.clone()))
        .await
        .expect("put after two 503s");
    assert_eq!(seen.refused.load(Ordering::SeqCst), 2);
    let back = read_all(&store, &digest, 0).await.expect("get");
    assert_eq!(back, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_503_past_the_attempts_is_a_retryable_error_saying_so() {
    let server = S3sFs::start();
    let (endpoint, seen) = proxy(upstream(&server), 100, Duration::ZERO).await;
    let store = through(&server, &endpoint, 2);
    let err = store
        .put_bytes(bytes::Bytes::from_static(b"never stored"))
        .await
        .unwrap_err();
    assert_eq!(
        seen.refused.load(Ordering::SeqCst),
        2,
        "two attempts, no more"
    );
    assert!(err.is_retryable(), "{err}");
    let message = err.to_string();
    assert!(message.contains("503"), "{message}");
    assert!(message.contains(&endpoint), "{message}");
}
