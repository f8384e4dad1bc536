//! The live hub: the shared rooms hub ([`service_kit::ws::hub::RoomsHub`]) with what only a
//! live room has, through its extension [`Checkins`]: the room's host connections and its open
//! check-in's codes.
//!
//! A check-in's codes live only here: a fresh one every interval ([`crate::codes::new_code`]),
//! pushed to the host's connections alone; viewers are told that a check-in is open, never its
//! code. The hub closes a check-in when its time is up (in the store, then it tells the room).
//!
//! Guesses are judged here too ([`Guess`]), in one place and one at a time, so the limits on
//! wrong codes cannot be raced: each client (by [`client_key`]) may give
//! [`GuessLimits::per_client`] wrong codes per check-in, and all clients together spend a
//! check-in-wide budget of wrong codes ([`WrongGuessBudget`]). Those counts are kept in memory
//! only: a wrong guess writes nothing to the database, so a guessing flood cannot slow the
//! comments' writes; a restart forgives them.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    ActorFutureExt, AsyncContext, Context, Handler, Message, MessageResult, SpawnHandle, WrapFuture,
};
use chrono::{DateTime, Utc};
use danmaku_store::{CheckinRecord, RoomStore};
use service_kit::fanout::Fanout;
use service_kit::rate::client_key;
use service_kit::ws::hub::{Channel, HubExtension, RoomsHub};
use service_kit::ws::{ByteString, ConnectionId, Viewer};
use shared_model::{ChannelId, ServerMessage};

use crate::codes::{codes_match, new_code};
use crate::config::GuessLimits;

/// Owns every live room: the shared hub with [`Checkins`].
pub type LiveHub = RoomsHub<Checkins>;

/// A fresh live hub whose check-ins are closed in `store` and take guesses within `limits`, fed
/// by `fanout`; not started yet.
pub fn new(store: Arc<dyn RoomStore>, limits: GuessLimits, fanout: Fanout) -> LiveHub {
    RoomsHub::new(
        Checkins {
            store,
            limits,
            open: RefCell::new(HashMap::new()),
        },
        "room",
        Some(fanout),
    )
}

/// What the live service adds to the shared hub: hosts and check-ins.
pub struct Checkins {
    /// Where check-ins are closed when their time is up.
    store: Arc<dyn RoomStore>,
    /// How many wrong codes a check-in takes.
    limits: GuessLimits,
    /// The room of every open check-in, so a guess over HTTP (which names no room) finds it. A
    /// `RefCell` because the shared hub lends its extension out only by `&`; the hub is one
    /// actor on one thread, and no borrow is held across a call.
    open: RefCell<HashMap<i64, ChannelId>>,
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
    /// Wrong codes so far per client ([`client_key`]). An entry is made only by a wrong guess
    /// that the check-in-wide budget paid for, so the map holds at most that budget's worth.
    wrong_by_client: HashMap<IpAddr, u32>,
    /// The wrong codes all clients together may still give.
    wrong_budget: WrongGuessBudget,
}

/// A check-in-wide token bucket of wrong codes: `burst` at first, one more every `refill`.
///
/// Only wrong codes spend it, but a guess must be admitted before its code is compared (a
/// refusal that came only after a wrong code would tell a guesser which codes are wrong at no
/// cost), so while it is empty every guess waits, right or not. Half of the burst is kept for
/// clients that have not guessed wrong yet: a flood from clients that keep guessing leaves a
/// student's first try working, and only a flood from ever new addresses reaches it. `governor`
/// (the per-client budgets) cannot look at a bucket without spending it, hence these few lines.
#[derive(Debug, Clone)]
pub struct WrongGuessBudget {
    tokens: f64,
    updated: Instant,
    burst: f64,
    refill: Duration,
}

impl WrongGuessBudget {
    /// A full bucket.
    pub fn new(burst: u32, refill: Duration, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            updated: now,
            burst: f64::from(burst),
            refill,
        }
    }

    /// The tokens only first guesses may spend.
    fn reserve(&self) -> f64 {
        (self.burst / 2.0).floor()
    }

    /// Whether a guess may be compared now: a client's first guess (`first`) may spend the
    /// bucket down to empty, later guesses down to the reserve. Otherwise how long to wait.
    pub fn admit(&mut self, first: bool, now: Instant) -> Result<(), Duration> {
        let earned =
            now.saturating_duration_since(self.updated).as_secs_f64() / self.refill.as_secs_f64();
        self.tokens = (self.tokens + earned).min(self.burst);
        self.updated = now;
        let floor = if first { 0.0 } else { self.reserve() };
        let needed = floor + 1.0 - self.tokens;
        if needed <= 0.0 {
            Ok(())
        } else {
            Err(self.refill.mul_f64(needed))
        }
    }

    /// A wrong code was given (after [`Self::admit`] let it in).
    pub fn spend(&mut self) {
        self.tokens = (self.tokens - 1.0).max(0.0);
    }
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
    hub.ext().open.borrow_mut().remove(&id);
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
        let limits = self.ext().limits;
        let channel = self.channel_entry(room.clone());
        // One check-in per room (the store refuses a second); a restart may still hand over one
        // that replaces another whose time is over.
        let replaced = channel.ext.checkin.take();
        if let Some(old) = &replaced {
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
            wrong_by_client: HashMap::new(),
            wrong_budget: WrongGuessBudget::new(limits.burst, limits.refill, Instant::now()),
        };
        let code = checkin.code_frame();
        channel.ext.checkin = Some(checkin);
        channel.viewers.broadcast(&ServerMessage::CheckinOpen {
            checkin: id,
            closes_at: record.closes_at,
        });
        tell_hosts(channel, &code);
        {
            let mut open = self.ext().open.borrow_mut();
            if let Some(old) = replaced {
                open.remove(&old.id);
            }
            open.insert(id, room.clone());
        }
        let left = (record.closes_at - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        log::info!("room {room}: check-in {id} open for {left:?}, a code every {interval:?}");
        ctx.run_later(left, move |hub, ctx| close(hub, &room, id, ctx));
    }
}

/// Someone typed `code` for check-in `checkin`: judge it within the limits on wrong codes.
#[derive(Message)]
#[rtype(result = "GuessOutcome")]
pub struct Guess {
    /// The check-in.
    pub checkin: i64,
    /// The room of the connection that guessed; `None` over HTTP, which names no room.
    pub from_room: Option<ChannelId>,
    /// The client's address (its budget key is [`client_key`] of it).
    pub client: IpAddr,
    /// What was typed.
    pub code: String,
}

/// The hub's judgement of a [`Guess`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuessOutcome {
    /// The current code or the one just before it: check in to this room's check-in.
    Right {
        /// The check-in's room.
        room: ChannelId,
    },
    /// Not the code; the client may give `tries_left` more wrong codes.
    Wrong {
        /// Wrong codes the client may still give to this check-in.
        tries_left: u32,
    },
    /// The client gave all the wrong codes it may; the code was not compared.
    TooManyFromClient {
        /// The limit it reached.
        limit: u32,
    },
    /// The check-in-wide budget of wrong codes is spent; the code was not compared.
    Throttled {
        /// How long until a guess of this client may be compared again.
        retry_after: Duration,
    },
    /// The hub has no open check-in of that id (in that room): the caller asks the store why.
    NotOpen,
}

impl Handler<Guess> for LiveHub {
    type Result = MessageResult<Guess>;
    fn handle(&mut self, msg: Guess, _ctx: &mut Context<Self>) -> Self::Result {
        let limits = self.ext().limits;
        let Some(room) = self.ext().open.borrow().get(&msg.checkin).cloned() else {
            return MessageResult(GuessOutcome::NotOpen);
        };
        if msg.from_room.as_ref().is_some_and(|from| *from != room) {
            return MessageResult(GuessOutcome::NotOpen);
        }
        let Some(checkin) = self
            .channel_mut(&room)
            .and_then(|channel| channel.ext.checkin.as_mut())
            .filter(|checkin| checkin.id == msg.checkin && Utc::now() < checkin.closes_at)
        else {
            return MessageResult(GuessOutcome::NotOpen);
        };
        MessageResult(judge(
            checkin,
            limits,
            client_key(msg.client),
            &msg.code,
            room,
        ))
    }
}

/// The rules of a guess, in order: the client's own limit, then the check-in's budget, then
/// the code itself. Only a wrong code is counted.
fn judge(
    checkin: &mut ActiveCheckin,
    limits: GuessLimits,
    client: IpAddr,
    code: &str,
    room: ChannelId,
) -> GuessOutcome {
    let wrong_so_far = checkin.wrong_by_client.get(&client).copied().unwrap_or(0);
    if wrong_so_far >= limits.per_client {
        return GuessOutcome::TooManyFromClient {
            limit: limits.per_client,
        };
    }
    if let Err(retry_after) = checkin
        .wrong_budget
        .admit(wrong_so_far == 0, Instant::now())
    {
        return GuessOutcome::Throttled { retry_after };
    }
    let current = codes_match(code, &checkin.current);
    let previous = checkin
        .previous
        .as_deref()
        .is_some_and(|p| codes_match(code, p));
    if current | previous {
        return GuessOutcome::Right { room };
    }
    checkin.wrong_budget.spend();
    let wrong = checkin.wrong_by_client.entry(client).or_insert(0);
    *wrong += 1;
    GuessOutcome::Wrong {
        tries_left: limits.per_client - *wrong,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_guesses_spend_the_burst_keeping_half_for_first_guesses_then_refill() {
        let start = Instant::now();
        let mut budget = WrongGuessBudget::new(4, Duration::from_secs(1), start);
        // Clients that guessed wrong before may spend down to the reserve (2 of 4).
        for _ in 0..2 {
            assert!(budget.admit(false, start).is_ok());
            budget.spend();
        }
        let wait = budget.admit(false, start).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        // A client's first guess may spend the reserve too.
        for _ in 0..2 {
            assert!(budget.admit(true, start).is_ok());
            budget.spend();
        }
        assert_eq!(
            budget.admit(true, start).unwrap_err(),
            Duration::from_secs(1)
        );
        assert_eq!(
            budget.admit(false, start).unwrap_err(),
            Duration::from_secs(3)
        );
        // One more every refill, never more than the burst.
        let later = start + Duration::from_millis(1500);
        assert!(budget.admit(true, later).is_ok());
        assert!(budget.admit(false, later).is_err());
        let much_later = start + Duration::from_secs(3600);
        for _ in 0..2 {
            assert!(budget.admit(false, much_later).is_ok());
            budget.spend();
        }
        assert!(
            budget.admit(false, much_later).is_err(),
            "capped at the burst"
        );
    }

    #[test]
    fn a_right_code_spends_nothing_and_a_clients_wrong_codes_are_capped() {
        let mut checkin = ActiveCheckin {
            id: 1,
            closes_at: Utc::now() + chrono::Duration::seconds(60),
            current: "123456".into(),
            previous: Some("654321".into()),
            valid_until: Utc::now(),
            interval: Duration::from_secs(5),
            rotation: SpawnHandle::default(),
            wrong_by_client: HashMap::new(),
            wrong_budget: WrongGuessBudget::new(100, Duration::from_secs(1), Instant::now()),
        };
        let limits = GuessLimits {
            per_client: 2,
            burst: 100,
            refill: Duration::from_secs(1),
        };
        let room = ChannelId::parse("r").unwrap();
        let ann: IpAddr = "10.0.0.1".parse().unwrap();
        let ann_again: IpAddr = "2001:db8::1".parse().unwrap();
        let ann_same_64: IpAddr = "2001:db8::2".parse().unwrap();
        let mut guess = |client: IpAddr, code: &str| {
            judge(&mut checkin, limits, client_key(client), code, room.clone())
        };
        assert_eq!(guess(ann, "000000"), GuessOutcome::Wrong { tries_left: 1 });
        assert_eq!(guess(ann, "000001"), GuessOutcome::Wrong { tries_left: 0 });
        assert_eq!(
            guess(ann, "123456"),
            GuessOutcome::TooManyFromClient { limit: 2 },
            "past its limit, even the right code is not compared"
        );
        assert_eq!(
            guess(ann_again, "000000"),
            GuessOutcome::Wrong { tries_left: 1 }
        );
        assert_eq!(
            guess(ann_same_64, "000000"),
            GuessOutcome::Wrong { tries_left: 0 },
            "one /64 is one client"
        );
        let bob: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            guess(bob, "654321"),
            GuessOutcome::Right { room: room.clone() }
        );
        assert_eq!(
            guess(bob, "123456"),
            GuessOutcome::Right { room: room.clone() }
        );
        assert_eq!(checkin.wrong_by_client.len(), 2);
    }
}
