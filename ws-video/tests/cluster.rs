//! Two real `ws-video` processes on one store and one Redis: a video's viewers on one instance
//! get what is sent through the other (over WebSocket and over HTTP), once each, and the viewer
//! count is the video's total.
//!
//! Needs Redis (`DANMAKU_TEST_REDIS`); without it the test says it skipped, except under
//! `CI=true`, where it fails.

use std::time::Duration;

use serde_json::json;
use service_kit::testing::{
    Binary, RELAXED, TestStore, WsClient, cluster_bus, http_client, wait_for_bus,
};

fn instance(store: &TestStore, bus: &[String]) -> Binary {
    let mut args: Vec<&str> = RELAXED.to_vec();
    args.extend(bus.iter().map(String::as_str));
    Binary::start(env!("CARGO_BIN_EXE_ws-video"), store, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_viewers_on_one_instance_get_what_is_sent_through_another_once() {
    let Some(bus) = cluster_bus() else { return };
    let store = TestStore::new("video");
    let (a, b) = (instance(&store, &bus), instance(&store, &bus));
    wait_for_bus(&[&a.base, &b.base]).await;
    let mut viewer = WsClient::connect(&format!("{}/ws/videos/v", b.ws_base)).await;
    viewer.recv_type("hello").await;
    let mut sender = WsClient::connect(&format!("{}/ws/videos/v", a.ws_base)).await;
    sender.recv_type("hello").await;

    sender
        .send_json(
            &json!({"type": "send", "text": "over ws", "time": 1.5, "author": "a", "ref": "r"}),
        )
        .await;
    let ack = sender.recv_type("ack").await;
    let posted = http_client()
        .post(format!("{}/api/videos/v/danmaku", a.base))
        .json(&json!({"author": "web", "text": "over http", "time": 2.5}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);

    // Both comments, and the count of both instances' viewers, in whatever order they come.
    let (mut got, mut count) = (Vec::new(), None);
    while got.len() < 2 || count != Some(2) {
        let frame = viewer.recv_json().await;
        match frame["type"].as_str() {
            Some("danmaku") => {
                for item in frame["items"].as_array().unwrap() {
                    got.push((item["id"].as_i64().unwrap(), item["text"].clone()));
                }
            }
            Some("viewers") => count = frame["count"].as_u64(),
            _ => {}
        }
    }
    assert_eq!(
        got[0],
        (ack["item"]["id"].as_i64().unwrap(), json!("over ws"))
    );
    assert_eq!(got[1].1, "over http");
    // Nothing more: no copy of either.
    let more = viewer.drain_for(Duration::from_millis(500)).await;
    assert!(
        more.iter().all(|frame| frame["type"] != "danmaku"),
        "a repeat: {more:?}"
    );
}
