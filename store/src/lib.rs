//! Where danmaku keeps its comments, rooms, check-ins and attendance: the traits the services
//! program against, and their backends.
//!
//! - this file: [`Store`], the comments of every channel, [`StoreError`], and [`Backend`], both
//!   traits in one, which is what a service opens.
//! - [`rooms`]: [`RoomStore`], live rooms, host tokens, check-ins and attendance.
//! - [`moderation`]: [`ModerationStore`], soft deletes, mutes, banned words and the log of them
//!   (`sqlite_moderation` and `postgres_moderation` implement it).
//! - `sqlite`: [`SqliteStore`], the embedded default (one file, a writer thread with group commit,
//!   reader threads, the schema and its migrations), implementing both traits.
//! - `sqlite_rooms`: the [`RoomStore`] half of [`SqliteStore`].
//! - `postgres`: [`PgStore`], the shared database for running several instances (a pool, a
//!   writer task with group commit, ids from a per-channel counter row so that they mean order
//!   across writers, versioned migrations safe to run from several instances at once), and
//!   [`redact_url`], for showing its URL.
//! - `postgres_rooms`: the [`RoomStore`] half of [`PgStore`].
//! - [`copy`]: copying a SQLite store into a PostgreSQL database (ids, import keys, rooms,
//!   check-ins and attendance kept), idempotent and resumable: what `danmaku copy-store` runs.
//! - `testing` (feature `testing`): `testing::postgres()`, a fresh PostgreSQL database per test.
//!
//! The behaviour both backends share is tested once, against both, in `tests/conformance.rs`;
//! each backend's own file tests only what is its own (SQLite's faults and file format,
//! PostgreSQL's deadlines and URLs).
//!
//! The [`Store`] trait is small on purpose: the four queries every service needs (append; items
//! after an id; the last N; items in a video-time window), the newest id, and an idempotent
//! import. Services program against the traits only, whichever backend runs.
//!
//! The contract every implementation keeps: [`Store::append`] returns only after the comment is
//! committed to durable storage (an acknowledged comment survives `kill -9` and power loss), ids
//! increase within a channel and are never reused, no call blocks the caller's thread, and every
//! call answers within the store's deadline: a store that cannot answer in time (a stalled disk, a
//! lock held by another process, a writer that is restarting) fails the call with
//! [`StoreError::Unavailable`] rather than keep the caller waiting. Services rely on this and put
//! no deadline of their own around store calls.

pub mod copy;
pub mod moderation;
mod postgres;
mod postgres_moderation;
mod postgres_rooms;
pub mod rooms;
mod sqlite;
mod sqlite_moderation;
mod sqlite_rooms;
#[cfg(feature = "testing")]
pub mod testing;

use async_trait::async_trait;

pub use moderation::{ModerationAction, ModerationEntry, ModerationStore, Mute};
pub use postgres::{PgOptions, PgStore, redact_url};
pub use rooms::{
    Attendance, AttendanceOutcome, CHECKIN_SECRET_BYTES, CheckinOpening, CheckinRecord,
    CheckinSecret, CheckinSummary, RoomAttendance, RoomRecord, RoomStore,
};
#[cfg(any(test, feature = "testing"))]
pub use sqlite::Faults;
pub use sqlite::{SqliteOptions, SqliteStore};

pub use shared_model::imports::{ImportOutcome, ImportedDanmaku};
use shared_model::{ApiError, ChannelId, Danmaku, ErrorCode, NewDanmaku};

/// The three parts of a backend: what a service opens and builds on ([`Store`] for comments,
/// [`RoomStore`] for rooms and check-ins, [`ModerationStore`] for deletes, mutes, banned words
/// and their log). Every type that implements all three is one.
pub trait Backend: Store + RoomStore + ModerationStore {}

impl<T: Store + RoomStore + ModerationStore> Backend for T {}

/// Why the store could not do what was asked. Every variant is a server fault: clients see
/// `unavailable` (503, try again) for [`StoreError::Unavailable`] and [`StoreError::Closed`],
/// `internal` (500) for the rest (see [`StoreError::client_error`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed; the text is for the log.
    #[error("database error: {0}")]
    Database(String),
    /// The database cannot serve now, and may again later: it did not answer within the deadline,
    /// its disk failed or is full, it is locked by another process, or its writer is restarting.
    /// The text is for the log.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database file or its folder could not be opened or created.
    #[error("cannot open the database at {path}: {reason}")]
    Open {
        /// The path as configured.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The store has been shut down.
    #[error("the store is shut down")]
    Closed,
}

impl StoreError {
    /// What a client is told: `unavailable` when trying again later may work, `internal`
    /// otherwise. The cause stays out of it (log the error itself).
    pub fn client_error(&self) -> ApiError {
        match self {
            Self::Unavailable(_) | Self::Closed => ApiError::new(
                ErrorCode::Unavailable,
                "the database is not answering; try again shortly",
            ),
            Self::Database(_) | Self::Open { .. } => ApiError::internal(),
        }
    }
}

/// What a listener hears of, right after its commit.
#[derive(Debug, Clone, Copy)]
pub enum Committed<'a> {
    /// A comment was appended.
    Comment(&'a Danmaku),
    /// An import took the ids `first..=last` of `channel` (dense: nothing else took an id in
    /// between). Its comments are history, not news: a fan-out pushes none of them, but it learns
    /// that those ids were not lost on the way.
    Imported {
        /// The channel.
        channel: &'a ChannelId,
        /// The first id the import took.
        first: i64,
        /// The last.
        last: i64,
    },
    /// A moderator deleted comment `id` of `channel` (see [`moderation`]): every screen should
    /// drop it.
    Deleted {
        /// The channel.
        channel: &'a ChannelId,
        /// The comment's id.
        id: i64,
    },
}

/// Called with every appended comment and every import's ids right after their commit, on the
/// store's own thread: keep it short and non-blocking (hand the item to an actor or a channel).
/// Comments come in commit order (so in id order within a channel); an import, which commits on
/// its own, may be heard a moment before or after appends that committed next to it.
pub type AppendListener = Box<dyn Fn(Committed<'_>) + Send + Sync>;

/// The two numbers a backend's density query multiplies and divides a comment's time by:
/// `time * buckets / duration` is its bucket (multiplying first keeps times at a bucket's edge
/// exact). A timeline of no length (`duration <= 0`) puts everything at 0 in the first bucket.
pub(crate) fn density_scale(duration: f64, buckets: usize) -> (f64, f64) {
    if duration > 0.0 {
        // Buckets are few (the route allows 1,000), so the conversion is exact.
        (buckets.max(1) as f64, duration)
    } else {
        (0.0, 1.0)
    }
}

/// What [`Store::density`] counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Density {
    /// The timeline counted, `[0, duration]` seconds: as asked, or the latest comment's time.
    pub duration: f64,
    /// Comments per bucket, oldest part of the timeline first; as many as buckets were asked.
    pub counts: Vec<u64>,
}

impl Density {
    /// Folds `(bucket, count)` rows of the database into `buckets` counts: a bucket number of
    /// `buckets` or more (a comment exactly at the end, or rounding at the very edge) counts in
    /// the last bucket, so that the sum is every comment in `[0, duration]`.
    pub fn from_groups(
        duration: f64,
        buckets: usize,
        groups: impl IntoIterator<Item = (i64, i64)>,
    ) -> Self {
        let buckets = buckets.max(1);
        let mut counts = vec![0u64; buckets];
        for (bucket, count) in groups {
            let at = usize::try_from(bucket.max(0)).unwrap_or(usize::MAX);
            counts[at.min(buckets - 1)] += u64::try_from(count).unwrap_or(0);
        }
        Self { duration, counts }
    }
}

/// Durable, ordered storage of comments per channel.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores `new` in `channel` with the next id and the current time; returns once committed.
    async fn append(&self, channel: &ChannelId, new: NewDanmaku) -> Result<Danmaku, StoreError>;

    /// Comments with `id > after`, oldest first, at most `limit`; deleted ones left out (as
    /// every read below leaves them out).
    async fn after(
        &self,
        channel: &ChannelId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Danmaku>, StoreError>;

    /// Like [`Store::after`], deleted comments included (see [`moderation`]): for recognising what
    /// a channel holds (an archive imported again must not bring a deleted comment back), never
    /// for showing.
    async fn after_including_deleted(
        &self,
        channel: &ChannelId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Danmaku>, StoreError>;

    /// The newest `limit` comments, oldest first.
    async fn latest(&self, channel: &ChannelId, limit: usize) -> Result<Vec<Danmaku>, StoreError>;

    /// Comments with `from <= time < to`, ordered by time then id, at most `limit`.
    async fn time_window(
        &self,
        channel: &ChannelId,
        from: f64,
        to: f64,
        limit: usize,
    ) -> Result<Vec<Danmaku>, StoreError>;

    /// How many visible comments of `channel` fall in each of `buckets` equal slices of the
    /// timeline `[0, duration]` (the video's "density"), counted by the database in one
    /// `GROUP BY` over the `(channel, time)` index, so that a video of a million comments answers
    /// with `buckets` numbers rather than a million rows. Bucket `i` holds the times
    /// `i * w <= time < (i + 1) * w` (`w = duration / buckets`); a comment exactly at `duration`
    /// counts in the last bucket; comments past `duration` and rows without a time (live and
    /// HTTP channels) count nowhere. `duration: None` means up to the latest comment's time
    /// (0 when there is none, and then every comment at 0 is in the first bucket).
    /// `buckets` is at least 1 (the route bounds it; 0 is taken as 1).
    async fn density(
        &self,
        channel: &ChannelId,
        duration: Option<f64>,
        buckets: usize,
    ) -> Result<Density, StoreError>;

    /// The newest id in `channel`, or 0 when it is empty.
    async fn last_id(&self, channel: &ChannelId) -> Result<i64, StoreError>;

    /// Registers `listener` for every append and import committed from now on. This is how hubs
    /// learn of new comments in commit order, whichever route stored them.
    fn on_append(&self, listener: AppendListener);

    /// Stores imported comments in one transaction, skipping those whose origin the channel
    /// already has; returns once committed.
    async fn import(
        &self,
        channel: &ChannelId,
        items: Vec<ImportedDanmaku>,
    ) -> Result<ImportOutcome, StoreError>;

    /// `Ok` when the store can serve reads and writes now: what `GET /healthz` reports. It must
    /// not say `Ok` while writes fail (a dead or failing writer, a full disk).
    async fn health(&self) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_told_to_retry_only_when_retrying_may_work() {
        let code = |e: StoreError| e.client_error().code;
        assert_eq!(
            code(StoreError::Unavailable("x".into())),
            ErrorCode::Unavailable
        );
        assert_eq!(code(StoreError::Closed), ErrorCode::Unavailable);
        assert_eq!(code(StoreError::Database("x".into())), ErrorCode::Internal);
        // The cause is for the log, never for the client.
        let told = StoreError::Unavailable("/secret/path: disk I/O error".into()).client_error();
        assert!(!told.message.contains("secret"), "{told:?}");
    }
}
