//! The hub: one actor that owns the live rooms: who watches (and who hosts), the fan-out of new
//! comments, viewer counts, and the codes of open check-ins.
//!
//! Comments that arrive within [`BATCH_WINDOW`] go out as one frame, serialized once. Viewer
//! counts go out at most every [`COUNT_INTERVAL`]. A check-in's codes live only here: a fresh one
//! every interval, pushed to the host's connections alone; viewers are told that a check-in is
//! open, never its code.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, SpawnHandle, WrapFuture,
};
use chrono::{DateTime, Utc};
use service_kit::ws::room::Room;
use service_kit::ws::{ByteString, ConnectionId, Viewer};
use shared_model::store::{CheckinRecord, RoomStore};
use shared_model::{ChannelId, Danmaku, ServerMessage};

use crate::checkin::{codes_match, new_code};

/// How long the first comment of a batch waits for others to share its frame.
pub const BATCH_WINDOW: Duration = Duration::from_millis(5);

/// How often changed viewer counts are reported (the contract allows twice a second).
pub const COUNT_INTERVAL: Duration = Duration::from_millis(500);

/// An open check-in's state.
struct ActiveCheckin {
    id: i64,
    closes_at: DateTime<Utc>,
    current: String,
    previous: Option<String>,
    valid_until: DateTime<Utc>,
    interval: Duration,
    rotation: Option<SpawnHandle>,
}

/// One live room.
#[derive(Default)]
struct LiveRoom {
    room: Room,
    hosts: HashSet<ConnectionId>,
    checkin: Option<ActiveCheckin>,
}

impl LiveRoom {
    /// Sends `message` to the host's connections only.
    fn tell_hosts(&mut self, message: &ServerMessage) {
        let frame: ByteString = message.to_json().into();
        let hosts = &self.hosts;
        self.room
            .broadcast_to(frame, |viewer| hosts.contains(&viewer.id));
        let room = &self.room;
        self.hosts.retain(|id| room.has_viewer(*id));
    }

    fn code_frame(&self) -> Option<ServerMessage> {
        self.checkin.as_ref().map(|c| ServerMessage::CheckinCode {
            checkin: c.id,
            code: c.current.clone(),
            valid_until: c.valid_until,
        })
    }
}

/// Owns every live room.
pub struct LiveHub {
    rooms: HashMap<ChannelId, LiveRoom>,
    /// Which room each open check-in belongs to.
    checkins: HashMap<i64, ChannelId>,
    store: Arc<dyn RoomStore>,
}

impl LiveHub {
    /// A hub whose check-ins are closed in `store`.
    pub fn new(store: Arc<dyn RoomStore>) -> Self {
        Self {
            rooms: HashMap::new(),
            checkins: HashMap::new(),
            store,
        }
    }

    fn flush(&mut self, room: &ChannelId) {
        if let Some(live) = self.rooms.get_mut(room) {
            let dropped = live.room.flush();
            if dropped > 0 {
                log::info!("room {room}: dropped {dropped} viewers too slow to keep up");
            }
        }
    }

    fn report_counts(&mut self) {
        for live in self.rooms.values_mut() {
            if let Some(update) = live.room.take_count_update() {
                live.room.broadcast(&update);
            }
        }
        self.rooms
            .retain(|_, live| !live.room.is_idle() || live.checkin.is_some());
    }

    /// A fresh code for the room's check-in, pushed to its hosts.
    fn rotate(&mut self, room: &ChannelId) {
        let Some(live) = self.rooms.get_mut(room) else {
            return;
        };
        let Some(checkin) = live.checkin.as_mut() else {
            return;
        };
        let next = new_code(Some(&checkin.current));
        checkin.previous = Some(std::mem::replace(&mut checkin.current, next));
        checkin.valid_until = Utc::now()
            + chrono::Duration::from_std(checkin.interval).unwrap_or(chrono::Duration::zero());
        if let Some(frame) = live.code_frame() {
            live.tell_hosts(&frame);
        }
    }

    /// Ends the room's check-in `id`: no more codes; the store marks it closed, then everyone
    /// in the room is told how many attended.
    fn close(&mut self, room: &ChannelId, id: i64, ctx: &mut Context<Self>) {
        let Some(live) = self.rooms.get_mut(room) else {
            return;
        };
        if live.checkin.as_ref().map(|c| c.id) != Some(id) {
            return;
        }
        if let Some(handle) = live.checkin.take().and_then(|c| c.rotation) {
            ctx.cancel_future(handle);
        }
        self.checkins.remove(&id);
        let store = self.store.clone();
        let room = room.clone();
        ctx.spawn(
            async move { store.close_checkin(id).await }
                .into_actor(self)
                .map(move |closed, hub, _ctx| {
                    let attended = match closed {
                        Ok(attended) => attended,
                        Err(e) => {
                            log::error!("closing check-in {id} failed: {e}");
                            return;
                        }
                    };
                    log::info!("room {room}: check-in {id} closed, {attended} attended");
                    if let Some(live) = hub.rooms.get_mut(&room) {
                        live.room.broadcast(&ServerMessage::CheckinClosed {
                            checkin: id,
                            attended,
                        });
                    }
                }),
        );
    }
}

impl Actor for LiveHub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(COUNT_INTERVAL, |hub, _| hub.report_counts());
    }
}

/// What a joining connection learns from the hub.
#[derive(Debug, Clone)]
pub struct JoinInfo {
    /// Viewers now, this one included.
    pub viewers: usize,
    /// The open check-in, if any, and when it closes.
    pub open_checkin: Option<(i64, DateTime<Utc>)>,
    /// For a host: the current code frame.
    pub code: Option<ServerMessage>,
}

/// A connection joins a room.
#[derive(Message)]
#[rtype(result = "JoinInfo")]
pub struct Join {
    /// The room.
    pub room: ChannelId,
    /// The connection.
    pub viewer: Viewer,
    /// Whether it proved to be the room's host.
    pub host: bool,
}

impl Handler<Join> for LiveHub {
    type Result = actix::MessageResult<Join>;
    fn handle(&mut self, msg: Join, _ctx: &mut Context<Self>) -> Self::Result {
        let live = self.rooms.entry(msg.room).or_default();
        if msg.host {
            live.hosts.insert(msg.viewer.id);
        }
        let viewers = live.room.join(msg.viewer);
        actix::MessageResult(JoinInfo {
            viewers,
            open_checkin: live.checkin.as_ref().map(|c| (c.id, c.closes_at)),
            code: if msg.host { live.code_frame() } else { None },
        })
    }
}

/// A connection leaves.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    /// The room.
    pub room: ChannelId,
    /// The connection.
    pub id: ConnectionId,
}

impl Handler<Leave> for LiveHub {
    type Result = ();
    fn handle(&mut self, msg: Leave, _ctx: &mut Context<Self>) {
        if let Some(live) = self.rooms.get_mut(&msg.room) {
            live.room.leave(msg.id);
            live.hosts.remove(&msg.id);
        }
    }
}

/// A stored comment to push to everyone in its room.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish {
    /// The comment, already committed.
    pub item: Danmaku,
}

impl Handler<Publish> for LiveHub {
    type Result = ();
    fn handle(&mut self, msg: Publish, ctx: &mut Context<Self>) {
        let room = msg.item.channel.clone();
        let Some(live) = self.rooms.get_mut(&room) else {
            return; // nobody watching
        };
        if live.room.queue(msg.item) {
            ctx.run_later(BATCH_WINDOW, move |hub, _| hub.flush(&room));
        }
    }
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
        let live = self.rooms.entry(room.clone()).or_default();
        if let Some(old) = live.checkin.take() {
            // One check-in per room; a newer one replaces an older (the route refuses this).
            if let Some(handle) = old.rotation {
                ctx.cancel_future(handle);
            }
            self.checkins.remove(&old.id);
        }
        let first = new_code(None);
        let rotation = {
            let room = room.clone();
            ctx.run_interval(interval, move |hub, _| hub.rotate(&room))
        };
        live.checkin = Some(ActiveCheckin {
            id,
            closes_at: record.closes_at,
            current: first,
            previous: None,
            valid_until: Utc::now()
                + chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::zero()),
            interval,
            rotation: Some(rotation),
        });
        self.checkins.insert(id, room.clone());
        live.room.broadcast(&ServerMessage::CheckinOpen {
            checkin: id,
            closes_at: record.closes_at,
        });
        if let Some(frame) = live.code_frame() {
            live.tell_hosts(&frame);
        }
        let left = (record.closes_at - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        log::info!("room {room}: check-in {id} open for {left:?}, a code every {interval:?}");
        ctx.run_later(left, move |hub, ctx| hub.close(&room, id, ctx));
    }
}

/// Is this the current code of the check-in, or the one just before it?
#[derive(Message)]
#[rtype(result = "bool")]
pub struct VerifyCode {
    /// The check-in.
    pub checkin: i64,
    /// What was typed.
    pub code: String,
}

impl Handler<VerifyCode> for LiveHub {
    type Result = bool;
    fn handle(&mut self, msg: VerifyCode, _ctx: &mut Context<Self>) -> bool {
        let Some(room) = self.checkins.get(&msg.checkin) else {
            return false;
        };
        let Some(checkin) = self.rooms.get(room).and_then(|l| l.checkin.as_ref()) else {
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
        if let Some(live) = self.rooms.get_mut(&msg.room) {
            live.tell_hosts(&ServerMessage::Attendee {
                checkin: msg.checkin,
                name: msg.name,
                at: msg.at,
            });
        }
    }
}

/// The service is stopping: send what is queued, then close every connection with 1001.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for LiveHub {
    type Result = ();
    fn handle(&mut self, _msg: Shutdown, _ctx: &mut Context<Self>) {
        for live in self.rooms.values_mut() {
            live.room.flush();
            live.room.close_all(
                shared_model::protocol::close::GOING_AWAY,
                "the server is shutting down",
            );
        }
        self.rooms.clear();
        self.checkins.clear();
    }
}
