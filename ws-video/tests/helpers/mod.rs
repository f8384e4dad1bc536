//! Test helpers: the video service on an ephemeral port with a fresh SQLite file.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::{Path, PathBuf};

use service_kit::testing::{self, TestServer, WsClient};
use ws_video::Config;

/// A running video service. Dropping it stops the server, then removes its folder.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// `ws://127.0.0.1:PORT`.
    pub ws_base: String,
    /// The database file.
    pub db: PathBuf,
    server: Option<TestServer>,
    dir: tempfile::TempDir,
}

/// Generous limits, so tests that are not about limits do not trip them.
pub const RELAXED: &[&str] = &["--rate-per-sec", "100000", "--rate-burst", "100000"];

/// Starts the service with `args` on a fresh database.
pub fn spawn_app(args: &[&str]) -> TestApp {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let db = dir.path().join("video.db");
    let server = start(&db, args);
    TestApp {
        base: server.base.clone(),
        ws_base: server.base.replacen("http://", "ws://", 1),
        db,
        server: Some(server),
        dir,
    }
}

fn start(db: &Path, args: &[&str]) -> TestServer {
    let mut argv = vec![
        "ws-video".to_owned(),
        "--db".to_owned(),
        db.display().to_string(),
        "--workers".to_owned(),
        "2".to_owned(),
        "--shutdown-timeout-secs".to_owned(),
        "1".to_owned(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    let config = Config::parse_from(argv).expect("valid test settings");
    testing::spawn(move |listener| ws_video::build_with_listener(config, listener))
}

impl TestApp {
    /// Stops the server and starts a new one on the same database (a new port).
    pub fn restart(&mut self, args: &[&str]) {
        drop(self.server.take());
        let server = start(&self.db, args);
        self.base = server.base.clone();
        self.ws_base = server.base.replacen("http://", "ws://", 1);
        self.server = Some(server);
    }

    /// A viewer of `video`, past its `hello`; returns the client and the hello.
    pub async fn viewer(&self, video: &str) -> (WsClient, serde_json::Value) {
        let mut client = WsClient::connect(&format!("{}/ws/videos/{video}", self.ws_base)).await;
        let hello = client.recv_json().await;
        assert_eq!(hello["type"], "hello", "{hello}");
        (client, hello)
    }

    /// The folder the database lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        drop(self.server.take());
    }
}

/// An HTTP client with a timeout on every request.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("a client")
}
