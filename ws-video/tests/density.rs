//! `GET /api/videos/{video}/density`: the comments per time bucket of a video, for the bar over
//! the page's progress bar. The real server on an ephemeral port, a real SQLite file, real HTTP
//! clients (one per client address where the read budget is at stake).

mod helpers;

use std::net::IpAddr;
use std::time::Duration;

use helpers::{RELAXED, http, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ADMIN: &str = "density-admin-token-0123456789";

/// Posts a comment at `time` seconds of `video`; returns its id.
async fn post(base: &str, video: &str, time: f64) -> i64 {
    let response = http()
        .post(format!("{base}/api/videos/{video}/danmaku"))
        .json(&json!({"author": "ann", "text": format!("at {time}"), "time": time}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap()
}

/// The status and body of `GET {base}{path}` by `client`.
async fn get(client: &reqwest::Client, base: &str, path: &str) -> (StatusCode, Value) {
    let response = client.get(format!("{base}{path}")).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// The counts of a density answer.
fn counts(body: &Value) -> Vec<u64> {
    body["counts"]
        .as_array()
        .unwrap_or_else(|| panic!("no counts: {body}"))
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect()
}

/// A client whose requests come from `ip` (each address has a read budget of its own).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test]
async fn density_counts_a_known_spread_per_bucket_up_to_the_duration_or_the_latest_comment() {
    let app = spawn_app(&[RELAXED, &["--read-cache-ms", "0"]].concat());
    for time in [1.0, 2.0, 9.99, 10.0, 35.0, 59.0, 60.0, 75.0] {
        post(&app.base, "film", time).await;
    }
    post(&app.base, "other", 1.0).await;

    // The page's duration: 10 s buckets; 10.0 opens the second, 60.0 (the end) is in the last,
    // 75.0 is past the end.
    let (status, body) = get(
        &http(),
        &app.base,
        "/api/videos/film/density?buckets=6&duration=60",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["video"], "film");
    assert_eq!(body["duration"], 60.0);
    assert_eq!(body["bucket_secs"], 10.0);
    assert_eq!(counts(&body), [3, 1, 0, 1, 0, 2]);

    // Without a duration: up to the latest comment (75 s); without buckets: 100 of them.
    let (status, body) = get(&http(), &app.base, "/api/videos/film/density").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["duration"], 75.0);
    assert_eq!(body["bucket_secs"], 0.75);
    let all = counts(&body);
    assert_eq!(all.len(), 100);
    assert_eq!(all.iter().sum::<u64>(), 8);
    assert_eq!(all[99], 1, "the latest comment ends the last bucket");
    assert_eq!(all[1], 1, "1 s is in [0.75, 1.5)");

    // A video nobody commented on: zeros, and a timeline of no length unless the page says.
    let (_, empty) = get(&http(), &app.base, "/api/videos/silent/density?buckets=3").await;
    assert_eq!(
        (empty["duration"].as_f64(), counts(&empty)),
        (Some(0.0), vec![0, 0, 0])
    );
    let (_, empty) = get(
        &http(),
        &app.base,
        "/api/videos/silent/density?buckets=2&duration=30",
    )
    .await;
    assert_eq!(empty["bucket_secs"], 15.0);
    assert_eq!(counts(&empty), [0, 0]);

    // A new comment counts at once (the cache is off here).
    post(&app.base, "film", 12.0).await;
    let (_, body) = get(
        &http(),
        &app.base,
        "/api/videos/film/density?buckets=6&duration=60",
    )
    .await;
    assert_eq!(counts(&body), [3, 2, 0, 1, 0, 2]);
}

#[tokio::test]
async fn bad_density_parameters_get_invalid_query_and_the_route_keeps_answering() {
    let app = spawn_app(RELAXED);
    post(&app.base, "film", 5.0).await;
    for query in [
        "buckets=0",
        "buckets=1001",
        "buckets=-1",
        "buckets=2.5",
        "buckets=many",
        "buckets=",
        "duration=0",
        "duration=-10",
        "duration=86401",
        "duration=inf",
        "duration=NaN",
        "duration=long",
        "buckets=10&duration=",
    ] {
        let (status, body) = get(
            &http(),
            &app.base,
            &format!("/api/videos/film/density?{query}"),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["code"], "invalid_query", "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        // The parameter at fault is named (the last one of each query here).
        let named = if query.contains("duration") {
            "duration"
        } else {
            "buckets"
        };
        assert!(message.contains(named), "{query}: {message}");
    }
    // A video id that is not one is refused like on every other route.
    let (status, body) = get(&http(), &app.base, "/api/videos/not%20a%20video/density").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_ne!(body["error"]["code"], "internal", "{body}");
    // The bounds themselves are fine, and the route still answers.
    let (status, body) = get(
        &http(),
        &app.base,
        "/api/videos/film/density?buckets=1000&duration=86400",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(counts(&body).len(), 1000);
    let (status, body) = get(&http(), &app.base, "/api/videos/film/density?buckets=1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(counts(&body), [1]);
}

#[tokio::test]
async fn a_density_costs_a_row_per_50_buckets_cached_or_not_and_past_the_budget_gets_429() {
    // A read budget of 20 rows at once and one more a second.
    let app = spawn_app(&[
        "--read-rows-per-sec",
        "1",
        "--read-rows-burst",
        "20",
        "--rate-per-sec",
        "100000",
        "--rate-burst",
        "100000",
    ]);
    post(&app.base, "film", 5.0).await;
    let path = "/api/videos/film/density?buckets=1000&duration=60";

    // 1,000 buckets cost 20 rows: the whole budget, so the next read is refused, of any kind.
    let first = client_from("127.0.0.1");
    let (status, body) = get(&first, &app.base, path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for other in [
        "/api/videos/film/density?buckets=1",
        "/api/videos/film/danmaku",
    ] {
        let (status, body) = get(&first, &app.base, other).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{other}: {body}");
        assert_eq!(body["error"]["code"], "rate_limited", "{other}: {body}");
    }

    // Another address pays the same for the answer the brief cache keeps.
    let second = client_from("127.0.0.2");
    let (status, cached) = get(&second, &app.base, path).await;
    assert_eq!(status, StatusCode::OK, "{cached}");
    assert_eq!(counts(&cached).iter().sum::<u64>(), 1);
    let (status, _) = get(&second, &app.base, "/api/videos/film/density?buckets=1").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    // 500 buckets cost 10 rows: two of them fit in 20, a third does not.
    let third = client_from("127.0.0.3");
    for n in 0..2 {
        let (status, body) = get(&third, &app.base, "/api/videos/film/density?buckets=500").await;
        assert_eq!(status, StatusCode::OK, "read {n}: {body}");
    }
    let (status, _) = get(&third, &app.base, "/api/videos/film/density?buckets=500").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    // A refused parameter costs nothing: 20 bad requests, then the whole budget is still there.
    let fourth = client_from("127.0.0.4");
    for _ in 0..20 {
        let (status, _) = get(&fourth, &app.base, "/api/videos/film/density?buckets=0").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    let (status, body) = get(&fourth, &app.base, path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn the_brief_cache_keeps_a_density_per_query_and_forgets_it_when_a_comment_is_deleted() {
    let app = spawn_app(
        &[
            RELAXED,
            &["--read-cache-ms", "600000", "--admin-token", ADMIN],
        ]
        .concat(),
    );
    let first = post(&app.base, "film", 5.0).await;
    let path = "/api/videos/film/density?buckets=2&duration=10";
    let (_, body) = get(&http(), &app.base, path).await;
    assert_eq!(counts(&body), [0, 1]);

    // Within the time to live the same query is answered from memory, without the new comment;
    // another query (other buckets) is read afresh and has it.
    post(&app.base, "film", 1.0).await;
    let (_, body) = get(&http(), &app.base, path).await;
    assert_eq!(counts(&body), [0, 1], "kept");
    let (_, body) = get(
        &http(),
        &app.base,
        "/api/videos/film/density?buckets=5&duration=10",
    )
    .await;
    assert_eq!(counts(&body), [1, 0, 1, 0, 0]);

    // A moderator's delete empties the cache at once: no bar may count a deleted comment.
    let deleted = http()
        .delete(format!("{}/api/videos/film/danmaku/{first}", app.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    let (_, body) = get(&http(), &app.base, path).await;
    assert_eq!(counts(&body), [1, 0]);
}
