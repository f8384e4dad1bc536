//! `danmaku tail --hide-*` against real services: hidden comments are not printed and do not
//! count toward `--count`; a bad filter fails before connecting, naming its flag.

mod helpers;

use helpers::{Tail, WAIT, run_danmaku, spawn_http, spawn_live, stdout_json};
use serde_json::Value;

/// Runs `danmaku send --json` with `args`; the comment as stored.
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
fn live_tail_prints_only_what_the_block_list_lets_through() {
    let app = spawn_live();
    let url = app.ws_base.as_str();
    let mut tail = Tail::start(&[
        "--live",
        "shield",
        "--url",
        url,
        "--json",
        "--count",
        "2",
        "--hide-keyword",
        "spoiler",
        "--hide-author",
        "bob",
        "--hide-mode",
        "top",
        "--hide-regex",
        r"^\d+$",
    ]);
    let send = |author: &str, extra: &[&str], text: &str| {
        let mut args = vec!["--live", "shield", "--url", url, "--author", author];
        args.extend_from_slice(extra);
        args.push(text);
        send_json(&args)
    };
    // Each hidden one is sent before a visible one the tail must print next: had a hidden one
    // been printed, it would come first.
    send("ann", &[], "big SPOILER here");
    send("bob", &[], "bob is blocked");
    send("ann", &["--mode", "top"], "a top comment");
    let first = send("ann", &[], "visible one");
    send("ann", &[], "ｓｐｏｉｌｅｒ in full width");
    send("Bob", &[], "blocked whatever the case");
    send("ann", &[], "２３３３");
    let second = send("bobby", &["--mode", "bottom"], "visible two, 2333");

    assert_eq!(tail.next_json(), first);
    assert_eq!(tail.next_json(), second);
    assert!(tail.wait().success(), "two printed comments end the tail");
}

#[test]
fn room_tail_from_the_start_skips_hidden_colours_and_prints_the_rest_in_order() {
    let app = spawn_http();
    let send = |extra: &[&str], text: &str| {
        let mut args = vec!["--room", "colours", "--url", &app.base, "--author", "ann"];
        args.extend_from_slice(extra);
        args.push(text);
        send_json(&args)
    };
    send(&["--color", "#FF0000"], "red, hidden by colour");
    let white = send(&[], "white");
    send(&["--color", "#00ff00"], "green, hidden as coloured");
    let last = send(&[], "white again");

    let output = run_danmaku(
        &[
            "tail",
            "--room",
            "colours",
            "--url",
            &app.base,
            "--after",
            "0",
            "--json",
            "--count",
            "2",
            "--hide-color",
            "#ff0000",
            "--hide-colored",
        ],
        WAIT,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(printed, vec![white, last]);
}

#[test]
fn a_bad_regex_fails_at_start_naming_the_flag() {
    // A closed port: the filter is checked before anything is connected to.
    let output = run_danmaku(
        &[
            "tail",
            "--live",
            "x",
            "--url",
            "ws://127.0.0.1:9",
            "--hide-regex",
            "(unclosed",
        ],
        WAIT,
    );
    assert_eq!(output.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--hide-regex \"(unclosed\""), "{stderr}");
    assert!(stderr.contains("not a valid regex"), "{stderr}");
    assert!(output.stdout.is_empty());
}
