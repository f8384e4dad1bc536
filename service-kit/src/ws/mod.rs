//! What both WebSocket services share: the hardened per-connection session actor, the handle a
//! hub uses to push frames to a connection, rooms with batched fan-out, and the `Origin` check.
//!
//! A service supplies its own [`SessionLogic`] (what a decoded frame means: store a comment,
//! answer a range, check in) and, for what it keeps per channel, a [`hub::HubExtension`];
//! everything that protects the server from its clients lives here once:
//!
//! - [`session`]: the session actor (heartbeat, size caps, fragment reassembly, the client's
//!   budget, error frames, bounded outgoing queue). The only module that imports
//!   `actix-web-actors`.
//! - [`clients`]: who a connection's client is (its budgets), and the cap on the connections
//!   one client may hold open.
//! - `frames`: the guard that refuses a frame whose header declares more than the message cap,
//!   before its payload is read.
//! - [`hub`]: the rooms hub actor both services run, with a small extension point for what a
//!   service keeps of its own.
//! - [`room`]: the viewers of one channel, batched fan-out and throttled viewer counts.
//! - `outbox`: each connection's bounded outgoing queue, which hubs push to and its session
//!   drains a batch at a time.
//! - `lanes`: rooms deliver to each worker's viewers on that worker's thread.

pub mod clients;
mod frames;
pub mod hub;
mod lanes;
mod outbox;
pub mod room;
pub mod session;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::http::header;
use shared_model::limits::MAX_MESSAGE_BYTES;
use shared_model::{ApiError, ClientMessage, Danmaku, ErrorCode, ServerMessage};

pub use bytestring::ByteString;
pub use clients::{Client, ConnectionLimit};
pub use session::start;

pub(crate) use lanes::use_helper;

use crate::config::{ServerArgs, WsArgs};
use crate::error::HttpError;
use crate::hosts::AllowedHosts;
use crate::rate::ClientBudget;

/// The limits of every WebSocket connection, from the settings.
#[derive(Debug, Clone)]
pub struct WsSettings {
    /// How often the server pings.
    pub heartbeat: Duration,
    /// Silence after which a connection is dropped.
    pub client_timeout: Duration,
    /// Largest message, after reassembling fragments, in bytes; a frame whose header declares
    /// more is refused before its payload is read.
    pub max_message_bytes: usize,
    /// What each client may spend, shared by every connection and HTTP route of the service:
    /// a connection's comments and malformed frames spend `writes`.
    pub budget: ClientBudget,
    /// The open connections of each client, capped (`--max-connections-per-client`).
    pub connections: ConnectionLimit,
    /// Malformed frames in a row after which a connection is closed (`--max-bad-frames`).
    pub max_bad_frames: u32,
    /// Frames that may wait for a connection before it counts as too slow and is dropped.
    pub max_queued_frames: usize,
    /// Origins allowed besides the service's own.
    pub allowed_origins: Arc<Vec<String>>,
}

impl WsSettings {
    /// The settings of a service.
    pub fn from_args(server: &ServerArgs, ws: &WsArgs) -> Self {
        Self {
            heartbeat: ws.heartbeat(),
            client_timeout: ws.client_timeout(),
            max_message_bytes: MAX_MESSAGE_BYTES,
            budget: ClientBudget::from_args(server),
            connections: ConnectionLimit::new(ws.max_connections_per_client.get()),
            max_bad_frames: ws.max_bad_frames.get(),
            max_queued_frames: ws.max_queued_frames.get(),
            allowed_origins: Arc::new(ws.allowed_origins.clone()),
        }
    }
}

/// Identifies one connection for the life of the process (in logs and in hubs).
pub type ConnectionId = u64;

/// A fresh connection id.
pub fn next_connection_id() -> ConnectionId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Something for one connection to do, sent by a hub.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// Send this frame. Shared: one serialization and one encoding serve every viewer.
    Frame {
        /// The serialized frame.
        text: ByteString,
        /// The same as a whole WebSocket frame (see `outbox.rs`).
        wire: bytes::Bytes,
    },
    /// Send this `danmaku` frame of these comments (oldest first). The comments come along so
    /// a connection that just received some of them in its history can leave those out.
    Comments {
        /// The serialized frame, shared by every viewer.
        frame: ByteString,
        /// The same as a whole WebSocket frame, encoded once for every connection that takes it
        /// as it is (see `outbox.rs`).
        wire: bytes::Bytes,
        /// The comments in it.
        items: Arc<[Danmaku]>,
    },
    /// Close with this code and reason.
    Close {
        /// The WebSocket close code.
        code: u16,
        /// Why, for people.
        reason: String,
    },
}

impl Outgoing {
    /// A frame for `message`, serialized and encoded now.
    pub fn frame(message: &ServerMessage) -> Self {
        Self::text(message.to_json().into())
    }

    /// A frame of already-serialized `text`, encoded now.
    pub fn text(text: ByteString) -> Self {
        let wire = crate::upgrade::text_frame(text.as_bytes());
        Self::Frame { text, wire }
    }
}

/// A hub's handle on one connection: cheap to clone, and bounded. Frames reach it only through a
/// [`room::Room`], which pushes on the connection's own thread (`lanes.rs`) and so keeps its
/// frames in order. Pushing to a connection whose queue is full marks it as too slow and tells
/// it to close with [`POLICY_VIOLATION`](shared_model::protocol::close::POLICY_VIOLATION); the
/// room then forgets it, so one slow viewer never holds up the others or grows memory.
#[derive(Clone)]
pub struct Viewer {
    /// The connection.
    pub id: ConnectionId,
    outbox: Arc<outbox::Outbox>,
    /// The thread its session runs on, where rooms deliver to it (see `lanes.rs`).
    lane: Option<Arc<lanes::Lane>>,
}

impl Viewer {
    /// A viewer `id` whose queue holds at most `max_queued` frames, and the stream its session
    /// (or a test standing in for one) drains. Made on the thread that drains it.
    pub(crate) fn new(id: ConnectionId, max_queued: usize) -> (Self, outbox::OutboxStream) {
        let (outbox, stream) = outbox::Outbox::new(max_queued);
        let lane = lanes::current();
        (Self { id, outbox, lane }, stream)
    }
}

/// A future a session runs on its own thread (actors are single-threaded, so no `Send`).
pub type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// What a session sends first, once it joined its hub.
#[derive(Debug, Default)]
pub struct Connected {
    /// The first frames (`hello`, `welcome`).
    pub frames: Vec<ServerMessage>,
    /// The newest comment id those frames already carry (a history). Comments the hub pushes
    /// with an id at or below it are left out, so joining while comments arrive repeats none.
    pub seen_up_to: Option<i64>,
}

/// What a service does with its connections; the session actor does the rest.
///
/// Each call returns a future that the session awaits before it reads the next frame, so the
/// frames of one connection are handled in order; the frames it resolves to are sent in order.
pub trait SessionLogic: Unpin + 'static {
    /// The connection is open: join the hub with `me`, then gather the first frames. Join
    /// before reading any history: what the hub pushes meanwhile waits in the connection's
    /// queue and is sent after these frames, minus what they already hold.
    fn connect(&mut self, me: Viewer) -> LocalFuture<Connected>;

    /// A decoded frame from the client (never `ping`, which the session answers itself, and
    /// never a `send` the client's `writes` budget could not pay). Resolves to the one frame to
    /// send back, or to the error the session sends as an `error` frame carrying the request's
    /// `ref`. An error for bad input (a 400 or 422 code other than `wrong_code`) counts as a
    /// malformed frame: it costs a `writes` token (a `send` paid already) and, after
    /// `--max-bad-frames` in a row, closes the connection.
    fn handle(&mut self, message: ClientMessage) -> LocalFuture<Result<ServerMessage, ApiError>>;

    /// The connection is gone: leave the hub. Called exactly once.
    fn disconnect(&mut self, id: ConnectionId);

    /// A name for the logs (the room or video).
    fn describe(&self) -> String;
}

/// Refuses a WebSocket upgrade from a browser page of a foreign origin (403), before the
/// upgrade. Allowed: no `Origin` (not a browser), the service's own origin (scheme, host and
/// port of this request, the host as a proxy forwards it) when that host is one the service
/// answers to (its `web::Data<AllowedHosts>`, see [`crate::hosts`]), or one in `allowed`.
pub fn check_origin(req: &HttpRequest, allowed: &[String]) -> Result<(), HttpError> {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let refused = |origin: &str| {
        HttpError::from(ApiError::new(
            ErrorCode::OriginNotAllowed,
            format!("pages from {origin} may not open WebSockets here"),
        ))
    };
    let origin = origin
        .to_str()
        .map_err(|_| refused("an unreadable origin"))?;
    let info = req.connection_info();
    let own = format!("{}://{}", info.scheme(), info.host());
    // The forwarded host comes from headers a client may set: it must be a host we answer to.
    let own_host_allowed = match req.app_data::<actix_web::web::Data<AllowedHosts>>() {
        Some(hosts) => hosts.allows(info.host()),
        None => AllowedHosts::loopback().allows(info.host()),
    };
    let allowed = (own_host_allowed && origin.eq_ignore_ascii_case(&own))
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(origin));
    if allowed {
        Ok(())
    } else {
        log::info!("refused a WebSocket from origin {origin} (own origin {own})");
        Err(refused(origin))
    }
}

/// A comment of `channel` with `id` (author "ann", text "n{id}"), for the unit tests.
#[cfg(test)]
pub(crate) fn test_comment(channel: &str, id: i64) -> Danmaku {
    Danmaku {
        id,
        channel: shared_model::ChannelId::parse(channel).unwrap(),
        author: "ann".into(),
        text: format!("n{id}"),
        color: shared_model::Color::default(),
        mode: shared_model::Mode::default(),
        time: None,
        sent_at: shared_model::time::now(),
    }
}

/// A connected pair over loopback: the server's end as a [`crate::upgrade::Wire`], and the
/// client's, for the unit tests.
#[cfg(test)]
pub(crate) async fn test_wire_pair() -> (Arc<crate::upgrade::Wire>, tokio::net::TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (crate::upgrade::Wire::new(server), client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn allowed() -> Vec<String> {
        vec!["https://player.example".to_owned()]
    }

    #[test]
    fn requests_without_origin_are_allowed() {
        let req = TestRequest::default().to_http_request();
        assert!(check_origin(&req, &allowed()).is_ok());
    }

    #[test]
    fn the_own_origin_and_listed_ones_are_allowed() {
        let own = TestRequest::default()
            .insert_header(("host", "localhost:8082"))
            .insert_header(("origin", "http://localhost:8082"))
            .to_http_request();
        assert!(check_origin(&own, &allowed()).is_ok());
        let listed = TestRequest::default()
            .insert_header(("host", "localhost:8082"))
            .insert_header(("origin", "https://player.example"))
            .to_http_request();
        assert!(check_origin(&listed, &allowed()).is_ok());
    }

    #[test]
    fn other_origins_are_refused_even_on_another_port() {
        for origin in [
            "http://evil.example",
            "http://localhost:8081",
            "https://localhost:8082",
            "null",
        ] {
            let req = TestRequest::default()
                .insert_header(("host", "localhost:8082"))
                .insert_header(("origin", origin))
                .to_http_request();
            let err = check_origin(&req, &allowed()).unwrap_err();
            assert_eq!(err.error.code, ErrorCode::OriginNotAllowed, "{origin}");
        }
    }
}
