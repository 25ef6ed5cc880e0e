//! Docker-style formatting: sizes, relative times, IDs, tables, history
//! truncation.

use prost_types::Timestamp;
use std::time::Duration;
use strata_client::commands::{history, images, workers};
use strata_client::format::{ago, human_duration, human_size, rfc3339, short_id, table, truncate};
use strata_proto::build::v1 as pb;

#[test]
fn sizes_print_like_docker_images() {
    assert_eq!(human_size(0), "0B");
    assert_eq!(human_size(512), "512B");
    assert_eq!(human_size(999), "999B");
    assert_eq!(human_size(1_000), "1kB");
    assert_eq!(human_size(4_260_000), "4.26MB");
    assert_eq!(human_size(4_264_999), "4.26MB");
    assert_eq!(human_size(12_345_678), "12.3MB");
    assert_eq!(human_size(123_456_789), "123MB");
    assert_eq!(human_size(1_500_000_000), "1.5GB");
    // Rounding up to 1000 moves to the next unit.
    assert_eq!(human_size(999_999), "1MB");
}

#[test]
fn durations_print_like_go_units() {
    let s = Duration::from_secs;
    assert_eq!(
        human_duration(Duration::from_millis(300)),
        "Less than a second"
    );
    assert_eq!(human_duration(s(1)), "1 second");
    assert_eq!(human_duration(s(59)), "59 seconds");
    assert_eq!(human_duration(s(60)), "About a minute");
    assert_eq!(human_duration(s(119)), "About a minute");
    assert_eq!(human_duration(s(120)), "2 minutes");
    assert_eq!(human_duration(s(3_600)), "About an hour");
    assert_eq!(human_duration(s(5 * 3_600)), "5 hours");
    assert_eq!(human_duration(s(3 * 86_400)), "3 days");
    assert_eq!(human_duration(s(20 * 86_400)), "2 weeks");
    assert_eq!(human_duration(s(90 * 86_400)), "3 months");
    assert_eq!(human_duration(s(800 * 86_400)), "2 years");
}

#[test]
fn relative_times_and_ids() {
    let now = 1_700_000_000;
    let ts = |ago: i64| Timestamp {
        seconds: now - ago,
        nanos: 0,
    };
    assert_eq!(ago(Some(&ts(150)), now), "2 minutes ago");
    assert_eq!(ago(Some(&ts(0)), now), "Less than a second ago");
    // Clock skew never shows a negative age.
    assert_eq!(ago(Some(&ts(-30)), now), "Less than a second ago");
    assert_eq!(ago(None, now), "N/A");
    assert_eq!(short_id("sha256:0123456789abcdef0123"), "0123456789ab");
    assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
}

#[test]
fn tables_pad_like_docker_tabwriter() {
    let out = table(
        &["REPOSITORY", "TAG", "SIZE"],
        &[vec!["app".into(), "latest".into(), "4.26MB".into()]],
    );
    assert_eq!(
        out,
        "REPOSITORY   TAG       SIZE\napp          latest    4.26MB\n"
    );
}

#[test]
fn truncation_uses_an_ellipsis() {
    assert_eq!(truncate("short", 45), "short");
    let long = "x".repeat(60);
    let cut = truncate(&long, 45);
    assert_eq!(cut.chars().count(), 45);
    assert!(cut.ends_with('…'));
}

fn entry(id: &str, by: &str, size: u64, created: i64) -> pb::HistoryEntry {
    pb::HistoryEntry {
        id: id.into(),
        created: Some(Timestamp {
            seconds: created,
            nanos: 0,
        }),
        created_by: by.into(),
        size,
        empty_layer: size == 0,
        ..Default::default()
    }
}

#[test]
fn history_truncates_created_by_and_marks_missing_ids() {
    let now = 1_700_000_000;
    let long_run = "RUN /bin/sh -c apt-get update && apt-get install -y python3 # buildkit";
    let entries = vec![
        entry(
            &format!("sha256:{}", "ab".repeat(32)),
            long_run,
            4_260_000,
            now - 120,
        ),
        entry("<missing>", "WORKDIR /app", 0, now - 7_200),
        entry(
            "",
            "/bin/sh -c #(nop) ADD file:abc in /",
            1_234,
            now - 7_200,
        ),
    ];
    let out = history::render(&entries, false, false, now);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("IMAGE"), "{out}");
    assert!(lines[0].contains("CREATED BY") && lines[0].ends_with("COMMENT"));
    assert!(lines[1].starts_with("abababababab "), "{out}");
    assert!(lines[1].contains("2 minutes ago"));
    let cut = format!("{}…", &long_run[..44]);
    assert!(lines[1].contains(&cut), "{out}");
    assert!(!lines[1].contains("# buildkit"));
    assert!(lines[1].contains("4.26MB"));
    assert!(lines[2].starts_with("<missing>") && lines[2].contains("0B"));
    assert!(lines[3].starts_with("<missing>") && lines[3].contains("1.23kB"));
    assert!(lines[2].contains("2 hours ago"));

    let full = history::render(&entries, true, false, now);
    assert!(full.contains(long_run), "{full}");
    assert!(full.contains(&"ab".repeat(32)));

    let quiet = history::render(&entries, false, true, now);
    assert_eq!(quiet, "abababababab\n<missing>\n<missing>\n");
}

/// A table row's cells: columns are at least two spaces apart.
fn cells(line: &str) -> Vec<&str> {
    line.split("  ")
        .filter(|c| !c.trim().is_empty())
        .map(str::trim)
        .collect()
}

#[test]
fn images_table_matches_docker() {
    let now = 1_700_000_000;
    let img = pb::ImageSummary {
        repository: "my_flask_app".into(),
        tag: "latest".into(),
        image_id: format!("sha256:{}", "0f".repeat(32)),
        created: Some(Timestamp {
            seconds: now - 150,
            nanos: 0,
        }),
        size: 4_260_000,
        ..Default::default()
    };
    let args = images::ImagesArgs {
        reference: None,
        all: false,
        quiet: false,
        no_trunc: false,
    };
    let out = images::render(std::slice::from_ref(&img), &args, now);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    );
    assert_eq!(
        cells(lines[1]),
        [
            "my_flask_app",
            "latest",
            "0f0f0f0f0f0f",
            "2 minutes ago",
            "4.26MB"
        ]
    );
}

#[test]
fn workers_table_counts_uploading_jobs_apart_from_running_ones() {
    let now = 1_700_000_000;
    let w = pb::WorkerInfo {
        worker_id: "worker-1".into(),
        hostname: "vm".into(),
        state: pb::WorkerState::Ready as i32,
        capacity: 2,
        running_jobs: 1,
        job_ids: vec!["b-s2".into()],
        uploading_job_ids: vec!["b-s0".into(), "b-s1".into()],
        last_heartbeat: Some(Timestamp {
            seconds: now,
            nanos: 0,
        }),
        ..Default::default()
    };
    let out = workers::render(std::slice::from_ref(&w), now);
    let rows: Vec<Vec<&str>> = out.lines().map(cells).collect();
    assert_eq!(
        rows[0],
        [
            "ID",
            "HOSTNAME",
            "STATE",
            "CAPACITY",
            "RUNNING",
            "UPLOADING",
            "PLATFORMS",
            "LAST SEEN"
        ]
    );
    assert_eq!(rows[1][..6], ["worker-1", "vm", "ready", "2", "1", "2"]);
    let json: serde_json::Value =
        serde_json::from_str(&workers::render_json(std::slice::from_ref(&w))).expect("json");
    assert_eq!(json[0]["running_jobs"], 1);
    assert_eq!(json[0]["uploading_jobs"], 2);
}
