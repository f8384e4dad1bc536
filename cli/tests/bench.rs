//! `danmaku bench` against real services: a clean small run, a video, the tool's own server,
//! and a server killed mid-run.

mod helpers;

use std::time::{Duration, Instant};

use helpers::{
    RELAXED, WAIT, danmaku, run_danmaku, service_binary, spawn_live, spawn_video, success_json,
};
use serde_json::Value;
use service_kit::testing::Binary;

/// Checks the latency percentiles are positive, ordered and below `ceiling_ms`.
fn assert_sane_percentiles(report: &Value, ceiling_ms: f64) {
    let latency = &report["latency"];
    let get = |key: &str| {
        latency[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} in {latency}"))
    };
    let (p50, p90, p99, p999, max) = (
        get("p50_ms"),
        get("p90_ms"),
        get("p99_ms"),
        get("p999_ms"),
        get("max_ms"),
    );
    assert!(p50 > 0.0, "{latency}");
    assert!(
        p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max,
        "{latency}"
    );
    assert!(max < ceiling_ms, "{latency}");
}

#[test]
fn bench_on_a_small_live_room_loses_nothing_and_reports_sane_percentiles() {
    let app = spawn_live();
    let started = Instant::now();
    let output = run_danmaku(
        &[
            "bench",
            "--url",
            &app.ws_base,
            "--live",
            "small",
            "--viewers",
            "20",
            "--senders",
            "2",
            "--rate",
            "20",
            "--duration",
            "2",
            "--ramp",
            "0.5",
            "--drain",
            "5",
            "--json",
        ],
        WAIT,
    );
    let report = success_json(&output);
    assert_eq!(report["viewers_connected"], 20);
    assert_eq!(report["senders_connected"], 2);
    assert_eq!(report["sent"], 40);
    assert_eq!(report["acked"], 40);
    assert_eq!(report["expected_deliveries"], 800);
    assert_eq!(report["received"], 800);
    assert_eq!(report["lost"], 0);
    assert_eq!(report["duplicated"], 0);
    assert_eq!(report["errors"], serde_json::json!({}));
    assert_eq!(report["latency"]["count"], 800);
    assert_sane_percentiles(&report, 2000.0);
    assert!(
        report["deliveries_per_sec"].as_f64().unwrap() > 100.0,
        "{report:#}"
    );
    assert!(report["client_bytes_down"].as_u64().unwrap() > 800 * 40);
    // The drain ends as soon as everything arrived, not after its full 5 s.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn bench_on_a_video_counts_every_delivery() {
    let app = spawn_video();
    let output = run_danmaku(
        &[
            "bench",
            "--url",
            &app.ws_base,
            "--video",
            "clip",
            "--viewers",
            "10",
            "--rate",
            "10",
            "--duration",
            "1",
            "--ramp",
            "0",
            "--json",
        ],
        WAIT,
    );
    let report = success_json(&output);
    assert_eq!(report["received"], 100);
    assert_eq!(report["lost"], 0);
    assert!(report["target"].as_str().unwrap().starts_with("video clip"));
}

#[test]
fn bench_starts_its_own_server_and_reads_its_cpu_and_memory() {
    let exe = service_binary("ws-stream");
    let dir = exe.parent().unwrap();
    let output = danmaku(&[
        "bench",
        "--viewers",
        "10",
        "--rate",
        "10",
        "--duration",
        "1",
        "--ramp",
        "0",
        "--json",
    ])
    .env("DANMAKU_BIN_DIR", dir)
    .output()
    .expect("danmaku runs");
    let report = success_json(&output);
    assert_eq!(report["lost"], 0);
    let server = &report["server"];
    assert!(server["pid"].as_u64().unwrap() > 0, "{server}");
    assert!(server["peak_rss_kib"].as_u64().unwrap() > 1000, "{server}");
    assert!(
        server["rss_connected_kib"].as_u64().unwrap() > 1000,
        "{server}"
    );
    assert_eq!(server["exited"], false);
    assert!(["none", "machine", "client"].contains(&report["cpu"]["bottleneck"].as_str().unwrap()));
}

#[test]
fn bench_reports_a_killed_server_as_errors_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::start(
        service_binary("ws-stream").to_str().unwrap(),
        &dir.path().join("live.db"),
        RELAXED,
    );
    let pid = server.child.id().to_string();
    let mut bench = danmaku(&[
        "bench",
        "--url",
        &server.ws_base,
        "--live",
        "doomed",
        "--viewers",
        "20",
        "--rate",
        "20",
        "--duration",
        "30",
        "--ramp",
        "0",
        "--server-pid",
        &pid,
        "--json",
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("danmaku bench starts");

    // Kill it once comments are flowing, that is, mid-run: a tail of the room returns with the
    // first comment it sees.
    let first = run_danmaku(
        &[
            "tail",
            "--live",
            "doomed",
            "--url",
            &server.ws_base,
            "--since",
            "0",
            "--count",
            "1",
        ],
        WAIT,
    );
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let killed_at = Instant::now();
    server.kill9();

    let status = helpers::wait_or_kill(&mut bench, WAIT).expect("bench ends instead of hanging");
    assert!(
        killed_at.elapsed() < Duration::from_secs(15),
        "bench took {:?} after the kill",
        killed_at.elapsed()
    );
    assert_eq!(status.code(), Some(1), "a broken run is not a success");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut bench.stdout.take().unwrap(), &mut stdout).unwrap();
    let report: Value = serde_json::from_str(&stdout).expect("the report is still printed");
    let errors: u64 = report["errors"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert!(
        errors >= 21,
        "every connection's loss is an error: {report:#}"
    );
    assert_eq!(report["stopped_early"], true, "{report:#}");
    assert_eq!(report["server"]["exited"], true, "{report:#}");
    assert!(report["sent"].as_u64().unwrap() < 600, "{report:#}");
}
