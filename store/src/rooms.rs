//! Live rooms and their check-ins: what the live service keeps besides comments.
//!
//! A room created through the API has a host, who proves it with a token; the store keeps only
//! the token's SHA-256 digest, so a copy of the database does not hand out host rights. A
//! check-in belongs to a room, is open from `opened_at` to `closes_at`, and collects one
//! attendance per name; everything survives a restart.
//!
//! Each check-in has a [`CheckinSecret`], 32 random bytes made when it opens, from which every
//! instance of the live service derives the same codes (see `ws-stream`'s `codes`). It stays in
//! the database: it is kept out of `Debug` output, and no API response carries it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;
use shared_model::comment::ChannelId;

/// A room created through the API.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomRecord {
    /// The room's id.
    pub room: ChannelId,
    /// Its title, if the host gave one.
    pub title: Option<String>,
    /// SHA-256 of the host token.
    pub token_digest: [u8; 32],
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// Bytes in a [`CheckinSecret`].
pub const CHECKIN_SECRET_BYTES: usize = 32;

/// The secret a check-in's codes are derived from: [`CHECKIN_SECRET_BYTES`] bytes from a
/// cryptographically secure generator (`rand`'s thread-local generator: ChaCha, seeded from the
/// operating system). Anyone holding it can compute every code, so its `Debug` shows nothing of
/// it and it has no `Display` or serde form.
#[derive(Clone, PartialEq, Eq)]
pub struct CheckinSecret([u8; CHECKIN_SECRET_BYTES]);

impl CheckinSecret {
    /// A fresh random secret.
    pub fn generate() -> Self {
        use rand::Rng;
        Self(rand::rng().random())
    }

    /// The secret made of `bytes` (as stored).
    pub fn from_bytes(bytes: [u8; CHECKIN_SECRET_BYTES]) -> Self {
        Self(bytes)
    }

    /// The secret from stored bytes, which must be [`CHECKIN_SECRET_BYTES`] long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// The bytes: to derive codes from, or to store.
    pub fn expose(&self) -> &[u8; CHECKIN_SECRET_BYTES] {
        &self.0
    }
}

impl std::fmt::Debug for CheckinSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckinSecret(<redacted>)")
    }
}

/// A check-in of a room.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckinRecord {
    /// Increasing across all rooms, assigned by the store.
    pub id: i64,
    /// The room it belongs to.
    pub room: ChannelId,
    /// Seconds between two codes (2-60).
    pub interval_secs: u32,
    /// When it opened.
    pub opened_at: DateTime<Utc>,
    /// When it closes (or closed).
    pub closes_at: DateTime<Utc>,
    /// Whether it has been closed (its end was reached and the host was told).
    pub closed: bool,
    /// What its codes are derived from; never shown (see [`CheckinSecret`]).
    pub secret: CheckinSecret,
}

/// What [`RoomStore::open_checkin`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckinOpening {
    /// The new check-in.
    Opened(CheckinRecord),
    /// Nothing: this check-in of the room is still open.
    AlreadyOpen(CheckinRecord),
}

impl CheckinOpening {
    /// The new check-in, if one was opened.
    pub fn opened(self) -> Option<CheckinRecord> {
        match self {
            Self::Opened(record) => Some(record),
            Self::AlreadyOpen(_) => None,
        }
    }
}

/// What [`RoomStore::record_attendance`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttendanceOutcome {
    /// The name is now on the list.
    New,
    /// The name was on the list already; the first time is kept.
    Again,
    /// The check-in is closed: nothing was recorded (its count is final).
    Closed,
}

impl AttendanceOutcome {
    /// Whether the name was added.
    pub fn is_new(self) -> bool {
        self == Self::New
    }
}

/// One name that checked in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attendance {
    /// The name, as checked like an author.
    pub name: String,
    /// When it first checked in.
    pub at: DateTime<Utc>,
}

/// A check-in of a room as its host's list shows it: when, and how many attended. Unlike
/// [`CheckinRecord`] it has no secret, so it can be handed around freely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckinSummary {
    /// The check-in's id.
    pub id: i64,
    /// Seconds between two codes.
    pub interval_secs: u32,
    /// When it opened.
    pub opened_at: DateTime<Utc>,
    /// When it closes (or closed).
    pub closes_at: DateTime<Utc>,
    /// Whether it has been closed (see [`CheckinRecord::closed`]).
    pub closed: bool,
    /// How many names attended: the count its first close kept, else (still open, or closed
    /// before counts were kept) the names on its list now.
    pub attended: usize,
}

/// One name present at one check-in of a room (see [`RoomStore::room_attendance`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomAttendance {
    /// The check-in.
    pub checkin: i64,
    /// The name, as stored.
    pub name: String,
}

/// Rooms and check-ins. Every write returns once committed.
#[async_trait]
pub trait RoomStore: Send + Sync + 'static {
    /// Creates `room`. `Ok(None)` when a room of that id already exists.
    async fn create_room(
        &self,
        room: &ChannelId,
        title: Option<String>,
        token_digest: [u8; 32],
    ) -> Result<Option<RoomRecord>, StoreError>;

    /// The room, if it was created through the API.
    async fn room(&self, room: &ChannelId) -> Result<Option<RoomRecord>, StoreError>;

    /// Opens a check-in in `room` (which must exist), unless one is still open there (not
    /// closed, and closing after `opened_at`): a room has one check-in at a time. The check and
    /// the insert are one transaction, so two hosts opening at once cannot both succeed.
    async fn open_checkin(
        &self,
        room: &ChannelId,
        interval_secs: u32,
        opened_at: DateTime<Utc>,
        closes_at: DateTime<Utc>,
    ) -> Result<CheckinOpening, StoreError>;

    /// The check-in, if it exists.
    async fn checkin(&self, id: i64) -> Result<Option<CheckinRecord>, StoreError>;

    /// Every check-in not yet closed, oldest first (to resume them after a restart).
    async fn unclosed_checkins(&self) -> Result<Vec<CheckinRecord>, StoreError>;

    /// The check-in of `room` open at `at` (not closed, closing after `at`), if any: how an
    /// instance learns of one opened through another.
    async fn current_checkin(
        &self,
        room: &ChannelId,
        at: DateTime<Utc>,
    ) -> Result<Option<CheckinRecord>, StoreError>;

    /// Marks the check-in closed; returns how many names attended. The first close counts them
    /// and keeps the count, and attendance stops there ([`AttendanceOutcome::Closed`]), so every
    /// later close (by any instance) returns the same number. An id never opened counts 0.
    async fn close_checkin(&self, id: i64) -> Result<usize, StoreError>;

    /// Records that `name` checked in at `at`, unless it already did (the first time is kept)
    /// or the check-in is closed.
    async fn record_attendance(
        &self,
        id: i64,
        name: &str,
        at: DateTime<Utc>,
    ) -> Result<AttendanceOutcome, StoreError>;

    /// Everyone who checked in, in the order they did.
    async fn attendance(&self, id: i64) -> Result<Vec<Attendance>, StoreError>;

    /// The newest `limit` check-ins of `room`, oldest first, each with how many attended (see
    /// [`CheckinSummary::attended`]). A room with none, or never created, has an empty list.
    async fn room_checkins(
        &self,
        room: &ChannelId,
        limit: usize,
    ) -> Result<Vec<CheckinSummary>, StoreError>;

    /// Who attended the check-ins of `room` from id `from_checkin` on, in one query: newest
    /// check-in first, each one's names in the order they checked in, at most `limit` rows. A
    /// cut falls in the oldest check-in returned, so every other is whole.
    async fn room_attendance(
        &self,
        room: &ChannelId,
        from_checkin: i64,
        limit: usize,
    ) -> Result<Vec<RoomAttendance>, StoreError>;

    /// Records that `room`'s stream started at `at` (replacing an earlier mark). The room must
    /// exist ([`StoreError::Database`] otherwise, nothing stored).
    async fn mark_stream_start(
        &self,
        room: &ChannelId,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// When `room`'s stream started, if its host marked it.
    async fn stream_start(&self, room: &ChannelId) -> Result<Option<DateTime<Utc>>, StoreError>;
}
