//! Test helpers: the video service on an ephemeral port with a fresh SQLite file.
#![allow(dead_code, unused_imports)] // each test binary uses a different part of this module

pub use service_kit::testing::http_client as http;
use service_kit::testing::{TestService, WsClient};

/// Generous limits, so tests that are not about limits do not trip them.
pub const RELAXED: &[&str] = &[
    "--rate-per-sec",
    "100000",
    "--rate-burst",
    "100000",
    "--read-rows-per-sec",
    "1000000000",
    "--read-rows-burst",
    "1000000000",
];

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
