//! Reads of a live room are priced by the rows they return (joins with their chat box or
//! recovery, the history route), from the client's `reads` budget; and the newest comments of a
//! room, kept in memory from the fan-out, answer them correctly as comments keep coming.

mod helpers;

use helpers::{RELAXED, http_from, ids, join, say, spawn_app, try_connect_from};
use serde_json::Value;
use service_kit::testing::{WsClient, get_json};

/// The status of an upgrade (101 when accepted), and the connection when it was.
fn upgrade(
    result: Result<WsClient, tokio_tungstenite::tungstenite::Error>,
) -> (u16, Option<WsClient>) {
    match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            (response.status().as_u16(), None)
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(client) => (101, Some(client)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_and_history_reads_cost_the_rows_they_return_and_past_the_budget_are_refused() {
    // 120 rows at once, one more a second.
    let app = spawn_app(&[
        "--rate-per-sec",
        "100000",
        "--rate-burst",
        "100000",
        "--read-rows-per-sec",
        "1",
        "--read-rows-burst",
        "120",
    ]);
    let url = |room: &str, query: &str| format!("{}/ws/live/{room}?{query}", app.ws_base);
    let from = |ip: &str| ip.parse().unwrap();
    let history =
        |room: &str, limit: u32| format!("{}/api/rooms/{room}/history?limit={limit}", app.base);

    // An empty room costs one row a join and a page, whatever they might have returned: ten
    // joins (50 rows each at the old price) and ten pages of up to 500 fit a budget of 120.
    let mut kept = Vec::new();
    for n in 0..10 {
        let (status, client) =
            upgrade(try_connect_from(from("127.0.0.6"), &url("quiet", "name=q"), &[]).await);
        assert_eq!(status, 101, "join {n} of an empty room");
        kept.push(client);
        let page = http_from("127.0.0.6")
            .get(history("quiet", 500))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200, "page {n} of an empty room");
    }

    let (mut writer, _) = join(&app, "busy", "name=writer").await;
    let mut last = 0;
    for n in 0..70 {
        last = say(&mut writer, &format!("c{n}")).await["id"]
            .as_i64()
            .unwrap();
    }

    // Joins from 127.0.0.2, with a chat box of 50: 120 -> 70 -> 20 -> emptied, 30 owed; the
    // fourth is refused before the upgrade.
    for n in 0..3 {
        let (status, client) =
            upgrade(try_connect_from(from("127.0.0.2"), &url("busy", "name=a"), &[]).await);
        assert_eq!(status, 101, "join {n}");
        let welcome = client.unwrap().recv_json().await;
        assert_eq!(welcome["history"].as_array().unwrap().len(), 50, "join {n}");
    }
    let (status, _) =
        upgrade(try_connect_from(from("127.0.0.2"), &url("busy", "name=a"), &[]).await);
    assert_eq!(status, 429, "a fourth join reads past the budget");

    // A recovery of the whole room (70 rows, from the database) costs those 70: priced at the
    // most it might read (1,001), it was refused whatever the room held.
    let (status, client) =
        upgrade(try_connect_from(from("127.0.0.3"), &url("busy", "name=b&since=0"), &[]).await);
    assert_eq!(status, 101, "a recovery of 70 rows fits a budget of 120");
    let welcome = client.unwrap().recv_json().await;
    assert_eq!(welcome["recovered"], true, "{welcome}");
    assert_eq!(welcome["history"].as_array().unwrap().len(), 70);
    let since = last - 3;
    let (status, client) = upgrade(
        try_connect_from(
            from("127.0.0.3"),
            &url("busy", &format!("name=b&since={since}")),
            &[],
        )
        .await,
    );
    assert_eq!(status, 101, "a short recovery costs its 3 rows");
    let welcome = client.unwrap().recv_json().await;
    assert_eq!(welcome["recovered"], true, "{welcome}");
    assert_eq!(ids(&welcome["history"]), [last - 2, last - 1, last]);

    // History pages from 127.0.0.4: 70 rows leave 50; the next 70 empty it and owe 20.
    let client = http_from("127.0.0.4");
    for n in 0..2 {
        let page: Value = client
            .get(history("busy", 100))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["items"].as_array().unwrap().len(), 70, "page {n}");
    }
    let refused = client.get(history("busy", 100)).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait >= 10, "20 rows owed at one a second: {wait} s");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");

    // Another client is unaffected.
    let (status, client) =
        upgrade(try_connect_from(from("127.0.0.5"), &url("busy", "name=c"), &[]).await);
    assert_eq!(status, 101);
    let welcome = client.unwrap().recv_json().await;
    assert_eq!(welcome["history"].as_array().unwrap().len(), 50);
    let page = http_from("127.0.0.5")
        .get(history("busy", 100))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    drop(kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_box_and_history_stay_right_as_comments_arrive() {
    let app = spawn_app(RELAXED);
    // The first join loads the (empty) room into memory; from then on the fan-out keeps it.
    let (mut writer, welcome) = join(&app, "lively", "name=writer").await;
    assert!(welcome["history"].as_array().unwrap().is_empty());
    let (mut elsewhere, _) = join(&app, "quiet", "name=other").await;
    say(&mut elsewhere, "not in lively").await;
    let mut sent = Vec::new();
    let history = |query: &str| format!("{}/api/rooms/lively/history?{query}", app.base);
    for round in 0..7 {
        for n in 0..10 {
            sent.push(
                say(&mut writer, &format!("r{round}n{n}")).await["id"]
                    .as_i64()
                    .unwrap(),
            );
        }
        let newest = &sent[sent.len().saturating_sub(50)..];
        // A newcomer's chat box: the newest 50, in order, none from another room.
        let (_, welcome) = join(&app, "lively", "name=newcomer").await;
        assert_eq!(ids(&welcome["history"]), newest, "round {round}");
        // The history route, from memory (up to 50) and from the database (more).
        let page: Value = get_json(&history("limit=50")).await;
        assert_eq!(ids(&page["items"]), newest, "round {round}");
        let page: Value = get_json(&history("limit=500")).await;
        assert_eq!(ids(&page["items"]), sent, "round {round}");
        let after = sent[sent.len() - 8];
        let page: Value = get_json(&history(&format!("after={after}&limit=5"))).await;
        assert_eq!(ids(&page["items"]), &sent[sent.len() - 7..sent.len() - 2]);
        // A reconnect: exactly what was missed, from memory or not.
        let since = sent[sent.len().saturating_sub(12)];
        let (_, welcome) = join(&app, "lively", &format!("name=back&since={since}")).await;
        assert_eq!(welcome["recovered"], true);
        let missed: Vec<i64> = sent.iter().copied().filter(|id| *id > since).collect();
        assert_eq!(ids(&welcome["history"]), missed, "round {round}");
    }
    // A recovery from before what memory holds comes from the database, still exact.
    let (_, welcome) = join(&app, "lively", &format!("name=back&since={}", sent[2])).await;
    assert_eq!(welcome["recovered"], true);
    assert_eq!(ids(&welcome["history"]), &sent[3..]);
}
