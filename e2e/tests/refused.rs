//! A refused WebSocket upgrade, in a real browser: `connection.js` asks the server why and
//! reports it as a `refused` event, and the host page acts on it.

use std::time::Duration;

use e2e_tests::{Driver, click, eval, fill, start_services, wait_for};
use serde_json::{Value, json};

#[tokio::test]
async fn a_wrong_host_token_sends_the_host_page_back_to_the_setup_saying_why() {
    let Some(driver) = Driver::start("refused host token").await else {
        return;
    };
    let services = start_services();
    let created: Value = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
        .post(format!("{}/api/rooms", services.live.base))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let room = created["room"].as_str().unwrap().to_owned();

    let page = driver.browser(1280, 900).await;
    page.goto(&format!("{}/host.html?room={room}", services.live.base))
        .await
        .unwrap();
    fill(&page, "#token", "not-the-host-token").await;
    click(&page, "#resume").await;
    let error = wait_for(
        &page,
        "!document.getElementById('setup').hidden \
         && document.getElementById('setup-error').textContent.includes('refused')\
         && document.getElementById('setup-error').textContent",
        "the setup again, with the refusal",
    )
    .await;
    assert_eq!(
        error,
        json!(format!(
            "The server refused the host token for room “{room}”: that is not the host token of \
             room {room}. Paste the right one."
        ))
    );
    page.close().await.unwrap();
}

#[tokio::test]
async fn the_connection_reports_a_refused_upgrade_with_the_servers_code_and_message() {
    let Some(driver) = Driver::start("refused upgrade").await else {
        return;
    };
    let services = start_services();
    let page = driver.browser(1280, 900).await;
    page.goto(&format!("{}/", services.live.base))
        .await
        .unwrap();
    // A name longer than the server allows (the page itself never asks for one).
    eval(
        &page,
        "import('/js/connection.js').then(({ Connection }) => {
           const c = new Connection('/ws/live/refused', { query: { name: 'x'.repeat(30) } });
           c.addEventListener('refused', (e) => { window.refusal = e.detail; c.close(); });
           c.start();
         });
         return true;",
    )
    .await;
    let refusal = wait_for(&page, "window.refusal", "the refused event").await;
    assert_eq!(refusal["status"], json!(422));
    assert_eq!(refusal["code"], json!("author_too_long"));
    assert!(
        refusal["message"]
            .as_str()
            .unwrap()
            .contains("30 characters"),
        "{refusal}"
    );
    page.close().await.unwrap();
}
