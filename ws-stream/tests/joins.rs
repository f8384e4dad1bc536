//! A stream starting: many viewers join a busy room at once, and a join costs no database read.
//! The room's newest comments are kept in memory from the fan-out (`src/recent.rs`); once a room
//! was read the first time, every join's chat box comes from there. The test proves it on a real
//! server over a real SQLite store whose database threads it stalls (feature `testing`): with no
//! read able to finish, a burst of joins must still each get the whole chat box, at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use danmaku_store::{SqliteOptions, SqliteStore};
use futures::future::join_all;
use serde_json::json;
use service_kit::testing::WsClient;
use ws_stream::config::{Config, INFO};

/// Comments in the room before the burst (fewer than the chat box holds, so every one shows).
const COMMENTS: usize = 30;
/// Viewers joining in the burst.
const JOINERS: usize = 300;
/// The deadline of every database call: a join that read the store while it is stalled would
/// wait this long and then get an empty chat box.
const DB_TIMEOUT_MS: u64 = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_joins_gets_the_chat_box_from_memory_while_the_database_is_stalled() {
    service_kit::testing::init_test_logging();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ws-stream.db");
    let timeout = DB_TIMEOUT_MS.to_string();
    let config: Config = service_kit::config::parse_from(
        &INFO,
        [
            "ws-stream",
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
            "--read-rows-per-sec",
            "1000000",
            "--read-rows-burst",
            "1000000",
            "--max-connections-per-client",
            "1000",
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
        ws_stream::build_with_listener(config, listener, Arc::new(served))
    });
    let url = format!("ws://{}/ws/live/launch?name=host", server.addr);

    // The room fills while a first viewer watches (its join read the store once).
    let mut first = WsClient::connect(&url).await;
    assert_eq!(first.recv_json().await["type"], "welcome");
    for n in 0..COMMENTS {
        let text = format!("c{n}");
        first
            .send_json(&json!({"type": "send", "text": text, "ref": text}))
            .await;
    }
    let mut acked = 0;
    while acked < COMMENTS {
        let frame = first.recv_json().await;
        assert_ne!(frame["type"], "error", "{frame}");
        if frame["type"] == "ack" {
            acked += 1;
        }
    }

    // No read can finish now.
    store.faults().stall(true);
    let started = Instant::now();
    let joins = (0..JOINERS).map(|n| {
        let url = format!("ws://{}/ws/live/launch?name=v{n}", server.addr);
        async move {
            let mut viewer = WsClient::connect(&url).await;
            let welcome = viewer.recv_json().await;
            (viewer, welcome)
        }
    });
    let joined = join_all(joins).await;
    let took = started.elapsed();
    store.faults().stall(false);

    for (_, welcome) in &joined {
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        let history = welcome["history"].as_array().expect("a chat box");
        assert_eq!(history.len(), COMMENTS, "{welcome}");
        assert_eq!(history[COMMENTS - 1]["text"], format!("c{}", COMMENTS - 1));
    }
    // Had any join waited on the stalled store, it would have waited out the deadline.
    assert!(
        took < Duration::from_millis(DB_TIMEOUT_MS),
        "{JOINERS} joins took {took:?}: some waited for the database"
    );
    drop(joined);
}
