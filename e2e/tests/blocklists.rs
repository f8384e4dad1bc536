//! The viewer's block list in a real browser: set in the live page's panel, applied to comments
//! sent by real clients before they reach the stage or the chat, kept across a reload, and read
//! by the video page on another port.
use e2e_tests::{
    Driver, click, create_room_on_host_page, eval, fill, has_text, js, live_as, screenshot,
    start_services, texts, wait_for,
};
use fantoccini::Client;
use serde_json::{Value, json};
use service_kit::testing::{TestService, WsClient, http_client as http};

/// Asserts that no element matching `selector` contains any of `hidden`.
async fn assert_absent(client: &Client, selector: &str, hidden: &[&str]) {
    let shown = texts(client, selector).await;
    for text in hidden {
        assert!(
            !shown.iter().any(|line| line.contains(text)),
            "{text:?} is hidden but {selector} shows it: {shown:?}"
        );
    }
}

/// Opens the Block panel (if it is closed).
async fn open_panel(client: &Client) {
    let closed = eval(
        client,
        "return document.getElementById('block-panel').hidden;",
    )
    .await;
    if closed == json!(true) {
        click(client, "#block-open").await;
    }
    wait_for(
        client,
        "!document.getElementById('block-panel').hidden",
        "the Block panel to open",
    )
    .await;
}

/// Types an entry of `kind` (keyword, regex or author) into the panel and submits it.
async fn block(client: &Client, kind: &str, value: &str) {
    eval(
        client,
        &format!(
            "const k = document.getElementById('block-kind'); k.value = {}; \
             k.dispatchEvent(new Event('change')); return true;",
            js(kind)
        ),
    )
    .await;
    fill(client, "#block-value", value).await;
    click(client, "#block-add").await;
}

/// The block list's entries as the panel lists them.
async fn entries(client: &Client) -> Vec<String> {
    texts(client, "#block-entries li .value").await
}

/// Sends `text` to the live room as `name` over a real WebSocket; waits for the `ack`.
async fn say(live: &TestService, room: &str, name: &str, text: &str, mode: &str) -> Value {
    let mut ws = WsClient::connect(&format!("{}/ws/live/{room}?name={name}", live.ws_base)).await;
    ws.recv_type("welcome").await;
    ws.send_json(&json!({"type": "send", "text": text, "mode": mode, "ref": "s"}))
        .await;
    ws.recv_type("ack").await
}

#[tokio::test]
async fn blocked_comments_never_reach_the_stage_or_the_chat_and_the_list_follows_the_viewer() {
    let Some(driver) = Driver::start("block lists").await else {
        return;
    };
    let services = start_services();
    let page = driver.browser(1280, 900).await;
    live_as(&page, &services.live.base, "shield", "watcher").await;
    open_panel(&page).await;

    // An invalid regular expression is refused with a message, and nothing is saved.
    block(&page, "regex", "(unclosed").await;
    wait_for(
        &page,
        &has_text("#block-error", "Not a valid regular expression"),
        "the regex error in the panel",
    )
    .await;
    assert!(entries(&page).await.is_empty());
    assert_eq!(
        eval(&page, "return document.cookie.includes('danmaku_block=');").await,
        json!(false),
        "nothing is saved"
    );

    // A keyword, an author and a position.
    block(&page, "keyword", "spoiler").await;
    wait_for(
        &page,
        &has_text("#block-entries li", "spoiler"),
        "the keyword",
    )
    .await;
    assert_eq!(
        eval(
            &page,
            "return document.getElementById('block-error').textContent;"
        )
        .await,
        json!(""),
        "the earlier error is gone"
    );
    block(&page, "author", "Mallory").await;
    wait_for(
        &page,
        &has_text("#block-entries li", "Mallory"),
        "the author",
    )
    .await;
    click(&page, "#block-mode-top").await;
    wait_for(
        &page,
        "document.cookie.includes('danmaku_block=v1.')",
        "the list saved in its cookie",
    )
    .await;

    // Comments from real clients: the hidden ones first, then one to wait for.
    let hidden = [
        "hello from mallory",
        "big ＳＰＯＩＬＥＲ ahead",
        "this one sits on top",
    ];
    say(&services.live, "shield", "mallory", hidden[0], "scroll").await;
    say(&services.live, "shield", "friend", hidden[1], "scroll").await;
    say(&services.live, "shield", "friend", hidden[2], "top").await;
    say(&services.live, "shield", "friend", "visible one", "scroll").await;
    wait_for(
        &page,
        &has_text("#chat li", "visible one"),
        "the visible comment in the chat",
    )
    .await;
    wait_for(
        &page,
        &has_text("#stage .dm", "visible one"),
        "the visible comment on the stage",
    )
    .await;
    assert_absent(&page, "#chat li", &hidden).await;
    assert_absent(&page, "#stage .dm", &hidden).await;
    screenshot(&page, "block-panel-live").await;

    // A reload keeps the list, and the history the server sends is filtered too.
    page.refresh().await.unwrap();
    wait_for(
        &page,
        &has_text("#chat li", "visible one"),
        "the history after a reload",
    )
    .await;
    assert_absent(&page, "#chat li", &hidden).await;
    assert_eq!(entries(&page).await, ["spoiler", "Mallory"]);
    assert_eq!(
        eval(
            &page,
            "return document.getElementById('block-mode-top').checked;"
        )
        .await,
        json!(true)
    );
    assert_eq!(
        eval(
            &page,
            "return document.getElementById('block-open').textContent;"
        )
        .await,
        json!("Block (3)")
    );

    // Changing the list re-applies it to what is listed: unblocking brings a line back,
    // blocking takes one off.
    open_panel(&page).await;
    click(&page, "#block-entries li[data-kind='author'] button.remove").await;
    wait_for(
        &page,
        &has_text("#chat li", "hello from mallory"),
        "the unblocked author's comment back in the chat",
    )
    .await;
    block(&page, "keyword", "VISIBLE").await;
    wait_for(
        &page,
        &format!("!{}", has_text("#chat li", "visible one")),
        "the newly blocked line to leave the chat",
    )
    .await;
    assert_absent(&page, "#chat li", &hidden[1..]).await;

    // The video page, on another port of the same host, reads the same list.
    let api = http();
    for (author, text, time, mode) in [
        ("ann", "a video ＳＰＯＩＬＥＲ", 0.2, "scroll"),
        ("ann", "top of the video", 0.3, "top"),
        ("ann", "plainly seen", 0.5, "scroll"),
    ] {
        let posted = api
            .post(format!("{}/api/videos/clip/danmaku", services.video.base))
            .json(&json!({"author": author, "text": text, "time": time, "mode": mode}))
            .send()
            .await
            .unwrap();
        assert_eq!(posted.status(), 201);
    }
    page.goto(&format!("{}/?video=clip", services.video.base))
        .await
        .unwrap();
    wait_for(
        &page,
        &has_text("#list li", "plainly seen"),
        "the visible comment in the video page's list",
    )
    .await;
    let video_hidden = ["a video ＳＰＯＩＬＥＲ", "top of the video"];
    assert_absent(&page, "#list li", &video_hidden).await;
    assert_eq!(entries(&page).await, ["spoiler", "VISIBLE"]);
    eval(
        &page,
        "const v = document.getElementById('video'); v.muted = true; v.play(); return true;",
    )
    .await;
    wait_for(
        &page,
        &has_text("#stage .dm", "plainly seen"),
        "the visible comment on the video stage",
    )
    .await;
    assert_absent(&page, "#stage .dm", &video_hidden).await;

    // Showing top comments again lists the top one.
    open_panel(&page).await;
    click(&page, "#block-mode-top").await;
    wait_for(
        &page,
        &has_text("#list li", "top of the video"),
        "the top comment listed once top comments are shown",
    )
    .await;
    assert_absent(&page, "#list li", &video_hidden[..1]).await;

    // The HTTP page, on a third port: its history is filtered the same way.
    for (author, text) in [("mallory", "polled SPOILER"), ("ann", "polled and seen")] {
        let posted = api
            .post(format!("{}/api/rooms/shield/danmaku", services.http.base))
            .json(&json!({"author": author, "text": text}))
            .send()
            .await
            .unwrap();
        assert_eq!(posted.status(), 201);
    }
    page.goto(&format!("{}/?room=shield", services.http.base))
        .await
        .unwrap();
    wait_for(
        &page,
        &has_text("#list li", "polled and seen"),
        "the visible comment in the HTTP page's list",
    )
    .await;
    assert_absent(&page, "#list li", &["polled SPOILER"]).await;

    // The list is bounded by what one cookie holds: CJK keywords of 100 characters take 400
    // of its 3,800, so the tenth or so is refused, and the pages still load and connect with
    // the full cookie on every request.
    open_panel(&page).await;
    let mut refused = None;
    for n in 0..20 {
        let keyword: String = format!("{n:02}{}", "弹".repeat(98));
        block(&page, "keyword", &keyword).await;
        let error = eval(
            &page,
            "return document.getElementById('block-error').textContent;",
        )
        .await;
        if error != json!("") {
            refused = Some((n, error));
            break;
        }
    }
    let (n, error) = refused.expect("the list fills up");
    assert!((5..15).contains(&n), "refused at entry {n}");
    assert!(
        error.as_str().unwrap().contains("block list is full"),
        "{error}"
    );
    let cookie_len = eval(
        &page,
        "return document.cookie.split('; ').find(c => c.startsWith('danmaku_block=')).length;",
    )
    .await;
    assert!(cookie_len.as_u64().unwrap() <= 3800 + "danmaku_block=".len() as u64);
    page.goto(&format!("{}/?room=shield", services.live.base))
        .await
        .unwrap();
    wait_for(
        &page,
        "document.getElementById('status').textContent.startsWith('Connected to room')",
        "the live page to connect with the full cookie",
    )
    .await;
    assert_absent(&page, "#chat li", &["visible one"]).await;
    page.close().await.unwrap();
}

#[tokio::test]
async fn the_host_pages_chat_follows_the_block_list_and_unblocking_brings_lines_back() {
    let Some(driver) = Driver::start("block lists on the host page").await else {
        return;
    };
    let services = start_services();
    let host = driver.browser(1280, 900).await;
    let room = create_room_on_host_page(&host, &services.live.base, None).await;
    wait_for(
        &host,
        "document.getElementById('status').textContent.startsWith('Connected as host')",
        "the host's connection",
    )
    .await;
    open_panel(&host).await;
    block(&host, "keyword", "noise").await;
    click(&host, "#block-mode-bottom").await;
    wait_for(
        &host,
        "document.getElementById('block-open').textContent === 'Block (2)'",
        "the keyword and the position in the list",
    )
    .await;

    say(&services.live, &room, "amy", "some NOISE here", "scroll").await;
    let deleted = say(
        &services.live,
        &room,
        "amy",
        "noise, then deleted",
        "scroll",
    )
    .await;
    say(&services.live, &room, "amy", "down below", "bottom").await;
    say(&services.live, &room, "amy", "hello host", "scroll").await;
    wait_for(
        &host,
        &has_text("#chat li", "hello host"),
        "the visible comment in the host's chat",
    )
    .await;
    let blocked = ["some NOISE here", "noise, then deleted", "down below"];
    assert_absent(&host, "#chat li", &blocked).await;

    // A moderator deletes a comment the block list holds back: unblocking must not bring it
    // back. The `deleted` frame comes in commit order, so once a later comment is shown, the
    // page has had it.
    let token = eval(
        &host,
        "return document.getElementById('token-show').textContent;",
    )
    .await;
    let id = deleted["item"]["id"]
        .as_i64()
        .expect("the ack's comment id");
    let response = http()
        .delete(format!(
            "{}/api/rooms/{room}/danmaku/{id}",
            services.live.base
        ))
        .bearer_auth(token.as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    say(&services.live, &room, "amy", "after the delete", "scroll").await;
    wait_for(
        &host,
        &has_text("#chat li", "after the delete"),
        "a comment after the delete",
    )
    .await;

    click(&host, "#block-clear").await;
    wait_for(
        &host,
        &format!(
            "{} && {}",
            has_text("#chat li", "some NOISE here"),
            has_text("#chat li", "down below")
        ),
        "the unblocked comments back in the chat",
    )
    .await;
    assert_eq!(
        texts(&host, "#chat li .text").await,
        [
            ": some NOISE here",
            ": down below",
            ": hello host",
            ": after the delete"
        ],
        "in id order, without the deleted one"
    );
    assert_eq!(
        eval(&host, "return document.cookie.includes('danmaku_block=');").await,
        json!(false),
        "an empty list deletes its cookie"
    );
    host.close().await.unwrap();
}
