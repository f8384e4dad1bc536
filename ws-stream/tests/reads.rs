//! Reads of a live room are priced by the rows they may return (joins with their chat box or
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
async fn joins_and_history_reads_past_a_clients_read_budget_are_refused_and_others_are_not() {
    // 200 rows at once, one more a second: four joins (50 rows each) or two pages of 100.
    let app = spawn_app(&[
        "--rate-per-sec",
        "100000",
        "--rate-burst",
        "100000",
        "--read-rows-per-sec",
        "1",
        "--read-rows-burst",
        "200",
    ]);
    let (mut writer, _) = join(&app, "busy", "name=writer").await; // 127.0.0.1 spends 50
    let mut last = 0;
    for n in 0..60 {
        last = say(&mut writer, &format!("c{n}")).await["id"]
            .as_i64()
            .unwrap();
    }
    let url = |query: &str| format!("{}/ws/live/busy?{query}", app.ws_base);
    let from = |ip: &str| ip.parse().unwrap();

    // Joins from 127.0.0.2: four fit, the fifth is refused before the upgrade.
    let mut kept = Vec::new();
    for n in 0..4 {
        let (status, client) =
            upgrade(try_connect_from(from("127.0.0.2"), &url("name=a"), &[]).await);
        assert_eq!(status, 101, "join {n}");
        kept.push(client);
    }
    let (status, _) = upgrade(try_connect_from(from("127.0.0.2"), &url("name=a"), &[]).await);
    assert_eq!(status, 429, "a fifth join reads past the budget");

    // A recovery that memory cannot answer may read 1,001 rows: more than this budget ever
    // holds. One that memory holds costs the chat box's 50.
    let (status, _) =
        upgrade(try_connect_from(from("127.0.0.3"), &url("name=b&since=0"), &[]).await);
    assert_eq!(
        status, 429,
        "a recovery of the whole room is priced at 1,001 rows"
    );
    let since = last - 3;
    let (status, client) = upgrade(
        try_connect_from(
            from("127.0.0.3"),
            &url(&format!("name=b&since={since}")),
            &[],
        )
        .await,
    );
    assert_eq!(status, 101, "a short recovery is priced at 50 rows");
    let welcome = client.unwrap().recv_json().await;
    assert_eq!(welcome["recovered"], true, "{welcome}");
    assert_eq!(ids(&welcome["history"]), [last - 2, last - 1, last]);

    // History pages from 127.0.0.4: a page costs its limit.
    let history = |limit: u32| format!("{}/api/rooms/busy/history?limit={limit}", app.base);
    let client = http_from("127.0.0.4");
    for n in 0..2 {
        let response = client.get(history(100)).send().await.unwrap();
        assert_eq!(response.status(), 200, "page {n}");
    }
    let refused = client.get(history(100)).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");

    // Another client is unaffected.
    let (status, client) = upgrade(try_connect_from(from("127.0.0.5"), &url("name=c"), &[]).await);
    assert_eq!(status, 101);
    let welcome = client.unwrap().recv_json().await;
    assert_eq!(welcome["history"].as_array().unwrap().len(), 50);
    let page = http_from("127.0.0.5")
        .get(history(100))
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
