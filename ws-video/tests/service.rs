//! The ws-video service basics: a real server on an ephemeral port answers its health
//! check and its page, and refuses inconsistent settings.

mod helpers;

use serde_json::{Value, json};

#[tokio::test]
async fn health_and_page_are_served() {
    let app = helpers::spawn_app(&[]);
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let health: Value = client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, json!({"status": "ok"}));
    let page = client.get(format!("{}/", app.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers().contains_key("content-security-policy"));
    assert!(page.text().await.unwrap().contains("<html"));
    let missing = client
        .get(format!("{}/api/none", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}

#[test]
fn a_timeout_shorter_than_the_heartbeat_is_refused_by_name() {
    let err = service_kit::config::parse_from::<ws_video::Config, _, _>(
        &ws_video::config::INFO,
        [
            "ws-video",
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
