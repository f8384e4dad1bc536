//! The live hub: the shared rooms hub ([`service_kit::ws::hub::RoomsHub`]) with what only a
//! live room has, through its extension [`Checkins`]: the room's host connections and its open
//! check-in's codes.
//!
//! A check-in's codes are derived from its stored secret and the time ([`CodeSchedule`]), so
//! every instance holding it computes the same ones. The hub pushes the code to the host's
//! connections alone at each step boundary, `opened_at + k * interval` by the clock (not every
//! interval from when this process happened to start it), so every instance shows a new code at
//! the same moment; viewers are told that a check-in is open, never its code. A check-in opened
//! through another instance is loaded from the store when a guess for it arrives, or when its
//! room is first joined here (see [`LiveJoined::check_store`]). Every instance holding a
//! check-in closes it when its time is up: the store closes it once and keeps the count, so each
//! instance tells its room the same number.
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

use crate::codes::CodeSchedule;
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
    /// Whether the store was asked for this room's open check-in (or the hub started one), so
    /// that only the first join of a room the hub does not hold reads the store.
    store_checked: bool,
}

/// An open check-in's state.
struct ActiveCheckin {
    id: i64,
    closes_at: DateTime<Utc>,
    /// Its codes, from its secret and the time.
    codes: CodeSchedule,
    /// The timer that pushes the next step's code.
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
    /// The frame that shows `step`'s code on the host's screen, valid until the step ends.
    fn code_frame(&self, step: u64) -> ServerMessage {
        ServerMessage::CheckinCode {
            checkin: self.id,
            code: self.codes.code(step),
            valid_until: self.codes.step_end(step),
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
    /// The hub held nothing of this room yet: the joining connection should ask the store
    /// whether a check-in is open there (opened through another instance) and, if so, hand it
    /// to the hub with [`StartCheckin`], which tells the room (this connection included).
    pub check_store: bool,
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
        let now = Utc::now();
        LiveJoined {
            open_checkin: live.checkin.as_ref().map(|c| (c.id, c.closes_at)),
            code: live
                .checkin
                .as_ref()
                .filter(|_| host)
                .map(|c| c.code_frame(c.codes.step_at(now))),
            check_store: !std::mem::replace(&mut live.store_checked, true)
                && live.checkin.is_none(),
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

/// Step `step` of check-in `id` began: push its code to the room's hosts, and set the timer for
/// the next step's. A timer that fired late (the actor was busy) pushes the step the clock is at.
fn rotate(hub: &mut LiveHub, room: &ChannelId, id: i64, step: u64, ctx: &mut Context<LiveHub>) {
    let Some(channel) = hub.channel_mut(room) else {
        return;
    };
    let Some(checkin) = channel.ext.checkin.as_mut().filter(|c| c.id == id) else {
        return;
    };
    let now = Utc::now();
    let step = step.max(checkin.codes.step_at(now));
    let frame = checkin.code_frame(step);
    checkin.rotation = next_rotation(ctx, room, id, &checkin.codes, step + 1, now);
    tell_hosts(channel, &frame);
}

/// The timer that runs [`rotate`] for `step` when it starts by the clock.
fn next_rotation(
    ctx: &mut Context<LiveHub>,
    room: &ChannelId,
    id: i64,
    codes: &CodeSchedule,
    step: u64,
    now: DateTime<Utc>,
) -> SpawnHandle {
    let wait = (codes.step_start(step) - now)
        .to_std()
        .unwrap_or(Duration::ZERO);
    let room = room.clone();
    ctx.run_later(wait, move |hub, ctx| rotate(hub, &room, id, step, ctx))
}

/// Ends the room's check-in `id`: no more codes; the store marks it closed (or, when another
/// instance did first, answers the count that close kept), then everyone in the room is told how
/// many attended.
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

/// A check-in was stored, found unclosed after a restart, or found open in the store (opened
/// through another instance): start pushing its codes and closing it in time. A check-in the
/// hub already runs (or an older one than it runs in that room) changes nothing, so loading the
/// same check-in twice is harmless.
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
        let limits = self.ext().limits;
        let channel = self.channel_entry(room.clone());
        channel.ext.store_checked = true;
        if channel.ext.checkin.as_ref().is_some_and(|c| c.id >= id) {
            return;
        }
        // One check-in per room (the store refuses a second); a restart may still hand over one
        // that replaces another whose time is over.
        let replaced = channel.ext.checkin.take();
        if let Some(old) = &replaced {
            ctx.cancel_future(old.rotation);
        }
        let codes = CodeSchedule::new(&record);
        let now = Utc::now();
        let step = codes.step_at(now);
        let checkin = ActiveCheckin {
            id,
            closes_at: record.closes_at,
            rotation: next_rotation(ctx, &room, id, &codes, step + 1, now),
            codes,
            wrong_by_client: HashMap::new(),
            wrong_budget: WrongGuessBudget::new(limits.burst, limits.refill, Instant::now()),
        };
        let code = checkin.code_frame(step);
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
        log::info!(
            "room {room}: check-in {id} open for {left:?}, a code every {} s (now step {step})",
            record.interval_secs
        );
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
    /// Whether the limits on wrong codes were applied already (the cluster's, in Redis): the hub
    /// then only compares the code, and a `Wrong` answer's `tries_left` is the caller's to fill.
    pub limits_applied: bool,
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
        let now = Utc::now();
        let Some(room) = self.ext().open.borrow().get(&msg.checkin).cloned() else {
            return MessageResult(GuessOutcome::NotOpen);
        };
        if msg.from_room.as_ref().is_some_and(|from| *from != room) {
            return MessageResult(GuessOutcome::NotOpen);
        }
        let Some(checkin) = self
            .channel_mut(&room)
            .and_then(|channel| channel.ext.checkin.as_mut())
            .filter(|checkin| checkin.id == msg.checkin && now < checkin.closes_at)
        else {
            return MessageResult(GuessOutcome::NotOpen);
        };
        if msg.limits_applied {
            return MessageResult(if checkin.codes.accepts(&msg.code, now) {
                GuessOutcome::Right { room }
            } else {
                GuessOutcome::Wrong { tries_left: 0 }
            });
        }
        MessageResult(judge(
            checkin,
            limits,
            client_key(msg.client),
            &msg.code,
            room,
            now,
        ))
    }
}

/// The rules of a guess at `now`, in order: the client's own limit, then the check-in's budget,
/// then the code itself (the current step's or the one before). Only a wrong code is counted.
fn judge(
    checkin: &mut ActiveCheckin,
    limits: GuessLimits,
    client: IpAddr,
    code: &str,
    room: ChannelId,
    now: DateTime<Utc>,
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
    if checkin.codes.accepts(code, now) {
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
        let opened_at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let codes = CodeSchedule::new(&CheckinRecord {
            id: 1,
            room: ChannelId::parse("r").unwrap(),
            interval_secs: 5,
            opened_at,
            closes_at: opened_at + chrono::Duration::seconds(60),
            closed: false,
            secret: danmaku_store::CheckinSecret::from_bytes([4; 32]),
        });
        // In step 3: its code and step 2's are taken.
        let now = opened_at + chrono::Duration::seconds(17);
        let (current, previous) = (codes.code(3), codes.code(2));
        let codes_before_previous = codes.code(1);
        for wrong in ["000000", "000001"] {
            assert!(
                wrong != current && wrong != previous,
                "pick other wrong codes"
            );
        }
        let mut checkin = ActiveCheckin {
            id: 1,
            closes_at: opened_at + chrono::Duration::seconds(60),
            codes,
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
            judge(
                &mut checkin,
                limits,
                client_key(client),
                code,
                room.clone(),
                now,
            )
        };
        assert_eq!(guess(ann, "000000"), GuessOutcome::Wrong { tries_left: 1 });
        assert_eq!(guess(ann, "000001"), GuessOutcome::Wrong { tries_left: 0 });
        assert_eq!(
            guess(ann, &current),
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
            guess(bob, &previous),
            GuessOutcome::Right { room: room.clone() }
        );
        assert_eq!(
            guess(bob, &current),
            GuessOutcome::Right { room: room.clone() }
        );
        assert_eq!(
            guess(bob, &codes_before_previous),
            GuessOutcome::Wrong { tries_left: 1 },
            "two steps old"
        );
        assert_eq!(checkin.wrong_by_client.len(), 3);
    }
}
