//! The shared store: PostgreSQL through `tokio-postgres` and a `deadpool-postgres` pool, for
//! running several instances of a service against one database.
//!
//! # Ids that mean order across writers
//!
//! A comment's id is its position in its channel, and clients resume with "everything after id
//! N". That only works if a comment with a smaller id never becomes visible after one with a
//! larger id: a reader that saw 8 and then resumes after 8 would skip a 7 committed later. A
//! sequence does not give this (ids are taken before commit, and commits land in any order), so
//! ids come from a counter row per channel, `channel_counters`, bumped in the inserting
//! transaction:
//!
//! ```sql
//! INSERT INTO channel_counters (channel, last_id) VALUES ($1, <max id so far> + n)
//! ON CONFLICT (channel) DO UPDATE SET last_id = channel_counters.last_id + n
//! RETURNING last_id
//! ```
//!
//! The update locks the channel's row until the transaction ends, so a second writer of the same
//! channel (another instance, or an import) waits at that statement until the first commits or
//! rolls back, and only then takes the next ids. PostgreSQL makes a commit visible before it
//! releases the transaction's locks, so by the time the second writer holds ids above the first
//! one's, the first one's comments are visible; the second commits later still. Ids are
//! therefore visible in id order in each channel, dense (a rolled-back transaction rolls its
//! counter back too) and never reused. Writers of different channels never wait on each other;
//! a batch touching several channels locks their rows in name order, so two batches cannot
//! deadlock. A counter row that is missing (a new channel, or comments copied in without one)
//! starts from the channel's highest stored id.
//!
//! # Group commit
//!
//! Appends go to one writer task per [`PgStore`]: it takes everything queued (at most
//! [`MAX_BATCH_APPENDS`]), inserts it per channel in one transaction, commits once, then tells
//! the listeners ([`Store::on_append`]) of every comment in commit order and answers each caller.
//! A comment is acknowledged only after `COMMIT` succeeded; if anything fails, every caller of
//! the batch gets the error and nothing of the batch is visible. Other writes (imports, rooms,
//! check-ins) run on pooled connections, each in a transaction of its own; an import takes the
//! channel's counter row like a batch does.
//!
//! # Deadlines and faults
//!
//! Every call answers within [`PgOptions::timeout`]. Waiting for a pooled connection, connecting,
//! and every statement count against it; past it the call fails with
//! [`StoreError::Unavailable`], the connection it was using is discarded (so a query stuck on a
//! lock or a dead server is never handed to the next caller), and its transaction, never
//! committed, is rolled back by the server. Each session also runs with
//! `statement_timeout` set to the same deadline, so the server itself gives up on a statement
//! that waits that long. Lost connections, pool timeouts, a server shutting down, serialization
//! failures and deadlocks are [`StoreError::Unavailable`] (503, try again); other errors are
//! [`StoreError::Database`]. The pool replaces a lost connection on the next call.
//!
//! The one case where a caller told `unavailable` may still find its comment stored: the
//! deadline passed while the `COMMIT` itself was in flight. The writer then waits up to one more
//! [`PgOptions::timeout`] for the `COMMIT`'s answer; if it committed, the listeners hear the
//! comments as usual (only the caller, who had stopped waiting, was told otherwise); if even that
//! wait passes, the outcome is unknown, logged as an error, and the listeners are not told. The
//! reverse (a comment acknowledged that is not committed) never happens.
//!
//! # Migrations
//!
//! [`MIGRATIONS`] are applied at [`PgStore::connect`], each step in a transaction of its own that
//! first takes a transaction-scoped advisory lock ([`MIGRATION_LOCK`]) and then checks
//! `schema_migrations`, so instances starting at once apply each step exactly once. Steps are
//! only ever added, never edited. After them, check-ins from before version 2 get a secret.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Row};

use super::{
    AppendListener, Committed, Density, ImportOutcome, ImportedDanmaku, Store, StoreError,
    density_scale,
};
use shared_model::comment::{ChannelId, Color, Danmaku, Mode, NewDanmaku};
use shared_model::time;

/// Most appends committed in one transaction. Bounds the latency one slow batch adds.
pub const MAX_BATCH_APPENDS: usize = 512;

/// How long a call may wait for its answer by default ([`PgOptions::timeout`]).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections in the pool by default ([`PgOptions::pool_size`]).
pub const DEFAULT_POOL_SIZE: usize = 8;

/// The longest deadline taken; longer ones are cut to it (so `now + timeout` cannot overflow).
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// The key of the advisory lock every migration step takes ("danmaku" in ASCII). Advisory locks
/// are per database, so only instances sharing the database wait on each other.
pub const MIGRATION_LOCK: i64 = 0x0064_616e_6d61_6b75;

/// The schema version this code writes: the number of steps in [`MIGRATIONS`].
pub const SCHEMA_VERSION: i32 = 6;

/// The schema, one step per version: step `n` (from 0) brings version `n` to `n + 1`, and is
/// recorded as `n + 1` in `schema_migrations`. Databases in the field ran the old steps, so steps
/// are only ever added, never edited.
pub const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [
    // Version 1: what SQLite's version 4 holds. Comments are keyed by `(channel, id)`, so "after
    // id N" and "last N" are index range scans; `origin` (an import's key) is unique per channel;
    // `channel_counters` hands out ids (see the module docs). A check-in's id comes from an
    // identity column, so it is never reused; "one open check-in per room" is kept by
    // `open_checkin` locking the room's row (the rule depends on the time, which an index cannot
    // express). The attendance order is `seq`, per check-in.
    "CREATE TABLE danmaku (
         channel TEXT             NOT NULL,
         id      BIGINT           NOT NULL,
         author  TEXT             NOT NULL,
         text    TEXT             NOT NULL,
         color   TEXT             NOT NULL,
         mode    TEXT             NOT NULL,
         time    DOUBLE PRECISION,
         sent_at TIMESTAMPTZ      NOT NULL,
         origin  TEXT,
         PRIMARY KEY (channel, id)
     );
     CREATE INDEX danmaku_by_time ON danmaku (channel, time);
     CREATE UNIQUE INDEX danmaku_by_origin ON danmaku (channel, origin)
         WHERE origin IS NOT NULL;
     CREATE TABLE channel_counters (
         channel TEXT   PRIMARY KEY,
         last_id BIGINT NOT NULL
     );
     CREATE TABLE rooms (
         room         TEXT        PRIMARY KEY,
         title        TEXT,
         token_digest BYTEA       NOT NULL CHECK (length(token_digest) = 32),
         created_at   TIMESTAMPTZ NOT NULL
     );
     CREATE TABLE checkins (
         id            BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
         room          TEXT        NOT NULL REFERENCES rooms (room),
         interval_secs INTEGER     NOT NULL,
         opened_at     TIMESTAMPTZ NOT NULL,
         closes_at     TIMESTAMPTZ NOT NULL,
         closed        BOOLEAN     NOT NULL DEFAULT FALSE
     );
     CREATE INDEX checkins_unclosed ON checkins (id) WHERE NOT closed;
     CREATE INDEX checkins_by_room ON checkins (room, id);
     CREATE TABLE attendance (
         checkin BIGINT      NOT NULL REFERENCES checkins (id),
         name    TEXT        NOT NULL,
         at      TIMESTAMPTZ NOT NULL,
         seq     INTEGER     NOT NULL,
         PRIMARY KEY (checkin, name),
         UNIQUE (checkin, seq)
     );",
    // Version 2 (SQLite's version 5): a check-in's secret, from which every instance derives
    // the same codes (32 random bytes written by the store; rows from before get one at connect,
    // see `postgres_rooms::fill_missing_secrets`), and the attended count its first close kept.
    "ALTER TABLE checkins ADD COLUMN secret BYTEA CHECK (length(secret) = 32);
     ALTER TABLE checkins ADD COLUMN attended INTEGER;",
    // Version 3 (SQLite's version 6): moderation (see `postgres_moderation`). A deleted comment
    // keeps its row, with the time it was deleted, and every read skips it; mutes, banned words
    // and the log of every moderation action are per channel.
    "ALTER TABLE danmaku ADD COLUMN deleted_at TIMESTAMPTZ;
     CREATE TABLE moderation_log (
         id      BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
         channel TEXT        NOT NULL,
         at      TIMESTAMPTZ NOT NULL,
         actor   TEXT        NOT NULL,
         action  TEXT        NOT NULL,
         target  TEXT        NOT NULL,
         detail  TEXT
     );
     CREATE INDEX moderation_log_by_channel ON moderation_log (channel, id);
     CREATE TABLE mutes (
         channel TEXT        NOT NULL,
         name    TEXT        NOT NULL,
         until   TIMESTAMPTZ NOT NULL,
         PRIMARY KEY (channel, name)
     );
     CREATE TABLE banned_words (
         channel  TEXT    NOT NULL,
         position INTEGER NOT NULL,
         word     TEXT    NOT NULL,
         PRIMARY KEY (channel, position)
     );",
    // Version 4 (SQLite's version 8; its version 7 is an index this schema had from step 1):
    // when a room's stream started, as its host marked it.
    "CREATE TABLE stream_starts (
         room TEXT        PRIMARY KEY REFERENCES rooms (room),
         at   TIMESTAMPTZ NOT NULL
     );",
    // Version 5 (SQLite's version 9): the visible comments of a channel in time order, for
    // `Store::density`, which counts them per time bucket with an index-only scan (the
    // predicate's column need not be in the key for that here, as it must in SQLite).
    "CREATE INDEX danmaku_visible_by_time ON danmaku (channel, time) WHERE deleted_at IS NULL;",
    // Version 6 (SQLite's version 10): the time indexes hold only comments that have a time (a
    // video's). A live room's comments have none, and every query by time implies
    // `time IS NOT NULL`, so their entries were only written, at every commit, never read.
    "DROP INDEX danmaku_by_time;
     CREATE INDEX danmaku_by_time ON danmaku (channel, time) WHERE time IS NOT NULL;
     DROP INDEX danmaku_visible_by_time;
     CREATE INDEX danmaku_visible_by_time ON danmaku (channel, time)
         WHERE deleted_at IS NULL AND time IS NOT NULL;",
];

/// Tuning of [`PgStore`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// How long a call may take, waiting for a connection included, before it fails with
    /// [`StoreError::Unavailable`]; also each session's `statement_timeout`.
    pub timeout: Duration,
    /// Most connections the pool keeps open (the writer of appends uses one at a time).
    pub pool_size: usize,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            pool_size: DEFAULT_POOL_SIZE,
        }
    }
}

/// `url` with its password, if any, replaced by `***`: what logs and error messages show. Takes
/// URLs (`postgres://user:password@host/db?password=...`) and key-value strings
/// (`host=... password=...`).
pub fn redact_url(url: &str) -> String {
    const MASK: &str = "***";
    let Some(scheme_end) = url.find("://").map(|at| at + 3) else {
        // Key-value form: hide every `password=` value (quoted or not).
        let mut out = String::with_capacity(url.len());
        let mut rest = url;
        while let Some(at) = find_key(rest, "password") {
            let value_start = at + "password".len();
            let after_eq = rest[value_start..].trim_start();
            let Some(value) = after_eq.strip_prefix('=') else {
                out.push_str(&rest[..value_start]);
                rest = &rest[value_start..];
                continue;
            };
            let value = value.trim_start();
            let skipped = rest.len() - value.len();
            out.push_str(&rest[..skipped]);
            out.push_str(MASK);
            rest = &value[value_len(value)..];
        }
        out.push_str(rest);
        return out;
    };
    // URL form: the authority runs to the first `/`, `?` or `#` after the last `@` before them
    // (a password should have its `@` encoded, but be generous).
    let (head, tail) = url.split_at(scheme_end);
    let authority_end = tail.find(['/', '?', '#']).unwrap_or(tail.len());
    let search_end = tail[authority_end..]
        .find('?')
        .map_or(tail.len(), |at| authority_end + at);
    let mut out = String::from(head);
    let query = match tail[..search_end].rfind('@') {
        Some(at) => {
            let userinfo = &tail[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..=colon]);
                    out.push_str(MASK);
                }
                None => out.push_str(userinfo),
            }
            let rest = &tail[at..];
            let (before, q) = rest.split_at(rest.find('?').unwrap_or(rest.len()));
            out.push_str(before);
            q
        }
        None => {
            let (before, q) = tail.split_at(tail.find('?').unwrap_or(tail.len()));
            out.push_str(before);
            q
        }
    };
    // Query parameters: `password=...` up to the next `&` or `#`.
    let mut first = true;
    for pair in query.split_inclusive('&') {
        let pair = if first {
            first = false;
            out.push('?');
            &pair[1..]
        } else {
            pair
        };
        match pair.split_once('=') {
            Some((key, value)) if key.eq_ignore_ascii_case("password") => {
                out.push_str(key);
                out.push('=');
                out.push_str(MASK);
                if value.ends_with('&') {
                    out.push('&');
                }
            }
            _ => out.push_str(pair),
        }
    }
    out
}

/// Where `key` starts as a whole word in `text` (a key-value connection string).
fn find_key(text: &str, key: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(found) = text[from..].find(key) {
        let at = from + found;
        let before_ok = text[..at]
            .chars()
            .next_back()
            .is_none_or(char::is_whitespace);
        let after = text[at + key.len()..].trim_start();
        if before_ok && after.starts_with('=') {
            return Some(at);
        }
        from = at + key.len();
    }
    None
}

/// The length of a key-value string's value at the start of `text`: quoted (`'...'` with `\'`
/// escapes) or up to the next whitespace.
fn value_len(text: &str) -> usize {
    if let Some(quoted) = text.strip_prefix('\'') {
        let mut escaped = false;
        for (at, c) in quoted.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '\'' if !escaped => return at + 2,
                _ => escaped = false,
            }
        }
        text.len()
    } else {
        text.find(char::is_whitespace).unwrap_or(text.len())
    }
}

/// An append waiting for its batch to commit.
struct PendingAppend {
    channel: ChannelId,
    new: NewDanmaku,
    reply: oneshot::Sender<Result<Danmaku, StoreError>>,
    /// When its caller stops waiting.
    deadline: Instant,
}

/// The listeners, shared by the store's handles and its writer task. A std `RwLock`: written
/// once or twice at start-up, read once per batch, never held across an await.
type Listeners = Arc<RwLock<Vec<AppendListener>>>;

/// The PostgreSQL store. Cheap to clone: clones share the pool and the writer task, which stops
/// once the last clone is dropped and the queued appends are answered.
///
/// [`PgStore::connect`] must run inside the Tokio runtime that outlives the store (a service's
/// main runtime): the writer task and the pool's connections are driven by it.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// Unbounded: senders must never block an async worker, and the services bound the inflow
    /// with per-client rate limits.
    appends: mpsc::UnboundedSender<PendingAppend>,
    listeners: Listeners,
    timeout: Duration,
    /// The URL as configured, password redacted.
    url: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.inner.url)
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`, or the
    /// key-value form), checks that the server answers within `options.timeout`, applies the
    /// migrations it lacks and starts the writer task. A server that cannot be reached fails with
    /// [`StoreError::Unavailable`], a URL that cannot be parsed with [`StoreError::Open`]; both
    /// name the URL with its password redacted ([`redact_url`]).
    pub async fn connect(url: &str, options: PgOptions) -> Result<PgStore, StoreError> {
        let shown = redact_url(url);
        let timeout_ = options.timeout.min(MAX_TIMEOUT);
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| StoreError::Open {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        // The server gives up on any statement past the deadline too (see the module docs).
        let mut session = config.get_options().unwrap_or_default().to_owned();
        session.push_str(&format!(
            " -c statement_timeout={}",
            timeout_.as_millis().max(1)
        ));
        config.options(session.trim());
        if config.get_application_name().is_none() {
            config.application_name("danmaku");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(timeout_);
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .wait_timeout(Some(timeout_))
            .create_timeout(Some(timeout_))
            .recycle_timeout(Some(timeout_))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Open {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        let unreachable = |e: StoreError| {
            StoreError::Unavailable(format!("cannot reach PostgreSQL at {shown}: {e}"))
        };
        let mut client = pool.get().await.map_err(|e| unreachable(pool_error(e)))?;
        timeout(timeout_, client.simple_query("SELECT 1"))
            .await
            .map_err(|_| unreachable(StoreError::Unavailable("no answer in time".into())))?
            .map_err(|e| unreachable(pg_error(e)))?;
        migrate(&mut client).await.map_err(|e| match e {
            StoreError::Unavailable(reason) => {
                StoreError::Unavailable(format!("migrating PostgreSQL at {shown}: {reason}"))
            }
            e => StoreError::Database(format!("migrating PostgreSQL at {shown}: {e}")),
        })?;
        super::postgres_rooms::fill_missing_secrets(&client).await?;
        drop(client);

        let (appends, queue) = mpsc::unbounded_channel();
        let listeners = Listeners::default();
        tokio::spawn(run_writer(queue, pool.clone(), listeners.clone(), timeout_));
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                appends,
                listeners,
                timeout: timeout_,
                url: shown,
            }),
        })
    }

    /// The URL it was connected with, password redacted.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The deadline of every call.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// When a call made now stops waiting.
    fn deadline(&self) -> Instant {
        Instant::now() + self.inner.timeout
    }

    /// Runs `work` on a pooled connection, all of it (waiting for the connection included)
    /// within the deadline. Past the deadline the connection is discarded rather than returned
    /// to the pool: it may still be busy with the abandoned statement, and dropping it ends the
    /// session, so the server rolls back whatever transaction `work` had open.
    pub(super) async fn run<T, F>(&self, what: &str, work: F) -> Result<T, StoreError>
    where
        F: for<'c> FnOnce(&'c mut Object) -> WorkFuture<'c, T>,
    {
        let deadline = self.deadline();
        let mut client = timeout_at(deadline, self.inner.pool.get())
            .await
            .map_err(|_| self.late(what))?
            .map_err(pool_error)?;
        let result = timeout_at(deadline, work(&mut client)).await;
        match result {
            Ok(result) => result,
            Err(_) => {
                discard(client);
                Err(self.late(what))
            }
        }
    }

    /// Tells the listeners of `what`, committed by a write of this store.
    pub(super) fn tell(&self, what: Committed<'_>) {
        tell_listeners_of(&self.inner.listeners, what);
    }

    /// The error of a call that passed its deadline.
    fn late(&self, what: &str) -> StoreError {
        StoreError::Unavailable(format!(
            "{what}: no answer from PostgreSQL within {} ms",
            self.inner.timeout.as_millis()
        ))
    }
}

/// What [`PgStore::run`] awaits: a future borrowing the pooled connection.
pub(super) type WorkFuture<'c, T> =
    std::pin::Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'c>>;

/// Drops `client` without returning it to the pool; its connection task ends with it.
fn discard(client: Object) {
    drop(Object::take(client));
}

/// A driver error as a [`StoreError`]: [`StoreError::Unavailable`] when the server cannot serve
/// now and may later (see [`is_unavailable`]), [`StoreError::Database`] otherwise.
pub(super) fn pg_error(e: tokio_postgres::Error) -> StoreError {
    if is_unavailable(&e) {
        StoreError::Unavailable(describe(&e))
    } else {
        StoreError::Database(describe(&e))
    }
}

/// The error's text with the server's message, which `Display` leaves out.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", e, db.code().code(), db.message()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// Whether `e` says the server cannot serve now and may later: the connection is gone or never
/// came up (no server error at all, or class 08), the server is shutting down or starting
/// (57P0x), a statement ran out of time or could not get a lock (57014, 55P03), the transaction
/// lost a serialization race or a deadlock (40001, 40P01), or the server ran out of resources
/// (class 53).
fn is_unavailable(e: &tokio_postgres::Error) -> bool {
    let Some(db) = e.as_db_error() else {
        // No answer from the server: a closed connection or an I/O error. Errors of this crate's
        // own (a value that does not convert) are bugs, not outages.
        return e.is_closed()
            || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
            || e.to_string().contains("timed out");
    };
    let code = db.code();
    let class = &code.code()[..2];
    class == "08"
        || class == "53"
        || class == "57"
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
}

/// A pool error as a [`StoreError`]: a timeout or a failed connect is [`StoreError::Unavailable`].
pub(super) fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => pg_error(e),
        PoolError::Closed => StoreError::Closed,
        PoolError::Timeout(kind) => {
            StoreError::Unavailable(format!("no PostgreSQL connection in time ({kind:?})"))
        }
        e => StoreError::Unavailable(e.to_string()),
    }
}

/// Applies the steps of [`MIGRATIONS`] the database lacks (see the module docs).
async fn migrate(client: &mut Object) -> Result<(), StoreError> {
    for (step, sql) in (1..).zip(MIGRATIONS) {
        let tx = client.transaction().await.map_err(pg_error)?;
        // Migrating may take long on a big database, and waiting for another instance's step
        // too: no statement deadline here.
        tx.batch_execute("SET LOCAL statement_timeout = 0")
            .await
            .map_err(pg_error)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg_error)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    INTEGER     PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(pg_error)?;
        let newest: i32 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .await
            .map_err(pg_error)?
            .get(0);
        if newest > SCHEMA_VERSION && step == 1 {
            log::warn!("the database has schema version {newest}, newer than this build's");
        }
        let done: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)",
                &[&step],
            )
            .await
            .map_err(pg_error)?
            .get(0);
        if !done {
            tx.batch_execute(sql).await.map_err(pg_error)?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[&step],
            )
            .await
            .map_err(pg_error)?;
            log::info!("PostgreSQL schema migrated to version {step}");
        }
        tx.commit().await.map_err(pg_error)?;
    }
    Ok(())
}

/// Bumps `channel`'s counter by `$2` and returns the new last id; locks the counter row until
/// the transaction ends (see the module docs). A missing row starts from the channel's highest
/// stored id.
pub(super) const BUMP_COUNTER: &str = "INSERT INTO channel_counters AS c (channel, last_id)
     VALUES ($1, (SELECT COALESCE(MAX(id), 0) FROM danmaku WHERE channel = $1) + $2)
     ON CONFLICT (channel) DO UPDATE SET last_id = c.last_id + $2
     RETURNING last_id";

/// Inserts rows of one channel from parallel arrays, ids given.
const INSERT_ROWS: &str = "INSERT INTO danmaku
         (channel, id, author, text, color, mode, time, sent_at, origin)
     SELECT $1, r.* FROM unnest(
         $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[],
         $7::DOUBLE PRECISION[], $8::TIMESTAMPTZ[], $9::TEXT[]) AS r";

/// Rows for [`INSERT_ROWS`], one vector per column.
#[derive(Default)]
struct Rows {
    ids: Vec<i64>,
    authors: Vec<String>,
    texts: Vec<String>,
    colors: Vec<String>,
    modes: Vec<String>,
    times: Vec<Option<f64>>,
    sent_ats: Vec<DateTime<Utc>>,
    origins: Vec<Option<String>>,
}

impl Rows {
    fn push(&mut self, id: i64, new: &NewDanmaku, sent_at: DateTime<Utc>, origin: Option<String>) {
        self.ids.push(id);
        self.authors.push(new.author.clone());
        self.texts.push(new.text.clone());
        self.colors.push(new.color.as_str().to_owned());
        self.modes.push(new.mode.as_str().to_owned());
        self.times.push(new.time);
        self.sent_ats.push(sent_at);
        self.origins.push(origin);
    }

    async fn insert(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        channel: &ChannelId,
    ) -> Result<(), tokio_postgres::Error> {
        let stmt = tx.prepare_cached(INSERT_ROWS).await?;
        tx.execute(
            &stmt,
            &[
                &channel.as_str(),
                &self.ids,
                &self.authors,
                &self.texts,
                &self.colors,
                &self.modes,
                &self.times,
                &self.sent_ats,
                &self.origins,
            ],
        )
        .await?;
        Ok(())
    }
}

/// The writer task: takes every append queued, commits them in one transaction
/// ([`commit_batch`]), tells the listeners, answers the callers; until every [`PgStore`] clone
/// is gone and the queue is empty.
async fn run_writer(
    mut queue: mpsc::UnboundedReceiver<PendingAppend>,
    pool: Pool,
    listeners: Listeners,
    timeout_: Duration,
) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_APPENDS {
            match queue.try_recv() {
                Ok(append) => batch.push(append),
                Err(_) => break,
            }
        }
        // A caller whose deadline passed was told `unavailable`: storing its comment now would
        // make that a lie (and a retry a duplicate).
        let now = Instant::now();
        let (batch, late): (Vec<_>, Vec<_>) = batch.into_iter().partition(|a| a.deadline > now);
        for append in late {
            let _ = append.reply.send(Err(StoreError::Unavailable(
                "its caller's deadline passed before it started".into(),
            )));
        }
        let Some(deadline) = batch.iter().map(|a| a.deadline).min() else {
            continue;
        };
        let (work, replies): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|a| ((a.channel, a.new), a.reply))
            .unzip();
        // A task of its own, so that a panic (a bug) fails this batch only, not the writer.
        let count = work.len();
        let result = tokio::spawn(commit_batch(pool.clone(), work, deadline, timeout_))
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Database(
                    "committing comments panicked; see the log".into(),
                ))
            });
        match result {
            Ok(items) => {
                tell_listeners(&listeners, &items);
                for (reply, item) in replies.into_iter().zip(items) {
                    let _ = reply.send(Ok(item));
                }
            }
            Err(e) => {
                log::error!("committing {count} comments failed: {e}");
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
    log::debug!("PostgreSQL writer stopped");
}

/// Calls every listener with every item, in order; a listener that panics is logged and skipped.
fn tell_listeners(listeners: &Listeners, items: &[Danmaku]) {
    for item in items {
        tell_listeners_of(listeners, Committed::Comment(item));
    }
}

/// Calls every listener with `what`; a listener that panics is logged and skipped.
fn tell_listeners_of(listeners: &Listeners, what: Committed<'_>) {
    // Read locks are never poisoned by listeners (they run under a read lock and are caught
    // below); a poisoned lock would still hold a whole list.
    let listeners = listeners.read().unwrap_or_else(|e| e.into_inner());
    for listener in listeners.iter() {
        if std::panic::catch_unwind(AssertUnwindSafe(|| listener(what))).is_err() {
            log::error!("an append listener panicked on {what:?}");
        }
    }
}

/// Inserts `work` in one transaction, per channel in name order, and commits; returns the
/// stored comments in the order of `work`. Everything up to `COMMIT` must finish by `deadline`;
/// the `COMMIT` gets `grace` more (see the module docs).
async fn commit_batch(
    pool: Pool,
    work: Vec<(ChannelId, NewDanmaku)>,
    deadline: Instant,
    grace: Duration,
) -> Result<Vec<Danmaku>, StoreError> {
    let late = || StoreError::Unavailable("the batch of comments did not commit in time".into());
    let mut client = timeout_at(deadline, pool.get())
        .await
        .map_err(|_| late())?
        .map_err(pool_error)?;
    let mut by_channel: BTreeMap<&ChannelId, Vec<usize>> = BTreeMap::new();
    for (at, (channel, _)) in work.iter().enumerate() {
        by_channel.entry(channel).or_default().push(at);
    }
    let mut items: Vec<Option<Danmaku>> = vec![None; work.len()];
    let (committed, broken) = {
        let prepared = timeout_at(deadline, async {
            let tx = client.transaction().await?;
            let bump = tx.prepare_cached(BUMP_COUNTER).await?;
            for (channel, positions) in &by_channel {
                let count = i64::try_from(positions.len()).unwrap_or(i64::MAX);
                let last: i64 = tx
                    .query_one(&bump, &[&channel.as_str(), &count])
                    .await?
                    .get(0);
                let mut rows = Rows::default();
                for (id, &at) in (last - count + 1..).zip(positions) {
                    let new = &work[at].1;
                    let sent_at = time::now();
                    rows.push(id, new, sent_at, None);
                    items[at] = Some(Danmaku {
                        id,
                        channel: (*channel).clone(),
                        author: new.author.clone(),
                        text: new.text.clone(),
                        color: new.color.clone(),
                        mode: new.mode,
                        time: new.time,
                        sent_at,
                    });
                }
                rows.insert(&tx, channel).await?;
            }
            Ok::<_, tokio_postgres::Error>(tx)
        })
        .await;
        // `true` when the connection must be discarded: a statement or the `COMMIT` may still
        // be running on it.
        match prepared {
            Ok(Ok(tx)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                match timeout(grace + left, tx.commit()).await {
                    Ok(Ok(())) => (Ok(()), false),
                    Ok(Err(e)) => (Err(pg_error(e)), false),
                    Err(_) => {
                        log::error!(
                            "COMMIT of {} comments did not answer in time: \
                             they may or may not be stored",
                            work.len()
                        );
                        (Err(late()), true)
                    }
                }
            }
            Ok(Err(e)) => (Err(pg_error(e)), false),
            // The transaction never committed; ending the session rolls it back.
            Err(_) => (Err(late()), true),
        }
    };
    if broken {
        discard(client);
    }
    committed?;
    // Every position was filled: each belongs to exactly one channel's group.
    Ok(items.into_iter().flatten().collect())
}

/// The columns every comment query selects, in the order [`row_to_danmaku`] reads them.
pub(super) const COLUMNS: &str = "id, author, text, color, mode, time, sent_at";

pub(super) fn row_to_danmaku(channel: &ChannelId, row: &Row) -> Result<Danmaku, StoreError> {
    let bad = |what: &str, e: shared_model::error::ApiError| {
        StoreError::Database(format!("a stored {what} does not parse: {e:?}"))
    };
    let color: &str = row.try_get(3).map_err(pg_error)?;
    let mode: &str = row.try_get(4).map_err(pg_error)?;
    Ok(Danmaku {
        id: row.try_get(0).map_err(pg_error)?,
        channel: channel.clone(),
        author: row.try_get(1).map_err(pg_error)?,
        text: row.try_get(2).map_err(pg_error)?,
        color: Color::parse(color).map_err(|e| bad("colour", e))?,
        mode: mode.parse::<Mode>().map_err(|e| bad("mode", e))?,
        time: row.try_get(5).map_err(pg_error)?,
        sent_at: row.try_get(6).map_err(pg_error)?,
    })
}

/// PostgreSQL takes limits as `BIGINT`; ours are small `usize`s, so saturate rather than fail.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl PgStore {
    /// Runs a comment query and reads its rows.
    async fn comments(
        &self,
        what: &str,
        sql: String,
        channel: &ChannelId,
        params: Vec<Box<dyn tokio_postgres::types::ToSql + Send + Sync>>,
    ) -> Result<Vec<Danmaku>, StoreError> {
        let channel = channel.clone();
        self.run(what, move |client| {
            Box::pin(async move {
                let stmt = client.prepare_cached(&sql).await.map_err(pg_error)?;
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                    .iter()
                    .map(|p| &**p as &(dyn tokio_postgres::types::ToSql + Sync))
                    .collect();
                let rows = client.query(&stmt, &refs).await.map_err(pg_error)?;
                rows.iter().map(|r| row_to_danmaku(&channel, r)).collect()
            })
        })
        .await
    }
}

#[async_trait]
impl Store for PgStore {
    async fn append(&self, channel: &ChannelId, new: NewDanmaku) -> Result<Danmaku, StoreError> {
        let (reply, answer) = oneshot::channel();
        let deadline = self.deadline();
        self.inner
            .appends
            .send(PendingAppend {
                channel: channel.clone(),
                new,
                reply,
                deadline,
            })
            .map_err(|_| StoreError::Closed)?;
        match timeout_at(deadline, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StoreError::Closed),
            Err(_) => Err(self.late("storing a comment")),
        }
    }

    async fn after(
        &self,
        channel: &ChannelId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Danmaku>, StoreError> {
        self.comments(
            "a read",
            format!(
                "SELECT {COLUMNS} FROM danmaku
                 WHERE channel = $1 AND id > $2 AND deleted_at IS NULL
                 ORDER BY id LIMIT $3"
            ),
            channel,
            vec![
                Box::new(channel.as_str().to_owned()),
                Box::new(after),
                Box::new(sql_limit(limit)),
            ],
        )
        .await
    }

    async fn after_including_deleted(
        &self,
        channel: &ChannelId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Danmaku>, StoreError> {
        self.comments(
            "a read",
            format!(
                "SELECT {COLUMNS} FROM danmaku WHERE channel = $1 AND id > $2
                 ORDER BY id LIMIT $3"
            ),
            channel,
            vec![
                Box::new(channel.as_str().to_owned()),
                Box::new(after),
                Box::new(sql_limit(limit)),
            ],
        )
        .await
    }

    async fn latest(&self, channel: &ChannelId, limit: usize) -> Result<Vec<Danmaku>, StoreError> {
        let mut items = self
            .comments(
                "a read",
                format!(
                    "SELECT {COLUMNS} FROM danmaku WHERE channel = $1 AND deleted_at IS NULL
                     ORDER BY id DESC LIMIT $2"
                ),
                channel,
                vec![
                    Box::new(channel.as_str().to_owned()),
                    Box::new(sql_limit(limit)),
                ],
            )
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
        self.comments(
            "a read",
            format!(
                "SELECT {COLUMNS} FROM danmaku
                 WHERE channel = $1 AND time >= $2 AND time < $3 AND deleted_at IS NULL
                 ORDER BY time, id LIMIT $4"
            ),
            channel,
            vec![
                Box::new(channel.as_str().to_owned()),
                Box::new(from),
                Box::new(to),
                Box::new(sql_limit(limit)),
            ],
        )
        .await
    }

    async fn density(
        &self,
        channel: &ChannelId,
        duration: Option<f64>,
        buckets: usize,
    ) -> Result<Density, StoreError> {
        let channel = channel.as_str().to_owned();
        self.run("a density read", move |client| {
            Box::pin(async move {
                let duration = match duration {
                    Some(duration) => duration,
                    None => {
                        // Down the (channel, time) index from its end: the first visible row is
                        // the latest.
                        let stmt = client
                            .prepare_cached(
                                "SELECT time FROM danmaku
                                 WHERE channel = $1 AND time IS NOT NULL AND deleted_at IS NULL
                                 ORDER BY time DESC LIMIT 1",
                            )
                            .await
                            .map_err(pg_error)?;
                        client
                            .query_opt(&stmt, &[&channel])
                            .await
                            .map_err(pg_error)?
                            .map(|row| row.get::<_, f64>(0))
                            .unwrap_or(0.0)
                    }
                };
                let (scale, divisor) = density_scale(duration, buckets);
                // FLOOR, not a cast: PostgreSQL rounds a float cast to an integer. The bucket is
                // computed in the database, so only one row per bucket comes back.
                let stmt = client
                    .prepare_cached(
                        "SELECT FLOOR(time * $2 / $3)::BIGINT AS bucket, COUNT(*) FROM danmaku
                         WHERE channel = $1 AND time >= 0 AND time <= $4 AND deleted_at IS NULL
                         GROUP BY bucket",
                    )
                    .await
                    .map_err(pg_error)?;
                let rows = client
                    .query(&stmt, &[&channel, &scale, &divisor, &duration])
                    .await
                    .map_err(pg_error)?;
                let groups = rows
                    .iter()
                    .map(|row| (row.get::<_, i64>(0), row.get::<_, i64>(1)));
                Ok(Density::from_groups(duration, buckets, groups))
            })
        })
        .await
    }

    async fn last_id(&self, channel: &ChannelId) -> Result<i64, StoreError> {
        let channel = channel.as_str().to_owned();
        self.run("a read", move |client| {
            Box::pin(async move {
                let stmt = client
                    .prepare_cached("SELECT COALESCE(MAX(id), 0) FROM danmaku WHERE channel = $1")
                    .await
                    .map_err(pg_error)?;
                let row = client
                    .query_one(&stmt, &[&channel])
                    .await
                    .map_err(pg_error)?;
                row.try_get(0).map_err(pg_error)
            })
        })
        .await
    }

    /// Listeners hear this instance's own appends only; other instances' reach this one through
    /// the database (readers resuming with [`Store::after`]).
    fn on_append(&self, listener: AppendListener) {
        self.inner
            .listeners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener);
    }

    /// In one transaction that takes the channel's counter row (so it is ordered with appends
    /// like a batch is): the origins the channel already has are skipped, the rest get the next
    /// ids, dense.
    async fn import(
        &self,
        channel: &ChannelId,
        items: Vec<ImportedDanmaku>,
    ) -> Result<ImportOutcome, StoreError> {
        let channel = channel.clone();
        let listeners = self.inner.listeners.clone();
        self.run("an import", move |client| {
            Box::pin(async move {
                let tx = client.transaction().await.map_err(pg_error)?;
                let bump = tx.prepare_cached(BUMP_COUNTER).await.map_err(pg_error)?;
                // Bumping by 0 takes the row lock: from here on no other writer of the channel
                // commits until this transaction ends, so the origins read next stay true.
                let last: i64 = tx
                    .query_one(&bump, &[&channel.as_str(), &0_i64])
                    .await
                    .map_err(pg_error)?
                    .get(0);
                let origins: Vec<&str> = items.iter().map(|i| i.origin.as_str()).collect();
                let known: std::collections::HashSet<String> = tx
                    .query(
                        "SELECT origin FROM danmaku WHERE channel = $1 AND origin = ANY($2)",
                        &[&channel.as_str(), &origins],
                    )
                    .await
                    .map_err(pg_error)?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let mut seen = std::collections::HashSet::new();
                let mut rows = Rows::default();
                let mut outcome = ImportOutcome::default();
                let now = time::now();
                let mut id = last;
                for item in &items {
                    if known.contains(&item.origin) || !seen.insert(item.origin.as_str()) {
                        outcome.duplicates += 1;
                        continue;
                    }
                    id += 1;
                    let sent_at = time::to_millis(item.sent_at.unwrap_or(now));
                    rows.push(id, &item.new, sent_at, Some(item.origin.clone()));
                    outcome.added += 1;
                }
                if id > last {
                    tx.execute(
                        "UPDATE channel_counters SET last_id = $2 WHERE channel = $1",
                        &[&channel.as_str(), &id],
                    )
                    .await
                    .map_err(pg_error)?;
                    rows.insert(&tx, &channel).await.map_err(pg_error)?;
                    outcome.ids = Some((last + 1, id));
                }
                tx.commit().await.map_err(pg_error)?;
                if let Some((first, last)) = outcome.ids {
                    tell_listeners_of(
                        &listeners,
                        Committed::Imported {
                            channel: &channel,
                            first,
                            last,
                        },
                    );
                }
                Ok(outcome)
            })
        })
        .await
    }

    /// A round trip (`SELECT 1`) on a pooled connection within the deadline, and a writer task
    /// that still takes appends.
    async fn health(&self) -> Result<(), StoreError> {
        if self.inner.appends.is_closed() {
            return Err(StoreError::Unavailable(
                "the PostgreSQL writer task has stopped".into(),
            ));
        }
        self.run("a health check", |client| {
            Box::pin(async move {
                client
                    .simple_query("SELECT 1")
                    .await
                    .map(drop)
                    .map_err(pg_error)
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls_and_key_value_strings() {
        for (url, shown) in [
            (
                "postgres://ann:s3cret@db.example:5432/danmaku",
                "postgres://ann:***@db.example:5432/danmaku",
            ),
            (
                "postgresql://ann@localhost/danmaku",
                "postgresql://ann@localhost/danmaku",
            ),
            ("postgres://localhost", "postgres://localhost"),
            (
                "postgres://ann:p%40ss@h1,h2/db?sslmode=disable&password=s3cret",
                "postgres://ann:***@h1,h2/db?sslmode=disable&password=***",
            ),
            (
                "postgres://ann:s3cret@host?password=s3cret&application_name=x",
                "postgres://ann:***@host?password=***&application_name=x",
            ),
            ("postgres://ann:a@b@host/db", "postgres://ann:***@host/db"),
            (
                "host=db user=ann password=s3cret dbname=danmaku",
                "host=db user=ann password=*** dbname=danmaku",
            ),
            (
                "host=db password = 's3 \\' cret' dbname=x",
                "host=db password = *** dbname=x",
            ),
        ] {
            let redacted = redact_url(url);
            assert_eq!(redacted, shown, "{url}");
            assert!(!redacted.contains("s3"), "{redacted}");
        }
    }
}
