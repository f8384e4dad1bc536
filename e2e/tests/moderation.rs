//! The host's moderation in a real browser: a comment deleted on the host page vanishes from a
//! viewer's page (stage and chat box) at once; banned words and a mute set there refuse the next
//! comments.
use e2e_tests::{
    ADMIN_TOKEN, Driver, click, create_room_on_host_page, eval, fill, has_text, screenshot,
    start_services, wait_for,
};
use fantoccini::Client;
use serde_json::{Value, json};
use service_kit::testing::WsClient;

/// Sends `text` as the connection's name; the frame that answers it (`ack` or `error`).
async fn send(client: &mut WsClient, text: &str) -> Value {
    client
        .send_json(&json!({"type": "send", "text": text, "ref": text}))
        .await;
    loop {
        let frame = client.recv_json().await;
        if frame["ref"] == text {
            return frame;
        }
    }
}

/// Joins the live page of `room` as `name`.
async fn viewer_page(client: &Client, base: &str, room: &str, name: &str) {
    client
        .goto(&format!("{base}/?room={room}&name={name}"))
        .await
        .unwrap();
    wait_for(
        client,
        "document.getElementById('status').textContent.startsWith('Connected')",
        "the viewer's welcome",
    )
    .await;
}

#[tokio::test]
async fn a_comment_deleted_on_the_host_page_vanishes_from_viewers_and_rules_refuse_comments() {
    let Some(driver) = Driver::start("moderation").await else {
        return;
    };
    let services = start_services();
    let base = &services.live.base;
    let host = driver.browser(1280, 1000).await;
    let room = create_room_on_host_page(&host, base, Some("Moderated")).await;

    let viewer = driver.browser(1280, 900).await;
    viewer_page(&viewer, base, &room, "zoe").await;
    let mut bob = WsClient::connect(&format!(
        "{}/ws/live/{room}?name=bob",
        services.live.ws_base
    ))
    .await;
    assert_eq!(bob.recv_json().await["type"], "welcome");
    assert_eq!(send(&mut bob, "a fine comment").await["type"], "ack");
    // Long, so it is still flying across the viewer's stage when it is deleted.
    let rude = "a rude comment that takes a while to cross the whole screen";
    let id = send(&mut bob, rude).await["item"]["id"].as_i64().unwrap();
    wait_for(&viewer, &has_text("#stage .dm", rude), "the comment flying").await;
    wait_for(
        &viewer,
        &has_text("#chat li", rude),
        "the comment in the chat box",
    )
    .await;
    wait_for(
        &host,
        &has_text("#chat li", rude),
        "the comment on the host page",
    )
    .await;

    eval(
        &host,
        &format!(
            "document.querySelector('#chat li[data-id=\"{id}\"] button[data-action=\"delete\"]').click(); return true;"
        ),
    )
    .await;
    wait_for(
        &viewer,
        &format!(
            "!({}) && !({}) && !document.querySelector('#stage .dm[data-id=\"{id}\"]')",
            has_text("#chat li", rude),
            has_text("#stage .dm", rude)
        ),
        "the deleted comment to leave the viewer's stage and chat box",
    )
    .await;
    assert_eq!(
        eval(
            &viewer,
            &format!("return {};", has_text("#chat li", "a fine comment"))
        )
        .await,
        true,
        "the other comment stays"
    );
    wait_for(
        &host,
        &format!("!({})", has_text("#chat li", rude)),
        "the host's line gone",
    )
    .await;
    wait_for(
        &host,
        &has_text("#moderation-log li", "host delete"),
        "the delete in the host's log",
    )
    .await;

    // Banned words, saved on the page, refuse comments however they are written.
    fill(&host, "#banned-words", "spoiler").await;
    click(&host, "#save-words").await;
    wait_for(
        &host,
        "document.getElementById('moderation-note').textContent.includes('saved')",
        "the words saved",
    )
    .await;
    assert_eq!(
        send(&mut bob, "ＳＰＯＩＬＥＲ ahead").await["code"],
        "banned_word"
    );

    // Mute from a chat line.
    eval(
        &host,
        "document.querySelector('#chat li button[data-action=\"mute\"]').click(); return true;",
    )
    .await;
    wait_for(
        &host,
        &has_text("#mutes li", "bob"),
        "bob in the muted list",
    )
    .await;
    assert_eq!(send(&mut bob, "still here").await["code"], "muted");
    screenshot(&host, "host-moderation").await;
    host.close().await.unwrap();
    viewer.close().await.unwrap();
}

#[tokio::test]
async fn a_session_attached_on_the_host_page_plays_on_the_video_page_at_its_moments() {
    let Some(driver) = Driver::start("recording").await else {
        return;
    };
    let services = start_services();
    let host = driver.browser(1280, 1000).await;
    let room = create_room_on_host_page(&host, &services.live.base, None).await;
    let mut ann = WsClient::connect(&format!(
        "{}/ws/live/{room}?name=ann",
        services.live.ws_base
    ))
    .await;
    assert_eq!(ann.recv_json().await["type"], "welcome");
    assert_eq!(
        send(&mut ann, "said before the stream").await["type"],
        "ack"
    );
    click(&host, "#mark-start").await;
    wait_for(
        &host,
        "document.getElementById('start-marked').textContent.includes('started at')",
        "the start marked",
    )
    .await;
    let said = send(&mut ann, "first reaction").await;
    assert_eq!(said["type"], "ack");

    fill(&host, "#recording-video", "e2e-replay").await;
    click(&host, "#attach").await;
    wait_for(
        &host,
        "document.getElementById('recording-note').textContent.includes('Attached 1 comment')",
        "the chat attached",
    )
    .await;
    let link = wait_for(
        &host,
        "document.querySelector('#recording-note a')?.dataset.video",
        "the link to the video",
    )
    .await;
    assert_eq!(link, "e2e-replay");
    // The mark is the server's: a reload still shows it.
    host.refresh().await.unwrap();
    wait_for(
        &host,
        "document.getElementById('start-marked').textContent.includes('started at')",
        "the start still marked after a reload",
    )
    .await;

    // The replay's viewers find it on the video's timeline, a moment after 0.
    let video = driver.browser(1280, 900).await;
    video
        .goto(&format!("{}/?video=e2e-replay", services.video.base))
        .await
        .unwrap();
    wait_for(
        &video,
        &has_text("#list li", "first reaction"),
        "the live comment in the video's list",
    )
    .await;
    let page_text = eval(
        &video,
        "return document.getElementById('list').textContent;",
    )
    .await;
    assert!(
        !page_text
            .as_str()
            .unwrap()
            .contains("said before the stream"),
        "{page_text}"
    );
    screenshot(&host, "host-recording").await;
    host.close().await.unwrap();
    video.close().await.unwrap();
}

#[tokio::test]
async fn a_comment_deleted_by_the_admin_leaves_the_http_page_and_the_video_page() {
    let Some(driver) = Driver::start("deletes on polling and video pages").await else {
        return;
    };
    let services = start_services();
    let http = service_kit::testing::http_client();
    // The HTTP page, long polling.
    let page = driver.browser(1280, 900).await;
    page.goto(&format!("{}/?room=mod", services.http.base))
        .await
        .unwrap();
    eval(
        &page,
        "const t = document.getElementById('transport'); t.value = 'long'; \
         t.dispatchEvent(new Event('change')); return true;",
    )
    .await;
    let stats = format!("{}/api/stats", services.http.base);
    service_kit::testing::wait_for_json(&stats, "the page's long poll to wait", |now| {
        now["long_polls_waiting"].as_u64().unwrap() >= 1
    })
    .await;
    let mut ids = Vec::new();
    for text in [
        "stays here",
        "a comment long enough to still be flying when it goes",
    ] {
        let posted: Value = http
            .post(format!("{}/api/rooms/mod/danmaku", services.http.base))
            .json(&json!({"author": "api", "text": text}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(posted["id"].as_i64().unwrap());
    }
    let flying = "a comment long enough to still be flying when it goes";
    wait_for(&page, &has_text("#stage .dm", flying), "the comment flying").await;
    wait_for(&page, &has_text("#list li", flying), "the comment listed").await;
    let done = http
        .delete(format!(
            "{}/api/rooms/mod/danmaku/{}",
            services.http.base, ids[1]
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    wait_for(
        &page,
        &format!(
            "!({}) && !({})",
            has_text("#stage .dm", flying),
            has_text("#list li", flying)
        ),
        "the deleted comment off the HTTP page",
    )
    .await;
    assert_eq!(
        eval(
            &page,
            &format!("return {};", has_text("#list li", "stays here"))
        )
        .await,
        true
    );

    // The video page: a comment in the list goes when the admin deletes it.
    let video = driver.browser(1280, 900).await;
    let posted: Value = http
        .post(format!("{}/api/videos/modv/danmaku", services.video.base))
        .json(&json!({"author": "api", "text": "to be removed", "time": 1.0}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    video
        .goto(&format!("{}/?video=modv", services.video.base))
        .await
        .unwrap();
    wait_for(
        &video,
        &has_text("#list li", "to be removed"),
        "the video's comment",
    )
    .await;
    let done = http
        .delete(format!(
            "{}/api/videos/modv/danmaku/{}",
            services.video.base, posted["id"]
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    wait_for(
        &video,
        &format!("!({})", has_text("#list li", "to be removed")),
        "the deleted comment off the video page's list",
    )
    .await;
    page.close().await.unwrap();
    video.close().await.unwrap();
}
