//! A lone comment to a large room is written by the worker and the fan-out's helper thread
//! together (`service-kit/src/ws/lanes/helper.rs`): the real binary with one worker and the
//! helper on, a room of more viewers than the helper's threshold, comments sent one at a time.
//! Every viewer gets every comment once and in order, lone comments and merged ones alike.

use std::time::Duration;

use service_kit::testing::{Binary, TestStore, WsClient};

mod helpers;

/// Readers in the room besides the senders: more than the 64 at which a worker asks for help,
/// and more than two of its blocks of 32.
const READERS: usize = 150;

/// Comments sent one after the other, each after the last one's `ack`.
const COMMENTS: usize = 40;

/// Senders that then send at once, so that frames also wait together and are merged.
const SENDERS: usize = 4;

fn start(store: &TestStore, helper: &str) -> Binary {
    Binary::start(
        env!("CARGO_BIN_EXE_ws-stream"),
        store,
        &[
            "--workers",
            "1",
            "--fanout-helper",
            helper,
            "--rate-per-sec",
            "100000",
            "--rate-burst",
            "100000",
            "--max-connections-per-client",
            "1000",
        ],
    )
}

/// The id of a stored comment.
fn id(item: serde_json::Value) -> i64 {
    item["id"].as_i64().expect("an id")
}

async fn every_reader_gets_every_comment_once_in_order(helper: &str) {
    let store = TestStore::new("live");
    let server = start(&store, helper);
    let room = format!("{}/ws/live/hall", server.ws_base);
    let mut readers = Vec::new();
    for n in 0..READERS {
        let mut reader = WsClient::connect(&format!("{room}?name=r{n}")).await;
        reader.recv_type("welcome").await;
        readers.push(reader);
    }
    let mut senders = Vec::new();
    for n in 0..SENDERS {
        let mut sender = WsClient::connect(&format!("{room}?name=s{n}")).await;
        sender.recv_type("welcome").await;
        senders.push(sender);
    }
    let everyone = READERS + SENDERS;
    let mut sender = senders.pop().expect("a sender");
    loop {
        if sender.recv_type("viewers").await["count"] == everyone {
            break;
        }
    }

    // Each reader reads until it has the last comment, keeping the ids in the order they came.
    let reading: Vec<_> = readers
        .into_iter()
        .map(|mut reader| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let frame = reader.recv_json().await;
                    if frame["type"] == "danmaku" {
                        got.extend(helpers::ids(&frame["items"]));
                    }
                    if frame["type"] == "danmaku"
                        && frame["items"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|item| item["text"] == "last")
                    {
                        return got;
                    }
                }
            })
        })
        .collect();

    let mut sent = Vec::new();
    for n in 0..COMMENTS {
        sent.push(id(helpers::say(&mut sender, &format!("lone {n}")).await));
    }
    // Then several at once: what each sends is in order, and the room's order is the ids'.
    let together: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for n in 0..COMMENTS {
                    ids.push(id(helpers::say(&mut sender, &format!("together {n}")).await));
                }
                ids
            })
        })
        .collect();
    for task in together {
        sent.extend(task.await.unwrap());
    }
    sent.sort_unstable();
    sent.push(id(helpers::say(&mut sender, "last").await));

    for (n, task) in reading.into_iter().enumerate() {
        let got = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("every reader gets the last comment")
            .unwrap();
        assert_eq!(got, sent, "reader {n}: every comment, once, in order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_helper_every_reader_gets_every_comment_once_in_order() {
    every_reader_gets_every_comment_once_in_order("true").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_helper_the_same_holds() {
    every_reader_gets_every_comment_once_in_order("false").await;
}
