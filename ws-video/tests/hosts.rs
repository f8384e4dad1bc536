//! WebSocket upgrades and the `Host` they name: a page that reached the service through DNS
//! rebinding (its own name resolving to this machine) cannot open a WebSocket here.

mod helpers;

use std::net::SocketAddr;

use helpers::{RELAXED, spawn_app};
use service_kit::testing::{RawResponse, raw_http};

/// A WebSocket upgrade of `/ws/videos/v1` with these extra header lines (each ending in `\r\n`).
fn upgrade(addr: SocketAddr, headers: &str) -> RawResponse {
    let request = format!(
        "GET /ws/videos/v1 HTTP/1.1\r\n{headers}Upgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    raw_http(addr, request.as_bytes()).expect("the server answers the upgrade")
}

#[tokio::test]
async fn an_upgrade_naming_a_foreign_host_is_refused() {
    let app = spawn_app(RELAXED);
    let port = app.addr.port();
    for headers in [
        format!("Host: evil.example:{port}\r\n"),
        format!("Host: evil.example:{port}\r\nOrigin: http://evil.example:{port}\r\n"),
    ] {
        let refused = upgrade(app.addr, &headers);
        assert_eq!(refused.status, 421, "{headers}: {}", refused.head);
        assert_eq!(refused.json()["error"]["code"], "host_not_allowed");
    }
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let origin = format!("http://{host}");
        let accepted = upgrade(app.addr, &format!("Host: {host}\r\nOrigin: {origin}\r\n"));
        assert_eq!(accepted.status, 101, "{host}: {}", accepted.head);
    }
}

#[tokio::test]
async fn a_forwarded_host_does_not_make_a_foreign_origin_the_services_own() {
    // The service takes its own origin from the forwarding headers (for proxies); the host they
    // name must still be one it answers to.
    let app = spawn_app(RELAXED);
    let port = app.addr.port();
    let refused = upgrade(
        app.addr,
        &format!(
            "Host: localhost:{port}\r\nX-Forwarded-Host: evil.example\r\n\
             Origin: http://evil.example\r\n"
        ),
    );
    assert_eq!(refused.status, 403, "{}", refused.head);
    assert_eq!(refused.json()["error"]["code"], "origin_not_allowed");

    let listed = spawn_app(&["--allowed-hosts", "player.example"]);
    let port = listed.addr.port();
    let accepted = upgrade(
        listed.addr,
        &format!(
            "Host: localhost:{port}\r\nX-Forwarded-Host: player.example\r\n\
             Origin: http://player.example\r\n"
        ),
    );
    assert_eq!(accepted.status, 101, "{}", accepted.head);
}
