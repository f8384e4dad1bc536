//! The pages in a real browser: headless Chromium against the three services.
use e2e_tests::{
    Driver, click, create_room_on_host_page, eval, fill, has_text, live_as, screenshot,
    start_services, texts, wait_for,
};
use fantoccini::Client;
use serde_json::{Value, json};
use service_kit::testing::http_client as http;

/// WebDriver's Enter key.
const ENTER: &str = "\u{E007}";

/// What a comment looks like when someone tries to smuggle markup in.
const HOSTILE: &str = "<img src=x onerror=window.pwned=1>";

#[tokio::test]
async fn a_comment_typed_in_one_live_page_flies_in_the_other_and_lands_in_both_chat_boxes() {
    let Some(driver) = Driver::start("live pages").await else {
        return;
    };
    let services = start_services();
    let (a, b) = (
        driver.browser(1280, 900).await,
        driver.browser(1280, 900).await,
    );
    live_as(&a, &services.live.base, "e2e", "alice").await;
    live_as(&b, &services.live.base, "e2e", "bob").await;
    wait_for(
        &b,
        "document.getElementById('viewers').textContent.includes('2')",
        "two viewers",
    )
    .await;

    fill(&a, "#text", "hello from alice").await;
    fill(&a, "#text", &format!("hello from alice{ENTER}")).await;
    wait_for(
        &b,
        &has_text("#stage .dm", "hello from alice"),
        "the comment to fly on bob's page",
    )
    .await;
    for page in [&a, &b] {
        wait_for(
            page,
            &has_text("#chat li", "hello from alice"),
            "the comment in the chat box",
        )
        .await;
    }
    screenshot(&b, "live-desktop").await;

    // A third page, opened later, shows the history.
    let c = driver.browser(390, 844).await;
    live_as(&c, &services.live.base, "e2e", "carol").await;
    wait_for(
        &c,
        &has_text("#chat li", "hello from alice"),
        "the history in a new tab",
    )
    .await;
    let chat = texts(&c, "#chat li").await;
    assert!(chat.iter().any(|line| line.contains("alice")), "{chat:?}");
    screenshot(&c, "live-390").await;
    for client in [a, b, c] {
        client.close().await.unwrap();
    }
}

#[tokio::test]
async fn markup_in_a_comment_shows_as_text_everywhere_and_runs_nothing() {
    let Some(driver) = Driver::start("hostile text").await else {
        return;
    };
    let services = start_services();
    // Seed it through each service's API.
    let api = http();
    let posted = api
        .post(format!("{}/api/rooms/xss/danmaku", services.http.base))
        .json(&json!({"author": "mallory", "text": HOSTILE}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);
    let posted = api
        .post(format!("{}/api/videos/xss/danmaku", services.video.base))
        .json(&json!({"author": "mallory", "text": HOSTILE, "time": 0.3}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);

    let page = driver.browser(1280, 900).await;
    // The HTTP page.
    page.goto(&format!("{}/?room=xss", services.http.base))
        .await
        .unwrap();
    wait_for(
        &page,
        &has_text("#list li", HOSTILE),
        "the literal text in the HTTP page's list",
    )
    .await;
    // The video page: in the list, and on the stage when the playhead passes 0.3 s.
    page.goto(&format!("{}/?video=xss", services.video.base))
        .await
        .unwrap();
    wait_for(
        &page,
        &has_text("#list li", HOSTILE),
        "the literal text in the video page's list",
    )
    .await;
    eval(
        &page,
        "const v = document.getElementById('video'); v.muted = true; v.play(); return true;",
    )
    .await;
    wait_for(
        &page,
        &has_text("#stage .dm", HOSTILE),
        "the literal text on the video stage",
    )
    .await;
    let img_count = eval(
        &page,
        "return document.querySelectorAll('#stage img, #list img').length;",
    )
    .await;
    assert_eq!(img_count, json!(0));
    assert_eq!(
        eval(&page, "return window.pwned === undefined;").await,
        json!(true)
    );
    // The live page: typed by one viewer, seen by another.
    live_as(&page, &services.live.base, "xss", "viewer").await;
    let typist = driver.browser(1280, 900).await;
    live_as(&typist, &services.live.base, "xss", "mallory").await;
    fill(&typist, "#text", &format!("{HOSTILE}{ENTER}")).await;
    wait_for(
        &page,
        &has_text("#chat li", HOSTILE),
        "the literal text in the chat",
    )
    .await;
    wait_for(
        &page,
        &has_text("#stage .dm", HOSTILE),
        "the literal text on the live stage",
    )
    .await;
    for client in [&page, &typist] {
        assert_eq!(
            eval(client, "return window.pwned === undefined;").await,
            json!(true)
        );
        let images = eval(client, "return document.querySelectorAll('img').length;").await;
        assert_eq!(images, json!(0), "no element was made from the text");
    }
    page.close().await.unwrap();
    typist.close().await.unwrap();
}

/// The playhead of the page's video, in seconds.
async fn playhead(client: &Client) -> f64 {
    eval(
        client,
        "return document.getElementById('video').currentTime;",
    )
    .await
    .as_f64()
    .unwrap()
}

#[tokio::test]
async fn video_comments_appear_at_their_times_and_again_after_seeking_back() {
    let Some(driver) = Driver::start("video page").await else {
        return;
    };
    let services = start_services();
    let api = http();
    for (time, text) in [(2.0, "at two seconds"), (8.0, "at eight seconds")] {
        let response = api
            .post(format!("{}/api/videos/e2e/danmaku", services.video.base))
            .json(&json!({"author": "seed", "text": text, "time": time}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let page = driver.browser(1280, 900).await;
    page.goto(&format!("{}/?video=e2e", services.video.base))
        .await
        .unwrap();
    wait_for(
        &page,
        "document.querySelectorAll('#list li').length === 2",
        "both comments listed",
    )
    .await;
    wait_for(
        &page,
        "document.getElementById('video').readyState >= 1",
        "the demo clip to load",
    )
    .await;
    eval(
        &page,
        "const v = document.getElementById('video'); v.muted = true; v.play(); return true;",
    )
    .await;

    wait_for(
        &page,
        &has_text("#stage .dm", "at two seconds"),
        "the 2 s comment",
    )
    .await;
    let at = playhead(&page).await;
    assert!((1.9..3.5).contains(&at), "the 2 s comment flew at {at} s");
    assert!(
        !is_on_stage(&page, "at eight seconds").await,
        "the 8 s comment must wait for its time"
    );
    wait_for(
        &page,
        &has_text("#stage .dm", "at eight seconds"),
        "the 8 s comment",
    )
    .await;
    let at = playhead(&page).await;
    assert!((7.9..9.5).contains(&at), "the 8 s comment flew at {at} s");
    screenshot(&page, "video-desktop").await;

    // Seek back to 1 s: the screen clears and the 2 s comment comes again.
    eval(
        &page,
        "document.getElementById('video').currentTime = 1; return true;",
    )
    .await;
    wait_for(
        &page,
        "document.getElementById('video').currentTime < 2",
        "the seek",
    )
    .await;
    wait_for(
        &page,
        &format!("!({})", has_text("#stage .dm", "at eight seconds")),
        "a cleared stage",
    )
    .await;
    wait_for(
        &page,
        &has_text("#stage .dm", "at two seconds"),
        "the 2 s comment again",
    )
    .await;
    let at = playhead(&page).await;
    assert!((1.9..3.5).contains(&at), "after the seek it flew at {at} s");
    page.close().await.unwrap();
}

async fn is_on_stage(client: &Client, text: &str) -> bool {
    eval(client, &format!("return {};", has_text("#stage .dm", text))).await == json!(true)
}

#[tokio::test]
async fn the_http_page_receives_an_api_comment_by_short_and_by_long_polling() {
    let Some(driver) = Driver::start("HTTP page").await else {
        return;
    };
    let services = start_services();
    let page = driver.browser(1280, 900).await;
    page.goto(&format!("{}/?room=e2e", services.http.base))
        .await
        .unwrap();
    // Short polling every second.
    eval(
        &page,
        "const i = document.getElementById('interval'); i.value = '1'; \
         i.dispatchEvent(new Event('change')); return true;",
    )
    .await;
    let post = |text: &'static str| {
        let base = services.http.base.clone();
        async move {
            let response = http()
                .post(format!("{base}/api/rooms/e2e/danmaku"))
                .json(&json!({"author": "api", "text": text}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201);
        }
    };
    post("by short polling").await;
    wait_for(
        &page,
        &has_text("#list li", "by short polling"),
        "the short poll to bring it",
    )
    .await;
    // Long polling.
    eval(
        &page,
        "const t = document.getElementById('transport'); t.value = 'long'; \
         t.dispatchEvent(new Event('change')); return true;",
    )
    .await;
    // Post once the page's long poll waits at the server.
    let stats = format!("{}/api/stats", services.http.base);
    service_kit::testing::wait_for_json(&stats, "the page's long poll to wait", |now| {
        now["long_polls_waiting"].as_u64().unwrap() >= 1
    })
    .await;
    post("by long polling").await;
    wait_for(
        &page,
        &has_text("#list li", "by long polling"),
        "the long poll to bring it",
    )
    .await;
    // The display settings reach the renderer and are remembered.
    eval(
        &page,
        "const o = document.getElementById('dm-opacity'); o.value = '0.5'; \
         o.dispatchEvent(new Event('input')); return true;",
    )
    .await;
    let opacity = eval(
        &page,
        "return [getComputedStyle(document.getElementById('stage')).getPropertyValue('--dm-opacity'), \
                localStorage.getItem('danmaku.opacity')];",
    )
    .await;
    assert_eq!(opacity, json!(["0.5", "0.5"]));
    let requests: Value = eval(
        &page,
        "return Number(document.getElementById('stat-requests').textContent);",
    )
    .await;
    assert!(
        requests.as_f64().unwrap() >= 2.0,
        "the counters count ({requests})"
    );
    screenshot(&page, "http-desktop").await;
    page.close().await.unwrap();
}

#[tokio::test]
async fn a_viewer_checks_in_with_the_code_on_the_host_page() {
    let Some(driver) = Driver::start("check-in").await else {
        return;
    };
    let services = start_services();
    let host = driver.browser(1280, 900).await;
    let room = create_room_on_host_page(&host, &services.live.base, Some("Physics 101")).await;
    fill(&host, "#interval", "5").await;
    fill(&host, "#duration", "60").await;
    click(&host, "#start").await;
    let code_on_screen = "(t => /^\\d{6}$/.test(t) && t)(document.getElementById('code').textContent.replace(/\\s/g, ''))";
    wait_for(&host, code_on_screen, "a code on the host's screen").await;

    let viewer = driver.browser(390, 844).await;
    live_as(&viewer, &services.live.base, &room, "zoe").await;
    wait_for(
        &viewer,
        "!document.getElementById('checkin').hidden",
        "the check-in box",
    )
    .await;
    // Read off the host's screen just before typing it, as a viewer in the room would: a code is
    // taken for two of its 5 s steps, and opening the viewer's page on a slow machine can take
    // longer than that.
    let code = wait_for(&host, code_on_screen, "a code on the host's screen").await;
    let code = code.as_str().unwrap().to_owned();
    fill(&viewer, "#checkin-code", &code).await;
    click(&viewer, "#checkin-submit").await;
    wait_for(
        &viewer,
        "/checked in/i.test(document.getElementById('checkin-note').textContent)",
        "the confirmation",
    )
    .await;
    wait_for(
        &host,
        &has_text("#attendees li", "zoe"),
        "zoe in the attendance list",
    )
    .await;
    let page_text = eval(&viewer, "return document.body.innerText;").await;
    let shown_code = format!("{} {}", &code[..3], &code[3..]);
    assert!(
        !page_text.as_str().unwrap().contains(&shown_code),
        "the viewer's page never shows the code"
    );
    screenshot(&host, "host-desktop").await;
    screenshot(&viewer, "checkin-390").await;
    host.close().await.unwrap();
    viewer.close().await.unwrap();
}

#[tokio::test]
async fn every_page_renders_on_a_desktop_and_a_phone_screen() {
    let Some(driver) = Driver::start("screenshots").await else {
        return;
    };
    let services = start_services();
    let pages = [
        ("index", format!("{}/index.html", services.http.base)),
        ("http", format!("{}/", services.http.base)),
        ("video", format!("{}/", services.video.base)),
        ("live", format!("{}/", services.live.base)),
        ("host", format!("{}/host.html", services.live.base)),
    ];
    for (width, height, size) in [(1280, 900, "desktop"), (390, 844, "390")] {
        let client = driver.browser(width, height).await;
        for (name, url) in &pages {
            client.goto(url).await.unwrap();
            wait_for(
                &client,
                "document.readyState === 'complete'",
                "the page to load",
            )
            .await;
            // Nothing wider than the screen: no sideways scrolling on a phone.
            let overflow = eval(
                &client,
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            )
            .await;
            assert!(
                overflow.as_f64().unwrap() <= 1.0,
                "{name} at {size} scrolls sideways by {overflow}px"
            );
            screenshot(&client, &format!("{name}-page-{size}")).await;
        }
        client.close().await.unwrap();
    }
}
