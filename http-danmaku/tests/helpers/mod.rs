//! Test helpers: the real server on an ephemeral port on a fresh store ([`TestService`]), the
//! real binary for the tests that kill it (on a [`TestStore`]), and the API calls the tests
//! repeat.
#![allow(dead_code, unused_imports)] // each test binary uses a different part of this module

use std::time::Duration;

use serde_json::Value;
pub use service_kit::testing::http_client as client;
use service_kit::testing::{Binary, RELAXED, TestService, TestStore};

/// Starts the server with default settings and [`RELAXED`] budgets.
pub fn spawn_app() -> TestService {
    spawn_app_with(RELAXED)
}

/// Starts the server on a fresh database with extra command-line settings, parsed the way
/// `main` parses them.
pub fn spawn_app_with(args: &[&str]) -> TestService {
    TestService::start(
        &http_danmaku::config::INFO,
        http_danmaku::build_with_listener,
        args,
    )
}

/// Posts a comment; returns the status and the JSON body.
pub async fn post(client: &reqwest::Client, base: &str, room: &str, body: &Value) -> (u16, Value) {
    let response = client
        .post(format!("{base}/api/rooms/{room}/danmaku"))
        .json(body)
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

/// Every comment of `room`, read with the cursor API page by page.
pub async fn read_all(client: &reqwest::Client, base: &str, room: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut after = 0;
    loop {
        let page: Value = client
            .get(format!(
                "{base}/api/rooms/{room}/danmaku?after={after}&limit=500"
            ))
            .send()
            .await
            .expect("the server answers")
            .json()
            .await
            .expect("a JSON page");
        let batch = page["items"].as_array().expect("items").clone();
        if batch.is_empty() {
            return items;
        }
        after = page["next"].as_i64().expect("next");
        items.extend(batch);
    }
}

/// Starts the real `http-danmaku` binary on a free port on `store`, with generous limits.
pub fn start_binary(store: &TestStore) -> Binary {
    Binary::start(
        env!("CARGO_BIN_EXE_http-danmaku"),
        store,
        &[RELAXED, &["--workers", "2"]].concat(),
    )
}

/// Waits (up to 10 s) until the server counts at least `n` long polls waiting (`GET
/// /api/stats`), so a test posts only once its poll surely waits.
pub async fn wait_for_long_polls(base: &str, n: usize) {
    let url = format!("{base}/api/stats");
    service_kit::testing::wait_for_json(&url, &format!("{n} waiting long polls"), |stats| {
        stats["long_polls_waiting"].as_u64().expect("a count") >= n as u64
    })
    .await;
}
