//! Test helpers: the live service on an ephemeral port with a fresh SQLite file.
#![allow(dead_code, unused_imports)] // each test binary uses a different part of this module

use serde_json::{Value, json};
pub use service_kit::testing::http_client as http;
use service_kit::testing::{TestService, WsClient};

/// Generous limits, so tests that are not about limits do not trip them.
pub const RELAXED: &[&str] = &["--rate-per-sec", "100000", "--rate-burst", "100000"];

/// Starts the live service with `args` on a fresh database.
pub fn spawn_app(args: &[&str]) -> TestService {
    TestService::start(
        &ws_stream::config::INFO,
        ws_stream::build_with_listener,
        args,
    )
}

/// Connects to `room` with `query` (say `name=ann`), past the `welcome`; returns both.
pub async fn join(app: &TestService, room: &str, query: &str) -> (WsClient, Value) {
    let mut client = WsClient::connect(&format!("{}/ws/live/{room}?{query}", app.ws_base)).await;
    let welcome = client.recv_json().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (client, welcome)
}

/// Sends `text` and waits for its ack; returns the stored item.
pub async fn say(client: &mut WsClient, text: &str) -> Value {
    client
        .send_json(&json!({"type": "send", "text": text, "ref": text}))
        .await;
    loop {
        let frame = client.recv_json().await;
        if frame["type"] == "ack" && frame["ref"] == text {
            return frame["item"].clone();
        }
        assert_ne!(frame["type"], "error", "{frame}");
    }
}

/// The ids of the comments in a list of items.
pub fn ids(items: &Value) -> Vec<i64> {
    items
        .as_array()
        .expect("a list")
        .iter()
        .map(|item| item["id"].as_i64().expect("an id"))
        .collect()
}

/// Waits (up to 10 s) until `room` holds a comment with an id of at least `id` (read from the
/// history route), so a test acts once the effect it waits for has happened.
pub async fn wait_for_comments(app: &TestService, room: &str, id: i64) {
    let url = format!("{}/api/rooms/{room}/history?limit=1", app.base);
    service_kit::testing::wait_for_json(&url, &format!("comment {id} in {room}"), |page| {
        page["next"].as_i64().expect("next") >= id
    })
    .await;
}
