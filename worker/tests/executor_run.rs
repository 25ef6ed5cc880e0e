//! The executor's life cycle with real runc: output, exit codes, signals,
//! cancel, timeout, cleanup.

mod executor_support;

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use executor_support::{
    bundles, executor, rootfs, run, run_with, runc_containers, sh, stdout_of, step_id,
};
use strata_worker::executor::{ExecError, Executor, MAX_CHUNK_BYTES, Stream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn output_is_forwarded_in_order_per_stream() {
    let (exec, _state) = executor().await;
    let root = rootfs();
    let script = "for i in 1 2 3; do echo out$i; echo err$i >&2; done";
    let (result, out) = run(&exec, &step_id("output"), sh(root.path(), script)).await;
    assert!(result.unwrap().success());
    assert_eq!(out.stdout, "out1\nout2\nout3\n");
    assert_eq!(out.stderr, "err1\nerr2\nerr3\n");
    assert!(bundles(&exec).is_empty(), "bundle left behind");
}

#[tokio::test]
async fn large_output_arrives_whole_in_bounded_chunks() {
    let (exec, _state) = executor().await;
    let root = rootfs();
    let (result, out) = run(
        &exec,
        &step_id("large"),
        sh(root.path(), "head -c 200000 /dev/zero | tr '\\0' x"),
    )
    .await;
    assert!(result.unwrap().success());
    assert_eq!(out.stdout.len(), 200_000);
    assert!(out.stdout.bytes().all(|b| b == b'x'));
    assert!(out.chunks.iter().all(|c| c.data.len() <= MAX_CHUNK_BYTES));
    assert!(out.chunks.iter().all(|c| c.stream == Stream::Stdout));
    let times: Vec<_> = out.chunks.iter().map(|c| c.timestamp).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "timestamps go back");
}

#[tokio::test]
async fn exit_code_is_reported() {
    let (exec, _state) = executor().await;
    let root = rootfs();
    let (result, out) = run(
        &exec,
        &step_id("exit3"),
        sh(root.path(), "echo bye; exit 3"),
    )
    .await;
    let status = result.unwrap();
    assert_eq!((status.code, status.signal), (Some(3), None));
    assert_eq!(status.docker_exit_code(), 3);
    assert_eq!(out.stdout, "bye\n");
}

#[tokio::test]
async fn death_by_signal_is_reported() {
    let (exec, _state) = executor().await;
    let root = rootfs();
    // PID 1 of a namespace ignores signals sent from inside it, so this
    // kills a child shell whose status the step returns; runc, like Docker,
    // reports 128+9 and the executor reads it as SIGKILL.
    let (result, _) = run(
        &exec,
        &step_id("sig"),
        sh(root.path(), "sh -c 'kill -9 $$'; exit $?"),
    )
    .await;
    let status = result.unwrap();
    assert_eq!((status.code, status.signal), (None, Some(9)));
    assert_eq!(status.docker_exit_code(), 137);

    // From outside, SIGKILL (OOM killer, an operator) kills PID 1 itself.
    let id = step_id("sigkill");
    let (tx, mut rx) = mpsc::channel(16);
    let step = {
        let (exec, id) = (exec.clone(), id.clone());
        let spec = sh(root.path(), "echo ready; sleep 100");
        tokio::spawn(async move { exec.run(&id, spec, tx, CancellationToken::new()).await })
    };
    assert_eq!(rx.recv().await.expect("no output").data, b"ready\n");
    let killed = Command::new(exec.runc_binary())
        .arg("--root")
        .arg(exec.runc_root())
        .args(["kill", &id, "KILL"])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = step.await.unwrap().unwrap();
    assert_eq!((status.code, status.signal), (None, Some(9)));
    assert!(runc_containers(&exec).is_empty());
}

#[tokio::test]
async fn a_missing_executable_is_a_start_failure() {
    let (exec, _state) = executor().await;
    let root = rootfs();
    let mut spec = sh(root.path(), "");
    spec.argv = vec!["/no/such/tool".into()];
    let (result, _) = run(&exec, &step_id("noexec"), spec).await;
    match result {
        Err(ExecError::StartFailed { message, .. }) => {
            assert!(message.contains("/no/such/tool"), "{message}")
        }
        other => panic!("expected StartFailed, got {other:?}"),
    }
    assert!(bundles(&exec).is_empty());
}

#[tokio::test]
async fn an_unknown_user_is_reported_like_docker() {
    let (exec, _state) = executor().await;
    let root = rootfs();
    let mut spec = sh(root.path(), "true");
    spec.user = "ghost".into();
    let err = run(&exec, &step_id("ghost"), spec).await.0.unwrap_err();
    assert!(matches!(err, ExecError::User { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("unable to find user ghost: no matching entries in passwd file"),
        "{err}"
    );
}

#[tokio::test]
async fn cancel_kills_the_container_and_cleans_up() {
    let (exec, _state) = executor().await;
    let root = rootfs();
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(16);
    let id = step_id("cancel");
    let step = {
        let (exec, cancel) = (exec.clone(), cancel.clone());
        let spec = sh(root.path(), "echo ready; sleep 100");
        tokio::spawn(async move { exec.run(&id, spec, tx, cancel).await })
    };
    let first = rx.recv().await.expect("the step printed nothing");
    assert_eq!(first.data, b"ready\n");
    let cancelled_at = Instant::now();
    cancel.cancel();
    let result = step.await.unwrap();
    assert!(
        matches!(result, Err(ExecError::Cancelled { .. })),
        "{result:?}"
    );
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(5),
        "cancel took {:?}",
        cancelled_at.elapsed()
    );
    assert!(runc_containers(&exec).is_empty(), "container left behind");
    assert!(bundles(&exec).is_empty(), "bundle left behind");
}

#[tokio::test]
async fn timeout_kills_the_container() {
    let (exec, _state) = executor().await;
    let root = rootfs();
    let mut spec = sh(root.path(), "sleep 100");
    spec.timeout = Some(Duration::from_millis(500));
    let started = Instant::now();
    let (result, _) = run(&exec, &step_id("timeout"), spec).await;
    assert!(
        matches!(result, Err(ExecError::TimedOut { .. })),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(runc_containers(&exec).is_empty());
    assert!(bundles(&exec).is_empty());
}

#[tokio::test]
async fn dropping_the_run_future_still_kills_the_container() {
    let (exec, _state) = executor().await;
    let root = rootfs();
    let (tx, _rx) = mpsc::channel(16);
    let spec = sh(root.path(), "sleep 100");
    let id = step_id("drop");
    let run = exec.run(&id, spec, tx, CancellationToken::new());
    assert!(
        tokio::time::timeout(Duration::from_secs(2), run)
            .await
            .is_err()
    );
    tokio::time::timeout(Duration::from_secs(15), exec.wait_idle())
        .await
        .expect("the dropped step did not clean up");
    assert!(runc_containers(&exec).is_empty());
    assert!(bundles(&exec).is_empty());
}

#[tokio::test]
async fn cancel_before_start_is_prompt() {
    let (exec, _state) = executor().await;
    let root = rootfs();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let (result, _) = run_with(
        &exec,
        &step_id("precancel"),
        sh(root.path(), "sleep 100"),
        cancel,
    )
    .await;
    assert!(
        matches!(result, Err(ExecError::Cancelled { .. })),
        "{result:?}"
    );
    assert!(runc_containers(&exec).is_empty());
    assert!(bundles(&exec).is_empty());
}

#[tokio::test]
async fn steps_run_concurrently() {
    let (exec, _state) = executor().await;
    let root = rootfs();
    let (id_a, id_b) = (step_id("conc-a"), step_id("conc-b"));
    let a = stdout_of(&exec, &id_a, sh(root.path(), "sleep 1; echo a"));
    let b = stdout_of(&exec, &id_b, sh(root.path(), "sleep 1; echo b"));
    let (a, b) = tokio::join!(a, b);
    assert_eq!((a.as_str(), b.as_str()), ("a\n", "b\n"));
}

#[tokio::test]
async fn leftovers_of_a_crashed_worker_are_removed() {
    let (exec, _state) = executor().await;
    let root = rootfs();
    // A container and a bundle as a crashed worker leaves them.
    let id = step_id("crashed");
    let bundle = exec.bundles_dir().join(&id);
    fs::create_dir(&bundle).unwrap();
    let status = Command::new(exec.runc_binary())
        .current_dir(&bundle)
        .args(["spec"])
        .status()
        .unwrap();
    assert!(status.success());
    let config = fs::read_to_string(bundle.join("config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&config).unwrap();
    config["root"] = serde_json::json!({ "path": root.path(), "readonly": true });
    config["process"]["terminal"] = false.into();
    config["process"]["args"] = serde_json::json!(["/bin/sleep", "100"]);
    fs::write(bundle.join("config.json"), config.to_string()).unwrap();
    let created = Command::new(exec.runc_binary())
        .arg("--root")
        .arg(exec.runc_root())
        .args(["run", "--detach", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(created.success(), "could not create the leftover container");
    assert_eq!(runc_containers(&exec), std::slice::from_ref(&id));

    let report = exec.cleanup_leftovers().await.unwrap();
    assert_eq!(report.containers, [id]);
    assert_eq!(report.bundles, [bundle]);
    assert!(runc_containers(&exec).is_empty());
    assert!(bundles(&exec).is_empty());
}

#[tokio::test]
async fn a_missing_runc_says_how_to_install_it() {
    let state = tempfile::tempdir().unwrap();
    let err = strata_worker::executor::RuncExecutor::new(strata_worker::executor::RuncConfig {
        state_dir: state.path().to_path_buf(),
        runc_binary: Some("/nonexistent/runc".into()),
        no_new_privileges: false,
    })
    .await
    .unwrap_err();
    assert!(matches!(err, ExecError::RuncNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("apt-get install -y runc"), "{err}");
}

#[tokio::test]
async fn ids_runc_cannot_take_are_refused() {
    let (exec, _state) = executor().await;
    let root = rootfs();
    for id in ["", "../x", "a/b", "-x"] {
        let (result, _) = run(&exec, id, sh(root.path(), "true")).await;
        assert!(
            matches!(result, Err(ExecError::InvalidId { .. })),
            "{id}: {result:?}"
        );
    }
    assert!(bundles(&exec).is_empty());
}
