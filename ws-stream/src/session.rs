//! What a live-room connection's frames mean: the welcome (the chat box, or what a reconnecting
//! viewer missed), `send`, and `checkin`. The connection itself (heartbeat, limits, decoding) is
//! [`service_kit::ws::session`].

use std::sync::Arc;

use actix::Addr;
use service_kit::ws::{Connected, ConnectionId, LocalFuture, SessionLogic, Viewer};
use shared_model::comment::TimeRule;
use shared_model::protocol::send_to_draft;
use shared_model::store::RoomStore;
use shared_model::{ApiError, ChannelId, ClientMessage, Danmaku, ErrorCode, ServerMessage, Store};

use crate::checkin::attend;
use crate::hub::{Join, Leave, LiveHub};

/// Comments in a newcomer's chat box.
pub const HISTORY_ITEMS: usize = 50;

/// Most comments a reconnecting viewer is sent; past that it gets the chat box and
/// `recovered: false`.
pub const MAX_RECOVERED_ITEMS: usize = 1000;

/// One connection to a live room.
pub struct LiveSession {
    /// The room.
    pub room: ChannelId,
    /// The connection's name: the author of its comments.
    pub name: String,
    /// Whether it proved to be the room's host.
    pub host: bool,
    /// The last comment id the client saw before it reconnected.
    pub since: Option<i64>,
    /// Where comments live.
    pub comments: Arc<dyn Store>,
    /// Where rooms and check-ins live.
    pub rooms: Arc<dyn RoomStore>,
    /// The hub.
    pub hub: Addr<LiveHub>,
}

impl SessionLogic for LiveSession {
    fn connect(&mut self, me: Viewer) -> LocalFuture<Connected> {
        let (hub, comments) = (self.hub.clone(), self.comments.clone());
        let (room, name, host, since) =
            (self.room.clone(), self.name.clone(), self.host, self.since);
        Box::pin(async move {
            // Join first: what is published from now on waits in this connection's queue, and
            // the session leaves out what the history below already holds.
            let info = match hub
                .send(Join {
                    room: room.clone(),
                    viewer: me,
                    host,
                })
                .await
            {
                Ok(info) => info,
                Err(e) => {
                    log::error!("room {room}: joining the hub failed: {e}");
                    return Connected {
                        frames: vec![ServerMessage::error(ApiError::internal(), None)],
                        seen_up_to: None,
                    };
                }
            };
            let (history, recovered) = match history(&*comments, &room, since).await {
                Ok(found) => found,
                Err(e) => {
                    log::error!("room {room}: reading the history failed: {e}");
                    (Vec::new(), since.map(|_| false))
                }
            };
            let seen_up_to = history.last().map(|item| item.id).or(since);
            let mut frames = vec![ServerMessage::Welcome {
                room,
                viewers: info.viewers,
                history,
                recovered,
                name,
                host,
            }];
            if let Some((checkin, closes_at)) = info.open_checkin {
                frames.push(ServerMessage::CheckinOpen { checkin, closes_at });
            }
            frames.extend(info.code);
            Connected { frames, seen_up_to }
        })
    }

    fn handle(&mut self, message: ClientMessage) -> LocalFuture<Vec<ServerMessage>> {
        let reference = message.reference().cloned();
        let (comments, rooms, hub) = (self.comments.clone(), self.rooms.clone(), self.hub.clone());
        let (room, name) = (self.room.clone(), self.name.clone());
        Box::pin(async move {
            let answer = match message {
                // The author is always the connection's name; an `author` field is ignored.
                ClientMessage::Send {
                    text,
                    color,
                    mode,
                    time,
                    reference,
                    ..
                } => {
                    let draft = send_to_draft(text, color, mode, time, None, &name);
                    send(&*comments, &room, draft)
                        .await
                        .map(|item| ServerMessage::Ack { reference, item })
                }
                ClientMessage::Checkin { checkin, code, .. } => {
                    attend(&*rooms, &hub, checkin, &name, &code)
                        .await
                        .map(|()| ServerMessage::CheckedIn { checkin, name })
                }
                ClientMessage::Range { .. } | ClientMessage::Ping => Err(ApiError::new(
                    ErrorCode::UnknownType,
                    "a live room takes send, checkin and ping frames",
                )),
            };
            vec![answer.unwrap_or_else(|error| ServerMessage::error(error, reference))]
        })
    }

    fn disconnect(&mut self, id: ConnectionId) {
        self.hub.do_send(Leave {
            room: self.room.clone(),
            id,
        });
    }

    fn describe(&self) -> String {
        let role = if self.host { "host" } else { "viewer" };
        format!("room {}, {role} {}", self.room, self.name)
    }
}

/// The chat box, or with `since` what was missed: `(history, recovered)`.
async fn history(
    comments: &dyn Store,
    room: &ChannelId,
    since: Option<i64>,
) -> Result<(Vec<Danmaku>, Option<bool>), shared_model::StoreError> {
    let Some(since) = since else {
        return Ok((comments.latest(room, HISTORY_ITEMS).await?, None));
    };
    let missed = comments.after(room, since, MAX_RECOVERED_ITEMS + 1).await?;
    if missed.len() <= MAX_RECOVERED_ITEMS {
        Ok((missed, Some(true)))
    } else {
        Ok((comments.latest(room, HISTORY_ITEMS).await?, Some(false)))
    }
}

async fn send(
    comments: &dyn Store,
    room: &ChannelId,
    draft: shared_model::DraftDanmaku,
) -> Result<Danmaku, ApiError> {
    let new = draft.validate(TimeRule::Absent)?;
    // The hub hears of it from the store, in commit order.
    comments.append(room, new).await.map_err(|e| {
        log::error!("room {room}: storing a comment failed: {e}");
        ApiError::internal()
    })
}
