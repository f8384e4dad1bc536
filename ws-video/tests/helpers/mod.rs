//! Test helpers: the video service on an ephemeral port with a fresh SQLite file.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::sync::Arc;

use service_kit::testing::{TestService, WsClient};

/// Generous limits, so tests that are not about limits do not trip them.
pub const RELAXED: &[&str] = &["--rate-per-sec", "100000", "--rate-burst", "100000"];

/// Starts the video service with `args` on a fresh database.
pub fn spawn_app(args: &[&str]) -> TestService {
    TestService::start(
        "ws-video",
        Arc::new(|argv, listener| {
            let config = service_kit::config::parse_from(&ws_video::config::INFO, argv)
                .expect("valid test settings");
            ws_video::build_with_listener(config, listener)
        }),
        args,
    )
}

/// A viewer of `video`, past its `hello`; returns the client and the hello.
pub async fn viewer(app: &TestService, video: &str) -> (WsClient, serde_json::Value) {
    let mut client = WsClient::connect(&format!("{}/ws/videos/{video}", app.ws_base)).await;
    let hello = client.recv_json().await;
    assert_eq!(hello["type"], "hello", "{hello}");
    (client, hello)
}

/// An HTTP client with a timeout on every request.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("a client")
}
