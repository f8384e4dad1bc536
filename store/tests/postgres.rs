//! What is PostgreSQL's own: unreachable servers, passwords in URLs, lock waits past the
//! deadline, lost connections. The behaviour shared with SQLite is in `conformance.rs`.

use std::time::{Duration, Instant};

use danmaku_store::testing;
use danmaku_store::{PgOptions, PgStore, RoomStore, Store, StoreError};
use shared_model::comment::{ChannelId, DraftDanmaku, NewDanmaku, TimeRule};

fn channel(name: &str) -> ChannelId {
    ChannelId::parse(name).unwrap()
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

fn options(timeout: Duration) -> PgOptions {
    PgOptions {
        timeout,
        ..PgOptions::default()
    }
}

/// A plain connection beside the store's pool, as another process would have.
async fn side_connection(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// Needs no server: nothing listens on port 1.
#[tokio::test]
async fn an_unreachable_server_fails_connect_naming_the_url_without_its_password() {
    let started = Instant::now();
    let failed = PgStore::connect(
        "postgres://danmaku:s3cret-pw@127.0.0.1:1/danmaku",
        options(Duration::from_secs(3)),
    )
    .await;
    let Err(StoreError::Unavailable(message)) = &failed else {
        panic!("expected `unavailable`, got {failed:?}");
    };
    assert!(
        message.contains("postgres://danmaku:***@127.0.0.1:1/danmaku"),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
    assert!(!format!("{failed:?}").contains("s3cret"));
    assert!(started.elapsed() < Duration::from_secs(3 + 10));
}

#[tokio::test]
async fn a_url_that_does_not_parse_fails_connect_without_showing_its_password() {
    let failed = PgStore::connect(
        "postgres://danmaku:s3cret-pw@127.0.0.1:5432/db?sslmode=bogus",
        PgOptions::default(),
    )
    .await;
    let Err(StoreError::Open { path, .. }) = &failed else {
        panic!("expected `Open`, got {failed:?}");
    };
    assert_eq!(
        path,
        "postgres://danmaku:***@127.0.0.1:5432/db?sslmode=bogus"
    );
    assert!(!format!("{failed:?}").contains("s3cret"));
}

/// Another session holds a lock the append needs: the append fails with `unavailable` at its
/// deadline, and once the lock is released the comment is not there (its transaction never
/// committed), nor does its id go missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_deadline_fails_unavailable_and_stores_nothing() {
    let Some(db) = testing::postgres().await else {
        return;
    };
    let timeout = Duration::from_secs(1);
    let store = PgStore::connect(db.url(), options(timeout)).await.unwrap();
    let room = channel("r");
    store.append(&room, comment("before")).await.unwrap();

    let mut holder = side_connection(db.url()).await;
    let lock = holder.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE danmaku IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let started = Instant::now();
    let late = store.append(&room, comment("late")).await;
    assert!(matches!(late, Err(StoreError::Unavailable(_))), "{late:?}");
    assert!(
        started.elapsed() < timeout + Duration::from_secs(5),
        "answered at its deadline"
    );
    // Reads are not blocked by that lock; the store keeps serving them.
    assert_eq!(store.latest(&room, 10).await.unwrap().len(), 1);
    lock.commit().await.unwrap();

    // Give a statement that might still be running every chance to finish and commit.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let texts: Vec<String> = store
        .after(&room, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.text)
        .collect();
    assert_eq!(
        texts,
        ["before"],
        "the comment told `unavailable` is not stored"
    );
    let next = store.append(&room, comment("after")).await.unwrap();
    assert_eq!(next.id, 2, "its id was rolled back with it");
    store.health().await.unwrap();
}

/// A lock held past the deadline fails the other writes too, each at its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_table_fails_room_writes_and_reads_at_the_deadline() {
    let Some(db) = testing::postgres().await else {
        return;
    };
    let timeout = Duration::from_secs(1);
    let store = PgStore::connect(db.url(), options(timeout)).await.unwrap();
    let mut holder = side_connection(db.url()).await;
    let lock = holder.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE rooms, danmaku IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let started = Instant::now();
    let r = channel("r");
    let (room, read) = tokio::join!(
        danmaku_store::RoomStore::create_room(&store, &r, None, [0; 32]),
        store.after(&r, 0, 10),
    );
    assert!(matches!(room, Err(StoreError::Unavailable(_))), "{room:?}");
    assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
    assert!(started.elapsed() < timeout + Duration::from_secs(5));
    lock.rollback().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        danmaku_store::RoomStore::room(&store, &channel("r"))
            .await
            .unwrap(),
        None
    );
    store.health().await.unwrap();
}

/// The server ends every session of the store (as a restart or a failover does): calls fail
/// fast with `unavailable` or succeed, never hang, and the pool reconnects on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_connections_are_replaced_and_no_call_hangs() {
    let Some(db) = testing::postgres().await else {
        return;
    };
    let timeout = Duration::from_secs(2);
    let store = PgStore::connect(db.url(), options(timeout)).await.unwrap();
    let room = channel("r");
    store.append(&room, comment("first")).await.unwrap();
    store.health().await.unwrap();

    let admin = side_connection(db.url()).await;
    let ended = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(!ended.is_empty(), "the store had sessions to end");

    let mut stored = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(20);
    while stored.len() < 3 {
        assert!(Instant::now() < give_up, "the store never came back");
        let started = Instant::now();
        match store.append(&room, comment("again")).await {
            Ok(item) => stored.push(item.id),
            Err(StoreError::Unavailable(_)) => {}
            Err(e) => panic!("a lost connection is `unavailable`, not {e:?}"),
        }
        assert!(started.elapsed() < timeout + Duration::from_secs(5));
    }
    assert_eq!(stored, [2, 3, 4], "no id lost or reused");
    store.health().await.unwrap();
}

/// A database as migration step 1 left it (written by hand, so that a later edit of the steps
/// cannot quietly change what is being migrated), with an open and a closed check-in: connecting
/// migrates it and gives each check-in a secret of its own, once.
#[tokio::test]
async fn checkins_from_before_step_2_get_a_secret_once_and_keep_it() {
    let Some(db) = testing::postgres().await else {
        return;
    };
    let side = side_connection(db.url()).await;
    side.batch_execute(STEP_1).await.unwrap();
    side.batch_execute(
        "CREATE TABLE schema_migrations (
             version    INTEGER     PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         );
         INSERT INTO schema_migrations (version) VALUES (1);
         INSERT INTO rooms VALUES ('live', NULL, decode(repeat('00', 32), 'hex'), now()),
                                  ('other', NULL, decode(repeat('00', 32), 'hex'), now());
         INSERT INTO checkins (room, interval_secs, opened_at, closes_at, closed) VALUES
             ('other', 5, now() - interval '2 hours', now() - interval '1 hour', TRUE),
             ('live', 5, now(), now() + interval '1 hour', FALSE);
         INSERT INTO attendance VALUES (1, 'ann', now(), 1), (1, 'bob', now(), 2);",
    )
    .await
    .unwrap();

    let store = PgStore::connect(db.url(), options(Duration::from_secs(10)))
        .await
        .unwrap();
    let open = store.unclosed_checkins().await.unwrap();
    assert_eq!(open.len(), 1);
    let closed = store.checkin(1).await.unwrap().unwrap();
    assert!(closed.closed);
    assert_ne!(open[0].secret, closed.secret, "each its own");
    // The close from before the count was kept counts once and keeps it.
    assert_eq!(store.close_checkin(1).await.unwrap(), 2);
    drop(store);

    let again = PgStore::connect(db.url(), options(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(
        again.unclosed_checkins().await.unwrap(),
        open,
        "not given another"
    );
    assert_eq!(again.close_checkin(1).await.unwrap(), 2);
}

/// Migration step 1, as it was.
const STEP_1: &str = "CREATE TABLE danmaku (
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
     );";

/// A window of a video's timeline reads a time index, even now that they hold only comments with
/// a time (step 6): the window's `time >= $2` implies `time IS NOT NULL`, in a generic plan too,
/// where PostgreSQL cannot look at the values.
#[tokio::test]
async fn a_window_of_a_timeline_reads_a_time_index_in_a_generic_plan() {
    let Some(db) = testing::postgres().await else {
        return;
    };
    let store = PgStore::connect(db.url(), options(Duration::from_secs(10)))
        .await
        .unwrap();
    store
        .append(&channel("live"), comment("no time"))
        .await
        .unwrap();
    let side = side_connection(db.url()).await;
    side.batch_execute(
        "INSERT INTO danmaku (channel, id, author, text, color, mode, time, sent_at)
             SELECT 'v', g, 'ann', 'hi', '#ffffff', 'scroll', g / 10.0, now()
             FROM generate_series(1, 5000) AS g;
         ANALYZE danmaku;
         SET plan_cache_mode = force_generic_plan;
         PREPARE window_read (TEXT, DOUBLE PRECISION, DOUBLE PRECISION, BIGINT) AS
             SELECT id, author, text FROM danmaku
             WHERE channel = $1 AND time >= $2 AND time < $3 AND deleted_at IS NULL
             ORDER BY time, id LIMIT $4;",
    )
    .await
    .unwrap();
    let plan: Vec<String> = side
        .query("EXPLAIN EXECUTE window_read('v', 10, 20, 100)", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        plan.iter().any(
            |line| line.contains("danmaku_by_time") || line.contains("danmaku_visible_by_time")
        ),
        "{plan:#?}"
    );
    let window = store
        .time_window(&channel("v"), 10.0, 20.0, 1000)
        .await
        .unwrap();
    assert_eq!(window.len(), 100);
}
