//! [`RoomStore`] for [`PgStore`]: rooms, check-ins and attendance, in the same database as the
//! comments (tables of migration step 1, see `postgres::MIGRATIONS`).
//!
//! Every write is a transaction of its own on a pooled connection, answered after its commit.
//! Times are `TIMESTAMPTZ`, cut to the millisecond before they are stored (as SQLite's text
//! keeps them), so what a write returns equals what later queries return, on either backend.
//!
//! Rules that span rows are kept with row locks rather than a serializable transaction, so they
//! never fail with a serialization error under contention, they wait:
//! - one open check-in per room: [`RoomStore::open_checkin`] locks the room's row
//!   (`FOR NO KEY UPDATE`) before it looks for an open check-in and inserts, so two hosts
//!   opening at once (on any instances) are served one after the other;
//! - the attendance order, and no attendance after the close: [`RoomStore::record_attendance`]
//!   locks the check-in's row before it reads whether it is closed and the next position, and
//!   [`RoomStore::close_checkin`] updates that row, so a close and an attendance are served one
//!   after the other and the count the close keeps is final.
//!
//! Opening a check-in in a room that was never created, or recording attendance for a check-in
//! that does not exist, fails with [`StoreError::Database`] and stores nothing.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::postgres::pg_error;
use super::rooms::{
    Attendance, AttendanceOutcome, CheckinOpening, CheckinRecord, CheckinSecret, CheckinSummary,
    RoomAttendance, RoomRecord, RoomStore,
};
use super::{PgStore, StoreError};
use shared_model::comment::ChannelId;
use shared_model::time;

/// The columns every room query selects, in the order [`row_to_room`] reads them.
const ROOM_COLUMNS: &str = "room, title, token_digest, created_at";

/// The columns every check-in query selects, in the order [`row_to_checkin`] reads them.
const CHECKIN_COLUMNS: &str = "id, room, interval_secs, opened_at, closes_at, closed, secret";

/// Reads a room id from column `col`; the store only ever wrote valid ones.
fn room_at(row: &Row, col: usize) -> Result<ChannelId, StoreError> {
    let text: &str = row.try_get(col).map_err(pg_error)?;
    ChannelId::parse(text)
        .map_err(|e| StoreError::Database(format!("a stored room id does not parse: {e:?}")))
}

fn row_to_room(row: &Row) -> Result<RoomRecord, StoreError> {
    let digest: &[u8] = row.try_get(2).map_err(pg_error)?;
    Ok(RoomRecord {
        room: room_at(row, 0)?,
        title: row.try_get(1).map_err(pg_error)?,
        token_digest: digest.try_into().map_err(|_| {
            StoreError::Database(format!("a stored token digest has {} bytes", digest.len()))
        })?,
        created_at: row.try_get(3).map_err(pg_error)?,
    })
}

/// `limit` as a `LIMIT` parameter; past `i64::MAX` is no limit anyway.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn row_to_checkin(row: &Row) -> Result<CheckinRecord, StoreError> {
    let interval: i32 = row.try_get(2).map_err(pg_error)?;
    Ok(CheckinRecord {
        id: row.try_get(0).map_err(pg_error)?,
        room: room_at(row, 1)?,
        interval_secs: u32::try_from(interval).map_err(|_| {
            StoreError::Database(format!("a stored check-in interval is {interval}"))
        })?,
        opened_at: row.try_get(3).map_err(pg_error)?,
        closes_at: row.try_get(4).map_err(pg_error)?,
        closed: row.try_get(5).map_err(pg_error)?,
        // Every row has one once a store connected (see [`fill_missing_secrets`]).
        secret: row
            .try_get::<_, Option<&[u8]>>(6)
            .map_err(pg_error)?
            .and_then(CheckinSecret::from_slice)
            .ok_or_else(|| StoreError::Database("a check-in without a secret".into()))?,
    })
}

/// Gives every check-in without a secret (opened before migration step 2) a fresh one; run at
/// each connect, after migrating. Instances doing it at once each set a row only while it has
/// none, so a row gets one secret.
pub(super) async fn fill_missing_secrets(
    client: &tokio_postgres::Client,
) -> Result<(), StoreError> {
    let ids: Vec<i64> = client
        .query("SELECT id FROM checkins WHERE secret IS NULL", &[])
        .await
        .map_err(pg_error)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut filled = 0;
    for id in ids {
        let secret = CheckinSecret::generate();
        filled += client
            .execute(
                "UPDATE checkins SET secret = $2 WHERE id = $1 AND secret IS NULL",
                &[&id, &secret.expose().as_slice()],
            )
            .await
            .map_err(pg_error)?;
    }
    if filled > 0 {
        log::info!("gave {filled} check-ins from before migration step 2 a secret");
    }
    Ok(())
}

#[async_trait]
impl RoomStore for PgStore {
    async fn create_room(
        &self,
        room: &ChannelId,
        title: Option<String>,
        token_digest: [u8; 32],
    ) -> Result<Option<RoomRecord>, StoreError> {
        let room = room.as_str().to_owned();
        let created_at = time::now();
        self.run("creating a room", move |client| {
            Box::pin(async move {
                // `DO NOTHING` returns no row for a room that exists, and leaves it untouched.
                let row = client
                    .query_opt(
                        &format!(
                            "INSERT INTO rooms (room, title, token_digest, created_at)
                             VALUES ($1, $2, $3, $4)
                             ON CONFLICT (room) DO NOTHING
                             RETURNING {ROOM_COLUMNS}"
                        ),
                        &[&room, &title, &&token_digest[..], &created_at],
                    )
                    .await
                    .map_err(pg_error)?;
                row.as_ref().map(row_to_room).transpose()
            })
        })
        .await
    }

    async fn room(&self, room: &ChannelId) -> Result<Option<RoomRecord>, StoreError> {
        let room = room.as_str().to_owned();
        self.run("a read", move |client| {
            Box::pin(async move {
                let stmt = client
                    .prepare_cached(&format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE room = $1"))
                    .await
                    .map_err(pg_error)?;
                let row = client.query_opt(&stmt, &[&room]).await.map_err(pg_error)?;
                row.as_ref().map(row_to_room).transpose()
            })
        })
        .await
    }

    async fn open_checkin(
        &self,
        room: &ChannelId,
        interval_secs: u32,
        opened_at: DateTime<Utc>,
        closes_at: DateTime<Utc>,
    ) -> Result<CheckinOpening, StoreError> {
        let room = room.as_str().to_owned();
        let (opened_at, closes_at) = (time::to_millis(opened_at), time::to_millis(closes_at));
        let interval = i32::try_from(interval_secs).map_err(|_| {
            StoreError::Database(format!("a check-in interval of {interval_secs} s"))
        })?;
        let secret = CheckinSecret::generate();
        self.run("opening a check-in", move |client| {
            Box::pin(async move {
                let tx = client.transaction().await.map_err(pg_error)?;
                // The room's row lock serialises every opener of this room until commit.
                let exists = tx
                    .query_opt(
                        "SELECT 1 FROM rooms WHERE room = $1 FOR NO KEY UPDATE",
                        &[&room],
                    )
                    .await
                    .map_err(pg_error)?;
                if exists.is_none() {
                    return Err(StoreError::Database(format!(
                        "no room {room}: a check-in needs a created room"
                    )));
                }
                let running = tx
                    .query_opt(
                        &format!(
                            "SELECT {CHECKIN_COLUMNS} FROM checkins
                             WHERE room = $1 AND NOT closed AND closes_at > $2
                             ORDER BY id DESC LIMIT 1"
                        ),
                        &[&room, &opened_at],
                    )
                    .await
                    .map_err(pg_error)?;
                if let Some(running) = running {
                    return Ok(CheckinOpening::AlreadyOpen(row_to_checkin(&running)?));
                }
                let row = tx
                    .query_one(
                        &format!(
                            "INSERT INTO checkins
                                 (room, interval_secs, opened_at, closes_at, secret)
                             VALUES ($1, $2, $3, $4, $5)
                             RETURNING {CHECKIN_COLUMNS}"
                        ),
                        &[
                            &room,
                            &interval,
                            &opened_at,
                            &closes_at,
                            &secret.expose().as_slice(),
                        ],
                    )
                    .await
                    .map_err(pg_error)?;
                let opened = row_to_checkin(&row)?;
                tx.commit().await.map_err(pg_error)?;
                Ok(CheckinOpening::Opened(opened))
            })
        })
        .await
    }

    async fn checkin(&self, id: i64) -> Result<Option<CheckinRecord>, StoreError> {
        self.run("a read", move |client| {
            Box::pin(async move {
                let stmt = client
                    .prepare_cached(&format!(
                        "SELECT {CHECKIN_COLUMNS} FROM checkins WHERE id = $1"
                    ))
                    .await
                    .map_err(pg_error)?;
                let row = client.query_opt(&stmt, &[&id]).await.map_err(pg_error)?;
                row.as_ref().map(row_to_checkin).transpose()
            })
        })
        .await
    }

    async fn unclosed_checkins(&self) -> Result<Vec<CheckinRecord>, StoreError> {
        self.run("a read", |client| {
            Box::pin(async move {
                let rows = client
                    .query(
                        &format!(
                            "SELECT {CHECKIN_COLUMNS} FROM checkins WHERE NOT closed ORDER BY id"
                        ),
                        &[],
                    )
                    .await
                    .map_err(pg_error)?;
                rows.iter().map(row_to_checkin).collect()
            })
        })
        .await
    }

    async fn current_checkin(
        &self,
        room: &ChannelId,
        at: DateTime<Utc>,
    ) -> Result<Option<CheckinRecord>, StoreError> {
        let room = room.as_str().to_owned();
        let at = time::to_millis(at);
        self.run("a read", move |client| {
            Box::pin(async move {
                let stmt = client
                    .prepare_cached(&format!(
                        "SELECT {CHECKIN_COLUMNS} FROM checkins
                         WHERE room = $1 AND NOT closed AND closes_at > $2
                         ORDER BY id DESC LIMIT 1"
                    ))
                    .await
                    .map_err(pg_error)?;
                let row = client
                    .query_opt(&stmt, &[&room, &at])
                    .await
                    .map_err(pg_error)?;
                row.as_ref().map(row_to_checkin).transpose()
            })
        })
        .await
    }

    /// The first close keeps the count (`attended`); one copied closed without a count gets it
    /// at its next close.
    async fn close_checkin(&self, id: i64) -> Result<usize, StoreError> {
        self.run("closing a check-in", move |client| {
            Box::pin(async move {
                let tx = client.transaction().await.map_err(pg_error)?;
                // Lock the check-in's row first: attendance waits for it (see the module docs),
                // and the statements after this see every attendance committed before it (a
                // count inside the locking statement would be of its older snapshot). A close
                // that waited for another's lock finds the count kept and changes nothing.
                let Some(row) = tx
                    .query_opt(
                        "SELECT attended FROM checkins WHERE id = $1 FOR NO KEY UPDATE",
                        &[&id],
                    )
                    .await
                    .map_err(pg_error)?
                else {
                    return Ok(0);
                };
                let count: i32 = match row.get::<_, Option<i32>>(0) {
                    Some(kept) => kept,
                    None => tx
                        .query_one(
                            "UPDATE checkins
                             SET closed = TRUE,
                                 attended = (SELECT COUNT(*) FROM attendance WHERE checkin = $1)
                             WHERE id = $1
                             RETURNING attended",
                            &[&id],
                        )
                        .await
                        .map_err(pg_error)?
                        .get(0),
                };
                tx.commit().await.map_err(pg_error)?;
                usize::try_from(count)
                    .map_err(|_| StoreError::Database(format!("an attendance count of {count}")))
            })
        })
        .await
    }

    async fn record_attendance(
        &self,
        id: i64,
        name: &str,
        at: DateTime<Utc>,
    ) -> Result<AttendanceOutcome, StoreError> {
        let name = name.to_owned();
        let at = time::to_millis(at);
        self.run("recording attendance", move |client| {
            Box::pin(async move {
                let tx = client.transaction().await.map_err(pg_error)?;
                // The check-in's row lock orders its attendance writers and its close, so each
                // reads the position the previous one committed, and none lands after the close.
                let closed: bool = tx
                    .query_opt(
                        "SELECT closed FROM checkins WHERE id = $1 FOR NO KEY UPDATE",
                        &[&id],
                    )
                    .await
                    .map_err(pg_error)?
                    .ok_or_else(|| StoreError::Database(format!("no check-in {id}")))?
                    .get(0);
                if closed {
                    return Ok(AttendanceOutcome::Closed);
                }
                // A repeat conflicts on `(checkin, name)` and changes nothing, so the first
                // time stays.
                let added = tx
                    .execute(
                        "INSERT INTO attendance (checkin, name, at, seq)
                         SELECT $1, $2, $3, COALESCE(MAX(seq), 0) + 1
                         FROM attendance WHERE checkin = $1
                         ON CONFLICT (checkin, name) DO NOTHING",
                        &[&id, &name, &at],
                    )
                    .await
                    .map_err(pg_error)?;
                tx.commit().await.map_err(pg_error)?;
                Ok(if added == 1 {
                    AttendanceOutcome::New
                } else {
                    AttendanceOutcome::Again
                })
            })
        })
        .await
    }

    async fn attendance(&self, id: i64) -> Result<Vec<Attendance>, StoreError> {
        self.run("a read", move |client| {
            Box::pin(async move {
                let stmt = client
                    .prepare_cached(
                        "SELECT name, at FROM attendance WHERE checkin = $1 ORDER BY seq",
                    )
                    .await
                    .map_err(pg_error)?;
                let rows = client.query(&stmt, &[&id]).await.map_err(pg_error)?;
                rows.iter()
                    .map(|row| {
                        Ok(Attendance {
                            name: row.try_get(0).map_err(pg_error)?,
                            at: row.try_get(1).map_err(pg_error)?,
                        })
                    })
                    .collect()
            })
        })
        .await
    }

    /// One query on `checkins_by_room`; an open check-in's count reads the attendance's primary
    /// key `(checkin, name)`.
    async fn room_checkins(
        &self,
        room: &ChannelId,
        limit: usize,
    ) -> Result<Vec<CheckinSummary>, StoreError> {
        let room = room.as_str().to_owned();
        let limit = sql_limit(limit);
        self.run("a read", move |client| {
            Box::pin(async move {
                let stmt = client
                    .prepare_cached(
                        "SELECT c.id, c.interval_secs, c.opened_at, c.closes_at, c.closed,
                                COALESCE(c.attended::BIGINT,
                                         (SELECT COUNT(*) FROM attendance a
                                          WHERE a.checkin = c.id))
                         FROM checkins c WHERE c.room = $1 ORDER BY c.id DESC LIMIT $2",
                    )
                    .await
                    .map_err(pg_error)?;
                let rows = client
                    .query(&stmt, &[&room, &limit])
                    .await
                    .map_err(pg_error)?;
                let mut newest_first = rows
                    .iter()
                    .map(|row| {
                        let interval: i32 = row.try_get(1).map_err(pg_error)?;
                        let attended: i64 = row.try_get(5).map_err(pg_error)?;
                        Ok(CheckinSummary {
                            id: row.try_get(0).map_err(pg_error)?,
                            interval_secs: u32::try_from(interval).map_err(|_| {
                                StoreError::Database(format!(
                                    "a stored check-in interval is {interval}"
                                ))
                            })?,
                            opened_at: row.try_get(2).map_err(pg_error)?,
                            closes_at: row.try_get(3).map_err(pg_error)?,
                            closed: row.try_get(4).map_err(pg_error)?,
                            attended: usize::try_from(attended).map_err(|_| {
                                StoreError::Database(format!("an attendance count of {attended}"))
                            })?,
                        })
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                newest_first.reverse();
                Ok(newest_first)
            })
        })
        .await
    }

    async fn room_attendance(
        &self,
        room: &ChannelId,
        from_checkin: i64,
        limit: usize,
    ) -> Result<Vec<RoomAttendance>, StoreError> {
        let room = room.as_str().to_owned();
        let limit = sql_limit(limit);
        self.run("a read", move |client| {
            Box::pin(async move {
                // `checkins_by_room` finds the room's check-ins, `UNIQUE (checkin, seq)` each
                // one's names in order.
                let stmt = client
                    .prepare_cached(
                        "SELECT a.checkin, a.name FROM checkins c
                         JOIN attendance a ON a.checkin = c.id
                         WHERE c.room = $1 AND c.id >= $2
                         ORDER BY a.checkin DESC, a.seq LIMIT $3",
                    )
                    .await
                    .map_err(pg_error)?;
                let rows = client
                    .query(&stmt, &[&room, &from_checkin, &limit])
                    .await
                    .map_err(pg_error)?;
                rows.iter()
                    .map(|row| {
                        Ok(RoomAttendance {
                            checkin: row.try_get(0).map_err(pg_error)?,
                            name: row.try_get(1).map_err(pg_error)?,
                        })
                    })
                    .collect()
            })
        })
        .await
    }

    async fn mark_stream_start(
        &self,
        room: &ChannelId,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let room = room.as_str().to_owned();
        let at = time::to_millis(at);
        self.run("marking a stream's start", move |client| {
            Box::pin(async move {
                client
                    .execute(
                        "INSERT INTO stream_starts (room, at) VALUES ($1, $2)
                         ON CONFLICT (room) DO UPDATE SET at = excluded.at",
                        &[&room, &at],
                    )
                    .await
                    .map_err(pg_error)?;
                Ok(())
            })
        })
        .await
    }

    async fn stream_start(&self, room: &ChannelId) -> Result<Option<DateTime<Utc>>, StoreError> {
        let room = room.as_str().to_owned();
        self.run("a read", move |client| {
            Box::pin(async move {
                let row = client
                    .query_opt("SELECT at FROM stream_starts WHERE room = $1", &[&room])
                    .await
                    .map_err(pg_error)?;
                row.map(|row| row.try_get(0).map_err(pg_error)).transpose()
            })
        })
        .await
    }
}
