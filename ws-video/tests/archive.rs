//! The DPlayer v3 API and Bilibili XML import and export, against the real service on an
//! ephemeral port with a real SQLite file, over real HTTP: requests shaped exactly as DPlayer
//! and a Bilibili archive make them.

mod helpers;

use helpers::RELAXED;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use serde_json::{Value, json};
use service_kit::testing::{TestService, WsClient};
use shared_model::formats::bilibili;

/// A sample archive: modes 1 to 9, escaped markup, CDATA, CJK, a repeated id, bad entries.
const SAMPLE: &str = include_str!("fixtures/bilibili-sample.xml");

/// What importing [`SAMPLE`] into an empty video answers, entry by entry of the file: modes
/// 1-5 plus the CDATA, CJK and id-less lines are added; modes 6-9 are unsupported; the blank,
/// too-late and too-long lines are invalid; the line repeating the first id is a duplicate.
const SAMPLE_ADDED: u64 = 8;
const SAMPLE_UNSUPPORTED: u64 = 4;
const SAMPLE_INVALID: u64 = 3;
const SAMPLE_ENTRIES: u64 = 16;

/// The service on a free port with a fresh database, and a client with a timeout.
struct App {
    server: TestService,
    client: reqwest::Client,
}

fn spawn_app(extra: &[&str]) -> App {
    App {
        server: helpers::spawn_app(extra),
        client: helpers::http(),
    }
}

impl App {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base)
    }

    /// Posts `body` to the DPlayer API as DPlayer does (JSON with its content type).
    async fn dplayer_post(&self, path: &str, body: &str) -> (StatusCode, HeaderMap, Value) {
        let response = self
            .client
            .post(self.url(path))
            .header(CONTENT_TYPE, "application/json; charset=UTF-8")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        (status, headers, response.json().await.unwrap())
    }

    /// Reads the DPlayer list as DPlayer does (it sends a JSON content type even on GET).
    async fn dplayer_get(&self, path_and_query: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(self.url(path_and_query))
            .header(CONTENT_TYPE, "application/json; charset=UTF-8")
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    /// Imports `xml` into `video` with the given content type.
    async fn import(&self, video: &str, content_type: &str, xml: Vec<u8>) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url(&format!("/api/videos/{video}/danmaku.xml")))
            .header(CONTENT_TYPE, content_type)
            .body(xml)
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    /// Imports `xml` into `video` and expects success.
    async fn import_ok(&self, video: &str, xml: &str) -> Value {
        let (status, body) = self
            .import(video, "application/xml", xml.as_bytes().to_vec())
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// The export of `video`, checking its content type.
    async fn export(&self, video: &str) -> String {
        let response = self
            .client
            .get(self.url(&format!("/api/videos/{video}/danmaku.xml")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "application/xml; charset=utf-8"
        );
        response.text().await.unwrap()
    }
}

/// Asserts `body` is DPlayer's failure: exactly `code` 1 and a non-empty `msg`; returns `msg`.
fn dplayer_failure(body: &Value) -> String {
    assert_eq!(body["code"], 1, "{body}");
    let msg = body["msg"].as_str().unwrap_or_default();
    assert!(!msg.is_empty(), "{body}");
    assert_eq!(
        body.as_object().unwrap().len(),
        2,
        "only code and msg: {body}"
    );
    msg.to_owned()
}

/// `{"added", "skipped", "details"}` as numbers.
fn report(added: u64, unsupported_mode: u64, invalid: u64, duplicate: u64) -> Value {
    json!({
        "added": added,
        "skipped": unsupported_mode + invalid + duplicate,
        "details": {"unsupported_mode": unsupported_mode, "invalid": invalid, "duplicate": duplicate, "banned": 0}
    })
}

#[tokio::test]
async fn dplayer_posts_are_read_back_in_dplayer_rows_ordered_by_time() {
    let app = spawn_app(RELAXED);
    // Exactly what DPlayer 1.27 sends (`token` is undefined unless the page sets one).
    let (status, _, body) = app
        .dplayer_post(
            "/dplayer/v3/",
            r#"{"id":"demo","author":"DIYgod","time":12.3,"text":"hello","color":16777215,"type":0}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["code"], 0, "{body}");
    assert_eq!(body["data"]["text"], "hello");
    assert_eq!(body["data"]["mode"], "scroll");
    assert_eq!(body["data"]["time"], 12.3);
    assert!(body["data"]["id"].as_i64().unwrap() >= 1, "{body}");
    // Top and bottom, with a token and a referer as other DPlayer versions send.
    for (time, kind, color, text) in [
        (30.0, 2, 0xff0000, "bottom red"),
        (5.5, 1, 0x00ff00, "top green"),
    ] {
        let post = json!({
            "token": "tokendemo", "referer": "https://example.org/watch", "id": "demo",
            "author": "viewer", "time": time, "text": text, "color": color, "type": kind
        });
        let (status, _, body) = app.dplayer_post("/dplayer/v3/", &post.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["code"], 0, "{body}");
    }

    let (status, list) = app.dplayer_get("/dplayer/v3/?id=demo&max=1000").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["code"], 0, "{list}");
    let rows = list["data"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{list}");
    // [time, type, color, author, text], by time.
    assert_eq!(rows[0], json!([5.5, 1, 65280, "viewer", "top green"]));
    assert_eq!(rows[1], json!([12.3, 0, 16777215, "DIYgod", "hello"]));
    assert_eq!(rows[2], json!([30.0, 2, 16711680, "viewer", "bottom red"]));
    assert!(rows[1][2].is_u64(), "the colour is a decimal integer");

    let (_, other) = app.dplayer_get("/dplayer/v3/?id=another&max=1000").await;
    assert_eq!(other, json!({"code": 0, "data": []}));
}

#[tokio::test]
async fn dplayer_routes_work_without_the_trailing_slash() {
    let app = spawn_app(RELAXED);
    let (status, _, body) = app
        .dplayer_post(
            "/dplayer/v3",
            r#"{"id":"v","author":"a","time":1,"text":"no slash","color":255,"type":2}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, list) = app.dplayer_get("/dplayer/v3?id=v").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["data"], json!([[1.0, 2, 255, "a", "no slash"]]));
}

#[tokio::test]
async fn dplayer_max_keeps_the_newest_comments_in_time_order() {
    let app = spawn_app(RELAXED);
    for (time, text) in [(50.0, "oldest"), (20.0, "middle"), (10.0, "newest")] {
        let post =
            json!({"id": "v", "author": "a", "time": time, "text": text, "color": 0, "type": 0});
        let (status, _, body) = app.dplayer_post("/dplayer/v3/", &post.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (_, list) = app.dplayer_get("/dplayer/v3/?id=v&max=2").await;
    let texts: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[4].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["newest", "middle"]);
    // Absent or empty `max` means all (up to the cap); a huge one is lowered, not refused.
    for query in ["id=v", "id=v&max=", "id=v&max=99999999"] {
        let (status, list) = app.dplayer_get(&format!("/dplayer/v3/?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {list}");
        assert_eq!(list["data"].as_array().unwrap().len(), 3, "{query}");
    }
}

#[tokio::test]
async fn dplayer_text_is_html_escaped_because_dplayer_renders_it_as_html() {
    let app = spawn_app(RELAXED);
    let post = json!({
        "id": "v", "author": "<i>me</i>", "time": 1, "text": "<img src=x onerror=alert(1)> & co",
        "color": 16777215, "type": 0
    });
    let (status, _, body) = app.dplayer_post("/dplayer/v3/", &post.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["data"]["text"], "<img src=x onerror=alert(1)> & co",
        "stored as plain text"
    );
    let (_, list) = app.dplayer_get("/dplayer/v3/?id=v").await;
    assert_eq!(list["data"][0][3], "&lt;i&gt;me&lt;/i&gt;");
    assert_eq!(
        list["data"][0][4],
        "&lt;img src=x onerror=alert(1)&gt; &amp; co"
    );
}

#[tokio::test]
async fn dplayer_failures_are_code_1_with_a_message_and_a_fitting_status() {
    let app = spawn_app(RELAXED);
    let good = json!({"id": "v", "author": "a", "time": 1, "text": "t", "color": 0, "type": 0});
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body.to_string()
    };
    let without_id = {
        let mut body = good.clone();
        body.as_object_mut().unwrap().remove("id");
        body.to_string()
    };
    let cases = [
        ("empty text", with("text", json!("   ")), 422, "text"),
        ("bad type", with("type", json!(7)), 422, "type"),
        ("missing id", without_id, 400, "id"),
        ("bad video id", with("id", json!("../x")), 400, "video"),
        ("time past the end", with("time", json!(90000)), 422, "time"),
        (
            "colour beyond 24 bits",
            with("color", json!(16777216)),
            422,
            "color",
        ),
        (
            "time as text",
            with("time", json!("soon")),
            400,
            "invalid type",
        ),
        (
            "malformed JSON",
            r#"{"id":"v","author":"#.to_owned(),
            400,
            "EOF",
        ),
        ("not an object", "[1,2,3]".to_owned(), 400, "not valid"),
        (
            "over 4 KiB",
            with("text", json!("x".repeat(5000))),
            413,
            "limit",
        ),
    ];
    for (what, body, status, hint) in cases {
        let (got, _, answer) = app.dplayer_post("/dplayer/v3/", &body).await;
        assert_eq!(got.as_u16(), status, "{what}: {answer}");
        let msg = dplayer_failure(&answer);
        assert!(msg.contains(hint), "{what}: {msg}");
    }

    let response = app
        .client
        .post(app.url("/dplayer/v3/"))
        .header(CONTENT_TYPE, "text/plain")
        .body(good.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    dplayer_failure(&response.json().await.unwrap());

    let (status, body) = app.dplayer_get("/dplayer/v3/?max=10").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(dplayer_failure(&body).contains("id"));
    let (status, body) = app.dplayer_get("/dplayer/v3/?id=v&max=lots").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(dplayer_failure(&body).contains("max"));

    let (_, list) = app.dplayer_get("/dplayer/v3/?id=v").await;
    assert_eq!(list["data"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn dplayer_over_the_rate_gets_429_with_retry_after_and_code_1() {
    let app = spawn_app(&["--rate-per-sec", "1", "--rate-burst", "1"]);
    let post = r#"{"id":"v","author":"a","time":1,"text":"t","color":0,"type":0}"#;
    let (status, _, body) = app.dplayer_post("/dplayer/v3/", post).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, headers, body) = app.dplayer_post("/dplayer/v3/", post).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(headers.contains_key("retry-after"));
    dplayer_failure(&body);
    let (_, list) = app.dplayer_get("/dplayer/v3/?id=v").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn dplayer_routes_answer_cors_preflights_from_any_origin() {
    let app = spawn_app(RELAXED);
    let origin = "https://player.example.org";
    for path in ["/dplayer/v3/", "/dplayer/v3"] {
        let preflight = app
            .client
            .request(reqwest::Method::OPTIONS, app.url(path))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "content-type")
            .send()
            .await
            .unwrap();
        assert!(preflight.status().is_success(), "{}", preflight.status());
        let headers = preflight.headers();
        assert_eq!(headers["access-control-allow-origin"], "*");
        let methods = headers["access-control-allow-methods"].to_str().unwrap();
        assert!(
            methods.contains("POST") && methods.contains("GET"),
            "{methods}"
        );
        let allowed = headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        assert!(allowed.contains("content-type"), "{allowed}");
    }
    // The answers themselves carry the header too, failures included, so the player can read
    // the message.
    let read = app
        .client
        .get(app.url("/dplayer/v3/?id=v"))
        .header("Origin", origin)
        .send()
        .await
        .unwrap();
    assert_eq!(read.headers()["access-control-allow-origin"], "*");
    let failed = app
        .client
        .post(app.url("/dplayer/v3/"))
        .header("Origin", origin)
        .header(CONTENT_TYPE, "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(failed.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn a_dplayer_comment_reaches_websocket_viewers_at_once() {
    let app = spawn_app(RELAXED);
    let ws = app.server.base.replacen("http://", "ws://", 1);
    let mut viewer = WsClient::connect(&format!("{ws}/ws/videos/demo")).await;
    let hello = viewer.recv_json().await;
    assert_eq!(hello["type"], "hello", "{hello}");
    let (status, _, body) = app
        .dplayer_post(
            "/dplayer/v3/",
            r#"{"id":"demo","author":"DIYgod","time":3,"text":"live","color":16777215,"type":1}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let frame = viewer.recv_json().await;
    assert_eq!(frame["type"], "danmaku", "{frame}");
    assert_eq!(frame["items"][0]["text"], "live");
    assert_eq!(frame["items"][0]["mode"], "top");
    assert_eq!(frame["items"][0]["id"], body["data"]["id"]);
}

#[tokio::test]
async fn a_bilibili_archive_imports_once_exports_and_round_trips_into_another_video() {
    let app = spawn_app(RELAXED);

    let first = app.import_ok("demo", SAMPLE).await;
    assert_eq!(
        first,
        report(SAMPLE_ADDED, SAMPLE_UNSUPPORTED, SAMPLE_INVALID, 1)
    );
    assert_eq!(
        first["added"].as_u64().unwrap() + first["skipped"].as_u64().unwrap(),
        SAMPLE_ENTRIES
    );
    // The same file again adds nothing: every supported, valid entry is now a duplicate.
    let again = app.import_ok("demo", SAMPLE).await;
    assert_eq!(
        again,
        report(0, SAMPLE_UNSUPPORTED, SAMPLE_INVALID, SAMPLE_ADDED + 1)
    );

    let exported = app.export("demo").await;
    assert!(
        exported.starts_with(r#"<?xml version="1.0" encoding="UTF-8"?>"#),
        "{exported}"
    );
    assert_eq!(exported.matches("<d p=").count() as u64, SAMPLE_ADDED);
    assert!(exported.contains("<chatid>demo</chatid>"), "{exported}");
    // Field by field: time, mode (4 is bottom), size, colour, original send time, pool, the
    // author in the user field, our id.
    assert!(
        exported
            .contains(r#"<d p="4.50000,4,25,255,1600000004,0,e5f6a7b8,4">底部弹幕 (bottom)</d>"#),
        "{exported}"
    );
    // Markup is escaped by the writer, never emitted as markup.
    assert!(
        exported.contains(
            r#",5,25,16776960,1600000005,0,deadbeef,5">顶部 &lt;b&gt;not bold&lt;/b&gt; &amp; &quot;quoted&quot;</d>"#
        ),
        "{exported}"
    );
    assert!(
        exported.contains(">CDATA &lt;kept&gt; &amp; plain</d>"),
        "{exported}"
    );
    assert!(exported.contains(">哈哈哈哈 🎉 弹幕</d>"), "{exported}");
    assert!(
        exported.contains(",1,25,16777215,1600000016,0,bilibili,8\">no user and no id</d>"),
        "{exported}"
    );
    assert!(!exported.contains("mode 6") && !exported.contains("   </d>"));

    // The export imports into another video whole, and only once.
    let copied = app.import_ok("copy", &exported).await;
    assert_eq!(copied, report(SAMPLE_ADDED, 0, 0, 0));
    let copied_again = app.import_ok("copy", &exported).await;
    assert_eq!(copied_again, report(0, 0, 0, SAMPLE_ADDED));

    // Both videos now hold the same comments: same time, mode, colour, author, text, send time.
    let original = bilibili::parse(exported.as_bytes()).unwrap();
    let copy = bilibili::parse(app.export("copy").await.as_bytes()).unwrap();
    assert_eq!(original.items.len() as u64, SAMPLE_ADDED);
    assert_eq!(copy.items.len(), original.items.len());
    for (a, b) in original.items.iter().zip(&copy.items) {
        assert_eq!(a.comment.new, b.comment.new);
        assert_eq!(a.comment.sent_at, b.comment.sent_at);
    }
    let top = &original.items[4];
    assert_eq!(top.comment.new.text, r#"顶部 <b>not bold</b> & "quoted""#);
    assert_eq!(top.comment.new.author, "deadbeef");
    assert_eq!(
        top.comment
            .sent_at
            .map(shared_model::time::rfc3339)
            .as_deref(),
        Some("2020-09-13T12:26:45.000Z")
    );

    // And DPlayer sees the imported comments with their type codes, by time.
    let (_, list) = app.dplayer_get("/dplayer/v3/?id=demo").await;
    let types: Vec<u64> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[1].as_u64().unwrap())
        .collect();
    assert_eq!(types, [0, 0, 0, 2, 1, 0, 0, 0]);
}

#[tokio::test]
async fn an_export_of_many_comments_streams_every_page() {
    let app = spawn_app(RELAXED);
    // More than two export pages and more than one import batch.
    let total = 2_500;
    let mut xml = String::from("<?xml version=\"1.0\"?><i><chatid>bulk</chatid>");
    for n in 1..=total {
        xml.push_str(&format!(
            "<d p=\"{}.5,1,25,16777215,1600000000,0,u{n},{n}\">comment {n}</d>\n",
            n % 600
        ));
    }
    xml.push_str("</i>");
    assert_eq!(app.import_ok("bulk", &xml).await, report(total, 0, 0, 0));
    let exported = app.export("bulk").await;
    assert!(
        exported.trim_end().ends_with("</i>"),
        "the archive is closed"
    );
    let archive = bilibili::parse(exported.as_bytes()).unwrap();
    assert_eq!(archive.items.len() as u64, total);
    assert_eq!(archive.items[0].comment.new.text, "comment 1");
    assert_eq!(archive.items[2_499].comment.new.text, "comment 2500");
}

#[tokio::test]
async fn an_empty_video_exports_an_empty_archive() {
    let app = spawn_app(RELAXED);
    let exported = app.export("nothing-here").await;
    let archive = bilibili::parse(exported.as_bytes()).unwrap();
    assert!(archive.items.is_empty());
    assert_eq!(archive.chat_id.as_deref(), Some("nothing-here"));
}

#[tokio::test]
async fn malformed_xml_is_refused_with_400_naming_the_problem_and_stores_nothing() {
    let app = spawn_app(RELAXED);
    let cases = [
        (
            "<i>\n  <d p=\"1,1,25,0,0,0,u,1\">fine</d>\n  <d p=\"2,1,25,0,0,0,u,2\">bad</e>\n</i>",
            "line 3",
        ),
        ("<i><d p=\"1,1\">a &nbsp; b</d></i>", "&nbsp;"),
        ("<html><body>not danmaku</body></html>", "<html>"),
        ("<i><d p=\"1,1\">cut off", "still open"),
        ("", "no root element"),
    ];
    for (xml, hint) in cases {
        let (status, body) = app
            .import("v", "application/xml", xml.as_bytes().to_vec())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{xml}: {body}");
        assert_eq!(body["error"]["code"], "invalid_xml", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(hint), "{xml}: {message}");
    }
    let archive = bilibili::parse(app.export("v").await.as_bytes()).unwrap();
    assert!(
        archive.items.is_empty(),
        "the valid first line was not kept"
    );
}

#[tokio::test]
async fn imports_need_an_xml_content_type_and_a_body_within_the_limit() {
    let app = spawn_app(RELAXED);
    for content_type in [
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
    ] {
        let (status, body) = app
            .import("v", content_type, SAMPLE.as_bytes().to_vec())
            .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{content_type}");
        assert_eq!(body["error"]["code"], "unsupported_media_type");
    }
    // text/xml works as well as application/xml, parameters and all.
    let (status, body) = app
        .import("v", "text/xml; charset=utf-8", SAMPLE.as_bytes().to_vec())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["added"].as_u64(), Some(SAMPLE_ADDED));

    let huge = vec![b' '; ws_video::archive::MAX_IMPORT_BYTES + 1];
    let (status, body) = app.import("v", "application/xml", huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");

    let (status, body) = app
        .import("no.dots", "application/xml", SAMPLE.as_bytes().to_vec())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_channel");
}

#[test]
fn a_chunked_dplayer_body_over_4_kib_is_refused_while_reading() {
    use std::io::{Read, Write};

    let app = spawn_app(RELAXED);
    // No Content-Length, so the limit can only be enforced while the body streams in.
    let mut stream = std::net::TcpStream::connect(app.server.addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let chunk = "x".repeat(1024);
    let mut request = String::from(
        "POST /dplayer/v3/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    );
    for _ in 0..6 {
        request.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    request.push_str("0\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    // The server may close once it has answered; what it sent before that is all we need.
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body: Value = serde_json::from_str(body).unwrap();
    assert!(dplayer_failure(&body).contains("4096"), "{body}");
}
