//! The HTTP service end to end: a real server on an ephemeral port, a real SQLite file, real
//! HTTP clients.

mod helpers;

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use helpers::{client, post, read_all, spawn_app, spawn_app_with, wait_for_long_polls};
use serde_json::{Value, json};
use service_kit::testing::get_json;

const BURST_CLIENTS: usize = 10;
const BURST_PER_CLIENT: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cursor_poller_reads_a_concurrent_burst_exactly_once_while_the_seed_poll_loses_most() {
    let app = spawn_app();
    let total = BURST_CLIENTS * BURST_PER_CLIENT;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));

    // The cursor poller: passes back `next` every time, until it has seen every comment.
    let cursor = {
        let (base, client) = (app.base.clone(), client());
        tokio::spawn(async move {
            let mut seen: Vec<i64> = Vec::new();
            let mut after = 0;
            let deadline = Instant::now() + Duration::from_secs(60);
            while seen.len() < total && Instant::now() < deadline {
                let page: Value = client
                    .get(format!(
                        "{base}/api/rooms/default/danmaku?after={after}&limit=50"
                    ))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                for item in page["items"].as_array().unwrap() {
                    seen.push(item["id"].as_i64().unwrap());
                }
                after = page["next"].as_i64().unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen
        })
    };

    // The seed's poller: `GET /polling` (the last 5) every 100 ms while the burst runs, then once
    // more. At most 20 polls during the burst, so it can see at most 105 comments.
    let seed = {
        let (base, client, done) = (app.base.clone(), client(), done.clone());
        tokio::spawn(async move {
            let mut seen = BTreeSet::new();
            let mut polls = 0;
            let mut sizes_ok = true;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst) || polls >= 20;
                let items: Vec<Value> = client
                    .get(format!("{base}/polling"))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                polls += 1;
                sizes_ok &= items.len() <= 5;
                seen.extend(items.iter().map(|i| i["id"].as_i64().unwrap()));
                if finished {
                    return (seen, polls, sizes_ok, items);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // Ten clients, each with its own connection pool, post 30 comments each, concurrently.
    let senders: Vec<_> = (0..BURST_CLIENTS)
        .map(|c| {
            let base = app.base.clone();
            tokio::spawn(async move {
                let client = client();
                let mut acked = Vec::new();
                for n in 0..BURST_PER_CLIENT {
                    let body = json!({"author": format!("client{c}"), "text": format!("c{c}-{n}")});
                    let (status, item) = post(&client, &base, "default", &body).await;
                    assert_eq!(status, 201, "{item}");
                    acked.push(item["id"].as_i64().unwrap());
                }
                acked
            })
        })
        .collect();
    let mut acked = HashSet::new();
    for sender in senders {
        acked.extend(sender.await.unwrap());
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(acked.len(), total, "every post got its own id");

    let seen = cursor.await.unwrap();
    assert_eq!(
        seen.len(),
        total,
        "the cursor poller saw every comment exactly once"
    );
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "in id order, no repeats"
    );
    assert_eq!(seen.iter().copied().collect::<HashSet<_>>(), acked);

    let (seed_seen, polls, sizes_ok, last_answer) = seed.await.unwrap();
    assert!(sizes_ok, "/polling answers at most 5 comments");
    let last_five: Vec<i64> = last_answer
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        last_five,
        seen[total - 5..],
        "/polling is the last 5, oldest first"
    );
    let missed = total - seed_seen.len();
    eprintln!(
        "seed /polling: {polls} polls saw {} of {total}, missed {missed}",
        seed_seen.len()
    );
    assert!(
        missed >= total / 2,
        "the seed poll should lose most of a burst; it missed {missed}"
    );
    assert_eq!(
        missed,
        acked.difference(&seed_seen.into_iter().collect()).count()
    );
}

#[tokio::test]
async fn a_long_poll_on_an_empty_room_returns_soon_after_a_post() {
    let app = spawn_app();
    let waiter = {
        let (base, client) = (app.base.clone(), client());
        tokio::spawn(async move {
            let started = Instant::now();
            let page: Value = client
                .get(format!("{base}/api/rooms/quiet/danmaku?after=0&wait=25"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (page, Instant::now(), started.elapsed())
        })
    };
    // The server counts the poll as waiting before anything is posted.
    wait_for_long_polls(&app.base, 1).await;
    let before_post = Instant::now();
    let (status, item) = post(
        &client(),
        &app.base,
        "quiet",
        &json!({"author": "a", "text": "wake up"}),
    )
    .await;
    assert_eq!(status, 201);
    let posted = Instant::now();
    let (page, answered, waited) = waiter.await.unwrap();
    assert_eq!(page["items"][0]["text"], "wake up");
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["next"], item["id"]);
    assert!(
        answered >= before_post,
        "it waited for the post (answered after {waited:?})"
    );
    // A liveness check, not a benchmark: the answer follows the post, long before `wait` ends.
    assert!(answered.saturating_duration_since(posted) < Duration::from_secs(2));
}

#[tokio::test]
async fn a_long_poll_answers_empty_when_wait_runs_out() {
    let app = spawn_app();
    let started = Instant::now();
    let page: Value = get_json(&format!(
        "{}/api/rooms/quiet/danmaku?after=0&wait=1",
        app.base
    ))
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(page, json!({"items": [], "next": 0}));
}

#[tokio::test]
async fn a_long_poll_returns_at_once_when_something_newer_exists() {
    let app = spawn_app();
    for text in ["one", "two"] {
        post(
            &client(),
            &app.base,
            "r",
            &json!({"author": "a", "text": text}),
        )
        .await;
    }
    let started = Instant::now();
    let page: Value = get_json(&format!("{}/api/rooms/r/danmaku?after=1&wait=30", app.base)).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(page["items"][0]["text"], "two");
    assert_eq!(page["next"], 2);
}

#[tokio::test]
async fn without_after_a_poll_returns_the_newest_items_and_a_cursor() {
    let app = spawn_app();
    for n in 1..=5 {
        post(
            &client(),
            &app.base,
            "r",
            &json!({"author": "a", "text": format!("c{n}")}),
        )
        .await;
    }
    let page: Value = get_json(&format!("{}/api/rooms/r/danmaku?limit=2", app.base)).await;
    let texts: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["c4", "c5"]);
    assert_eq!(page["next"], 5);
}

#[tokio::test]
async fn a_post_answers_201_with_the_stored_item() {
    let app = spawn_app();
    let (status, item) = post(
        &client(),
        &app.base,
        "room-1",
        &json!({"author": " 小明 ", "text": " 前方高能 ", "color": "#FF0000", "mode": "top"}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(item["id"], 1);
    assert_eq!(item["channel"], "room-1");
    assert_eq!(item["author"], "小明");
    assert_eq!(item["text"], "前方高能");
    assert_eq!(item["color"], "#ff0000");
    assert_eq!(item["mode"], "top");
    assert!(item.get("time").is_none());
    let sent_at = item["sent_at"].as_str().unwrap();
    assert!(sent_at.ends_with('Z') && sent_at.len() == 24, "{sent_at}");
    assert_eq!(read_all(&client(), &app.base, "room-1").await, vec![item]);
}

/// A request and the status and error code it must get.
struct BadCase {
    name: &'static str,
    request: reqwest::RequestBuilder,
    status: u16,
    code: &'static str,
}

#[tokio::test]
async fn every_bad_input_gets_its_status_and_code_and_nothing_is_stored() {
    let app = spawn_app();
    let url = format!("{}/api/rooms/bad/danmaku", app.base);
    let c = &client();
    let json_post = |body: Value| c.post(&url).json(&body);
    let raw_post = |body: String| {
        c.post(&url)
            .header("Content-Type", "application/json")
            .body(body)
    };
    let nested = format!(
        "{{\"author\":\"a\",\"text\":\"t\",\"color\":{}{}}}",
        "[".repeat(500),
        "]".repeat(500)
    );
    assert!(nested.len() < 4096);
    let cases = vec![
        BadCase {
            name: "empty text",
            request: json_post(json!({"author": "a", "text": ""})),
            status: 422,
            code: "text_empty",
        },
        BadCase {
            name: "blank text",
            request: json_post(json!({"author": "a", "text": "   "})),
            status: 422,
            code: "text_empty",
        },
        BadCase {
            name: "101 characters",
            request: json_post(json!({"author": "a", "text": "字".repeat(101)})),
            status: 422,
            code: "text_too_long",
        },
        BadCase {
            name: "control character",
            request: json_post(json!({"author": "a", "text": "bell\u{7}"})),
            status: 422,
            code: "text_invalid_chars",
        },
        BadCase {
            name: "empty author",
            request: json_post(json!({"author": "", "text": "t"})),
            status: 422,
            code: "author_empty",
        },
        BadCase {
            name: "25-character author",
            request: json_post(json!({"author": "a".repeat(25), "text": "t"})),
            status: 422,
            code: "author_too_long",
        },
        BadCase {
            name: "bad colour",
            request: json_post(json!({"author": "a", "text": "t", "color": "red"})),
            status: 422,
            code: "invalid_color",
        },
        BadCase {
            name: "unknown mode",
            request: json_post(json!({"author": "a", "text": "t", "mode": "sideways"})),
            status: 422,
            code: "invalid_mode",
        },
        BadCase {
            name: "a video time on a room",
            request: json_post(json!({"author": "a", "text": "t", "time": 3})),
            status: 422,
            code: "invalid_time",
        },
        BadCase {
            name: "5 KiB body",
            request: json_post(json!({"author": "a", "text": "x".repeat(5 * 1024)})),
            status: 413,
            code: "payload_too_large",
        },
        BadCase {
            name: "wrong content type",
            request: c
                .post(&url)
                .header("Content-Type", "text/plain")
                .body(r#"{"author":"a","text":"t"}"#),
            status: 415,
            code: "unsupported_media_type",
        },
        BadCase {
            name: "no content type",
            request: c.post(&url).body(r#"{"author":"a","text":"t"}"#),
            status: 415,
            code: "unsupported_media_type",
        },
        BadCase {
            name: "malformed JSON",
            request: raw_post(r#"{"author":"a","text":"#.into()),
            status: 400,
            code: "invalid_json",
        },
        BadCase {
            name: "deeply nested JSON",
            request: raw_post(nested),
            status: 400,
            code: "invalid_json",
        },
        BadCase {
            name: "unknown field",
            request: json_post(json!({"author": "a", "text": "t", "admin": true})),
            status: 400,
            code: "invalid_json",
        },
        BadCase {
            name: "wrong field type",
            request: json_post(json!({"author": "a", "text": 42})),
            status: 400,
            code: "invalid_json",
        },
        BadCase {
            name: "missing text",
            request: json_post(json!({"author": "a"})),
            status: 400,
            code: "invalid_json",
        },
        BadCase {
            name: "bad room name",
            request: c
                .post(format!("{}/api/rooms/bad.room/danmaku", app.base))
                .json(&json!({"author": "a", "text": "t"})),
            status: 400,
            code: "invalid_channel",
        },
        BadCase {
            name: "non-integer after",
            request: c.get(format!("{url}?after=abc")),
            status: 400,
            code: "invalid_query",
        },
        BadCase {
            name: "negative after",
            request: c.get(format!("{url}?after=-1")),
            status: 400,
            code: "invalid_query",
        },
        BadCase {
            name: "limit 0",
            request: c.get(format!("{url}?after=0&limit=0")),
            status: 400,
            code: "invalid_query",
        },
        BadCase {
            name: "limit 501",
            request: c.get(format!("{url}?after=0&limit=501")),
            status: 400,
            code: "invalid_query",
        },
        BadCase {
            name: "wait 31",
            request: c.get(format!("{url}?after=0&wait=31")),
            status: 400,
            code: "invalid_query",
        },
        BadCase {
            name: "unknown route",
            request: c.get(format!("{}/api/nothing", app.base)),
            status: 404,
            code: "not_found",
        },
        BadCase {
            name: "wrong method",
            request: c.delete(&url),
            status: 405,
            code: "method_not_allowed",
        },
    ];
    for case in cases {
        let response = case
            .request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{}: the error body is not JSON: {e}", case.name));
        assert_eq!(status, case.status, "{}: {body}", case.name);
        assert_eq!(body["error"]["code"], case.code, "{}: {body}", case.name);
        assert!(
            !body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{}: a message for people",
            case.name
        );
        assert!(
            content_type.starts_with("application/json"),
            "{}: {content_type}",
            case.name
        );
    }
    assert!(
        read_all(c, &app.base, "bad").await.is_empty(),
        "nothing was stored"
    );

    // The server keeps working: a good comment goes through.
    let (status, _) = post(c, &app.base, "bad", &json!({"author": "a", "text": "fine"})).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn error_messages_name_the_problem() {
    let app = spawn_app();
    let url = format!("{}/api/rooms/r/danmaku", app.base);
    let body: Value = client()
        .post(&url)
        .json(&json!({"author": "a", "text": "t", "admin": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("admin"),
        "{body}"
    );
    // A field of the wrong type is named, not only placed at a line and column.
    let body: Value = client()
        .post(&url)
        .json(&json!({"author": "a", "text": 5}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["error"]["code"], "invalid_json", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("field text"),
        "{body}"
    );
    let body: Value = get_json(&format!("{url}?after=abc")).await;
    assert!(
        body["error"]["message"].as_str().unwrap().contains("after"),
        "{body}"
    );
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_and_its_refused_comments_are_not_stored() {
    // The defaults: 5 per second, burst 10.
    let app = spawn_app_with(&[]);
    let mut accepted = HashSet::new();
    let mut refused = HashSet::new();
    for n in 0..20 {
        let text = format!("n{n}");
        let response = client()
            .post(format!("{}/api/rooms/r/danmaku", app.base))
            .json(&json!({"author": "a", "text": text}))
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            201 => {
                accepted.insert(text);
            }
            429 => {
                let retry: u64 = response.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=2).contains(&retry), "Retry-After {retry}");
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "rate_limited");
                refused.insert(text);
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        accepted.len() >= 10,
        "the burst of 10 is allowed ({} accepted)",
        accepted.len()
    );
    assert!(
        refused.len() >= 5,
        "the rest of a 20-comment burst is refused ({})",
        refused.len()
    );
    let stored: HashSet<String> = read_all(&client(), &app.base, "r")
        .await
        .iter()
        .map(|i| i["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stored, accepted, "exactly the accepted comments are stored");
}

#[tokio::test]
async fn reads_cost_the_rows_they_return_from_each_clients_own_budget() {
    // 100 rows at once, one more a second; comments are not what is tested.
    let app = spawn_app_with(&[
        "--read-rows-per-sec",
        "1",
        "--read-rows-burst",
        "100",
        "--rate-per-sec",
        "100000",
        "--rate-burst",
        "100000",
    ]);
    let from = |ip: &str| {
        reqwest::Client::builder()
            .local_address(ip.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap()
    };
    // Polls of an empty room cost one row each, whatever their limit: the old price (the
    // limit, 500) refused the first of them. The seed's GET /polling too (5 each before).
    let light = from("127.0.0.3");
    for n in 0..40 {
        let page: Value = light
            .get(format!("{}/api/rooms/quiet/danmaku?limit=500", app.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["items"], json!([]), "poll {n}: {page}");
        let seed = light
            .get(format!("{}/polling", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(seed.status(), 200, "GET /polling {n}");
    }

    for n in 0..60 {
        let (status, _) = post(
            &client(),
            &app.base,
            "busy",
            &json!({"author": "a", "text": format!("c{n}")}),
        )
        .await;
        assert_eq!(status, 201);
    }
    // A poll of 60 rows leaves 40; the next empties the budget and owes 20; the third is
    // refused before the database is asked, until the refill has paid what is owed.
    let url = format!("{}/api/rooms/busy/danmaku?after=0&limit=500", app.base);
    let greedy = from("127.0.0.1");
    for n in 0..2 {
        let page: Value = greedy.get(&url).send().await.unwrap().json().await.unwrap();
        assert_eq!(page["items"].as_array().unwrap().len(), 60, "poll {n}");
    }
    let refused = greedy.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait >= 10, "20 rows owed at one a second: {wait} s");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    let cheap = format!("{}/api/rooms/quiet/danmaku?limit=1", app.base);
    assert_eq!(
        greedy.get(&cheap).send().await.unwrap().status(),
        429,
        "a small read waits for the debt too"
    );
    // Another client (another loopback address) has its own budget.
    let page: Value = from("127.0.0.2")
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 60, "{page}");
}

#[tokio::test]
async fn the_page_is_served_with_a_content_security_policy() {
    let app = spawn_app();
    for path in ["/", "/index.html", "/http.html"] {
        let response = client()
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(response.text().await.unwrap().contains("<html"), "{path}");
    }
    let missing = client()
        .get(format!("{}/nope.js", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let escape = client()
        .get(format!("{}/..%2FCargo.toml", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(escape.status(), 404);
    let health: Value = get_json(&format!("{}/healthz", app.base)).await;
    assert_eq!(health, json!({"status": "ok"}));
}
