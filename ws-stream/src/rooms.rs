//! The rules of live rooms, whichever way a client comes in (HTTP routes or a WebSocket
//! session): who is a room's host, opening a check-in, checking in, reading the chat history,
//! and sending a comment. Routes and sessions parse, call these, and answer; nothing here knows
//! of HTTP or WebSocket.
//!
//! Rooms, check-ins and attendance are in the [`RoomStore`]; comments in the [`Store`], the
//! newest of each room also in memory ([`crate::recent`]); the codes of open check-ins and the
//! counts of wrong codes in the hub ([`crate::hub`]), which this module asks and tells.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use chrono::Utc;
use danmaku_store::{
    Attendance, AttendanceOutcome, CheckinOpening, CheckinRecord, CheckinSummary, RoomAttendance,
    RoomRecord, RoomStore, Store, StoreError,
};
use futures_util::future::LocalBoxFuture;
use rand::Rng;
use service_kit::fanout::Fanout;
use service_kit::moderation::{Authorize, Moderation, Moderator};
use service_kit::rate::client_key;
use service_kit::rate::{ClientBudget, retry_after_secs};
use service_kit::shared_limits::{SharedLimits, WrongCodeVerdict};
use shared_model::api::{AttendanceRow, AttendanceTable, PastCheckin, RoomCheckins};
use shared_model::comment::{TimeRule, validate_author};
use shared_model::limits::{MAX_ATTENDANCE_CELLS, MAX_ATTENDANCE_MARKS, MAX_ROOM_CHECKINS};
use shared_model::time::rfc3339;
use shared_model::{ApiError, ChannelId, Danmaku, DraftDanmaku, ErrorCode};

use crate::codes::{new_host_token, token_digest, token_matches};
use crate::config::GuessLimits;
use crate::hub::{Attended, Guess, GuessOutcome, LiveHub, StartCheckin};
use crate::peers::LiveEvent;
use crate::recent::RecentComments;

/// Seconds between two codes, as the host may choose.
pub const INTERVAL_SECS: RangeInclusive<u32> = 2..=60;

/// How long a check-in stays open, in seconds, as the host may choose.
pub const DURATION_SECS: RangeInclusive<u32> = 10..=3600;

/// How long the cluster keeps a check-in's counts of wrong codes: past the longest check-in.
const WRONG_CODES_KEPT: Duration = Duration::from_secs(2 * 3600);

/// Comments in a newcomer's chat box.
pub const HISTORY_ITEMS: usize = 50;

/// Most comments a reconnecting viewer is sent; past that it gets the chat box and
/// `recovered: false`.
pub const MAX_RECOVERED_ITEMS: usize = 1000;

/// Characters of generated room ids: lowercase letters and digits without look-alikes.
const ROOM_ID_ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// Characters in a generated room id (32^10 = 2^50 ids).
const ROOM_ID_CHARS: usize = 10;

/// Fresh ids tried before creating a room gives up (a collision is already unlikely once).
const ROOM_ID_TRIES: usize = 8;

/// A store failure, logged with what was being done; the client sees `unavailable` (the
/// database did not answer in time, try again) or `internal`.
fn store_failed(doing: &str) -> impl FnOnce(StoreError) -> ApiError + '_ {
    move |e| {
        log::error!("{doing} failed: {e}");
        e.client_error()
    }
}

/// `checkin_closed` for check-in `id`.
fn closed(id: i64) -> ApiError {
    ApiError::new(ErrorCode::CheckinClosed, format!("check-in {id} is closed"))
}

/// `checkin_closed` for check-in `id`, saying when.
fn closed_at(id: i64, at: chrono::DateTime<Utc>) -> ApiError {
    ApiError::new(
        ErrorCode::CheckinClosed,
        format!("check-in {id} closed at {}", rfc3339(at)),
    )
}

/// The chat box a connection starts with.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// The comments, oldest first.
    pub items: Vec<Danmaku>,
    /// With `since`: whether `items` is exactly what was missed (`false`: too much was missed,
    /// and `items` is the usual chat box).
    pub recovered: Option<bool>,
}

/// Why a check-in attempt was refused: the error, and when waiting helps, how long.
#[derive(Debug)]
pub struct AttendError {
    /// What the client is told.
    pub error: ApiError,
    /// How long until a guess may be compared again (for `rate_limited`).
    pub retry_after: Option<Duration>,
}

impl From<ApiError> for AttendError {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            retry_after: None,
        }
    }
}

impl AttendError {
    /// `rate_limited` with `why`, and the wait in the message too (a WebSocket error frame has
    /// no header for it).
    fn rate_limited(why: &str, wait: Duration) -> Self {
        Self {
            error: ApiError::new(
                ErrorCode::RateLimited,
                format!("{why}; try again in {} s", retry_after_secs(wait)),
            ),
            retry_after: Some(wait),
        }
    }
}

/// The live rooms and their rules. Cheap to clone.
#[derive(Clone)]
pub struct LiveRooms {
    /// Mutes and banned words, checked before a comment is stored.
    pub moderation: Moderation,
    /// Where comments live.
    pub comments: Arc<dyn Store>,
    /// The newest comments of each room, kept current by the fan-out.
    pub recent: RecentComments,
    /// Where rooms and check-ins live.
    pub rooms: Arc<dyn RoomStore>,
    /// The hub: codes of open check-ins, and the rooms' connections.
    pub hub: Addr<LiveHub>,
    /// Each client's budget (the service's one, shared with the session and every route):
    /// every check-in guess spends one `writes` token.
    pub budget: ClientBudget,
    /// Where the other instances hear of check-ins opened and attended here.
    pub fanout: Fanout,
    /// The limits on wrong check-in codes.
    pub guess_limits: GuessLimits,
    /// With a bus: where the cluster keeps those limits.
    pub shared_limits: Option<SharedLimits>,
}

impl LiveRooms {
    /// Creates a room with a fresh random id and host token (the token is returned once; the
    /// store keeps only its digest).
    pub async fn create_room(
        &self,
        title: Option<String>,
    ) -> Result<(RoomRecord, String), ApiError> {
        let token = new_host_token();
        for _ in 0..ROOM_ID_TRIES {
            let room = ChannelId::parse(&random_room_id())?;
            let created = self
                .rooms
                .create_room(&room, title.clone(), token_digest(&token))
                .await
                .map_err(store_failed("creating a room"))?;
            if let Some(created) = created {
                log::info!("room {room} created");
                return Ok((created, token));
            }
        }
        log::error!("no free room id after {ROOM_ID_TRIES} tries");
        Err(ApiError::internal())
    }

    /// Checks that `token` is the host token of `room`: `unauthorized` without one (or for a
    /// room nobody created), `forbidden` with a wrong one.
    pub async fn host_of(
        &self,
        room: &ChannelId,
        token: Option<&str>,
    ) -> Result<RoomRecord, ApiError> {
        let Some(token) = token else {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "this needs the room's host token (Authorization: Bearer <host_token>)",
            ));
        };
        let record = self
            .rooms
            .room(room)
            .await
            .map_err(store_failed("reading a room"))?
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Unauthorized,
                    format!("room {room} has no host: create rooms with POST /api/rooms"),
                )
            })?;
        if token_matches(token, &record.token_digest) {
            Ok(record)
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("that is not the host token of room {room}"),
            ))
        }
    }

    /// Opens a check-in in `room` for its host; its codes start at once. `conflict` while
    /// another is open in the room.
    pub async fn open_checkin(
        &self,
        room: &ChannelId,
        token: Option<&str>,
        interval_secs: u32,
        duration_secs: u32,
    ) -> Result<CheckinRecord, ApiError> {
        self.host_of(room, token).await?;
        for (name, value, range) in [
            ("interval_secs", interval_secs, INTERVAL_SECS),
            ("duration_secs", duration_secs, DURATION_SECS),
        ] {
            if !range.contains(&value) {
                return Err(ApiError::new(
                    ErrorCode::InvalidValue,
                    format!("{name} must be from {} to {}", range.start(), range.end()),
                ));
            }
        }
        let now = Utc::now();
        let closes_at = now + chrono::Duration::seconds(duration_secs.into());
        let opening = self
            .rooms
            .open_checkin(room, interval_secs, now, closes_at)
            .await
            .map_err(store_failed("opening a check-in"))?;
        match opening {
            CheckinOpening::Opened(record) => {
                self.hub.do_send(StartCheckin {
                    record: record.clone(),
                });
                LiveEvent::CheckinOpened { checkin: record.id }.tell(&self.fanout);
                Ok(record)
            }
            CheckinOpening::AlreadyOpen(running) => Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "check-in {} is open in this room until {}",
                    running.id,
                    rfc3339(running.closes_at)
                ),
            )),
        }
    }

    /// Check-in `id` and who attended, in order, for its room's host.
    pub async fn report(
        &self,
        id: i64,
        token: Option<&str>,
    ) -> Result<(CheckinRecord, Vec<Attendance>), ApiError> {
        let checkin = self.checkin(id).await?;
        self.host_of(&checkin.room, token).await?;
        let attendance = self
            .rooms
            .attendance(id)
            .await
            .map_err(store_failed("reading attendance"))?;
        Ok((checkin, attendance))
    }

    /// The newest [`MAX_ROOM_CHECKINS`] check-ins of `room`, oldest first, with their counts,
    /// for its host. Returns the store rows it read too, for the read budget.
    pub async fn room_checkins(
        &self,
        room: &ChannelId,
        token: Option<&str>,
    ) -> Result<(RoomCheckins, usize), ApiError> {
        self.host_of(room, token).await?;
        let (listed, truncated) = self.newest_checkins(room).await?;
        let rows = listed.len();
        let now = Utc::now();
        Ok((
            RoomCheckins {
                room: room.clone(),
                checkins: listed.iter().map(|c| past_checkin(c, now)).collect(),
                truncated,
            },
            rows,
        ))
    }

    /// The attendance table of `room` for its host: its newest check-ins as columns (see
    /// [`attendance_table`] for the bounds), a row per name. Two reads: the check-ins, then the
    /// attendance of them all in one query. Returns the store rows it read too, for the read
    /// budget.
    pub async fn attendance_table(
        &self,
        room: &ChannelId,
        token: Option<&str>,
    ) -> Result<(AttendanceTable, usize), ApiError> {
        self.host_of(room, token).await?;
        let (listed, older) = self.newest_checkins(room).await?;
        let marks = match listed.first() {
            None => Vec::new(),
            // One more than the table may hold, so a cut shows (see `attendance_table`).
            Some(oldest) => self
                .rooms
                .room_attendance(room, oldest.id, MAX_ATTENDANCE_MARKS + 1)
                .await
                .map_err(store_failed("reading a room's attendance"))?,
        };
        let read = listed.len() + marks.len();
        Ok((
            attendance_table(room, listed, &marks, older, Utc::now()),
            read,
        ))
    }

    /// The newest [`MAX_ROOM_CHECKINS`] check-ins of `room`, oldest first, and whether it has
    /// older ones.
    async fn newest_checkins(
        &self,
        room: &ChannelId,
    ) -> Result<(Vec<CheckinSummary>, bool), ApiError> {
        let mut listed = self
            .rooms
            .room_checkins(room, MAX_ROOM_CHECKINS + 1)
            .await
            .map_err(store_failed("listing a room's check-ins"))?;
        let older = listed.len() > MAX_ROOM_CHECKINS;
        if older {
            listed.remove(0);
        }
        Ok((listed, older))
    }

    /// Judges `guess` within the limits on wrong codes: the cluster's, kept in Redis, when there
    /// is a bus that answers (a wrong code is reserved before the hub compares the code, and
    /// given back when it was right, so guesses racing on several instances cannot slip past a
    /// limit); otherwise this instance's, kept by the hub.
    async fn judged(&self, mut guess: Guess) -> Result<GuessOutcome, ApiError> {
        let Some(shared) = &self.shared_limits else {
            return self.ask_hub(guess).await;
        };
        let (id, client, limits) = (guess.checkin, client_key(guess.client), self.guess_limits);
        let verdict = shared
            .reserve_wrong_code(
                id,
                client,
                limits.per_client,
                limits.burst,
                limits.refill,
                WRONG_CODES_KEPT,
            )
            .await;
        let tries_left = match verdict {
            None => return self.ask_hub(guess).await,
            Some(WrongCodeVerdict::TooManyFromClient { limit }) => {
                return Ok(GuessOutcome::TooManyFromClient { limit });
            }
            Some(WrongCodeVerdict::Throttled { retry_after }) => {
                return Ok(GuessOutcome::Throttled { retry_after });
            }
            Some(WrongCodeVerdict::Compare { tries_left }) => tries_left,
        };
        guess.limits_applied = true;
        match self.ask_hub(guess).await? {
            GuessOutcome::Wrong { .. } => Ok(GuessOutcome::Wrong { tries_left }),
            other => {
                // Right, or not compared at all: no wrong code was given.
                shared.right_code(id, client, limits.refill).await;
                Ok(other)
            }
        }
    }

    /// `client` types `code` for check-in `id` under `name`. Every guess spends one token of
    /// the client's `writes` budget. Checking in twice is harmless (the first time is kept).
    /// Each wrong code is `wrong_code` and counts against the client (by address, whatever the
    /// name) and against the check-in's budget of wrong codes (see [`crate::hub`]): a client
    /// past its limit is `too_many_attempts`, and while the check-in's budget is spent guesses
    /// are `rate_limited` without being compared. A connection checks in only to its own
    /// room's check-ins (`from_room`); another room's is `not_found`, as if it did not exist.
    /// A check-in this instance's hub does not run but the store says is open (opened through
    /// another instance) is handed to the hub first, so the code on the host's screen works on
    /// every instance. Returns the name as checked.
    pub async fn attend(
        &self,
        id: i64,
        name: &str,
        code: &str,
        from_room: Option<&ChannelId>,
        client: IpAddr,
    ) -> Result<String, AttendError> {
        if let Err(refused) = self.budget.writes.take_for(Some(client), 1, None).await {
            let wait = Duration::from_secs(refused.retry_after_secs.unwrap_or(1));
            return Err(AttendError::rate_limited(
                "too many comments and check-in guesses from your address",
                wait,
            ));
        }
        let name = validate_author(name)?;
        let guess = || Guess {
            checkin: id,
            from_room: from_room.cloned(),
            client,
            code: code.to_owned(),
            limits_applied: false,
        };
        let mut outcome = self.judged(guess()).await?;
        if outcome == GuessOutcome::NotOpen {
            let record = self.open_in_store(id, from_room).await?;
            log::info!(
                "room {}: check-in {id} was opened elsewhere; its codes start here",
                record.room
            );
            self.ask_hub(StartCheckin { record }).await?;
            outcome = self.judged(guess()).await?;
        }
        let room = match outcome {
            GuessOutcome::Right { room } => room,
            GuessOutcome::Wrong { tries_left } => {
                return Err(ApiError::new(
                    ErrorCode::WrongCode,
                    format!(
                        "that is not the code on the host's screen ({tries_left} wrong codes \
                         left for your address)"
                    ),
                )
                .into());
            }
            GuessOutcome::TooManyFromClient { limit } => {
                return Err(ApiError::new(
                    ErrorCode::TooManyAttempts,
                    format!(
                        "{limit} wrong codes came from your address: it cannot check in to this \
                         one; ask the host"
                    ),
                )
                .into());
            }
            GuessOutcome::Throttled { retry_after } => {
                return Err(AttendError::rate_limited(
                    "too many wrong codes were typed in this check-in",
                    retry_after,
                ));
            }
            // Open in the store a moment ago, yet not now: its time just ran out.
            GuessOutcome::NotOpen => return Err(closed(id).into()),
        };
        let at = Utc::now();
        let recorded = self
            .rooms
            .record_attendance(id, &name, at)
            .await
            .map_err(store_failed("recording attendance"))?;
        if recorded == AttendanceOutcome::Closed {
            // Another instance closed it between the hub's judgement and this write.
            return Err(closed(id).into());
        }
        if recorded.is_new() {
            LiveEvent::Attended {
                room: room.clone(),
                checkin: id,
                name: name.clone(),
                at,
            }
            .tell(&self.fanout);
            self.hub.do_send(Attended {
                room,
                checkin: id,
                name: name.clone(),
                at,
            });
        }
        Ok(name)
    }

    /// Sends `message` to the hub; a hub that is gone is an internal error (logged).
    async fn ask_hub<M>(&self, message: M) -> Result<M::Result, ApiError>
    where
        M: actix::Message + Send + 'static,
        M::Result: Send,
        LiveHub: actix::Handler<M>,
    {
        self.hub.send(message).await.map_err(|e| {
            log::error!("asking the hub about a check-in failed: {e}");
            ApiError::internal()
        })
    }

    /// Check-in `id` from the store, when it is open (in `from_room`) although the hub does not
    /// run it: opened through another instance. Otherwise why not: `not_found` or
    /// `checkin_closed`.
    async fn open_in_store(
        &self,
        id: i64,
        from_room: Option<&ChannelId>,
    ) -> Result<CheckinRecord, ApiError> {
        let checkin = self.checkin(id).await?;
        if from_room.is_some_and(|room| *room != checkin.room) {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no check-in {id} in this room"),
            ));
        }
        if checkin.closed || Utc::now() >= checkin.closes_at {
            return Err(closed_at(id, checkin.closes_at));
        }
        Ok(checkin)
    }

    /// Hands `room`'s open check-in to the hub if the store has one (opened through another
    /// instance): the hub tells the room's connections, hosts get its code. Called by the first
    /// connection to join a room the hub holds nothing of; a failed read is logged, and the room
    /// learns of the check-in with the first guess for it.
    pub async fn discover_checkin(&self, room: &ChannelId) {
        match self.rooms.current_checkin(room, Utc::now()).await {
            Ok(Some(record)) => {
                log::info!(
                    "room {room}: check-in {} was opened elsewhere; its codes start here",
                    record.id
                );
                // A hub that is gone was logged by the caller's join already.
                let _ = self.hub.send(StartCheckin { record }).await;
            }
            Ok(None) => {}
            Err(e) => log::error!("room {room}: looking for an open check-in failed: {e}"),
        }
    }

    /// The chat box (the last [`HISTORY_ITEMS`]), or with `since` exactly what was missed after
    /// it when that is at most [`MAX_RECOVERED_ITEMS`]. Served from memory when it holds them.
    pub async fn history(&self, room: &ChannelId, since: Option<i64>) -> Result<History, ApiError> {
        let Some(since) = since else {
            return Ok(History {
                items: self.latest(room, HISTORY_ITEMS).await?,
                recovered: None,
            });
        };
        if let Some(items) = self.recent.after(room, since, MAX_RECOVERED_ITEMS + 1) {
            return Ok(History {
                items,
                recovered: Some(true),
            });
        }
        let missed = self
            .comments
            .after(room, since, MAX_RECOVERED_ITEMS + 1)
            .await
            .map_err(store_failed("reading missed comments"))?;
        if missed.len() <= MAX_RECOVERED_ITEMS {
            return Ok(History {
                items: missed,
                recovered: Some(true),
            });
        }
        Ok(History {
            items: self.latest(room, HISTORY_ITEMS).await?,
            recovered: Some(false),
        })
    }

    /// The newest `limit` comments of `room`, oldest first: from memory when it keeps that
    /// many; a room not kept yet is loaded into it once.
    pub async fn latest(&self, room: &ChannelId, limit: usize) -> Result<Vec<Danmaku>, ApiError> {
        let failed = store_failed("reading the history");
        if limit > self.recent.capacity() {
            return self.comments.latest(room, limit).await.map_err(failed);
        }
        if let Some(items) = self.recent.latest(room, limit) {
            return Ok(items);
        }
        if let Some(ready) = self.recent.begin_load(room) {
            ready.await;
        }
        let mut rows = self
            .comments
            .latest(room, self.recent.capacity())
            .await
            .map_err(failed)?;
        self.recent.finish_load(room, rows.clone());
        rows.drain(..rows.len().saturating_sub(limit));
        Ok(rows)
    }

    /// The comments of `room` after id `after`, oldest first, at most `limit`: from memory when
    /// it holds them all.
    pub async fn after(
        &self,
        room: &ChannelId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Danmaku>, ApiError> {
        if let Some(items) = self.recent.after(room, after, limit) {
            return Ok(items);
        }
        self.comments
            .after(room, after, limit)
            .await
            .map_err(store_failed("reading the history"))
    }

    /// Stores a comment of `author` in `room`; returns once it is committed. The room hears of
    /// it from the store (see `service_kit::fanout`), in commit order, not from here.
    pub async fn send(&self, room: &ChannelId, draft: DraftDanmaku) -> Result<Danmaku, ApiError> {
        let new = draft.validate(TimeRule::Absent)?;
        self.moderation.check(room, &new.author, &new.text).await?;
        self.comments
            .append(room, new)
            .await
            .map_err(store_failed("storing a comment"))
    }

    /// Check-in `id`, or `not_found`.
    async fn checkin(&self, id: i64) -> Result<CheckinRecord, ApiError> {
        self.rooms
            .checkin(id)
            .await
            .map_err(store_failed("reading a check-in"))?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no check-in {id}")))
    }
}

/// Who moderates a live room: the admin token, else the room's host token.
pub struct HostOrAdmin(pub Arc<LiveRooms>);

impl Authorize for HostOrAdmin {
    fn moderator<'a>(
        &'a self,
        channel: &'a ChannelId,
        bearer: Option<&'a str>,
    ) -> LocalBoxFuture<'a, Result<Moderator, ApiError>> {
        Box::pin(async move {
            if self.0.moderation.is_admin(bearer) {
                return Ok(Moderator::Admin);
            }
            self.0
                .host_of(channel, bearer)
                .await
                .map(|_| Moderator::Host)
        })
    }
}

/// A fresh random room id.
fn random_room_id() -> String {
    let mut rng = rand::rng();
    (0..ROOM_ID_CHARS)
        .map(|_| ROOM_ID_ALPHABET[rng.random_range(0..ROOM_ID_ALPHABET.len())] as char)
        .collect()
}

/// The attendance of a check-in as CSV: `name,checked_in_at`, one row per attendee in the order
/// they checked in.
pub fn attendance_csv(attendance: &[Attendance]) -> Result<Vec<u8>, ApiError> {
    let failed = |e: csv::Error| {
        log::error!("writing CSV failed: {e}");
        ApiError::internal()
    };
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(["name", "checked_in_at"])
        .map_err(failed)?;
    for row in attendance {
        out.write_record([spreadsheet_safe(&row.name), rfc3339(row.at)])
            .map_err(failed)?;
    }
    out.into_inner().map_err(|e| failed(e.into_error().into()))
}

/// A check-in as its host's list shows it at `now`: one whose time is up counts as closed even
/// before its close ran (as in `GET /api/checkins/{id}`).
fn past_checkin(c: &CheckinSummary, now: chrono::DateTime<Utc>) -> PastCheckin {
    PastCheckin {
        id: c.id,
        opened_at: c.opened_at,
        closes_at: c.closes_at,
        interval_secs: c.interval_secs,
        closed: c.closed || now >= c.closes_at,
        attended: c.attended,
    }
}

/// The attendance table of `room` from its check-ins (`listed`, oldest first) and the names
/// present at them (`marks`, newest check-in first, as [`RoomStore::room_attendance`] reads
/// them). Columns are taken newest first while the table stays within
/// [`MAX_ATTENDANCE_MARKS`] names present and [`MAX_ATTENDANCE_CELLS`] cells (names times
/// check-ins); the older ones are left out and `truncated` says so (as it does when `older`:
/// the room had check-ins before `listed`). Marks of a check-in opened after `listed` was read
/// are ignored. More than [`MAX_ATTENDANCE_MARKS`] marks means the store's limit cut them, in
/// the oldest check-in read: it and the older ones are left out, so no column is ever partial. Rows are sorted by code point, names
/// compared as stored ("Ann" and "ann" are two rows).
pub fn attendance_table(
    room: &ChannelId,
    listed: Vec<CheckinSummary>,
    marks: &[RoomAttendance],
    older: bool,
    now: chrono::DateTime<Utc>,
) -> AttendanceTable {
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    let mut by_checkin: HashMap<i64, Vec<&str>> = HashMap::new();
    for mark in marks {
        by_checkin.entry(mark.checkin).or_default().push(&mark.name);
    }
    let mut names: BTreeSet<&str> = BTreeSet::new();
    let (mut taken, mut marks_taken) = (Vec::new(), 0);
    let mut truncated = older;
    let cut = marks
        .last()
        .filter(|_| marks.len() > MAX_ATTENDANCE_MARKS)
        .map(|mark| mark.checkin);
    for checkin in listed.iter().rev() {
        if cut.is_some_and(|cut| checkin.id <= cut) {
            truncated = true;
            break;
        }
        let present = by_checkin.get(&checkin.id).map_or(&[][..], Vec::as_slice);
        let new_names = present.iter().filter(|n| !names.contains(*n)).count();
        let cells = (names.len() + new_names).saturating_mul(taken.len() + 1);
        if marks_taken + present.len() > MAX_ATTENDANCE_MARKS || cells > MAX_ATTENDANCE_CELLS {
            truncated = true;
            break;
        }
        marks_taken += present.len();
        names.extend(present.iter().copied());
        taken.push((checkin, present));
    }
    taken.reverse();
    let mut rows: BTreeMap<&str, Vec<bool>> = names
        .into_iter()
        .map(|name| (name, vec![false; taken.len()]))
        .collect();
    for (column, (_, present)) in taken.iter().enumerate() {
        for name in *present {
            if let Some(row) = rows.get_mut(name) {
                row[column] = true;
            }
        }
    }
    AttendanceTable {
        room: room.clone(),
        checkins: taken
            .iter()
            .map(|(checkin, present)| PastCheckin {
                attended: present.len(),
                ..past_checkin(checkin, now)
            })
            .collect(),
        rows: rows
            .into_iter()
            .map(|(name, present)| AttendanceRow {
                name: name.to_owned(),
                total: present.iter().filter(|p| **p).count(),
                present,
            })
            .collect(),
        truncated,
    }
}

/// A room's attendance table as CSV: `name`, one column per check-in headed by its opening time
/// (RFC 3339, UTC), then `total`; a row per name in the table's order, `1` where the name
/// checked in and `0` where it did not (numbers, so a spreadsheet sums them), names defused as in
/// [`attendance_csv`].
pub fn attendance_table_csv(table: &AttendanceTable) -> Result<Vec<u8>, ApiError> {
    let failed = |e: csv::Error| {
        log::error!("writing CSV failed: {e}");
        ApiError::internal()
    };
    let mut out = csv::Writer::from_writer(Vec::new());
    let header = std::iter::once("name".to_owned())
        .chain(table.checkins.iter().map(|c| rfc3339(c.opened_at)))
        .chain(std::iter::once("total".to_owned()));
    out.write_record(header).map_err(failed)?;
    for row in &table.rows {
        let record = std::iter::once(spreadsheet_safe(&row.name))
            .chain(
                row.present
                    .iter()
                    .map(|p| if *p { "1" } else { "0" }.to_owned()),
            )
            .chain(std::iter::once(row.total.to_string()));
        out.write_record(record).map_err(failed)?;
    }
    out.into_inner().map_err(|e| failed(e.into_error().into()))
}

/// A name as a spreadsheet cell: one starting with `=`, `+`, `-` or `@` would be read as a
/// formula, so it gets a leading apostrophe.
fn spreadsheet_safe(name: &str) -> String {
    if name.starts_with(['=', '+', '-', '@']) {
        format!("'{name}")
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(id: i64, minute: i64) -> CheckinSummary {
        let opened_at = chrono::DateTime::UNIX_EPOCH + chrono::Duration::minutes(minute);
        CheckinSummary {
            id,
            interval_secs: 5,
            opened_at,
            closes_at: opened_at + chrono::Duration::seconds(30),
            closed: true,
            attended: 0,
        }
    }

    fn mark(checkin: i64, name: &str) -> RoomAttendance {
        RoomAttendance {
            checkin,
            name: name.to_owned(),
        }
    }

    fn table(listed: Vec<CheckinSummary>, marks: &[RoomAttendance]) -> AttendanceTable {
        attendance_table(
            &ChannelId::parse("r").unwrap(),
            listed,
            marks,
            false,
            Utc::now(),
        )
    }

    #[test]
    fn the_table_has_a_row_per_name_by_code_point_and_a_column_per_checkin() {
        let t = table(
            vec![summary(1, 0), summary(2, 10), summary(3, 20)],
            &[
                mark(3, "ann"),
                mark(2, "bob"),
                mark(2, "Ann"),
                mark(1, "ann"),
                mark(1, "bob"),
            ],
        );
        let rows: Vec<(&str, Vec<bool>, usize)> = t
            .rows
            .iter()
            .map(|r| (r.name.as_str(), r.present.clone(), r.total))
            .collect();
        assert_eq!(
            rows,
            [
                ("Ann", vec![false, true, false], 1),
                ("ann", vec![true, false, true], 2),
                ("bob", vec![true, true, false], 2),
            ]
        );
        let counts: Vec<(i64, usize)> = t.checkins.iter().map(|c| (c.id, c.attended)).collect();
        assert_eq!(counts, [(1, 2), (2, 2), (3, 1)]);
        assert!(!t.truncated);
        let csv = String::from_utf8(attendance_table_csv(&t).unwrap()).unwrap();
        assert_eq!(
            csv,
            "name,1970-01-01T00:00:00.000Z,1970-01-01T00:10:00.000Z,1970-01-01T00:20:00.000Z,total\n\
             Ann,0,1,0,1\nann,1,0,1,2\nbob,1,1,0,2\n"
        );
    }

    #[test]
    fn older_checkins_past_the_marks_bound_are_left_out_whole() {
        let names: Vec<String> = (0..40_000).map(|n| format!("s{n}")).collect();
        let marks: Vec<RoomAttendance> = [3, 2, 1]
            .into_iter()
            .flat_map(|id| names.iter().map(move |n| mark(id, n)))
            .collect();
        let t = table(vec![summary(1, 0), summary(2, 10), summary(3, 20)], &marks);
        assert_eq!(t.checkins.iter().map(|c| c.id).collect::<Vec<_>>(), [2, 3]);
        assert!(t.truncated);
        assert_eq!(t.rows.len(), 40_000);
        assert!(t.rows.iter().all(|r| r.total == 2));
    }

    #[test]
    fn a_cut_by_the_stores_limit_drops_the_checkin_it_fell_in() {
        // As the store answers a limit of MAX + 1: check-in 2 whole, check-in 1 cut short.
        let mut marks: Vec<RoomAttendance> =
            (0..10).map(|n| mark(2, &format!("late{n}"))).collect();
        marks.extend((0..=MAX_ATTENDANCE_MARKS - 10).map(|n| mark(1, &format!("s{n}"))));
        // A check-in opened after the list was read is ignored.
        marks.insert(0, mark(9, "new"));
        let t = table(vec![summary(1, 0), summary(2, 10)], &marks);
        assert_eq!(t.checkins.iter().map(|c| c.id).collect::<Vec<_>>(), [2]);
        assert!(t.truncated);
        assert_eq!(t.rows.len(), 10);
    }

    #[test]
    fn older_checkins_past_the_cells_bound_are_left_out() {
        let mut marks: Vec<RoomAttendance> = (0..MAX_ATTENDANCE_MARKS)
            .map(|n| mark(10, &format!("s{n}")))
            .collect();
        marks.push(mark(1, "s0"));
        let listed = (1..=10).map(|id| summary(id, id)).collect();
        let t = table(listed, &marks);
        // 100,000 names: five columns are 500,000 cells, a sixth would pass the bound.
        assert_eq!(
            t.checkins.iter().map(|c| c.id).collect::<Vec<_>>(),
            [6, 7, 8, 9, 10]
        );
        assert!(t.truncated);
    }

    #[test]
    fn formula_like_names_are_defused_for_spreadsheets() {
        assert_eq!(spreadsheet_safe("=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(spreadsheet_safe("@cmd"), "'@cmd");
        assert_eq!(spreadsheet_safe("ann"), "ann");
    }

    #[test]
    fn room_ids_are_valid_channels_from_the_alphabet() {
        for _ in 0..100 {
            let id = random_room_id();
            assert_eq!(id.len(), ROOM_ID_CHARS);
            assert!(id.bytes().all(|b| ROOM_ID_ALPHABET.contains(&b)), "{id}");
            assert!(ChannelId::parse(&id).is_ok());
        }
    }
}
