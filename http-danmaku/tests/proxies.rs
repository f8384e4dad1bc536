//! Behind a reverse proxy (`--trusted-proxies`): the client is the address a trusted proxy
//! forwarded for, and only then. Every test client here is 127.0.0.1; the forwarding headers
//! stand for the clients a proxy on 127.0.0.1 would have in front of it.

mod helpers;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use helpers::spawn_app_with;
use service_kit::testing::{Binary, RELAXED, TestStore, raw_http};

/// A write budget of two comments, refilled at one a second: each test checks a refusal right
/// after the budget was spent.
const TWO_COMMENTS: &[&str] = &["--rate-per-sec", "1", "--rate-burst", "2"];

/// Posts a comment to room `r` with these extra header lines (each ending in `\r\n`); the status.
fn post_with(addr: SocketAddr, headers: &str) -> u16 {
    let body = r#"{"author":"a","text":"hi"}"#;
    let request = format!(
        "POST /api/rooms/r/danmaku HTTP/1.1\r\nHost: {addr}\r\n{headers}\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let response = raw_http(addr, request.as_bytes()).expect("an answer");
    if response.status == 429 {
        assert_eq!(response.json()["error"]["code"], "rate_limited");
    }
    response.status
}

/// Posts as the client a proxy forwarded for in `X-Forwarded-For: xff`.
fn post_for(addr: SocketAddr, xff: &str) -> u16 {
    post_with(addr, &format!("X-Forwarded-For: {xff}\r\n"))
}

#[test]
fn without_trusted_proxies_a_forwarded_for_header_does_not_change_the_client() {
    // Nothing trusted (the default), or a proxy list that does not hold the peer: the header
    // is the client's own word, and every request here is 127.0.0.1's.
    for extra in [&[][..], &["--trusted-proxies", "10.0.0.0/8,::1"]] {
        let app = spawn_app_with(&[TWO_COMMENTS, extra].concat());
        assert_eq!(post_for(app.addr, "203.0.113.1"), 201, "{extra:?}");
        assert_eq!(post_for(app.addr, "203.0.113.2"), 201, "{extra:?}");
        assert_eq!(
            post_for(app.addr, "203.0.113.3"),
            429,
            "{extra:?}: a third address in the header is still the same client"
        );
        assert_eq!(
            post_with(app.addr, "Forwarded: for=203.0.113.4\r\n"),
            429,
            "{extra:?}"
        );
    }
}

#[test]
fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    let app = spawn_app_with(&[TWO_COMMENTS, &["--trusted-proxies", "127.0.0.1"]].concat());
    let ann = "203.0.113.1";
    assert_eq!(post_for(app.addr, ann), 201);
    assert_eq!(post_for(app.addr, ann), 201);
    assert_eq!(post_for(app.addr, ann), 429, "ann spent her budget");
    // Ann cannot get a fresh budget by writing an address of her own: her proxy appends hers.
    assert_eq!(post_for(app.addr, &format!("198.51.100.7, {ann}")), 429);
    assert_eq!(
        post_for(app.addr, &format!("198.51.100.7, {ann}, 127.0.0.1")),
        429,
        "a chain of trusted proxies is read past"
    );
    assert_eq!(
        post_with(
            app.addr,
            &format!("Forwarded: for=203.0.113.9\r\nX-Forwarded-For: {ann}\r\n")
        ),
        429,
        "with both headers, X-Forwarded-For decides"
    );
    assert_eq!(
        post_for(app.addr, "203.0.113.2"),
        201,
        "another client behind the same proxy still has his"
    );
    assert_eq!(
        post_with(app.addr, ""),
        201,
        "the proxy's own budget is untouched by what it forwarded"
    );
    // RFC 7239 `Forwarded`, with a quoted IPv6 address and port.
    let bea = "Forwarded: for=\"[2001:db8:cafe::17]:4711\";proto=https\r\n";
    assert_eq!(post_with(app.addr, bea), 201);
    assert_eq!(post_with(app.addr, bea), 201);
    assert_eq!(post_with(app.addr, bea), 429, "bea's /64 spent its budget");
    assert_eq!(
        post_with(app.addr, "Forwarded: for=203.0.113.3\r\n"),
        201,
        "a client named by Forwarded has a budget of its own"
    );
}

#[test]
fn a_bad_trusted_proxy_stops_the_start_naming_the_setting() {
    let store = TestStore::new("http-danmaku");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_http-danmaku"))
        .args(["--port", "0", "--store", store.url()])
        .env("DANMAKU_TRUSTED_PROXIES", "127.0.0.1,proxy.example")
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("DANMAKU_TRUSTED_PROXIES"), "{stderr}");
    assert!(stderr.contains("\"proxy.example\""), "{stderr}");
}

#[test]
fn the_access_log_names_the_forwarded_client() {
    let store = TestStore::new("http-danmaku");
    let server = Binary::start_with_env(
        env!("CARGO_BIN_EXE_http-danmaku"),
        &store,
        &[
            RELAXED,
            &["--workers", "1", "--trusted-proxies", "127.0.0.1"],
        ]
        .concat(),
        &[("RUST_LOG", "info,actix_web::middleware::logger=debug")],
    );
    let addr: SocketAddr = server
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("the server's address");
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Forwarded-For: 198.51.100.7, \
         [2001:db8::5]:4711\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(
        raw_http(addr, request.as_bytes())
            .expect("an answer")
            .status,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let found = server
            .log
            .lock()
            .unwrap()
            .iter()
            .find(|line| line.contains("\"GET /healthz HTTP/1.1\""))
            .cloned();
        if let Some(line) = found {
            break line;
        }
        assert!(Instant::now() < deadline, "no access log line within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        line.contains("] 2001:db8::5 \"GET /healthz"),
        "the client, not the proxy nor what the client wrote: {line}"
    );
}
