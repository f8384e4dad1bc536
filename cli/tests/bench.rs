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

/// A burst of viewers joining a busy room: each is welcomed with the room's history, the
/// joins are timed, and the viewers already there are measured for the comments sent meanwhile;
/// the burst counts towards neither the viewers nor the deliveries.
#[test]
fn bench_burst_joins_a_busy_room_and_reports_welcomes_and_latency_meanwhile() {
    let app = spawn_live();
    let output = run_danmaku(
        &[
            "bench",
            "--url",
            &app.ws_base,
            "--live",
            "burst",
            "--viewers",
            "10",
            "--senders",
            "2",
            "--rate",
            "40",
            "--duration",
            "3",
            "--ramp",
            "0.2",
            "--burst",
            "60",
            "--burst-at",
            "1",
            "--burst-over",
            "0.5",
            "--json",
        ],
        WAIT,
    );
    let report = success_json(&output);
    assert_eq!(report["viewers_connected"], 10);
    assert_eq!(report["lost"], 0, "{report:#}");
    // Only the 10 viewers there from the start count: 120 comments each.
    assert_eq!(report["expected_deliveries"], 1200);
    assert_eq!(report["received"], 1200);
    let burst = &report["burst"];
    assert_eq!(burst["viewers"], 60, "{burst}");
    assert_eq!(burst["joined"], 60, "{burst}");
    // A second in, about 40 comments were in the room: every welcome carried them.
    assert_eq!(burst["with_history"], 60, "{burst}");
    assert!(burst["joins_per_sec"].as_f64().unwrap() > 0.0, "{burst}");
    assert_eq!(burst["welcome_wait"]["count"], 60, "{burst}");
    assert!(burst["welcome_wait"]["p50_ms"].as_f64().unwrap() > 0.0);
    // Comments due from 1 s to 2.5 s (60 of them) reached the 10 viewers meanwhile.
    let during = burst["latency_during"]["count"].as_u64().unwrap();
    assert!((500..=700).contains(&during), "{burst}");
}

/// With no senders the room stays idle: the viewers connect and wait, nothing is sent, the run
/// ends without waiting out its drain, and the server's memory per connection is reported.
#[test]
fn bench_without_senders_measures_an_idle_room() {
    let app = spawn_live();
    let started = Instant::now();
    let output = run_danmaku(
        &[
            "bench",
            "--url",
            &app.ws_base,
            "--live",
            "idle",
            "--viewers",
            "30",
            "--senders",
            "0",
            "--duration",
            "1",
            "--ramp",
            "0.2",
            "--drain",
            "20",
            "--json",
        ],
        WAIT,
    );
    let report = success_json(&output);
    assert_eq!(report["viewers_connected"], 30, "{report:#}");
    assert_eq!(report["senders_connected"], 0);
    assert_eq!(report["sent"], 0);
    assert_eq!(report["received"], 0);
    assert_eq!(report["lost"], 0);
    assert_eq!(report["errors"], serde_json::json!({}));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the drain waited: {:?}",
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

/// The viewer and sender names that connected to `server`'s room `room`, from its log
/// (`connection N opened (room ROOM, viewer NAME)`), sorted.
fn names_connected(server: &Binary, room: &str) -> Vec<String> {
    let needle = format!(" opened (room {room}, viewer ");
    let mut names: Vec<String> = server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|line| line.split(&needle).nth(1))
        .map(|rest| rest.trim_end_matches(')').to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn bench_spreads_viewers_and_senders_round_robin_over_several_instances() {
    // Two instances of one service: one store, one bus.
    let Some(bus) = service_kit::testing::cluster_bus() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let exe = service_binary("ws-stream");
    let exe = exe.to_str().unwrap();
    let mut args: Vec<&str> = RELAXED.to_vec();
    args.extend(bus.iter().map(String::as_str));
    let store = dir.path().join("spread.db");
    let a = Binary::start(exe, &store, &args);
    let b = Binary::start(exe, &store, &args);
    for instance in [&a, &b] {
        let addr: std::net::SocketAddr = instance.base["http://".len()..].parse().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !service_kit::testing::raw_http(
            addr,
            b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
        .is_some_and(|r| r.json()["bus"]["connected"] == true)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the bus did not connect"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    let pids = format!("{},{}", a.child.id(), b.child.id());
    // 4 viewers and 3 senders over [a, b]: viewers 0, 2 and senders 0, 2 on a; viewers 1, 3 and
    // sender 1 on b. 30 comments, 10 per sender: a takes 20 of them, b 10.
    let output = run_danmaku(
        &[
            "bench",
            "--url",
            &a.ws_base,
            "--url",
            &b.ws_base,
            "--live",
            "spread",
            "--viewers",
            "4",
            "--senders",
            "3",
            "--rate",
            "15",
            "--duration",
            "2",
            "--ramp",
            "0",
            "--drain",
            "2",
            "--server-pid",
            &pids,
            "--json",
        ],
        WAIT,
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });

    // Both servers got their share of the connections, in round-robin order.
    assert_eq!(
        names_connected(&a, "spread"),
        ["sender-0", "sender-2", "viewer-0", "viewer-2"],
        "{report:#}"
    );
    assert_eq!(
        names_connected(&b, "spread"),
        ["sender-1", "viewer-1", "viewer-3"],
        "{report:#}"
    );
    let target = report["target"].as_str().unwrap();
    let (a_addr, b_addr) = (&a.ws_base["ws://".len()..], &b.ws_base["ws://".len()..]);
    assert_eq!(target, format!("live room spread at {a_addr}, {b_addr}"));

    assert_eq!(report["viewers_connected"], 4, "{report:#}");
    assert_eq!(report["senders_connected"], 3, "{report:#}");
    assert_eq!(report["sent"], 30, "{report:#}");
    assert_eq!(report["acked"], 30, "{report:#}");
    assert_eq!(report["expected_deliveries"], 120, "{report:#}");
    assert_eq!(report["duplicated"], 0, "{report:#}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report:#}");
    // Through the bus every viewer gets every comment, whichever instance took it.
    assert_eq!(report["received"], 120, "{report:#}");
    assert_eq!(report["lost"], 0, "{report:#}");
    assert_eq!(report["latency"]["count"], 120, "{report:#}");
    assert_eq!(output.status.code(), Some(0), "a clean run");

    // The server figures cover both processes, added up.
    let server = &report["server"];
    assert_eq!(
        server["pids"],
        serde_json::json!([a.child.id(), b.child.id()]),
        "{server}"
    );
    assert_eq!(server["pid"], a.child.id(), "{server}");
    assert_eq!(server["exited"], false, "{server}");
    let rss = |binary: &Binary| {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", binary.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| {
                value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .expect("VmHWM in /proc/PID/status")
    };
    // Each peak only grows, so the sum read during the run is at most the sum read now, and
    // above either one alone.
    let peak = server["peak_rss_kib"].as_u64().unwrap();
    let (peak_a, peak_b) = (rss(&a), rss(&b));
    assert!(
        peak > peak_a.max(peak_b) && peak <= peak_a + peak_b,
        "{server}"
    );
}
