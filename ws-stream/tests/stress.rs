//! The live service as a process under stress: viewers that never read while the room is
//! flooded are closed with 1008, everyone else gets everything, and the server's memory stays
//! bounded (read from /proc); SIGTERM closes every connection with 1001 and loses nothing.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use service_kit::testing::{Binary, TestStore, WsClient};
use shared_model::protocol::close::{GOING_AWAY, POLICY_VIOLATION};
use tokio_tungstenite::tungstenite::Message;

fn start(store: &TestStore) -> Binary {
    Binary::start(
        env!("CARGO_BIN_EXE_ws-stream"),
        store,
        &[
            "--rate-per-sec",
            "100000",
            "--rate-burst",
            "100000",
            "--workers",
            "2",
            // The stalled viewers answer no pings either: a timeout longer than any flood keeps
            // these tests about the queue, whatever the machine's load.
            "--client-timeout-secs",
            "300",
        ],
    )
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc is readable");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

/// A viewer with a tiny receive buffer that reads nothing until told to.
async fn slow_viewer(server: &Binary, room: &str) -> WsClient {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr = server.base.trim_start_matches("http://").parse().unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(
        format!("{}/ws/live/{room}?name=slow", server.ws_base),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    WsClient::from_stream(ws)
}

const SLOW_VIEWERS: usize = 10;
const SENDERS: usize = 8;
/// Most comments each sender sends before the test gives up waiting for the slow ones to go.
const MOST_EACH: usize = 4_000;
/// The bound on the server's memory growth while it is flooded, in MiB (measured: about 8). The
/// frames are shared between connections, so without per-connection queue bounds stalled viewers
/// would keep the whole flood alive and memory would grow for as long as the flood lasts.
const MAX_RSS_GROWTH_MIB: u64 = 48;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_that_never_read_are_closed_and_memory_stays_bounded() {
    let store = TestStore::new("live");
    let server = start(&store);
    let room_url = format!("{}/ws/live/flood", server.ws_base);
    let mut watcher = WsClient::connect(&format!("{room_url}?name=watcher")).await;
    watcher.recv_type("welcome").await;
    let mut slow = Vec::new();
    for _ in 0..SLOW_VIEWERS {
        slow.push(slow_viewer(&server, "flood").await);
    }
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let mut client = WsClient::connect(&format!("{room_url}?name=sender{s}")).await;
        client.recv_type("welcome").await;
        senders.push(client);
    }
    // Everyone is in once the watcher is told the full count.
    let everyone = 1 + SLOW_VIEWERS + SENDERS;
    loop {
        let frame = watcher.recv_type("viewers").await;
        if frame["count"] == everyone {
            break;
        }
    }
    let rss_before = rss_kib(server.child.id());

    let stop = Arc::new(AtomicBool::new(false));
    let text = "弾".repeat(100);
    let sending: Vec<_> = senders
        .into_iter()
        .map(|mut client| {
            let (stop, text) = (stop.clone(), text.clone());
            tokio::spawn(async move {
                let mut sent = 0;
                while sent < MOST_EACH && !stop.load(Ordering::SeqCst) {
                    client
                        .send_json(&json!({"type": "send", "text": text, "ref": sent}))
                        .await;
                    // Reading until the ack also drains the room's frames to this sender.
                    loop {
                        let frame = client.recv_json().await;
                        if frame["type"] == "ack" {
                            break;
                        }
                        assert_ne!(frame["type"], "error", "{frame}");
                    }
                    sent += 1;
                }
                (sent, client)
            })
        })
        .collect();

    // The watcher reads as it comes; the count drops by ten when the slow ones are gone.
    let everyone_else = 1 + SENDERS as u64;
    let mut seen = HashSet::new();
    let mut peak_rss = rss_before;
    while !stop.load(Ordering::SeqCst) {
        let frame = watcher.recv_json().await;
        match frame["type"].as_str() {
            Some("danmaku") => {
                for item in frame["items"].as_array().unwrap() {
                    assert!(seen.insert(item["id"].as_i64().unwrap()), "a repeat");
                }
                peak_rss = peak_rss.max(rss_kib(server.child.id()));
            }
            Some("viewers") if frame["count"].as_u64() == Some(everyone_else) => {
                stop.store(true, Ordering::SeqCst);
            }
            _ => {}
        }
        if sending.iter().all(|task| task.is_finished()) {
            break;
        }
    }
    let mut total = 0;
    for task in sending {
        total += task.await.unwrap().0;
    }
    assert!(
        stop.load(Ordering::SeqCst),
        "the slow viewers were never dropped ({total} comments)"
    );
    while seen.len() < total {
        let frame = watcher.recv_json().await;
        if frame["type"] == "danmaku" {
            for item in frame["items"].as_array().unwrap() {
                assert!(seen.insert(item["id"].as_i64().unwrap()), "a repeat");
            }
        }
    }
    assert_eq!(
        seen.len(),
        total,
        "the reading viewer got every comment exactly once"
    );
    peak_rss = peak_rss.max(rss_kib(server.child.id()));
    let growth_mib = peak_rss.saturating_sub(rss_before) / 1024;
    eprintln!(
        "{total} comments; server RSS {} MiB before, peak {} MiB (+{growth_mib} MiB)",
        rss_before / 1024,
        peak_rss / 1024
    );
    assert!(
        growth_mib < MAX_RSS_GROWTH_MIB,
        "memory grew by {growth_mib} MiB"
    );

    for mut viewer in slow {
        let close = loop {
            match viewer.next_message().await {
                Some(Message::Close(frame)) => break frame.expect("a close code"),
                Some(_) => continue,
                None => panic!("the slow viewer's connection ended without a close frame"),
            }
        };
        assert_eq!(u16::from(close.code), POLICY_VIOLATION, "{close:?}");
    }
}

#[tokio::test]
async fn sigterm_closes_everyone_with_1001_and_loses_nothing() {
    let store = TestStore::new("live");
    let mut server = start(&store);
    let url = format!("{}/ws/live/r?name=ann", server.ws_base);
    let mut a = WsClient::connect(&url).await;
    let mut b = WsClient::connect(&url).await;
    a.recv_type("welcome").await;
    b.recv_type("welcome").await;
    let mut acked = Vec::new();
    for n in 0..5 {
        a.send_json(&json!({"type": "send", "text": format!("c{n}"), "ref": n}))
            .await;
        acked.push(a.recv_type("ack").await["item"].clone());
    }
    server.terminate();
    for client in [&mut a, &mut b] {
        let close = client.recv_close().await.expect("a close frame");
        assert_eq!(u16::from(close.code), GOING_AWAY, "{close:?}");
    }
    let status = server.wait_exit(Duration::from_secs(10)).expect("it exits");
    assert!(status.success(), "{status}");
    let restarted = start(&store);
    let mut c = WsClient::connect(&format!("{}/ws/live/r", restarted.ws_base)).await;
    let welcome: Value = c.recv_type("welcome").await;
    assert_eq!(welcome["history"], json!(acked));
}
