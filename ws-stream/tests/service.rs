//! The ws-stream service basics: a real server on an ephemeral port answers its health
//! check and its page, and refuses inconsistent settings.

mod helpers;

#[tokio::test]
async fn health_and_page_are_served() {
    let app = helpers::spawn_app(&[]);
    service_kit::testing::assert_serves_health_and_page(&app.base).await;
}

#[test]
fn a_timeout_shorter_than_the_heartbeat_is_refused_by_name() {
    service_kit::testing::assert_timeout_must_exceed_heartbeat(&ws_stream::config::INFO);
}

#[tokio::test]
async fn a_room_body_over_the_limit_is_a_json_413_and_the_service_goes_on() {
    let app = helpers::spawn_app(helpers::RELAXED);
    let client = helpers::http();
    let title = "t".repeat(5_000);
    let response = client
        .post(format!("{}/api/rooms", app.base))
        .header("content-type", "application/json")
        .body(format!("{{\"title\": \"{title}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    // The service goes on: a room with a short title is created.
    let created = client
        .post(format!("{}/api/rooms", app.base))
        .header("content-type", "application/json")
        .body(r#"{"title": "short"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
}

#[tokio::test]
async fn a_room_is_created_only_from_json_so_a_cross_site_form_cannot() {
    let app = helpers::spawn_app(helpers::RELAXED);
    let client = helpers::http();
    // What a page on another site can send without asking first: a form, or a bodiless fetch.
    for (content_type, body) in [
        (Some("text/plain"), r#"{"title": "spam"}"#),
        (Some("application/x-www-form-urlencoded"), "title=spam"),
        (None, ""),
    ] {
        let mut request = client.post(format!("{}/api/rooms", app.base)).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 415, "{content_type:?}");
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "unsupported_media_type");
    }
    let created = client
        .post(format!("{}/api/rooms", app.base))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
}
