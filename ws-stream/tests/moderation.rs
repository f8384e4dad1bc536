//! Moderation of a live room by its host (or the operator's admin token): deleting a comment
//! takes it off every screen and out of every read, banned words and mutes refuse comments
//! before they are stored, and every action is logged. Real server, real WebSocket and HTTP
//! clients, a real SQLite file (or PostgreSQL with `DANMAKU_TEST_STORE=postgres`).

mod helpers;

use std::time::Duration;

use helpers::{RELAXED, http, ids, join, join_host, new_room, say, spawn_app};
use serde_json::{Value, json};
use service_kit::testing::{TestService, WsClient, get_json};

/// An admin token for the tests that configure one.
const ADMIN: &str = "test-admin-token-0123456789";

fn spawn_with_admin() -> TestService {
    let mut args = RELAXED.to_vec();
    args.extend(["--admin-token", ADMIN]);
    spawn_app(&args)
}

/// `method` `path` with `token` as the bearer and `body` as JSON; the status and the answer.
async fn call(
    app: &TestService,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http().request(method, format!("{}{path}", app.base));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the service answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Sends `text` and returns the error frame it gets (panics on an ack).
async fn refused(client: &mut WsClient, text: &str) -> Value {
    client
        .send_json(&json!({"type": "send", "text": text, "ref": text}))
        .await;
    loop {
        let frame = client.recv_json().await;
        assert_ne!(frame["type"], "ack", "{text:?} was stored: {frame}");
        if frame["type"] == "error" {
            assert_eq!(frame["ref"], text, "{frame}");
            return frame;
        }
    }
}

/// Waits for a `deleted` frame on `client`; its ids.
async fn deleted_frame(client: &mut WsClient) -> Vec<i64> {
    client
        .recv_type("deleted")
        .await
        .get("ids")
        .and_then(Value::as_array)
        .expect("a list of ids")
        .iter()
        .map(|id| id.as_i64().expect("an id"))
        .collect()
}

#[tokio::test]
async fn a_deleted_comment_leaves_every_screen_history_recovery_and_is_logged() {
    let app = spawn_with_admin();
    let (room, token) = new_room(&app).await;
    let (mut host, _) = join_host(&app, &room, &token, "name=teacher").await;
    let (mut viewer, _) = join(&app, &room, "name=ann").await;
    let mut said = Vec::new();
    for text in ["one", "two", "three"] {
        said.push(say(&mut viewer, text).await["id"].as_i64().unwrap());
    }
    let path = format!("/api/rooms/{room}/danmaku/{}", said[1]);

    // Only the host (or the admin) may.
    let (status, body) = call(&app, reqwest::Method::DELETE, &path, None, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, body) = call(&app, reqwest::Method::DELETE, &path, Some("nope"), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );

    let (status, body) = call(&app, reqwest::Method::DELETE, &path, Some(&token), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deleted"]["text"], "two");
    // Off every screen at once: everyone in the room is told.
    assert_eq!(deleted_frame(&mut viewer).await, [said[1]]);
    assert_eq!(deleted_frame(&mut host).await, [said[1]]);

    // Out of the history, a late joiner's chat box and a recovery.
    let page = get_json(&format!("{}/api/rooms/{room}/history?after=0", app.base)).await;
    assert_eq!(ids(&page["items"]), [said[0], said[2]]);
    let (_late, welcome) = join(&app, &room, "name=late").await;
    assert_eq!(ids(&welcome["history"]), [said[0], said[2]]);
    let (_back, welcome) = join(&app, &room, "name=back&since=0").await;
    assert_eq!(welcome["recovered"], true);
    assert_eq!(ids(&welcome["history"]), [said[0], said[2]]);

    // Twice is `not_found`; the admin token works too, and the log says who did what.
    let (status, body) = call(&app, reqwest::Method::DELETE, &path, Some(&token), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let first = format!("/api/rooms/{room}/danmaku/{}", said[0]);
    let (status, _) = call(&app, reqwest::Method::DELETE, &first, Some(ADMIN), None).await;
    assert_eq!(status, 200);
    let moderation = format!("/api/rooms/{room}/moderation");
    let (status, body) = call(&app, reqwest::Method::GET, &moderation, None, None).await;
    assert_eq!(status, 401, "the log is the host's: {body}");
    let (status, body) = call(&app, reqwest::Method::GET, &moderation, Some(&token), None).await;
    assert_eq!(status, 200, "{body}");
    let log: Vec<(&str, &str, &str)> = body["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap(),
                e["action"].as_str().unwrap(),
                e["detail"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        log,
        [
            ("admin", "delete", "ann: one"),
            ("host", "delete", "ann: two")
        ]
    );
    assert!(body["log"][0]["at"].as_str().unwrap().ends_with('Z'));

    // The room goes on: the next comment gets the next id, and is shown.
    let next = say(&mut viewer, "four").await;
    assert_eq!(next["id"].as_i64().unwrap(), said[2] + 1);
}

#[tokio::test]
async fn banned_words_refuse_comments_however_they_are_written_and_store_nothing() {
    let app = spawn_app(RELAXED);
    let (room, token) = new_room(&app).await;
    let path = format!("/api/rooms/{room}/banned-words");
    let (status, body) = call(
        &app,
        reqwest::Method::PUT,
        &path,
        Some(&token),
        Some(json!({"words": ["spoiler", " Spoiler ", "剧透"]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["words"], json!(["spoiler", "剧透"]), "kept once each");

    let (mut viewer, _) = join(&app, &room, "name=ann").await;
    let before = say(&mut viewer, "hello").await["id"].as_i64().unwrap();
    for dodge in [
        "SPOILER: he dies",
        "ｓｐｏｉｌｅｒ",
        "s p o i l e r",
        "spo\u{200B}iler",
        "前方剧\u{200D}透",
    ] {
        let error = refused(&mut viewer, dodge).await;
        assert_eq!(error["code"], "banned_word", "{dodge:?}: {error}");
    }
    // The connection stays, and nothing refused was stored.
    let after = say(&mut viewer, "a spoonful of sugar").await["id"]
        .as_i64()
        .unwrap();
    assert_eq!(after, before + 1, "no id was taken by a refused comment");

    // Bad lists are refused with a stable code; the list in force stays.
    for (body, code) in [
        (json!({"words": [""]}), "invalid_value"),
        (json!({"words": ["\u{200B}"]}), "invalid_value"),
        (json!({"words": ["x".repeat(33)]}), "invalid_value"),
        (json!({"words": "spoiler"}), "invalid_json"),
        (json!({"list": []}), "invalid_json"),
    ] {
        let (status, answer) =
            call(&app, reqwest::Method::PUT, &path, Some(&token), Some(body)).await;
        assert_eq!(answer["error"]["code"], code, "{answer}");
        assert!(status == 400 || status == 422, "{status}");
    }
    assert_eq!(refused(&mut viewer, "SPOILER").await["code"], "banned_word");

    // An empty list lifts them all.
    let (status, _) = call(
        &app,
        reqwest::Method::PUT,
        &path,
        Some(&token),
        Some(json!({"words": []})),
    )
    .await;
    assert_eq!(status, 200);
    say(&mut viewer, "spoiler now allowed").await;
}

#[tokio::test]
async fn a_muted_name_is_refused_until_the_mute_is_lifted() {
    let app = spawn_app(RELAXED);
    let (room, token) = new_room(&app).await;
    let path = format!("/api/rooms/{room}/mutes");
    let (mut bob, _) = join(&app, &room, "name=bob").await;
    let (mut ann, _) = join(&app, &room, "name=ann").await;

    let (status, body) = call(
        &app,
        reqwest::Method::POST,
        &path,
        Some(&token),
        Some(json!({"name": "bob", "minutes": 10})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "bob");
    let until = body["until"].as_str().expect("an end").to_owned();

    let error = refused(&mut bob, "let me talk").await;
    assert_eq!(error["code"], "muted", "{error}");
    say(&mut ann, "ann is not muted").await;

    let (_, overview) = call(
        &app,
        reqwest::Method::GET,
        &format!("/api/rooms/{room}/moderation"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(overview["mutes"], json!([{"name": "bob", "until": until}]));

    for (body, code) in [
        (
            json!({"name": "bob", "minutes": 7 * 24 * 60 + 1}),
            "invalid_value",
        ),
        (json!({"name": "", "minutes": 5}), "author_empty"),
        (json!({"name": "bob", "minutes": -1}), "invalid_json"),
    ] {
        let (_, answer) = call(&app, reqwest::Method::POST, &path, Some(&token), Some(body)).await;
        assert_eq!(answer["error"]["code"], code, "{answer}");
    }

    let (status, body) = call(
        &app,
        reqwest::Method::POST,
        &path,
        Some(&token),
        Some(json!({"name": "bob", "minutes": 0})),
    )
    .await;
    assert_eq!(
        (status, body["until"].clone()),
        (200, Value::Null),
        "{body}"
    );
    say(&mut bob, "thank you").await;
    let (status, body) = call(
        &app,
        reqwest::Method::POST,
        &path,
        Some(&token),
        Some(json!({"name": "bob", "minutes": 0})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}

#[tokio::test]
async fn a_room_nobody_created_is_moderated_only_with_the_admin_token() {
    let app = spawn_with_admin();
    let (mut viewer, _) = join(&app, "open-room", "name=ann").await;
    let (mut elsewhere, _) = join(&app, "other-room", "name=bo").await;
    let id = say(&mut viewer, "hi").await["id"].as_i64().unwrap();
    let path = format!("/api/rooms/open-room/danmaku/{id}");
    let (status, body) = call(&app, reqwest::Method::DELETE, &path, Some("guess"), None).await;
    assert_eq!(status, 401, "no host: {body}");
    let (status, _) = call(&app, reqwest::Method::DELETE, &path, Some(ADMIN), None).await;
    assert_eq!(status, 200);
    assert_eq!(deleted_frame(&mut viewer).await, [id]);
    // Another room's viewers hear nothing of it.
    let frames = elsewhere.drain_for(Duration::from_millis(300)).await;
    assert!(frames.iter().all(|f| f["type"] != "deleted"), "{frames:?}");
}
