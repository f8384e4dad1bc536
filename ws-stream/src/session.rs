//! What a live-room connection's frames mean: the welcome (the chat box, or what a reconnecting
//! viewer missed), `send`, and `checkin`. The connection itself (heartbeat, limits, decoding) is
//! [`service_kit::ws::session`]; the rules are [`crate::rooms`].

use std::net::IpAddr;
use std::sync::Arc;

use service_kit::ReadTicket;
use service_kit::ws::hub::{Join, Leave};
use service_kit::ws::{Connected, ConnectionId, LocalFuture, SessionLogic, Viewer};
use shared_model::protocol::send_to_draft;
use shared_model::{ApiError, ChannelId, ClientMessage, ErrorCode, ServerMessage};

use crate::rooms::{History, LiveRooms};

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
    /// The join's read, admitted by the route; paid the rows of the welcome's history.
    pub reads: Option<ReadTicket>,
    /// The client's address, taken from the upgrade request: its guesses spend its budget and
    /// count against it.
    pub client: IpAddr,
    /// The rooms, their rules and their hub (the service's one, shared).
    pub live: Arc<LiveRooms>,
}

impl SessionLogic for LiveSession {
    fn connect(&mut self, me: Viewer) -> LocalFuture<Connected> {
        let live = self.live.clone();
        let (room, name, host, since) =
            (self.room.clone(), self.name.clone(), self.host, self.since);
        let reads = self.reads.take();
        Box::pin(async move {
            // Join first: what is published from now on waits in this connection's queue, and
            // the session leaves out what the history below already holds.
            let joined = match live
                .hub
                .send(Join {
                    channel: room.clone(),
                    viewer: me,
                    join_as: host,
                })
                .await
            {
                Ok(joined) => joined,
                Err(e) => {
                    log::error!("room {room}: joining the hub failed: {e}");
                    return Connected {
                        frames: vec![ServerMessage::error(ApiError::internal(), None)],
                        seen_up_to: None,
                    };
                }
            };
            // The first to join a room the hub holds nothing of asks the store whether a
            // check-in is open there (opened through another instance); the hub then tells the
            // room, this connection too, right after its welcome.
            if joined.ext.check_store {
                live.discover_checkin(&room).await;
            }
            // A failed read was logged; the connection goes on with an empty chat box.
            let history = live.history(&room, since).await.unwrap_or(History {
                items: Vec::new(),
                recovered: since.map(|_| false),
            });
            if let Some(reads) = reads {
                reads.pay(history.items.len());
            }
            let seen_up_to = history.items.last().map(|item| item.id).or(since);
            let mut frames = vec![ServerMessage::Welcome {
                room,
                viewers: joined.viewers,
                history: history.items,
                recovered: history.recovered,
                name,
                host,
            }];
            if let Some((checkin, closes_at)) = joined.ext.open_checkin {
                frames.push(ServerMessage::CheckinOpen { checkin, closes_at });
            }
            frames.extend(joined.ext.code);
            Connected { frames, seen_up_to }
        })
    }

    fn handle(&mut self, message: ClientMessage) -> LocalFuture<Result<ServerMessage, ApiError>> {
        let live = self.live.clone();
        let (room, name, client) = (self.room.clone(), self.name.clone(), self.client);
        Box::pin(async move {
            match message {
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
                    live.send(&room, draft)
                        .await
                        .map(|item| ServerMessage::Ack { reference, item })
                }
                ClientMessage::Checkin { checkin, code, .. } => live
                    .attend(checkin, &name, &code, Some(&room), client)
                    .await
                    .map(|name| ServerMessage::CheckedIn { checkin, name })
                    .map_err(|refused| refused.error),
                ClientMessage::Range { .. } | ClientMessage::Ping => Err(ApiError::new(
                    ErrorCode::UnknownType,
                    "a live room takes send, checkin and ping frames",
                )),
            }
        })
    }

    fn disconnect(&mut self, id: ConnectionId) {
        self.live.hub.do_send(Leave {
            channel: self.room.clone(),
            id,
        });
    }

    fn describe(&self) -> String {
        let role = if self.host { "host" } else { "viewer" };
        format!("room {}, {role} {}", self.room, self.name)
    }
}
