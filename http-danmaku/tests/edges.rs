//! The service's edges against the real server: which `Host` names it answers to (DNS
//! rebinding), pages served from `--web-dir`, and what the access log leaves out.

mod helpers;

use std::net::SocketAddr;
use std::time::Duration;

use helpers::{spawn_app, spawn_app_with};
use service_kit::testing::{Binary, RawResponse, TestStore, raw_http};

/// `GET path` with exactly these extra header lines (each ending in `\r\n`).
fn get(addr: SocketAddr, path: &str, headers: &str) -> Option<RawResponse> {
    let request = format!("GET {path} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n");
    raw_http(addr, request.as_bytes())
}

/// `GET path` naming `host` in the `Host` header; the server must answer.
fn get_as(addr: SocketAddr, host: &str, path: &str) -> RawResponse {
    get(addr, path, &format!("Host: {host}\r\n"))
        .unwrap_or_else(|| panic!("GET {path} as {host}: the server closed without answering"))
}

/// Asserts the JSON refusal of a host the service does not answer to.
fn assert_host_refused(response: &RawResponse, what: &str) {
    assert_eq!(response.status, 421, "{what}: {}", response.head);
    assert_eq!(
        response.json()["error"]["code"],
        "host_not_allowed",
        "{what}"
    );
}

#[tokio::test]
async fn a_foreign_host_name_is_refused_on_every_route() {
    let app = spawn_app();
    let port = app.addr.port();
    let evil = format!("evil.example:{port}");
    assert_host_refused(&get_as(app.addr, &evil, "/api/rooms/r1/danmaku"), "API");
    assert_host_refused(&get_as(app.addr, &evil, "/"), "the index page");
    assert_host_refused(&get_as(app.addr, &evil, "/js/stage.js"), "a script");
    assert_host_refused(&get_as(app.addr, &evil, "/healthz"), "health");
    assert_host_refused(&get_as(app.addr, "evil.example", "/"), "no port");
    let post = "POST /api/rooms/r1/danmaku HTTP/1.1\r\nHost: evil.example\r\n\
         Content-Type: application/json\r\nContent-Length: 13\r\nConnection: close\r\n\r\n\
         {\"text\":\"hi\"}";
    let refused = raw_http(app.addr, post.as_bytes()).expect("an answer");
    assert_host_refused(&refused, "a comment");
    // A header the page could add itself after rebinding does not make its host acceptable.
    let forwarded = get(
        app.addr,
        "/api/rooms/r1/danmaku",
        &format!(
            "Host: {evil}\r\nX-Forwarded-Host: localhost:{port}\r\nForwarded: host=localhost\r\n"
        ),
    )
    .expect("an answer");
    assert_host_refused(&forwarded, "X-Forwarded-Host");
    // A host in the request line counts as much as the header (HTTP/1.1 says it wins).
    let absolute = get(
        app.addr,
        "http://evil.example/api/rooms/r1/danmaku",
        &format!("Host: 127.0.0.1:{port}\r\n"),
    )
    .expect("an answer");
    assert_host_refused(&absolute, "an absolute URI");
    // A request that names no host at all is refused too.
    let nameless =
        raw_http(app.addr, b"GET /api/rooms/r1/danmaku HTTP/1.0\r\n\r\n").expect("an answer");
    assert_host_refused(&nameless, "no Host");
    // Nothing refused was stored.
    let stored = get_as(
        app.addr,
        &format!("127.0.0.1:{port}"),
        "/api/rooms/r1/danmaku",
    );
    assert_eq!(stored.json()["items"], serde_json::json!([]));
}

#[tokio::test]
async fn the_services_own_addresses_are_answered() {
    let app = spawn_app();
    let port = app.addr.port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("LocalHost.:{port}"),
        "localhost".to_owned(),
        format!("[::1]:{port}"),
    ] {
        let api = get_as(app.addr, &host, "/api/rooms/r1/danmaku");
        assert_eq!(api.status, 200, "{host}: {}", api.head);
        assert_eq!(get_as(app.addr, &host, "/").status, 200, "{host}");
    }
}

#[tokio::test]
async fn a_configured_host_name_is_answered_and_star_answers_any() {
    let app = spawn_app_with(&["--allowed-hosts", "danmaku.example, other.example:9"]);
    let port = app.addr.port();
    let named = get_as(
        app.addr,
        &format!("danmaku.example:{port}"),
        "/api/rooms/r1/danmaku",
    );
    assert_eq!(named.status, 200, "{}", named.head);
    assert_eq!(get_as(app.addr, "DANMAKU.example", "/").status, 200);
    // A name listed with a port is answered on that port only.
    assert_eq!(get_as(app.addr, "other.example:9", "/").status, 200);
    assert_host_refused(
        &get_as(app.addr, &format!("other.example:{port}"), "/"),
        "port",
    );
    assert_host_refused(&get_as(app.addr, "evil.example", "/"), "unlisted");
    assert_eq!(
        get_as(app.addr, &format!("localhost:{port}"), "/").status,
        200
    );

    let any = spawn_app_with(&["--allowed-hosts", "*"]);
    let answer = get_as(any.addr, "evil.example", "/api/rooms/r1/danmaku");
    assert_eq!(answer.status, 200, "{}", answer.head);
}

#[tokio::test]
async fn a_service_on_every_address_answers_to_ip_addresses_but_not_names() {
    // Set to bind 0.0.0.0 (as in a container; the test's listener stays on 127.0.0.1), it is
    // reached by whatever address of the machine a client knows; an address cannot be rebound
    // to an attacker's page, a name can.
    let app = spawn_app_with(&["--bind", "0.0.0.0"]);
    assert_eq!(get_as(app.addr, "192.0.2.7:8081", "/").status, 200);
    assert_eq!(get_as(app.addr, "[2001:db8::7]", "/").status, 200);
    assert_host_refused(&get_as(app.addr, "evil.example:8081", "/"), "a name");
}

#[test]
fn bad_allowed_hosts_are_refused_naming_the_variable() {
    for bad in [
        "http://a.example",
        "a.example/x",
        "",
        "a b",
        "a.example:port",
    ] {
        let err = service_kit::config::parse_from::<http_danmaku::config::Config, _, _>(
            &http_danmaku::config::INFO,
            ["http-danmaku", "--allowed-hosts", bad],
        )
        .expect_err(bad);
        assert!(
            err.to_string().contains("DANMAKU_ALLOWED_HOSTS"),
            "{bad}: {err}"
        );
    }
}

#[tokio::test]
async fn an_empty_file_with_a_suffix_range_gets_an_answer() {
    let outer = tempfile::tempdir().expect("a temporary folder");
    std::fs::write(outer.path().join("outside.txt"), b"secret").unwrap();
    let web = outer.path().join("web");
    std::fs::create_dir(&web).unwrap();
    let dir = web.as_path();
    std::fs::write(dir.join("empty.txt"), b"").unwrap();
    std::fs::write(dir.join("http.html"), b"<html>the page</html>").unwrap();
    std::fs::write(dir.join("clip.webm"), vec![7u8; 1000]).unwrap();
    std::fs::create_dir(dir.join("js")).unwrap();
    std::fs::write(dir.join("js/app.js"), b"export {};").unwrap();
    let web_dir = dir.display().to_string();
    let app = spawn_app_with(&["--web-dir", &web_dir]);
    let host = format!("Host: 127.0.0.1:{}\r\n", app.addr.port());

    for range in ["bytes=-1", "bytes=0-", "bytes=0-0", "bytes=-0"] {
        let answer = get(app.addr, "/empty.txt", &format!("{host}Range: {range}\r\n"))
            .unwrap_or_else(|| panic!("{range}: the server dropped the connection"));
        assert!(
            [200, 416].contains(&answer.status),
            "{range}: {}",
            answer.head
        );
        assert!(answer.body.is_empty(), "{range}");
    }

    // The server goes on serving, with the guarantees the pages had before.
    let index = get(app.addr, "/", &host).expect("an answer");
    assert_eq!(index.status, 200, "{}", index.head);
    assert_eq!(index.body, b"<html>the page</html>");
    assert!(
        index
            .header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(index.header("cache-control"), Some("no-cache"));
    let script = get(app.addr, "/js/app.js", &host).expect("an answer");
    assert!(
        script
            .header("content-type")
            .unwrap()
            .contains("javascript"),
        "{}",
        script.head
    );
    let part = get(
        app.addr,
        "/clip.webm",
        &format!("{host}Range: bytes=100-199\r\n"),
    )
    .expect("an answer");
    assert_eq!(part.status, 206, "{}", part.head);
    assert_eq!(part.header("content-range"), Some("bytes 100-199/1000"));
    assert_eq!(part.body.len(), 100);
    let tail = get(
        app.addr,
        "/clip.webm",
        &format!("{host}Range: bytes=-10\r\n"),
    )
    .expect("an answer");
    assert_eq!(tail.body.len(), 10);
    let beyond = get(
        app.addr,
        "/clip.webm",
        &format!("{host}Range: bytes=1000-\r\n"),
    )
    .expect("an answer");
    assert_eq!(beyond.status, 416, "{}", beyond.head);
    let whole = get(app.addr, "/empty.txt", &host).expect("an answer");
    assert_eq!(whole.status, 200);
    for escape in [
        "/../outside.txt",
        "/%2e%2e/outside.txt",
        "/js/%2e%2e/%2e%2e/outside.txt",
        "/js",
        "/js/",
    ] {
        let answer = get(app.addr, escape, &host).expect("an answer");
        assert_eq!(answer.status, 404, "{escape}: {}", answer.head);
        assert_eq!(answer.json()["error"]["code"], "not_found", "{escape}");
    }
    let missing = get(app.addr, "/no-such.js", &host).expect("an answer");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "not_found");
}

#[tokio::test]
async fn the_access_log_never_shows_query_strings() {
    let store = TestStore::new("log");
    let server = Binary::start_with_env(
        env!("CARGO_BIN_EXE_http-danmaku"),
        &store,
        &["--workers", "1"],
        &[("RUST_LOG", "info,actix_web::middleware::logger=debug")],
    );
    let client = helpers::client();
    let url = format!(
        "{}/api/rooms/r1/danmaku?host_token=SECRET-IN-QUERY&after=0",
        server.base
    );
    let answer = client
        .get(&url)
        .header(
            "Referer",
            "http://127.0.0.1/host.html?token=SECRET-IN-REFERER#x",
        )
        .send()
        .await
        .expect("an answer");
    assert_eq!(answer.status(), 200);
    // The access log line is written once the response is done; wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = server.log.lock().unwrap().join("\n");
        if log.contains("/api/rooms/r1/danmaku") || std::time::Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(log.contains("GET /api/rooms/r1/danmaku HTTP/1.1"), "{log}");
    assert!(!log.contains("SECRET"), "{log}");
    assert!(!log.contains("host_token"), "{log}");
}
