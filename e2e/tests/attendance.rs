//! The host page's record of a room over time, in a real browser: after two check-ins run from
//! the page, "Past check-ins" lists both with their counts, and "Download attendance (CSV)"
//! hands over the whole room's table as a file named after the room.

use e2e_tests::{Driver, click, create_room_on_host_page, eval, fill, texts, wait_for};
use fantoccini::Client;
use serde_json::{Value, json};
use service_kit::testing::{RELAXED, TestService, http_client as http};

/// Starts a check-in from the page (10 s, the shortest) and returns the code it shows.
async fn start_checkin(host: &Client) -> String {
    fill(host, "#interval", "5").await;
    fill(host, "#duration", "10").await;
    click(host, "#start").await;
    let code = wait_for(
        host,
        "(t => /^\\d{6}$/.test(t) && t)(document.getElementById('code').textContent.replace(/\\s/g, ''))",
        "a code on the host's screen",
    )
    .await;
    code.as_str().unwrap().to_owned()
}

/// The check-ins the server lists for `room`, as its host.
async fn checkins(live: &TestService, room: &str, token: &str) -> Value {
    http()
        .get(format!("{}/api/rooms/{room}/checkins", live.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Checks `names` in to the room's newest check-in with `code`, over HTTP.
async fn attend(live: &TestService, room: &str, token: &str, code: &str, names: &[&str]) {
    let list = checkins(live, room, token).await;
    let id = list["checkins"].as_array().unwrap().last().unwrap()["id"]
        .as_i64()
        .unwrap();
    for name in names {
        let response = http()
            .post(format!("{}/api/checkins/{id}/attend", live.base))
            .json(&json!({"name": name, "code": code}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{name}");
    }
}

/// Waits until the page shows the current check-in closed and the list has no open one.
async fn wait_closed(host: &Client, listed: usize) {
    wait_for(
        host,
        &format!(
            "document.getElementById('code').textContent === 'closed' \
             && document.querySelectorAll('#past-checkins li').length === {listed} \
             && !document.getElementById('past-checkins').textContent.includes('open now')"
        ),
        "the check-in closed on the page and in the list",
    )
    .await;
}

#[tokio::test]
async fn the_host_page_lists_past_checkins_and_downloads_the_rooms_attendance() {
    let Some(driver) = Driver::start("attendance over time").await else {
        return;
    };
    let live = TestService::start(
        &ws_stream::config::INFO,
        ws_stream::build_with_listener,
        RELAXED,
    );
    let host = driver.browser(1280, 900).await;
    let room = create_room_on_host_page(&host, &live.base, None).await;
    let token = eval(
        &host,
        "return document.getElementById('token-show').textContent;",
    )
    .await
    .as_str()
    .unwrap()
    .to_owned();
    wait_for(
        &host,
        "/No check-ins/.test(getComputedStyle(document.getElementById('past-checkins'), '::before').content)",
        "an empty list of past check-ins",
    )
    .await;

    let code = start_checkin(&host).await;
    attend(&live, &room, &token, &code, &["ann", "=cmd"]).await;
    // While open, the list counts as names arrive.
    wait_for(
        &host,
        "(li => li && li.textContent.includes('2 attended') && li.textContent.includes('open now'))\
         (document.querySelector('#past-checkins li'))",
        "the open check-in counting two",
    )
    .await;
    wait_closed(&host, 1).await;

    let code = start_checkin(&host).await;
    attend(&live, &room, &token, &code, &["ann"]).await;
    wait_closed(&host, 2).await;

    // Newest first, each with its count.
    assert_eq!(
        texts(&host, "#past-checkins li .count").await,
        ["1 attended", "2 attended"]
    );
    let listed = checkins(&live, &room, &token).await;
    let ids: Vec<String> = listed["checkins"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|c| c["id"].to_string())
        .collect();
    let shown = eval(
        &host,
        "return [...document.querySelectorAll('#past-checkins li')].map(li => li.dataset.checkin);",
    )
    .await;
    assert_eq!(shown, json!(ids));

    // The download: catch the file the button hands to the browser.
    eval(
        &host,
        "window.__downloads = [];
         const make = URL.createObjectURL.bind(URL);
         URL.createObjectURL = (blob) => { window.__blob = blob; return make(blob); };
         HTMLAnchorElement.prototype.click = function () {
           const name = this.download;
           window.__blob.text().then((text) => window.__downloads.push({ name, text }));
         };
         return true;",
    )
    .await;
    click(&host, "#room-csv").await;
    let download = wait_for(
        &host,
        "window.__downloads.length > 0 && window.__downloads[0]",
        "the attendance file",
    )
    .await;
    let opened: Vec<&str> = listed["checkins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["opened_at"].as_str().unwrap())
        .collect();
    assert_eq!(download["name"], format!("attendance-{room}.csv"));
    assert_eq!(
        download["text"],
        format!(
            "name,{},{},total\n'=cmd,1,0,1\nann,1,1,2\n",
            opened[0], opened[1]
        )
    );
    host.close().await.unwrap();
}
