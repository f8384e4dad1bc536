//! The embedded store: one SQLite file in WAL mode, one writer thread, a few reader threads.
//!
//! Why threads and not `spawn_blocking` per call: SQLite allows one writer at a time, so a single
//! thread that owns the write connection never waits on a lock, and it can *group commit*: every
//! append that queued up while the previous commit was syncing goes into the next transaction, so
//! one `fsync` acknowledges many comments. Readers run on their own connections (WAL lets them read
//! while the writer writes). Callers talk to the threads over channels and await a oneshot reply,
//! so no actix worker ever blocks on the disk.
//!
//! Durability: `journal_mode=WAL` with `synchronous=FULL` syncs the log at every commit, and an
//! append's reply is sent only after its commit returned.
//!
//! Other writes (imports, and the rooms and check-ins of [`super::RoomStore`], implemented in
//! `sqlite_rooms`) go through the same writer thread, each in a transaction of its own, so there
//! is never a second write connection to wait on the lock.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::thread;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crossbeam_channel::{Receiver, Sender};
use rusqlite::{Connection, OpenFlags, Row, Transaction, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::{AppendListener, ImportOutcome, ImportedDanmaku, Store, StoreError};
use crate::comment::{ChannelId, Color, Danmaku, Mode, NewDanmaku};
use crate::time;

/// Most appends committed in one transaction. Bounds the latency one slow batch adds.
const MAX_BATCH_APPENDS: usize = 512;

/// How long a connection waits for a lock held by another process before failing, in ms.
const BUSY_TIMEOUT_MS: u64 = 5_000;

/// The schema version this code writes (`PRAGMA user_version`): one more than the last step in
/// [`MIGRATIONS`].
const SCHEMA_VERSION: i64 = 3;

/// Tuning of [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Reader threads, each with its own connection.
    pub readers: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self { readers: 2 }
    }
}

/// Work waiting for the writer thread.
enum WriteJob {
    /// One comment; appends that queue up together share a transaction.
    Append {
        channel: ChannelId,
        new: NewDanmaku,
        reply: oneshot::Sender<Result<Danmaku, StoreError>>,
    },
    /// A whole archive, in a transaction of its own.
    Import {
        channel: ChannelId,
        items: Vec<ImportedDanmaku>,
        reply: oneshot::Sender<Result<ImportOutcome, StoreError>>,
    },
    /// Any other write, in a transaction of its own; it sends its own reply.
    Exec(ExecJob),
}

/// A write for the writer thread; it opens, commits and answers for itself (see
/// [`SqliteStore::write`]).
type ExecJob = Box<dyn FnOnce(&mut Connection) + Send>;

/// An append taken off the queue, waiting for its batch to commit.
struct PendingAppend {
    channel: ChannelId,
    new: NewDanmaku,
    reply: oneshot::Sender<Result<Danmaku, StoreError>>,
}

/// A query waiting for a reader thread; it sends its own reply.
type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// The embedded SQLite store. Cheap to clone: clones share the threads, which stop once the last
/// clone is dropped and the queued work is done.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Unbounded: senders must never block an async worker, and the services bound the inflow
    /// with per-client rate limits.
    writes: Sender<WriteJob>,
    /// Unbounded for the same reason; each job is a small closure.
    reads: Sender<ReadJob>,
    path: PathBuf,
    /// Told of every append after its commit. A std `RwLock`: written once or twice at start-up,
    /// read by the writer thread once per batch, never held across an await.
    listeners: Listeners,
}

/// The append listeners, shared with the writer thread.
type Listeners = Arc<RwLock<Vec<AppendListener>>>;

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed, folder included) the database at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// Opens the database at `path`, migrates it, and starts the writer and reader threads.
    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let open_error = |reason: String| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_error(e.to_string()))?;
        }
        let writer = open_writer(&path).map_err(|e| open_error(e.to_string()))?;
        let mut readers = Vec::with_capacity(options.readers.max(1));
        for _ in 0..options.readers.max(1) {
            readers.push(open_reader(&path).map_err(|e| open_error(e.to_string()))?);
        }

        let (writes, write_rx) = crossbeam_channel::unbounded();
        let (reads, read_rx) = crossbeam_channel::unbounded();
        let listeners = Listeners::default();
        let writer_listeners = listeners.clone();
        spawn_thread("danmaku-db-writer", move || {
            run_writer(writer, write_rx, &writer_listeners)
        })
        .map_err(|e| open_error(e.to_string()))?;
        for (n, conn) in readers.into_iter().enumerate() {
            let rx = read_rx.clone();
            spawn_thread(&format!("danmaku-db-reader-{n}"), move || {
                run_reader(conn, rx)
            })
            .map_err(|e| open_error(e.to_string()))?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                writes,
                reads,
                path,
                listeners,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `query` on a reader connection and awaits its result.
    pub(super) async fn read<T, F>(&self, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            // The caller may have gone away (a closed request); nothing to do then.
            let _ = reply.send(query(conn));
        });
        self.inner.reads.send(job).map_err(|_| StoreError::Closed)?;
        answer
            .await
            .map_err(|_| StoreError::Closed)?
            .map_err(|e| StoreError::Database(e.to_string()))
    }

    /// Runs `work` on the writer thread in a transaction of its own and awaits its result, which
    /// arrives only once the transaction is committed. An error from `work` rolls it back. Jobs
    /// run in the order they were sent, after any appends queued before them.
    pub(super) async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: ExecJob = Box::new(move |conn| {
            let result = conn.transaction().and_then(|tx| {
                let value = work(&tx)?;
                tx.commit()?;
                Ok(value)
            });
            // The caller may have gone away; the write stands either way.
            let _ = reply.send(result);
        });
        self.inner
            .writes
            .send(WriteJob::Exec(job))
            .map_err(|_| StoreError::Closed)?;
        answer
            .await
            .map_err(|_| StoreError::Closed)?
            .map_err(|e| StoreError::Database(e.to_string()))
    }
}

fn spawn_thread(name: &str, body: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
        .map(|_| ())
}

fn open_writer(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        log::warn!("SQLite refused WAL mode (got {mode}); durability holds, concurrency drops");
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    migrate(&conn)?;
    // After migrating: SQLite's advice is to alter tables with enforcement off. Only the writer
    // needs it on, as only the writer writes.
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(conn)
}

fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    Ok(conn)
}

/// Brings the schema to [`SCHEMA_VERSION`].
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    migrate_to(conn, SCHEMA_VERSION)
}

/// Runs the steps of [`MIGRATIONS`] that `conn` lacks, up to version `target`. Each step runs in
/// a `BEGIN IMMEDIATE` transaction that reads the version again, so two processes opening the same
/// file at once never run a step twice.
fn migrate_to(conn: &Connection, target: i64) -> rusqlite::Result<()> {
    let version = user_version(conn)?;
    if version > SCHEMA_VERSION {
        log::warn!("the database has schema version {version}, newer than this build's");
    }
    for (step, sql) in (1..=target)
        .zip(MIGRATIONS)
        .skip_while(|(step, _)| *step <= version)
    {
        let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
        if user_version(&tx)? < step {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", step)?;
        }
        tx.commit()?;
    }
    Ok(())
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// The schema, one step per version: step `n` (from 0) brings version `n` to `n + 1`. Databases in
/// the field ran the old steps, so steps are only ever added, never edited.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [
    // Version 1: comments. Ids are per channel: the primary key is `(channel, id)`, and
    // `WITHOUT ROWID` stores rows in that order, so "after id N" and "last N" are range scans.
    "CREATE TABLE IF NOT EXISTS danmaku (
         channel TEXT    NOT NULL,
         id      INTEGER NOT NULL,
         author  TEXT    NOT NULL,
         text    TEXT    NOT NULL,
         color   TEXT    NOT NULL,
         mode    TEXT    NOT NULL,
         time    REAL,
         sent_at TEXT    NOT NULL,
         PRIMARY KEY (channel, id)
     ) WITHOUT ROWID;
     CREATE INDEX IF NOT EXISTS danmaku_by_time ON danmaku (channel, time);",
    // Version 2: where an imported comment came from, unique per channel, so re-importing the
    // same archive adds nothing.
    "ALTER TABLE danmaku ADD COLUMN origin TEXT;
     CREATE UNIQUE INDEX danmaku_by_origin ON danmaku (channel, origin)
         WHERE origin IS NOT NULL;",
    // Version 3: rooms and their check-ins (see `sqlite_rooms`). Times are RFC 3339 UTC text with
    // milliseconds. `AUTOINCREMENT` so a check-in id is never reused, even after a delete. The
    // attendance order is `seq`, not the rowid, which `VACUUM` may renumber; attendance and wrong
    // codes are looked up by `(checkin, name)`, so they are stored in that order.
    "CREATE TABLE rooms (
         room         TEXT PRIMARY KEY,
         title        TEXT,
         token_digest BLOB NOT NULL,
         created_at   TEXT NOT NULL
     );
     CREATE TABLE checkins (
         id            INTEGER PRIMARY KEY AUTOINCREMENT,
         room          TEXT    NOT NULL REFERENCES rooms (room),
         interval_secs INTEGER NOT NULL,
         opened_at     TEXT    NOT NULL,
         closes_at     TEXT    NOT NULL,
         closed        INTEGER NOT NULL DEFAULT 0
     );
     CREATE INDEX checkins_unclosed ON checkins (id) WHERE closed = 0;
     CREATE TABLE attendance (
         checkin INTEGER NOT NULL REFERENCES checkins (id),
         name    TEXT    NOT NULL,
         at      TEXT    NOT NULL,
         seq     INTEGER NOT NULL,
         PRIMARY KEY (checkin, name)
     ) WITHOUT ROWID;
     CREATE UNIQUE INDEX attendance_in_order ON attendance (checkin, seq);
     CREATE TABLE wrong_codes (
         checkin INTEGER NOT NULL REFERENCES checkins (id),
         name    TEXT    NOT NULL,
         count   INTEGER NOT NULL,
         PRIMARY KEY (checkin, name)
     ) WITHOUT ROWID;",
];

/// The writer thread: takes one job; for an append, gathers the appends queued behind it and
/// commits them together, then answers each. Any other job is a transaction of its own. Jobs
/// commit in the order they were queued. Exits when every [`SqliteStore`] clone is gone and the
/// queue is empty.
fn run_writer(mut conn: Connection, jobs: Receiver<WriteJob>, listeners: &Listeners) {
    let mut next = jobs.recv().ok();
    while let Some(job) = next.take() {
        match job {
            WriteJob::Import {
                channel,
                items,
                reply,
            } => {
                let result = commit_import(&mut conn, &channel, &items).map_err(|e| {
                    log::error!(
                        "importing {} comments into {channel} failed: {e}",
                        items.len()
                    );
                    StoreError::Database(e.to_string())
                });
                let _ = reply.send(result);
            }
            WriteJob::Exec(work) => run_exec(&mut conn, work),
            WriteJob::Append {
                channel,
                new,
                reply,
            } => {
                let mut batch = vec![PendingAppend {
                    channel,
                    new,
                    reply,
                }];
                while batch.len() < MAX_BATCH_APPENDS {
                    match jobs.try_recv() {
                        Ok(WriteJob::Append {
                            channel,
                            new,
                            reply,
                        }) => batch.push(PendingAppend {
                            channel,
                            new,
                            reply,
                        }),
                        // Any other job ends the batch; it runs next, on its own.
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                answer_batch(&mut conn, batch, listeners);
            }
        }
        if next.is_none() {
            next = jobs.recv().ok();
        }
    }
    log::debug!("database writer stopped");
}

/// Runs one [`WriteJob::Exec`]. A panic in it is a bug, but it must not take the writer thread,
/// and so every later write, down with it: its transaction rolls back as it unwinds (which is why
/// the connection is safe to keep using), its caller sees [`StoreError::Closed`], and the writer
/// goes on.
fn run_exec(conn: &mut Connection, work: ExecJob) {
    if std::panic::catch_unwind(AssertUnwindSafe(|| work(conn))).is_err() {
        log::error!("a database write panicked; it was rolled back");
    }
}

fn answer_batch(conn: &mut Connection, batch: Vec<PendingAppend>, listeners: &Listeners) {
    match commit_batch(conn, &batch) {
        Ok(items) => {
            {
                // Read locks are never poisoned by listeners (they run under a read lock and are
                // caught below); a poisoned lock would still hold a whole list.
                let listeners = listeners.read().unwrap_or_else(|e| e.into_inner());
                for item in &items {
                    for listener in listeners.iter() {
                        // A listener that panics must not take the writer thread (and every later
                        // append) down with it; the comment is committed either way.
                        let heard = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            listener(item)
                        }));
                        if heard.is_err() {
                            log::error!("an append listener panicked on comment {}", item.id);
                        }
                    }
                }
            }
            for (job, item) in batch.into_iter().zip(items) {
                let _ = job.reply.send(Ok(item));
            }
        }
        Err(e) => {
            log::error!("committing {} comments failed: {e}", batch.len());
            for job in batch {
                let _ = job.reply.send(Err(StoreError::Database(e.to_string())));
            }
        }
    }
}

/// The insert every write uses. Each id is `MAX(id) + 1` of its channel, read inside the same
/// transaction, so ids stay dense and increasing even if another process writes. `OR IGNORE`
/// only ever skips a row whose origin the channel already has (imports); it returns no id then.
const INSERT: &str = "INSERT OR IGNORE INTO danmaku
         (channel, id, author, text, color, mode, time, sent_at, origin)
     SELECT ?1, COALESCE(MAX(id), 0) + 1, ?2, ?3, ?4, ?5, ?6, ?7, ?8
     FROM danmaku WHERE channel = ?1
     RETURNING id";

/// Inserts every append in one transaction.
fn commit_batch(conn: &mut Connection, batch: &[PendingAppend]) -> rusqlite::Result<Vec<Danmaku>> {
    let tx = conn.transaction()?;
    let mut items = Vec::with_capacity(batch.len());
    {
        let mut insert = tx.prepare_cached(INSERT)?;
        for job in batch {
            let sent_at = time::now();
            let new = &job.new;
            let id: i64 = insert.query_row(
                params![
                    job.channel.as_str(),
                    new.author,
                    new.text,
                    new.color.as_str(),
                    new.mode.as_str(),
                    new.time,
                    time::rfc3339(sent_at),
                    None::<String>,
                ],
                |r| r.get(0),
            )?;
            items.push(Danmaku {
                id,
                channel: job.channel.clone(),
                author: new.author.clone(),
                text: new.text.clone(),
                color: new.color.clone(),
                mode: new.mode,
                time: new.time,
                sent_at,
            });
        }
    }
    tx.commit()?;
    Ok(items)
}

/// Inserts an archive in one transaction, skipping origins the channel already has.
fn commit_import(
    conn: &mut Connection,
    channel: &ChannelId,
    items: &[ImportedDanmaku],
) -> rusqlite::Result<ImportOutcome> {
    let tx = conn.transaction()?;
    let mut outcome = ImportOutcome::default();
    {
        let mut insert = tx.prepare_cached(INSERT)?;
        let now = time::now();
        for item in items {
            let new = &item.new;
            let mut rows = insert.query(params![
                channel.as_str(),
                new.author,
                new.text,
                new.color.as_str(),
                new.mode.as_str(),
                new.time,
                time::rfc3339(item.sent_at.unwrap_or(now)),
                item.origin,
            ])?;
            if rows.next()?.is_some() {
                outcome.added += 1;
            } else {
                outcome.duplicates += 1;
            }
        }
    }
    tx.commit()?;
    Ok(outcome)
}

fn run_reader(conn: Connection, jobs: Receiver<ReadJob>) {
    while let Ok(job) = jobs.recv() {
        job(&conn);
    }
}

/// The columns every query selects, in the order [`row_to_danmaku`] reads them.
const COLUMNS: &str = "id, author, text, color, mode, time, sent_at";

fn row_to_danmaku(channel: &ChannelId, row: &Row<'_>) -> rusqlite::Result<Danmaku> {
    let bad = |col: usize, e: crate::error::ApiError| {
        rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, Box::new(e))
    };
    let color: String = row.get(3)?;
    let mode: String = row.get(4)?;
    Ok(Danmaku {
        id: row.get(0)?,
        channel: channel.clone(),
        author: row.get(1)?,
        text: row.get(2)?,
        color: Color::parse(&color).map_err(|e| bad(3, e))?,
        mode: mode.parse::<Mode>().map_err(|e| bad(4, e))?,
        time: row.get(5)?,
        sent_at: time_at(row, 6)?,
    })
}

/// Reads a time stored as [`time::rfc3339`] text from column `col`.
pub(super) fn time_at(row: &Row<'_>, col: usize) -> rusqlite::Result<DateTime<Utc>> {
    let text: String = row.get(col)?;
    time::parse(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn collect(
    conn: &Connection,
    sql: &str,
    channel: &ChannelId,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Vec<Danmaku>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, |row| row_to_danmaku(channel, row))?;
    rows.collect()
}

/// SQLite takes limits as i64; ours are small `usize`s, so saturate rather than fail.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[async_trait]
impl Store for SqliteStore {
    async fn append(&self, channel: &ChannelId, new: NewDanmaku) -> Result<Danmaku, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .writes
            .send(WriteJob::Append {
                channel: channel.clone(),
                new,
                reply,
            })
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    fn on_append(&self, listener: AppendListener) {
        self.inner
            .listeners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener);
    }

    async fn import(
        &self,
        channel: &ChannelId,
        items: Vec<ImportedDanmaku>,
    ) -> Result<ImportOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .writes
            .send(WriteJob::Import {
                channel: channel.clone(),
                items,
                reply,
            })
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn after(
        &self,
        channel: &ChannelId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Danmaku>, StoreError> {
        let channel = channel.clone();
        self.read(move |conn| {
            collect(
                conn,
                &format!(
                    "SELECT {COLUMNS} FROM danmaku WHERE channel = ?1 AND id > ?2
                     ORDER BY id LIMIT ?3"
                ),
                &channel,
                params![channel.as_str(), after, sql_limit(limit)],
            )
        })
        .await
    }

    async fn latest(&self, channel: &ChannelId, limit: usize) -> Result<Vec<Danmaku>, StoreError> {
        let channel = channel.clone();
        let mut items = self
            .read(move |conn| {
                collect(
                    conn,
                    &format!(
                        "SELECT {COLUMNS} FROM danmaku WHERE channel = ?1
                         ORDER BY id DESC LIMIT ?2"
                    ),
                    &channel,
                    params![channel.as_str(), sql_limit(limit)],
                )
            })
            .await?;
        items.reverse();
        Ok(items)
    }

    async fn time_window(
        &self,
        channel: &ChannelId,
        from: f64,
        to: f64,
        limit: usize,
    ) -> Result<Vec<Danmaku>, StoreError> {
        let channel = channel.clone();
        self.read(move |conn| {
            collect(
                conn,
                &format!(
                    "SELECT {COLUMNS} FROM danmaku
                     WHERE channel = ?1 AND time >= ?2 AND time < ?3
                     ORDER BY time, id LIMIT ?4"
                ),
                &channel,
                params![channel.as_str(), from, to, sql_limit(limit)],
            )
        })
        .await
    }

    async fn last_id(&self, channel: &ChannelId) -> Result<i64, StoreError> {
        let channel = channel.clone();
        self.read(move |conn| {
            conn.query_row(
                "SELECT COALESCE(MAX(id), 0) FROM danmaku WHERE channel = ?1",
                [channel.as_str()],
                |r| r.get(0),
            )
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comment::{DraftDanmaku, TimeRule};

    fn channel(name: &str) -> ChannelId {
        ChannelId::parse(name).unwrap()
    }

    fn comment(text: &str, time: Option<f64>) -> NewDanmaku {
        let draft = DraftDanmaku {
            author: "ann".into(),
            text: text.into(),
            time,
            ..Default::default()
        };
        let rule = if time.is_some() {
            TimeRule::Required
        } else {
            TimeRule::Absent
        };
        draft.validate(rule).unwrap()
    }

    #[tokio::test]
    async fn ids_increase_per_channel_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/folder/danmaku.db");
        {
            let store = SqliteStore::open(&path).unwrap();
            let a1 = store
                .append(&channel("a"), comment("a1", None))
                .await
                .unwrap();
            let b1 = store
                .append(&channel("b"), comment("b1", None))
                .await
                .unwrap();
            let a2 = store
                .append(&channel("a"), comment("a2", None))
                .await
                .unwrap();
            assert_eq!((a1.id, b1.id, a2.id), (1, 1, 2));
            // The text on disk, as earlier versions wrote it.
            let stored: String = store
                .read(|conn| {
                    conn.query_row(
                        "SELECT sent_at FROM danmaku WHERE channel = 'a' AND id = 1",
                        [],
                        |r| r.get(0),
                    )
                })
                .await
                .unwrap();
            assert!(stored.ends_with('Z') && stored.len() == 24, "{stored}");
            assert_eq!(stored, time::rfc3339(a1.sent_at));
        }
        let store = SqliteStore::open(&path).unwrap();
        let a = store.after(&channel("a"), 0, 100).await.unwrap();
        assert_eq!(
            a.iter().map(|d| d.text.as_str()).collect::<Vec<_>>(),
            ["a1", "a2"]
        );
        assert_eq!(store.last_id(&channel("a")).await.unwrap(), 2);
        assert_eq!(store.last_id(&channel("empty")).await.unwrap(), 0);
        let a3 = store
            .append(&channel("a"), comment("a3", None))
            .await
            .unwrap();
        assert_eq!(a3.id, 3);
    }

    #[tokio::test]
    async fn the_database_is_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        let store = SqliteStore::open(&path).unwrap();
        store
            .append(&channel("a"), comment("x", None))
            .await
            .unwrap();
        let conn = Connection::open(&path).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_get_distinct_dense_ids() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("d.db")).unwrap();
        let tasks: Vec<_> = (0..200)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .append(&channel("room"), comment(&format!("c{n}"), None))
                        .await
                        .unwrap()
                        .id
                })
            })
            .collect();
        let mut ids = Vec::new();
        for task in tasks {
            ids.push(task.await.unwrap());
        }
        ids.sort();
        assert_eq!(ids, (1..=200).collect::<Vec<i64>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listeners_hear_every_append_in_commit_order_and_no_import() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("d.db")).unwrap();
        let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = heard.clone();
        store.on_append(Box::new(move |item| sink.lock().unwrap().push(item.id)));
        let tasks: Vec<_> = (0..100)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .append(&channel("r"), comment(&format!("c{n}"), None))
                        .await
                        .unwrap()
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        store
            .import(
                &channel("r"),
                vec![ImportedDanmaku {
                    new: comment("old", None),
                    origin: "o".into(),
                    sent_at: None,
                }],
            )
            .await
            .unwrap();
        assert_eq!(*heard.lock().unwrap(), (1..=100).collect::<Vec<i64>>());
    }

    #[tokio::test]
    async fn after_and_latest_page_in_id_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("d.db")).unwrap();
        let room = channel("room");
        for n in 1..=10 {
            store
                .append(&room, comment(&format!("c{n}"), None))
                .await
                .unwrap();
        }
        let page = store.after(&room, 3, 4).await.unwrap();
        assert_eq!(page.iter().map(|d| d.id).collect::<Vec<_>>(), [4, 5, 6, 7]);
        let last = store.latest(&room, 3).await.unwrap();
        assert_eq!(last.iter().map(|d| d.id).collect::<Vec<_>>(), [8, 9, 10]);
        assert!(store.after(&room, 10, 100).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn time_window_is_half_open_and_ordered_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("d.db")).unwrap();
        let video = channel("v");
        for t in [5.0, 1.0, 9.99, 10.0, 0.0, 3.5] {
            store
                .append(&video, comment(&format!("t{t}"), Some(t)))
                .await
                .unwrap();
        }
        let window = store.time_window(&video, 1.0, 10.0, 100).await.unwrap();
        let times: Vec<f64> = window.iter().map(|d| d.time.unwrap()).collect();
        assert_eq!(times, [1.0, 3.5, 5.0, 9.99]);
    }

    #[tokio::test]
    async fn imports_are_idempotent_by_origin_and_keep_their_send_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("d.db")).unwrap();
        let video = channel("v");
        store
            .append(&video, comment("live", Some(1.0)))
            .await
            .unwrap();
        let archive = |origins: &[&str]| -> Vec<ImportedDanmaku> {
            origins
                .iter()
                .map(|o| ImportedDanmaku {
                    new: comment(&format!("from {o}"), Some(2.0)),
                    origin: format!("test:{o}"),
                    sent_at: Some(time::parse("2020-01-02T03:04:05.000Z").unwrap()),
                })
                .collect()
        };
        let first = store
            .import(&video, archive(&["a", "b", "c"]))
            .await
            .unwrap();
        assert_eq!(
            first,
            ImportOutcome {
                added: 3,
                duplicates: 0
            }
        );
        let again = store
            .import(&video, archive(&["a", "b", "c", "d"]))
            .await
            .unwrap();
        assert_eq!(
            again,
            ImportOutcome {
                added: 1,
                duplicates: 3
            }
        );
        let other = store.import(&channel("w"), archive(&["a"])).await.unwrap();
        assert_eq!(other.added, 1, "origins are unique per channel only");
        let all = store.after(&video, 0, 100).await.unwrap();
        assert_eq!(
            all.iter().map(|d| d.id).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(time::rfc3339(all[1].sent_at), "2020-01-02T03:04:05.000Z");
        let next = store
            .append(&video, comment("after", Some(3.0)))
            .await
            .unwrap();
        assert_eq!(next.id, 6);
    }

    #[tokio::test]
    async fn a_version_1_database_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).unwrap();
            migrate_to(&conn, 1).unwrap();
            conn.execute(
                "INSERT INTO danmaku VALUES
                     ('r', 1, 'a', 'old', '#ffffff', 'scroll', NULL, '2019-05-06T07:08:09.000Z')",
                [],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let items = store.after(&channel("r"), 0, 10).await.unwrap();
        assert_eq!(items[0].text, "old");
        let outcome = store
            .import(
                &channel("r"),
                vec![ImportedDanmaku {
                    new: comment("new", None),
                    origin: "o".into(),
                    sent_at: None,
                }],
            )
            .await
            .unwrap();
        assert_eq!(outcome.added, 1);
    }

    /// Sends an append straight to the writer, so the test decides the queue's order.
    fn queue_append(
        store: &SqliteStore,
        text: &str,
    ) -> oneshot::Receiver<Result<Danmaku, StoreError>> {
        let (reply, answer) = oneshot::channel();
        store
            .inner
            .writes
            .send(WriteJob::Append {
                channel: channel("r"),
                new: comment(text, None),
                reply,
            })
            .unwrap();
        answer
    }

    #[tokio::test]
    async fn a_write_queued_among_appends_ends_their_batch_and_runs_next() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("d.db")).unwrap();
        // Hold the writer in a job of its own until everything below is queued behind it.
        let (entered, writer_held) = oneshot::channel();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        store
            .inner
            .writes
            .send(WriteJob::Exec(Box::new(move |_| {
                let _ = entered.send(());
                let _ = gate.recv();
            })))
            .unwrap();
        writer_held.await.unwrap();

        let first: Vec<_> = (1..=3)
            .map(|n| queue_append(&store, &format!("a{n}")))
            .collect();
        let seen = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .write(|tx| tx.query_row("SELECT COUNT(*) FROM danmaku", [], |r| r.get(0)))
                    .await
            }
        });
        // `write` sends its job when first polled; wait until it is queued behind the appends.
        while store.inner.writes.len() < 4 {
            tokio::task::yield_now().await;
        }
        let second: Vec<_> = (4..=5)
            .map(|n| queue_append(&store, &format!("a{n}")))
            .collect();
        release.send(()).unwrap();

        let seen: i64 = seen.await.unwrap().unwrap();
        assert_eq!(
            seen, 3,
            "the write runs after the appends before it, before those after"
        );
        let mut ids = Vec::new();
        for answer in first.into_iter().chain(second) {
            ids.push(answer.await.unwrap().unwrap().id);
        }
        assert_eq!(ids, [1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn a_failed_write_rolls_back_and_a_panicking_one_spares_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("d.db")).unwrap();
        let failed = store
            .write(|tx| {
                tx.execute("INSERT INTO rooms VALUES ('r', NULL, x'00', 'now')", [])?;
                tx.execute("INSERT INTO nowhere VALUES (1)", [])
            })
            .await;
        assert!(matches!(failed, Err(StoreError::Database(_))), "{failed:?}");
        let panicked = store
            .write(|tx| -> rusqlite::Result<()> {
                tx.execute("INSERT INTO rooms VALUES ('p', NULL, x'00', 'now')", [])?;
                panic!("a bug in a write")
            })
            .await;
        assert!(matches!(panicked, Err(StoreError::Closed)), "{panicked:?}");

        let rooms: i64 = store
            .read(|conn| conn.query_row("SELECT COUNT(*) FROM rooms", [], |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(rooms, 0);
        let item = store
            .append(&channel("r"), comment("still here", None))
            .await
            .unwrap();
        assert_eq!(item.id, 1);
    }

    #[tokio::test]
    async fn stored_fields_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("d.db")).unwrap();
        let draft = DraftDanmaku {
            author: "作者".into(),
            text: "弹幕 🎉 <b>".into(),
            color: Some("#FF8800".into()),
            mode: Some("bottom".into()),
            time: Some(12.25),
        };
        let stored = store
            .append(&channel("v"), draft.validate(TimeRule::Required).unwrap())
            .await
            .unwrap();
        let read = store.after(&channel("v"), 0, 10).await.unwrap();
        assert_eq!(read, vec![stored.clone()]);
        assert_eq!(stored.color.as_str(), "#ff8800");
        assert_eq!(stored.mode, Mode::Bottom);
        assert_eq!(stored.text, "弹幕 🎉 <b>");
    }
}
