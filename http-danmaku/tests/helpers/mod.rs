//! Test helpers: the real server on an ephemeral port with a fresh SQLite file, and the real
//! binary for the tests that kill it.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_danmaku::Config;
use serde_json::Value;
use service_kit::testing::{self, Binary, TestServer};

/// A running server and a client for it. Dropping it stops the server.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// A client with a timeout on every request.
    pub client: reqwest::Client,
    /// The database file.
    pub db: PathBuf,
    // Dropped in this order: the server (and its database) before the folder.
    _server: TestServer,
    _dir: tempfile::TempDir,
}

/// Starts the server with default settings (and a generous rate limit unless `args` set one).
pub fn spawn_app() -> TestApp {
    spawn_app_with(&["--rate-per-sec", "100000", "--rate-burst", "100000"])
}

/// Starts the server with extra command-line settings, parsed the way `main` parses them.
pub fn spawn_app_with(args: &[&str]) -> TestApp {
    init_test_logging();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let db = dir.path().join("data/http.db");
    let mut argv = vec![
        "http-danmaku".to_owned(),
        "--db".to_owned(),
        db.display().to_string(),
        "--workers".to_owned(),
        "2".to_owned(),
        "--shutdown-timeout-secs".to_owned(),
        "1".to_owned(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    let config: Config = service_kit::config::parse_from(&http_danmaku::config::INFO, argv)
        .expect("valid test settings");
    let server =
        testing::spawn(move |listener| http_danmaku::build_with_listener(config, listener));
    TestApp {
        base: server.base.clone(),
        client: client(),
        db,
        _server: server,
        _dir: dir,
    }
}

/// A fresh HTTP client (its own connection pool) with a timeout on every request.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(40))
        .build()
        .expect("a client")
}

/// Logs from the server under test only when `TEST_LOG` is set (once per test binary: the
/// logger is process-wide).
fn init_test_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    if std::env::var_os("TEST_LOG").is_some() {
        ONCE.call_once(service_kit::init_logging);
    }
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

/// Starts the real `http-danmaku` binary on a free port against `db`, with generous limits.
pub fn start_binary(db: &Path) -> Binary {
    Binary::start(
        env!("CARGO_BIN_EXE_http-danmaku"),
        db,
        &[
            "--rate-per-sec",
            "100000",
            "--rate-burst",
            "100000",
            "--workers",
            "2",
        ],
    )
}

/// Waits (up to 10 s) until the server counts at least `n` long polls waiting (`GET
/// /api/stats`), so a test posts only once its poll surely waits.
pub async fn wait_for_long_polls(client: &reqwest::Client, base: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats: Value = client
            .get(format!("{base}/api/stats"))
            .send()
            .await
            .expect("the server answers")
            .json()
            .await
            .expect("a JSON body");
        let waiting = stats["long_polls_waiting"].as_u64().expect("a count");
        if waiting >= n as u64 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} long polls never waited: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
