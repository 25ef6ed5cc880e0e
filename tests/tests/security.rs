//! Tokens and TLS with the real binaries on loopback:
//!
//! - client and worker tokens are kept apart: no token or a wrong one is
//!   UNAUTHENTICATED, a client token on the worker API PERMISSION_DENIED;
//!   a worker with a client token never registers; a client's token fixes
//!   its namespace; a rotated token works without a restart;
//! - a build over TLS, the workers on mTLS, certificates made by rcgen at
//!   test time; a worker without a client certificate is refused, a client
//!   that does not trust the scheduler's certificate fails clearly;
//! - oversized and malformed gRPC messages are refused, the scheduler
//!   stays up;
//! - no token in any process's log at trace level;
//! - a worker picking up its rewritten token file;
//! - a scheduler with the worker API left open, or a token in both sets,
//!   refusing to start.
//!
//! Tenant isolation is in `tenants.rs`, a pinned public key in
//! `tls_pin.rs`; their shared helpers in `strata_tests::secure`.

use std::time::{Duration, Instant};
use strata_proto::build::v1 as pb;
use strata_proto::build::v1::build_service_client::BuildServiceClient;
use strata_proto::worker::v1 as wire;
use strata_proto::worker::v1::blob_service_client::BlobServiceClient;
use strata_tests::base_image::push_busybox;
use strata_tests::procs::{SchedulerProc, WorkerProc, http_get, wait_ready};
use strata_tests::registry::TestRegistry;
use strata_tests::secure::{context, pki, strata, tenant_farm, text, with_token};
use tonic::Code;

/// The code of ListWorkers (client API) and StatBlobs (worker API) calls.
async fn codes(url: String, token: Option<&str>) -> (Code, Code) {
    let channel = tonic::transport::Endpoint::from_shared(url)
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut builds = BuildServiceClient::new(channel.clone());
    let mut blobs = BlobServiceClient::new(channel);
    let client = builds
        .list_workers(with_token(pb::ListWorkersRequest::default(), token))
        .await
        .map_or_else(|s| s.code(), |_| Code::Ok);
    let worker = blobs
        .stat_blobs(with_token(wire::StatBlobsRequest::default(), token))
        .await
        .map_or_else(|s| s.code(), |_| Code::Ok);
    (client, worker)
}

#[test]
fn tokens_keep_clients_and_workers_apart_and_rotate() {
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let dir = tempfile::tempdir().expect("dir");
    let clients = dir.path().join("client-tokens");
    std::fs::create_dir(&clients).expect("tokens dir");
    std::fs::write(clients.join("team-a"), "client-secret-a\n").expect("token");
    let workers = dir.path().join("worker-tokens");
    std::fs::write(&workers, "pool worker-secret\n").expect("tokens");
    let worker_token = dir.path().join("worker.token");
    std::fs::write(&worker_token, "worker-secret").expect("token");
    let wrong_token = dir.path().join("wrong.token");
    std::fs::write(&wrong_token, "client-secret-a").expect("token");

    let sched = SchedulerProc::start(
        dir.path(),
        &[
            "--client-tokens".into(),
            clients.display().to_string(),
            "--worker-tokens".into(),
            workers.display().to_string(),
        ],
        &[],
    );
    let url = format!("http://127.0.0.1:{}", sched.port);
    let worker = WorkerProc::start(
        dir.path(),
        "worker-1",
        &url,
        &["--token-file".into(), worker_token.display().to_string()],
        &[],
    );
    wait_ready(worker.metrics_port, "/readyz", "the worker with its token");

    // A worker holding a client token is refused, and says why.
    let mut impostor = WorkerProc::start(
        dir.path(),
        "impostor",
        &url,
        &["--token-file".into(), wrong_token.display().to_string()],
        &[],
    );
    impostor
        .proc
        .wait_log("a client token cannot use the worker API");
    assert_eq!(http_get(impostor.metrics_port, "/readyz").0, 503);

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    assert_eq!(
        rt.block_on(codes(url.clone(), None)),
        (Code::Unauthenticated, Code::Unauthenticated)
    );
    assert_eq!(
        rt.block_on(codes(url.clone(), Some("guess"))),
        (Code::Unauthenticated, Code::Unauthenticated)
    );
    assert_eq!(
        rt.block_on(codes(url.clone(), Some("client-secret-a"))),
        (Code::Ok, Code::PermissionDenied)
    );
    assert_eq!(
        rt.block_on(codes(url.clone(), Some("worker-secret"))),
        (Code::PermissionDenied, Code::Ok)
    );

    // The CLI: no token, then its tenant's token; another namespace is
    // not its to use.
    let ctx = context(&dir.path().join("ctx"), &base);
    let o = strata(&url, &[], &["build", "--progress", "plain", &ctx]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("STRATA_TOKEN"), "{}", text(&o));
    let o = strata(
        &url,
        &[("STRATA_TOKEN", "client-secret-a")],
        &["build", "--progress", "plain", &ctx],
    );
    assert!(
        o.status.success(),
        "{}\n{}\n{}",
        text(&o),
        sched.proc.log(),
        worker.proc.log()
    );
    let o = strata(
        &url,
        &[("STRATA_TOKEN", "client-secret-a")],
        &["build", "--namespace", "team-b", &ctx],
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("cannot use namespace"), "{}", text(&o));

    // Rotation: the Secret changes, the scheduler keeps running.
    std::fs::write(clients.join("team-a"), "client-secret-a2\n").expect("rotate");
    let deadline = Instant::now() + Duration::from_secs(20);
    while rt.block_on(codes(url.clone(), Some("client-secret-a2"))).0 != Code::Ok {
        assert!(
            Instant::now() < deadline,
            "the rotated token was never accepted"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        rt.block_on(codes(url.clone(), Some("client-secret-a"))).0,
        Code::Unauthenticated
    );
}

#[test]
fn build_over_tls_with_workers_on_mtls() {
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let dir = tempfile::tempdir().expect("dir");
    let p = pki();
    let file = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).expect("pem");
        path.display().to_string()
    };
    let (ca, cert, key) = (
        file("ca.pem", &p.ca),
        file("server.pem", &p.server_cert),
        file("server.key", &p.server_key),
    );
    let (wcert, wkey) = (
        file("worker.pem", &p.client_cert),
        file("worker.key", &p.client_key),
    );
    let sched = SchedulerProc::start(
        dir.path(),
        &[
            "--tls-cert".into(),
            cert,
            "--tls-key".into(),
            key,
            "--tls-client-ca".into(),
            ca.clone(),
        ],
        &[],
    );
    let url = format!("https://127.0.0.1:{}", sched.port);
    let worker = WorkerProc::start(
        dir.path(),
        "worker-1",
        &url,
        &[
            "--ca-cert".into(),
            ca.clone(),
            "--tls-cert".into(),
            wcert,
            "--tls-key".into(),
            wkey,
        ],
        &[],
    );
    wait_ready(worker.metrics_port, "/readyz", "the worker on mTLS");

    // Without a client certificate the worker API is closed.
    let mut bare = WorkerProc::start(
        dir.path(),
        "no-cert",
        &url,
        &["--ca-cert".into(), ca.clone()],
        &[],
    );
    bare.proc.wait_log("needs a TLS client certificate");

    let ctx = context(&dir.path().join("ctx"), &base);
    let o = strata(
        &url,
        &[("STRATA_CA_CERT", &ca)],
        &["build", "--progress", "plain", "-t", "tls/app:1", &ctx],
    );
    assert!(
        o.status.success(),
        "{}\n{}\n{}",
        text(&o),
        sched.proc.log(),
        worker.proc.log()
    );
    assert!(text(&o).contains("RUN echo secured"), "{}", text(&o));

    // A client that does not trust the certificate stops at the handshake.
    let o = strata(&url, &[], &["images"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).to_lowercase().contains("certificate"),
        "{}",
        text(&o)
    );
}

/// Sends raw bytes as a gRPC message: what a broken or hostile client
/// could put on the wire.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut as _;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf as _;
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

#[test]
fn oversized_and_malformed_messages_are_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let sched = SchedulerProc::start(dir.path(), &[], &[]);
    let url = format!("http://127.0.0.1:{}", sched.port);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (big, garbage) = rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(url)
            .expect("url")
            .connect()
            .await
            .expect("connect");
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/strata.build.v1.BuildService/StartBuild",
        );
        let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(64 << 20);
        grpc.ready().await.expect("ready");
        // 20 MiB: over the 16 MiB every strata service accepts.
        let big = grpc
            .unary(
                tonic::Request::new(vec![0u8; 20 << 20]),
                path.clone(),
                RawCodec,
            )
            .await
            .expect_err("a 20 MiB message was accepted");
        grpc.ready().await.expect("ready");
        // Not protobuf: field 15 with a truncated length-delimited value.
        let garbage = grpc
            .unary(
                tonic::Request::new(vec![0x7a, 0xff, 0xff, 0xff, 0x0f, 0x01]),
                path,
                RawCodec,
            )
            .await
            .expect_err("garbage was accepted as a BuildRequest");
        (big, garbage)
    });
    assert_eq!(big.code(), Code::OutOfRange, "{big:?}");
    assert!(
        big.message().contains("message length too large"),
        "{big:?}"
    );
    assert!(
        matches!(garbage.code(), Code::Internal | Code::InvalidArgument),
        "{garbage:?}"
    );
    assert!(garbage.message().contains("decode"), "{garbage:?}");
    // The scheduler is still up and answering.
    let (status, _) = http_get(sched.metrics_port, "/healthz");
    assert_eq!(status, 200);
}

#[test]
fn tokens_never_reach_the_logs_even_at_trace_level() {
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let dir = tempfile::tempdir().expect("dir");
    let trace = [("STRATA_LOG".to_string(), "trace".to_string())];
    let (sched, worker, url) =
        tenant_farm(dir.path(), &[("team-a", "cli-secret-7f3a9c01\n")], &trace);
    let ctx = context(&dir.path().join("ctx"), &base);
    let mut out = String::new();
    // The CLI logs only when it exports traces: an endpoint where nothing
    // listens turns its logging on.
    let otlp = format!("http://127.0.0.1:{}", strata_tests::registry::free_port());
    let mut run = |env: &[(&str, &str)], args: &[&str]| {
        let mut env = env.to_vec();
        env.push(("STRATA_LOG", "trace"));
        env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp));
        let o = strata(&url, &env, args);
        out.push_str(&text(&o));
        o
    };
    let o = run(
        &[("STRATA_TOKEN", "cli-secret-7f3a9c01")],
        &["build", "--progress", "plain", "-t", "team-a/app:1", &ctx],
    );
    assert!(o.status.success(), "{}", text(&o));
    // Refused calls: a wrong token, a worker token on the client API.
    assert!(
        !run(&[("STRATA_TOKEN", "cli-secret-wrong-55aa")], &["images"])
            .status
            .success()
    );
    assert!(
        !run(&[("STRATA_TOKEN", "wrk-secret-b81d24e6")], &["images"])
            .status
            .success()
    );
    // A rotated token, picked up by the scheduler's re-read.
    std::fs::write(
        dir.path().join("client-tokens/team-a"),
        "cli-secret-rotated-3e9d",
    )
    .expect("rotate");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !run(&[("STRATA_TOKEN", "cli-secret-rotated-3e9d")], &["images"])
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "the rotated token was never accepted"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let logs = [
        ("the scheduler", sched.proc.log()),
        ("the worker", worker.proc.log()),
        ("the client", out),
    ];
    for (who, log) in &logs {
        // Trace level really was on, so the check means something.
        assert!(log.contains("TRACE"), "{who} logged no TRACE line:\n{log}");
        for secret in [
            "cli-secret-7f3a9c01",
            "cli-secret-wrong-55aa",
            "wrk-secret-b81d24e6",
            "cli-secret-rotated-3e9d",
        ] {
            if let Some(at) = log.find(secret) {
                let from = log[..at].rfind('\n').map_or(0, |n| n + 1);
                let to = log[at..].find('\n').map_or(log.len(), |n| at + n);
                panic!("{who} logged a token: {}", &log[from..to]);
            }
        }
    }
}

/// A worker whose token file is rewritten (a rotated Secret) registers
/// with the new token without a restart.
#[test]
fn a_worker_picks_up_its_rotated_token_file() {
    let dir = tempfile::tempdir().expect("dir");
    let (sched, _worker, url) = tenant_farm(dir.path(), &[("team-a", "tok-a")], &[]);
    // The farm's worker tokens move to a new one; this worker still has
    // the old one, then its file is rewritten.
    std::fs::write(
        dir.path().join("worker-tokens"),
        "pool-2 wrk-rotated-19c4\n",
    )
    .expect("rotate the farm's tokens");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let deadline = Instant::now() + Duration::from_secs(20);
    while rt
        .block_on(codes(url.clone(), Some("wrk-secret-b81d24e6")))
        .1
        != Code::Unauthenticated
    {
        assert!(
            Instant::now() < deadline,
            "the old worker token is still accepted"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let token = dir.path().join("worker-2.token");
    std::fs::write(&token, "wrk-secret-b81d24e6\n").expect("token");
    let mut late = WorkerProc::start(
        dir.path(),
        "worker-2",
        &url,
        &["--token-file".into(), token.display().to_string()],
        &[],
    );
    late.proc.wait_log("the token is not a worker token");
    assert_eq!(http_get(late.metrics_port, "/readyz").0, 503);
    std::fs::write(&token, "wrk-rotated-19c4\n").expect("rotate the worker's token");
    wait_ready(
        late.metrics_port,
        "/readyz",
        "the worker after its token file changed",
    );
    let workers = rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect");
        BuildServiceClient::new(channel)
            .list_workers(with_token(pb::ListWorkersRequest::default(), Some("tok-a")))
            .await
            .expect("list workers")
            .into_inner()
            .workers
    });
    assert!(
        workers.iter().any(|w| w.worker_id == "worker-2"),
        "{workers:?}\n{}",
        sched.proc.log()
    );
}

/// Half-configured auth does not start: client tokens with the worker API
/// open, or one token in both sets.
#[test]
fn a_scheduler_with_the_worker_api_open_or_a_shared_token_refuses_to_start() {
    let dir = tempfile::tempdir().expect("dir");
    let clients = dir.path().join("clients");
    std::fs::write(&clients, "team-a shared-3f1c\n").expect("tokens");
    let workers = dir.path().join("workers");
    std::fs::write(&workers, "pool shared-3f1c\n").expect("tokens");
    let state = dir.path().join("state");
    let refused = |name: &str, flags: &[&str], needle: &str| {
        let mut args = vec![
            "--listen".to_string(),
            format!("127.0.0.1:{}", strata_tests::registry::free_port()),
            "--state".to_string(),
            state.display().to_string(),
        ];
        args.extend(flags.iter().map(|f| f.to_string()));
        let mut p =
            strata_tests::procs::Proc::start(dir.path(), name, "strata-scheduler", &args, &[]);
        let status = p.wait_exit(Duration::from_secs(30));
        assert!(
            status.is_some_and(|s| !s.success()),
            "{name}: {status:?}\n{}",
            p.log()
        );
        assert!(p.log().contains(needle), "{name}:\n{}", p.log());
        assert!(!p.log().contains("shared-3f1c"), "{name}:\n{}", p.log());
    };
    let (c, w) = (clients.display().to_string(), workers.display().to_string());
    refused(
        "client-tokens-only",
        &["--client-tokens", &c],
        "--client-tokens without --worker-tokens",
    );
    refused(
        "shared-token",
        &["--client-tokens", &c, "--worker-tokens", &w],
        "client token \"team-a\" (",
    );
}
