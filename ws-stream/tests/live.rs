//! Live rooms end to end: a real server on an ephemeral port, real WebSocket clients, a real
//! SQLite file.

mod helpers;

use std::collections::HashSet;
use std::time::Duration;

use helpers::{RELAXED, ids, join, say, spawn_app, wait_for_comments};
use serde_json::{Value, json};
use service_kit::testing::{WsClient, get_json};
use shared_model::protocol::close::{HEARTBEAT_TIMEOUT, MESSAGE_TOO_BIG};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_viewers_get_every_comment_once_in_the_same_order_and_another_room_none() {
    let app = spawn_app(RELAXED);
    let mut viewers = Vec::new();
    for n in 0..50 {
        viewers.push(join(&app, "hall", &format!("name=v{n}")).await.0);
    }
    let (mut elsewhere, _) = join(&app, "other", "name=x").await;
    // Three senders (three of the fifty) send 20 comments each, at the same time.
    let mut senders = Vec::new();
    for s in 0..3 {
        let mut sender = viewers.pop().expect("a viewer");
        senders.push(tokio::spawn(async move {
            for n in 0..20 {
                sender
                    .send_json(&json!({"type": "send", "text": format!("s{s}-{n}")}))
                    .await;
            }
            sender
        }));
    }
    for sender in senders {
        viewers.push(sender.await.unwrap());
    }
    let mut orders = Vec::new();
    for viewer in &mut viewers {
        let mut got = Vec::new();
        while got.len() < 60 {
            let frame = viewer.recv_json().await;
            if frame["type"] == "danmaku" {
                got.extend(ids(&frame["items"]));
            }
        }
        assert_eq!(got.iter().collect::<HashSet<_>>().len(), 60, "no repeats");
        orders.push(got);
    }
    assert!(
        orders.windows(2).all(|w| w[0] == w[1]),
        "everyone saw the same order"
    );
    let mut sorted = orders[0].clone();
    sorted.sort();
    assert_eq!(orders[0], sorted, "in id order");
    let extra: Vec<Value> = elsewhere
        .drain_for(Duration::from_millis(600))
        .await
        .into_iter()
        .filter(|f| f["type"] != "viewers")
        .collect();
    assert!(extra.is_empty(), "another room got {extra:?}");
}

#[tokio::test]
async fn a_late_joiner_sees_the_last_50_comments_and_the_viewer_count() {
    let app = spawn_app(RELAXED);
    let (mut talker, welcome) = join(&app, "r", "name=talker").await;
    assert_eq!(welcome["history"], json!([]));
    assert_eq!(welcome["name"], "talker");
    assert_eq!(welcome["host"], false);
    assert!(welcome.get("recovered").is_none());
    for n in 1..=70 {
        say(&mut talker, &format!("c{n}")).await;
    }
    let (_late, welcome) = join(&app, "r", "").await;
    assert_eq!(ids(&welcome["history"]), (21..=70).collect::<Vec<i64>>());
    assert_eq!(welcome["history"][0]["author"], "talker");
    assert_eq!(welcome["viewers"], 2);
    assert!(welcome["name"].as_str().unwrap().starts_with("guest-"));
    let over_http: Value = get_json(&format!(
        "{}/api/rooms/r/history?after=60&limit=5",
        app.base
    ))
    .await;
    assert_eq!(ids(&over_http["items"]), [61, 62, 63, 64, 65]);
    assert_eq!(over_http["next"], 65);
}

#[tokio::test]
async fn a_reconnecting_viewer_gets_exactly_what_it_missed_or_is_told_to_reload() {
    let app = spawn_app(RELAXED);
    let (mut talker, _) = join(&app, "r", "name=talker").await;
    let (mut viewer, _) = join(&app, "r", "name=viewer").await;
    for n in 0..10 {
        say(&mut talker, &format!("before{n}")).await;
    }
    let mut last_seen = 0;
    while last_seen < 10 {
        let frame = viewer.recv_type("danmaku").await;
        last_seen = *ids(&frame["items"]).last().unwrap();
    }
    drop(viewer);
    let mut missed = Vec::new();
    for n in 0..20 {
        missed.push(
            say(&mut talker, &format!("missed{n}")).await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let (mut back, welcome) = join(&app, "r", &format!("name=viewer&since={last_seen}")).await;
    assert_eq!(welcome["recovered"], true);
    // The newest may still be on its way from the fan-out when the welcome is read: then it
    // comes pushed right after (the connection joined the room before reading its history).
    let mut got = ids(&welcome["history"]);
    while got.len() < missed.len() {
        got.extend(ids(&back.recv_type("danmaku").await["items"]));
    }
    assert_eq!(got, missed, "exactly the 20 it missed, once each, in order");

    // Away for more than 1000 comments: the chat box and `recovered: false`.
    let since = *missed.last().unwrap();
    for n in 0..1001 {
        talker
            .send_json(&json!({"type": "send", "text": format!("flood{n}")}))
            .await;
    }
    let mut acked = 0;
    while acked < 1001 {
        if talker.recv_json().await["type"] == "ack" {
            acked += 1;
        }
    }
    let (_late, welcome) = join(&app, "r", &format!("since={since}")).await;
    assert_eq!(welcome["recovered"], false);
    let history = ids(&welcome["history"]);
    assert_eq!(history.len(), 50);
    assert_eq!(*history.last().unwrap(), since + 1001);
}

#[tokio::test]
async fn joining_while_comments_arrive_repeats_none() {
    let app = spawn_app(RELAXED);
    let (talker, _) = join(&app, "busy", "name=talker").await;
    let talking = tokio::spawn(async move {
        let mut talker = talker;
        for n in 0..300 {
            talker
                .send_json(&json!({"type": "send", "text": format!("n{n}")}))
                .await;
        }
        talker
    });
    // Joins spread over the traffic: each once the room has grown by another 40 comments.
    let mut joiners = Vec::new();
    for k in 1..=5 {
        wait_for_comments(&app, "busy", 40 * k).await;
        joiners.push(join(&app, "busy", "").await);
    }
    let _talker = talking.await.unwrap();
    for (mut client, welcome) in joiners {
        let mut seen = ids(&welcome["history"]);
        while seen.last().copied().unwrap_or(0) < 300 {
            let frame = client.recv_json().await;
            if frame["type"] == "danmaku" {
                seen.extend(ids(&frame["items"]));
            }
        }
        let unique: HashSet<_> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "a comment came twice");
        let first = seen[0];
        assert_eq!(
            seen,
            (first..=300).collect::<Vec<_>>(),
            "nothing missing after the history"
        );
    }
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_connection_stays() {
    let app = spawn_app(RELAXED);
    let (mut client, _) = join(&app, "r", "name=ann").await;
    for (frame, code) in [
        (Message::text("{oops"), "invalid_json"),
        (
            Message::text(r#"{"type":"range","from":0,"to":1}"#),
            "unknown_type",
        ),
        (Message::text(r#"{"type":"whatever"}"#), "unknown_type"),
        (Message::binary(vec![0u8; 8]), "unsupported_frame"),
        (
            Message::text(json!({"type": "send", "text": ""}).to_string()),
            "text_empty",
        ),
        (
            Message::text(json!({"type": "send", "text": "hi", "time": 3}).to_string()),
            "invalid_time",
        ),
        (
            Message::text(json!({"type": "checkin", "checkin": 99, "code": "123456"}).to_string()),
            "not_found",
        ),
    ] {
        let shown = format!("{frame:?}");
        client.send(frame).await;
        assert_eq!(client.recv_type("error").await["code"], code, "{shown}");
    }
    // The author is the connection's name, whatever the frame says.
    client
        .send_json(&json!({"type": "send", "text": "hello", "author": "mallory", "ref": 1}))
        .await;
    let ack = client.recv_type("ack").await;
    assert_eq!(ack["item"]["author"], "ann");
    // Oversize: closed with MESSAGE_TOO_BIG.
    client
        .send(Message::text(
            json!({"type": "send", "text": "x".repeat(5000)}).to_string(),
        ))
        .await;
    let close = client.recv_close().await.expect("a close frame");
    assert_eq!(u16::from(close.code), MESSAGE_TOO_BIG);
}

#[tokio::test]
async fn bad_connection_requests_are_refused_before_the_upgrade() {
    let app = spawn_app(&["--allowed-origins", "https://school.example"]);
    let url = |query: &str| format!("{}/ws/live/r?{query}", app.ws_base);
    let status = |result: Result<WsClient, tokio_tungstenite::tungstenite::Error>| match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => 101,
    };
    assert_eq!(
        status(WsClient::try_connect(&url(""), Some("https://evil.example")).await),
        403
    );
    assert_eq!(
        status(WsClient::try_connect(&url(""), Some("https://school.example")).await),
        101
    );
    assert_eq!(
        status(WsClient::try_connect(&url("name=%07bell"), None).await),
        422
    );
    let long_name = format!("name={}", "n".repeat(25));
    assert_eq!(
        status(WsClient::try_connect(&url(&long_name), None).await),
        422
    );
    assert_eq!(
        status(WsClient::try_connect(&url("since=abc"), None).await),
        400
    );
    // The host token is not taken in the URL (see tests/host_token.rs).
    assert_eq!(
        status(WsClient::try_connect(&url("host_token=nope"), None).await),
        400
    );
}

#[tokio::test]
async fn a_silent_client_is_dropped_and_leaves_the_viewer_count() {
    let app = spawn_app(&["--heartbeat-secs", "1", "--client-timeout-secs", "2"]);
    let (mut watcher, _) = join(&app, "r", "name=watcher").await;
    let (mut silent, welcome) = join(&app, "r", "name=silent").await;
    assert_eq!(welcome["viewers"], 2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut counts = Vec::new();
    while tokio::time::Instant::now() < deadline && counts.last() != Some(&1) {
        counts.push(
            watcher.recv_type("viewers").await["count"]
                .as_u64()
                .unwrap(),
        );
    }
    assert_eq!(counts.last(), Some(&1), "counts seen: {counts:?}");
    let close = silent.recv_close().await.expect("a close frame");
    assert_eq!(u16::from(close.code), HEARTBEAT_TIMEOUT);
}
