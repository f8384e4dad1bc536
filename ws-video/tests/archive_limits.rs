//! What one anonymous client can make the video service spend, attacked the way an attacker
//! would: oversized and concurrent Bilibili imports against the real binary (its resident
//! memory read from `/proc`), a client without budget whose body is never read (a raw socket),
//! DPlayer lists, windows, exports and `range` frames priced by the rows they return (past the
//! client's read budget, refused; on a small video, never), the brief read cache, and a video's
//! own export imported back into it.

mod helpers;

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant};

use helpers::RELAXED;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde_json::{Value, json};
use service_kit::testing::{Binary, TestStore};
use shared_model::formats::bilibili;
use ws_video::archive::MAX_IMPORT_BYTES;

/// How long any raw-socket read of these tests may wait.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);

/// `key` (such as `VmHWM`, the peak resident memory) of process `pid`, in KiB.
fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or_else(|| panic!("a {key} line in /proc/{pid}/status"))
}

/// An archive of `<d>` entries just under `bytes` long (every entry valid, ids from 1).
fn archive_of_about(bytes: usize) -> Vec<u8> {
    let mut xml = String::from("<?xml version=\"1.0\"?><i><chatid>flood</chatid>\n");
    let tail = "</i>\n";
    for n in 1.. {
        let entry = format!("<d p=\"{}.5,1,25,16777215,0,0,u,{n}\">x{n}</d>\n", n % 600);
        if xml.len() + entry.len() + tail.len() > bytes {
            break;
        }
        xml.push_str(&entry);
    }
    xml.push_str(tail);
    xml.into_bytes()
}

/// A small valid archive of `n` comments with ids from `first`.
fn small_archive(chat_id: &str, first: usize, n: usize) -> String {
    let mut xml = format!("<i><chatid>{chat_id}</chatid>");
    for id in first..first + n {
        xml.push_str(&format!(
            "<d p=\"1.5,1,25,255,1600000000,0,u,{id}\">c{id}</d>"
        ));
    }
    xml.push_str("</i>");
    xml
}

/// Posts `xml` as an import into `video`; the status and the JSON answer.
async fn import(client: &reqwest::Client, base: &str, video: &str, xml: Vec<u8>) -> (u16, Value) {
    let response = client
        .post(format!("{base}/api/videos/{video}/danmaku.xml"))
        .header(CONTENT_TYPE, "application/xml")
        .body(xml)
        .send()
        .await
        .expect("an answer");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The comments of `video` (its whole timeline, as the HTTP window reads it).
async fn stored(client: &reqwest::Client, base: &str, video: &str) -> Vec<Value> {
    let answer: Value = client
        .get(format!("{base}/api/videos/{video}/danmaku"))
        .send()
        .await
        .expect("an answer")
        .json()
        .await
        .expect("JSON");
    answer["items"].as_array().expect("items").clone()
}

/// Writes `head` (a request's head and maybe the start of its body) on a fresh socket.
fn raw_request(addr: std::net::SocketAddr, head: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("a connection");
    stream.set_read_timeout(Some(SOCKET_TIMEOUT)).unwrap();
    stream.write_all(head.as_bytes()).expect("the head is sent");
    stream
}

/// Reads an answer's status line, headers and body from `stream` (the server closes, or the
/// body's `Content-Length` ends it); fails the test if none comes within [`SOCKET_TIMEOUT`].
fn read_answer(stream: &mut TcpStream) -> (u16, String, Value) {
    let mut raw = Vec::new();
    let mut chunk = [0_u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&raw).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse::<usize>().ok());
            if length.is_some_and(|length| body.len() >= length) {
                let status = head[9..12].parse().expect("a status code");
                return (
                    status,
                    head.to_owned(),
                    serde_json::from_str(body).unwrap_or(Value::Null),
                );
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => panic!("the server closed without a whole answer: {text:?}"),
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("no answer within {SOCKET_TIMEOUT:?} ({e}); got {text:?}"),
        }
    }
}

/// The head of an import of `length` bytes into `video`, sent without its body.
fn import_head(video: &str, length: usize) -> String {
    format!(
        "POST /api/videos/{video}/danmaku.xml HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/xml\r\nContent-Length: {length}\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_oversized_imports_leave_memory_bounded_and_store_nothing() {
    // The real binary, so its resident memory is its own. Its peak (VmHWM) is watched while
    // eight clients each send an 8 MiB archive of some 250,000 entries, far past the cap; the
    // code before this fix parsed each whole (15 times its size in memory) and stored it all.
    /// How much the peak may exceed the memory at start, in KiB: eight 8 MiB bodies are 64 MiB
    /// on their own, so this fails if they are all held, let alone parsed.
    const PEAK_GROWTH_LIMIT_KIB: u64 = 96 * 1024;
    const CLIENTS: usize = 8;

    let store = TestStore::new("video");
    let server = Binary::start(env!("CARGO_BIN_EXE_ws-video"), &store, RELAXED);
    let pid = server.child.id();
    let client = helpers::http();
    // Warm up, so the baseline includes a served request and a database read.
    assert!(stored(&client, &server.base, "flood").await.is_empty());
    let baseline = proc_status_kib(pid, "VmRSS");

    let body = archive_of_about(MAX_IMPORT_BYTES - 1024);
    assert!(body.len() < MAX_IMPORT_BYTES && body.len() > MAX_IMPORT_BYTES - 4096);
    let mut imports = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let (client, base, body) = (helpers::http(), server.base.clone(), body.clone());
        imports.spawn(async move {
            let response = client
                .post(format!("{base}/api/videos/flood/danmaku.xml"))
                .header(CONTENT_TYPE, "application/xml")
                .body(body)
                .send()
                .await;
            match response {
                Ok(response) => {
                    let status = response.status().as_u16();
                    Ok((
                        status,
                        response.json::<Value>().await.unwrap_or(Value::Null),
                    ))
                }
                // A refused import may be answered and closed before its body is all sent.
                Err(e) => Err(e.to_string()),
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut answers = Vec::new();
    loop {
        let peak = proc_status_kib(pid, "VmHWM");
        assert!(
            peak <= baseline + PEAK_GROWTH_LIMIT_KIB,
            "resident memory peaked at {peak} KiB, from {baseline} KiB at start"
        );
        match tokio::time::timeout(Duration::from_millis(20), imports.join_next()).await {
            Ok(Some(answer)) => answers.push(answer.expect("the client task")),
            Ok(None) => break,
            Err(_) => assert!(Instant::now() < deadline, "the imports did not end"),
        }
    }
    let peak = proc_status_kib(pid, "VmHWM");
    eprintln!("peak resident memory {peak} KiB, {baseline} KiB at start: {answers:?}");

    let mut over_cap = 0;
    for answer in &answers {
        match answer {
            Ok((413, body)) => {
                assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
                let message = body["error"]["message"].as_str().unwrap_or_default();
                assert!(message.contains("more than 20000 entries"), "{body}");
                over_cap += 1;
            }
            Ok((503, body)) => assert_eq!(body["error"]["code"], "unavailable", "{body}"),
            Ok((status, body)) => panic!("an oversized import got {status}: {body}"),
            Err(_closed) => {}
        }
    }
    assert!(
        over_cap >= 1,
        "at least one import was read and refused: {answers:?}"
    );
    assert!(
        stored(&client, &server.base, "flood").await.is_empty(),
        "nothing was stored"
    );
    // And the service still imports what is within the limits.
    let (status, body) = import(
        &client,
        &server.base,
        "flood",
        small_archive("s", 1, 3).into(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["added"], 3, "{body}");
}

#[test]
fn a_client_without_budget_gets_429_before_its_body_is_read() {
    // One comment token per client, spent by a first, small import.
    let app = helpers::spawn_app(&["--rate-per-sec", "1", "--rate-burst", "1"]);
    let small = small_archive("b", 1, 1);
    let mut first = raw_request(
        app.addr,
        &format!("{}{small}", import_head("b", small.len())),
    );
    let (status, _, body) = read_answer(&mut first);
    assert_eq!(status, 200, "{body}");

    // The next import declares 8 MB and sends only a malformed start: the answer comes at
    // once, without the body, so neither the bytes nor a parse were spent on it (the code
    // before this fix waited for the whole body, then parsed it, then refused).
    let mut second = raw_request(
        app.addr,
        &format!("{}<i><d p=\"oops", import_head("b", 8_000_000)),
    );
    let (status, head, body) = read_answer(&mut second);
    assert_eq!(status, 429, "{head}\n{body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
}

#[tokio::test]
async fn imports_are_charged_by_their_comments_capped_in_entries_and_bounded_in_number() {
    let app = helpers::spawn_app(&[
        "--rate-per-sec",
        "100000",
        "--rate-burst",
        "100000",
        "--import-max-entries",
        "9",
        "--import-rows-burst",
        "9",
        "--import-rows-per-sec",
        "1",
        "--max-concurrent-imports",
        "1",
    ]);
    // Three clients, each with its own budgets.
    let (ann, bob, cat) = (
        client_from("127.0.0.1"),
        client_from("127.0.0.2"),
        client_from("127.0.0.3"),
    );

    // Over the entry cap: refused while reading, nothing stored.
    let (status, body) = import(&cat, &app.base, "v", small_archive("a", 1, 10).into()).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("more than 9 entries"), "{body}");
    assert!(stored(&cat, &app.base, "v").await.is_empty());

    // One import at a time: while ann's waits for its body (from 127.0.0.1, like `ann`), bob's
    // is refused with 503 at once. Bob's is over the cap, so it stores nothing whichever
    // answer it gets while the server is still taking ann's slot.
    let held = small_archive("a", 1, 5);
    let (start, rest) = held.split_at(10);
    let hold = || {
        raw_request(
            app.addr,
            &format!("{}{start}", import_head("v", held.len())),
        )
    };
    let mut waiting = hold();
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        let response = bob
            .post(format!("{}/api/videos/v/danmaku.xml", app.base))
            .header(CONTENT_TYPE, "application/xml")
            .body(small_archive("z", 1, 10))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(response.headers()[RETRY_AFTER], "1");
            break response.json::<Value>().await.unwrap();
        }
        // Bob's import got the slot: it was read and refused for its size, or, once those tries
        // (one row each) spent his import budget, for that.
        assert!(
            [StatusCode::PAYLOAD_TOO_LARGE, StatusCode::TOO_MANY_REQUESTS]
                .contains(&response.status()),
            "{}",
            response.status()
        );
        assert!(
            Instant::now() < deadline,
            "no 503 while an import is running"
        );
        // If ann's import arrived while bob's held the slot, it was answered 503 (at no cost):
        // send it again.
        waiting
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        if waiting.peek(&mut [0_u8; 1]).is_ok() {
            waiting = hold();
        }
        waiting.set_read_timeout(Some(SOCKET_TIMEOUT)).unwrap();
    };
    assert_eq!(refused["error"]["code"], "unavailable", "{refused}");
    // The held import completes, paying 5 of ann's 9 comments (and 1 for asking).
    waiting.write_all(rest.as_bytes()).unwrap();
    let (status, _, body) = read_answer(&mut waiting);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["added"], 5, "{body}");

    // Nine more would pass her budget (3 left, one more a second): refused, nothing stored.
    let (status, body) = import(&ann, &app.base, "v", small_archive("c", 1, 9).into()).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert_eq!(stored(&ann, &app.base, "v").await.len(), 5);
    // Cat, whose budget paid only 1 for asking each time, imports 7 of those whole.
    let (status, body) = import(&cat, &app.base, "v", small_archive("c", 1, 7).into()).await;
    assert_eq!((status, body["added"].as_u64()), (200, Some(7)), "{body}");
}

#[test]
fn a_body_that_trickles_in_is_refused_and_frees_its_import_permit() {
    let app = helpers::spawn_app(&[
        "--import-body-timeout-secs",
        "1",
        "--max-concurrent-imports",
        "1",
    ]);
    let small = small_archive("t", 1, 1);
    // The head and a few bytes, then nothing: the import holds the only permit until its
    // deadline, then is refused.
    let mut slow = raw_request(app.addr, &format!("{}<i>", import_head("t", small.len())));
    let (status, _, body) = read_answer(&mut slow);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_xml", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("within 1 s"),
        "{body}"
    );
    // The permit is free again.
    let mut next = raw_request(
        app.addr,
        &format!("{}{small}", import_head("t", small.len())),
    );
    let (status, _, body) = read_answer(&mut next);
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_videos_own_export_imported_back_adds_nothing_and_real_archives_still_import() {
    let app = helpers::spawn_app(RELAXED);
    let client = helpers::http();
    // Comments posted live (no archive key) and some imported from a Bilibili file.
    for (time, text) in [
        (1.25, "first"),
        (2.5, "second"),
        (3.0, "third, with a comma"),
    ] {
        let response = client
            .post(format!("{}/api/videos/demo/danmaku", app.base))
            .json(&json!({"author": "ann,%", "text": text, "time": time, "color": "#ff8800"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let (status, body) = import(
        &client,
        &app.base,
        "demo",
        small_archive("777", 1, 2).into(),
    )
    .await;
    assert_eq!((status, body["added"].as_u64()), (200, Some(2)), "{body}");
    let before = stored(&client, &app.base, "demo").await;
    assert_eq!(before.len(), 5);

    let export = client
        .get(format!("{}/api/videos/demo/danmaku.xml", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for round in 1..=2 {
        let (status, body) = import(&client, &app.base, "demo", export.clone().into()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            json!({"added": 0, "skipped": 5, "details": {"unsupported_mode": 0, "invalid": 0, "duplicate": 5, "banned": 0}}),
            "round {round}"
        );
        assert_eq!(
            stored(&client, &app.base, "demo").await,
            before,
            "round {round}"
        );
    }

    // Into another video the export is a copy, once.
    let (_, body) = import(&client, &app.base, "copy", export.clone().into()).await;
    assert_eq!(body["added"], 5, "{body}");
    let (_, body) = import(&client, &app.base, "copy", export.clone().into()).await;
    assert_eq!(body["added"], 0, "{body}");

    // A Bilibili file whose chat id happens to be the video's name is not its export: its
    // entries are new comments, even where their ids are ids the video has.
    let bilibili = format!(
        "<i><chatserver>chat.bilibili.com</chatserver><chatid>demo</chatid>{}</i>",
        "<d p=\"1.25000,1,25,16746496,1600000000,0,ann%2C%25,1\">first</d>"
    );
    let (_, body) = import(&client, &app.base, "demo", bilibili.clone().into()).await;
    assert_eq!(body["added"], 1, "{body}");
    let (_, body) = import(&client, &app.base, "demo", bilibili.into()).await;
    assert_eq!(body["added"], 0, "{body}");

    // What lets the import recognise its own rows: who wrote the file, which video, and the
    // row ids.
    assert!(
        export.contains("<chatserver>danmaku</chatserver>"),
        "{export}"
    );
    assert!(export.contains("<chatid>demo</chatid>"), "{export}");
    assert!(export.contains(",1\">first</d>"), "{export}");
}

/// A client bound to `ip` (any 127.0.0.0/8 address reaches the server on 127.0.0.1), so a
/// test can be two clients.
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(40))
        .build()
        .unwrap()
}

/// A read budget of 100 rows at once and one more a second, and comments enough to seed
/// videos: the settings of the read tests.
const SMALL_READS: &[&str] = &[
    "--read-rows-per-sec",
    "1",
    "--read-rows-burst",
    "100",
    "--rate-per-sec",
    "100000",
    "--rate-burst",
    "100000",
];

/// Imports `n` comments into `video` (imports spend no read budget).
async fn seed(base: &str, video: &str, n: usize) {
    let (status, body) = import(
        &helpers::http(),
        base,
        video,
        small_archive(video, 1, n).into(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["added"], n, "{body}");
}

/// The `Retry-After` of a refusal, in seconds.
fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers()[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn reads_cost_the_rows_they_return_and_past_the_budget_get_429_others_unaffected() {
    let app = helpers::spawn_app(SMALL_READS);
    seed(&app.base, "busy", 60).await;

    // Reads of an empty video cost one row each, however many they might have returned: 30
    // rounds of a DPlayer list (up to 10,000 rows), a window (5,000) and an export (1,000 a
    // page) fit a budget of 100.
    let light = client_from("127.0.0.3");
    for n in 0..30 {
        for path in [
            "/dplayer/v3/?id=quiet",
            "/api/videos/quiet/danmaku",
            "/api/videos/quiet/danmaku.xml",
        ] {
            let response = light
                .get(format!("{}{path}", app.base))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}, round {n}");
        }
    }

    // 60 rows, then 60 more (the second from the brief cache, charged all the same): the
    // first leaves 40, the second empties the budget and owes 20.
    let hammer = client_from("127.0.0.1");
    let dplayer = format!("{}/dplayer/v3/?id=busy", app.base);
    for n in 0..2 {
        let response = hammer.get(&dplayer).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "list {n}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["data"].as_array().unwrap().len(), 60, "list {n}");
    }
    let refused = hammer.get(&dplayer).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait = retry_after(&refused);
    assert!(wait >= 10, "20 rows owed at one a second: {wait} s");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], 1, "{body}");
    assert!(
        body["msg"].as_str().unwrap().contains("DPlayer list"),
        "{body}"
    );
    // The same budget pays for windows, exports and lists of any video: all refused now,
    // before the database is asked.
    for path in [
        "/api/videos/busy/danmaku",
        "/api/videos/busy/danmaku.xml",
        "/dplayer/v3/?id=quiet&max=1",
    ] {
        let response = hammer
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "{path}");
        assert!(retry_after(&response) >= 1, "{path}");
    }
    let window: Value = hammer
        .get(format!("{}/api/videos/busy/danmaku", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(window["error"]["code"], "rate_limited", "{window}");

    // Another client has its own budget.
    let other = client_from("127.0.0.2");
    let response = other.get(&dplayer).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 60, "{body}");
}

#[tokio::test]
async fn ranges_cost_the_rows_they_return_and_past_the_budget_get_an_error_frame() {
    let app = helpers::spawn_app(SMALL_READS);
    seed(&app.base, "busy", 60).await;
    let range = |n: &str| json!({"type": "range", "from": 0, "to": 60, "ref": n});
    // 20 ranges of an empty video: one row each (the old price, 5,000 each, refused the first).
    let (mut quiet, _) = helpers::viewer(&app, "quiet").await;
    for n in 0..20 {
        quiet.send_json(&range(&format!("q{n}"))).await;
        let answer = quiet.recv_json().await;
        assert_eq!(answer["type"], "range", "{answer}");
        assert_eq!(answer["ref"], format!("q{n}"), "{answer}");
        assert!(answer["items"].as_array().unwrap().is_empty(), "{answer}");
    }
    // 80 rows left: a range of 60 rows leaves 20; the next empties the budget and owes 40.
    let (mut viewer, _) = helpers::viewer(&app, "busy").await;
    for n in 1..=2 {
        viewer.send_json(&range(&format!("r{n}"))).await;
        let answer = viewer.recv_type("range").await;
        assert_eq!(answer["ref"], format!("r{n}"), "{answer}");
        assert_eq!(answer["items"].as_array().unwrap().len(), 60, "{answer}");
    }
    viewer.send_json(&range("r3")).await;
    let refused = viewer.recv_json().await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    assert_eq!(refused["ref"], "r3", "{refused}");
    // A malformed range is refused for what it is, and costs nothing.
    viewer
        .send_json(&json!({"type": "range", "from": 5, "to": 1, "ref": "bad"}))
        .await;
    assert_eq!(viewer.recv_json().await["code"], "invalid_time");
    // The connection stays, and comments (another budget) still go through.
    viewer.send_json(&json!({"type": "ping"})).await;
    assert_eq!(viewer.recv_type("pong").await["type"], "pong");
    viewer
        .send_json(
            &json!({"type": "send", "text": "still here", "time": 1.0, "author": "a", "ref": "s"}),
        )
        .await;
    let ack = viewer.recv_type("ack").await;
    assert_eq!(ack["ref"], "s", "{ack}");
    // The HTTP routes spend the same budget: the window is refused too...
    let response = client_from("127.0.0.1")
        .get(format!("{}/api/videos/busy/danmaku", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    // ...and another client's is not.
    let other = stored(&client_from("127.0.0.2"), &app.base, "busy").await;
    assert_eq!(other.len(), 61);
}

#[tokio::test]
async fn a_viewers_first_reads_pass_on_the_default_budget_even_for_a_classroom() {
    // What the compose check does (a range, a window, a DPlayer list without max, an export)
    // on a video with a few comments, for ten viewers behind one address, on the default
    // budgets (5,000 rows a second, 20,000 at once). Priced by what they might return, one
    // viewer's four reads cost 21,000 rows and the export was refused.
    let app = helpers::spawn_app(&[]);
    let client = client_from("127.0.0.1");
    for n in 0..3 {
        let response = client
            .post(format!("{}/api/videos/probe/danmaku", app.base))
            .json(&json!({"author": "a", "text": format!("c{n}"), "time": 1.0 + f64::from(n)}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    for viewer_n in 0..10 {
        let (mut viewer, _) = helpers::viewer(&app, "probe").await;
        viewer
            .send_json(&json!({"type": "range", "from": 0, "to": 10, "ref": 1}))
            .await;
        let range = viewer.recv_type("range").await;
        assert_eq!(range["items"].as_array().unwrap().len(), 3, "{range}");
        let window = stored(&client, &app.base, "probe").await;
        assert_eq!(window.len(), 3, "viewer {viewer_n}");
        let response = client
            .get(format!("{}/dplayer/v3/?id=probe", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "viewer {viewer_n}");
        let list: Value = response.json().await.unwrap();
        assert_eq!(list["data"].as_array().unwrap().len(), 3, "{list}");
        let response = client
            .get(format!("{}/api/videos/probe/danmaku.xml", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "viewer {viewer_n}");
        let xml = response.text().await.unwrap();
        assert_eq!(bilibili::parse(xml.as_bytes()).unwrap().items.len(), 3);
    }
}

#[tokio::test]
async fn dplayer_lists_and_export_heads_are_served_from_the_brief_cache() {
    // A long time to live, so the test can see the cached answer whatever the machine's pace.
    let app = helpers::spawn_app(&[RELAXED, &["--read-cache-ms", "600000"]].concat());
    let client = helpers::http();
    let post = |text: &'static str| {
        let (client, base) = (client.clone(), app.base.clone());
        async move {
            let response = client
                .post(format!("{base}/api/videos/demo/danmaku"))
                .json(&json!({"author": "a", "text": text, "time": 1.0}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
        }
    };
    let list = |max: u32| {
        let (client, base) = (client.clone(), app.base.clone());
        async move {
            let body: Value = client
                .get(format!("{base}/dplayer/v3/?id=demo&max={max}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["data"].as_array().unwrap().len()
        }
    };
    let export = || {
        let (client, base) = (client.clone(), app.base.clone());
        async move {
            let xml = client
                .get(format!("{base}/api/videos/demo/danmaku.xml"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            bilibili::parse(xml.as_bytes()).unwrap().items.len()
        }
    };
    post("one").await;
    assert_eq!((list(100).await, export().await), (1, 1));
    post("two").await;
    // The same reads are answered from memory, without the new comment...
    assert_eq!((list(100).await, export().await), (1, 1));
    // ...while a read not cached yet, and the uncached window, see it.
    assert_eq!(list(101).await, 2);
    assert_eq!(stored(&client, &app.base, "demo").await.len(), 2);
}

#[tokio::test]
async fn an_export_past_the_burst_streams_whole_at_the_clients_read_rate() {
    // 12 pages of 1,000 rows against a burst of 10,000 and 5,000 a second: the last pages wait
    // for the budget instead of breaking the archive off.
    let app = helpers::spawn_app(&[
        "--read-rows-per-sec",
        "5000",
        "--read-rows-burst",
        "10000",
        "--rate-per-sec",
        "1000",
        "--rate-burst",
        "1000",
    ]);
    let client = helpers::http();
    let (status, body) = import(
        &client,
        &app.base,
        "big",
        small_archive("big", 1, 12_000).into(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let xml = client
        .get(format!("{}/api/videos/big/danmaku.xml", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let archive = bilibili::parse(xml.as_bytes()).expect("a whole archive");
    assert_eq!(archive.items.len(), 12_000);
}
