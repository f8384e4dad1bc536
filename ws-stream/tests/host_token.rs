//! The host token never travels in a URL: a host proves it with `Authorization: Bearer` or, from
//! a browser, with the WebSocket subprotocol `danmaku.bearer.<token>`; a `host_token` in the
//! query is refused, so a page or client that still puts it there learns at once.

mod helpers;

use helpers::{RELAXED, http, new_room, spawn_app, try_connect_from};
use serde_json::{Value, json};
use service_kit::testing::WsClient;

/// Opens a check-in in `room`; its id.
async fn open_checkin(app: &service_kit::testing::TestService, room: &str, token: &str) -> i64 {
    let response = http()
        .post(format!("{}/api/rooms/{room}/checkins", app.base))
        .bearer_auth(token)
        .json(&json!({"interval_secs": 60, "duration_secs": 120}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap()
}

/// The status of a refused upgrade (101 when it was accepted).
fn status(result: &Result<WsClient, tokio_tungstenite::tungstenite::Error>) -> u16 {
    match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => 101,
    }
}

#[tokio::test]
async fn a_host_proves_the_token_in_a_header_or_a_subprotocol_and_gets_the_codes() {
    let app = spawn_app(RELAXED);
    let (room, token) = new_room(&app).await;
    let id = open_checkin(&app, &room, &token).await;
    let url = format!("{}/ws/live/{room}?name=teacher", app.ws_base);
    let local = "127.0.0.1".parse().unwrap();

    // A client that can set headers: Authorization, like every other host route.
    let bearer = format!("Bearer {token}");
    let mut by_header = try_connect_from(local, &url, &[("authorization", &bearer)])
        .await
        .unwrap();
    let welcome = by_header.recv_json().await;
    assert_eq!(welcome["host"], true, "{welcome}");
    let code = by_header.recv_type("checkin_code").await;
    assert_eq!(code["checkin"], id);

    // A browser: the subprotocols `danmaku` and `danmaku.bearer.<token>`. The server selects
    // `danmaku` (a browser fails the handshake otherwise), never the one with the token.
    let url_parsed = {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.as_str().into_client_request().unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            format!("danmaku, danmaku.bearer.{token}").parse().unwrap(),
        );
        request
    };
    let (mut stream, response) = tokio_tungstenite::connect_async(url_parsed).await.unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "danmaku",
        "the answer selects the plain subprotocol"
    );
    let mut by_protocol = {
        // Read the welcome and the code through the test client's helpers.
        use futures::StreamExt;
        let mut frames = Vec::new();
        while frames.len() < 3 {
            let message = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
                .await
                .expect("a frame in time")
                .expect("the connection is open")
                .unwrap();
            if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                frames.push(serde_json::from_str::<Value>(&text).unwrap());
            }
        }
        frames
    };
    assert_eq!(by_protocol[0]["type"], "welcome");
    assert_eq!(by_protocol[0]["host"], true, "{:?}", by_protocol[0]);
    let code_frame = by_protocol
        .drain(..)
        .find(|f| f["type"] == "checkin_code")
        .expect("the host gets the code");
    assert_eq!(code_frame["code"], code["code"]);

    // A wrong token either way is refused before the upgrade.
    let wrong = format!("danmaku, danmaku.bearer.{}", "0".repeat(64));
    let refused = try_connect_from(local, &url, &[("sec-websocket-protocol", &wrong)]).await;
    assert_eq!(status(&refused), 403);
    let refused = try_connect_from(local, &url, &[("authorization", "Bearer nope")]).await;
    assert_eq!(status(&refused), 403);
}

#[tokio::test]
async fn a_host_token_in_the_url_is_refused_and_gives_no_host_powers() {
    let app = spawn_app(RELAXED);
    let (room, token) = new_room(&app).await;
    open_checkin(&app, &room, &token).await;
    let url = format!(
        "{}/ws/live/{room}?name=teacher&host_token={token}",
        app.ws_base
    );

    let refused = WsClient::try_connect(&url, None).await;
    assert_eq!(
        status(&refused),
        400,
        "the right token in the URL is refused"
    );
    // Asked over plain HTTP (what a page does to learn why), the answer says what to do.
    let response = http()
        .get(url.replace("ws://", "http://"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_query", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("host_token") && message.contains("Authorization: Bearer"),
        "{message}"
    );
    assert!(
        !message.contains(&token),
        "the answer does not echo the token"
    );
}
