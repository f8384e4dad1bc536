//! The video service's WebSocket end to end: a real server on an ephemeral port, real WebSocket
//! clients, a real SQLite file.

mod helpers;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use helpers::{RELAXED, http, spawn_app, viewer};
use rand::Rng;
use serde_json::{Value, json};
use service_kit::testing::{WsClient, get_json};
use shared_model::protocol::close::{
    HEARTBEAT_TIMEOUT, INVALID_PAYLOAD, MESSAGE_TOO_BIG, POLICY_VIOLATION,
};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

fn send_frame(text: &str, time: f64, reference: &str) -> Value {
    json!({"type": "send", "text": text, "time": time, "author": "tester", "ref": reference})
}

#[tokio::test]
async fn a_send_reaches_every_viewer_of_that_video_only_and_the_sender_gets_one_ack() {
    let app = spawn_app(RELAXED);
    let (mut sender, hello) = viewer(&app, "v1").await;
    assert_eq!(hello, json!({"type": "hello", "video": "v1", "viewers": 1}));
    let (mut other, hello) = viewer(&app, "v1").await;
    assert_eq!(hello["viewers"], 2);
    let (mut elsewhere, _) = viewer(&app, "v2").await;

    sender.send_json(&send_frame("前方高能", 12.5, "r1")).await;
    let ack = sender.recv_type("ack").await;
    assert_eq!(ack["ref"], "r1");
    assert_eq!(ack["item"]["text"], "前方高能");
    assert_eq!(ack["item"]["time"], 12.5);
    assert_eq!(ack["item"]["channel"], "v1");
    let id = ack["item"]["id"].clone();

    for viewer in [&mut sender, &mut other] {
        let frame = viewer.recv_type("danmaku").await;
        assert_eq!(frame["items"].as_array().unwrap().len(), 1);
        assert_eq!(frame["items"][0]["id"], id);
        assert_eq!(frame["items"][0]["author"], "tester");
    }
    // Nothing more for the sender (no second ack, no second copy) and no comment for v2; only
    // viewer counts may still arrive.
    for viewer in [&mut sender, &mut elsewhere] {
        let extra: Vec<Value> = viewer
            .drain_for(Duration::from_millis(800))
            .await
            .into_iter()
            .filter(|frame| frame["type"] != "viewers")
            .collect();
        assert!(extra.is_empty(), "unexpected frames: {extra:?}");
    }
}

/// Rooms write comments straight to a steady connection's socket; while the session answers a
/// request, they wait for it, so a sender's `ack` still comes before its own comment (the
/// protocol does not promise it, but pages show their own comment from the `ack`). The two race
/// on every send, so the test sends many.
#[tokio::test]
async fn a_sender_gets_its_ack_before_its_own_comment() {
    let app = spawn_app(RELAXED);
    let (mut sender, _) = viewer(&app, "v").await;
    let (mut other, _) = viewer(&app, "v").await;
    for n in 0..30 {
        let reference = format!("r{n}");
        sender
            .send_json(&send_frame(&format!("c{n}"), 1.0, &reference))
            .await;
        let mut order = Vec::new();
        while order.len() < 2 {
            let frame = sender.recv_json().await;
            match frame["type"].as_str() {
                Some("ack") => order.push(format!("ack {}", frame["ref"])),
                Some("danmaku") => order.push("danmaku".to_owned()),
                _ => {}
            }
        }
        assert_eq!(
            order,
            [format!("ack \"{reference}\""), "danmaku".to_owned()]
        );
        // The other viewer gets each comment too (direct, with nobody waiting).
        assert_eq!(
            other.recv_type("danmaku").await["items"][0]["text"],
            format!("c{n}")
        );
    }
}

#[tokio::test]
async fn comments_sent_together_reach_every_viewer_exactly_once_in_id_order() {
    let app = spawn_app(RELAXED);
    let (mut watcher, _) = viewer(&app, "v").await;
    let mut senders = Vec::new();
    for _ in 0..5 {
        senders.push(viewer(&app, "v").await.0);
    }
    for (n, sender) in senders.iter_mut().enumerate() {
        for k in 0..10 {
            sender
                .send_json(&send_frame(&format!("s{n}-{k}"), 1.0, "x"))
                .await;
        }
    }
    let mut ids = Vec::new();
    let mut frames = 0;
    while ids.len() < 50 {
        let frame = watcher.recv_type("danmaku").await;
        frames += 1;
        ids.extend(
            frame["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_i64().unwrap()),
        );
    }
    assert_eq!(ids.len(), 50);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 50, "no repeats");
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "oldest first across frames");
    assert!(frames <= 50);
    eprintln!("50 comments arrived in {frames} frames");
}

#[tokio::test]
async fn range_returns_exactly_the_window_ordered_by_time_and_survives_a_restart() {
    let mut app = spawn_app(RELAXED);
    let mut rng = rand::rng();
    let times: Vec<f64> = (0..1000)
        .map(|_| (rng.random_range(0.0..600.0f64) * 1000.0).round() / 1000.0)
        .collect();
    // Five senders in parallel, each waiting for its acks.
    let mut tasks = Vec::new();
    for chunk in times.chunks(200) {
        let chunk = chunk.to_vec();
        let url = format!("{}/ws/videos/movie", app.ws_base);
        tasks.push(tokio::spawn(async move {
            let mut client = WsClient::connect(&url).await;
            client.recv_type("hello").await;
            for (n, time) in chunk.iter().enumerate() {
                client
                    .send_json(&send_frame(&format!("t={time}"), *time, &n.to_string()))
                    .await;
                let ack = client.recv_type("ack").await;
                assert_eq!(ack["item"]["time"], *time);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }

    let check = |items: &Vec<Value>, from: f64, to: f64| {
        let mut expected: Vec<f64> = times
            .iter()
            .copied()
            .filter(|t| *t >= from && *t < to)
            .collect();
        expected.sort_by(f64::total_cmp);
        let got: Vec<f64> = items.iter().map(|i| i["time"].as_f64().unwrap()).collect();
        assert_eq!(got, expected, "window [{from}, {to})");
    };
    let (mut viewer, _) = helpers::viewer(&app, "movie").await;
    for (from, to) in [(0.0, 600.0), (100.0, 160.0), (599.5, 600.0), (33.3, 33.3)] {
        viewer
            .send_json(&json!({"type": "range", "from": from, "to": to, "ref": 9}))
            .await;
        let answer = viewer.recv_type("range").await;
        assert_eq!(
            (
                answer["from"].as_f64(),
                answer["to"].as_f64(),
                &answer["ref"]
            ),
            (Some(from), Some(to), &json!(9))
        );
        check(answer["items"].as_array().unwrap(), from, to);
    }
    drop(viewer);

    app.restart(RELAXED);
    let (mut viewer, _) = helpers::viewer(&app, "movie").await;
    viewer
        .send_json(&json!({"type": "range", "from": 0, "to": 86400}))
        .await;
    let answer = viewer.recv_type("range").await;
    assert_eq!(
        answer["items"].as_array().unwrap().len(),
        1000,
        "all kept across the restart"
    );
    check(answer["items"].as_array().unwrap(), 0.0, 86400.0);
    let over_http: Value = get_json(&format!(
        "{}/api/videos/movie/danmaku?from=100&to=160",
        app.base
    ))
    .await;
    check(over_http["items"].as_array().unwrap(), 100.0, 160.0);
}

#[tokio::test]
async fn bad_frames_get_their_errors_and_the_connection_stays_usable() {
    let app = spawn_app(RELAXED);
    let (mut client, _) = viewer(&app, "v").await;
    let cases: Vec<(Message, &str)> = vec![
        (Message::text("{not json"), "invalid_json"),
        (Message::text(r#"{"type":"dance"}"#), "unknown_type"),
        (
            Message::text(r#"{"type":"send","text":"hi","time":1,"author":"a","admin":1}"#),
            "invalid_json",
        ),
        (Message::binary(vec![1u8, 2, 3]), "unsupported_frame"),
        (
            Message::text(send_frame("hi", -1.0, "t1").to_string()),
            "invalid_time",
        ),
        (
            Message::text(send_frame("hi", 86_400.5, "t2").to_string()),
            "invalid_time",
        ),
        (
            Message::text(json!({"type": "send", "text": "hi", "author": "a"}).to_string()),
            "invalid_time",
        ),
        (
            Message::text(send_frame("", 1.0, "t3").to_string()),
            "text_empty",
        ),
        (
            Message::text(send_frame(&"x".repeat(101), 1.0, "t4").to_string()),
            "text_too_long",
        ),
        (
            Message::text(json!({"type": "range", "from": 10, "to": 5}).to_string()),
            "invalid_time",
        ),
        (
            Message::text(json!({"type": "checkin", "checkin": 1, "code": "123456"}).to_string()),
            "unknown_type",
        ),
    ];
    for (frame, code) in cases {
        let shown = format!("{frame:?}");
        client.send(frame).await;
        let error = client.recv_type("error").await;
        assert_eq!(error["code"], code, "{shown}: {error}");
        assert!(!error["message"].as_str().unwrap().is_empty());
    }
    // The ref of a bad request comes back with its error.
    client.send_json(&send_frame("", 1.0, "mine")).await;
    assert_eq!(client.recv_type("error").await["ref"], "mine");
    // Still usable: an application ping and a good comment.
    client.send_json(&json!({"type": "ping"})).await;
    assert_eq!(client.recv_json().await, json!({"type": "pong"}));
    client.send_json(&send_frame("still here", 2.0, "ok")).await;
    assert_eq!(client.recv_type("ack").await["ref"], "ok");
}

#[tokio::test]
async fn an_oversize_frame_closes_with_1009() {
    let app = spawn_app(RELAXED);
    let (mut client, _) = viewer(&app, "v").await;
    let big = send_frame(&"x".repeat(5 * 1024), 1.0, "big").to_string();
    client.send(Message::text(big)).await;
    let close = client.recv_close().await.expect("a close frame");
    assert_eq!(u16::from(close.code), MESSAGE_TOO_BIG, "{close:?}");
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_closes_with_1007() {
    let app = spawn_app(RELAXED);
    let (mut client, _) = viewer(&app, "v").await;
    client
        .send(Message::Frame(Frame::message(
            vec![b'{', 0xff, 0xfe, b'}'],
            OpCode::Data(Data::Text),
            true,
        )))
        .await;
    let close = client.recv_close().await.expect("a close frame");
    assert_eq!(u16::from(close.code), INVALID_PAYLOAD, "{close:?}");
}

#[tokio::test]
async fn fragmented_messages_are_reassembled_up_to_the_cap() {
    let app = spawn_app(RELAXED);
    let (mut client, _) = viewer(&app, "v").await;
    let whole = send_frame("in pieces", 3.0, "frag").to_string();
    let (a, b) = whole.split_at(10);
    let (b, c) = b.split_at(10);
    client
        .send(Message::Frame(Frame::message(
            a.as_bytes().to_vec(),
            OpCode::Data(Data::Text),
            false,
        )))
        .await;
    client
        .send(Message::Frame(Frame::message(
            b.as_bytes().to_vec(),
            OpCode::Data(Data::Continue),
            false,
        )))
        .await;
    client
        .send(Message::Frame(Frame::message(
            c.as_bytes().to_vec(),
            OpCode::Data(Data::Continue),
            true,
        )))
        .await;
    let ack = client.recv_type("ack").await;
    assert_eq!(ack["ref"], "frag");
    assert_eq!(ack["item"]["text"], "in pieces");

    // Fragments that add up to more than 4 KiB, each small: closed with MESSAGE_TOO_BIG.
    client
        .send(Message::Frame(Frame::message(
            vec![b' '; 3000],
            OpCode::Data(Data::Text),
            false,
        )))
        .await;
    client
        .send(Message::Frame(Frame::message(
            vec![b' '; 3000],
            OpCode::Data(Data::Continue),
            true,
        )))
        .await;
    let close = client.recv_close().await.expect("a close frame");
    assert_eq!(u16::from(close.code), MESSAGE_TOO_BIG, "{close:?}");
}

#[tokio::test]
async fn a_client_over_its_rate_gets_an_error_frame_and_nothing_is_stored() {
    let app = spawn_app(&["--rate-per-sec", "1", "--rate-burst", "3"]);
    let (mut client, _) = viewer(&app, "v").await;
    for n in 0..6 {
        client
            .send_json(&send_frame(&format!("n{n}"), 1.0, &format!("r{n}")))
            .await;
    }
    let mut acked = 0;
    let mut limited = 0;
    while acked + limited < 6 {
        let frame = client.recv_json().await;
        match frame["type"].as_str().unwrap() {
            "ack" => acked += 1,
            "error" => {
                assert_eq!(frame["code"], "rate_limited");
                limited += 1;
            }
            _ => {}
        }
    }
    assert_eq!((acked, limited), (3, 3));
    let stored: Value = get_json(&format!("{}/api/videos/v/danmaku", app.base)).await;
    assert_eq!(stored["items"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_foreign_origin_is_refused_before_the_upgrade() {
    let app = spawn_app(&["--allowed-origins", "https://player.example"]);
    let url = format!("{}/ws/videos/v", app.ws_base);
    let refused = WsClient::try_connect(&url, Some("https://evil.example")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        Err(other) => panic!("expected an HTTP 403, got {other}"),
        Ok(_) => panic!("a foreign origin was let in"),
    }
    let port = app.base.rsplit(':').next().unwrap();
    for origin in [
        "https://player.example".to_owned(),
        format!("http://127.0.0.1:{port}"),
    ] {
        let mut client = WsClient::try_connect(&url, Some(&origin))
            .await
            .expect("allowed");
        assert_eq!(client.recv_json().await["type"], "hello", "{origin}");
    }
    // No Origin at all: a non-browser client.
    assert!(WsClient::try_connect(&url, None).await.is_ok());
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_dropped_and_leaves_the_viewer_count() {
    let app = spawn_app(&["--heartbeat-secs", "1", "--client-timeout-secs", "2"]);
    let (mut watcher, _) = viewer(&app, "v").await;
    // The silent one never reads, so it never answers the server's pings.
    let (mut silent, hello) = viewer(&app, "v").await;
    assert_eq!(hello["viewers"], 2);
    let mut count = 0;
    // The watcher keeps reading (and so answers pings); it sees 2, then 1.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut saw_two = false;
    while tokio::time::Instant::now() < deadline {
        let frame = watcher.recv_type("viewers").await;
        count = frame["count"].as_u64().unwrap();
        saw_two |= count == 2;
        if saw_two && count == 1 {
            break;
        }
    }
    assert!(
        saw_two && count == 1,
        "the count went back to 1 (last {count})"
    );
    let close = silent.recv_close().await.expect("a close frame");
    assert_eq!(u16::from(close.code), HEARTBEAT_TIMEOUT, "{close:?}");
}

#[tokio::test]
async fn comments_posted_over_http_reach_websocket_viewers() {
    let app = spawn_app(RELAXED);
    let (mut viewer, _) = helpers::viewer(&app, "v").await;
    let response = http()
        .post(format!("{}/api/videos/v/danmaku", app.base))
        .json(&json!({"author": "web", "text": "over http", "time": 4.5, "mode": "top"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let frame = viewer.recv_type("danmaku").await;
    assert_eq!(frame["items"][0]["text"], "over http");
    assert_eq!(frame["items"][0]["mode"], "top");
    let bad = http()
        .post(format!("{}/api/videos/v/danmaku", app.base))
        .json(&json!({"author": "web", "text": "no time"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_time");
    let bad_query = http()
        .get(format!("{}/api/videos/v/danmaku?from=abc", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_query.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_too_slow_to_read_is_closed_with_1008_and_the_others_get_everything() {
    let app = spawn_app(&[
        "--rate-per-sec",
        "100000",
        "--rate-burst",
        "100000",
        "--max-queued-frames",
        "16",
        // The slow viewer answers no pings either: a timeout longer than any flood keeps this
        // test about the queue, whatever the machine's load.
        "--client-timeout-secs",
        "300",
    ]);
    let (mut watcher, _) = viewer(&app, "flood").await;
    // The slow viewer: a tiny receive buffer, and it reads nothing until the flood is over.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr = app.base.trim_start_matches("http://").parse().unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (slow, _) = tokio_tungstenite::client_async(
        format!("{}/ws/videos/flood", app.ws_base),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    let mut slow = WsClient::from_stream(slow);

    // Posters flood the video until the watcher sees the viewer count drop to 1 (the slow one
    // was dropped), or a bound is reached. How much the kernel buffers before the server notices
    // differs between machines; the count tells us when it did.
    const POSTERS: usize = 8;
    const MOST_EACH: usize = 5_000;
    let stop = Arc::new(AtomicBool::new(false));
    let text = "弾".repeat(100);
    let posters: Vec<_> = (0..POSTERS)
        .map(|p| {
            let (base, text, stop) = (app.base.clone(), text.clone(), stop.clone());
            tokio::spawn(async move {
                let client = http();
                let mut posted = 0;
                while posted < MOST_EACH && !stop.load(Ordering::SeqCst) {
                    let response = client
                        .post(format!("{base}/api/videos/flood/danmaku"))
                        .json(&json!({"author": format!("p{p}"), "text": text, "time": posted as f64}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 201);
                    posted += 1;
                }
                posted
            })
        })
        .collect();
    // The watcher reads everything as it comes, in its own task.
    let expected = Arc::new(AtomicUsize::new(usize::MAX));
    let reader = {
        let (stop, expected) = (stop.clone(), expected.clone());
        tokio::spawn(async move {
            let mut seen = HashSet::new();
            let mut slow_dropped = false;
            // The total is known only once the posters stop, maybe after the last frame came:
            // wait in short slices, so the loop sees the total as soon as it is set.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while seen.len() < expected.load(Ordering::SeqCst) {
                let next = tokio::time::timeout(Duration::from_millis(200), watcher.recv_json());
                let Ok(frame) = next.await else {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the watcher got {} comments and then nothing",
                        seen.len()
                    );
                    continue;
                };
                match frame["type"].as_str() {
                    Some("danmaku") => {
                        for item in frame["items"].as_array().unwrap() {
                            assert!(seen.insert(item["id"].as_i64().unwrap()), "a repeat");
                        }
                    }
                    Some("viewers") if frame["count"] == 1 => {
                        slow_dropped = true;
                        stop.store(true, Ordering::SeqCst);
                    }
                    _ => {}
                }
            }
            (seen.len(), slow_dropped)
        })
    };
    let mut total = 0;
    for poster in posters {
        total += poster.await.unwrap();
    }
    expected.store(total, Ordering::SeqCst);
    let (watched, slow_dropped) = reader.await.unwrap();
    assert!(
        slow_dropped,
        "the viewer count never dropped to 1 after {total} comments"
    );
    assert_eq!(
        watched, total,
        "the reading viewer got every comment exactly once"
    );

    // Now the slow one reads: some comments, then a close with POLICY_VIOLATION and a reason.
    let mut slow_items = 0;
    let close = loop {
        match slow.next_message().await {
            Some(Message::Text(text)) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                slow_items += frame["items"].as_array().map_or(0, Vec::len);
            }
            Some(Message::Close(frame)) => break frame.expect("a close frame with a code"),
            Some(_) => {}
            None => panic!("the connection ended without a close frame"),
        }
    };
    assert_eq!(u16::from(close.code), POLICY_VIOLATION, "{close:?}");
    assert!(close.reason.contains("too slow"), "{close:?}");
    assert!(
        slow_items < total,
        "the slow viewer was cut off ({slow_items} of {total})"
    );
    eprintln!("the slow viewer got {slow_items} of {total} comments before it was closed");
}
