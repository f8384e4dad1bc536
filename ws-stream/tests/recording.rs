//! A live room's comments become a recording's timeline: the real live service sends them to
//! the real video service (each on its own port and database), each comment at its offset from
//! the stream's start; doing it again adds nothing.

mod helpers;

use chrono::{DateTime, Utc};
use helpers::{RELAXED, http, join, new_room, say, spawn_app};
use serde_json::{Value, json};
use service_kit::testing::{TestService, get_json};

const ADMIN: &str = "shared-admin-token-0123456789";

/// The video service, with the admin token and budgets too small for an import of any size by
/// a client: only the admin token gets the recording in.
fn video_service() -> TestService {
    TestService::start(
        &ws_video::config::INFO,
        ws_video::build_with_listener,
        &[
            "--admin-token",
            ADMIN,
            "--rate-per-sec",
            "1",
            "--rate-burst",
            "1",
        ],
    )
}

fn live_service(video: &str) -> TestService {
    let mut args = RELAXED.to_vec();
    args.extend(["--admin-token", ADMIN, "--video-url", video]);
    spawn_app(&args)
}

async fn attach(live: &TestService, room: &str, token: &str, body: Value) -> (u16, Value) {
    let response = http()
        .post(format!("{}/api/rooms/{room}/recording", live.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn at(text: &str) -> DateTime<Utc> {
    shared_model::time::parse(text).unwrap()
}

#[tokio::test]
async fn a_sessions_comments_land_on_the_video_at_their_offsets_once() {
    let video = video_service();
    let live = live_service(&video.base);
    let (room, token) = new_room(&live).await;
    let (mut viewer, _) = join(&live, &room, "name=ann").await;
    let early = say(&mut viewer, "before the stream").await;
    // The stream starts 1 ms after it (below): the next comments must be stored later than that,
    // which a fast server does not do by itself (two comments can share a millisecond).
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let mut said = Vec::new();
    for text in ["hello", "rude", "bye"] {
        said.push(say(&mut viewer, text).await);
    }
    let deleted = http()
        .delete(format!(
            "{}/api/rooms/{room}/danmaku/{}",
            live.base, said[1]["id"]
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    // The stream starts just after the first comment (to the millisecond, as stored).
    let start = at(early["sent_at"].as_str().unwrap()) + chrono::Duration::milliseconds(1);
    let body = json!({"video": "replay", "started_at": shared_model::time::rfc3339(start)});

    let (status, done) = attach(&live, &room, &token, body.clone()).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(
        (done["comments"].as_u64(), done["added"].as_u64()),
        (Some(2), Some(2)),
        "{done}"
    );
    assert_eq!(done["video"], "replay");

    let window = get_json(&format!("{}/api/videos/replay/danmaku", video.base)).await;
    let items = window["items"].as_array().unwrap();
    let got: Vec<(&str, f64)> = items
        .iter()
        .map(|i| (i["text"].as_str().unwrap(), i["time"].as_f64().unwrap()))
        .collect();
    let offset = |item: &Value| {
        (at(item["sent_at"].as_str().unwrap()) - start).num_milliseconds() as f64 / 1000.0
    };
    assert_eq!(
        got.len(),
        2,
        "{got:?}: the deleted and the early comment stay out"
    );
    for ((text, time), sent) in got.iter().zip([&said[0], &said[2]]) {
        assert_eq!(*text, sent["text"].as_str().unwrap());
        assert!(
            (time - offset(sent)).abs() < 0.000_01,
            "{time} vs {}",
            offset(sent)
        );
        assert_eq!(items[0]["author"], "ann");
    }

    // Again: nothing new.
    let (status, again) = attach(&live, &room, &token, body).await;
    assert_eq!(status, 200);
    assert_eq!(
        (again["added"].as_u64(), again["skipped"].as_u64()),
        (Some(0), Some(2))
    );
    let window = get_json(&format!("{}/api/videos/replay/danmaku", video.base)).await;
    assert_eq!(window["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn only_the_host_attaches_and_bad_requests_get_stable_codes() {
    let video = video_service();
    let live = live_service(&video.base);
    let (room, token) = new_room(&live).await;
    let body = json!({"video": "replay"});
    let (status, _) = attach(&live, &room, "not-the-token", body.clone()).await;
    assert_eq!(status, 403);
    let no_token = http()
        .post(format!("{}/api/rooms/{room}/recording", live.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    for (body, code) in [
        (json!({"video": "no spaces"}), "invalid_channel"),
        (
            json!({"video": "v", "started_at": "yesterday"}),
            "invalid_value",
        ),
        (
            json!({"video": "v", "started_at": "2026-01-02T00:00:00Z", "ended_at": "2026-01-01T00:00:00Z"}),
            "invalid_value",
        ),
        (
            json!({"video": "v", "started_at": "2026-01-01T00:00:00Z", "ended_at": "2026-01-03T00:00:00Z"}),
            "invalid_value",
        ),
        (json!({"video": "v", "extra": 1}), "invalid_json"),
    ] {
        let (_, answer) = attach(&live, &room, &token, body).await;
        assert_eq!(answer["error"]["code"], code, "{answer}");
    }
    // The admin may attach a room nobody created, given its start.
    let (status, answer) = attach(&live, "open-room", ADMIN, json!({"video": "v"})).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("invalid_value"))
    );
    let (status, answer) = attach(
        &live,
        "open-room",
        ADMIN,
        json!({"video": "v", "started_at": "2026-01-01T00:00:00Z", "ended_at": "2026-01-01T01:00:00Z"}),
    )
    .await;
    assert_eq!(
        (status, answer["comments"].as_u64()),
        (200, Some(0)),
        "{answer}"
    );
}

#[tokio::test]
async fn a_video_service_that_does_not_answer_is_unavailable_and_nothing_is_lost() {
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let live = live_service(&url);
    let (room, token) = new_room(&live).await;
    let (mut viewer, _) = join(&live, &room, "name=ann").await;
    say(&mut viewer, "kept").await;
    let (status, answer) = attach(&live, &room, &token, json!({"video": "replay"})).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{answer}"
    );
    let page = get_json(&format!("{}/api/rooms/{room}/history?after=0", live.base)).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_start_the_host_marks_is_the_recordings_zero() {
    let video = video_service();
    let live = live_service(&video.base);
    let (room, token) = new_room(&live).await;
    let (mut viewer, _) = join(&live, &room, "name=ann").await;
    say(&mut viewer, "before").await;
    let start_url = format!("{}/api/rooms/{room}/recording/start", live.base);
    let refused = http().post(&start_url).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let marked: Value = http()
        .post(&start_url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let start = at(marked["started_at"].as_str().expect("the server's time"));
    let after = say(&mut viewer, "after").await;
    let shown: Value = http()
        .get(format!("{}/api/rooms/{room}/recording", live.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["started_at"], marked["started_at"]);

    let (status, done) = attach(&live, &room, &token, json!({"video": "marked"})).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["started_at"], marked["started_at"]);
    assert_eq!(done["comments"], 1, "only what was said after the mark");
    let window = get_json(&format!("{}/api/videos/marked/danmaku", video.base)).await;
    let item = &window["items"][0];
    assert_eq!(item["text"], "after");
    let expected =
        (at(after["sent_at"].as_str().unwrap()) - start).num_milliseconds() as f64 / 1000.0;
    assert!((item["time"].as_f64().unwrap() - expected).abs() < 0.000_01);
}
