//! WebSockets behind a reverse proxy (`--trusted-proxies`): the connection cap counts each
//! client a trusted proxy forwarded for, and only then. Every test client is 127.0.0.1.

mod helpers;

use helpers::spawn_app;
use service_kit::testing::WsClient;
use tokio_tungstenite::tungstenite::Error;

/// Opens a viewer of video `v` as the client a proxy forwarded for in `X-Forwarded-For: xff`;
/// the connection, or the status it was refused with.
async fn watch_for(base: &str, xff: &str) -> Result<WsClient, u16> {
    let url = format!("{base}/ws/videos/v");
    match WsClient::try_connect_with_headers(&url, &[("x-forwarded-for", xff)]).await {
        Ok(mut viewer) => {
            let hello = viewer.recv_json().await;
            assert_eq!(hello["type"], "hello", "{hello}");
            Ok(viewer)
        }
        Err(Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("connecting to {url}: {e}"),
    }
}

#[tokio::test]
async fn the_connection_cap_counts_each_client_behind_a_trusted_proxy() {
    let app = spawn_app(&[
        "--max-connections-per-client",
        "1",
        "--trusted-proxies",
        "127.0.0.1",
    ]);
    let _ann = watch_for(&app.ws_base, "203.0.113.1").await.expect("ann's");
    assert_eq!(
        watch_for(&app.ws_base, "203.0.113.1").await.err(),
        Some(429),
        "ann has her one open"
    );
    assert_eq!(
        watch_for(&app.ws_base, "198.51.100.7, 203.0.113.1")
            .await
            .err(),
        Some(429),
        "what ann writes herself is left of what her proxy appends"
    );
    let _bob = watch_for(&app.ws_base, "203.0.113.2")
        .await
        .expect("bob has a cap of his own behind the same proxy");
}

#[tokio::test]
async fn without_a_trusted_proxy_the_cap_counts_the_peer_whatever_it_forwards() {
    let app = spawn_app(&["--max-connections-per-client", "1"]);
    let _first = watch_for(&app.ws_base, "203.0.113.1").await.expect("one");
    assert_eq!(
        watch_for(&app.ws_base, "203.0.113.2").await.err(),
        Some(429),
        "another forwarded address from the same peer is the same client"
    );
}
