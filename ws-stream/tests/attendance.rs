//! A room's attendance over time, for its host: every past check-in with its count, and the
//! table of names by check-ins as JSON and CSV. Older check-ins are written by another store
//! instance on the service's database (as another instance of the service would have, hours
//! ago); the newest runs through the service itself, with codes from the host's connection.

mod helpers;

use std::sync::Arc;

use chrono::{Duration, Utc};
use danmaku_store::{CheckinRecord, PgOptions, PgStore, RoomStore, SqliteStore};
use helpers::{RELAXED, http, http_from, join_host, spawn_app};
use serde_json::{Value, json};
use service_kit::testing::TestService;
use shared_model::ChannelId;
use shared_model::time::rfc3339;

/// Another store instance on the service's database.
async fn other_instance(app: &TestService) -> Arc<dyn RoomStore> {
    if app.store.starts_with("postgres") {
        Arc::new(
            PgStore::connect(&app.store, PgOptions::default())
                .await
                .unwrap(),
        )
    } else {
        Arc::new(SqliteStore::open(&app.store).unwrap())
    }
}

/// Creates a room; its id and host token.
async fn create_room(app: &TestService) -> (String, String) {
    let created: Value = http()
        .post(format!("{}/api/rooms", app.base))
        .json(&json!({"title": "Networks"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        created["room"].as_str().unwrap().to_owned(),
        created["host_token"].as_str().unwrap().to_owned(),
    )
}

/// A check-in of `room` that opened `hours_ago` for a minute, attended by `names`, closed.
async fn past_checkin(
    store: &Arc<dyn RoomStore>,
    room: &str,
    hours_ago: i64,
    names: &[&str],
) -> CheckinRecord {
    let opened_at = Utc::now() - Duration::hours(hours_ago);
    let record = store
        .open_checkin(
            &ChannelId::parse(room).unwrap(),
            5,
            opened_at,
            opened_at + Duration::minutes(1),
        )
        .await
        .unwrap()
        .opened()
        .expect("nothing else is open in the room then");
    for name in names {
        assert!(
            store
                .record_attendance(record.id, name, opened_at + Duration::seconds(10))
                .await
                .unwrap()
                .is_new()
        );
    }
    assert_eq!(store.close_checkin(record.id).await.unwrap(), names.len());
    record
}

/// GET `path` as the holder of `token` (if any).
async fn get(app: &TestService, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = http().get(format!("{}{path}", app.base));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// The check-in as the list shows it.
fn listed(c: &CheckinRecord, closed: bool, attended: usize) -> Value {
    json!({
        "id": c.id,
        "opened_at": rfc3339(c.opened_at),
        "closes_at": rfc3339(c.closes_at),
        "interval_secs": c.interval_secs,
        "closed": closed,
        "attended": attended,
    })
}

#[tokio::test]
async fn the_host_sees_every_checkin_with_its_count_and_the_names_by_checkins() {
    let app = spawn_app(RELAXED);
    let (room, token) = create_room(&app).await;
    let store = other_instance(&app).await;
    let first = past_checkin(&store, &room, 3, &["ann", "=HYPERLINK(\"x\")", "bob"]).await;
    let second = past_checkin(&store, &room, 2, &["bob", "Ann"]).await;

    // The third runs now, through the service: the host's screen shows its code, and two
    // names check in with it.
    let (mut host, _) = join_host(&app, &room, &token, "name=teacher").await;
    let opened = http()
        .post(format!("{}/api/rooms/{room}/checkins", app.base))
        .bearer_auth(&token)
        .json(&json!({"interval_secs": 60, "duration_secs": 600}))
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 201);
    let third_id = opened.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    let code = host.recv_type("checkin_code").await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    for name in ["zed", "ann"] {
        let attended = http()
            .post(format!("{}/api/checkins/{third_id}/attend", app.base))
            .json(&json!({"name": name, "code": code}))
            .send()
            .await
            .unwrap();
        assert_eq!(attended.status(), 200, "{name}");
    }
    let report: Value = get(&app, &format!("/api/checkins/{third_id}"), Some(&token))
        .await
        .json()
        .await
        .unwrap();
    let third = json!({
        "id": third_id,
        "opened_at": report["opened_at"],
        "closes_at": report["closes_at"],
        "interval_secs": 60,
        "closed": false,
        "attended": 2,
    });

    let list = get(&app, &format!("/api/rooms/{room}/checkins"), Some(&token)).await;
    assert_eq!(list.status(), 200);
    assert_eq!(
        list.json::<Value>().await.unwrap(),
        json!({
            "room": room,
            "checkins": [listed(&first, true, 3), listed(&second, true, 2), third],
            "truncated": false,
        })
    );

    let table = get(&app, &format!("/api/rooms/{room}/attendance"), Some(&token)).await;
    assert_eq!(table.status(), 200);
    // Sorted by code point: `=` before capitals before lowercase; "Ann" and "ann" are two.
    assert_eq!(
        table.json::<Value>().await.unwrap(),
        json!({
            "room": room,
            "checkins": [listed(&first, true, 3), listed(&second, true, 2), third],
            "rows": [
                {"name": "=HYPERLINK(\"x\")", "present": [true, false, false], "total": 1},
                {"name": "Ann", "present": [false, true, false], "total": 1},
                {"name": "ann", "present": [true, false, true], "total": 2},
                {"name": "bob", "present": [true, true, false], "total": 2},
                {"name": "zed", "present": [false, false, true], "total": 1},
            ],
            "truncated": false,
        })
    );

    let csv = get(
        &app,
        &format!("/api/rooms/{room}/attendance.csv"),
        Some(&token),
    )
    .await;
    assert_eq!(csv.status(), 200);
    assert_eq!(
        csv.headers()["content-type"].to_str().unwrap(),
        "text/csv; charset=utf-8"
    );
    assert_eq!(
        csv.headers()["content-disposition"].to_str().unwrap(),
        format!("attachment; filename=\"attendance-{room}.csv\"")
    );
    let header = format!(
        "name,{},{},{},total",
        rfc3339(first.opened_at),
        rfc3339(second.opened_at),
        report["opened_at"].as_str().unwrap()
    );
    assert_eq!(
        csv.text().await.unwrap(),
        format!(
            "{header}\n\
             \"'=HYPERLINK(\"\"x\"\")\",1,0,0,1\n\
             Ann,0,1,0,1\n\
             ann,1,0,1,2\n\
             bob,1,1,0,2\n\
             zed,0,0,1,1\n"
        )
    );
}

#[tokio::test]
async fn a_room_without_checkins_has_an_empty_list_and_table() {
    let app = spawn_app(RELAXED);
    let (room, token) = create_room(&app).await;
    let list = get(&app, &format!("/api/rooms/{room}/checkins"), Some(&token)).await;
    assert_eq!(
        list.json::<Value>().await.unwrap(),
        json!({"room": room, "checkins": [], "truncated": false})
    );
    let table = get(&app, &format!("/api/rooms/{room}/attendance"), Some(&token)).await;
    assert_eq!(
        table.json::<Value>().await.unwrap(),
        json!({"room": room, "checkins": [], "rows": [], "truncated": false})
    );
    let csv = get(
        &app,
        &format!("/api/rooms/{room}/attendance.csv"),
        Some(&token),
    )
    .await;
    assert_eq!(csv.text().await.unwrap(), "name,total\n");
}

#[tokio::test]
async fn only_the_rooms_host_may_read_its_attendance() {
    let app = spawn_app(RELAXED);
    let (room, token) = create_room(&app).await;
    let (other_room, other_token) = create_room(&app).await;
    let store = other_instance(&app).await;
    past_checkin(&store, &room, 1, &["ann"]).await;

    for path in ["checkins", "attendance", "attendance.csv"] {
        let cases = [
            (room.as_str(), None, 401, "unauthorized"),
            (room.as_str(), Some(other_token.as_str()), 403, "forbidden"),
            (room.as_str(), Some("not-a-token"), 403, "forbidden"),
            // A room nobody created has no host.
            ("never-created", Some(token.as_str()), 401, "unauthorized"),
            ("not.a.room", Some(token.as_str()), 400, "invalid_channel"),
        ];
        for (at, bearer, status, code) in cases {
            let response = get(&app, &format!("/api/rooms/{at}/{path}"), bearer).await;
            assert_eq!(response.status(), status, "{path} of {at}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], code, "{path} of {at}: {body}");
        }
    }
    // The other room's host sees its own (empty) list, not this room's.
    let own = get(
        &app,
        &format!("/api/rooms/{other_room}/checkins"),
        Some(&other_token),
    )
    .await;
    assert_eq!(own.json::<Value>().await.unwrap()["checkins"], json!([]));
}

#[tokio::test]
async fn the_table_costs_the_rows_it_read_from_the_readers_budget() {
    let app = spawn_app(&[
        "--rate-per-sec",
        "100000",
        "--rate-burst",
        "100000",
        "--read-rows-per-sec",
        "1",
        "--read-rows-burst",
        "10",
    ]);
    let (room, token) = create_room(&app).await;
    let store = other_instance(&app).await;
    let names: Vec<String> = (0..20).map(|n| format!("s{n:02}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    past_checkin(&store, &room, 1, &names).await;

    let url = format!("{}/api/rooms/{room}/attendance", app.base);
    let client = http_from("127.0.0.1");
    let first = client.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(
        first.json::<Value>().await.unwrap()["rows"]
            .as_array()
            .unwrap()
            .len(),
        20
    );
    // 21 rows read (a check-in and 20 names) against a burst of 10: the next read waits.
    let again = client
        .get(format!("{}/api/rooms/{room}/checkins", app.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 429);
    assert!(again.headers().contains_key("retry-after"));
    assert_eq!(
        again.json::<Value>().await.unwrap()["error"]["code"],
        "rate_limited"
    );
    // Another address is not affected.
    let other = http_from("127.0.0.2")
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
}
