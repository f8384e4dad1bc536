//! Copying a real SQLite store into a real PostgreSQL database (`danmaku_store::copy`): what the
//! copy reads back through [`PgStore`] equals what [`SqliteStore`] answers; a second copy changes
//! nothing; an interrupted copy, resumed, equals a single run; appends after the copy take the
//! next ids; a database with another history is refused.
//!
//! The PostgreSQL tests need `DANMAKU_TEST_POSTGRES` (see `danmaku_store::testing::postgres`);
//! without it they say they skipped, except under `CI=true`, where they fail.

use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use danmaku_store::copy::{
    CopyError, CopyOptions, CopyReport, Table, TableCounts, copy_sqlite_to_postgres,
};
use danmaku_store::testing::{self, TestDatabase};
use danmaku_store::{
    AttendanceOutcome, CheckinOpening, ImportedDanmaku, ModerationStore, PgOptions, PgStore,
    RoomStore, SqliteStore, Store,
};
use shared_model::comment::{ChannelId, DraftDanmaku, NewDanmaku, TimeRule};

fn channel(name: &str) -> ChannelId {
    ChannelId::parse(name).unwrap()
}

fn comment(author: &str, text: &str, color: &str, mode: &str, time: Option<f64>) -> NewDanmaku {
    let draft = DraftDanmaku {
        author: author.into(),
        text: text.into(),
        color: Some(color.into()),
        mode: Some(mode.into()),
        time,
    };
    let rule = if time.is_some() {
        TimeRule::Required
    } else {
        TimeRule::Absent
    };
    draft.validate(rule).unwrap()
}

fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

/// Channels of the source store.
const CHANNELS: [&str; 4] = ["lobby", "video-1", "archive", "z_last"];

/// Rooms of the source store.
const ROOMS: [&str; 3] = ["live", "quiet", "empty"];

/// A SQLite store at `path` with comments in several channels (live ones, video ones with
/// times, imported ones with origins and send times), rooms with and without titles, a closed
/// check-in with attendance out of alphabetical order, and an open one. Returns the check-in
/// ids.
async fn fill_source(path: &Path) -> Vec<i64> {
    let store = SqliteStore::open(path).unwrap();
    for n in 1..=7 {
        store
            .append(
                &channel("lobby"),
                comment("ann", &format!("hello {n}"), "#ff0000", "scroll", None),
            )
            .await
            .unwrap();
    }
    for (n, mode) in ["top", "bottom", "scroll"].into_iter().enumerate() {
        store
            .append(
                &channel("video-1"),
                comment(
                    "bob",
                    &format!("at {n}"),
                    "#00ff00",
                    mode,
                    Some(n as f64 * 1.5),
                ),
            )
            .await
            .unwrap();
    }
    let imported: Vec<_> = (0..5)
        .map(|n| ImportedDanmaku {
            new: comment(
                "old",
                &format!("archived {n}"),
                "#ffffff",
                "scroll",
                Some(n as f64),
            ),
            origin: format!("bilibili:{n}"),
            sent_at: Some(at(n)),
        })
        .collect();
    store.import(&channel("archive"), imported).await.unwrap();
    store
        .append(
            &channel("archive"),
            comment("new", "live after the import", "#0000ff", "top", Some(9.0)),
        )
        .await
        .unwrap();
    store
        .append(
            &channel("z_last"),
            comment("zoe", "last channel", "#123456", "scroll", None),
        )
        .await
        .unwrap();

    store
        .create_room(&channel("live"), Some("Friday talk".into()), [7; 32])
        .await
        .unwrap();
    store
        .create_room(&channel("quiet"), None, [9; 32])
        .await
        .unwrap();
    store
        .create_room(&channel("empty"), Some("nobody".into()), [1; 32])
        .await
        .unwrap();
    let mut ids = Vec::new();
    for room in ["live", "quiet"] {
        let opened = store
            .open_checkin(&channel(room), 5, at(0), at(3600))
            .await
            .unwrap();
        let CheckinOpening::Opened(record) = opened else {
            panic!("{opened:?}");
        };
        ids.push(record.id);
    }
    for (n, name) in ["zed", "amy", "bob"].into_iter().enumerate() {
        assert!(
            store
                .record_attendance(ids[0], name, at(n as i64 + 10))
                .await
                .unwrap()
                .is_new()
        );
    }
    store
        .record_attendance(ids[1], "solo", at(20))
        .await
        .unwrap();
    assert_eq!(store.close_checkin(ids[0]).await.unwrap(), 3);
    ids
}

/// The rows the source holds, per table (what a full copy reports as read).
const ROWS: [(Table, u64); 4] = [
    (Table::Rooms, 3),
    (Table::Checkins, 2),
    (Table::Attendance, 4),
    (Table::Comments, 17),
];

async fn connect(db: &TestDatabase) -> PgStore {
    PgStore::connect(db.url(), PgOptions::default())
        .await
        .unwrap()
}

async fn copy(source: &Path, db: &TestDatabase, options: &CopyOptions) -> CopyReport {
    copy_sqlite_to_postgres(source, db.url(), options, |_| {})
        .await
        .unwrap()
}

/// Asks both stores every question the traits can ask of the source's data, and compares.
async fn assert_same_answers(sqlite: &SqliteStore, pg: &PgStore, checkins: &[i64]) {
    for name in CHANNELS {
        let ch = channel(name);
        assert_eq!(
            sqlite.after(&ch, 0, 1000).await.unwrap(),
            pg.after(&ch, 0, 1000).await.unwrap(),
            "{name}"
        );
        assert!(!pg.after(&ch, 0, 1000).await.unwrap().is_empty(), "{name}");
        assert_eq!(
            sqlite.after(&ch, 2, 2).await.unwrap(),
            pg.after(&ch, 2, 2).await.unwrap()
        );
        assert_eq!(
            sqlite.latest(&ch, 3).await.unwrap(),
            pg.latest(&ch, 3).await.unwrap()
        );
        assert_eq!(
            sqlite.time_window(&ch, 1.0, 4.0, 100).await.unwrap(),
            pg.time_window(&ch, 1.0, 4.0, 100).await.unwrap()
        );
        assert_eq!(
            sqlite.last_id(&ch).await.unwrap(),
            pg.last_id(&ch).await.unwrap()
        );
    }
    for name in ROOMS {
        let room = sqlite.room(&channel(name)).await.unwrap();
        assert!(room.is_some(), "{name}");
        assert_eq!(room, pg.room(&channel(name)).await.unwrap());
    }
    for &id in checkins {
        // The whole record, secret included: an open check-in's codes go on unchanged.
        let record = sqlite.checkin(id).await.unwrap();
        assert!(record.is_some());
        assert_eq!(record, pg.checkin(id).await.unwrap());
        assert_eq!(
            sqlite.attendance(id).await.unwrap(),
            pg.attendance(id).await.unwrap()
        );
    }
    assert_eq!(
        sqlite.unclosed_checkins().await.unwrap(),
        pg.unclosed_checkins().await.unwrap()
    );
    // The host's list of a room's check-ins and its attendance table read the same.
    for name in ROOMS {
        let room = channel(name);
        let listed = sqlite.room_checkins(&room, 100).await.unwrap();
        assert_eq!(
            listed,
            pg.room_checkins(&room, 100).await.unwrap(),
            "{name}"
        );
        assert_eq!(
            sqlite.room_attendance(&room, 0, 100).await.unwrap(),
            pg.room_attendance(&room, 0, 100).await.unwrap(),
            "{name}"
        );
    }
    let live = pg.room_checkins(&channel("live"), 100).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!((live[0].closed, live[0].attended), (true, 3));
    let order: Vec<String> = pg
        .attendance(checkins[0])
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(order, ["zed", "amy", "bob"], "the order of arrival is kept");
    // The closed check-in's count was kept, and it takes no more names.
    assert_eq!(
        pg.record_attendance(checkins[0], "late", at(99))
            .await
            .unwrap(),
        AttendanceOutcome::Closed
    );
    assert_eq!(pg.close_checkin(checkins[0]).await.unwrap(), 3);
}

/// Everything the database holds, as text: every row of every table (in key order), the
/// channel counters and where the check-in id sequence is.
async fn dump(db: &TestDatabase) -> Vec<String> {
    let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut lines = Vec::new();
    for query in [
        "SELECT row_to_json(t)::text FROM danmaku t ORDER BY channel, id",
        "SELECT row_to_json(t)::text FROM channel_counters t ORDER BY channel",
        "SELECT row_to_json(t)::text FROM rooms t ORDER BY room",
        "SELECT row_to_json(t)::text FROM checkins t ORDER BY id",
        "SELECT row_to_json(t)::text FROM attendance t ORDER BY checkin, seq",
        "SELECT COALESCE(pg_sequence_last_value(
             pg_get_serial_sequence('checkins', 'id')::regclass), 0)::text",
    ] {
        for row in client.query(query, &[]).await.unwrap() {
            lines.push(row.get::<_, String>(0));
        }
    }
    lines
}

fn counts(read: u64, copied: u64, present: u64) -> TableCounts {
    TableCounts {
        read,
        copied,
        present,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_answers_like_the_source_and_a_second_copy_changes_nothing() {
    let Some(db) = testing::postgres().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.db");
    let checkins = fill_source(&source).await;

    let mut told = Vec::new();
    let options = CopyOptions {
        batch_rows: 4,
        ..CopyOptions::default()
    };
    let first = copy_sqlite_to_postgres(&source, db.url(), &options, |p| {
        told.push((p.table, p.done, p.total))
    })
    .await
    .unwrap();
    assert!(first.finished);
    for (table, rows) in ROWS {
        assert_eq!(first.of(table), counts(rows, rows, 0), "{table:?}");
    }
    // Progress after every batch, growing to the total.
    assert_eq!(told.len() as u64, first.batches);
    assert_eq!(told.last().map(|t| (t.1, t.2)), Some((26, 26)));
    assert!(told.windows(2).all(|w| w[0].1 < w[1].1), "{told:?}");

    let sqlite = SqliteStore::open(&source).unwrap();
    let pg = connect(&db).await;
    assert_same_answers(&sqlite, &pg, &checkins).await;

    let before = dump(&db).await;
    let second = copy(&source, &db, &options).await;
    assert!(second.finished);
    assert_eq!(second.copied(), 0);
    for (table, rows) in ROWS {
        assert_eq!(second.of(table), counts(rows, 0, rows), "{table:?}");
    }
    assert_eq!(dump(&db).await, before, "the second copy changed nothing");
    assert_same_answers(&sqlite, &pg, &checkins).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_copy_resumed_equals_a_single_run() {
    let (Some(resumed), Some(single)) = (testing::postgres().await, testing::postgres().await)
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.db");
    let checkins = fill_source(&source).await;

    let interrupted = CopyOptions {
        batch_rows: 2,
        // Rooms take 2 batches, check-ins 1, attendance 2: this stops inside the comments.
        stop_after_batches: Some(7),
        ..CopyOptions::default()
    };
    let first = copy(&source, &resumed, &interrupted).await;
    assert!(!first.finished);
    assert_eq!(first.batches, 7);
    assert_eq!(first.of(Table::Comments), counts(4, 4, 0));
    let partial = dump(&resumed).await;
    assert!(
        partial.iter().filter(|l| l.contains("\"author\"")).count() == 4,
        "{partial:#?}"
    );

    let options = CopyOptions {
        batch_rows: 2,
        ..CopyOptions::default()
    };
    let rest = copy(&source, &resumed, &options).await;
    assert!(rest.finished);
    assert_eq!(rest.of(Table::Comments), counts(17, 13, 4));
    assert_eq!(rest.of(Table::Rooms), counts(3, 0, 3));

    let whole = copy(&source, &single, &CopyOptions::default()).await;
    assert!(whole.finished);
    assert_eq!(dump(&resumed).await, dump(&single).await);
    let sqlite = SqliteStore::open(&source).unwrap();
    assert_same_answers(&sqlite, &connect(&resumed).await, &checkins).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_copy_new_comments_and_checkins_take_the_next_ids() {
    let Some(db) = testing::postgres().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.db");
    let checkins = fill_source(&source).await;
    // Interrupted after the first 4 comments (of `archive`, the first channel by name), a
    // write to `archive` on PostgreSQL, then the rest: the copy must still leave the channel's
    // counter (which the write created at 4) past its largest id.
    let interrupted = CopyOptions {
        batch_rows: 2,
        stop_after_batches: Some(7),
        ..CopyOptions::default()
    };
    assert!(!copy(&source, &db, &interrupted).await.finished);
    let pg = connect(&db).await;
    // The import keys came along: re-importing an archived comment adds nothing.
    let again = pg
        .import(
            &channel("archive"),
            vec![ImportedDanmaku {
                new: comment("old", "archived 3", "#ffffff", "scroll", Some(3.0)),
                origin: "bilibili:3".into(),
                sent_at: Some(at(3)),
            }],
        )
        .await
        .unwrap();
    assert_eq!((again.added, again.duplicates), (0, 1));
    assert!(copy(&source, &db, &CopyOptions::default()).await.finished);

    let next = pg
        .append(
            &channel("lobby"),
            comment("cat", "after", "#ffffff", "scroll", None),
        )
        .await
        .unwrap();
    assert_eq!(next.id, 8, "the next id in a copied channel");
    let archived = pg
        .append(
            &channel("archive"),
            comment("cat", "after", "#ffffff", "scroll", Some(1.0)),
        )
        .await
        .unwrap();
    assert_eq!(archived.id, 7);
    let fresh = pg
        .append(
            &channel("brand-new"),
            comment("cat", "first", "#ffffff", "scroll", None),
        )
        .await
        .unwrap();
    assert_eq!(fresh.id, 1);
    // A check-in opened on PostgreSQL gets an id past the copied ones.
    let opened = pg
        .open_checkin(&channel("empty"), 5, at(0), at(60))
        .await
        .unwrap()
        .opened()
        .expect("no check-in is open in `empty`");
    assert!(
        opened.id > *checkins.iter().max().unwrap(),
        "{opened:?} after {checkins:?}"
    );
    // The copied open check-in is still the open one of its room.
    assert!(matches!(
        pg.open_checkin(&channel("quiet"), 5, at(1), at(60))
            .await
            .unwrap(),
        CheckinOpening::AlreadyOpen(record) if record.id == checkins[1]
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_with_another_history_is_refused() {
    let Some(db) = testing::postgres().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.db");
    fill_source(&source).await;

    // Another history: comment 1 of `lobby` says something else.
    let pg = connect(&db).await;
    let other = pg
        .append(
            &channel("lobby"),
            comment("eve", "another story", "#ffffff", "scroll", None),
        )
        .await
        .unwrap();
    let refused = copy_sqlite_to_postgres(&source, db.url(), &CopyOptions::default(), |_| {}).await;
    let Err(CopyError::Conflict { what }) = &refused else {
        panic!("{refused:?}");
    };
    assert_eq!(what, "comment 1 of channel `lobby`");
    let message = refused.unwrap_err().to_string();
    assert!(message.contains("another history"), "{message}");
    // Nothing of the refused batch was written, and the existing comment is untouched.
    assert_eq!(pg.after(&channel("lobby"), 0, 100).await.unwrap(), [other]);
    assert!(
        pg.after(&channel("archive"), 0, 100)
            .await
            .unwrap()
            .is_empty()
    );

    // The same for a room whose host token differs.
    let Some(rooms_db) = testing::postgres().await else {
        return;
    };
    let pg = connect(&rooms_db).await;
    pg.create_room(&channel("quiet"), None, [0; 32])
        .await
        .unwrap();
    let refused =
        copy_sqlite_to_postgres(&source, rooms_db.url(), &CopyOptions::default(), |_| {}).await;
    assert!(
        matches!(&refused, Err(CopyError::Conflict { what }) if what == "room `quiet`"),
        "{refused:?}"
    );
    assert!(pg.room(&channel("live")).await.unwrap().is_none());
}

#[tokio::test]
async fn a_missing_source_is_refused_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.db");
    let refused = copy_sqlite_to_postgres(
        &missing,
        "postgres://nobody@127.0.0.1:1/none",
        &CopyOptions::default(),
        |_| {},
    )
    .await;
    assert!(
        matches!(&refused, Err(CopyError::Source { reason, .. }) if reason == "no such file"),
        "{refused:?}"
    );
    assert!(!missing.exists(), "the source is not created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderation_is_copied_and_a_delete_made_on_the_source_later_follows() {
    let Some(db) = testing::postgres().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("source.db");
    let room = channel("room");
    {
        let source = SqliteStore::open(&path).unwrap();
        for n in 1..=3 {
            source
                .append(
                    &room,
                    comment("bob", &format!("c{n}"), "#ffffff", "scroll", None),
                )
                .await
                .unwrap();
        }
        source.delete_comment(&room, 2, "host").await.unwrap();
        source
            .mute(
                &room,
                "bob",
                Utc::now() + chrono::Duration::hours(1),
                "host",
            )
            .await
            .unwrap();
        source
            .set_banned_words(&room, vec!["zeta".into(), "alpha".into()], "admin")
            .await
            .unwrap();
        source.create_room(&room, None, [7; 32]).await.unwrap();
        source.mark_stream_start(&room, at(5)).await.unwrap();
    }
    let options = CopyOptions {
        batch_rows: 2,
        ..CopyOptions::default()
    };
    let first = copy(&path, &db, &options).await;
    assert_eq!(first.of(Table::ModerationLog), counts(3, 3, 0));
    assert_eq!(first.of(Table::Mutes), counts(1, 1, 0));
    assert_eq!(first.of(Table::BannedWords), counts(2, 2, 0));
    assert_eq!(first.of(Table::StreamStarts), counts(1, 1, 0));

    let sqlite = SqliteStore::open(&path).unwrap();
    let pg = connect(&db).await;
    let ids = |items: Vec<shared_model::Danmaku>| items.iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(ids(pg.after(&room, 0, 10).await.unwrap()), [1, 3]);
    assert_eq!(
        ids(pg.after_including_deleted(&room, 0, 10).await.unwrap()),
        [1, 2, 3]
    );
    let now = Utc::now();
    assert_eq!(
        pg.mutes(&room, now).await.unwrap(),
        sqlite.mutes(&room, now).await.unwrap()
    );
    assert_eq!(
        pg.banned_words(&room).await.unwrap(),
        ["zeta".to_owned(), "alpha".to_owned()]
    );
    assert_eq!(
        pg.moderation_log(&room, 10).await.unwrap(),
        sqlite.moderation_log(&room, 10).await.unwrap()
    );
    assert_eq!(
        copy(&path, &db, &options).await.copied(),
        0,
        "a second run adds nothing"
    );

    // Deleted on the source after the copy: the next run deletes it on the target too.
    sqlite.delete_comment(&room, 3, "host").await.unwrap();
    drop(sqlite);
    let third = copy(&path, &db, &options).await;
    assert_eq!(third.of(Table::Comments).copied, 1, "{third:?}");
    assert_eq!(third.of(Table::ModerationLog).copied, 1);
    assert_eq!(ids(pg.after(&room, 0, 10).await.unwrap()), [1]);
    // A line logged on PostgreSQL afterwards takes an id past the copied ones.
    pg.unmute(&room, "bob", "host").await.unwrap();
    let log = pg.moderation_log(&room, 10).await.unwrap();
    assert_eq!(log.len(), 5);
    assert!(log[0].id > log[1].id, "{log:?}");
}
