//! The video page's density bar in a real browser on a phone-sized window: it shows where the
//! comments of the demo clip crowd, grows as comments arrive (from another client and from the
//! page itself), and a click on it seeks the video there.

use e2e_tests::{Driver, eval, fill, screenshot, wait_for};
use fantoccini::actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};
use serde_json::{Value, json};
use service_kit::testing::{RELAXED, TestService, http_client as http};

/// Where the seeded comments crowd, in seconds of the 30-second demo clip.
const PEAK_SECS: f64 = 21.0;

/// What the bar shows: its counts, duration and peak bucket (from its `data-` attributes).
async fn bar(page: &fantoccini::Client) -> (Vec<u64>, f64, i64) {
    let shown = eval(
        page,
        "const d = document.getElementById('density').dataset; \
         return [JSON.parse(d.counts), Number(d.duration), Number(d.peak)];",
    )
    .await;
    (
        serde_json::from_value(shown[0].clone()).unwrap(),
        shown[1].as_f64().unwrap(),
        shown[2].as_i64().unwrap(),
    )
}

async fn post(base: &str, time: f64, text: &str) {
    let response = http()
        .post(format!("{base}/api/videos/bar/danmaku"))
        .json(&json!({"author": "seed", "text": text, "time": time}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn the_density_bar_peaks_where_comments_crowd_grows_live_and_seeks_on_click() {
    let Some(driver) = Driver::start("density bar").await else {
        return;
    };
    let video = TestService::start(
        &ws_video::config::INFO,
        ws_video::build_with_listener,
        RELAXED,
    );
    // Eight comments within a second of 21 s, one at 3 s.
    for n in 0..8 {
        post(
            &video.base,
            PEAK_SECS - 0.4 + f64::from(n) * 0.1,
            &format!("wow {n}"),
        )
        .await;
    }
    post(&video.base, 3.0, "early").await;

    let page = driver.browser(390, 844).await;
    page.goto(&format!("{}/?video=bar", video.base))
        .await
        .unwrap();
    // Counted over the clip's own length, which the page passes once the video knows it.
    wait_for(
        &page,
        "(() => { const d = document.getElementById('density'); \
          return !d.hidden && Number(d.dataset.duration) > 25 && d.dataset.total === '9'; })()",
        "the bar over the demo clip's length, with the nine comments",
    )
    .await;
    let (counts, duration, peak) = bar(&page).await;
    assert_eq!(counts.len(), 100);
    assert!(
        (25.0..35.0).contains(&duration),
        "the demo clip is 30 s: {duration}"
    );
    let peak_starts = peak as f64 * duration / 100.0;
    assert!(
        (PEAK_SECS - 1.0..PEAK_SECS + 0.5).contains(&peak_starts),
        "the peak bucket starts at {peak_starts} s: {counts:?}"
    );
    let bucket_of = |t: f64| ((t * 100.0 / duration) as usize).min(99);
    assert_eq!(counts[bucket_of(3.0)], 1, "{counts:?}");
    // The bar is as wide as the player, within a phone's screen, and drawn. (Headless Chromium
    // keeps its window a little wider than asked; the page is laid out for what it got.)
    let widths = eval(
        &page,
        "return [document.getElementById('density').getBoundingClientRect().width, \
                 document.getElementById('player').getBoundingClientRect().width, \
                 document.querySelector('#density canvas').width, window.innerWidth];",
    )
    .await;
    assert_eq!(widths[0], widths[1], "{widths}");
    assert!(
        widths[0].as_f64().unwrap() <= widths[3].as_f64().unwrap(),
        "{widths}"
    );
    assert!(widths[2].as_u64().unwrap() > 0, "{widths}");
    screenshot(&page, "video-density-phone").await;

    // A comment from someone else arrives live: its bucket grows without asking the server.
    wait_for(
        &page,
        "document.getElementById('status').textContent.startsWith('Connected')",
        "the connection",
    )
    .await;
    post(&video.base, 10.0, "someone else").await;
    wait_for(
        &page,
        "document.getElementById('density').dataset.total === '10'",
        "the bar to count the live comment",
    )
    .await;
    let (counts, _, _) = bar(&page).await;
    assert_eq!(counts[bucket_of(10.0)], 1, "{counts:?}");

    // The viewer sends one at the playhead (0 s): the first bucket grows, once (its ack and its
    // broadcast are the same comment).
    fill(&page, "#author", "me").await;
    fill(&page, "#text", "mine").await;
    eval(
        &page,
        "document.getElementById('send-form').requestSubmit(); return true;",
    )
    .await;
    wait_for(
        &page,
        "document.getElementById('density').dataset.total === '11'",
        "the bar to count the page's own comment",
    )
    .await;
    let (counts, _, _) = bar(&page).await;
    assert_eq!(counts[0], 1, "{counts:?}");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        eval(
            &page,
            "return document.getElementById('density').dataset.total;"
        )
        .await,
        Value::from("11"),
        "counted once"
    );

    // A click on the peak seeks the video there.
    let (_, _, peak) = bar(&page).await;
    let width = eval(
        &page,
        "return document.getElementById('density').getBoundingClientRect().width;",
    )
    .await
    .as_f64()
    .unwrap();
    let peak_middle = (peak as f64 + 0.5) / 100.0;
    let element = page
        .find(fantoccini::Locator::Css("#density"))
        .await
        .unwrap();
    let click = MouseActions::new("mouse".into())
        .then(PointerAction::MoveToElement {
            element,
            duration: None,
            x: (peak_middle - 0.5) * width,
            y: 0.0,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
    page.perform_actions(click).await.unwrap();
    let at = wait_for(
        &page,
        "(() => { const v = document.getElementById('video'); \
          return !v.seeking && v.currentTime > 15 && v.currentTime; })()",
        "the video to seek to the peak",
    )
    .await
    .as_f64()
    .unwrap();
    let peak_time = peak_middle * duration;
    assert!(
        (at - peak_time).abs() < 1.0,
        "clicked at {peak_time} s, the video is at {at} s"
    );
    page.close().await.unwrap();
}
