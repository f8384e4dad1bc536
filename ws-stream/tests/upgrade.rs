//! The connection after a WebSocket upgrade, which the services serve outside actix-http's
//! HTTP/1 dispatcher (service-kit's `upgrade.rs`): what a client sends before it has the answer
//! is kept, a request that asks for an upgrade but is answered otherwise gets its whole answer
//! and then a closed connection, and a finished connection closes cleanly.

mod helpers;

use std::time::Duration;

use helpers::{join, spawn_app};
use serde_json::Value;
use service_kit::testing::raw::{self, CLOSE, RawWs, TEXT};
/// The close code of a normal closure.
const NORMAL: u16 = 1000;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn frames_sent_right_behind_the_upgrade_request_are_all_answered() {
    let app = spawn_app(&[]);
    // Two comments in the same write as the request: the server reads them with the request's
    // head, before it has even answered.
    let mut first = raw::client_frame(TEXT, true, br#"{"type":"send","text":"one","ref":"1"}"#);
    first.extend(raw::client_frame(
        TEXT,
        true,
        br#"{"type":"send","text":"two","ref":"2"}"#,
    ));
    let mut eager = RawWs::connect_sending(app.addr, "/ws/live/early?name=eve", &first).await;

    let mut acks = Vec::new();
    while acks.len() < 2 {
        let frame = eager
            .next_frame(WAIT)
            .await
            .expect("the connection stays open");
        if frame.opcode != TEXT {
            continue; // the heartbeat's ping
        }
        let frame: Value = serde_json::from_slice(&frame.payload).unwrap();
        if frame["type"] == "ack" {
            acks.push(frame["ref"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(acks, ["1", "2"]);
    // Stored: the next viewer's history has both.
    let (_viewer, welcome) = join(&app, "early", "name=ann").await;
    let texts: Vec<&str> = welcome["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["one", "two"]);
}

#[tokio::test]
async fn an_upgrade_request_answered_otherwise_gets_the_whole_answer_and_a_close() {
    let app = spawn_app(&[]);
    // A route that is not a WebSocket answers as it always does...
    let (status, answer) = RawWs::try_upgrade(app.addr, "/healthz").await;
    assert_eq!(status, 200, "{answer}");
    let head = answer.to_ascii_lowercase();
    assert!(head.contains("connection: close"), "{answer}");
    assert!(answer.ends_with(r#"{"status":"ok"}"#), "{answer}");
    // ...and so does one that does not exist, with its JSON error.
    let (status, answer) = RawWs::try_upgrade(app.addr, "/ws/nowhere").await;
    assert_eq!(status, 404, "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let body: Value = serde_json::from_str(body).expect("a JSON error body");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
}

#[tokio::test]
async fn a_client_that_closes_gets_the_close_answered_and_then_the_end_of_the_connection() {
    let app = spawn_app(&[]);
    let mut client = RawWs::connect(app.addr, "/ws/live/bye?name=eve").await;
    let welcome = client.next_frame(WAIT).await.unwrap();
    assert_eq!(welcome.opcode, TEXT, "{welcome:?}");
    client
        .write(&raw::client_frame(CLOSE, true, &NORMAL.to_be_bytes()))
        .await
        .unwrap();
    let (mut reader, _writer) = client.into_split();
    let close = reader.recv_close(WAIT).await.expect("the close answered");
    assert_eq!(close.close_code(), Some(NORMAL), "{close:?}");
    // Then a clean end (FIN, not a reset), even though this client never closes its side.
    reader
        .read_to_end(WAIT)
        .await
        .expect("the server ends the connection with a FIN");
}
