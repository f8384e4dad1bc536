//! The ws-video service basics: a real server on an ephemeral port answers its health
//! check and its page, and refuses inconsistent settings.

mod helpers;

#[tokio::test]
async fn health_and_page_are_served() {
    let app = helpers::spawn_app(&[]);
    service_kit::testing::assert_serves_health_and_page(&app.base).await;
}

#[test]
fn a_timeout_shorter_than_the_heartbeat_is_refused_by_name() {
    service_kit::testing::assert_timeout_must_exceed_heartbeat(&ws_video::config::INFO);
}
