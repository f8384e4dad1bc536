//! The session actor: one per WebSocket connection, the same for every service.
//!
//! It owns everything a connection can do wrong: silence (ping every heartbeat, drop after the
//! client timeout with [`close::HEARTBEAT_TIMEOUT`]), oversize messages
//! ([`close::MESSAGE_TOO_BIG`], as soon as a frame's header declares too much: see
//! `ws/frames.rs`), fragments (reassembled up to the same cap; actix hands continuation
//! frames through raw), too many connections from one client (429 before the upgrade), binary
//! frames, bad JSON, unknown types and invalid values (an error frame and a token of the
//! client's `writes` budget; after `--max-bad-frames` in a row, [`close::POLICY_VIOLATION`]),
//! comments over the client's budget (a `rate_limited` error frame; nothing is stored), and a
//! queue that a slow reader lets fill ([`close::POLICY_VIOLATION`]). A reader that stopped
//! reading altogether is dropped by the kernel (see [`crate::server::serve_ws`]). What a good
//! frame means is the service's [`SessionLogic`].
//!
//! This is the only module that imports `actix-web-actors` (deprecated upstream in favour of
//! `actix-ws`), so moving off it touches this file alone.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, StreamHandler, WrapFuture};
use actix_http::ws::{Item, OpCode};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use actix_web_actors::ws::{self, CloseCode, CloseReason, ProtocolError};
use shared_model::protocol::close;
use shared_model::{ApiError, ClientMessage, ErrorCode, ServerMessage};

use super::clients::{Client, ConnectionSlot};
use super::frames::FrameGuard;
use super::outbox::{Outbox, TOO_SLOW};
use super::{
    ByteString, Connected, ConnectionId, Outgoing, SessionLogic, Viewer, WsSettings,
    next_connection_id,
};
use crate::error::HttpError;
use crate::upgrade::Wire;

/// Upgrades `req` to a WebSocket served by a session around `logic`. Check the `Origin` (see
/// [`super::check_origin`]) before calling this. A client that already holds
/// `--max-connections-per-client` connections is refused with `429 rate_limited`.
pub fn start<L: SessionLogic>(
    req: &HttpRequest,
    payload: web::Payload,
    settings: &WsSettings,
    logic: L,
) -> Result<HttpResponse, actix_web::Error> {
    let client = Client::of(req, &settings.budget);
    let slot = match client.ip() {
        Some(ip) => Some(settings.connections.open(ip).ok_or_else(|| {
            log::info!("refused a WebSocket from {ip}: it has too many open");
            HttpError::new(
                ErrorCode::RateLimited,
                format!(
                    "too many open WebSocket connections from your address (at most {}); \
                     close one first",
                    settings.connections.max()
                ),
            )
        })?),
        None => None,
    };
    let oversize = Arc::new(AtomicBool::new(false));
    let guarded = FrameGuard::new(payload, settings.max_message_bytes, oversize.clone());
    // Served by this crate's server, the connection has a wire (`upgrade.rs`); under another
    // (actix-web's test server, say), frames go through actix's WebSocket context.
    let out = Out(req.extensions().get::<Arc<Wire>>().cloned());
    let session = WsSession::new(logic, Limits::of(settings), client, slot, oversize, out);
    ws::WsResponseBuilder::new(session, req, guarded)
        .frame_size(settings.max_message_bytes)
        .start()
}

/// What a session needs of its [`WsSettings`]: a few words copied into each session, rather
/// than a clone of the settings (budgets, connection counts, origins) in every one.
#[derive(Debug, Clone, Copy)]
struct Limits {
    heartbeat: Duration,
    client_timeout: Duration,
    max_message_bytes: usize,
    max_bad_frames: u32,
    max_queued_frames: usize,
}

impl Limits {
    fn of(settings: &WsSettings) -> Self {
        Self {
            heartbeat: settings.heartbeat,
            client_timeout: settings.client_timeout,
            max_message_bytes: settings.max_message_bytes,
            max_bad_frames: settings.max_bad_frames,
            max_queued_frames: settings.max_queued_frames,
        }
    }
}

/// A message being reassembled from continuation frames.
struct Fragments {
    /// Binary messages are reassembled only to be refused whole.
    binary: bool,
    bytes: Vec<u8>,
}

/// One WebSocket connection.
pub struct WsSession<L: SessionLogic> {
    id: ConnectionId,
    logic: L,
    limits: Limits,
    /// When the client last sent anything (a frame, a ping or a pong).
    last_heard: Instant,
    /// Boxed: rare (browsers send whole frames), and a word where it is absent.
    fragments: Option<Box<Fragments>>,
    /// The client at the other end, whose `writes` budget comments and malformed frames spend.
    client: Client,
    /// Counts this connection among its client's open ones while it lives.
    _slot: Option<ConnectionSlot>,
    /// Malformed frames since the last frame the service accepted.
    bad_frames: u32,
    /// Set by the frame guard when a frame's header declared more than the cap.
    oversize: Arc<AtomicBool>,
    /// Comments up to this id were in the first frames; pushed ones at or below are skipped.
    seen_up_to: Option<i64>,
    /// Where this connection's frames go.
    out: Out,
    /// What rooms push to this connection (set once the session has started).
    outbox: Option<Arc<Outbox>>,
}

/// Where a session's frames go: its connection's [`Wire`] when there is one, else actix's
/// WebSocket context. With a wire, every frame goes there, so the session's own frames and the
/// comments written to the wire directly (`outbox.rs`) leave in the order they were written.
struct Out(Option<Arc<Wire>>);

impl Out {
    fn text<A>(&self, ctx: &mut ws::WebsocketContext<A>, text: impl Into<ByteString>)
    where
        A: Actor<Context = ws::WebsocketContext<A>>,
    {
        match &self.0 {
            // A wire that takes nothing more belongs to a connection that is ending.
            Some(wire) => drop(wire.text(&text.into())),
            None => ctx.text(text),
        }
    }

    /// A frame already encoded for the wire (`wire`), with its `text` for actix's context.
    fn encoded<A>(&self, ctx: &mut ws::WebsocketContext<A>, text: ByteString, wire: &bytes::Bytes)
    where
        A: Actor<Context = ws::WebsocketContext<A>>,
    {
        match &self.0 {
            Some(out) => drop(out.send(wire)),
            None => ctx.text(text),
        }
    }

    fn ping<A>(&self, ctx: &mut ws::WebsocketContext<A>)
    where
        A: Actor<Context = ws::WebsocketContext<A>>,
    {
        match &self.0 {
            Some(wire) => drop(wire.control(OpCode::Ping, b"")),
            None => ctx.ping(b""),
        }
    }

    fn pong<A>(&self, ctx: &mut ws::WebsocketContext<A>, payload: &[u8])
    where
        A: Actor<Context = ws::WebsocketContext<A>>,
    {
        match &self.0 {
            Some(wire) => drop(wire.control(OpCode::Pong, payload)),
            None => ctx.pong(payload),
        }
    }

    /// Sends a close frame and stops the session (which ends the connection once everything
    /// is written).
    fn close<A>(&self, ctx: &mut ws::WebsocketContext<A>, reason: Option<CloseReason>)
    where
        A: Actor<Context = ws::WebsocketContext<A>>,
    {
        match &self.0 {
            Some(wire) => drop(wire.close(reason)),
            None => ctx.close(reason),
        }
        ctx.stop();
    }
}

impl<L: SessionLogic> WsSession<L> {
    fn new(
        logic: L,
        limits: Limits,
        client: Client,
        slot: Option<ConnectionSlot>,
        oversize: Arc<AtomicBool>,
        out: Out,
    ) -> Self {
        Self {
            id: next_connection_id(),
            logic,
            last_heard: Instant::now(),
            fragments: None,
            client,
            _slot: slot,
            bad_frames: 0,
            oversize,
            seen_up_to: None,
            limits,
            out,
            outbox: None,
        }
    }

    /// Lets rooms write to the connection directly (see `outbox.rs`) once nothing pushed needs
    /// the session's attention any more.
    fn go_direct(&self) {
        if let (Some(wire), Some(outbox), None) = (&self.out.0, &self.outbox, self.seen_up_to) {
            outbox.go_direct(wire);
        }
    }

    /// Sends a close frame with `code` and `reason` and stops the session.
    fn close(&self, ctx: &mut ws::WebsocketContext<Self>, code: u16, reason: &str) {
        self.out.close(
            ctx,
            Some(CloseReason {
                code: CloseCode::from(code),
                description: Some(reason.to_owned()),
            }),
        );
    }

    /// Pings every heartbeat; drops the connection once it has been silent for the timeout.
    fn heartbeat(&self, ctx: &mut ws::WebsocketContext<Self>) {
        ctx.run_interval(self.limits.heartbeat, |act, ctx| {
            if act.last_heard.elapsed() > act.limits.client_timeout {
                log::info!(
                    "connection {} ({}): silent for {:?}, dropping it",
                    act.id,
                    act.logic.describe(),
                    act.limits.client_timeout
                );
                act.close(ctx, close::HEARTBEAT_TIMEOUT, "heartbeat timeout");
                return;
            }
            act.out.ping(ctx);
        });
    }

    fn send_frames(&self, ctx: &mut ws::WebsocketContext<Self>, frames: Vec<ServerMessage>) {
        for frame in frames {
            self.out.text(ctx, frame.to_json());
        }
    }

    /// A malformed frame: it costs a token of the client's `writes` budget (unless `paid`, as a
    /// `send` is before it is handled), gets its error frame, and after `--max-bad-frames` in a
    /// row closes the connection with [`close::POLICY_VIOLATION`].
    fn on_bad_frame(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        error: ApiError,
        reference: Option<shared_model::Ref>,
        paid: bool,
    ) {
        log::debug!("connection {}: bad frame: {}", self.id, error.message);
        if !paid {
            // An empty budget does not spare the frame its error, only the token.
            let _ = self.client.spend_writes(1);
        }
        self.out
            .text(ctx, ServerMessage::error(error, reference).to_json());
        self.bad_frames = self.bad_frames.saturating_add(1);
        if self.bad_frames >= self.limits.max_bad_frames {
            log::info!(
                "connection {} ({}): {} malformed frames in a row, closing it",
                self.id,
                self.logic.describe(),
                self.bad_frames
            );
            self.close(
                ctx,
                close::POLICY_VIOLATION,
                &format!("{} malformed frames in a row", self.bad_frames),
            );
        }
    }

    /// A whole text message: decode, charge comments to the client's budget, hand to the
    /// logic, send its answer.
    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        let message = match ClientMessage::decode(text) {
            Ok(message) => message,
            Err(error) => return self.on_bad_frame(ctx, error, None, false),
        };
        if let ClientMessage::Ping = message {
            return self.send_frames(ctx, vec![ServerMessage::Pong]);
        }
        let paid = matches!(message, ClientMessage::Send { .. });
        let reference = message.reference().cloned();
        let handled = self.logic.handle(message);
        let client = self.client.clone();
        // A comment is paid from the client's `writes` budget (the cluster's, with a bus)
        // before it is handled.
        let answer = async move {
            if paid {
                client.take_writes(1).await?;
            }
            handled.await
        };
        // `wait` holds back this connection's next frames until the answer is sent, so one
        // connection's frames are handled in order. What rooms push meanwhile waits in the
        // outbox (not direct), so a sender gets its `ack` before its own comment, as it did
        // before direct writes.
        if let Some(outbox) = &self.outbox {
            outbox.hold();
        }
        ctx.wait(answer.into_actor(self).map(move |answer, act, ctx| {
            match answer {
                Ok(frame) => {
                    act.bad_frames = 0;
                    act.out.text(ctx, frame.to_json());
                }
                Err(error) if is_bad_input(error.code) => {
                    act.on_bad_frame(ctx, error, reference, paid)
                }
                Err(error) => act
                    .out
                    .text(ctx, ServerMessage::error(error, reference).to_json()),
            }
            act.go_direct();
        }));
    }

    /// Adds a continuation frame; a finished message is handled. Too big closes with
    /// [`close::MESSAGE_TOO_BIG`].
    fn on_fragment(&mut self, item: Item, ctx: &mut ws::WebsocketContext<Self>) {
        let (start, binary, bytes, last) = match item {
            Item::FirstText(b) => (true, false, b, false),
            Item::FirstBinary(b) => (true, true, b, false),
            Item::Continue(b) => (false, false, b, false),
            Item::Last(b) => (false, false, b, true),
        };
        if start {
            if self.fragments.is_some() {
                return self.close(
                    ctx,
                    close::PROTOCOL_ERROR,
                    "a new fragmented message began before the last ended",
                );
            }
            self.fragments = Some(Box::new(Fragments {
                binary,
                bytes: Vec::new(),
            }));
        }
        let Some(fragments) = self.fragments.as_mut() else {
            return self.close(
                ctx,
                close::PROTOCOL_ERROR,
                "a continuation frame without a first frame",
            );
        };
        if fragments.bytes.len() + bytes.len() > self.limits.max_message_bytes {
            return self.close(
                ctx,
                close::MESSAGE_TOO_BIG,
                &format!(
                    "messages are limited to {} bytes",
                    self.limits.max_message_bytes
                ),
            );
        }
        fragments.bytes.extend_from_slice(&bytes);
        if !last {
            return;
        }
        let Some(done) = self.fragments.take() else {
            return;
        };
        if done.binary {
            return self.on_bad_frame(ctx, binary_refused(), None, false);
        }
        match String::from_utf8(done.bytes) {
            Ok(text) => self.on_text(&text, ctx),
            Err(_) => self.close(
                ctx,
                close::INVALID_PAYLOAD,
                "a text message that is not UTF-8",
            ),
        }
    }
}

/// Whether an error the logic answered means the frame was malformed (a 400 or 422 code), not
/// that the service could not do it. A wrong check-in code is a guess, charged by the logic.
fn is_bad_input(code: ErrorCode) -> bool {
    matches!(code.status(), 400 | 422) && code != ErrorCode::WrongCode
}

fn binary_refused() -> ApiError {
    ApiError::new(
        ErrorCode::UnsupportedFrame,
        "binary frames are not part of the protocol; send JSON text",
    )
}

impl<L: SessionLogic> Actor for WsSession<L> {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.heartbeat(ctx);
        // What hubs push comes through the connection's bounded outbox, a batch at a time;
        // like every other input, it waits while the first frames are gathered below.
        let (me, outbox) = Viewer::new(self.id, self.limits.max_queued_frames);
        self.outbox = Some(me.outbox.clone());
        ctx.add_stream(outbox);
        log::info!("connection {} opened ({})", self.id, self.logic.describe());
        let hello = self.logic.connect(me);
        ctx.wait(
            hello
                .into_actor(self)
                .map(|connected: Connected, act, ctx| {
                    act.seen_up_to = connected.seen_up_to;
                    act.send_frames(ctx, connected.frames);
                    act.go_direct();
                }),
        );
    }

    fn stopping(&mut self, _ctx: &mut Self::Context) -> actix::Running {
        log::info!("connection {} closed ({})", self.id, self.logic.describe());
        self.logic.disconnect(self.id);
        actix::Running::Stop
    }
}

impl<L: SessionLogic> StreamHandler<Result<ws::Message, ProtocolError>> for WsSession<L> {
    fn handle(&mut self, item: Result<ws::Message, ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        let message = match item {
            Ok(message) => message,
            Err(_) if self.oversize.load(Ordering::SeqCst) => {
                log::info!(
                    "connection {} ({}): a frame declared more than {} bytes, closing it",
                    self.id,
                    self.logic.describe(),
                    self.limits.max_message_bytes
                );
                let reason = format!(
                    "messages are limited to {} bytes",
                    self.limits.max_message_bytes
                );
                return self.close(ctx, close::MESSAGE_TOO_BIG, &reason);
            }
            Err(ProtocolError::Overflow) => {
                let reason = format!(
                    "messages are limited to {} bytes",
                    self.limits.max_message_bytes
                );
                return self.close(ctx, close::MESSAGE_TOO_BIG, &reason);
            }
            Err(e) if is_invalid_utf8(&e) => {
                log::debug!("connection {}: {e}", self.id);
                return self.close(
                    ctx,
                    close::INVALID_PAYLOAD,
                    "a text message that is not UTF-8",
                );
            }
            Err(e) => {
                log::debug!("connection {}: protocol error: {e}", self.id);
                return self.close(ctx, close::PROTOCOL_ERROR, "protocol error");
            }
        };
        match message {
            ws::Message::Text(text) => {
                if self.fragments.is_some() {
                    return self.close(
                        ctx,
                        close::PROTOCOL_ERROR,
                        "a text frame inside a fragmented message",
                    );
                }
                self.on_text(&text, ctx);
            }
            ws::Message::Binary(_) => self.on_bad_frame(ctx, binary_refused(), None, false),
            ws::Message::Continuation(item) => self.on_fragment(item, ctx),
            ws::Message::Ping(bytes) => self.out.pong(ctx, &bytes),
            ws::Message::Pong(_) | ws::Message::Nop => {}
            ws::Message::Close(reason) => self.out.close(ctx, reason),
        }
    }
}

/// What hubs pushed since the last poll, oldest first: sent in order, with the comment frames
/// that follow one another merged into one frame.
impl<L: SessionLogic> StreamHandler<VecDeque<Outgoing>> for WsSession<L> {
    fn handle(&mut self, batch: VecDeque<Outgoing>, ctx: &mut Self::Context) {
        let mut comments = CommentFrames::default();
        for outgoing in batch {
            match outgoing {
                Outgoing::Frame { text, wire } => {
                    comments.send(&self.out, ctx);
                    self.out.encoded(ctx, text, &wire);
                }
                Outgoing::Comments { frame, items, .. } => {
                    if let Some(frame) = self.unseen(frame, &items) {
                        comments.add(frame);
                    }
                }
                Outgoing::Close { code, reason } => {
                    comments.send(&self.out, ctx);
                    if reason == TOO_SLOW {
                        log::info!("connection {}: too slow, closing with {code}", self.id);
                    }
                    return self.close(ctx, code, &reason);
                }
            }
        }
        comments.send(&self.out, ctx);
        self.go_direct();
    }

    /// The outbox never ends; the session outlives nothing it needs from it.
    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

impl<L: SessionLogic> WsSession<L> {
    /// `frame` of `items` as this connection should get it: whole, or without the comments its
    /// history already held (see [`Connected::seen_up_to`]), or nothing when it held them all.
    fn unseen(&mut self, frame: ByteString, items: &[shared_model::Danmaku]) -> Option<ByteString> {
        match self.seen_up_to {
            // The usual case: nothing of it was in this connection's history.
            None => Some(frame),
            Some(seen) if items.first().is_some_and(|first| first.id > seen) => {
                self.seen_up_to = None;
                Some(frame)
            }
            Some(seen) => {
                let fresh: Vec<_> = items.iter().filter(|i| i.id > seen).cloned().collect();
                if fresh.is_empty() {
                    return None;
                }
                self.seen_up_to = None;
                Some(ServerMessage::Danmaku { items: fresh }.to_json().into())
            }
        }
    }
}

/// Consecutive `danmaku` frames of one batch, sent as one frame: the items of each, in order, in
/// one list. A frame not in the exact shape [`ServerMessage::to_json`] gives them is sent as it
/// is.
#[derive(Default)]
struct CommentFrames {
    frames: Vec<ByteString>,
}

impl CommentFrames {
    /// How every `danmaku` frame begins and ends.
    const HEAD: &str = r#"{"type":"danmaku","items":["#;
    const TAIL: &str = "]}";

    fn add(&mut self, frame: ByteString) {
        self.frames.push(frame);
    }

    /// The list of items inside `frame`, if it has the expected shape and holds any.
    fn items_of(frame: &str) -> Option<&str> {
        frame
            .strip_prefix(Self::HEAD)?
            .strip_suffix(Self::TAIL)
            .filter(|items| !items.is_empty())
    }

    /// Sends what was added (merged when there are several) and starts over.
    fn send<A>(&mut self, out: &Out, ctx: &mut ws::WebsocketContext<A>)
    where
        A: Actor<Context = ws::WebsocketContext<A>>,
    {
        match self.frames.len() {
            0 => {}
            1 => out.text(ctx, self.frames.pop().expect("one frame")),
            _ => {
                let frames = std::mem::take(&mut self.frames);
                match merge(&frames) {
                    Some(merged) => out.text(ctx, merged),
                    None => frames.into_iter().for_each(|frame| out.text(ctx, frame)),
                }
            }
        }
    }
}

/// `frames` as one `danmaku` frame, or `None` if one of them is not in the expected shape.
pub(crate) fn merge(frames: &[ByteString]) -> Option<String> {
    let parts: Vec<&str> = frames
        .iter()
        .map(|frame| CommentFrames::items_of(frame))
        .collect::<Option<_>>()?;
    let length = parts.iter().map(|part| part.len() + 1).sum::<usize>()
        + CommentFrames::HEAD.len()
        + CommentFrames::TAIL.len();
    let mut merged = String::with_capacity(length);
    merged.push_str(CommentFrames::HEAD);
    for (n, part) in parts.iter().enumerate() {
        if n > 0 {
            merged.push(',');
        }
        merged.push_str(part);
    }
    merged.push_str(CommentFrames::TAIL);
    Some(merged)
}

/// Whether actix refused a whole text frame because it is not UTF-8 (RFC 6455 section 8.1 wants
/// 1007 for that, not 1002). actix-web-actors reports it as an `Io` error of kind `Other` wrapping
/// the `Utf8Error`'s text, which always names UTF-8; real I/O errors carry their own kinds.
fn is_invalid_utf8(error: &ProtocolError) -> bool {
    match error {
        ProtocolError::Io(e) => {
            e.kind() == std::io::ErrorKind::Other
                && e.get_ref()
                    .is_some_and(|inner| inner.to_string().contains("utf-8"))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use shared_model::{ChannelId, Color, Danmaku, Mode};

    use super::*;

    fn frame(ids: &[i64]) -> ByteString {
        let items = ids
            .iter()
            .map(|&id| Danmaku {
                id,
                channel: ChannelId::parse("r").unwrap(),
                author: "ann".into(),
                text: format!("n{id}, \"quoted\" ]}}"),
                color: Color::default(),
                mode: Mode::default(),
                time: None,
                sent_at: shared_model::time::parse("2026-11-22T00:00:00.000Z").unwrap(),
            })
            .collect();
        ServerMessage::Danmaku { items }.to_json().into()
    }

    #[test]
    fn consecutive_comment_frames_merge_into_one_with_every_item_in_order() {
        let merged = merge(&[frame(&[1, 2]), frame(&[3]), frame(&[4, 5])]).expect("mergeable");
        let back: ServerMessage = serde_json::from_str(&merged).expect("a valid frame");
        let ServerMessage::Danmaku { items } = back else {
            panic!("not a danmaku frame: {merged}")
        };
        let ids: Vec<i64> = items.iter().map(|item| item.id).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5]);
        assert!(
            items
                .iter()
                .all(|item| item.text.ends_with("\"quoted\" ]}"))
        );
        assert_eq!(merged, frame(&[1, 2, 3, 4, 5]).to_string());
    }

    #[test]
    fn a_frame_of_another_shape_is_not_merged() {
        let odd: ByteString = r#"{"items":[],"type":"danmaku"}"#.into();
        assert!(merge(&[frame(&[1]), odd]).is_none());
        let empty: ByteString = r#"{"type":"danmaku","items":[]}"#.into();
        assert!(merge(&[frame(&[1]), empty]).is_none());
    }
}
