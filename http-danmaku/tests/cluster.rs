//! Two real `http-danmaku` processes on one store and one Redis: a long poll waiting on one
//! instance wakes for a comment posted through the other.
//!
//! Needs Redis (`DANMAKU_TEST_REDIS`); without it the test says it skipped, except under
//! `CI=true`, where it fails.

use std::time::Duration;

use serde_json::{Value, json};
use service_kit::testing::{Binary, RELAXED, TestStore, cluster_bus, http_client, wait_for_bus};

fn instance(store: &TestStore, bus: &[String]) -> Binary {
    let mut args: Vec<&str> = RELAXED.to_vec();
    args.extend(bus.iter().map(String::as_str));
    Binary::start(env!("CARGO_BIN_EXE_http-danmaku"), store, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_on_one_instance_wakes_for_a_comment_posted_on_another() {
    let Some(bus) = cluster_bus() else { return };
    let store = TestStore::new("http");
    let (a, b) = (instance(&store, &bus), instance(&store, &bus));
    wait_for_bus(&[&a.base, &b.base]).await;
    let poll = {
        let url = format!("{}/api/rooms/lobby/danmaku?after=0&wait=30", b.base);
        tokio::spawn(async move {
            let response = http_client().get(url).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        })
    };
    // The poll is waiting on B before the comment is posted on A.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let posted = http_client()
        .post(format!("{}/api/rooms/lobby/danmaku", a.base))
        .json(&json!({"author": "ann", "text": "through A"}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);
    // Without the bus, B's poll would sleep its full 30 s; woken, it answers at once. Well
    // within its wait, then, it must have answered with the comment.
    let page = tokio::time::timeout(Duration::from_secs(15), poll)
        .await
        .expect("the long poll on B woke for the comment posted on A")
        .unwrap();
    assert_eq!(page["items"][0]["text"], "through A", "{page}");
}
