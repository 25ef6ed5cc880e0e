//! The scheduler's lifecycle as Kubernetes sees it: SIGTERM during a build
//! drains it (not ready, gRPC health NOT_SERVING, new builds refused with
//! UNAVAILABLE, the running build finishes, the process exits 0), and
//! `/readyz` follows the shared state: 503 while Redis is down, 200 again
//! once it is back.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use strata_proto::build::v1 as pb;
use strata_tests::base_image::push_busybox;
use strata_tests::procs::{SchedulerProc, WorkerProc, http_get, wait_ready};
use strata_tests::registry::TestRegistry;
use strata_tests::services::{RedisServer, S3Server, scheduler_args};
use tonic_health::pb::health_check_response::ServingStatus;

/// Polls `check` every 200 ms for up to 30 s; panics with `what` and the
/// logs when it never holds.
fn wait_until(what: &str, logs: impl Fn() -> String, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within 30 s\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The gRPC health status of `service` ("" is the whole server).
async fn health(url: &str, service: &str) -> i32 {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("url")
        .connect()
        .await
        .expect("connect to the scheduler");
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .unwrap_or_else(|e| panic!("health check of {service:?}: {e}"))
        .into_inner()
        .status
}

fn all_logs(client: &std::path::Path, sched: &SchedulerProc, worker: &WorkerProc) -> String {
    format!(
        "--- client\n{}\n{}\n{}",
        std::fs::read_to_string(client).unwrap_or_default(),
        sched.proc.log(),
        worker.proc.log()
    )
}

const BUILD_SERVICE: &str = "strata.build.v1.BuildService";

#[test]
fn sigterm_drains_the_scheduler_and_lets_the_running_build_finish() {
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let dir = tempfile::tempdir().expect("dir");
    let mut sched = SchedulerProc::start(dir.path(), &[], &[]);
    let url = format!("http://127.0.0.1:{}", sched.port);
    let worker = WorkerProc::start(dir.path(), "worker-1", &url, &[], &[]);
    wait_ready(worker.metrics_port, "/readyz", "worker registered");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for service in ["", BUILD_SERVICE] {
        assert_eq!(
            rt.block_on(health(&url, service)),
            ServingStatus::Serving as i32,
            "before SIGTERM, health of {service:?}"
        );
    }

    // A build whose one step runs long enough to SIGTERM the scheduler in
    // the middle of it.
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).expect("ctx");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nRUN sleep 8 && echo drained > /d\n"),
    )
    .expect("Dockerfile");
    let client_log = dir.path().join("client.log");
    let mut build = Command::new(strata_tests::bin("strata"))
        .args(["--scheduler", &url, "build", "--progress", "plain"])
        .arg(&ctx)
        .stdout(std::fs::File::create(&client_log).expect("client log"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("strata build");
    let logs = || all_logs(&client_log, &sched, &worker);
    wait_until("the worker runs the step", logs, || {
        http_get(worker.metrics_port, "/metrics")
            .1
            .contains("strata_worker_jobs_running 1")
    });

    sched.proc.signal("TERM");
    wait_until("/readyz answers 503 after SIGTERM", logs, || {
        http_get(sched.metrics_port, "/readyz").0 == 503
    });
    assert_eq!(
        http_get(sched.metrics_port, "/healthz").0,
        200,
        "a draining scheduler is alive"
    );
    for service in ["", BUILD_SERVICE] {
        assert_eq!(
            rt.block_on(health(&url, service)),
            ServingStatus::NotServing as i32,
            "after SIGTERM, gRPC health of {service:?}\n{}",
            logs()
        );
    }

    // A new build is refused with UNAVAILABLE (what clients retry
    // elsewhere), saying why.
    let refused = rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect");
        pb::build_service_client::BuildServiceClient::new(channel)
            .start_build(pb::BuildRequest {
                dockerfile: Some(pb::build_request::Dockerfile::DockerfileContent(
                    format!("FROM {base}\n").into_bytes(),
                )),
                dockerfile_path: "Dockerfile".into(),
                ..Default::default()
            })
            .await
    });
    let status = refused.expect_err("a draining scheduler accepted a build");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("shutting down"),
        "the refusal says why: {:?}",
        status.message()
    );
    // The CLI shows it too.
    let o = Command::new(strata_tests::bin("strata"))
        .args(["--scheduler", &url, "build", "--progress", "plain"])
        .arg(&ctx)
        .output()
        .expect("strata build");
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && said.contains("shutting down"),
        "a build started during the drain: {}{said}",
        String::from_utf8_lossy(&o.stdout)
    );

    // The running build completes, then the scheduler leaves cleanly.
    let deadline = Instant::now() + Duration::from_secs(60);
    let finished = loop {
        if let Some(s) = build.try_wait().expect("wait for strata build") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the build never finished\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(finished.success(), "the running build failed\n{}", logs());
    let exit = sched.proc.wait_exit(Duration::from_secs(30));
    assert!(
        exit.is_some_and(|s| s.success()),
        "the scheduler after its drain: {exit:?}\n{}",
        all_logs(&client_log, &sched, &worker)
    );
}

#[test]
fn readyz_follows_the_shared_state() {
    let mut redis = RedisServer::start();
    let s3 = S3Server::start("ready");
    let dir = tempfile::tempdir().expect("dir");
    let env = s3.process_env();
    let sched = SchedulerProc::start(dir.path(), &scheduler_args(&redis, &s3, "r/"), &env);
    let logs = || sched.proc.log();
    wait_until("/readyz 200 with Redis up", logs, || {
        http_get(sched.metrics_port, "/readyz").0 == 200
    });

    redis.stop();
    wait_until("/readyz 503 while Redis is down", logs, || {
        http_get(sched.metrics_port, "/readyz").0 == 503
    });
    assert_eq!(
        http_get(sched.metrics_port, "/healthz").0,
        200,
        "a scheduler whose Redis is down is alive (restarting it would not help)"
    );

    // Redis back on the same port (empty, as after a restart without
    // persistence).
    let port: u16 = redis
        .url
        .trim_start_matches("redis://127.0.0.1:")
        .trim_end_matches("/0")
        .parse()
        .expect("port in the Redis URL");
    let data = tempfile::tempdir().expect("redis dir");
    let mut again = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server again");
    let back = Instant::now() + Duration::from_secs(30);
    let mut ready = false;
    while Instant::now() < back && !ready {
        ready = http_get(sched.metrics_port, "/readyz").0 == 200;
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = again.kill();
    let _ = again.wait();
    assert!(
        ready,
        "/readyz not 200 again once Redis is back\n{}",
        logs()
    );
}
