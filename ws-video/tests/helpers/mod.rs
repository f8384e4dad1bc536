//! Test helpers: the video service on an ephemeral port with a fresh SQLite file.
#![allow(dead_code, unused_imports)] // each test binary uses a different part of this module

pub use service_kit::testing::http_client as http;
use service_kit::testing::{TestService, WsClient};

pub use service_kit::testing::RELAXED;

/// Starts the video service with `args` on a fresh database.
pub fn spawn_app(args: &[&str]) -> TestService {
    TestService::start(&ws_video::config::INFO, ws_video::build_with_listener, args)
}

/// A viewer of `video`, past its `hello`; returns the client and the hello.
pub async fn viewer(app: &TestService, video: &str) -> (WsClient, serde_json::Value) {
    let mut client = WsClient::connect(&format!("{}/ws/videos/{video}", app.ws_base)).await;
    let hello = client.recv_json().await;
    assert_eq!(hello["type"], "hello", "{hello}");
    (client, hello)
}
