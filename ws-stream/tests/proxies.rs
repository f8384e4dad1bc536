//! Check-ins behind a reverse proxy (`--trusted-proxies`): wrong codes count against the client
//! a trusted proxy forwarded for, so one student's wrong guesses do not lock out the class
//! behind the same proxy; and against the peer when it is not trusted. Every test client is
//! 127.0.0.1.

mod helpers;

use helpers::{RELAXED, http, spawn_app};
use serde_json::{Value, json};
use service_kit::testing::TestService;

/// Creates a room and opens a check-in (its code stays the same for a minute); its id.
async fn open_checkin(app: &TestService) -> i64 {
    let created: Value = http()
        .post(format!("{}/api/rooms", app.base))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let opened = http()
        .post(format!(
            "{}/api/rooms/{}/checkins",
            app.base,
            created["room"].as_str().unwrap()
        ))
        .bearer_auth(created["host_token"].as_str().unwrap())
        .json(&json!({"interval_secs": 60, "duration_secs": 600}))
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 201);
    opened.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap()
}

/// Checks in to `id` with a wrong code as the client of `X-Forwarded-For: xff`; the status and
/// the error code.
async fn guess_wrong_for(app: &TestService, id: i64, xff: &str) -> (u16, String) {
    let response = http()
        .post(format!("{}/api/checkins/{id}/attend", app.base))
        .header("x-forwarded-for", xff)
        .json(&json!({"name": "someone", "code": "not a code"}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

/// One wrong code per client and check-in, and `extra`.
fn one_wrong_code(extra: &[&'static str]) -> Vec<&'static str> {
    [RELAXED, &["--checkin-wrong-per-client", "1"], extra].concat()
}

#[tokio::test]
async fn wrong_codes_count_per_client_behind_a_trusted_proxy() {
    let app = spawn_app(&one_wrong_code(&["--trusted-proxies", "127.0.0.1"]));
    let id = open_checkin(&app).await;
    assert_eq!(guess_wrong_for(&app, id, "203.0.113.1").await.0, 422);
    assert_eq!(
        guess_wrong_for(&app, id, "203.0.113.1").await,
        (429, "too_many_attempts".to_owned()),
        "ann gave her one wrong code"
    );
    assert_eq!(
        guess_wrong_for(&app, id, "203.0.113.2").await,
        (422, "wrong_code".to_owned()),
        "bob behind the same proxy may still guess"
    );
}

#[tokio::test]
async fn wrong_codes_count_per_peer_when_it_is_not_a_trusted_proxy() {
    let app = spawn_app(&one_wrong_code(&[]));
    let id = open_checkin(&app).await;
    assert_eq!(guess_wrong_for(&app, id, "203.0.113.1").await.0, 422);
    assert_eq!(
        guess_wrong_for(&app, id, "203.0.113.2").await,
        (429, "too_many_attempts".to_owned()),
        "a forwarded address the peer wrote itself changes nothing"
    );
}
