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
    let err = service_kit::config::parse_from::<ws_stream::Config, _, _>(
        &ws_stream::config::INFO,
        [
            "ws-stream",
            "--heartbeat-secs",
            "10",
            "--client-timeout-secs",
            "10",
        ],
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("DANMAKU_CLIENT_TIMEOUT_SECS"),
        "{err}"
    );
}

#[tokio::test]
async fn a_room_body_over_the_limit_is_a_json_413_and_the_service_goes_on() {
    let app = helpers::spawn_app(helpers::RELAXED);
    let client = helpers::http();
    let title = "t".repeat(5_000);
    let response = client
        .post(format!("{}/api/rooms", app.base))
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
        .body(r#"{"title": "short"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
}
