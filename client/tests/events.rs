//! The event stream against the mock scheduler: plain and JSON rendering
//! of a scripted build, a failure with its exit code and log tail,
//! reattaching after a dropped stream, giving up, and Ctrl-C.

mod common;

use common::{Mock, serve};
use prost_types::Timestamp;
use std::time::Duration;
use strata_client::progress::{self, JsonRenderer, PlainRenderer, Renderer as _};
use strata_client::watch::{self, Outcome, WatchOptions};
use strata_proto::build::v1 as pb;
use strata_proto::build::v1::build_event::Event;
use strata_proto::common::v1 as wire;

const T0: i64 = 1_700_000_000;

fn ev(seq: u64, millis: i64, event: Event) -> pb::BuildEvent {
    pb::BuildEvent {
        build_id: "b-1".into(),
        sequence: seq,
        timestamp: Some(Timestamp {
            seconds: T0 + millis / 1000,
            nanos: i32::try_from((millis % 1000) * 1_000_000).unwrap(),
        }),
        event: Some(event),
    }
}

fn step(id: &str, instruction: &str, line: u32) -> pb::StepPlan {
    pb::StepPlan {
        step_id: id.into(),
        instruction: instruction.into(),
        location: Some(wire::SourceLocation {
            file: "Dockerfile".into(),
            start_line: line,
            end_line: line,
        }),
        ..Default::default()
    }
}

fn started() -> Event {
    Event::BuildStarted(pb::BuildStarted {
        plan: Some(pb::BuildPlan {
            dockerfile_path: "Dockerfile".into(),
            steps: vec![
                step("s1", "FROM busybox", 1),
                step("s2", "RUN make", 2),
                step("s3", "COPY . /app", 3),
            ],
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn log(step: &str, data: &[u8]) -> Event {
    Event::StepLog(pb::StepLog {
        step_id: step.into(),
        chunk: Some(wire::LogChunk {
            stream: wire::LogStream::Stdout.into(),
            data: data.to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn secs(ms: i32) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: 0,
        nanos: ms * 1_000_000,
    })
}

fn success_script() -> Vec<pb::BuildEvent> {
    vec![
        ev(1, 0, started()),
        ev(
            2,
            200,
            Event::StepCached(pb::StepCached {
                step_id: "s1".into(),
                ..Default::default()
            }),
        ),
        ev(
            3,
            400,
            Event::StepStarted(pb::StepStarted {
                step_id: "s2".into(),
                worker_id: "w-1".into(),
                ..Default::default()
            }),
        ),
        ev(4, 500, log("s2", b"compiling\nalmo")),
        ev(5, 600, log("s2", b"st \xffdone\n")),
        ev(
            6,
            900,
            Event::StepDone(pb::StepDone {
                step_id: "s2".into(),
                worker_id: "w-1".into(),
                duration: secs(400),
                ..Default::default()
            }),
        ),
        ev(
            7,
            1000,
            Event::StepStarted(pb::StepStarted {
                step_id: "s3".into(),
                ..Default::default()
            }),
        ),
        ev(
            8,
            1100,
            Event::StepDone(pb::StepDone {
                step_id: "s3".into(),
                duration: secs(100),
                ..Default::default()
            }),
        ),
        ev(
            9,
            1200,
            Event::BuildFinished(pb::BuildFinished {
                status: pb::BuildStatus::Succeeded.into(),
                result: Some(pb::BuildResult {
                    manifest_digest: "sha256:mmm".into(),
                    config_digest: "sha256:ccc".into(),
                    ..Default::default()
                }),
            }),
        ),
    ]
}

fn failure_script() -> Vec<pb::BuildEvent> {
    let error = pb::BuildError {
        code: pb::ErrorCode::StepFailed.into(),
        message: "process \"/bin/sh -c exit 3\" did not complete successfully".into(),
        step_id: "s2".into(),
        instruction: "RUN exit 3".into(),
        location: Some(wire::SourceLocation {
            file: "Dockerfile".into(),
            start_line: 2,
            end_line: 2,
        }),
        exit_code: Some(3),
        log_tail: b"about to fail\nbye\n".to_vec(),
        ..Default::default()
    };
    vec![
        ev(1, 0, started()),
        ev(
            2,
            100,
            Event::StepCached(pb::StepCached {
                step_id: "s1".into(),
                ..Default::default()
            }),
        ),
        ev(
            3,
            200,
            Event::StepStarted(pb::StepStarted {
                step_id: "s2".into(),
                ..Default::default()
            }),
        ),
        ev(4, 300, log("s2", b"about to fail\nbye\n")),
        ev(
            5,
            500,
            Event::StepFailed(pb::StepFailed {
                step_id: "s2".into(),
                exit_code: Some(3),
                message: error.message.clone(),
                log_tail: error.log_tail.clone(),
                ..Default::default()
            }),
        ),
        ev(
            6,
            600,
            Event::BuildFailed(pb::BuildFailed {
                status: pb::BuildStatus::Failed.into(),
                error: Some(error),
                ..Default::default()
            }),
        ),
    ]
}

fn quick() -> WatchOptions {
    WatchOptions {
        backoff: Duration::from_millis(10),
        ..WatchOptions::default()
    }
}

#[tokio::test]
async fn plain_progress_shows_each_event_with_time_and_step() {
    let mock = Mock::default();
    mock.scripts
        .lock()
        .unwrap()
        .push_back((success_script(), false));
    let mut client = serve(mock).await;
    let mut r = PlainRenderer::new(Vec::new());
    let outcome = watch::watch(&mut client, "b-1", &mut r, &quick(), std::future::pending())
        .await
        .unwrap();
    let Outcome::Finished(f) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(f.result.unwrap().config_digest, "sha256:ccc");
    let text = String::from_utf8(r.into_inner()).unwrap();
    let expected = "   0.0s build b-1: 3 steps
   0.2s #1 [1/3] FROM busybox
   0.2s #1 CACHED
   0.4s #2 [2/3] RUN make
   0.5s #2 compiling
   0.6s #2 almost \u{fffd}done
   0.9s #2 DONE 0.4s
   1.0s #3 [3/3] COPY . /app
   1.1s #3 DONE 0.1s
";
    assert_eq!(text, expected);
}

#[tokio::test]
async fn json_progress_is_one_object_per_event() {
    let mock = Mock::default();
    mock.scripts
        .lock()
        .unwrap()
        .push_back((success_script(), false));
    let mut client = serve(mock).await;
    let mut r = JsonRenderer::new(Vec::new());
    watch::watch(&mut client, "b-1", &mut r, &quick(), std::future::pending())
        .await
        .unwrap();
    let text = String::from_utf8(r.into_inner()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 9);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["build_id"], "b-1");
        assert_eq!(l["sequence"], i as u64 + 1);
    }
    assert_eq!(lines[0]["type"], "build_started");
    assert_eq!(lines[0]["steps"][1]["instruction"], "RUN make");
    assert_eq!(lines[1]["type"], "step_cached");
    assert_eq!(lines[1]["step_id"], "s1");
    assert_eq!(lines[3]["type"], "step_log");
    assert_eq!(lines[3]["data"], "compiling\nalmo");
    assert_eq!(lines[3]["stream"], "stdout");
    assert_eq!(lines[5]["type"], "step_done");
    assert_eq!(lines[5]["worker_id"], "w-1");
    assert_eq!(lines[5]["duration_seconds"], 0.4);
    assert_eq!(lines[8]["type"], "build_finished");
    assert_eq!(lines[8]["config_digest"], "sha256:ccc");
    assert_eq!(lines[0]["time"], "2023-11-14T22:13:20Z");
}

#[tokio::test]
async fn a_failed_build_reports_step_location_exit_code_and_log_tail() {
    let mock = Mock::default();
    mock.scripts
        .lock()
        .unwrap()
        .push_back((failure_script(), false));
    mock.scripts
        .lock()
        .unwrap()
        .push_back((failure_script(), false));
    let mut client = serve(mock).await;
    let mut r = PlainRenderer::new(Vec::new());
    let outcome = watch::watch(&mut client, "b-1", &mut r, &quick(), std::future::pending())
        .await
        .unwrap();
    let Outcome::Failed(f) = outcome else {
        panic!("{outcome:?}")
    };
    let error = f.error.clone().unwrap();
    let dockerfile = b"FROM busybox\nRUN exit 3\nCOPY . /app\n";
    let report = progress::failure_report(r.view(), &error, Some(dockerfile));
    assert!(
        report.contains(" > [2/3] RUN exit 3 (step s2):"),
        "{report}"
    );
    assert!(report.contains("about to fail\nbye\n"), "{report}");
    assert!(report.contains("Dockerfile:2\n"), "{report}");
    assert!(report.contains("   2 | >>> RUN exit 3"), "{report}");
    assert!(report.contains("   1 |     FROM busybox"), "{report}");
    assert!(report.contains("exit code: 3"), "{report}");
    assert_eq!(
        progress::error_summary(f.status(), f.error.as_ref()),
        "failed to solve: process \"/bin/sh -c exit 3\" did not complete successfully: exit code: 3"
    );
    let text = String::from_utf8(r.into_inner()).unwrap();
    assert!(text.contains("   0.3s #2 bye\n"), "{text}");
    assert!(
        text.contains(
            "   0.5s #2 ERROR: process \"/bin/sh -c exit 3\" did not complete successfully\n"
        ),
        "{text}"
    );

    // The same failure in JSON carries the exit code and the log tail.
    let mut j = JsonRenderer::new(Vec::new());
    watch::watch(&mut client, "b-1", &mut j, &quick(), std::future::pending())
        .await
        .unwrap();
    let text = String::from_utf8(j.into_inner()).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "build_failed");
    assert_eq!(last["step_id"], "s2");
    assert_eq!(last["error"]["exit_code"], 3);
    assert_eq!(last["error"]["log_tail"], "about to fail\nbye\n");
    assert_eq!(last["error"]["location"]["start_line"], 2);
}

#[tokio::test]
async fn a_dropped_stream_is_resumed_after_the_last_sequence() {
    let mock = Mock::default();
    let all = success_script();
    // The first stream breaks after event 4; the scheduler replays from 0
    // on the second but the client asked for events after 4.
    mock.scripts
        .lock()
        .unwrap()
        .push_back((all[..4].to_vec(), false));
    mock.scripts.lock().unwrap().push_back((all.clone(), false));
    let mut client = serve(mock.clone()).await;
    let mut r = PlainRenderer::new(Vec::new());
    let outcome = watch::watch(&mut client, "b-1", &mut r, &quick(), std::future::pending())
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Finished(_)));
    let after: Vec<u64> = mock
        .rec
        .lock()
        .unwrap()
        .watches
        .iter()
        .map(|w| w.after_sequence)
        .collect();
    assert_eq!(after, [0, 4]);
    let text = String::from_utf8(r.into_inner()).unwrap();
    assert_eq!(text.matches("#2 [2/3] RUN make").count(), 1, "{text}");
    assert!(text.contains("#3 DONE 0.1s"));
}

#[tokio::test]
async fn the_watch_gives_up_after_its_retries() {
    let mock = Mock::default();
    let all = success_script();
    for _ in 0..3 {
        mock.scripts
            .lock()
            .unwrap()
            .push_back((all[..2].to_vec(), false));
    }
    let mut client = serve(mock).await;
    let mut r = PlainRenderer::new(Vec::new());
    let opts = WatchOptions {
        retries: 2,
        ..quick()
    };
    let e = watch::watch(&mut client, "b-1", &mut r, &opts, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("lost the event stream of build b-1"),
        "{e}"
    );
}

#[tokio::test]
async fn an_interrupt_cancels_the_build() {
    let mock = Mock::default();
    let all = success_script();
    mock.scripts
        .lock()
        .unwrap()
        .push_back((all[..3].to_vec(), true));
    let mut client = serve(mock.clone()).await;
    let mut r = PlainRenderer::new(Vec::new());
    let interrupt = tokio::time::sleep(Duration::from_millis(200));
    let outcome = watch::watch(&mut client, "b-1", &mut r, &quick(), interrupt)
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Interrupted);
    assert_eq!(mock.rec.lock().unwrap().cancels, ["b-1"]);
}

#[tokio::test]
async fn logs_without_follow_end_with_the_recorded_events() {
    let mock = Mock::default();
    mock.scripts
        .lock()
        .unwrap()
        .push_back((success_script()[..5].to_vec(), false));
    let mut client = serve(mock.clone()).await;
    let mut r = PlainRenderer::new(Vec::new());
    let opts = WatchOptions {
        follow: false,
        ..quick()
    };
    let outcome = watch::watch(&mut client, "b-1", &mut r, &opts, std::future::pending())
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Ended);
    assert!(mock.rec.lock().unwrap().watches[0].no_follow);
    let text = String::from_utf8(r.into_inner()).unwrap();
    assert!(text.contains("#2 compiling"), "{text}");
}

#[test]
fn the_tty_view_ends_with_every_step_and_its_state() {
    let mut r = progress::TtyRenderer::new(Vec::new());
    for ev in success_script() {
        r.event(&ev).unwrap();
    }
    r.finish().unwrap();
    r.message("writing image sha256:ccc done").unwrap();
    let raw = String::from_utf8(r.into_inner()).unwrap();
    assert!(raw.contains("\x1b["), "redrawn with ANSI escapes");
    // The last frame, without escapes.
    let frame = raw.rsplit("\x1b[J").nth(1).unwrap_or_default();
    let plain = strip_ansi(frame);
    let lines: Vec<&str> = plain.lines().map(|l| l.trim_start_matches('\r')).collect();
    assert!(
        lines[0].starts_with("[+] Building 1.2s (3/3) FINISHED"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with(" => [1/3] FROM busybox") && lines[1].ends_with("CACHED"),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with(" => [2/3] RUN make") && lines[2].ends_with("DONE 0.4s"),
        "{lines:?}"
    );
    assert!(lines[3].ends_with("DONE 0.1s"), "{lines:?}");
    assert!(raw.ends_with("writing image sha256:ccc done\n"), "{raw:?}");
}

/// Drops `ESC [ digits letter` sequences.
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            while chars.peek().is_some_and(char::is_ascii_digit) {
                chars.next();
            }
            chars.next();
        } else {
            out.push(c);
        }
    }
    out
}
