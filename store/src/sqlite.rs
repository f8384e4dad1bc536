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
//! is never a second write connection to wait on the lock. They never split a group commit: one
//! found among queued appends is set aside and runs right after their batch commits.
//!
//! Faults: every call answers within [`SqliteOptions::timeout`] ([`StoreError::Unavailable`]
//! when the threads do not answer in time, as on a stalled disk), and work whose caller has given
//! up is dropped unstarted. A panic in a write (a bug) fails that write or batch, rolls it back,
//! and the writer goes on; a panic anywhere else in the writer restarts it on a fresh connection.
//! Reader threads survive a panicking query. A write that fails for want of the database (an I/O
//! error, a full disk, a lock held elsewhere) marks the store unhealthy until a write commits
//! again; [`Store::health`] says so, and retries such a write itself.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior,
    config::DbConfig, params,
};
use tokio::sync::oneshot;

use super::{
    AppendListener, Committed, Density, ImportOutcome, ImportedDanmaku, Store, StoreError,
    density_scale,
};
use shared_model::comment::{ChannelId, Color, Danmaku, Mode, NewDanmaku};
use shared_model::time;

/// Most appends committed in one transaction. Bounds the latency one slow batch adds.
const MAX_BATCH_APPENDS: usize = 512;

/// Most other writes set aside while gathering a batch of appends; past this the batch stops
/// growing and commits, so the writes set aside wait for at most one batch.
const MAX_SET_ASIDE: usize = 512;

/// How long a connection waits for a lock held by another process before failing, in ms.
const BUSY_TIMEOUT_MS: u64 = 5_000;

/// How long a call may wait for its answer by default ([`SqliteOptions::timeout`]).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest deadline taken; longer ones are cut to it (so `now + timeout` cannot overflow).
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// How often the writer tries to reopen the database after losing its connection.
const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

/// How often the checkpointer copies what the WAL holds into the database file (see
/// [`run_checkpointer`]). One with nothing to copy costs a few reads of shared memory.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// The schema version this code writes (`PRAGMA user_version`): one more than the last step in
/// [`MIGRATIONS`].
pub(super) const SCHEMA_VERSION: i64 = 10;

/// Tuning of [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Reader threads, each with its own connection.
    pub readers: usize,
    /// How long a call may wait for its answer, queueing included, before it fails with
    /// [`StoreError::Unavailable`]. Work still queued when its caller's deadline passed is
    /// dropped unstarted; work already started finishes (a write that started may commit after
    /// its caller was told `unavailable`).
    pub timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            readers: 2,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Work waiting for the writer thread.
enum WriteJob {
    /// One comment; appends that queue up together share a transaction.
    Append(PendingAppend),
    /// A whole archive, in a transaction of its own.
    Import {
        channel: ChannelId,
        items: Vec<ImportedDanmaku>,
        reply: oneshot::Sender<Result<ImportOutcome, StoreError>>,
        deadline: Instant,
    },
    /// Any other write, in a transaction of its own; it sends its own reply.
    Exec(ExecJob),
}

/// A write for the writer thread; it opens, commits and answers for itself (see
/// [`SqliteStore::write`]), and says how it went. Given no connection (the writer has none), it
/// answers [`StoreError::Unavailable`] with the reason in [`Vitals`].
type ExecJob = Box<dyn FnOnce(Option<&mut Connection>, &Shared) -> Outcome + Send>;

/// An append waiting for its batch to commit.
struct PendingAppend {
    channel: ChannelId,
    new: NewDanmaku,
    reply: oneshot::Sender<Result<Danmaku, StoreError>>,
    /// When its caller stops waiting.
    deadline: Instant,
}

/// A query waiting for a reader thread; it sends its own reply.
type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// What a write did, for the store's health.
enum Outcome {
    /// It committed: the database takes writes.
    Committed,
    /// It failed for want of the database (see [`is_unavailable`]).
    Unavailable(String),
    /// Anything else (refused by a rule, skipped, a bug): says nothing about the database.
    Other,
}

impl Outcome {
    fn of<T>(result: &Result<T, StoreError>) -> Self {
        match result {
            Ok(_) => Self::Committed,
            Err(StoreError::Unavailable(reason)) => Self::Unavailable(reason.clone()),
            Err(_) => Self::Other,
        }
    }
}

/// How the writer is doing, for [`Store::health`]. Std mutexes: held for a copy of a string,
/// never across an await.
#[derive(Debug, Default)]
struct Vitals {
    /// Why the writer takes no writes now (it lost its connection and cannot reopen the
    /// database); `None` while it runs.
    down: Mutex<Option<String>>,
    /// Why the last write failed, when it failed for want of the database; cleared by the next
    /// write that commits.
    failing: Mutex<Option<String>>,
}

impl Vitals {
    fn down(&self) -> Option<String> {
        self.down.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_down(&self, reason: Option<String>) {
        *self.down.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }

    fn failing(&self) -> Option<String> {
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn record(&self, outcome: Outcome) {
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Outcome::Committed => {
                if failing.take().is_some() {
                    log::info!("the database takes writes again");
                }
            }
            Outcome::Unavailable(reason) => *failing = Some(reason),
            Outcome::Other => {}
        }
    }
}

/// Faults a test can inject into a real store (feature `testing` only): they act where real
/// faults strike, in the database threads.
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Default)]
pub struct Faults {
    stalled: std::sync::atomic::AtomicBool,
    panic_next_batch: std::sync::atomic::AtomicBool,
    fail_writes: std::sync::atomic::AtomicBool,
}

#[cfg(any(test, feature = "testing"))]
impl Faults {
    /// While `on`, the writer and reader threads take no new job, as on a disk that hangs: calls
    /// queue up and fail when their deadline passes.
    pub fn stall(&self, on: bool) {
        self.stalled.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// The next batch of appends panics inside its transaction, after its inserts and before
    /// its commit.
    pub fn panic_next_batch(&self) {
        self.panic_next_batch
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// While `on`, every write fails the way a failing disk makes it fail (`SQLITE_IOERR`),
    /// before it touches the database.
    pub fn fail_writes(&self, on: bool) {
        self.fail_writes
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    fn wait_while_stalled(&self) {
        while self.stalled.load(std::sync::atomic::Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn take_panic(&self) -> bool {
        self.panic_next_batch
            .swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    fn injected_failure(&self) -> rusqlite::Result<()> {
        if self.fail_writes.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                Some("injected I/O failure".into()),
            ));
        }
        Ok(())
    }
}

/// Without the `testing` feature there are no faults to inject; these compile to nothing.
#[cfg(not(any(test, feature = "testing")))]
#[derive(Debug, Default)]
struct Faults;

#[cfg(not(any(test, feature = "testing")))]
impl Faults {
    fn wait_while_stalled(&self) {}

    fn take_panic(&self) -> bool {
        false
    }

    fn injected_failure(&self) -> rusqlite::Result<()> {
        Ok(())
    }
}

/// What the callers and the database threads share.
#[derive(Default)]
struct Shared {
    /// Told of every append after its commit. A std `RwLock`: written once or twice at start-up,
    /// read by the writer thread once per batch, never held across an await.
    listeners: RwLock<Vec<AppendListener>>,
    vitals: Vitals,
    faults: Faults,
}

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
    /// Never sent on: dropping it (with the last clone) stops the checkpointer.
    _checkpoints: Sender<()>,
    path: PathBuf,
    /// How long a call waits for its answer.
    timeout: Duration,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("timeout", &self.inner.timeout)
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
        let shared = Arc::new(Shared::default());
        let (writer_path, writer_shared) = (path.clone(), shared.clone());
        spawn_thread("danmaku-db-writer", move || {
            run_writer(&writer_path, writer, &write_rx, &writer_shared)
        })
        .map_err(|e| open_error(e.to_string()))?;
        for (n, conn) in readers.into_iter().enumerate() {
            let (rx, shared) = (read_rx.clone(), shared.clone());
            spawn_thread(&format!("danmaku-db-reader-{n}"), move || {
                run_reader(conn, rx, &shared)
            })
            .map_err(|e| open_error(e.to_string()))?;
        }
        let (checkpoints, stop_rx) = crossbeam_channel::bounded(0);
        let checkpointer_path = path.clone();
        spawn_thread("danmaku-db-checkpoint", move || {
            run_checkpointer(&checkpointer_path, &stop_rx)
        })
        .map_err(|e| open_error(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                writes,
                reads,
                _checkpoints: checkpoints,
                path,
                timeout: options.timeout.min(MAX_TIMEOUT),
                shared,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The deadline of every call.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// The faults a test can inject into this store's threads.
    #[cfg(any(test, feature = "testing"))]
    pub fn faults(&self) -> &Faults {
        &self.inner.shared.faults
    }

    /// When a call made now stops waiting.
    fn deadline(&self) -> Instant {
        Instant::now() + self.inner.timeout
    }

    /// Awaits a database thread's answer to `what`, at most until the deadline.
    async fn answer<T>(
        &self,
        what: &str,
        answer: oneshot::Receiver<Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.inner.timeout, answer).await {
            Ok(Ok(result)) => result,
            // The job was dropped without an answer: it panicked (the thread logged it and went
            // on), or the writer restarted with it in hand.
            Ok(Err(_)) => Err(StoreError::Database(format!(
                "{what} was dropped by the database thread (it panicked; see the log)"
            ))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "{what}: no answer from the database within {} ms",
                self.inner.timeout.as_millis()
            ))),
        }
    }

    /// Runs `query` on a reader connection and awaits its result.
    pub(super) async fn read<T, F>(&self, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let deadline = self.deadline();
        let job: ReadJob = Box::new(move |conn| {
            // The caller may have gone away (a closed request, its deadline); nothing to do then.
            let result = if Instant::now() >= deadline {
                Err(gave_up())
            } else {
                query(conn).map_err(db_error)
            };
            let _ = reply.send(result);
        });
        self.inner.reads.send(job).map_err(|_| StoreError::Closed)?;
        self.answer("a read", answer).await
    }

    /// Tells the listeners of `what`, committed by a write of this store.
    pub(super) fn tell(&self, what: Committed<'_>) {
        tell_listeners(&self.inner.shared, what);
    }

    /// Runs `work` on the writer thread in a transaction of its own and awaits its result, which
    /// arrives only once the transaction is committed. An error from `work` rolls it back. Jobs
    /// run in the order they were sent, after any appends queued before them (and maybe after
    /// appends queued just behind them, which join the batch ahead).
    pub(super) async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let deadline = self.deadline();
        let job: ExecJob = Box::new(move |conn, shared| {
            let (result, outcome) = match conn {
                None => (Err(writer_down(shared)), Outcome::Other),
                // Its caller was told `unavailable`; doing it now would contradict that.
                Some(_) if Instant::now() >= deadline => (Err(gave_up()), Outcome::Other),
                Some(conn) => {
                    let result = shared
                        .faults
                        .injected_failure()
                        .and_then(|()| write_transaction(conn))
                        .and_then(|tx| {
                            let value = work(&tx)?;
                            tx.commit()?;
                            Ok(value)
                        })
                        .map_err(db_error);
                    let outcome = Outcome::of(&result);
                    (result, outcome)
                }
            };
            // The caller may have gone away; the write stands either way.
            let _ = reply.send(result);
            outcome
        });
        self.inner
            .writes
            .send(WriteJob::Exec(job))
            .map_err(|_| StoreError::Closed)?;
        self.answer("a write", answer).await
    }
}

/// The answer to work whose caller stopped waiting before it started.
fn gave_up() -> StoreError {
    StoreError::Unavailable("its caller's deadline passed before it started".into())
}

/// The answer to a write while the writer has no connection.
fn writer_down(shared: &Shared) -> StoreError {
    StoreError::Unavailable(
        shared
            .vitals
            .down()
            .unwrap_or_else(|| "the database writer is restarting".into()),
    )
}

/// A database error as a [`StoreError`]: [`StoreError::Unavailable`] when it is the database
/// that cannot serve now ([`is_unavailable`]), [`StoreError::Database`] otherwise.
fn db_error(e: rusqlite::Error) -> StoreError {
    if is_unavailable(&e) {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Database(e.to_string())
    }
}

/// Whether `e` says the database cannot serve now and may later (a lock held elsewhere, an I/O
/// error, a full disk, a file that cannot be opened), rather than that the request or the code
/// is wrong.
fn is_unavailable(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode as C;
    matches!(
        e.sqlite_error_code(),
        Some(
            C::DatabaseBusy
                | C::DatabaseLocked
                | C::SystemIoFailure
                | C::DiskFull
                | C::CannotOpen
                | C::OutOfMemory
                | C::ReadOnly
                | C::PermissionDenied
                | C::FileLockingProtocolFailed
        )
    )
}

/// A write transaction that takes the write lock at `BEGIN`. A deferred one that reads first
/// (a check-in's "is one open?") and writes after would, when another process committed in
/// between, fail at once with `SQLITE_BUSY` (its snapshot is stale, so waiting cannot help);
/// taking the lock first makes it wait its turn (up to the busy timeout) instead.
fn write_transaction(conn: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
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
    plan_once(&conn)?;
    let mode = enter_wal(&conn)?;
    if !mode.eq_ignore_ascii_case("wal") {
        log::warn!("SQLite refused WAL mode (got {mode}); durability holds, concurrency drops");
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Checkpoints run on a thread of their own (`run_checkpointer`), never inside a commit.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    migrate(&conn)?;
    super::sqlite_rooms::fill_missing_secrets(&conn)?;
    // After migrating: SQLite's advice is to alter tables with enforcement off. Only the writer
    // needs it on, as only the writer writes.
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(conn)
}

/// Switches `conn` to WAL mode and returns the journal mode it got.
///
/// The switch takes an exclusive lock, and SQLite answers `SQLITE_BUSY` at once, without its busy
/// handler, when another connection opening a brand-new file at that moment holds the lock it
/// would wait for (several instances starting together on one fresh file did, about one start in
/// ten on a loaded machine). So this retries on its own, for as long as the busy timeout.
fn enter_wal(conn: &Connection) -> rusqlite::Result<String> {
    let deadline = Instant::now() + Duration::from_millis(BUSY_TIMEOUT_MS);
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && Instant::now() < deadline =>
            {
                thread::sleep(Duration::from_millis(5));
            }
            mode => return mode,
        }
    }
}

fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    plan_once(&conn)?;
    Ok(conn)
}

/// Makes `conn` plan each statement from its text alone, never from its parameters' values.
///
/// Otherwise SQLite may let a bound value shape a statement's plan, and then marks the statement
/// to be compiled again once its bindings are cleared, which rusqlite's statement cache does each
/// time it takes a statement back: the comments' insert and the reads were compiled again at
/// every use, most of the writer's own CPU time per comment (see BENCHMARKS.md, "Each statement
/// compiled once"). Every query here names its partial indexes' conditions in its text, so no
/// plan needs a value.
fn plan_once(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

/// Brings the schema to [`SCHEMA_VERSION`].
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    migrate_to(conn, SCHEMA_VERSION)
}

/// Runs the steps of [`MIGRATIONS`] that `conn` lacks, up to version `target`. Each step runs in
/// a `BEGIN IMMEDIATE` transaction that reads the version again, so two processes opening the same
/// file at once never run a step twice.
pub(super) fn migrate_to(conn: &Connection, target: i64) -> rusqlite::Result<()> {
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
    // Version 4: wrong check-in codes are counted per client address in the service's memory
    // (a wrong guess writes nothing, so a guessing flood cannot slow the comments' writes).
    "DROP TABLE wrong_codes;",
    // Version 5: a check-in's secret, from which every instance derives the same codes (32
    // random bytes written by the store; rows from before get one when the store opens, see
    // `sqlite_rooms::fill_missing_secrets`), and the attended count its first close kept.
    "ALTER TABLE checkins ADD COLUMN secret BLOB CHECK (secret IS NULL OR length(secret) = 32);
     ALTER TABLE checkins ADD COLUMN attended INTEGER;",
    // Version 6: moderation (see `sqlite_moderation`). A deleted comment keeps its row, with the
    // time it was deleted, and every read skips it; mutes, banned words and the log of every
    // moderation action are per channel. The log's id is `AUTOINCREMENT`, never reused.
    "ALTER TABLE danmaku ADD COLUMN deleted_at TEXT;
     CREATE TABLE moderation_log (
         id      INTEGER PRIMARY KEY AUTOINCREMENT,
         channel TEXT NOT NULL,
         at      TEXT NOT NULL,
         actor   TEXT NOT NULL,
         action  TEXT NOT NULL,
         target  TEXT NOT NULL,
         detail  TEXT
     );
     CREATE INDEX moderation_log_by_channel ON moderation_log (channel, id);
     CREATE TABLE mutes (
         channel TEXT NOT NULL,
         name    TEXT NOT NULL,
         until   TEXT NOT NULL,
         PRIMARY KEY (channel, name)
     ) WITHOUT ROWID;
     CREATE TABLE banned_words (
         channel  TEXT    NOT NULL,
         position INTEGER NOT NULL,
         word     TEXT    NOT NULL,
         PRIMARY KEY (channel, position)
     ) WITHOUT ROWID;",
    // Version 7: a room's check-ins by id (PostgreSQL's `checkins_by_room` from its first step),
    // for the host's list of past check-ins and the attendance table of the whole room.
    "CREATE INDEX checkins_by_room ON checkins (room, id);",
    // Version 8: when a room's stream started, as its host marked it (the offset 0 of the
    // recording its comments become; see `ws-stream`'s `recording`).
    "CREATE TABLE stream_starts (
         room TEXT PRIMARY KEY REFERENCES rooms (room),
         at   TEXT NOT NULL
     ) WITHOUT ROWID;",
    // Version 9: the visible comments of a channel in time order, for `Store::density`, which
    // counts them per time bucket in one pass over this index alone. `deleted_at` is in the key
    // (always NULL here) only so that SQLite sees the index covers the query's
    // `deleted_at IS NULL`: through `danmaku_by_time` every row is looked up in the table, ten
    // times slower on a video of a million comments (see BENCHMARKS.md).
    "CREATE INDEX danmaku_visible_by_time ON danmaku (channel, time, deleted_at)
         WHERE deleted_at IS NULL;",
    // Version 10: the two time indexes hold only comments that have a time (a video's). A live
    // room's comments have none; their entries were written at every commit and never read (every
    // query by time says `time >= ...`, which implies `time IS NOT NULL`), and made a lone live
    // comment's commit write three pages of WAL instead of one (see BENCHMARKS.md, "Live comments
    // out of the time indexes").
    "DROP INDEX danmaku_by_time;
     CREATE INDEX danmaku_by_time ON danmaku (channel, time) WHERE time IS NOT NULL;
     DROP INDEX danmaku_visible_by_time;
     CREATE INDEX danmaku_visible_by_time ON danmaku (channel, time, deleted_at)
         WHERE deleted_at IS NULL AND time IS NOT NULL;",
];

/// The writer thread: serves writes ([`serve_writes`]) until every [`SqliteStore`] clone is gone
/// and the queue is empty. A panic that escapes a job (a bug outside any transaction's
/// containment) fails the jobs in hand, and the writer starts again on a fresh connection, so
/// one bug never stops every later write. While the database cannot be reopened, queued writes
/// fail at once with [`StoreError::Unavailable`] and [`Store::health`] reports why.
fn run_writer(path: &Path, conn: Connection, jobs: &Receiver<WriteJob>, shared: &Shared) {
    let mut conn = Some(conn);
    loop {
        let Some(mut current) = conn.take().or_else(|| reopen_writer(path, jobs, shared)) else {
            break;
        };
        let served = std::panic::catch_unwind(AssertUnwindSafe(|| {
            serve_writes(&mut current, jobs, shared)
        }));
        if served.is_ok() {
            break;
        }
        log::error!("the database writer panicked; it starts again on a fresh connection");
        // Dropping the connection rolls back whatever transaction the panic left open.
        drop(current);
    }
    log::debug!("database writer stopped");
}

/// Copies what the WAL holds into the database file every [`CHECKPOINT_INTERVAL`], until `stop`
/// disconnects (the store was dropped).
///
/// SQLite would otherwise do it inside the commit that crosses 1,000 pages of WAL: that commit,
/// and every comment of its batch, would wait for the copy and the database file's fsync before
/// anyone is told or shown anything. Here the writer's connection has its automatic checkpoints
/// off, and this thread, on a connection of its own, runs passive checkpoints, which wait for no
/// lock and block neither the writer nor the readers. Durability is unchanged: a comment is on
/// disk once its commit's WAL fsync returned. A checkpoint that fails (a reader holding an old
/// snapshot, a busy file) is simply tried again next time; while none succeeds, the WAL grows.
fn run_checkpointer(path: &Path, stop: &Receiver<()>) {
    let mut conn = None;
    // Nothing is ever sent: the wait ends by timing out, or by the store's end.
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_INTERVAL) {
        if conn.is_none() {
            conn = Connection::open(path)
                .and_then(|c| {
                    c.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
                    Ok(c)
                })
                .map_err(|e| log::warn!("the checkpointer cannot open the database: {e}"))
                .ok();
        }
        let Some(c) = conn.as_ref() else { continue };
        if let Err(e) = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            log::warn!("a WAL checkpoint failed (tried again shortly): {e}");
            conn = None;
        }
    }
    log::debug!("database checkpointer stopped");
}

/// Opens the writer's connection again, trying every [`REOPEN_INTERVAL`]; meanwhile every queued
/// write is refused. `None` when the queue closed first.
fn reopen_writer(path: &Path, jobs: &Receiver<WriteJob>, shared: &Shared) -> Option<Connection> {
    loop {
        match open_writer(path) {
            Ok(conn) => {
                shared.vitals.set_down(None);
                return Some(conn);
            }
            Err(e) => {
                let reason = format!("the database writer cannot reopen the database: {e}");
                log::error!("{reason}");
                shared.vitals.set_down(Some(reason));
                let retry_at = Instant::now() + REOPEN_INTERVAL;
                loop {
                    match jobs.recv_deadline(retry_at) {
                        Ok(job) => refuse(job, shared),
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => return None,
                    }
                }
            }
        }
    }
}

/// Answers a write the writer cannot do (it has no connection) with the reason.
fn refuse(job: WriteJob, shared: &Shared) {
    match job {
        WriteJob::Append(append) => {
            let _ = append.reply.send(Err(writer_down(shared)));
        }
        WriteJob::Import { reply, .. } => {
            let _ = reply.send(Err(writer_down(shared)));
        }
        WriteJob::Exec(work) => {
            work(None, shared);
        }
    }
}

/// Takes one job; for an append, gathers the appends queued behind it and commits them together,
/// then answers each. Other writes found among those appends are set aside and run, each in a
/// transaction of its own, right after the batch, so a steady trickle of other writes (wrong
/// codes, attendance, rooms) never splits a group commit. Returns when the queue is closed and
/// empty.
fn serve_writes(conn: &mut Connection, jobs: &Receiver<WriteJob>, shared: &Shared) {
    let mut set_aside: VecDeque<WriteJob> = VecDeque::new();
    loop {
        let job = match set_aside.pop_front() {
            Some(job) => job,
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        shared.faults.wait_while_stalled();
        match job {
            WriteJob::Import {
                channel,
                items,
                reply,
                deadline,
            } => run_import(conn, &channel, &items, reply, deadline, shared),
            WriteJob::Exec(work) => run_exec(conn, work, shared),
            WriteJob::Append(first) => {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH_APPENDS && set_aside.len() < MAX_SET_ASIDE {
                    match jobs.try_recv() {
                        Ok(WriteJob::Append(append)) => batch.push(append),
                        Ok(other) => set_aside.push_back(other),
                        Err(_) => break,
                    }
                }
                answer_batch(conn, batch, shared);
            }
        }
    }
}

/// Runs one [`WriteJob::Exec`]. A panic in it is a bug, but it must not take the writer thread,
/// and so every later write, down with it: its transaction rolls back as it unwinds (which is why
/// the connection is safe to keep using), its caller sees [`StoreError::Database`], and the writer
/// goes on.
fn run_exec(conn: &mut Connection, work: ExecJob, shared: &Shared) {
    match std::panic::catch_unwind(AssertUnwindSafe(|| work(Some(&mut *conn), shared))) {
        Ok(outcome) => shared.vitals.record(outcome),
        Err(_) => {
            log::error!("a database write panicked; it was rolled back");
            roll_back_if_open(conn);
        }
    }
}

/// Runs one [`WriteJob::Import`], contained like [`run_exec`].
fn run_import(
    conn: &mut Connection,
    channel: &ChannelId,
    items: &[ImportedDanmaku],
    reply: oneshot::Sender<Result<ImportOutcome, StoreError>>,
    deadline: Instant,
    shared: &Shared,
) {
    if Instant::now() >= deadline {
        let _ = reply.send(Err(gave_up()));
        return;
    }
    let result = contained(conn, "an import", |conn| {
        commit_import(conn, channel, items, shared)
    });
    if let Err(e) = &result {
        log::error!(
            "importing {} comments into {channel} failed: {e}",
            items.len()
        );
    }
    shared.vitals.record(Outcome::of(&result));
    if let Ok(ImportOutcome {
        ids: Some((first, last)),
        ..
    }) = result
    {
        tell_listeners(
            shared,
            Committed::Imported {
                channel,
                first,
                last,
            },
        );
    }
    let _ = reply.send(result);
}

/// Tells every listener of `what`. A listener that panics must not take the writer thread (and
/// every later write) down with it; what it heard of is committed either way.
fn tell_listeners(shared: &Shared, what: Committed<'_>) {
    // Read locks are never poisoned by listeners (they run under a read lock and are caught
    // below); a poisoned lock would still hold a whole list.
    let listeners = shared.listeners.read().unwrap_or_else(|e| e.into_inner());
    for listener in listeners.iter() {
        if std::panic::catch_unwind(AssertUnwindSafe(|| listener(what))).is_err() {
            log::error!("an append listener panicked on {what:?}");
        }
    }
}

/// Runs `commit` (one transaction) so that a panic in it fails only it: the transaction rolls
/// back as the panic unwinds, and the answer is an error.
fn contained<T>(
    conn: &mut Connection,
    what: &str,
    commit: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
) -> Result<T, StoreError> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| commit(&mut *conn))) {
        Ok(result) => result.map_err(db_error),
        Err(_) => {
            log::error!("{what} panicked; it was rolled back and the writer goes on");
            roll_back_if_open(conn);
            Err(StoreError::Database(format!(
                "{what} panicked; nothing of it was stored"
            )))
        }
    }
}

/// Ends a transaction a panic may have left open, so the connection is clean for the next job.
fn roll_back_if_open(conn: &Connection) {
    if !conn.is_autocommit()
        && let Err(e) = conn.execute_batch("ROLLBACK")
    {
        log::error!("rolling back after a panic failed: {e}");
    }
}

/// Commits a batch of appends (those whose caller still waits) and answers each, then tells the
/// listeners of every stored comment.
fn answer_batch(conn: &mut Connection, batch: Vec<PendingAppend>, shared: &Shared) {
    let now = Instant::now();
    // A caller whose deadline passed was told `unavailable`: storing its comment now would make
    // that a lie (and a retry a duplicate).
    let (batch, late): (Vec<_>, Vec<_>) = batch.into_iter().partition(|job| job.deadline > now);
    for job in late {
        let _ = job.reply.send(Err(gave_up()));
    }
    if batch.is_empty() {
        return;
    }
    let result = contained(conn, "committing comments", |conn| {
        commit_batch(conn, &batch, shared)
    });
    shared.vitals.record(Outcome::of(&result));
    match result {
        Ok(items) => {
            for item in &items {
                tell_listeners(shared, Committed::Comment(item));
            }
            for (job, item) in batch.into_iter().zip(items) {
                let _ = job.reply.send(Ok(item));
            }
        }
        Err(e) => {
            log::error!("committing {} comments failed: {e}", batch.len());
            for job in batch {
                let _ = job.reply.send(Err(e.clone()));
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
fn commit_batch(
    conn: &mut Connection,
    batch: &[PendingAppend],
    shared: &Shared,
) -> rusqlite::Result<Vec<Danmaku>> {
    shared.faults.injected_failure()?;
    let tx = write_transaction(conn)?;
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
    if shared.faults.take_panic() {
        panic!("injected panic in a batch of {} appends", batch.len());
    }
    tx.commit()?;
    Ok(items)
}

/// Inserts an archive in one transaction, skipping origins the channel already has.
fn commit_import(
    conn: &mut Connection,
    channel: &ChannelId,
    items: &[ImportedDanmaku],
    shared: &Shared,
) -> rusqlite::Result<ImportOutcome> {
    shared.faults.injected_failure()?;
    let tx = write_transaction(conn)?;
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
            if let Some(row) = rows.next()? {
                let id: i64 = row.get(0)?;
                outcome.added += 1;
                outcome.ids = Some((outcome.ids.map_or(id, |(first, _)| first), id));
            } else {
                outcome.duplicates += 1;
            }
        }
    }
    tx.commit()?;
    Ok(outcome)
}

/// A reader thread. A query that panics (a bug) loses its answer (its caller sees an error) but
/// not the thread.
fn run_reader(conn: Connection, jobs: Receiver<ReadJob>, shared: &Shared) {
    while let Ok(job) = jobs.recv() {
        shared.faults.wait_while_stalled();
        if std::panic::catch_unwind(AssertUnwindSafe(|| job(&conn))).is_err() {
            log::error!("a database read panicked; the reader goes on");
        }
    }
}

/// The columns every query selects, in the order [`row_to_danmaku`] reads them.
pub(super) const COLUMNS: &str = "id, author, text, color, mode, time, sent_at";

pub(super) fn row_to_danmaku(channel: &ChannelId, row: &Row<'_>) -> rusqlite::Result<Danmaku> {
    let bad = |col: usize, e: shared_model::error::ApiError| {
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

/// The visible comments of channel `?1` whose time is in `[?2, ?3)`, in time order, at most `?4`:
/// through one of the time indexes (which hold only comments with a time).
fn window_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM danmaku
         WHERE channel = ?1 AND time >= ?2 AND time < ?3 AND deleted_at IS NULL
         ORDER BY time, id LIMIT ?4"
    )
}

/// Comments per time bucket of channel `?1`: `?2` and `?3` from [`density_scale`], `?4` the
/// duration. A pass over the covering index `danmaku_visible_by_time` (schema version 9).
const DENSITY_SQL: &str = "SELECT CAST(time * ?2 / ?3 AS INTEGER) AS bucket, COUNT(*) FROM danmaku
     WHERE channel = ?1 AND time >= 0 AND time <= ?4 AND deleted_at IS NULL
     GROUP BY bucket";

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
            .send(WriteJob::Append(PendingAppend {
                channel: channel.clone(),
                new,
                reply,
                deadline: self.deadline(),
            }))
            .map_err(|_| StoreError::Closed)?;
        self.answer("storing a comment", answer).await
    }

    fn on_append(&self, listener: AppendListener) {
        self.inner
            .shared
            .listeners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener);
    }

    /// Unhealthy while the writer has no connection; otherwise a round trip through the writer
    /// and a reader, each within the deadline. While the last write failed for want of the
    /// database, the writer's part writes (the schema version, unchanged) to see whether writes
    /// work again, so the store recovers even when no client writes.
    async fn health(&self) -> Result<(), StoreError> {
        if let Some(reason) = self.inner.shared.vitals.down() {
            return Err(StoreError::Unavailable(reason));
        }
        let shared = self.inner.shared.clone();
        self.write(move |tx| {
            if shared.vitals.failing().is_some() {
                let version = user_version(tx)?;
                tx.pragma_update(None, "user_version", version)?;
            }
            Ok(())
        })
        .await?;
        self.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(())))
            .await
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
                deadline: self.deadline(),
            })
            .map_err(|_| StoreError::Closed)?;
        self.answer("an import", answer).await
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
                    "SELECT {COLUMNS} FROM danmaku
                     WHERE channel = ?1 AND id > ?2 AND deleted_at IS NULL
                     ORDER BY id LIMIT ?3"
                ),
                &channel,
                params![channel.as_str(), after, sql_limit(limit)],
            )
        })
        .await
    }

    async fn after_including_deleted(
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
                        "SELECT {COLUMNS} FROM danmaku WHERE channel = ?1 AND deleted_at IS NULL
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
                &window_sql(),
                &channel,
                params![channel.as_str(), from, to, sql_limit(limit)],
            )
        })
        .await
    }

    async fn density(
        &self,
        channel: &ChannelId,
        duration: Option<f64>,
        buckets: usize,
    ) -> Result<Density, StoreError> {
        let channel = channel.clone();
        self.read(move |conn| {
            let duration = match duration {
                Some(duration) => duration,
                // Down the (channel, time) index from its end: the first visible row is the
                // latest.
                None => conn
                    .query_row(
                        "SELECT time FROM danmaku
                         WHERE channel = ?1 AND time IS NOT NULL AND deleted_at IS NULL
                         ORDER BY time DESC LIMIT 1",
                        [channel.as_str()],
                        |r| r.get(0),
                    )
                    .optional()?
                    .unwrap_or(0.0),
            };
            let (scale, divisor) = density_scale(duration, buckets);
            // The bucket is computed in the database, so only one row per bucket comes back.
            let mut stmt = conn.prepare_cached(DENSITY_SQL)?;
            let groups = stmt
                .query_map(params![channel.as_str(), scale, divisor, duration], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Density::from_groups(duration, buckets, groups))
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
    use shared_model::comment::{DraftDanmaku, TimeRule};

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

    /// What SQLite's file holds: times as RFC 3339 text with milliseconds, as earlier versions
    /// wrote them. (Ids, reopening and the rest are in `tests/conformance.rs`.)
    #[tokio::test]
    async fn send_times_are_stored_as_rfc3339_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/folder/danmaku.db");
        let store = SqliteStore::open(&path).unwrap();
        let a1 = store
            .append(&channel("a"), comment("a1", None))
            .await
            .unwrap();
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

    /// A live room's comment (no time) is in neither time index: its commit writes one page of
    /// WAL, the table's, where it wrote three (the table's and both indexes').
    #[test]
    fn a_live_comment_commits_one_page_of_wal() {
        let dir = tempfile::tempdir().unwrap();
        // The writer's own settings: no automatic checkpoint, so the WAL keeps every frame.
        let mut conn = open_writer(&dir.path().join("d.db")).unwrap();
        // The schema's own pages out of the WAL first.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        let commits = 20;
        for n in 0..commits {
            let tx = write_transaction(&mut conn).unwrap();
            tx.prepare_cached(INSERT)
                .unwrap()
                .query_row(
                    params![
                        "live",
                        "ann",
                        format!("c{n}"),
                        "#ffffff",
                        "scroll",
                        None::<f64>,
                        "2026-12-01T00:00:00.000Z",
                        None::<String>
                    ],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap();
            tx.commit().unwrap();
        }
        let (_, frames, _): (i64, i64, i64) = conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert!(
            frames < commits * 3 / 2,
            "{frames} pages of WAL for {commits} live comments"
        );
    }

    /// A cached statement is compiled once, not again at every use: the comments' insert on the
    /// writer, and a read on a reader (SQLite recompiled both each time rusqlite's cache cleared
    /// their bindings, because a bound value had shaped their plans).
    #[tokio::test]
    async fn cached_statements_are_not_compiled_again_at_each_use() {
        use rusqlite::StatementStatus::RePrepare;
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("d.db")).unwrap();
        for (text, time) in [("a", 1.0), ("b", 2.0), ("c", 3.0)] {
            store
                .append(&channel("v"), comment(text, Some(time)))
                .await
                .unwrap();
        }
        let insert = store
            .write(|tx| Ok(tx.prepare_cached(INSERT)?.get_status(RePrepare)))
            .await
            .unwrap();
        assert_eq!(insert, 0, "the insert was compiled again at each comment");
        let read = store
            .read(|conn| {
                for duration in [10.0, 20.0, 30.0] {
                    let mut stmt = conn.prepare_cached(DENSITY_SQL)?;
                    let groups = stmt
                        .query_map(params!["v", 1, 1, duration], |r| r.get::<_, i64>(1))?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    assert_eq!(groups.iter().sum::<i64>(), 3);
                }
                Ok(conn.prepare_cached(DENSITY_SQL)?.get_status(RePrepare))
            })
            .await
            .unwrap();
        assert_eq!(read, 0, "the read was compiled again at each use");
    }

    /// Checkpoints run on their own thread, not in the commit that crosses SQLite's 1,000-page
    /// mark: a few comments (far below that mark, where SQLite would not have copied anything
    /// yet) reach the database file itself shortly after their commits, and the writer's
    /// connection has its automatic checkpoints off.
    #[tokio::test]
    async fn comments_reach_the_database_file_through_the_checkpointer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        let store = SqliteStore::open(&path).unwrap();
        for n in 0..20 {
            store
                .append(&channel("a"), comment(&format!("c{n}"), None))
                .await
                .unwrap();
        }
        let autocheckpoint: i64 = store
            .write(|conn| {
                let pages = conn.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))?;
                Ok(pages)
            })
            .await
            .unwrap();
        assert_eq!(autocheckpoint, 0);
        // The database file alone (copied without its WAL) holds them once a checkpoint ran.
        let deadline = Instant::now() + Duration::from_secs(5);
        let alone = dir.path().join("alone.db");
        loop {
            std::fs::copy(&path, &alone).unwrap();
            let copied: i64 = Connection::open(&alone)
                .and_then(|c| c.query_row("SELECT count(*) FROM danmaku", [], |r| r.get(0)))
                .unwrap_or(0);
            if copied == 20 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the database file holds {copied} of 20 comments: no checkpoint ran"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A version 8 database (before the density index), with a deleted comment and a live one,
    /// migrates to the newest version; the density counts what was there, through the new index
    /// alone, and the live comment (in no time index since version 10) is still read.
    #[tokio::test]
    async fn a_version_8_database_gets_the_density_index_and_counts_its_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v8.db");
        {
            let conn = Connection::open(&path).unwrap();
            migrate_to(&conn, 8).unwrap();
            conn.execute_batch(
                "INSERT INTO danmaku (channel, id, author, text, color, mode, time, sent_at,
                                      deleted_at) VALUES
                     ('v', 1, 'a', 'one', '#ffffff', 'scroll', 1.0, '2025-01-01T00:00:00.000Z', NULL),
                     ('v', 2, 'a', 'two', '#ffffff', 'scroll', 7.0, '2025-01-01T00:00:00.000Z', NULL),
                     ('v', 3, 'a', 'gone', '#ffffff', 'scroll', 8.0, '2025-01-01T00:00:00.000Z',
                      '2025-01-02T00:00:00.000Z'),
                     ('live', 1, 'a', 'no time', '#ffffff', 'scroll', NULL,
                      '2025-01-01T00:00:00.000Z', NULL);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let density = store.density(&channel("v"), None, 2).await.unwrap();
        assert_eq!((density.duration, density.counts), (7.0, vec![1, 1]));
        // A live comment, in no time index since version 10, is still there.
        let live = store.after(&channel("live"), 0, 10).await.unwrap();
        assert_eq!(
            live.iter().map(|c| c.text.as_str()).collect::<Vec<_>>(),
            ["no time"]
        );
        let (version, plan): (i64, Vec<String>) = store
            .read(|conn| {
                let version = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
                let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {DENSITY_SQL}"))?;
                let plan = stmt
                    .query_map(params!["v", 2.0, 7.0, 7.0], |r| r.get::<_, String>(3))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok((version, plan))
            })
            .await
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        // The table itself is not read: without the index's `deleted_at` every row would be.
        assert!(
            plan.iter()
                .any(|step| step.contains("COVERING INDEX danmaku_visible_by_time")),
            "{plan:?}"
        );
        // A window of a video's timeline goes down a time index too (they hold only comments
        // with a time, since version 10), not along every comment of the channel.
        let window: Vec<String> = store
            .read(|conn| {
                let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {}", window_sql()))?;
                stmt.query_map(params!["v", 0.0, 5.0, 10], |r| r.get::<_, String>(3))?
                    .collect()
            })
            .await
            .unwrap();
        assert!(
            window.iter().any(|step| step
                .contains("INDEX danmaku_by_time (channel=? AND time>? AND time<?)")
                || step
                    .contains("INDEX danmaku_visible_by_time (channel=? AND time>? AND time<?)")),
            "{window:?}"
        );
        store
            .append(&channel("v"), comment("three", Some(3.0)))
            .await
            .unwrap();
        let density = store.density(&channel("v"), Some(8.0), 2).await.unwrap();
        assert_eq!(density.counts, [2, 1]);
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
            .send(WriteJob::Append(PendingAppend {
                channel: channel("r"),
                new: comment(text, None),
                reply,
                deadline: store.deadline(),
            }))
            .unwrap();
        answer
    }

    /// Holds the writer in a job of its own until the returned sender is used (or dropped).
    async fn hold_writer(store: &SqliteStore) -> std::sync::mpsc::Sender<()> {
        let (entered, writer_held) = oneshot::channel();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        store
            .inner
            .writes
            .send(WriteJob::Exec(Box::new(move |_, _| {
                let _ = entered.send(());
                let _ = gate.recv();
                Outcome::Other
            })))
            .unwrap();
        writer_held.await.unwrap();
        release
    }

    fn open_with_timeout(dir: &tempfile::TempDir, timeout: Duration) -> SqliteStore {
        SqliteStore::open_with(
            dir.path().join("d.db"),
            SqliteOptions {
                timeout,
                ..SqliteOptions::default()
            },
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_write_queued_among_appends_runs_after_their_batch_without_splitting_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("d.db")).unwrap();
        let release = hold_writer(&store).await;

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
            seen, 5,
            "the appends queued on both sides of the write commit together, before it"
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
        assert!(
            matches!(panicked, Err(StoreError::Database(_))),
            "{panicked:?}"
        );

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
        store.health().await.unwrap();
    }

    #[tokio::test]
    async fn a_panic_while_committing_comments_fails_that_batch_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("d.db")).unwrap();
        store
            .append(&channel("r"), comment("before", None))
            .await
            .unwrap();
        let release = hold_writer(&store).await;
        store.faults().panic_next_batch();
        let doomed: Vec<_> = (1..=3)
            .map(|n| queue_append(&store, &format!("doomed {n}")))
            .collect();
        release.send(()).unwrap();
        for answer in doomed {
            let answer = answer.await.expect("the batch's callers are answered");
            assert!(matches!(answer, Err(StoreError::Database(_))), "{answer:?}");
        }

        // The writer goes on, on a clean connection: nothing of the batch was stored, ids stay
        // dense, and the store says it is healthy.
        let after = store
            .append(&channel("r"), comment("after", None))
            .await
            .expect("writes work after the panic");
        assert_eq!(after.id, 2);
        let texts: Vec<String> = store
            .after(&channel("r"), 0, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.text)
            .collect();
        assert_eq!(texts, ["before", "after"]);
        store.health().await.unwrap();
    }

    #[tokio::test]
    async fn a_stalled_store_fails_calls_at_the_deadline_and_drops_their_work() {
        let dir = tempfile::tempdir().unwrap();
        let timeout = Duration::from_secs(1);
        let store = open_with_timeout(&dir, timeout);
        store.faults().stall(true);
        let started = Instant::now();
        let room = channel("r");
        let (append, read, health) = tokio::join!(
            store.append(&room, comment("late", None)),
            store.latest(&room, 10),
            store.health(),
        );
        assert!(
            matches!(append, Err(StoreError::Unavailable(_))),
            "{append:?}"
        );
        assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
        assert!(
            matches!(health, Err(StoreError::Unavailable(_))),
            "{health:?}"
        );
        assert!(
            started.elapsed() < timeout + Duration::from_secs(5),
            "each call ended at its deadline"
        );

        store.faults().stall(false);
        let item = store
            .append(&channel("r"), comment("on time", None))
            .await
            .unwrap();
        assert_eq!(
            store.latest(&channel("r"), 10).await.unwrap(),
            vec![item],
            "the comment whose caller was told `unavailable` was not stored"
        );
        store.health().await.unwrap();
    }

    #[tokio::test]
    async fn failing_writes_make_the_store_unhealthy_until_a_write_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("d.db")).unwrap();
        store.health().await.unwrap();
        store.faults().fail_writes(true);
        let append = store.append(&channel("r"), comment("lost", None)).await;
        assert!(
            matches!(append, Err(StoreError::Unavailable(_))),
            "an I/O error is `unavailable`: {append:?}"
        );
        let health = store.health().await;
        assert!(
            matches!(health, Err(StoreError::Unavailable(_))),
            "{health:?}"
        );
        // Reads still work, but the store is not healthy while writes fail.
        assert!(store.latest(&channel("r"), 1).await.unwrap().is_empty());

        // The disk recovers; the health check itself writes, so it notices without a client.
        store.faults().fail_writes(false);
        store.health().await.unwrap();
        let item = store
            .append(&channel("r"), comment("kept", None))
            .await
            .unwrap();
        assert_eq!(item.id, 1);
    }
}
