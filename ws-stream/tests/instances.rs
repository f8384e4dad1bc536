//! Two real `ws-stream` processes on one store behave as one for check-ins: the code on the
//! host's screen on one instance checks students in on the other (over WebSocket and HTTP), both
//! instances push the same code at the same step boundaries, a viewer joining the other instance
//! learns of the open check-in, a restarted instance shows the same codes, and both report the
//! same attended count when the check-in closes.
//!
//! The store is a SQLite file both processes open, or, with `DANMAKU_TEST_STORE=postgres`, a
//! fresh PostgreSQL database ([`TestStore`]).

mod helpers;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use helpers::{http_from, try_connect_from};
use serde_json::{Value, json};
use service_kit::testing::{Binary, RELAXED, TestStore, WsClient};

fn start(store: &TestStore) -> Binary {
    let mut args = RELAXED.to_vec();
    args.extend(["--workers", "1"]);
    Binary::start(env!("CARGO_BIN_EXE_ws-stream"), store, &args)
}

/// A new room made through `server`: its id and host token.
async fn create_room(server: &Binary) -> (String, String) {
    let created: Value = reqwest::Client::new()
        .post(format!("{}/api/rooms", server.base))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        created["room"].as_str().unwrap().to_owned(),
        created["host_token"].as_str().unwrap().to_owned(),
    )
}

/// Opens a check-in in `room` through `server`; its id.
async fn open_checkin(
    server: &Binary,
    room: &str,
    token: &str,
    interval_secs: u32,
    duration_secs: u32,
) -> i64 {
    let response = reqwest::Client::new()
        .post(format!("{}/api/rooms/{room}/checkins", server.base))
        .bearer_auth(token)
        .json(&json!({"interval_secs": interval_secs, "duration_secs": duration_secs}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap()
}

/// Joins `room` on `server` from `from`, as its host when `token` is given; past the welcome.
async fn join(
    server: &Binary,
    from: &str,
    room: &str,
    name: &str,
    token: Option<&str>,
) -> WsClient {
    let url = format!("{}/ws/live/{room}?name={name}", server.ws_base);
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .iter()
        .map(|b| ("authorization", b.as_str()))
        .collect();
    let mut client = try_connect_from(from.parse().unwrap(), &url, &headers)
        .await
        .unwrap_or_else(|e| panic!("joining {url}: {e}"));
    let welcome = client.recv_json().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["host"], token.is_some(), "{welcome}");
    client
}

/// A code frame's code and the end of its step.
fn code_of(frame: &Value) -> (String, DateTime<Utc>) {
    assert_eq!(frame["type"], "checkin_code", "{frame}");
    (
        frame["code"].as_str().unwrap().to_owned(),
        frame["valid_until"].as_str().unwrap().parse().unwrap(),
    )
}

/// A six-digit code that is neither of `codes`.
fn other_than(codes: &[&str]) -> String {
    (0..)
        .map(|n: u32| format!("{:06}", 100_000 + n))
        .find(|c| !codes.contains(&c.as_str()))
        .unwrap()
}

/// The check-in as its host reads it through `server`.
async fn report(server: &Binary, checkin: i64, token: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}/api/checkins/{checkin}", server.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A check-in over HTTP through `server` from `from`: status and body.
async fn attend_over_http(
    server: &Binary,
    from: &str,
    checkin: i64,
    name: &str,
    code: &str,
) -> (u16, Value) {
    let response = http_from(from)
        .post(format!("{}/api/checkins/{checkin}/attend", server.base))
        .json(&json!({"name": name, "code": code}))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// A check-in over WebSocket: the answer (`checked_in` or an `error`).
async fn attend_over_ws(client: &mut WsClient, checkin: i64, code: &str) -> Value {
    client
        .send_json(&json!({"type": "checkin", "checkin": checkin, "code": code}))
        .await;
    loop {
        let frame = client.recv_json().await;
        if frame["type"] == "checked_in" || frame["type"] == "error" {
            return frame;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_code_on_one_instances_screen_checks_students_in_on_another() {
    let store = TestStore::new("ws-stream");
    let a = start(&store);
    let b = start(&store);
    let (room, token) = create_room(&a).await;
    let mut host = join(&a, "127.0.0.1", &room, "host", Some(&token)).await;
    // Joined B before the check-in opened on A: B's hub holds the room but not the check-in.
    let mut early = join(&b, "127.0.0.2", &room, "early", None).await;

    let checkin = open_checkin(&a, &room, &token, 10, 10).await;
    let opened = host.recv_type("checkin_open").await;
    assert_eq!(opened["checkin"], checkin);
    let (code, _) = code_of(&host.recv_type("checkin_code").await);

    // A wrong code is refused on B, over WebSocket and over HTTP.
    let wrong = other_than(&[&code]);
    let refused = attend_over_ws(&mut early, checkin, &wrong).await;
    assert_eq!(refused["code"], "wrong_code", "{refused}");
    let (status, body) = attend_over_http(&b, "127.0.0.3", checkin, "web", &wrong).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("wrong_code")),
        "{body}"
    );

    // The code on A's host screen checks in on B, both ways.
    let accepted = attend_over_ws(&mut early, checkin, &code).await;
    assert_eq!(accepted["type"], "checked_in", "{accepted}");
    assert_eq!(accepted["name"], "early");
    let (status, body) = attend_over_http(&b, "127.0.0.3", checkin, "web", &code).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "web");
    let list = report(&a, checkin, &token).await;
    let names: Vec<&str> = list["attendees"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["early", "web"]);

    // Time's up: each instance closes it and tells its own room the same count.
    let closed_on_a = host.recv_type("checkin_closed").await;
    let closed_on_b = early.recv_type("checkin_closed").await;
    assert_eq!(closed_on_a["attended"], 2, "{closed_on_a}");
    assert_eq!(closed_on_b["attended"], 2, "{closed_on_b}");
    let (status, body) = attend_over_http(&b, "127.0.0.4", checkin, "late", &code).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("checkin_closed")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_instances_push_the_same_code_at_each_step_boundary() {
    let store = TestStore::new("ws-stream");
    let a = start(&store);
    let b = start(&store);
    let (room, token) = create_room(&a).await;
    let mut host_a = join(&a, "127.0.0.1", &room, "host", Some(&token)).await;
    let checkin = open_checkin(&a, &room, &token, 2, 30).await;
    let opened_at: DateTime<Utc> = report(&a, checkin, &token).await["opened_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // The first on B to join the room learns of the check-in opened on A, right after its
    // welcome; a host joining B then gets its code.
    let mut viewer_b = join(&b, "127.0.0.2", &room, "viewer", None).await;
    let told = viewer_b.recv_type("checkin_open").await;
    assert_eq!(told["checkin"], checkin, "{told}");
    let mut host_b = join(&b, "127.0.0.1", &room, "host", Some(&token)).await;

    // Each host's frames for a few steps, by the end of their step.
    async fn frames(host: &mut WsClient, steps: usize) -> BTreeMap<DateTime<Utc>, String> {
        let mut seen = BTreeMap::new();
        while seen.len() < steps {
            let (code, until) = code_of(&host.recv_type("checkin_code").await);
            seen.insert(until, code);
        }
        seen
    }
    let (on_a, on_b) = tokio::join!(frames(&mut host_a, 5), frames(&mut host_b, 4));
    let mut common = 0;
    for (until, code) in &on_b {
        // Every step ends on the check-in's grid: opened_at + k * 2 s.
        let offset = (*until - opened_at).num_milliseconds();
        assert!(offset > 0 && offset % 2_000 == 0, "{until} vs {opened_at}");
        if let Some(same_step) = on_a.get(until) {
            assert_eq!(same_step, code, "step ending {until}");
            common += 1;
        }
    }
    assert!(common >= 3, "A {on_a:?}, B {on_b:?}");
    let codes: Vec<&String> = on_a.values().collect();
    assert!(codes.windows(2).all(|w| w[0] != w[1]), "{codes:?}");
    let ends: Vec<&DateTime<Utc>> = on_a.keys().collect();
    assert!(
        ends.windows(2)
            .all(|w| (*w[1] - *w[0]).num_milliseconds() == 2_000),
        "one frame per step: {ends:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_instance_shows_the_same_code_for_the_same_step() {
    let store = TestStore::new("ws-stream");
    let a = start(&store);
    let b = start(&store);
    let (room, token) = create_room(&a).await;
    let mut host = join(&a, "127.0.0.1", &room, "host", Some(&token)).await;
    // One step of a minute: the restart happens inside it.
    let checkin = open_checkin(&a, &room, &token, 60, 120).await;
    let before = code_of(&host.recv_type("checkin_code").await);
    let mut host_b = join(&b, "127.0.0.1", &room, "host", Some(&token)).await;
    assert_eq!(code_of(&host_b.recv_type("checkin_code").await), before);

    drop(host);
    a.kill9();
    let a = start(&store);
    let mut host = join(&a, "127.0.0.1", &room, "host", Some(&token)).await;
    let after = code_of(&host.recv_type("checkin_code").await);
    assert_eq!(after, before, "the same step, the same code");

    let (status, body) = attend_over_http(&a, "127.0.0.2", checkin, "ann", &before.0).await;
    assert_eq!(status, 200, "{body}");
    let wrong = other_than(&[&before.0]);
    let (status, body) = attend_over_http(&a, "127.0.0.2", checkin, "ann", &wrong).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("wrong_code")),
        "{body}"
    );
}
