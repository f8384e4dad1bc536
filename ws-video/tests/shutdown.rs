//! SIGTERM against the real binary: every viewer is closed with 1001, the process exits
//! cleanly, and every acknowledged comment is there after a restart.

use std::time::Duration;

use serde_json::json;
use service_kit::testing::{Binary, TestStore, WsClient};
use shared_model::protocol::close::GOING_AWAY;

fn start(store: &TestStore) -> Binary {
    Binary::start(env!("CARGO_BIN_EXE_ws-video"), store, &["--workers", "1"])
}

#[tokio::test]
async fn sigterm_closes_every_viewer_with_1001_and_loses_nothing() {
    let store = TestStore::new("video");
    let mut server = start(&store);
    let url = format!("{}/ws/videos/v", server.ws_base);
    let mut a = WsClient::connect(&url).await;
    let mut b = WsClient::connect(&url).await;
    a.recv_type("hello").await;
    b.recv_type("hello").await;
    let mut acked = Vec::new();
    for n in 0..5 {
        a.send_json(
            &json!({"type": "send", "text": format!("c{n}"), "time": n, "author": "a", "ref": n}),
        )
        .await;
        acked.push(a.recv_type("ack").await["item"].clone());
    }

    server.terminate();
    for client in [&mut a, &mut b] {
        let close = client.recv_close().await.expect("a close frame");
        assert_eq!(u16::from(close.code), GOING_AWAY, "{close:?}");
    }
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("the server exits after SIGTERM");
    assert!(status.success(), "{status}");

    let restarted = start(&store);
    let mut viewer = WsClient::connect(&format!("{}/ws/videos/v", restarted.ws_base)).await;
    viewer.recv_type("hello").await;
    viewer
        .send_json(&json!({"type": "range", "from": 0, "to": 100}))
        .await;
    let range = viewer.recv_type("range").await;
    assert_eq!(range["items"], json!(acked));
}
