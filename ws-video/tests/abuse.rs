//! One anonymous client against the video service's WebSocket, attacking as an attacker would:
//! a frame header that declares a terabyte, a reader that stops reading during a flood, many
//! sockets sharing one address, garbage frames. The real server (the real binary where its
//! memory is measured), raw TCP sockets where a WebSocket client would not misbehave enough.

mod helpers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use helpers::{RELAXED, http, spawn_app, viewer};
use serde_json::{Value, json};
use service_kit::testing::raw::{self, RawWs, TEXT};
use service_kit::testing::{Binary, TestStore, WsClient};
use shared_model::protocol::close::{MESSAGE_TOO_BIG, POLICY_VIOLATION};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

fn send_frame(text: &str, time: f64, reference: &str) -> Value {
    json!({"type": "send", "text": text, "time": time, "author": "tester", "ref": reference})
}

fn addr_of(base: &str) -> SocketAddr {
    base.trim_start_matches("http://")
        .parse()
        .expect("a base URL with an address")
}

/// The next answer to a request (an `ack` or an `error`), skipping viewer counts and comments.
async fn next_answer(client: &mut WsClient) -> Value {
    loop {
        let frame = client.recv_json().await;
        if frame["type"] == "ack" || frame["type"] == "error" {
            return frame;
        }
    }
}

/// Reads `n` answers (acks and errors, skipping viewer counts and comments) and counts them as
/// `(acked, rate_limited)`; any other error fails the test.
async fn count_answers(client: &mut WsClient, n: usize) -> (usize, usize) {
    let (mut acked, mut limited) = (0, 0);
    while acked + limited < n {
        let frame = client.recv_json().await;
        match frame["type"].as_str() {
            Some("ack") => acked += 1,
            Some("error") => {
                assert_eq!(frame["code"], "rate_limited", "{frame}");
                limited += 1;
            }
            _ => {}
        }
    }
    (acked, limited)
}

#[tokio::test]
async fn a_frame_header_declaring_a_terabyte_is_refused_with_1009_before_its_payload() {
    let store = TestStore::new("v");
    let server = Binary::start(env!("CARGO_BIN_EXE_ws-video"), &store, &["--workers", "1"]);
    let addr = addr_of(&server.base);
    let pid = server.child.id();
    // Warm up: a connection that comes and goes, so the baseline has the session's allocations.
    let mut warm = RawWs::connect(addr, "/ws/videos/v").await;
    assert_eq!(
        warm.next_frame(Duration::from_secs(10))
            .await
            .unwrap()
            .opcode,
        TEXT
    );
    drop(warm);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = raw::vm_rss_kib(pid);

    let mut attacker = RawWs::connect(addr, "/ws/videos/v").await;
    let hello = attacker.next_frame(Duration::from_secs(10)).await.unwrap();
    assert_eq!(hello.opcode, TEXT, "{hello:?}");
    // A text frame that says 2^40 bytes follow, then 32 MiB of them (as much as the server
    // takes; the kernel's buffers alone hold several MiB on loopback, so less would prove
    // nothing), while the test reads what the server says. The feeder keeps its half open
    // afterwards: an end of stream would end the connection and free whatever it held.
    let (mut from_server, mut writer) = attacker.into_split();
    let written = Arc::new(AtomicU64::new(0));
    let feeder = {
        let written = written.clone();
        tokio::spawn(async move {
            let mut bytes = raw::client_header(TEXT, true, 1 << 40);
            bytes.resize(bytes.len() + 64 * 1024, b'x');
            for _ in 0..512 {
                if writer.write_all(&bytes).await.is_err() {
                    break;
                }
                written.fetch_add(bytes.len() as u64, Ordering::SeqCst);
                bytes.truncate(64 * 1024);
            }
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(writer);
        })
    };
    let close = tokio::time::timeout(
        Duration::from_secs(10),
        from_server.recv_close(Duration::from_secs(60)),
    )
    .await;
    // Give the feeder time to push whatever the server still reads.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = raw::vm_rss_kib(pid);
    feeder.abort();
    let grew = after.saturating_sub(before);
    eprintln!(
        "RSS {before} KiB -> {after} KiB while the client wrote {} KiB",
        written.load(Ordering::SeqCst) / 1024
    );
    let close = close
        .expect("a close frame within 10 s")
        .expect("a close frame before the connection ends");
    assert_eq!(close.close_code(), Some(MESSAGE_TOO_BIG), "{close:?}");
    assert!(grew < 4 * 1024, "the server grew by {grew} KiB");
    // And the connection is over (so the kernel's buffers for it are freed too).
    let ended = from_server.read_to_end(Duration::from_secs(10)).await;
    eprintln!("the attacker's connection ended with {ended:?}");
    // The service goes on.
    let mut next = RawWs::connect(addr, "/ws/videos/v").await;
    assert_eq!(
        next.next_frame(Duration::from_secs(10))
            .await
            .unwrap()
            .opcode,
        TEXT
    );
}

/// Whether the server's end of the connection from `client` is still open (ESTABLISHED, or
/// CLOSE-WAIT: the client closed but the server did not).
fn server_end_open(server: SocketAddr, client: SocketAddr) -> bool {
    matches!(raw::tcp_state(server, client), Some(0x01 | 0x08))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_never_reads_during_a_flood_is_dropped_within_the_client_timeout() {
    const TIMEOUT_SECS: u64 = 3;
    let timeout = TIMEOUT_SECS.to_string();
    let app = spawn_app(&[
        "--rate-per-sec",
        "100000",
        "--rate-burst",
        "100000",
        "--heartbeat-secs",
        "1",
        "--client-timeout-secs",
        &timeout,
    ]);
    // The healthy viewer reads everything in its own task and reports the viewer counts.
    let (mut watcher, _) = viewer(&app, "flood").await;
    let lowest_count = Arc::new(AtomicU64::new(u64::MAX));
    let saw_two = Arc::new(AtomicBool::new(false));
    let watching = {
        let (lowest_count, saw_two) = (lowest_count.clone(), saw_two.clone());
        tokio::spawn(async move {
            loop {
                let Some(message) = watcher.stream.next().await else {
                    return;
                };
                let Ok(Message::Text(text)) = message else {
                    continue;
                };
                let frame: Value = serde_json::from_str(&text).unwrap();
                if frame["type"] == "viewers" {
                    let count = frame["count"].as_u64().unwrap();
                    if count == 2 {
                        saw_two.store(true, Ordering::SeqCst);
                    } else if saw_two.load(Ordering::SeqCst) {
                        lowest_count.fetch_min(count, Ordering::SeqCst);
                    }
                }
            }
        })
    };
    // The stalled viewer: a tiny receive buffer, and it never reads. It does ping every half
    // second, as a client whose reading part hung while the rest goes on would: the server's
    // heartbeat hears from it, and only the unread data can show it is gone.
    let stalled = RawWs::connect_with(app.addr, "/ws/videos/flood", Some(4096)).await;
    let stalled_addr = stalled.local_addr();
    assert!(
        server_end_open(app.addr, stalled_addr),
        "the server's end is open"
    );
    let (mut stalled_reader, mut stalled_writer) = stalled.into_split();
    let pinging = tokio::spawn(async move {
        let ping = raw::client_frame(raw::PING, true, b"");
        while stalled_writer.write_all(&ping).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });

    // Flood until the stalled viewer stops counting: its queue of 256 frames overflowed, which
    // a session whose socket still took data would have drained. Big comments (400 bytes of
    // text each) fill the kernel's buffers sooner.
    let stop = Arc::new(AtomicBool::new(false));
    let text = "😀".repeat(100);
    let posters: Vec<_> = (0..8)
        .map(|p| {
            let (base, text, stop) = (app.base.clone(), text.clone(), stop.clone());
            tokio::spawn(async move {
                let client = http();
                let mut posted = 0u32;
                while posted < 20_000 && !stop.load(Ordering::SeqCst) {
                    let response = client
                        .post(format!("{base}/api/videos/flood/danmaku"))
                        .json(&json!({"author": format!("poster-{p}-😀😀😀😀😀😀😀😀😀😀"), "text": text, "time": 1.0}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 201);
                    posted += 1;
                }
            })
        })
        .collect();
    let flood_deadline = Instant::now() + Duration::from_secs(60);
    while lowest_count.load(Ordering::SeqCst) > 1 {
        assert!(
            Instant::now() < flood_deadline,
            "a minute of flooding and the stalled viewer still counts"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stalled_since = Instant::now();
    stop.store(true, Ordering::SeqCst);
    for poster in posters {
        poster.await.unwrap();
    }

    // Within the client timeout and a few seconds more, the server has let go of the socket,
    // though the client never read a byte.
    let deadline = stalled_since + Duration::from_secs(TIMEOUT_SECS + 5);
    while server_end_open(app.addr, stalled_addr) {
        assert!(
            Instant::now() < deadline,
            "the server still holds the stalled viewer's socket {:?} after the flood",
            stalled_since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "the server dropped the stalled viewer {:?} after it stopped counting",
        stalled_since.elapsed()
    );
    // What the client still has buffered is all it gets: then the connection is gone.
    pinging.abort();
    let ended = stalled_reader.read_to_end(Duration::from_secs(10)).await;
    eprintln!("the stalled viewer's connection ended with {ended:?}");
    assert_eq!(lowest_count.load(Ordering::SeqCst), 1);
    watching.abort();
}

#[tokio::test]
async fn many_sockets_from_one_address_share_one_comment_budget() {
    let app = spawn_app(&["--rate-per-sec", "1", "--rate-burst", "5"]);
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(viewer(&app, "v").await.0);
    }
    let started = Instant::now();
    for (c, client) in clients.iter_mut().enumerate() {
        for n in 0..4 {
            client
                .send_json(&send_frame("hi", 1.0, &format!("c{c}n{n}")))
                .await;
        }
    }
    let (mut acked, mut limited) = (0, 0);
    for client in &mut clients {
        let (a, l) = count_answers(client, 4).await;
        acked += a;
        limited += l;
    }
    // The burst, plus one per second that passed: not five bursts.
    let earned = started.elapsed().as_secs() as usize;
    assert!(
        acked >= 5 && acked <= 5 + earned,
        "{acked} acked, {limited} refused in {earned} s"
    );
    assert_eq!(acked + limited, 20);
}

#[tokio::test]
async fn an_http_post_and_websocket_sends_share_the_budget() {
    let app = spawn_app(&["--rate-per-sec", "1", "--rate-burst", "3"]);
    let (mut client, _) = viewer(&app, "v").await;
    let started = Instant::now();
    for n in 0..3 {
        let response = http()
            .post(format!("{}/api/videos/v/danmaku", app.base))
            .json(&json!({"author": "web", "text": format!("http {n}"), "time": 1.0}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    for n in 0..3 {
        client
            .send_json(&send_frame("ws", 1.0, &format!("w{n}")))
            .await;
    }
    let (acked, limited) = count_answers(&mut client, 3).await;
    let earned = started.elapsed().as_secs() as usize;
    assert!(
        acked <= earned,
        "the posts spent the burst, yet {acked} sends were taken ({limited} refused) in {earned} s"
    );
    // And the other way: the socket's sends leave nothing for a post.
    let response = http()
        .post(format!("{}/api/videos/v/danmaku", app.base))
        .json(&json!({"author": "web", "text": "one more", "time": 1.0}))
        .send()
        .await
        .unwrap();
    if started.elapsed() < Duration::from_secs(1) {
        assert_eq!(response.status(), 429);
    }
}

#[tokio::test]
async fn a_client_over_its_connection_cap_is_refused_until_one_closes() {
    // The default cap: 100 sockets from one address.
    let app = spawn_app(&[]);
    let mut open = Vec::new();
    for _ in 0..100 {
        open.push(viewer(&app, "v").await.0);
    }
    let (status, answer) = RawWs::try_upgrade(app.addr, "/ws/videos/v").await;
    assert_eq!(status, 429, "{answer}");
    let body = &answer[answer.find('{').expect("a JSON body")..];
    let body: Value = serde_json::from_str(body).expect("a JSON error");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("100"),
        "{body}"
    );
    // Close one; once the server has seen it go, a new one is let in.
    let mut closing = open.pop().unwrap();
    closing.stream.close(None).await.unwrap();
    // The server answers the close; the test only waits for it.
    let _ = closing.recv_close().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, answer) = RawWs::try_upgrade(app.addr, "/ws/videos/v").await;
        if status == 101 {
            break;
        }
        assert_eq!(status, 429, "{answer}");
        assert!(
            Instant::now() < deadline,
            "still refused 10 s after one closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn malformed_frames_spend_the_comment_budget() {
    let app = spawn_app(&["--rate-per-sec", "1", "--rate-burst", "4"]);
    let (mut client, _) = viewer(&app, "v").await;
    let started = Instant::now();
    // Four kinds of garbage, each with its error frame; they spend the burst of 4.
    let garbage: Vec<(Message, &str)> = vec![
        (Message::text("{not json"), "invalid_json"),
        (Message::text(r#"{"type":"dance"}"#), "unknown_type"),
        (Message::binary(vec![1u8, 2, 3]), "unsupported_frame"),
        (
            Message::text(json!({"type": "range", "from": 10, "to": 5}).to_string()),
            "invalid_time",
        ),
    ];
    for (frame, code) in garbage {
        client.send(frame).await;
        assert_eq!(client.recv_type("error").await["code"], code);
    }
    client.send_json(&send_frame("hi", 1.0, "good")).await;
    let answer = next_answer(&mut client).await;
    // A token comes back each second; the garbage took the burst.
    if started.elapsed() < Duration::from_secs(1) {
        assert_eq!(answer["code"], "rate_limited", "{answer}");
    }
}

#[tokio::test]
async fn a_client_that_sends_only_garbage_is_closed_with_1008() {
    // The default bound: 20 malformed frames in a row.
    let app = spawn_app(RELAXED);
    let (mut client, _) = viewer(&app, "v").await;
    // An accepted frame starts the count again: 19 bad ones, a good one, then garbage only.
    for n in 0..19 {
        client.send(Message::text(format!("garbage {n}"))).await;
        assert_eq!(next_answer(&mut client).await["code"], "invalid_json");
    }
    client.send_json(&send_frame("hi", 1.0, "good")).await;
    assert_eq!(next_answer(&mut client).await["type"], "ack");
    for n in 0..25 {
        client.send(Message::text(format!("garbage {n}"))).await;
    }
    let mut errors = 0;
    let close = loop {
        match client.next_message().await {
            Some(Message::Text(text)) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                if frame["type"] == "error" {
                    assert_eq!(frame["code"], "invalid_json", "{frame}");
                    errors += 1;
                }
            }
            Some(Message::Close(frame)) => break frame.expect("a close code"),
            Some(_) => {}
            None => panic!("the connection ended without a close frame after {errors} errors"),
        }
    };
    assert_eq!(u16::from(close.code), POLICY_VIOLATION, "{close:?}");
    assert!(close.reason.contains("malformed"), "{close:?}");
    assert_eq!(errors, 20, "closed at the 20th malformed frame in a row");
}

#[tokio::test]
async fn an_error_frame_names_the_field_of_the_wrong_type() {
    let app = spawn_app(RELAXED);
    let (mut client, _) = viewer(&app, "v").await;
    client
        .send(Message::text(
            r#"{"type":"send","text":5,"time":1,"author":"a","ref":"r"}"#,
        ))
        .await;
    let error = client.recv_type("error").await;
    assert_eq!(error["code"], "invalid_json", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("field text"), "{message}");
    client
        .send_json(&json!({"type": "range", "from": 0, "to": "ten"}))
        .await;
    let error = client.recv_type("error").await;
    assert!(
        error["message"].as_str().unwrap().contains("field to"),
        "{error}"
    );
}
