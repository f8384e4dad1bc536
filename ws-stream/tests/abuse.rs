//! The live service's WebSocket against one abusive client: the limits live in the shared
//! session (the video service's `tests/abuse.rs` covers them in depth); these check that the
//! live rooms get them too.

mod helpers;

use std::time::Duration;

use helpers::{join, spawn_app};
use serde_json::Value;
use service_kit::testing::raw::{self, RawWs, TEXT};
use shared_model::protocol::close::MESSAGE_TOO_BIG;

#[tokio::test]
async fn a_frame_header_over_the_cap_closes_with_1009_before_its_payload() {
    let app = spawn_app(&[]);
    let mut attacker = RawWs::connect(app.addr, "/ws/live/lobby?name=eve").await;
    let welcome = attacker.next_frame(Duration::from_secs(10)).await.unwrap();
    assert_eq!(welcome.opcode, TEXT, "{welcome:?}");
    // Only the header, declaring 2^40 bytes: the server must answer without waiting for them.
    attacker
        .write(&raw::client_header(TEXT, true, 1 << 40))
        .await
        .unwrap();
    let close = attacker
        .recv_close(Duration::from_secs(10))
        .await
        .expect("a close frame");
    assert_eq!(close.close_code(), Some(MESSAGE_TOO_BIG), "{close:?}");
    // The room goes on for others.
    let (_viewer, welcome) = join(&app, "lobby", "name=ann").await;
    assert_eq!(welcome["room"], "lobby");
}

#[tokio::test]
async fn a_client_over_its_connection_cap_is_refused_with_429() {
    let app = spawn_app(&["--max-connections-per-client", "2"]);
    let _a = join(&app, "lobby", "name=a").await;
    let _b = join(&app, "other", "name=b").await;
    let (status, answer) = RawWs::try_upgrade(app.addr, "/ws/live/lobby?name=c").await;
    assert_eq!(status, 429, "{answer}");
    let body: Value = serde_json::from_str(&answer[answer.find('{').unwrap()..]).unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
}
