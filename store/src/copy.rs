//! Copying a SQLite store into a PostgreSQL database: what `danmaku copy-store` runs.
//!
//! [`copy_sqlite_to_postgres`] reads the SQLite file (read-only: the source is never changed)
//! table by table in key order, in batches of [`CopyOptions::batch_rows`], and writes each batch
//! to PostgreSQL in a transaction of its own with `INSERT ... ON CONFLICT DO NOTHING`:
//!
//! 1. rooms (title, host token digest, created time), by room id;
//! 2. check-ins, with their ids (`OVERRIDING SYSTEM VALUE`), times, closed flag, kept attended
//!    count and secret (from which the live service derives the codes: a check-in open during
//!    the move keeps its codes; one from a source older than schema version 5 has none and gets
//!    a fresh one), by id; the identity sequence of `checkins.id` is then advanced past the largest copied id, so the
//!    next check-in opened on PostgreSQL gets a fresh id;
//! 3. attendance, by check-in and position, positions (`seq`) kept, so the order is kept;
//! 4. comments, by channel and id, with their ids (so clients' `after`/`since` cursors stay
//!    valid), import keys (`origin`), send times, video times, colours and modes. Each batch
//!    first raises the `channel_counters` row of every channel it holds to at least the largest
//!    id it copies (taking those rows' locks, in name order, like an append does), so a comment
//!    appended on PostgreSQL afterwards gets the next id in its channel and never collides.
//!    A comment's deletion time is copied too, and a comment deleted on the source after an
//!    earlier run copied it is deleted on the target by the next run;
//! 5. the moderation log, with its ids (the identity sequence is advanced past them, like the
//!    check-ins'), by id;
//! 6. mutes, banned words and each room's stream start, which are settings rather than history: the source's are written
//!    over the target's (a mute lifted, or a list shortened, on the source after an earlier run
//!    stays on the target; run the copy before the services move over).
//!
//! Every batch also checks the rows PostgreSQL already had: a row that was skipped because its
//! key exists must be identical to the source's. If it is not (the database holds another
//! history: a different comment under the same channel and id, a room with another token, ...),
//! the batch rolls back and the copy stops with [`CopyError::Conflict`], naming the row, rather
//! than mix two histories.
//!
//! This makes the copy idempotent (a second run finds every row present and identical, writes
//! nothing, and reports everything as already there) and resumable (each committed batch stays;
//! a run that was interrupted, by Ctrl-C, a lost connection or [`CopyOptions::stop_after_batches`],
//! is finished by running it again, which walks the whole source again, checks what is there and
//! writes what is missing; the result equals a single run). It does not need a quiet source: a
//! service may still be writing the SQLite file; rows added since are copied by the next run. A
//! check-in closed on the source after it was copied is closed on the target by the next run (a
//! check-in only ever goes from open to closed). Run it before any service writes to the
//! PostgreSQL database, or a comment appended there may take an id the source also has, which
//! the next run reports as a conflict.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags};
use tokio_postgres::types::ToSql;

use super::postgres::pg_error;
use super::{CheckinSecret, PgOptions, PgStore, StoreError};
use shared_model::time;

/// Rows per batch by default ([`CopyOptions::batch_rows`]).
pub const DEFAULT_BATCH_ROWS: usize = 2_000;

/// How long one batch may take by default ([`CopyOptions::timeout`]).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The newest SQLite schema version this code reads (the store's own). Versions 9 and 10 only
/// changed indexes (the density's, then which rows the time indexes hold), so their rows read as
/// version 8's.
const NEWEST_SOURCE_VERSION: i64 = 10;

/// How to copy.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Rows read and written per transaction (at least 1).
    pub batch_rows: usize,
    /// Stop after this many batches were committed, as if interrupted (for tests; `None` runs
    /// to the end).
    pub stop_after_batches: Option<u64>,
    /// How long connecting, and each batch, may take before the copy fails.
    pub timeout: Duration,
}

impl Default for CopyOptions {
    fn default() -> Self {
        Self {
            batch_rows: DEFAULT_BATCH_ROWS,
            stop_after_batches: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// The tables, in the order they are copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Table {
    /// Live rooms.
    Rooms,
    /// Check-ins of rooms.
    Checkins,
    /// Who checked in.
    Attendance,
    /// Comments of every channel.
    Comments,
    /// What moderators did (schema version 6 on).
    ModerationLog,
    /// Names muted per channel (schema version 6 on).
    Mutes,
    /// Banned words per channel (schema version 6 on).
    BannedWords,
    /// When each room's stream started, as its host marked it (schema version 8 on).
    StreamStarts,
}

impl Table {
    /// Every table, in copy order.
    pub const ALL: [Table; 8] = [
        Table::Rooms,
        Table::Checkins,
        Table::Attendance,
        Table::Comments,
        Table::ModerationLog,
        Table::Mutes,
        Table::BannedWords,
        Table::StreamStarts,
    ];

    /// The table's name, as the database and the progress bar call it.
    pub fn name(self) -> &'static str {
        match self {
            Table::Rooms => "rooms",
            Table::Checkins => "checkins",
            Table::Attendance => "attendance",
            Table::Comments => "comments",
            Table::ModerationLog => "moderation_log",
            Table::Mutes => "mutes",
            Table::BannedWords => "banned_words",
            Table::StreamStarts => "stream_starts",
        }
    }
}

/// What one table's copy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableCounts {
    /// Rows read from the source.
    pub read: u64,
    /// Rows written to PostgreSQL (new rows, check-ins closed and comments deleted since the
    /// last run, mutes and banned words changed).
    pub copied: u64,
    /// Rows PostgreSQL already had, identical.
    pub present: u64,
}

/// Where a copy is, told after every committed batch.
#[derive(Debug, Clone)]
pub struct CopyProgress {
    /// The table being copied.
    pub table: Table,
    /// Rows read so far, all tables.
    pub done: u64,
    /// Rows the source held when the copy started, all tables (rows added since make `done`
    /// pass it).
    pub total: u64,
    /// What each table's copy did so far.
    pub counts: BTreeMap<Table, TableCounts>,
}

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Per table.
    pub counts: BTreeMap<Table, TableCounts>,
    /// Batches committed.
    pub batches: u64,
    /// `false` when it stopped early ([`CopyOptions::stop_after_batches`]); run it again.
    pub finished: bool,
}

impl CopyReport {
    /// The counts of `table`.
    pub fn of(&self, table: Table) -> TableCounts {
        self.counts.get(&table).copied().unwrap_or_default()
    }

    /// Rows written, all tables: 0 for a run that found everything there.
    pub fn copied(&self) -> u64 {
        self.counts.values().map(|c| c.copied).sum()
    }
}

/// Why a copy failed. Every batch committed before the failure stays; running the copy again
/// goes on from there.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The SQLite file cannot be opened or read.
    #[error("cannot read the SQLite store {path}: {reason}")]
    Source {
        /// The file as given.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// PostgreSQL cannot be reached, or failed (the URL in the text has its password redacted).
    #[error("PostgreSQL: {0}")]
    Target(#[from] StoreError),
    /// PostgreSQL already holds a different row under a key the source has.
    #[error(
        "the PostgreSQL database already holds a different {what}: it has another history, \
         and copying would mix the two; nothing of this batch was written (copy into an empty \
         database, or one filled from this same SQLite file)"
    )]
    Conflict {
        /// The row, e.g. ``comment 7 of channel `lobby` ``.
        what: String,
    },
}

/// Copies the SQLite store at `from` into the PostgreSQL database at `to` (applying its
/// migrations first), telling `progress` after every committed batch. See the module docs.
pub async fn copy_sqlite_to_postgres(
    from: &Path,
    to: &str,
    options: &CopyOptions,
    mut progress: impl FnMut(&CopyProgress),
) -> Result<CopyReport, CopyError> {
    let source = Source::open(from)?;
    let target = PgStore::connect(
        to,
        PgOptions {
            timeout: options.timeout,
            pool_size: 1,
        },
    )
    .await?;
    let batch_rows = options.batch_rows.max(1);
    let total = source.total()?;
    let mut report = CopyReport::default();
    let mut done = 0;
    for table in Table::ALL {
        if !source.has(table) {
            continue;
        }
        report.counts.insert(table, TableCounts::default());
        let mut cursor = Cursor::Start;
        loop {
            if options
                .stop_after_batches
                .is_some_and(|stop| report.batches >= stop)
            {
                return Ok(report);
            }
            let Some((batch, next)) = source.read(table, &cursor, batch_rows)? else {
                break;
            };
            let read = batch.len();
            let written = write(&target, batch).await?;
            report.batches += 1;
            done += read;
            let counts = report.counts.entry(table).or_default();
            counts.read += read;
            counts.copied += written;
            counts.present += read - written;
            progress(&CopyProgress {
                table,
                done,
                total,
                counts: report.counts.clone(),
            });
            cursor = next;
        }
    }
    report.finished = true;
    Ok(report)
}

/// Where the next batch of a table starts: after this key.
#[derive(Debug, Clone)]
enum Cursor {
    Start,
    Text(String),
    Id(i64),
    Pair(String, i64),
    Ids(i64, i64),
    Texts(String, String),
}

/// One batch of rows of one table, as read from SQLite.
enum Batch {
    Rooms(Vec<RoomRow>),
    Checkins(Vec<CheckinRow>),
    Attendance(Vec<AttendanceRow>),
    Comments(Vec<CommentRow>),
    ModerationLog(Vec<LogRow>),
    Mutes(Vec<MuteRow>),
    BannedWords(Vec<WordRow>),
    StreamStarts(Vec<StartRow>),
}

impl Batch {
    fn len(&self) -> u64 {
        let len = match self {
            Batch::Rooms(rows) => rows.len(),
            Batch::Checkins(rows) => rows.len(),
            Batch::Attendance(rows) => rows.len(),
            Batch::Comments(rows) => rows.len(),
            Batch::ModerationLog(rows) => rows.len(),
            Batch::Mutes(rows) => rows.len(),
            Batch::BannedWords(rows) => rows.len(),
            Batch::StreamStarts(rows) => rows.len(),
        };
        len as u64
    }
}

struct RoomRow {
    room: String,
    title: Option<String>,
    token_digest: Vec<u8>,
    created_at: DateTime<Utc>,
}

struct CheckinRow {
    id: i64,
    room: String,
    interval_secs: i32,
    opened_at: DateTime<Utc>,
    closes_at: DateTime<Utc>,
    closed: bool,
    /// `None` before schema version 5.
    secret: Option<Vec<u8>>,
    /// The count the first close kept; `None` before schema version 5 or while open.
    attended: Option<i32>,
}

struct AttendanceRow {
    checkin: i64,
    name: String,
    at: DateTime<Utc>,
    seq: i32,
}

struct CommentRow {
    channel: String,
    id: i64,
    author: String,
    text: String,
    color: String,
    mode: String,
    time: Option<f64>,
    sent_at: DateTime<Utc>,
    origin: Option<String>,
    /// When a moderator deleted it (schema version 6 on).
    deleted_at: Option<DateTime<Utc>>,
}

struct LogRow {
    id: i64,
    channel: String,
    at: DateTime<Utc>,
    actor: String,
    action: String,
    target: String,
    detail: Option<String>,
}

struct MuteRow {
    channel: String,
    name: String,
    until: DateTime<Utc>,
}

struct WordRow {
    channel: String,
    position: i32,
    word: String,
}

struct StartRow {
    room: String,
    at: DateTime<Utc>,
}

/// The SQLite file, opened read-only.
struct Source {
    path: PathBuf,
    conn: Connection,
    /// `PRAGMA user_version`: 1 has comments only, 2 adds `origin`, 3 adds rooms, 5 adds the
    /// check-ins' secrets and kept counts, 6 comments' deletion times (7 adds only an index).
    version: i64,
}

impl Source {
    fn open(path: &Path) -> Result<Self, CopyError> {
        let fail = |reason: String| CopyError::Source {
            path: path.to_path_buf(),
            reason,
        };
        if !path.is_file() {
            return Err(fail("no such file".into()));
        }
        // Read-only: the source is never changed (no migration, no checkpoint).
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| fail(e.to_string()))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| fail(e.to_string()))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| fail(e.to_string()))?;
        if version < 1 {
            return Err(fail("it is not a danmaku store (schema version 0)".into()));
        }
        if version > NEWEST_SOURCE_VERSION {
            return Err(fail(format!(
                "its schema version {version} is newer than this build reads \
                 ({NEWEST_SOURCE_VERSION}); use a newer danmaku"
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
            conn,
            version,
        })
    }

    fn fail(&self, e: impl std::fmt::Display) -> CopyError {
        CopyError::Source {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// Whether the file's schema has `table`.
    fn has(&self, table: Table) -> bool {
        match table {
            Table::Comments => true,
            Table::Rooms | Table::Checkins | Table::Attendance => self.version >= 3,
            Table::ModerationLog | Table::Mutes | Table::BannedWords => self.version >= 6,
            Table::StreamStarts => self.version >= 8,
        }
    }

    /// Rows of every table the file has.
    fn total(&self) -> Result<u64, CopyError> {
        let mut total = 0;
        for table in Table::ALL.into_iter().filter(|t| self.has(*t)) {
            let sql_table = match table {
                Table::Comments => "danmaku",
                other => other.name(),
            };
            let count: i64 = self
                .conn
                .query_row(&format!("SELECT COUNT(*) FROM {sql_table}"), [], |r| {
                    r.get(0)
                })
                .map_err(|e| self.fail(e))?;
            total += u64::try_from(count).unwrap_or(0);
        }
        Ok(total)
    }

    /// The next at most `limit` rows of `table` after `cursor`, in key order, and the cursor
    /// after them; `None` when there are no more.
    fn read(
        &self,
        table: Table,
        cursor: &Cursor,
        limit: usize,
    ) -> Result<Option<(Batch, Cursor)>, CopyError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let time_at = |row: &rusqlite::Row<'_>, col: usize| -> rusqlite::Result<DateTime<Utc>> {
            let text: String = row.get(col)?;
            time::parse(&text).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    col,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })
        };
        let prepare = |sql: &str| self.conn.prepare_cached(sql).map_err(|e| self.fail(e));
        let batch = match (table, cursor) {
            (Table::Rooms, cursor) => {
                let after = match cursor {
                    Cursor::Text(room) => room.clone(),
                    _ => String::new(),
                };
                let mut stmt = prepare(
                    "SELECT room, title, token_digest, created_at FROM rooms
                     WHERE room > ?1 ORDER BY room LIMIT ?2",
                )?;
                let params: &[&dyn rusqlite::ToSql] = &[&after, &limit];
                let rows = stmt
                    .query_map(params, |r| {
                        Ok(RoomRow {
                            room: r.get(0)?,
                            title: r.get(1)?,
                            token_digest: r.get(2)?,
                            created_at: time_at(r, 3)?,
                        })
                    })
                    .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
                    .map_err(|e| self.fail(e))?;
                let next = rows.last().map(|r| Cursor::Text(r.room.clone()));
                next.map(|next| (Batch::Rooms(rows), next))
            }
            (Table::Checkins, cursor) => {
                let after = match cursor {
                    Cursor::Id(id) => *id,
                    _ => i64::MIN,
                };
                let added = if self.version >= 5 {
                    "secret, attended"
                } else {
                    "NULL, NULL"
                };
                let mut stmt = prepare(&format!(
                    "SELECT id, room, interval_secs, opened_at, closes_at, closed, {added}
                     FROM checkins WHERE id > ?1 ORDER BY id LIMIT ?2"
                ))?;
                let params: &[&dyn rusqlite::ToSql] = &[&after, &limit];
                let rows = stmt
                    .query_map(params, |r| {
                        Ok(CheckinRow {
                            id: r.get(0)?,
                            room: r.get(1)?,
                            interval_secs: r.get(2)?,
                            opened_at: time_at(r, 3)?,
                            closes_at: time_at(r, 4)?,
                            closed: r.get(5)?,
                            secret: r.get(6)?,
                            attended: r.get(7)?,
                        })
                    })
                    .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
                    .map_err(|e| self.fail(e))?;
                let next = rows.last().map(|r| Cursor::Id(r.id));
                next.map(|next| (Batch::Checkins(rows), next))
            }
            (Table::Attendance, cursor) => {
                let (checkin, seq) = match cursor {
                    Cursor::Ids(checkin, seq) => (*checkin, *seq),
                    _ => (i64::MIN, i64::MIN),
                };
                // `(checkin, seq)` is unique (`attendance_in_order`), so it is a key to page by.
                let mut stmt = prepare(
                    "SELECT checkin, name, at, seq FROM attendance
                     WHERE (checkin, seq) > (?1, ?2) ORDER BY checkin, seq LIMIT ?3",
                )?;
                let params: &[&dyn rusqlite::ToSql] = &[&checkin, &seq, &limit];
                let rows = stmt
                    .query_map(params, |r| {
                        Ok(AttendanceRow {
                            checkin: r.get(0)?,
                            name: r.get(1)?,
                            at: time_at(r, 2)?,
                            seq: r.get(3)?,
                        })
                    })
                    .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
                    .map_err(|e| self.fail(e))?;
                let next = rows
                    .last()
                    .map(|r| Cursor::Ids(r.checkin, i64::from(r.seq)));
                next.map(|next| (Batch::Attendance(rows), next))
            }
            (Table::Comments, cursor) => {
                let (channel, id) = match cursor {
                    Cursor::Pair(channel, id) => (channel.clone(), *id),
                    _ => (String::new(), i64::MIN),
                };
                // Version 1 has no import keys.
                let origin = if self.version >= 2 { "origin" } else { "NULL" };
                // Nor deletes before version 6.
                let deleted = if self.version >= 6 {
                    "deleted_at"
                } else {
                    "NULL"
                };
                let sql = format!(
                    "SELECT channel, id, author, text, color, mode, time, sent_at, {origin},
                            {deleted}
                     FROM danmaku WHERE (channel, id) > (?1, ?2)
                     ORDER BY channel, id LIMIT ?3"
                );
                let mut stmt = prepare(&sql)?;
                let params: &[&dyn rusqlite::ToSql] = &[&channel, &id, &limit];
                let rows = stmt
                    .query_map(params, |r| {
                        Ok(CommentRow {
                            channel: r.get(0)?,
                            id: r.get(1)?,
                            author: r.get(2)?,
                            text: r.get(3)?,
                            color: r.get(4)?,
                            mode: r.get(5)?,
                            time: r.get(6)?,
                            sent_at: time_at(r, 7)?,
                            origin: r.get(8)?,
                            deleted_at: r
                                .get::<_, Option<String>>(9)?
                                .map(|text| time::parse(&text))
                                .transpose()
                                .map_err(|e| {
                                    rusqlite::Error::FromSqlConversionFailure(
                                        9,
                                        rusqlite::types::Type::Text,
                                        Box::new(e),
                                    )
                                })?,
                        })
                    })
                    .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
                    .map_err(|e| self.fail(e))?;
                let next = rows.last().map(|r| Cursor::Pair(r.channel.clone(), r.id));
                next.map(|next| (Batch::Comments(rows), next))
            }
            (Table::ModerationLog, cursor) => {
                let after = match cursor {
                    Cursor::Id(id) => *id,
                    _ => i64::MIN,
                };
                let mut stmt = prepare(
                    "SELECT id, channel, at, actor, action, target, detail FROM moderation_log
                     WHERE id > ?1 ORDER BY id LIMIT ?2",
                )?;
                let params: &[&dyn rusqlite::ToSql] = &[&after, &limit];
                let rows = stmt
                    .query_map(params, |r| {
                        Ok(LogRow {
                            id: r.get(0)?,
                            channel: r.get(1)?,
                            at: time_at(r, 2)?,
                            actor: r.get(3)?,
                            action: r.get(4)?,
                            target: r.get(5)?,
                            detail: r.get(6)?,
                        })
                    })
                    .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
                    .map_err(|e| self.fail(e))?;
                let next = rows.last().map(|r| Cursor::Id(r.id));
                next.map(|next| (Batch::ModerationLog(rows), next))
            }
            (Table::Mutes, cursor) => {
                let (channel, name) = match cursor {
                    Cursor::Texts(channel, name) => (channel.clone(), name.clone()),
                    _ => (String::new(), String::new()),
                };
                let mut stmt = prepare(
                    "SELECT channel, name, until FROM mutes
                     WHERE (channel, name) > (?1, ?2) ORDER BY channel, name LIMIT ?3",
                )?;
                let params: &[&dyn rusqlite::ToSql] = &[&channel, &name, &limit];
                let rows = stmt
                    .query_map(params, |r| {
                        Ok(MuteRow {
                            channel: r.get(0)?,
                            name: r.get(1)?,
                            until: time_at(r, 2)?,
                        })
                    })
                    .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
                    .map_err(|e| self.fail(e))?;
                let next = rows
                    .last()
                    .map(|r| Cursor::Texts(r.channel.clone(), r.name.clone()));
                next.map(|next| (Batch::Mutes(rows), next))
            }
            (Table::BannedWords, cursor) => {
                let (channel, position) = match cursor {
                    Cursor::Pair(channel, position) => (channel.clone(), *position),
                    _ => (String::new(), i64::MIN),
                };
                let mut stmt = prepare(
                    "SELECT channel, position, word FROM banned_words
                     WHERE (channel, position) > (?1, ?2) ORDER BY channel, position LIMIT ?3",
                )?;
                let params: &[&dyn rusqlite::ToSql] = &[&channel, &position, &limit];
                let rows = stmt
                    .query_map(params, |r| {
                        Ok(WordRow {
                            channel: r.get(0)?,
                            position: r.get(1)?,
                            word: r.get(2)?,
                        })
                    })
                    .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
                    .map_err(|e| self.fail(e))?;
                let next = rows
                    .last()
                    .map(|r| Cursor::Pair(r.channel.clone(), i64::from(r.position)));
                next.map(|next| (Batch::BannedWords(rows), next))
            }
            (Table::StreamStarts, cursor) => {
                let after = match cursor {
                    Cursor::Text(room) => room.clone(),
                    _ => String::new(),
                };
                let mut stmt = prepare(
                    "SELECT room, at FROM stream_starts WHERE room > ?1 ORDER BY room LIMIT ?2",
                )?;
                let params: &[&dyn rusqlite::ToSql] = &[&after, &limit];
                let rows = stmt
                    .query_map(params, |r| {
                        Ok(StartRow {
                            room: r.get(0)?,
                            at: time_at(r, 1)?,
                        })
                    })
                    .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
                    .map_err(|e| self.fail(e))?;
                let next = rows.last().map(|r| Cursor::Text(r.room.clone()));
                next.map(|next| (Batch::StreamStarts(rows), next))
            }
        };
        Ok(batch)
    }
}

/// Writes one batch in one transaction; returns how many rows it wrote.
async fn write(target: &PgStore, batch: Batch) -> Result<u64, CopyError> {
    let what = "copying a batch";
    let outcome = target
        .run(what, move |client| {
            Box::pin(async move {
                let tx = client.transaction().await.map_err(pg_error)?;
                let outcome = match batch {
                    Batch::Rooms(rows) => write_rooms(&tx, rows).await?,
                    Batch::Checkins(rows) => write_checkins(&tx, rows).await?,
                    Batch::Attendance(rows) => write_attendance(&tx, rows).await?,
                    Batch::Comments(rows) => write_comments(&tx, rows).await?,
                    Batch::ModerationLog(rows) => write_log(&tx, rows).await?,
                    Batch::Mutes(rows) => write_mutes(&tx, rows).await?,
                    Batch::BannedWords(rows) => write_words(&tx, rows).await?,
                    Batch::StreamStarts(rows) => write_starts(&tx, rows).await?,
                };
                if outcome.is_ok() {
                    tx.commit().await.map_err(pg_error)?;
                }
                // A conflict drops `tx`, which rolls the batch back.
                Ok(outcome)
            })
        })
        .await?;
    outcome.map_err(|what| CopyError::Conflict { what })
}

/// A batch's result inside its transaction: rows written, or the row that conflicts.
type Written = Result<u64, String>;

/// Runs an insert-and-compare statement (see [`COMMENTS`]): its rows are the batch's keys that
/// were already there, each with whether the stored row is identical. Returns the rows written,
/// or the first key whose stored row differs.
async fn insert_checked(
    tx: &tokio_postgres::Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    len: usize,
    describe: impl Fn(&tokio_postgres::Row) -> String,
) -> Result<Written, StoreError> {
    let present = tx.query(sql, params).await.map_err(pg_error)?;
    if let Some(differs) = present.iter().find(|row| !row.get::<_, bool>("same")) {
        return Ok(Err(describe(differs)));
    }
    Ok(Ok((len - present.len()) as u64))
}

/// Inserts a batch of comments, skipping keys PostgreSQL has; returns the skipped keys with
/// whether the stored row is identical. The main query sees the table as it was before the
/// insert (a data-modifying `WITH` is not visible to its own statement), so the rows it compares
/// are the ones that were there before, and the inserted ones are left out by key.
const COMMENTS: &str = "WITH input AS (
         SELECT * FROM unnest($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
             $6::TEXT[], $7::DOUBLE PRECISION[], $8::TIMESTAMPTZ[], $9::TEXT[],
             $10::TIMESTAMPTZ[])
             AS r(channel, id, author, text, color, mode, time, sent_at, origin, deleted_at)
     ), added AS (
         INSERT INTO danmaku
             (channel, id, author, text, color, mode, time, sent_at, origin, deleted_at)
         SELECT * FROM input ON CONFLICT DO NOTHING RETURNING channel, id
     )
     SELECT i.channel, i.id, EXISTS (
         SELECT 1 FROM danmaku d
         WHERE d.channel = i.channel AND d.id = i.id AND d.author = i.author
           AND d.text = i.text AND d.color = i.color AND d.mode = i.mode
           AND d.time IS NOT DISTINCT FROM i.time AND d.sent_at = i.sent_at
           AND d.origin IS NOT DISTINCT FROM i.origin
     ) AS same
     FROM input i
     WHERE NOT EXISTS (SELECT 1 FROM added a WHERE a.channel = i.channel AND a.id = i.id)
     ORDER BY i.channel COLLATE \"C\", i.id";

/// Deletes on the target what was deleted on the source after an earlier run copied it (a
/// comment only ever goes from shown to deleted, so this is the one change a copied row takes).
const DELETES: &str = "UPDATE danmaku d SET deleted_at = r.deleted_at
     FROM unnest($1::TEXT[], $2::BIGINT[], $3::TIMESTAMPTZ[]) AS r(channel, id, deleted_at)
     WHERE d.channel = r.channel AND d.id = r.id
       AND r.deleted_at IS NOT NULL AND d.deleted_at IS NULL";

/// Raises each channel's counter to at least the largest id the batch copies, locking the rows
/// in name order (bytewise, as the append writer does); a counter already past is left alone.
const RAISE_COUNTERS: &str = "INSERT INTO channel_counters AS c (channel, last_id)
     SELECT channel, MAX(id) FROM unnest($1::TEXT[], $2::BIGINT[]) AS r(channel, id)
     GROUP BY channel ORDER BY channel COLLATE \"C\"
     ON CONFLICT (channel) DO UPDATE SET last_id = EXCLUDED.last_id
         WHERE c.last_id < EXCLUDED.last_id";

async fn write_comments(
    tx: &tokio_postgres::Transaction<'_>,
    rows: Vec<CommentRow>,
) -> Result<Written, StoreError> {
    let len = rows.len();
    let mut channels = Vec::with_capacity(len);
    let mut ids = Vec::with_capacity(len);
    let mut authors = Vec::with_capacity(len);
    let mut texts = Vec::with_capacity(len);
    let mut colors = Vec::with_capacity(len);
    let mut modes = Vec::with_capacity(len);
    let mut times = Vec::with_capacity(len);
    let mut sent = Vec::with_capacity(len);
    let mut origins = Vec::with_capacity(len);
    let mut deleted = Vec::with_capacity(len);
    for row in rows {
        channels.push(row.channel);
        ids.push(row.id);
        authors.push(row.author);
        texts.push(row.text);
        colors.push(row.color);
        modes.push(row.mode);
        times.push(row.time);
        sent.push(row.sent_at);
        origins.push(row.origin);
        deleted.push(row.deleted_at);
    }
    // Counters first: an append on PostgreSQL running meanwhile waits for this batch, then takes
    // ids past it.
    tx.execute(RAISE_COUNTERS, &[&channels, &ids])
        .await
        .map_err(pg_error)?;
    let written = insert_checked(
        tx,
        COMMENTS,
        &[
            &channels, &ids, &authors, &texts, &colors, &modes, &times, &sent, &origins, &deleted,
        ],
        len,
        |row| {
            format!(
                "comment {} of channel `{}`",
                row.get::<_, i64>(1),
                row.get::<_, &str>(0)
            )
        },
    )
    .await?;
    let Ok(inserted) = written else {
        return Ok(written);
    };
    let deleted_since = if deleted.iter().any(Option::is_some) {
        tx.execute(DELETES, &[&channels, &ids, &deleted])
            .await
            .map_err(pg_error)?
    } else {
        0
    };
    Ok(Ok(inserted + deleted_since))
}

/// Log lines keep their ids (so the log's order is kept); a line only ever gets written once,
/// so one already there must be identical.
async fn write_log(
    tx: &tokio_postgres::Transaction<'_>,
    rows: Vec<LogRow>,
) -> Result<Written, StoreError> {
    let len = rows.len();
    let mut ids = Vec::with_capacity(len);
    let mut channels = Vec::with_capacity(len);
    let mut at = Vec::with_capacity(len);
    let mut actors = Vec::with_capacity(len);
    let mut actions = Vec::with_capacity(len);
    let mut targets = Vec::with_capacity(len);
    let mut details = Vec::with_capacity(len);
    for row in rows {
        ids.push(row.id);
        channels.push(row.channel);
        at.push(row.at);
        actors.push(row.actor);
        actions.push(row.action);
        targets.push(row.target);
        details.push(row.detail);
    }
    let written = insert_checked(
        tx,
        "WITH input AS (
             SELECT * FROM unnest($1::BIGINT[], $2::TEXT[], $3::TIMESTAMPTZ[], $4::TEXT[],
                 $5::TEXT[], $6::TEXT[], $7::TEXT[])
                 AS r(id, channel, at, actor, action, target, detail)
         ), added AS (
             INSERT INTO moderation_log (id, channel, at, actor, action, target, detail)
             OVERRIDING SYSTEM VALUE
             SELECT * FROM input ON CONFLICT DO NOTHING RETURNING id
         )
         SELECT i.id, EXISTS (
             SELECT 1 FROM moderation_log d
             WHERE d.id = i.id AND d.channel = i.channel AND d.at = i.at AND d.actor = i.actor
               AND d.action = i.action AND d.target = i.target
               AND d.detail IS NOT DISTINCT FROM i.detail
         ) AS same
         FROM input i
         WHERE NOT EXISTS (SELECT 1 FROM added a WHERE a.id = i.id)
         ORDER BY i.id",
        &[&ids, &channels, &at, &actors, &actions, &targets, &details],
        len,
        |row| format!("moderation log line {}", row.get::<_, i64>(0)),
    )
    .await?;
    // The next line logged on PostgreSQL gets an id past every copied one (as for check-ins).
    if written.is_ok()
        && let Some(&largest) = ids.iter().max()
    {
        tx.execute(
            "SELECT setval(q.s, $1)
             FROM (SELECT pg_get_serial_sequence('moderation_log', 'id')::regclass AS s) q
             WHERE $1 > COALESCE(pg_sequence_last_value(q.s), 0)",
            &[&largest],
        )
        .await
        .map_err(pg_error)?;
    }
    Ok(written)
}

/// Mutes are settings, not history: the source's mute of a name is written over the target's
/// (a re-mute on the source since the last run moves its end). A mute lifted on the source
/// after an earlier run copied it stays on the target until it ends.
async fn write_mutes(
    tx: &tokio_postgres::Transaction<'_>,
    rows: Vec<MuteRow>,
) -> Result<Written, StoreError> {
    let (channels, names, until): (Vec<_>, Vec<_>, Vec<_>) = rows
        .into_iter()
        .map(|r| (r.channel, r.name, r.until))
        .collect();
    let written = tx
        .execute(
            "INSERT INTO mutes AS m (channel, name, until)
             SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::TIMESTAMPTZ[])
             ON CONFLICT (channel, name) DO UPDATE SET until = EXCLUDED.until
                 WHERE m.until <> EXCLUDED.until",
            &[&channels, &names, &until],
        )
        .await
        .map_err(pg_error)?;
    Ok(Ok(written))
}

/// Banned words are settings too: the source's word at each position of a channel's list is
/// written over the target's.
async fn write_words(
    tx: &tokio_postgres::Transaction<'_>,
    rows: Vec<WordRow>,
) -> Result<Written, StoreError> {
    let (channels, positions, words): (Vec<_>, Vec<_>, Vec<_>) = rows
        .into_iter()
        .map(|r| (r.channel, r.position, r.word))
        .collect();
    let written = tx
        .execute(
            "INSERT INTO banned_words AS b (channel, position, word)
             SELECT * FROM unnest($1::TEXT[], $2::INTEGER[], $3::TEXT[])
             ON CONFLICT (channel, position) DO UPDATE SET word = EXCLUDED.word
                 WHERE b.word <> EXCLUDED.word",
            &[&channels, &positions, &words],
        )
        .await
        .map_err(pg_error)?;
    Ok(Ok(written))
}

/// A stream's start is a setting of its room: the source's is written over the target's.
async fn write_starts(
    tx: &tokio_postgres::Transaction<'_>,
    rows: Vec<StartRow>,
) -> Result<Written, StoreError> {
    let (rooms, at): (Vec<_>, Vec<_>) = rows.into_iter().map(|r| (r.room, r.at)).unzip();
    let written = tx
        .execute(
            "INSERT INTO stream_starts AS s (room, at)
             SELECT * FROM unnest($1::TEXT[], $2::TIMESTAMPTZ[])
             ON CONFLICT (room) DO UPDATE SET at = EXCLUDED.at WHERE s.at <> EXCLUDED.at",
            &[&rooms, &at],
        )
        .await
        .map_err(pg_error)?;
    Ok(Ok(written))
}

async fn write_rooms(
    tx: &tokio_postgres::Transaction<'_>,
    rows: Vec<RoomRow>,
) -> Result<Written, StoreError> {
    let len = rows.len();
    let mut rooms = Vec::with_capacity(len);
    let mut titles = Vec::with_capacity(len);
    let mut digests = Vec::with_capacity(len);
    let mut created = Vec::with_capacity(len);
    for row in rows {
        rooms.push(row.room);
        titles.push(row.title);
        digests.push(row.token_digest);
        created.push(row.created_at);
    }
    insert_checked(
        tx,
        "WITH input AS (
             SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::BYTEA[], $4::TIMESTAMPTZ[])
                 AS r(room, title, token_digest, created_at)
         ), added AS (
             INSERT INTO rooms (room, title, token_digest, created_at)
             SELECT * FROM input ON CONFLICT DO NOTHING RETURNING room
         )
         SELECT i.room, EXISTS (
             SELECT 1 FROM rooms d
             WHERE d.room = i.room AND d.title IS NOT DISTINCT FROM i.title
               AND d.token_digest = i.token_digest AND d.created_at = i.created_at
         ) AS same
         FROM input i
         WHERE NOT EXISTS (SELECT 1 FROM added a WHERE a.room = i.room)
         ORDER BY i.room COLLATE \"C\"",
        &[&rooms, &titles, &digests, &created],
        len,
        |row| format!("room `{}`", row.get::<_, &str>(0)),
    )
    .await
}

async fn write_checkins(
    tx: &tokio_postgres::Transaction<'_>,
    rows: Vec<CheckinRow>,
) -> Result<Written, StoreError> {
    let len = rows.len();
    let mut ids = Vec::with_capacity(len);
    let mut rooms = Vec::with_capacity(len);
    let mut intervals = Vec::with_capacity(len);
    let mut opened = Vec::with_capacity(len);
    let mut closes = Vec::with_capacity(len);
    let mut closed = Vec::with_capacity(len);
    let mut secrets = Vec::with_capacity(len);
    let mut attended = Vec::with_capacity(len);
    for row in rows {
        ids.push(row.id);
        rooms.push(row.room);
        intervals.push(row.interval_secs);
        opened.push(row.opened_at);
        closes.push(row.closes_at);
        closed.push(row.closed);
        secrets.push(
            row.secret
                .unwrap_or_else(|| CheckinSecret::generate().expose().to_vec()),
        );
        attended.push(row.attended);
    }
    // The closed flag and the kept count are left out of the comparison: a check-in only goes
    // from open to closed, so one closed on the source since the last run is closed here below.
    // So is the secret: one copied from a source too old to have one got a fresh one here.
    let written = insert_checked(
        tx,
        "WITH input AS (
             SELECT * FROM unnest($1::BIGINT[], $2::TEXT[], $3::INTEGER[], $4::TIMESTAMPTZ[],
                 $5::TIMESTAMPTZ[], $6::BOOLEAN[], $7::BYTEA[], $8::INTEGER[])
                 AS r(id, room, interval_secs, opened_at, closes_at, closed, secret, attended)
         ), added AS (
             INSERT INTO checkins
                 (id, room, interval_secs, opened_at, closes_at, closed, secret, attended)
             OVERRIDING SYSTEM VALUE
             SELECT * FROM input ON CONFLICT DO NOTHING RETURNING id
         )
         SELECT i.id, EXISTS (
             SELECT 1 FROM checkins d
             WHERE d.id = i.id AND d.room = i.room AND d.interval_secs = i.interval_secs
               AND d.opened_at = i.opened_at AND d.closes_at = i.closes_at
         ) AS same
         FROM input i
         WHERE NOT EXISTS (SELECT 1 FROM added a WHERE a.id = i.id)
         ORDER BY i.id",
        &[
            &ids, &rooms, &intervals, &opened, &closes, &closed, &secrets, &attended,
        ],
        len,
        |row| format!("check-in {}", row.get::<_, i64>(0)),
    )
    .await?;
    let Ok(inserted) = written else {
        return Ok(written);
    };
    let closed_since = tx
        .execute(
            "UPDATE checkins c SET closed = TRUE, attended = COALESCE(c.attended, r.attended)
             FROM unnest($1::BIGINT[], $2::BOOLEAN[], $3::INTEGER[]) AS r(id, closed, attended)
             WHERE c.id = r.id AND r.closed
               AND (NOT c.closed OR (c.attended IS NULL AND r.attended IS NOT NULL))",
            &[&ids, &closed, &attended],
        )
        .await
        .map_err(pg_error)?;
    // The next check-in opened on PostgreSQL gets an id past every copied one. `setval` is never
    // rolled back and only ever moves the sequence forward here.
    if let Some(&largest) = ids.iter().max() {
        tx.execute(
            "SELECT setval(q.s, $1)
             FROM (SELECT pg_get_serial_sequence('checkins', 'id')::regclass AS s) q
             WHERE $1 > COALESCE(pg_sequence_last_value(q.s), 0)",
            &[&largest],
        )
        .await
        .map_err(pg_error)?;
    }
    Ok(Ok(inserted + closed_since))
}

async fn write_attendance(
    tx: &tokio_postgres::Transaction<'_>,
    rows: Vec<AttendanceRow>,
) -> Result<Written, StoreError> {
    let len = rows.len();
    let mut checkins = Vec::with_capacity(len);
    let mut names = Vec::with_capacity(len);
    let mut ats = Vec::with_capacity(len);
    let mut seqs = Vec::with_capacity(len);
    for row in rows {
        checkins.push(row.checkin);
        names.push(row.name);
        ats.push(row.at);
        seqs.push(row.seq);
    }
    insert_checked(
        tx,
        "WITH input AS (
             SELECT * FROM unnest($1::BIGINT[], $2::TEXT[], $3::TIMESTAMPTZ[], $4::INTEGER[])
                 AS r(checkin, name, at, seq)
         ), added AS (
             INSERT INTO attendance (checkin, name, at, seq)
             SELECT * FROM input ON CONFLICT DO NOTHING RETURNING checkin, seq
         )
         SELECT i.checkin, i.name, EXISTS (
             SELECT 1 FROM attendance d
             WHERE d.checkin = i.checkin AND d.name = i.name AND d.at = i.at AND d.seq = i.seq
         ) AS same
         FROM input i
         WHERE NOT EXISTS (SELECT 1 FROM added a WHERE a.checkin = i.checkin AND a.seq = i.seq)
         ORDER BY i.checkin, i.seq",
        &[&checkins, &names, &ats, &seqs],
        len,
        |row| {
            format!(
                "attendance of `{}` at check-in {}",
                row.get::<_, &str>(1),
                row.get::<_, i64>(0)
            )
        },
    )
    .await
}
