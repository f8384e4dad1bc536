//! Moderation of the HTTP service's rooms with the operator's admin token: a deleted comment
//! leaves the cursor API; banned words and mutes refuse comments before they are stored. Real
//! server, real HTTP client, a real SQLite file.

mod helpers;

use helpers::{client, post, read_all, spawn_app_with};
use serde_json::{Value, json};
use service_kit::testing::RELAXED;

const ADMIN: &str = "http-admin-token-0123456789";

fn spawn_with_admin() -> service_kit::testing::TestService {
    let mut args = RELAXED.to_vec();
    args.extend(["--admin-token", ADMIN]);
    spawn_app_with(&args)
}

fn texts(items: &[Value]) -> Vec<&str> {
    items.iter().map(|i| i["text"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn the_admin_deletes_a_comment_and_sets_rules_that_refuse_before_storing() {
    let app = spawn_with_admin();
    let http = client();
    let mut ids = Vec::new();
    for text in ["a", "b", "c"] {
        let (status, item) = post(
            &http,
            &app.base,
            "lobby",
            &json!({"author": "ann", "text": text}),
        )
        .await;
        assert_eq!(status, 201);
        ids.push(item["id"].as_i64().unwrap());
    }
    let path = format!("{}/api/rooms/lobby/danmaku/{}", app.base, ids[1]);
    assert_eq!(http.delete(&path).send().await.unwrap().status(), 401);
    let done = http.delete(&path).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(done.status(), 200);
    assert_eq!(
        texts(&read_all(&http, &app.base, "lobby").await),
        ["a", "c"]
    );
    // The newest page (no cursor) leaves it out too.
    let page: Value = http
        .get(format!("{}/api/rooms/lobby/danmaku?limit=2", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(texts(page["items"].as_array().unwrap()), ["a", "c"]);

    let set = http
        .put(format!("{}/api/rooms/lobby/banned-words", app.base))
        .bearer_auth(ADMIN)
        .json(&json!({"words": ["badword"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let (status, body) = post(
        &http,
        &app.base,
        "lobby",
        &json!({"author": "ann", "text": "B\u{200B}ADWORD"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("banned_word"))
    );

    let muted = http
        .post(format!("{}/api/rooms/lobby/mutes", app.base))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "ann", "minutes": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(muted.status(), 200);
    let (status, body) = post(
        &http,
        &app.base,
        "lobby",
        &json!({"author": "ann", "text": "hi"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("muted"))
    );
    let (status, _) = post(
        &http,
        &app.base,
        "lobby",
        &json!({"author": "bo", "text": "hi"}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        texts(&read_all(&http, &app.base, "lobby").await),
        ["a", "c", "hi"]
    );
}

#[tokio::test]
async fn a_long_poll_that_asks_for_deletions_wakes_on_a_delete_and_names_it() {
    let app = spawn_with_admin();
    let http = client();
    let (_, item) = post(
        &http,
        &app.base,
        "hall",
        &json!({"author": "ann", "text": "oops"}),
    )
    .await;
    let id = item["id"].as_i64().unwrap();
    let poll = |query: String| {
        let http = http.clone();
        let url = format!("{}/api/rooms/hall/danmaku?{query}", app.base);
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    // Without the parameter, the answer is as before.
    let plain = poll(format!("after={id}")).await;
    assert!(plain.get("deleted").is_none(), "{plain}");
    let first = poll("deleted_after=0".into()).await;
    assert_eq!(
        (first["deleted"].clone(), first["deleted_next"].clone()),
        (json!([]), json!(0))
    );

    let waiting = tokio::spawn(poll(format!("after={id}&wait=20&deleted_after=0")));
    helpers::wait_for_long_polls(&app.base, 1).await;
    let done = http
        .delete(format!("{}/api/rooms/hall/danmaku/{id}", app.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    let woke = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .expect("the delete woke the long poll")
        .unwrap();
    assert_eq!(woke["items"], json!([]));
    assert_eq!(woke["deleted"], json!([id]));
    let next = woke["deleted_next"].as_i64().unwrap();
    assert!(next > 0);
    let again = poll(format!("after={id}&deleted_after={next}")).await;
    assert_eq!(again["deleted"], json!([]), "nothing twice");
    let bad = http
        .get(format!(
            "{}/api/rooms/hall/danmaku?deleted_after=-1",
            app.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn a_first_poll_starts_its_deletes_after_the_rooms_past_ones() {
    let app = spawn_with_admin();
    let http = client();
    for text in ["a", "b"] {
        post(
            &http,
            &app.base,
            "past",
            &json!({"author": "ann", "text": text}),
        )
        .await;
    }
    let gone = http
        .delete(format!("{}/api/rooms/past/danmaku/1", app.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 200);
    // A page opening now reads the newest comments (the deleted one left out) and needs no
    // list of old deletes: it starts after them.
    let first: Value = http
        .get(format!(
            "{}/api/rooms/past/danmaku?deleted_after=0",
            app.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(texts(first["items"].as_array().unwrap()), ["b"]);
    assert_eq!(first["deleted"], json!([]));
    assert!(first["deleted_next"].as_i64().unwrap() >= 1, "{first}");
}
