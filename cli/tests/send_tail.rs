//! `danmaku send` and `danmaku tail` against each real service on an ephemeral port.

mod helpers;

use std::time::Duration;

use helpers::{
    CutProxy, Tail, WAIT, run_danmaku, spawn_http, spawn_live, spawn_video, stdout_json,
};
use serde_json::Value;

/// Runs `danmaku send` with `args`; its stdout as JSON (it must succeed).
fn send_json(args: &[&str]) -> Value {
    let mut full = vec!["send", "--json"];
    full.extend_from_slice(args);
    let output = run_danmaku(&full, WAIT);
    assert!(
        output.status.success(),
        "send failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout_json(&output)
}

#[test]
fn send_then_tail_round_trips_through_an_http_room() {
    let app = spawn_http();
    let mut tail = Tail::start(&[
        "--room", "lobby", "--url", &app.base, "--json", "--count", "2",
    ]);
    let first = send_json(&[
        "--room",
        "lobby",
        "--url",
        &app.base,
        "--author",
        "ann",
        "hello over http",
    ]);
    let second = send_json(&[
        "--room", "lobby", "--url", &app.base, "--mode", "top", "again",
    ]);
    let got = tail.next_json();
    assert_eq!(got, first);
    assert_eq!(got["text"], "hello over http");
    assert_eq!(got["author"], "ann");
    let got = tail.next_json();
    assert_eq!(got["id"], second["id"]);
    assert_eq!(got["mode"], "top");
    assert!(tail.wait().success());
}

#[test]
fn tail_of_an_http_room_from_the_start_prints_earlier_comments_in_plain_lines() {
    let app = spawn_http();
    send_json(&[
        "--room",
        "old",
        "--url",
        &app.base,
        "--author",
        "bob",
        "before the tail",
    ]);
    let mut tail = Tail::start(&[
        "--room", "old", "--url", &app.base, "--after", "0", "--count", "1",
    ]);
    let line = tail.next_line();
    assert!(line.ends_with("#1 bob: before the tail"), "{line}");
    assert!(tail.wait().success());
}

#[test]
fn send_then_tail_round_trips_through_a_video_after_its_range() {
    let app = spawn_video();
    let url = app.ws_base.as_str();
    let earlier = send_json(&[
        "--video", "clip", "--url", url, "--time", "5", "--author", "ann", "at five",
    ]);
    assert_eq!(earlier["time"], 5.0);
    let mut tail = Tail::start(&[
        "--video", "clip", "--url", url, "--from", "0", "--to", "60", "--json", "--count", "2",
    ]);
    assert_eq!(tail.next_json(), earlier, "the range comes first");
    let live = send_json(&["--video", "clip", "--url", url, "--time", "7.5", "new one"]);
    let got = tail.next_json();
    assert_eq!(got, live);
    assert_eq!(got["time"], 7.5);
    assert!(tail.wait().success());
}

#[test]
fn send_then_tail_round_trips_through_a_live_room() {
    let app = spawn_live();
    let url = app.ws_base.as_str();
    let mut tail = Tail::start(&["--live", "lobby", "--url", url, "--json", "--count", "1"]);
    let sent = send_json(&[
        "--live", "lobby", "--url", url, "--author", "ann", "--color", "#FF0000", "hi live",
    ]);
    assert_eq!(sent["author"], "ann", "the connection's name is the author");
    assert_eq!(sent["color"], "#ff0000");
    assert_eq!(tail.next_json(), sent);
    assert!(tail.wait().success());
}

#[test]
fn live_tail_replays_what_it_missed_while_disconnected() {
    let app = spawn_live();
    let direct = app.ws_base.as_str();
    let proxy = CutProxy::start(app.addr);
    let via_proxy = format!("ws://{}", proxy.addr);
    let mut tail = Tail::start(&[
        "--live", "hall", "--url", &via_proxy, "--json", "--count", "4",
    ]);
    let one = send_json(&["--live", "hall", "--url", direct, "one"]);
    assert_eq!(tail.next_json(), one);

    proxy.cut();
    tail.wait_for_stderr("retrying");
    let missed: Vec<Value> = ["two", "three", "four"]
        .iter()
        .map(|text| send_json(&["--live", "hall", "--url", direct, text]))
        .collect();
    proxy.resume();
    tail.wait_for_stderr("reconnected");
    for expected in &missed {
        assert_eq!(
            &tail.next_json(),
            expected,
            "each missed comment once, in order"
        );
    }
    assert!(tail.wait().success());
}

#[test]
fn send_prints_the_servers_error_code_and_exits_non_zero() {
    let http = spawn_http();
    let output = run_danmaku(
        &[
            "send", "--room", "lobby", "--url", &http.base, "--color", "red", "x",
        ],
        WAIT,
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid_color"), "{stderr}");

    let live = spawn_live();
    let long = "x".repeat(101);
    let output = run_danmaku(
        &["send", "--live", "lobby", "--url", &live.ws_base, &long],
        WAIT,
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("text_too_long"), "{stderr}");
}

#[test]
fn video_send_without_a_time_is_a_usage_error() {
    let output = run_danmaku(&["send", "--video", "clip", "hello"], WAIT);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--time"));
}

#[test]
fn send_to_a_closed_port_says_it_cannot_connect() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let output = run_danmaku(&["send", "--room", "lobby", "--url", &url, "hello"], WAIT);
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot connect"));
    assert!(started.elapsed() < Duration::from_secs(10));
}
