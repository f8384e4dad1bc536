//! Moderation of videos with the operator's admin token (`DANMAKU_ADMIN_TOKEN`; videos have no
//! host): a deleted comment leaves every viewer's screen, the timeline, the DPlayer list and the
//! Bilibili export at once; banned words and mutes refuse comments on every route. Real server,
//! real WebSocket and HTTP clients, a real SQLite file.

mod helpers;

use helpers::{RELAXED, http, spawn_app, viewer};
use serde_json::{Value, json};
use service_kit::testing::{TestService, WsClient, get_json};

const ADMIN: &str = "video-admin-token-abcdef0123";

fn spawn_with_admin() -> TestService {
    let mut args = RELAXED.to_vec();
    args.extend(["--admin-token", ADMIN]);
    spawn_app(&args)
}

/// Sends a comment at `time` over `client`; the frame answering it (ack or error).
async fn send(client: &mut WsClient, text: &str, time: f64) -> Value {
    client
        .send_json(
            &json!({"type": "send", "text": text, "time": time, "author": "ann", "ref": text}),
        )
        .await;
    loop {
        let frame = client.recv_json().await;
        if frame["ref"] == text {
            return frame;
        }
    }
}

fn texts(items: &Value) -> Vec<&str> {
    items
        .as_array()
        .expect("a list")
        .iter()
        .map(|item| item["text"].as_str().expect("a text"))
        .collect()
}

#[tokio::test]
async fn a_deleted_comment_leaves_screens_timeline_dplayer_list_and_export_at_once() {
    let app = spawn_with_admin();
    let (mut watcher, _) = viewer(&app, "film").await;
    let (mut sender, _) = viewer(&app, "film").await;
    let mut ids = Vec::new();
    for (text, time) in [("keep", 1.0), ("rude", 2.0), ("fine", 3.0)] {
        let ack = send(&mut sender, text, time).await;
        assert_eq!(ack["type"], "ack", "{ack}");
        ids.push(ack["item"]["id"].as_i64().unwrap());
    }
    // Fill the brief caches (DPlayer list, export) with the comment in them.
    let dplayer = format!("{}/dplayer/v3/?id=film&max=100", app.base);
    let export = format!("{}/api/videos/film/danmaku.xml", app.base);
    assert_eq!(
        get_json(&dplayer).await["data"].as_array().unwrap().len(),
        3
    );
    let xml = http()
        .get(&export)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(xml.contains("rude"));

    let path = format!("{}/api/videos/film/danmaku/{}", app.base, ids[1]);
    let refused = http().delete(&path).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let refused = http()
        .delete(&path)
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let done = http()
        .delete(&path)
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);

    for client in [&mut watcher, &mut sender] {
        assert_eq!(client.recv_type("deleted").await["ids"], json!([ids[1]]));
    }
    let window = get_json(&format!(
        "{}/api/videos/film/danmaku?from=0&to=10",
        app.base
    ))
    .await;
    assert_eq!(texts(&window["items"]), ["keep", "fine"]);
    watcher
        .send_json(&json!({"type": "range", "from": 0, "to": 10, "ref": "r"}))
        .await;
    assert_eq!(
        texts(&watcher.recv_type("range").await["items"]),
        ["keep", "fine"]
    );
    // Not served from the caches filled before the delete.
    let list = get_json(&dplayer).await;
    let list_texts: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[4].as_str().unwrap())
        .collect();
    assert_eq!(list_texts, ["keep", "fine"]);
    let xml = http()
        .get(&export)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!xml.contains("rude"), "{xml}");
    assert!(xml.contains("keep") && xml.contains("fine"));

    let log = http()
        .get(format!("{}/api/videos/film/moderation", app.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(log["log"][0]["action"], "delete");
    assert_eq!(log["log"][0]["actor"], "admin");
    assert_eq!(log["log"][0]["detail"], "ann: rude");
}

#[tokio::test]
async fn banned_words_and_mutes_set_by_the_admin_hold_on_every_route() {
    let app = spawn_with_admin();
    let set = http()
        .put(format!("{}/api/videos/film/banned-words", app.base))
        .bearer_auth(ADMIN)
        .json(&json!({"words": ["spoiler"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let (mut client, _) = viewer(&app, "film").await;
    let error = send(&mut client, "ＳＰＯＩＬＥＲ", 1.0).await;
    assert_eq!(error["code"], "banned_word", "{error}");
    let http_post = http()
        .post(format!("{}/api/videos/film/danmaku", app.base))
        .json(&json!({"author": "ann", "text": "s p o i l e r", "time": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(http_post.status(), 422);
    let dplayer_post = http()
        .post(format!("{}/dplayer/v3/", app.base))
        .json(&json!({"id": "film", "author": "ann", "time": 1.0, "text": "spoiler!", "color": 16777215, "type": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(dplayer_post.status(), 422);
    assert_eq!(dplayer_post.json::<Value>().await.unwrap()["code"], 1);
    // Another video is not affected.
    let (mut other, _) = viewer(&app, "other").await;
    assert_eq!(send(&mut other, "spoiler", 1.0).await["type"], "ack");

    let muted = http()
        .post(format!("{}/api/videos/film/mutes", app.base))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "ann", "minutes": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(muted.status(), 200);
    assert_eq!(send(&mut client, "hello", 1.0).await["code"], "muted");
    let window = get_json(&format!("{}/api/videos/film/danmaku", app.base)).await;
    assert_eq!(window["items"], json!([]), "nothing refused was stored");
}

#[tokio::test]
async fn without_an_admin_token_nobody_moderates_videos() {
    let app = spawn_app(RELAXED);
    let answer = http()
        .delete(format!("{}/api/videos/film/danmaku/1", app.base))
        .bearer_auth("anything-at-all-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    let body: Value = answer.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("DANMAKU_ADMIN_TOKEN"),
        "{body}"
    );
}

#[tokio::test]
async fn an_export_from_before_a_delete_imported_again_does_not_bring_the_comment_back() {
    let app = spawn_with_admin();
    let (mut sender, _) = viewer(&app, "film").await;
    let mut ids = Vec::new();
    for (text, time) in [("keep", 1.0), ("rude", 2.0)] {
        ids.push(
            send(&mut sender, text, time).await["item"]["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let export = format!("{}/api/videos/film/danmaku.xml", app.base);
    let xml = http()
        .get(&export)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let done = http()
        .delete(format!("{}/api/videos/film/danmaku/{}", app.base, ids[1]))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    let imported: Value = http()
        .post(&export)
        .header("content-type", "application/xml")
        .body(xml)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(imported["added"], 0, "{imported}");
    let window = get_json(&format!("{}/api/videos/film/danmaku", app.base)).await;
    assert_eq!(texts(&window["items"]), ["keep"]);
}

#[tokio::test]
async fn imports_skip_banned_words_and_the_admin_imports_without_a_clients_budget() {
    let app = spawn_app(&[
        "--admin-token",
        ADMIN,
        "--rate-per-sec",
        "1",
        "--rate-burst",
        "1",
        "--read-rows-per-sec",
        "1000000",
        "--read-rows-burst",
        "1000000",
    ]);
    let set = http()
        .put(format!("{}/api/videos/film/banned-words", app.base))
        .bearer_auth(ADMIN)
        .json(&json!({"words": ["spoiler"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let archive = |first: u32| {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><i><chatid>src</chatid>
            <d p="1,1,25,16777215,0,0,ann,{first}">fine</d>
            <d p="2,1,25,16777215,0,0,ann,{}">a Ｓ Ｐ Ｏ Ｉ Ｌ Ｅ Ｒ here</d></i>"#,
            first + 1
        )
    };
    let import = |body: String, token: Option<&'static str>| {
        let mut request = http()
            .post(format!("{}/api/videos/film/danmaku.xml", app.base))
            .header("content-type", "application/xml")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let first = import(archive(1), None).await.unwrap();
    assert_eq!(first.status(), 200);
    let report: Value = first.json().await.unwrap();
    assert_eq!(report["added"], 1, "{report}");
    assert_eq!(report["details"]["banned"], 1, "{report}");
    // The client's one write token is spent: its next import is refused; the admin's is not.
    assert_eq!(import(archive(3), None).await.unwrap().status(), 429);
    let admin = import(archive(5), Some(ADMIN)).await.unwrap();
    assert_eq!(admin.status(), 200);
    assert_eq!(admin.json::<Value>().await.unwrap()["added"], 1);
    let window = get_json(&format!("{}/api/videos/film/danmaku", app.base)).await;
    assert_eq!(texts(&window["items"]), ["fine", "fine"]);
}
