//! Test helpers: the live service on an ephemeral port with a fresh SQLite file.
#![allow(dead_code, unused_imports)] // each test binary uses a different part of this module

use serde_json::{Value, json};
pub use service_kit::testing::http_client as http;
use service_kit::testing::{TestService, WsClient};

pub use service_kit::testing::RELAXED;

/// Starts the live service with `args` on a fresh database.
pub fn spawn_app(args: &[&str]) -> TestService {
    TestService::start(
        &ws_stream::config::INFO,
        ws_stream::build_with_listener,
        args,
    )
}

/// Connects to `room` with `query` (say `name=ann`), past the `welcome`; returns both.
pub async fn join(app: &TestService, room: &str, query: &str) -> (WsClient, Value) {
    let mut client = WsClient::connect(&format!("{}/ws/live/{room}?{query}", app.ws_base)).await;
    let welcome = client.recv_json().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (client, welcome)
}

/// Sends `text` and waits for its ack; returns the stored item.
pub async fn say(client: &mut WsClient, text: &str) -> Value {
    client
        .send_json(&json!({"type": "send", "text": text, "ref": text}))
        .await;
    loop {
        let frame = client.recv_json().await;
        if frame["type"] == "ack" && frame["ref"] == text {
            return frame["item"].clone();
        }
        assert_ne!(frame["type"], "error", "{frame}");
    }
}

/// The ids of the comments in a list of items.
pub fn ids(items: &Value) -> Vec<i64> {
    items
        .as_array()
        .expect("a list")
        .iter()
        .map(|item| item["id"].as_i64().expect("an id"))
        .collect()
}

/// Waits (up to 10 s) until `room` holds a comment with an id of at least `id` (read from the
/// history route), so a test acts once the effect it waits for has happened.
pub async fn wait_for_comments(app: &TestService, room: &str, id: i64) {
    let url = format!("{}/api/rooms/{room}/history?limit=1", app.base);
    service_kit::testing::wait_for_json(&url, &format!("comment {id} in {room}"), |page| {
        page["next"].as_i64().expect("next") >= id
    })
    .await;
}

/// Opens a WebSocket to `url` from the local address `from` (any of 127.0.0.0/8 reaches the
/// server, so tests can act as several clients), with extra request headers; the error when the
/// server refuses.
pub async fn try_connect_from(
    from: std::net::IpAddr,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request()?;
    for (name, value) in headers {
        request.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                .expect("a header name"),
            value.parse().expect("a header value"),
        );
    }
    let uri = request.uri().clone();
    let addr = format!(
        "{}:{}",
        uri.host().expect("a host"),
        uri.port_u16().expect("a port")
    );
    let server: std::net::SocketAddr = addr.parse().expect("a numeric address");
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(std::net::SocketAddr::new(from, 0))
        .expect("a loopback address to bind");
    let stream = socket.connect(server).await?;
    let (stream, _response) =
        tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await?;
    Ok(WsClient::from_stream(stream))
}

/// Connects to `room` from the local address `from` with `query`, past the `welcome`.
pub async fn join_from(
    app: &TestService,
    from: &str,
    room: &str,
    query: &str,
) -> (WsClient, Value) {
    let url = format!("{}/ws/live/{room}?{query}", app.ws_base);
    let mut client = try_connect_from(from.parse().expect("an address"), &url, &[])
        .await
        .unwrap_or_else(|e| panic!("connecting to {url} from {from}: {e}"));
    let welcome = client.recv_json().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (client, welcome)
}

/// Connects to `room` as its host (the token in `Authorization: Bearer`), past the `welcome`.
pub async fn join_host(
    app: &TestService,
    room: &str,
    token: &str,
    query: &str,
) -> (WsClient, Value) {
    let url = format!("{}/ws/live/{room}?{query}", app.ws_base);
    let bearer = format!("Bearer {token}");
    let mut client = try_connect_from(
        "127.0.0.1".parse().expect("an address"),
        &url,
        &[("authorization", &bearer)],
    )
    .await
    .unwrap_or_else(|e| panic!("connecting to {url} as host: {e}"));
    let welcome = client.recv_json().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["host"], true, "{welcome}");
    (client, welcome)
}

/// An HTTP client whose requests come from the local address `from`.
pub fn http_from(from: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(Some(from.parse().expect("an address")))
        .timeout(std::time::Duration::from_secs(40))
        .build()
        .expect("an HTTP client")
}

/// Creates a room through the API; its id and host token.
pub async fn new_room(app: &TestService) -> (String, String) {
    let body: Value = http()
        .post(format!("{}/api/rooms", app.base))
        .json(&json!({}))
        .send()
        .await
        .expect("the service answers")
        .json()
        .await
        .expect("a JSON answer");
    (
        body["room"].as_str().expect("a room").to_owned(),
        body["host_token"].as_str().expect("a token").to_owned(),
    )
}
