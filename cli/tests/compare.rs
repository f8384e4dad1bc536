//! `danmaku compare` against the real services: every row, the chart, and the seed's point —
//! at a low rate, short polling costs more bytes per comment than WebSocket.

mod helpers;

use helpers::{WAIT, danmaku, run_danmaku, service_binary, spawn_http, spawn_live, success_json};
use serde_json::Value;

/// The row whose transport starts with `prefix`.
fn row<'a>(report: &'a Value, prefix: &str) -> &'a Value {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["transport"].as_str().unwrap().starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} row in {report:#}"))
}

#[test]
fn compare_short_run_measures_every_transport_and_draws_the_chart() {
    let http = spawn_http();
    let live = spawn_live();
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("compare.svg");
    let output = run_danmaku(
        &[
            "compare",
            "--http-url",
            &http.base,
            "--ws-url",
            &live.ws_base,
            "--viewers",
            "3",
            "--rate",
            "1",
            "--duration",
            "4",
            "--short-intervals",
            "1",
            "--seed-interval",
            "1",
            "--linger",
            "1.5",
            "--chart",
            chart.to_str().unwrap(),
            "--json",
        ],
        WAIT,
    );
    let report = success_json(&output);
    assert_eq!(report["http_stored"], 4);
    assert_eq!(report["live_stored"], 4);

    let short = row(&report, "short poll 1 s");
    let long = row(&report, "long poll");
    let seed = row(&report, "seed GET /polling");
    let websocket = row(&report, "WebSocket");
    for r in [short, long, websocket] {
        assert_eq!(r["expected"], 12, "{r:#}");
        assert_eq!(
            r["delivered"], 12,
            "the cursor and the socket miss nothing: {r:#}"
        );
        assert_eq!(r["lost"], 0, "{r:#}");
        assert_eq!(r["repeated"], 0, "{r:#}");
        assert!(r["bytes_down"].as_u64().unwrap() > 0, "{r:#}");
    }
    assert!(
        seed["repeated"].as_u64().unwrap() > 0,
        "the seed's last-5 answer repeats comments: {seed:#}"
    );
    assert!(short["requests"].as_u64().unwrap() >= 3 * 5, "{short:#}");
    // Long polls answer as soon as a comment exists; 1 s short polls wait half a second on
    // average.
    assert!(
        long["latency"]["p50_ms"].as_f64().unwrap() < short["latency"]["p50_ms"].as_f64().unwrap(),
        "{long:#} {short:#}"
    );

    // The seed's point, from the measured numbers: at one comment a second, polling every second
    // pays a request and response headers for each comment; WebSocket pays a frame.
    let per_comment = |r: &Value| r["bytes_per_comment"].as_f64().unwrap();
    assert!(
        per_comment(short) > per_comment(websocket),
        "short polling {} B/comment vs WebSocket {} B/comment",
        per_comment(short),
        per_comment(websocket)
    );

    let svg = std::fs::read_to_string(&chart).expect("the chart was written");
    assert!(svg.starts_with("<svg"));
    for label in [
        "short poll 1 s",
        "long poll",
        "WebSocket",
        "seed GET /polling",
    ] {
        assert!(svg.contains(label), "the chart's legend names {label}");
    }
}

#[test]
fn compare_starts_its_own_services_when_given_no_urls() {
    let dir = service_binary("http-danmaku");
    service_binary("ws-stream");
    let out = tempfile::tempdir().unwrap();
    let output = danmaku(&[
        "compare",
        "--viewers",
        "2",
        "--rate",
        "2",
        "--duration",
        "2",
        "--short-intervals",
        "0.5",
        "--seed-interval",
        "0",
        "--linger",
        "1",
    ])
    .current_dir(out.path())
    .env("DANMAKU_BIN_DIR", dir.parent().unwrap())
    .output()
    .expect("danmaku runs");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{table}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for label in ["short poll 0.5 s", "long poll", "WebSocket", "B/comment"] {
        assert!(table.contains(label), "{label} in\n{table}");
    }
    assert!(
        !table.contains("seed"),
        "--seed-interval 0 leaves the seed row out"
    );
    assert!(
        out.path().join("compare.svg").is_file(),
        "the default chart path"
    );
}
