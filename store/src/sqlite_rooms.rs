//! [`RoomStore`] for [`SqliteStore`]: rooms, check-ins and attendance, in the same file as the
//! comments (tables from schema version 3, check-in secrets and kept counts from version 5, see
//! `sqlite::MIGRATIONS`).
//!
//! Every write goes through the store's one writer thread as a transaction of its own and is
//! answered after its commit; queries run on the reader threads. Times are stored as RFC 3339 UTC
//! text with milliseconds, like a comment's `sent_at`, so what comes back is cut to the
//! millisecond: the records returned by writes are read back from what was stored, so they equal
//! what later queries return.
//!
//! The writer enforces foreign keys: opening a check-in in a room that was never created, or
//! recording attendance or a wrong code for a check-in that does not exist, fails with
//! [`StoreError::Database`] and stores nothing. Callers look the room or check-in up first.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};

use super::rooms::{
    Attendance, AttendanceOutcome, CheckinOpening, CheckinRecord, CheckinSecret, CheckinSummary,
    RoomAttendance, RoomRecord, RoomStore,
};
use super::sqlite::time_at;
use super::{SqliteStore, StoreError};
use shared_model::comment::ChannelId;
use shared_model::time;

/// The columns every room query selects, in the order [`row_to_room`] reads them.
const ROOM_COLUMNS: &str = "room, title, token_digest, created_at";

/// The columns every check-in query selects, in the order [`row_to_checkin`] reads them.
const CHECKIN_COLUMNS: &str = "id, room, interval_secs, opened_at, closes_at, closed, secret";

/// Reads a room id from column `col`; the store only ever wrote valid ones.
fn room_at(row: &Row<'_>, col: usize) -> rusqlite::Result<ChannelId> {
    let text: String = row.get(col)?;
    ChannelId::parse(&text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(col, Type::Text, Box::new(e)))
}

fn row_to_room(row: &Row<'_>) -> rusqlite::Result<RoomRecord> {
    Ok(RoomRecord {
        room: room_at(row, 0)?,
        title: row.get(1)?,
        token_digest: row.get(2)?,
        created_at: time_at(row, 3)?,
    })
}

/// `limit` as SQLite's `LIMIT` takes it; past `i64::MAX` is no limit anyway.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn row_to_checkin(row: &Row<'_>) -> rusqlite::Result<CheckinRecord> {
    Ok(CheckinRecord {
        id: row.get(0)?,
        room: room_at(row, 1)?,
        interval_secs: row.get(2)?,
        opened_at: time_at(row, 3)?,
        closes_at: time_at(row, 4)?,
        closed: row.get(5)?,
        // Every row has one once the store opened (see [`fill_missing_secrets`]).
        secret: row
            .get::<_, Option<[u8; 32]>>(6)?
            .map(CheckinSecret::from_bytes)
            .ok_or_else(|| rusqlite::Error::InvalidColumnType(6, "secret".into(), Type::Null))?,
    })
}

/// Gives every check-in without a secret (opened before schema version 5) a fresh one; run each
/// time the writer opens the file, after migrating. Another process doing the same at once
/// waits for this one's transaction and then finds nothing left to fill.
pub(super) fn fill_missing_secrets(conn: &Connection) -> rusqlite::Result<()> {
    let missing = |conn: &Connection| -> rusqlite::Result<Vec<i64>> {
        conn.prepare("SELECT id FROM checkins WHERE secret IS NULL")?
            .query_map([], |r| r.get(0))?
            .collect()
    };
    // Only take the write lock when there is something to write.
    if missing(conn)?.is_empty() {
        return Ok(());
    }
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let ids = missing(&tx)?;
    for id in &ids {
        tx.execute(
            "UPDATE checkins SET secret = ?2 WHERE id = ?1 AND secret IS NULL",
            params![id, CheckinSecret::generate().expose()],
        )?;
    }
    tx.commit()?;
    log::info!(
        "gave {} check-ins from before schema version 5 a secret",
        ids.len()
    );
    Ok(())
}

#[async_trait]
impl RoomStore for SqliteStore {
    async fn create_room(
        &self,
        room: &ChannelId,
        title: Option<String>,
        token_digest: [u8; 32],
    ) -> Result<Option<RoomRecord>, StoreError> {
        let room = room.clone();
        let created_at = time::rfc3339(Utc::now());
        self.write(move |tx| {
            // `DO NOTHING` returns no row for a room that exists, and leaves it untouched.
            tx.query_row(
                &format!(
                    "INSERT INTO rooms (room, title, token_digest, created_at)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (room) DO NOTHING
                     RETURNING {ROOM_COLUMNS}"
                ),
                params![room.as_str(), title, token_digest, created_at],
                row_to_room,
            )
            .optional()
        })
        .await
    }

    async fn room(&self, room: &ChannelId) -> Result<Option<RoomRecord>, StoreError> {
        let room = room.clone();
        self.read(move |conn| {
            conn.prepare_cached(&format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE room = ?1"))?
                .query_row([room.as_str()], row_to_room)
                .optional()
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
        let room = room.clone();
        let (opened_at, closes_at) = (time::rfc3339(opened_at), time::rfc3339(closes_at));
        let secret = CheckinSecret::generate();
        self.write(move |tx| {
            // Times are stored in one fixed-width UTC format, so text order is time order.
            let running = tx
                .query_row(
                    &format!(
                        "SELECT {CHECKIN_COLUMNS} FROM checkins
                         WHERE room = ?1 AND closed = 0 AND closes_at > ?2
                         ORDER BY id DESC LIMIT 1"
                    ),
                    params![room.as_str(), opened_at],
                    row_to_checkin,
                )
                .optional()?;
            if let Some(running) = running {
                return Ok(CheckinOpening::AlreadyOpen(running));
            }
            tx.query_row(
                &format!(
                    "INSERT INTO checkins (room, interval_secs, opened_at, closes_at, secret)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     RETURNING {CHECKIN_COLUMNS}"
                ),
                params![
                    room.as_str(),
                    interval_secs,
                    opened_at,
                    closes_at,
                    secret.expose()
                ],
                row_to_checkin,
            )
            .map(CheckinOpening::Opened)
        })
        .await
    }

    async fn checkin(&self, id: i64) -> Result<Option<CheckinRecord>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {CHECKIN_COLUMNS} FROM checkins WHERE id = ?1"
            ))?
            .query_row([id], row_to_checkin)
            .optional()
        })
        .await
    }

    async fn unclosed_checkins(&self) -> Result<Vec<CheckinRecord>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {CHECKIN_COLUMNS} FROM checkins WHERE closed = 0 ORDER BY id"
            ))?;
            let rows = stmt.query_map([], row_to_checkin)?;
            rows.collect()
        })
        .await
    }

    async fn current_checkin(
        &self,
        room: &ChannelId,
        at: DateTime<Utc>,
    ) -> Result<Option<CheckinRecord>, StoreError> {
        let room = room.clone();
        let at = time::rfc3339(at);
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {CHECKIN_COLUMNS} FROM checkins
                 WHERE room = ?1 AND closed = 0 AND closes_at > ?2
                 ORDER BY id DESC LIMIT 1"
            ))?
            .query_row(params![room.as_str(), at], row_to_checkin)
            .optional()
        })
        .await
    }

    /// The first close keeps the count (`attended`); a check-in closed before schema version 5
    /// has none yet and gets it at its next close.
    async fn close_checkin(&self, id: i64) -> Result<usize, StoreError> {
        self.write(move |tx| {
            tx.execute(
                "UPDATE checkins
                 SET closed = 1,
                     attended = (SELECT COUNT(*) FROM attendance WHERE checkin = ?1)
                 WHERE id = ?1 AND attended IS NULL",
                [id],
            )?;
            let count: Option<i64> = tx
                .query_row("SELECT attended FROM checkins WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()?
                .flatten();
            let count = count.unwrap_or(0);
            usize::try_from(count).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, count))
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
        let at = time::rfc3339(at);
        self.write(move |tx| {
            // An unknown id reads nothing here and fails the insert on its foreign key.
            let closed: Option<bool> = tx
                .prepare_cached("SELECT closed FROM checkins WHERE id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()?;
            if closed == Some(true) {
                return Ok(AttendanceOutcome::Closed);
            }
            // `seq` is the check-in's next position, read in the same transaction; a repeat
            // conflicts on `(checkin, name)` and changes nothing, so the first time stays.
            let added = tx
                .prepare_cached(
                    "INSERT INTO attendance (checkin, name, at, seq)
                     SELECT ?1, ?2, ?3, COALESCE(MAX(seq), 0) + 1
                     FROM attendance WHERE checkin = ?1
                     ON CONFLICT (checkin, name) DO NOTHING",
                )?
                .execute(params![id, name, at])?;
            Ok(if added == 1 {
                AttendanceOutcome::New
            } else {
                AttendanceOutcome::Again
            })
        })
        .await
    }

    async fn attendance(&self, id: i64) -> Result<Vec<Attendance>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name, at FROM attendance WHERE checkin = ?1 ORDER BY seq",
            )?;
            let rows = stmt.query_map([id], |row| {
                Ok(Attendance {
                    name: row.get(0)?,
                    at: time_at(row, 1)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// One query; an open check-in's count reads the attendance's primary key `(checkin, name)`.
    async fn room_checkins(
        &self,
        room: &ChannelId,
        limit: usize,
    ) -> Result<Vec<CheckinSummary>, StoreError> {
        let room = room.clone();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT c.id, c.interval_secs, c.opened_at, c.closes_at, c.closed,
                        COALESCE(c.attended,
                                 (SELECT COUNT(*) FROM attendance a WHERE a.checkin = c.id))
                 FROM checkins c WHERE c.room = ?1 ORDER BY c.id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![room.as_str(), sql_limit(limit)], |row| {
                let attended: i64 = row.get(5)?;
                Ok(CheckinSummary {
                    id: row.get(0)?,
                    interval_secs: row.get(1)?,
                    opened_at: time_at(row, 2)?,
                    closes_at: time_at(row, 3)?,
                    closed: row.get(4)?,
                    attended: usize::try_from(attended)
                        .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(5, attended))?,
                })
            })?;
            let mut newest_first = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            newest_first.reverse();
            Ok(newest_first)
        })
        .await
    }

    async fn room_attendance(
        &self,
        room: &ChannelId,
        from_checkin: i64,
        limit: usize,
    ) -> Result<Vec<RoomAttendance>, StoreError> {
        let room = room.clone();
        self.read(move |conn| {
            // `checkins_by_room` finds the room's check-ins, `attendance_in_order` each one's
            // names in order.
            let mut stmt = conn.prepare_cached(
                "SELECT a.checkin, a.name FROM checkins c
                 JOIN attendance a ON a.checkin = c.id
                 WHERE c.room = ?1 AND c.id >= ?2
                 ORDER BY a.checkin DESC, a.seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                params![room.as_str(), from_checkin, sql_limit(limit)],
                |row| {
                    Ok(RoomAttendance {
                        checkin: row.get(0)?,
                        name: row.get(1)?,
                    })
                },
            )?;
            rows.collect()
        })
        .await
    }

    async fn mark_stream_start(
        &self,
        room: &ChannelId,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let room = room.clone();
        let at = time::rfc3339(at);
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO stream_starts (room, at) VALUES (?1, ?2)
                 ON CONFLICT (room) DO UPDATE SET at = excluded.at",
                params![room.as_str(), at],
            )?;
            Ok(())
        })
        .await
    }

    async fn stream_start(&self, room: &ChannelId) -> Result<Option<DateTime<Utc>>, StoreError> {
        let room = room.clone();
        self.read(move |conn| {
            conn.query_row(
                "SELECT at FROM stream_starts WHERE room = ?1",
                [room.as_str()],
                |row| time_at(row, 0),
            )
            .optional()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};
    use rusqlite::Connection;

    use super::*;
    use crate::Store;
    use shared_model::comment::{DraftDanmaku, NewDanmaku, TimeRule};

    fn room(name: &str) -> ChannelId {
        ChannelId::parse(name).unwrap()
    }

    /// A fixed time with sub-millisecond digits, which the store cuts off.
    fn noon() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap() + Duration::microseconds(123_456)
    }

    fn comment(text: &str) -> NewDanmaku {
        DraftDanmaku {
            author: "ann".into(),
            text: text.into(),
            ..Default::default()
        }
        .validate(TimeRule::Absent)
        .unwrap()
    }

    /// A database as version 2 of this code left it, written by hand so that a later edit of
    /// the migration steps cannot quietly change what is being migrated.
    fn write_version_2_database(path: &std::path::Path) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE danmaku (
                 channel TEXT    NOT NULL,
                 id      INTEGER NOT NULL,
                 author  TEXT    NOT NULL,
                 text    TEXT    NOT NULL,
                 color   TEXT    NOT NULL,
                 mode    TEXT    NOT NULL,
                 time    REAL,
                 sent_at TEXT    NOT NULL,
                 origin  TEXT,
                 PRIMARY KEY (channel, id)
             ) WITHOUT ROWID;
             CREATE INDEX danmaku_by_time ON danmaku (channel, time);
             CREATE UNIQUE INDEX danmaku_by_origin ON danmaku (channel, origin)
                 WHERE origin IS NOT NULL;
             INSERT INTO danmaku VALUES
                 ('live', 1, 'ann', 'first', '#ffffff', 'scroll', NULL,
                  '2024-01-01T00:00:00.000Z', NULL),
                 ('live', 2, 'bob', 'second', '#ff0000', 'top', NULL,
                  '2024-01-01T00:00:01.000Z', 'bilibili:9');
             PRAGMA user_version = 2;",
        )
        .unwrap();
    }

    #[tokio::test]
    async fn a_version_2_database_migrates_to_the_current_version_and_keeps_its_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.db");
        write_version_2_database(&path);

        let store = SqliteStore::open(&path).unwrap();
        let version: i64 = store
            .read(|conn| conn.query_row("PRAGMA user_version", [], |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(version, super::super::sqlite::SCHEMA_VERSION);
        let texts: Vec<String> = Store::after(&store, &room("live"), 0, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.text)
            .collect();
        assert_eq!(texts, ["first", "second"]);
        assert_eq!(
            store
                .append(&room("live"), comment("third"))
                .await
                .unwrap()
                .id,
            3
        );

        store
            .create_room(&room("live"), None, [3; 32])
            .await
            .unwrap()
            .unwrap();
        let checkin = store
            .open_checkin(&room("live"), 5, noon(), noon())
            .await
            .unwrap()
            .opened()
            .expect("no other check-in is open in the room");
        assert!(
            store
                .record_attendance(checkin.id, "ann", noon())
                .await
                .unwrap()
                .is_new()
        );
        drop(store);

        // Opening again migrates nothing and loses nothing.
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.attendance(checkin.id).await.unwrap().len(), 1);
        assert_eq!(Store::last_id(&store, &room("live")).await.unwrap(), 3);
    }

    /// A version 4 database (before check-in secrets) with an open and a closed check-in, made by
    /// the migration steps of that time (steps are never edited).
    fn write_version_4_database(path: &std::path::Path) {
        let conn = Connection::open(path).unwrap();
        crate::sqlite::migrate_to(&conn, 4).unwrap();
        conn.execute_batch(
            "INSERT INTO rooms VALUES ('live', NULL, zeroblob(32), '2025-03-01T11:00:00.000Z');
             INSERT INTO rooms VALUES ('other', NULL, zeroblob(32), '2025-03-01T11:00:00.000Z');
             INSERT INTO checkins (room, interval_secs, opened_at, closes_at, closed) VALUES
                 ('other', 5, '2025-03-01T11:00:00.000Z', '2025-03-01T11:01:00.000Z', 1),
                 ('live', 5, '2025-03-01T12:00:00.000Z', '2025-03-01T13:00:00.000Z', 0);
             INSERT INTO attendance VALUES (1, 'ann', '2025-03-01T11:00:30.000Z', 1),
                                           (1, 'bob', '2025-03-01T11:00:31.000Z', 2);",
        )
        .unwrap();
    }

    #[tokio::test]
    async fn check_ins_from_before_version_5_get_a_secret_once_and_keep_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v4.db");
        write_version_4_database(&path);

        let store = SqliteStore::open(&path).unwrap();
        let open = store.unclosed_checkins().await.unwrap();
        assert_eq!(open.len(), 1);
        let closed = store.checkin(1).await.unwrap().unwrap();
        assert!(closed.closed);
        assert_ne!(open[0].secret, closed.secret, "each its own");
        assert_ne!(open[0].secret.expose(), &[0; 32]);
        // The close from before the count was kept counts once and keeps it.
        assert_eq!(store.close_checkin(1).await.unwrap(), 2);
        drop(store);

        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            store.unclosed_checkins().await.unwrap(),
            open,
            "not given another"
        );
        assert_eq!(store.close_checkin(1).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_version_6_database_migrates_and_lists_its_rooms_check_ins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v6.db");
        {
            let conn = Connection::open(&path).unwrap();
            crate::sqlite::migrate_to(&conn, 6).unwrap();
            conn.execute_batch(
                "INSERT INTO rooms VALUES ('live', NULL, zeroblob(32), '2025-03-01T11:00:00.000Z');
                 INSERT INTO checkins
                     (room, interval_secs, opened_at, closes_at, closed, secret, attended)
                 VALUES
                     ('live', 5, '2025-03-01T11:00:00.000Z', '2025-03-01T11:01:00.000Z', 1,
                      zeroblob(32), 2),
                     ('live', 7, '2025-03-01T12:00:00.000Z', '2025-03-01T12:01:00.000Z', 0,
                      zeroblob(32), NULL);
                 INSERT INTO attendance VALUES (1, 'ann', '2025-03-01T11:00:30.000Z', 1),
                                               (1, 'bob', '2025-03-01T11:00:31.000Z', 2),
                                               (2, 'bob', '2025-03-01T12:00:31.000Z', 1);",
            )
            .unwrap();
        }

        let store = SqliteStore::open(&path).unwrap();
        let (version, indexed): (i64, i64) = store
            .read(|conn| {
                Ok((
                    conn.query_row("PRAGMA user_version", [], |r| r.get(0))?,
                    conn.query_row(
                        "SELECT COUNT(*) FROM sqlite_master
                         WHERE type = 'index' AND name = 'checkins_by_room'",
                        [],
                        |r| r.get(0),
                    )?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(
            (version, indexed),
            (super::super::sqlite::SCHEMA_VERSION, 1)
        );
        let listed: Vec<(i64, u32, bool, usize)> = store
            .room_checkins(&room("live"), 10)
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.id, c.interval_secs, c.closed, c.attended))
            .collect();
        assert_eq!(listed, [(1, 5, true, 2), (2, 7, false, 1)]);
        let names: Vec<(i64, String)> = store
            .room_attendance(&room("live"), 1, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|a| (a.checkin, a.name))
            .collect();
        assert_eq!(
            names,
            [(2, "bob".into()), (1, "ann".into()), (1, "bob".into())]
        );
    }
}
