//! The live hub: the shared rooms hub ([`service_kit::ws::hub::RoomsHub`]) with what only a
//! live room has, through its extension [`Checkins`]: the room's host connections and its open
//! check-in's codes.
//!
//! A check-in's codes live only here: a fresh one every interval ([`crate::codes::new_code`]),
//! pushed to the host's connections alone; viewers are told that a check-in is open, never its
//! code. The hub closes a check-in when its time is up (in the store, then it tells the room).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix::{ActorFutureExt, AsyncContext, Context, Handler, Message, SpawnHandle, WrapFuture};
use chrono::{DateTime, Utc};
use service_kit::ws::hub::{Channel, HubExtension, RoomsHub};
use service_kit::ws::{ByteString, ConnectionId, Viewer};
use shared_model::store::{CheckinRecord, RoomStore};
use shared_model::{ChannelId, ServerMessage};

use crate::codes::{codes_match, new_code};

/// Owns every live room: the shared hub with [`Checkins`].
pub type LiveHub = RoomsHub<Checkins>;

/// A fresh live hub whose check-ins are closed in `store`; not started yet.
pub fn new(store: Arc<dyn RoomStore>) -> LiveHub {
    RoomsHub::new(Checkins { store }, "room")
}

/// What the live service adds to the shared hub: hosts and check-ins.
pub struct Checkins {
    /// Where check-ins are closed when their time is up.
    store: Arc<dyn RoomStore>,
}

/// What a live room keeps beside its viewers.
#[derive(Default)]
pub struct LiveRoom {
    /// The connections that proved the host token.
    hosts: HashSet<ConnectionId>,
    /// The open check-in, if any.
    checkin: Option<ActiveCheckin>,
}

/// An open check-in's state.
struct ActiveCheckin {
    id: i64,
    closes_at: DateTime<Utc>,
    current: String,
    previous: Option<String>,
    valid_until: DateTime<Utc>,
    interval: Duration,
    rotation: SpawnHandle,
}

impl ActiveCheckin {
    /// The frame that shows the current code on the host's screen.
    fn code_frame(&self) -> ServerMessage {
        ServerMessage::CheckinCode {
            checkin: self.id,
            code: self.current.clone(),
            valid_until: self.valid_until,
        }
    }
}

/// What a joining connection learns beside the viewer count.
#[derive(Debug, Clone, Default)]
pub struct LiveJoined {
    /// The open check-in, if any, and when it closes.
    pub open_checkin: Option<(i64, DateTime<Utc>)>,
    /// For a host: the current code frame.
    pub code: Option<ServerMessage>,
}

impl HubExtension for Checkins {
    type Room = LiveRoom;
    /// Whether the connection proved to be the room's host.
    type JoinAs = bool;
    type Joined = LiveJoined;

    fn joined(
        &mut self,
        channel: &mut Channel<LiveRoom>,
        viewer: &Viewer,
        host: bool,
    ) -> LiveJoined {
        let live = &mut channel.ext;
        if host {
            live.hosts.insert(viewer.id);
        }
        LiveJoined {
            open_checkin: live.checkin.as_ref().map(|c| (c.id, c.closes_at)),
            code: live
                .checkin
                .as_ref()
                .filter(|_| host)
                .map(ActiveCheckin::code_frame),
        }
    }

    fn left(&mut self, channel: &mut Channel<LiveRoom>, id: ConnectionId) {
        channel.ext.hosts.remove(&id);
    }

    fn keeps(&self, room: &LiveRoom) -> bool {
        room.checkin.is_some()
    }
}

/// Sends `message` to the host's connections of `channel` only.
fn tell_hosts(channel: &mut Channel<LiveRoom>, message: &ServerMessage) {
    let frame: ByteString = message.to_json().into();
    let hosts = &channel.ext.hosts;
    channel
        .viewers
        .broadcast_to(frame, |viewer| hosts.contains(&viewer.id));
    // Hosts too slow to take it were dropped from the viewers; forget them here too.
    let viewers = &channel.viewers;
    channel.ext.hosts.retain(|id| viewers.has_viewer(*id));
}

/// A fresh code for the room's check-in, pushed to its hosts.
fn rotate(hub: &mut LiveHub, room: &ChannelId) {
    let Some(channel) = hub.channel_mut(room) else {
        return;
    };
    let Some(checkin) = channel.ext.checkin.as_mut() else {
        return;
    };
    let next = new_code(Some(&checkin.current));
    checkin.previous = Some(std::mem::replace(&mut checkin.current, next));
    checkin.valid_until = Utc::now() + chrono_duration(checkin.interval);
    let frame = checkin.code_frame();
    tell_hosts(channel, &frame);
}

/// Ends the room's check-in `id`: no more codes; the store marks it closed, then everyone in the
/// room is told how many attended.
fn close(hub: &mut LiveHub, room: &ChannelId, id: i64, ctx: &mut Context<LiveHub>) {
    let Some(channel) = hub.channel_mut(room) else {
        return;
    };
    if channel.ext.checkin.as_ref().map(|c| c.id) != Some(id) {
        return;
    }
    if let Some(checkin) = channel.ext.checkin.take() {
        ctx.cancel_future(checkin.rotation);
    }
    let store = hub.ext().store.clone();
    let room = room.clone();
    ctx.spawn(
        async move { store.close_checkin(id).await }
            .into_actor(hub)
            .map(move |closed, hub, _ctx| {
                let attended = match closed {
                    Ok(attended) => attended,
                    Err(e) => {
                        log::error!("closing check-in {id} failed: {e}");
                        return;
                    }
                };
                log::info!("room {room}: check-in {id} closed, {attended} attended");
                if let Some(channel) = hub.channel_mut(&room) {
                    channel.viewers.broadcast(&ServerMessage::CheckinClosed {
                        checkin: id,
                        attended,
                    });
                }
            }),
    );
}

/// `interval` for chrono's arithmetic (intervals are seconds, far inside its range).
fn chrono_duration(interval: Duration) -> chrono::Duration {
    chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::zero())
}

/// A check-in was stored (or found unclosed after a restart): start its codes.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StartCheckin {
    /// The stored check-in.
    pub record: CheckinRecord,
}

impl Handler<StartCheckin> for LiveHub {
    type Result = ();
    fn handle(&mut self, msg: StartCheckin, ctx: &mut Context<Self>) {
        let record = msg.record;
        let (id, room) = (record.id, record.room.clone());
        let interval = Duration::from_secs(record.interval_secs.into());
        let rotation = {
            let room = room.clone();
            ctx.run_interval(interval, move |hub, _| rotate(hub, &room))
        };
        let channel = self.channel_entry(room.clone());
        // One check-in per room (the store refuses a second); a restart may still hand over one
        // that replaces another whose time is over.
        if let Some(old) = channel.ext.checkin.take() {
            ctx.cancel_future(old.rotation);
        }
        let checkin = ActiveCheckin {
            id,
            closes_at: record.closes_at,
            current: new_code(None),
            previous: None,
            valid_until: Utc::now() + chrono_duration(interval),
            interval,
            rotation,
        };
        let code = checkin.code_frame();
        channel.ext.checkin = Some(checkin);
        channel.viewers.broadcast(&ServerMessage::CheckinOpen {
            checkin: id,
            closes_at: record.closes_at,
        });
        tell_hosts(channel, &code);
        let left = (record.closes_at - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        log::info!("room {room}: check-in {id} open for {left:?}, a code every {interval:?}");
        ctx.run_later(left, move |hub, ctx| close(hub, &room, id, ctx));
    }
}

/// Is this the current code of the room's check-in, or the one just before it?
#[derive(Message)]
#[rtype(result = "bool")]
pub struct VerifyCode {
    /// The room of the check-in.
    pub room: ChannelId,
    /// The check-in.
    pub checkin: i64,
    /// What was typed.
    pub code: String,
}

impl Handler<VerifyCode> for LiveHub {
    type Result = bool;
    fn handle(&mut self, msg: VerifyCode, _ctx: &mut Context<Self>) -> bool {
        let Some(checkin) = self
            .channel_mut(&msg.room)
            .and_then(|channel| channel.ext.checkin.as_ref())
            .filter(|checkin| checkin.id == msg.checkin)
        else {
            return false;
        };
        let current = codes_match(&msg.code, &checkin.current);
        let previous = checkin
            .previous
            .as_deref()
            .is_some_and(|p| codes_match(&msg.code, p));
        current | previous
    }
}

/// Someone checked in: tell the host's connections.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Attended {
    /// The room.
    pub room: ChannelId,
    /// The check-in.
    pub checkin: i64,
    /// Who.
    pub name: String,
    /// When.
    pub at: DateTime<Utc>,
}

impl Handler<Attended> for LiveHub {
    type Result = ();
    fn handle(&mut self, msg: Attended, _ctx: &mut Context<Self>) {
        if let Some(channel) = self.channel_mut(&msg.room) {
            tell_hosts(
                channel,
                &ServerMessage::Attendee {
                    checkin: msg.checkin,
                    name: msg.name,
                    at: msg.at,
                },
            );
        }
    }
}
