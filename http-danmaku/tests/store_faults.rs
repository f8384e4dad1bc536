//! The service when its database fails: a real server on an ephemeral port over a real SQLite
//! store, into whose threads the test injects the faults a real disk or a bug causes (through
//! `SqliteStore::faults`, feature `testing`): writes that fail with an I/O error, threads that
//! hang, a panic while committing comments. The service must answer `503 unavailable` (never
//! hang, never claim health it lacks) while the store cannot serve, and recover by itself.

mod helpers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use danmaku_store::{SqliteOptions, SqliteStore};
use helpers::read_all;
use http_danmaku::config::{Config, INFO};
use serde_json::{Value, json};
use service_kit::testing::TestServer;

/// The deadline of every database call in the test of a stalled store (`--db-timeout-ms`):
/// short, yet long enough for a healthy call on a loaded machine.
const DB_TIMEOUT_MS: u64 = 1_000;

/// The deadline where a test needs the store to answer: a panic's backtrace alone (with
/// `RUST_BACKTRACE` set, in a debug build) can take longer than [`DB_TIMEOUT_MS`].
const GENEROUS_DB_TIMEOUT_MS: u64 = 10_000;

/// A running service and the real store under it.
struct App {
    server: TestServer,
    store: SqliteStore,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// Starts the service with its settings parsed as `main` parses them (a deadline of
/// `db_timeout_ms` on database calls), on a store opened from those settings, which the test
/// keeps to inject faults.
fn spawn_app(db_timeout_ms: u64) -> App {
    service_kit::testing::init_test_logging();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("http-danmaku.db");
    let timeout = db_timeout_ms.to_string();
    let config: Config = service_kit::config::parse_from(
        &INFO,
        [
            "http-danmaku",
            "--db",
            db.to_str().unwrap(),
            "--db-timeout-ms",
            &timeout,
            "--workers",
            "2",
            "--shutdown-timeout-secs",
            "1",
            "--rate-per-sec",
            "100000",
            "--rate-burst",
            "100000",
        ],
    )
    .expect("valid test settings");
    let store = SqliteStore::open_with(
        &db,
        SqliteOptions {
            timeout: config.server.db_timeout(),
            ..SqliteOptions::default()
        },
    )
    .expect("the store opens");
    let served = store.clone();
    let server = service_kit::testing::spawn(move |listener| async move {
        http_danmaku::build_with_listener(config, listener, Arc::new(served))
    });
    App {
        server,
        store,
        // Past the longest deadline, so a store call that hangs fails the test.
        client: reqwest::Client::builder()
            .timeout(Duration::from_millis(GENEROUS_DB_TIMEOUT_MS) * 2)
            .build()
            .unwrap(),
        _dir: dir,
    }
}

impl App {
    /// Posts a comment to room `r`; the status, the JSON body, and how long the answer took.
    async fn post(&self, text: &str) -> (u16, Value, Duration) {
        let started = Instant::now();
        let response = self
            .client
            .post(format!("{}/api/rooms/r/danmaku", self.server.base))
            .json(&json!({"author": "ann", "text": text}))
            .send()
            .await
            .expect("the server answers the post (it must not hang)");
        let status = response.status().as_u16();
        (
            status,
            response.json().await.expect("a JSON body"),
            started.elapsed(),
        )
    }

    /// `GET path`: the status and the JSON body.
    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.server.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("the server answers GET {path} (it must not hang): {e}"));
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON body"))
    }

    async fn assert_healthy(&self) {
        assert_eq!(
            self.get("/healthz").await,
            (200, json!({"status": "ok"})),
            "healthy"
        );
    }

    async fn assert_unhealthy(&self) {
        let (status, body) = self.get("/healthz").await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["status"], "unavailable", "{body}");
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
    }

    /// The texts stored in room `r`, in id order.
    async fn stored(&self) -> Vec<String> {
        read_all(&self.client, &self.server.base, "r")
            .await
            .iter()
            .map(|item| item["text"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// When a store call past its deadline must have been answered: the deadline, plus generous
/// room for a loaded machine.
const ANSWERED_WITHIN: Duration = Duration::from_secs(6);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_stalled_store_answers_503_and_recovers_by_itself() {
    let app = spawn_app(DB_TIMEOUT_MS);
    let (status, _, _) = app.post("before").await;
    assert_eq!(status, 201);
    app.assert_healthy().await;

    // The disk fails every write (SQLITE_IOERR): posts are `503 unavailable`, and so is the
    // health check, while reads still work.
    app.store.faults().fail_writes(true);
    let (status, body, _) = app.post("lost to the disk").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    app.assert_unhealthy().await;
    let (status, _) = app.get("/api/rooms/r/danmaku").await;
    assert_eq!(status, 200, "reads do not need the writer");

    // The disk recovers: the health check notices by itself, and posts work again.
    app.store.faults().fail_writes(false);
    app.assert_healthy().await;
    let (status, _, _) = app.post("after the failure").await;
    assert_eq!(status, 201);

    // The database threads hang (a stalled disk): every call answers 503 at its deadline
    // instead of waiting, reads and the health check included.
    app.store.faults().stall(true);
    let ((status, body, took), poll, seed, _) = tokio::join!(
        app.post("lost to the stall"),
        app.get("/api/rooms/r/danmaku?after=0"),
        app.get("/polling"),
        app.assert_unhealthy(),
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(
        took >= Duration::from_millis(DB_TIMEOUT_MS) && took < ANSWERED_WITHIN,
        "answered at the deadline, took {took:?}"
    );
    for (status, body) in [poll, seed] {
        assert_eq!(
            (status, &body["error"]["code"]),
            (503, &json!("unavailable"))
        );
    }

    // The disk comes back: healthy, posts succeed, and a comment whose post was answered 503
    // was not stored behind the client's back.
    app.store.faults().stall(false);
    app.assert_healthy().await;
    let (status, _, _) = app.post("after the stall").await;
    assert_eq!(status, 201);
    assert_eq!(
        app.stored().await,
        ["before", "after the failure", "after the stall"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_sqlite_writer_fails_one_batch_and_later_writes_succeed() {
    let app = spawn_app(GENEROUS_DB_TIMEOUT_MS);
    let (status, _, _) = app.post("before").await;
    assert_eq!(status, 201);

    // A bug makes the next commit of comments panic inside its transaction.
    app.store.faults().panic_next_batch();
    let (status, body, _) = app.post("in the panicking batch").await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "internal", "{body}");

    // The writer survived: later writes succeed, the service says it is healthy, and nothing of
    // the failed batch was stored.
    for n in 1..=3 {
        let (status, body, _) = app.post(&format!("after {n}")).await;
        assert_eq!(status, 201, "write {n} after the panic: {body}");
    }
    app.assert_healthy().await;
    assert_eq!(
        app.stored().await,
        ["before", "after 1", "after 2", "after 3"]
    );
    let ids: Vec<i64> = read_all(&app.client, &app.server.base, "r")
        .await
        .iter()
        .map(|item| item["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3, 4], "ids stay dense");
}
