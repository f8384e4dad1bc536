//! WebSocket connections over a counted socket, and the frames of the services' protocol
//! (`shared_model::protocol`) in and out.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use shared_model::{ClientMessage, ErrorBody, ErrorCode, Ref, ServerMessage};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::endpoint::Base;
use crate::error::CliError;
use crate::transport::counting::{CountingStream, Traffic, connect_tcp};

/// A WebSocket connection whose bytes are counted.
pub type WsStream = WebSocketStream<CountingStream<TcpStream>>;

/// Buffers sized for many mostly idle connections: tungstenite allocates its read buffer
/// eagerly (128 KiB by default), which would cost 2.4 GiB at 19,000 connections. Frames are
/// written at once rather than gathered, so a sender's comment leaves when it is due.
pub fn lean_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

/// Opens `ws://{base}{path}`, counting the upgrade and every frame in `traffic`. A refused
/// upgrade with the services' JSON error body becomes [`CliError::Refused`].
pub async fn connect(
    base: &Base,
    path: &str,
    traffic: &Arc<Traffic>,
    config: WebSocketConfig,
) -> Result<WsStream, CliError> {
    let url = format!("{}{path}", base.ws_url());
    let request = url
        .as_str()
        .into_client_request()
        .map_err(|e| CliError::Usage(format!("{url}: {e}")))?;
    let stream = connect_tcp(&base.authority, traffic)
        .await
        .map_err(|e| CliError::Connect {
            addr: base.authority.clone(),
            reason: e.to_string(),
        })?;
    traffic.add_request();
    match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
        Ok((ws, _response)) => Ok(ws),
        Err(WsError::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            Err(match serde_json::from_slice::<ErrorBody>(body) {
                Ok(error) => CliError::Refused(error.error),
                Err(_) => CliError::Protocol(format!(
                    "{url}: upgrade refused with HTTP {}",
                    response.status()
                )),
            })
        }
        Err(e) => Err(CliError::Protocol(format!("{url}: {e}"))),
    }
}

/// Decodes a server frame; `None` for a frame type this client does not know (a newer server).
pub fn decode(text: &str) -> Option<ServerMessage> {
    serde_json::from_str(text).ok()
}

/// A client frame as a text message.
pub fn encode(message: &ClientMessage) -> Message {
    // Holds: client frames are strings, numbers and options of those; nothing can fail.
    Message::text(serde_json::to_string(message).expect("client frames always serialize"))
}

/// A comment whose `ref` is its message index, so the sender can tell which comment each ack
/// is for ([`numbered_reply`]).
pub fn numbered_send(
    index: u64,
    text: String,
    time: Option<f64>,
    author: Option<String>,
) -> ClientMessage {
    ClientMessage::Send {
        text,
        color: None,
        mode: None,
        time,
        author,
        reference: Some(Ref::Number(index as i64)),
    }
}

/// What a sender of [`numbered_send`]s hears back.
#[derive(Debug, PartialEq)]
pub enum NumberedReply {
    /// The comment with this index was stored.
    Acked(u64),
    /// A send was refused.
    Refused(ErrorCode),
}

/// Reads a text frame a sender of [`numbered_send`]s got; `None` for frames that are neither
/// an ack of a numbered comment nor a refusal.
pub fn numbered_reply(text: &str) -> Option<NumberedReply> {
    match decode(text)? {
        ServerMessage::Ack {
            reference: Some(Ref::Number(index)),
            ..
        } => Some(NumberedReply::Acked(index as u64)),
        ServerMessage::Error { code, .. } => Some(NumberedReply::Refused(code)),
        _ => None,
    }
}

/// What the next read brought, with pings, pongs and unknown frames skipped.
#[derive(Debug)]
pub enum Incoming {
    /// A server frame.
    Frame(ServerMessage),
    /// The server closed the connection, with its close code and reason when it sent them.
    Closed(Option<(u16, String)>),
    /// The connection broke without a close frame.
    Broken(String),
}

/// Reads until a server frame, a close or an error. No timeout here: callers put one around it.
pub async fn next_frame(ws: &mut WsStream) -> Incoming {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                if let Some(frame) = decode(&text) {
                    return Incoming::Frame(frame);
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return Incoming::Closed(frame.map(|f| (u16::from(f.code), f.reason.to_string())));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Incoming::Broken(e.to_string()),
            None => return Incoming::Closed(None),
        }
    }
}

/// Waits up to `limit` for the first frame a service sends (`hello` or `welcome`), so a caller
/// knows the connection joined its channel.
pub async fn first_frame(ws: &mut WsStream, limit: Duration) -> Result<ServerMessage, CliError> {
    match tokio::time::timeout(limit, next_frame(ws)).await {
        Ok(Incoming::Frame(frame)) => Ok(frame),
        Ok(Incoming::Closed(close)) => Err(CliError::Protocol(format!(
            "the server closed the connection before greeting it{}",
            describe_close(&close)
        ))),
        Ok(Incoming::Broken(reason)) => Err(CliError::Protocol(format!(
            "the connection broke before the greeting: {reason}"
        ))),
        Err(_) => Err(CliError::timeout("the server's greeting", limit)),
    }
}

/// Sends a client frame.
pub async fn send(ws: &mut WsStream, message: &ClientMessage) -> Result<(), CliError> {
    ws.send(encode(message))
        .await
        .map_err(|e| CliError::Protocol(format!("sending a frame failed: {e}")))
}

/// `" (code 1008: too slow)"`, or nothing when the server sent no close frame.
pub fn describe_close(close: &Option<(u16, String)>) -> String {
    match close {
        Some((code, reason)) if reason.is_empty() => format!(" (code {code})"),
        Some((code, reason)) => format!(" (code {code}: {reason})"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_server_frames_are_skipped_not_fatal() {
        assert!(decode(r#"{"type":"viewers","count":3}"#).is_some());
        assert!(decode(r#"{"type":"something_new","x":1}"#).is_none());
    }

    #[test]
    fn numbered_replies_are_acks_of_numbered_sends_and_refusals() {
        let ack = |reference| {
            let item = shared_model::Danmaku {
                id: 1,
                channel: shared_model::ChannelId::parse("lobby").unwrap(),
                author: "ann".into(),
                text: "hello".into(),
                color: shared_model::Color::default(),
                mode: shared_model::Mode::Scroll,
                time: None,
                sent_at: shared_model::time::parse("2026-11-22T10:00:00.000Z").unwrap(),
            };
            serde_json::to_string(&ServerMessage::Ack { reference, item }).unwrap()
        };
        assert_eq!(
            numbered_reply(&ack(Some(Ref::Number(7)))),
            Some(NumberedReply::Acked(7))
        );
        assert_eq!(numbered_reply(&ack(Some(Ref::Text("a1".into())))), None);
        assert_eq!(
            numbered_reply(r#"{"type":"error","code":"rate_limited","message":"slow down"}"#),
            Some(NumberedReply::Refused(ErrorCode::RateLimited))
        );
        assert_eq!(numbered_reply(r#"{"type":"viewers","count":3}"#), None);
    }

    #[test]
    fn close_descriptions_name_code_and_reason() {
        assert_eq!(describe_close(&None), "");
        assert_eq!(
            describe_close(&Some((1008, "too slow".into()))),
            " (code 1008: too slow)"
        );
        assert_eq!(describe_close(&Some((1001, String::new()))), " (code 1001)");
    }
}
