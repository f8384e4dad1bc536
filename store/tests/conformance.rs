//! The behaviour every store keeps, tested once against each backend: every test below is one
//! `async fn` taking a [`Db`] (a fresh, empty database of one backend, from which any number of
//! store instances can be opened), and [`conformance!`] instantiates it as `sqlite::NAME` and
//! `postgres::NAME`.
//!
//! The PostgreSQL half needs `DANMAKU_TEST_POSTGRES` (see `danmaku_store::testing::postgres`):
//! each test gets a database of its own, dropped at its end. Without the variable each
//! PostgreSQL test says it skipped and passes, except under `CI=true`, where it fails.
//!
//! What is one backend's own (SQLite's fault hooks, file format and old schema versions;
//! PostgreSQL's unreachable servers and lock waits) is tested beside that backend.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use danmaku_store::testing::{self, TestDatabase};
use danmaku_store::{
    Attendance, AttendanceOutcome, CheckinOpening, CheckinRecord, CheckinSummary, Committed,
    ImportOutcome, ImportedDanmaku, ModerationAction, ModerationStore, Mute, PgOptions, PgStore,
    RoomStore, SqliteOptions, SqliteStore, Store, StoreError,
};
use shared_model::comment::{ChannelId, DraftDanmaku, Mode, NewDanmaku, TimeRule};
use shared_model::time;

/// Every trait, so a test can hold either backend behind one pointer.
trait AnyStore: Store + RoomStore + ModerationStore {}
impl<T: Store + RoomStore + ModerationStore> AnyStore for T {}

type Handle = Arc<dyn AnyStore>;

/// A fresh database of one backend.
enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(TestDatabase),
}

impl Db {
    async fn sqlite() -> Option<Db> {
        Some(Db::Sqlite(tempfile::tempdir().unwrap()))
    }

    async fn postgres() -> Option<Db> {
        testing::postgres().await.map(Db::Postgres)
    }

    /// A new store instance on this database (a separate writer and pool, as another process
    /// would have).
    async fn open(&self) -> Handle {
        self.open_with(Duration::from_secs(10)).await
    }

    async fn open_with(&self, timeout: Duration) -> Handle {
        match self {
            Db::Sqlite(dir) => Arc::new(
                SqliteStore::open_with(
                    dir.path().join("d.db"),
                    SqliteOptions {
                        timeout,
                        ..SqliteOptions::default()
                    },
                )
                .unwrap(),
            ),
            Db::Postgres(db) => Arc::new(
                PgStore::connect(
                    db.url(),
                    PgOptions {
                        timeout,
                        ..PgOptions::default()
                    },
                )
                .await
                .unwrap(),
            ),
        }
    }

    /// The schema versions applied, as the backend records them: SQLite's `user_version` (one
    /// number), PostgreSQL's `schema_migrations` (one row per step).
    async fn schema_versions(&self) -> Vec<i64> {
        match self {
            Db::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(dir.path().join("d.db")).unwrap();
                vec![
                    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
                        .unwrap(),
                ]
            }
            Db::Postgres(db) => {
                let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(connection);
                client
                    .query(
                        "SELECT version FROM schema_migrations ORDER BY version",
                        &[],
                    )
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| i64::from(r.get::<_, i32>(0)))
                    .collect()
            }
        }
    }
}

/// Instantiates each named test for both backends.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if let Some(db) = super::Db::sqlite().await {
                        super::$name(db).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if let Some(db) = super::Db::postgres().await {
                        super::$name(db).await;
                    }
                }
            )*
        }
    };
}

conformance!(
    ids_increase_per_channel_and_survive_reopening,
    concurrent_appends_get_distinct_dense_ids,
    listeners_hear_every_append_in_commit_order_and_the_ids_of_imports,
    after_and_latest_page_in_id_order,
    time_window_is_half_open_and_ordered_by_time,
    density_counts_each_bucket_with_edges_the_end_and_nothing_past_it,
    density_of_an_empty_or_timeless_channel_is_zeros,
    density_leaves_out_deleted_comments_and_other_channels,
    imports_are_idempotent_by_origin_and_keep_their_send_time,
    stored_fields_round_trip,
    writers_on_separate_instances_are_seen_by_every_reader_once_and_in_order,
    instances_opening_a_fresh_database_at_once_all_start_and_migrate_it_once,
    the_store_is_healthy,
    creating_a_room_twice_keeps_the_first,
    the_token_digest_and_an_absent_title_round_trip,
    a_checkin_opens_reads_back_and_closes_once,
    a_room_has_one_open_checkin_at_a_time,
    hosts_opening_a_checkin_at_once_on_separate_instances_open_one,
    checkin_ids_increase_across_rooms,
    a_checkin_in_a_room_never_created_is_refused_and_stores_nothing,
    attendance_is_idempotent_keeps_the_first_time_and_the_order,
    attendance_order_is_per_checkin,
    attendance_recorded_at_once_on_separate_instances_keeps_one_order,
    unclosed_checkins_and_their_attendance_survive_reopening,
    appends_stay_dense_and_in_commit_order_among_room_writes,
    each_checkin_keeps_its_own_random_secret_for_every_instance,
    the_secret_stays_out_of_debug_output,
    the_first_close_keeps_the_count_and_attendance_stops_there,
    closes_on_separate_instances_at_once_all_report_the_same_count,
    the_current_checkin_of_a_room_is_found_until_it_closes,
    a_rooms_checkins_are_listed_oldest_first_with_their_counts,
    a_rooms_attendance_is_read_newest_checkin_first_and_cut_only_in_the_oldest,
    a_deleted_comment_leaves_every_read_is_heard_of_and_logged_once,
    a_deleted_import_is_not_brought_back_by_importing_it_again,
    mutes_last_until_their_time_and_can_be_lifted,
    a_streams_start_is_marked_replaced_and_kept_per_room,
    banned_words_are_replaced_whole_and_kept_in_order,
    the_moderation_log_is_per_channel_and_newest_first,
);

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

fn ids(items: &[shared_model::Danmaku]) -> Vec<i64> {
    items.iter().map(|d| d.id).collect()
}

// ---------------------------------------------------------------------------------- comments

async fn ids_increase_per_channel_and_survive_reopening(db: Db) {
    {
        let store = db.open().await;
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
    }
    let store = db.open().await;
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

async fn concurrent_appends_get_distinct_dense_ids(db: Db) {
    let store = db.open().await;
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

async fn listeners_hear_every_append_in_commit_order_and_the_ids_of_imports(db: Db) {
    let store = db.open().await;
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = heard.clone();
    store.on_append(Box::new(move |what| {
        let heard = match what {
            Committed::Comment(item) => format!("{}", item.id),
            Committed::Imported {
                channel,
                first,
                last,
            } => format!("{channel}:{first}-{last}"),
            Committed::Deleted { channel, id } => format!("{channel}:-{id}"),
        };
        sink.lock().unwrap().push(heard);
    }));
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
            ["o", "p"]
                .into_iter()
                .map(|origin| ImportedDanmaku {
                    new: comment("old", None),
                    origin: origin.into(),
                    sent_at: None,
                })
                .collect(),
        )
        .await
        .unwrap();
    store
        .append(&channel("r"), comment("after", None))
        .await
        .unwrap();
    let mut expected: Vec<String> = (1..=100).map(|id| id.to_string()).collect();
    expected.extend(["r:101-102".to_owned(), "103".to_owned()]);
    assert_eq!(
        *heard.lock().unwrap(),
        expected,
        "every id is heard of once, the import's as one range"
    );
}

async fn after_and_latest_page_in_id_order(db: Db) {
    let store = db.open().await;
    let room = channel("room");
    for n in 1..=10 {
        store
            .append(&room, comment(&format!("c{n}"), None))
            .await
            .unwrap();
    }
    assert_eq!(ids(&store.after(&room, 3, 4).await.unwrap()), [4, 5, 6, 7]);
    assert_eq!(ids(&store.latest(&room, 3).await.unwrap()), [8, 9, 10]);
    assert!(store.after(&room, 10, 100).await.unwrap().is_empty());
    assert!(store.latest(&channel("none"), 5).await.unwrap().is_empty());
}

async fn time_window_is_half_open_and_ordered_by_time(db: Db) {
    let store = db.open().await;
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
    let first_two = store.time_window(&video, 0.0, 100.0, 2).await.unwrap();
    assert_eq!(
        first_two
            .iter()
            .map(|d| d.time.unwrap())
            .collect::<Vec<_>>(),
        [0.0, 1.0]
    );
}

async fn density_counts_each_bucket_with_edges_the_end_and_nothing_past_it(db: Db) {
    let store = db.open().await;
    let video = channel("v");
    // Buckets of 10 s over [0, 60]: 10.0 opens the second bucket, 60.0 (the end) counts in the
    // last, 60.5 and 120 are past the end, and rows without a time count nowhere.
    for t in [
        Some(0.0),
        Some(9.99),
        Some(10.0),
        Some(30.0),
        Some(59.9),
        Some(60.0),
        Some(60.5),
        Some(120.0),
        None,
        None,
    ] {
        store.append(&video, comment("c", t)).await.unwrap();
    }
    let density = store.density(&video, Some(60.0), 6).await.unwrap();
    assert_eq!(density.duration, 60.0);
    assert_eq!(density.counts, [2, 1, 0, 1, 0, 2]);
    // Without a duration: up to the latest comment (120 s, counted in the last bucket).
    let density = store.density(&video, None, 6).await.unwrap();
    assert_eq!(density.duration, 120.0);
    assert_eq!(density.counts, [3, 1, 1, 2, 0, 1]);
    // One bucket holds everything up to the end; a short duration leaves later comments out.
    let one = store.density(&video, Some(120.0), 1).await.unwrap();
    assert_eq!(one.counts, [8]);
    let short = store.density(&video, Some(10.0), 4).await.unwrap();
    assert_eq!(short.counts, [1, 0, 0, 2], "0 s; 9.99 s and 10 s (the end)");
    // Many buckets: the sum is still every comment in the timeline, none counted twice.
    let fine = store.density(&video, Some(60.0), 1000).await.unwrap();
    assert_eq!(fine.counts.len(), 1000);
    assert_eq!(fine.counts.iter().sum::<u64>(), 6);
    assert_eq!(
        fine.counts[166], 2,
        "9.99 s and 10 s are both in bucket 166 of 1000"
    );
    assert_eq!(
        (fine.counts[998], fine.counts[999]),
        (1, 1),
        "59.9 s; 60 s, the end"
    );
}

async fn density_of_an_empty_or_timeless_channel_is_zeros(db: Db) {
    let store = db.open().await;
    let empty = store.density(&channel("nothing"), None, 4).await.unwrap();
    assert_eq!((empty.duration, empty.counts), (0.0, vec![0, 0, 0, 0]));
    let asked = store
        .density(&channel("nothing"), Some(90.0), 3)
        .await
        .unwrap();
    assert_eq!((asked.duration, asked.counts), (90.0, vec![0, 0, 0]));
    // A live channel: no comment has a time.
    let live = channel("live");
    store.append(&live, comment("hi", None)).await.unwrap();
    let density = store.density(&live, None, 2).await.unwrap();
    assert_eq!((density.duration, density.counts), (0.0, vec![0, 0]));
    // Every comment at 0: a timeline of no length, all of it in the first bucket.
    let start = channel("start");
    for _ in 0..3 {
        store
            .append(&start, comment("go", Some(0.0)))
            .await
            .unwrap();
    }
    let density = store.density(&start, None, 3).await.unwrap();
    assert_eq!((density.duration, density.counts), (0.0, vec![3, 0, 0]));
}

async fn density_leaves_out_deleted_comments_and_other_channels(db: Db) {
    let store = db.open().await;
    let (v, w) = (channel("v"), channel("w"));
    for t in [1.0, 2.0, 3.0, 9.0] {
        store.append(&v, comment("v", Some(t))).await.unwrap();
    }
    store.append(&w, comment("w", Some(1.0))).await.unwrap();
    assert_eq!(
        store.density(&v, Some(10.0), 2).await.unwrap().counts,
        [3, 1]
    );
    store.delete_comment(&v, 2, "host").await.unwrap().unwrap();
    store.delete_comment(&v, 4, "host").await.unwrap().unwrap();
    let density = store.density(&v, None, 2).await.unwrap();
    // The latest visible comment is at 3 s now; the deleted one at 9 s sets nothing.
    assert_eq!(density.duration, 3.0);
    assert_eq!(density.counts, [1, 1]);
    // Another instance counts the same.
    let other = db.open().await;
    assert_eq!(other.density(&v, None, 2).await.unwrap(), density);
}

async fn imports_are_idempotent_by_origin_and_keep_their_send_time(db: Db) {
    let store = db.open().await;
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
            duplicates: 0,
            ids: Some((2, 4)),
        }
    );
    let again = store
        .import(&video, archive(&["a", "b", "c", "d", "d"]))
        .await
        .unwrap();
    assert_eq!(
        again,
        ImportOutcome {
            added: 1,
            duplicates: 4,
            ids: Some((5, 5)),
        },
        "known origins, and one repeated within the archive, are skipped"
    );
    let other = store.import(&channel("w"), archive(&["a"])).await.unwrap();
    assert_eq!(other.added, 1, "origins are unique per channel only");
    let all = store.after(&video, 0, 100).await.unwrap();
    assert_eq!(ids(&all), [1, 2, 3, 4, 5]);
    assert_eq!(time::rfc3339(all[1].sent_at), "2020-01-02T03:04:05.000Z");
    let next = store
        .append(&video, comment("after", Some(3.0)))
        .await
        .unwrap();
    assert_eq!(next.id, 6);
}

async fn stored_fields_round_trip(db: Db) {
    let store = db.open().await;
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
    assert_eq!(stored.sent_at, time::to_millis(stored.sent_at));
}

/// Several instances (as separate processes would be) append to one room at once while readers
/// poll with `after`, each resuming from the last id it saw. A comment that became visible after
/// one with a larger id would be skipped by some reader; every reader must see every comment
/// exactly once, in id order.
async fn writers_on_separate_instances_are_seen_by_every_reader_once_and_in_order(db: Db) {
    const WRITERS: usize = 4;
    const TASKS_PER_WRITER: usize = 5;
    const APPENDS_PER_TASK: usize = 20;
    const READERS: usize = 3;
    const TOTAL: usize = WRITERS * TASKS_PER_WRITER * APPENDS_PER_TASK;
    let room = channel("busy");
    let mut instances = Vec::new();
    for _ in 0..WRITERS {
        instances.push(db.open().await);
    }
    let reader_store = db.open().await;
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (store, room) = (reader_store.clone(), room.clone());
            tokio::spawn(async move {
                let mut seen: Vec<i64> = Vec::new();
                let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
                while seen.last().copied().unwrap_or(0) < TOTAL as i64
                    && tokio::time::Instant::now() < give_up
                {
                    let last = seen.last().copied().unwrap_or(0);
                    let page = store.after(&room, last, 37).await.unwrap();
                    if page.is_empty() {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    seen.extend(page.iter().map(|d| d.id));
                }
                seen
            })
        })
        .collect();
    let writers: Vec<_> = instances
        .iter()
        .flat_map(|store| {
            (0..TASKS_PER_WRITER).map(|task| {
                let (store, room) = (store.clone(), room.clone());
                tokio::spawn(async move {
                    for n in 0..APPENDS_PER_TASK {
                        store
                            .append(&room, comment(&format!("t{task} n{n}"), None))
                            .await
                            .unwrap();
                    }
                })
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let expected: Vec<i64> = (1..=TOTAL as i64).collect();
    for reader in readers {
        assert_eq!(
            reader.await.unwrap(),
            expected,
            "a reader saw every id once, in order"
        );
    }
}

async fn instances_opening_a_fresh_database_at_once_all_start_and_migrate_it_once(db: Db) {
    let db = Arc::new(db);
    let opens: Vec<_> = (0..6)
        .map(|n| {
            let db = db.clone();
            tokio::spawn(async move {
                let store = db.open().await;
                store
                    .append(&channel("r"), comment(&format!("from {n}"), None))
                    .await
                    .unwrap();
                store
            })
        })
        .collect();
    let mut stores = Vec::new();
    for open in opens {
        stores.push(open.await.unwrap());
    }
    assert_eq!(
        ids(&stores[0].after(&channel("r"), 0, 10).await.unwrap()).len(),
        6
    );
    let versions = db.schema_versions().await;
    match &*db {
        Db::Sqlite(_) => assert_eq!(versions, [10]),
        Db::Postgres(_) => assert_eq!(versions, [1, 2, 3, 4, 5, 6], "each step recorded once"),
    }
}

async fn the_store_is_healthy(db: Db) {
    let store = db.open().await;
    store.health().await.unwrap();
}

// ------------------------------------------------------------------------- rooms and check-ins

/// A fixed time with sub-millisecond digits, which the store cuts off.
fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap() + chrono::Duration::microseconds(123_456)
}

fn millis(at: DateTime<Utc>) -> DateTime<Utc> {
    time::to_millis(at)
}

/// When the check-in of [`store_with_checkin`] closes: the room can have the next one then.
fn first_closes() -> DateTime<Utc> {
    noon() + chrono::Duration::minutes(1)
}

/// A store with room `live` and one check-in open there from [`noon`] for a minute.
async fn store_with_checkin(db: &Db) -> (Handle, CheckinRecord) {
    let store = db.open().await;
    store
        .create_room(&channel("live"), None, [7; 32])
        .await
        .unwrap()
        .unwrap();
    let checkin = store
        .open_checkin(&channel("live"), 5, noon(), first_closes())
        .await
        .unwrap()
        .opened()
        .expect("no other check-in is open in the room");
    (store, checkin)
}

async fn creating_a_room_twice_keeps_the_first(db: Db) {
    let store = db.open().await;
    let before = Utc::now();
    let created = store
        .create_room(&channel("r1"), Some("Lecture 1".into()), [1; 32])
        .await
        .unwrap()
        .expect("a new room is created");
    assert_eq!(created.room, channel("r1"));
    assert_eq!(created.title.as_deref(), Some("Lecture 1"));
    assert!(created.created_at >= millis(before) && created.created_at <= Utc::now());

    let again = store
        .create_room(&channel("r1"), Some("Impostor".into()), [2; 32])
        .await
        .unwrap();
    assert_eq!(again, None);
    assert_eq!(store.room(&channel("r1")).await.unwrap(), Some(created));
    assert_eq!(store.room(&channel("never")).await.unwrap(), None);
}

async fn the_token_digest_and_an_absent_title_round_trip(db: Db) {
    let store = db.open().await;
    let digest: [u8; 32] = std::array::from_fn(|n| (n as u8).wrapping_mul(37) ^ 0xa5);
    store
        .create_room(&channel("r"), None, digest)
        .await
        .unwrap()
        .unwrap();
    let read = store.room(&channel("r")).await.unwrap().unwrap();
    assert_eq!(read.token_digest, digest);
    assert_eq!(read.title, None);
}

async fn a_checkin_opens_reads_back_and_closes_once(db: Db) {
    let (store, opened) = store_with_checkin(&db).await;
    assert_eq!(opened.room, channel("live"));
    assert_eq!(opened.interval_secs, 5);
    assert_eq!(opened.opened_at, millis(noon()));
    assert_eq!(opened.closes_at, millis(first_closes()));
    assert!(!opened.closed);
    assert_eq!(
        store.checkin(opened.id).await.unwrap(),
        Some(opened.clone())
    );
    assert_eq!(store.checkin(opened.id + 1).await.unwrap(), None);

    for name in ["ann", "bob"] {
        assert_eq!(
            store
                .record_attendance(opened.id, name, noon())
                .await
                .unwrap(),
            AttendanceOutcome::New
        );
    }
    assert_eq!(store.close_checkin(opened.id).await.unwrap(), 2);
    assert_eq!(store.close_checkin(opened.id).await.unwrap(), 2);
    let closed = store.checkin(opened.id).await.unwrap().unwrap();
    assert_eq!(
        closed,
        CheckinRecord {
            closed: true,
            ..opened
        }
    );
    assert!(store.unclosed_checkins().await.unwrap().is_empty());
    assert_eq!(store.close_checkin(999).await.unwrap(), 0);
}

async fn a_room_has_one_open_checkin_at_a_time(db: Db) {
    let (store, first) = store_with_checkin(&db).await;
    let refused = store
        .open_checkin(
            &channel("live"),
            5,
            noon(),
            noon() + chrono::Duration::hours(1),
        )
        .await
        .unwrap();
    assert_eq!(refused, CheckinOpening::AlreadyOpen(first.clone()));
    assert_eq!(
        store.unclosed_checkins().await.unwrap(),
        vec![first.clone()]
    );
    // Once its time is over (closed or not), the next one may open.
    let next = store
        .open_checkin(&channel("live"), 5, first_closes(), first_closes())
        .await
        .unwrap();
    assert!(
        matches!(next, CheckinOpening::Opened(ref c) if c.id > first.id),
        "{next:?}"
    );
}

/// The check and the insert are one transaction: hosts on several instances opening at once
/// get one check-in, and all the others are told it is already open.
async fn hosts_opening_a_checkin_at_once_on_separate_instances_open_one(db: Db) {
    let first = db.open().await;
    first
        .create_room(&channel("live"), None, [1; 32])
        .await
        .unwrap();
    let mut instances = vec![first];
    for _ in 0..3 {
        instances.push(db.open().await);
    }
    let opens: Vec<_> = (0..16)
        .map(|n| {
            let store = instances[n % instances.len()].clone();
            tokio::spawn(async move {
                store
                    .open_checkin(&channel("live"), 5, noon(), first_closes())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut opened = Vec::new();
    let mut refused = Vec::new();
    for open in opens {
        match open.await.unwrap() {
            CheckinOpening::Opened(record) => opened.push(record),
            CheckinOpening::AlreadyOpen(record) => refused.push(record),
        }
    }
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert!(refused.iter().all(|r| *r == opened[0]), "{refused:?}");
    assert_eq!(instances[0].unclosed_checkins().await.unwrap(), opened);
}

async fn checkin_ids_increase_across_rooms(db: Db) {
    let store = db.open().await;
    for name in ["a", "b"] {
        store
            .create_room(&channel(name), None, [0; 32])
            .await
            .unwrap();
    }
    let mut ids = Vec::new();
    for name in ["a", "b", "a"] {
        let checkin = store
            .open_checkin(&channel(name), 2, noon(), noon())
            .await
            .unwrap()
            .opened()
            .expect("no other check-in is open in the room");
        ids.push(checkin.id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

async fn a_checkin_in_a_room_never_created_is_refused_and_stores_nothing(db: Db) {
    let store = db.open().await;
    let refused = store
        .open_checkin(&channel("ghost"), 5, noon(), noon())
        .await;
    assert!(
        matches!(refused, Err(StoreError::Database(_))),
        "{refused:?}"
    );
    assert!(store.unclosed_checkins().await.unwrap().is_empty());
    let refused = store.record_attendance(42, "ann", noon()).await;
    assert!(
        matches!(refused, Err(StoreError::Database(_))),
        "{refused:?}"
    );
}

async fn attendance_is_idempotent_keeps_the_first_time_and_the_order(db: Db) {
    let (store, checkin) = store_with_checkin(&db).await;
    let at = |secs| noon() + chrono::Duration::seconds(secs);
    let (new, again) = (AttendanceOutcome::New, AttendanceOutcome::Again);
    for (name, secs, outcome) in [
        ("zoe", 1, new),
        ("amy", 2, new),
        ("zoe", 3, again),
        ("毛", 4, new),
        ("amy", 5, again),
    ] {
        assert_eq!(
            store
                .record_attendance(checkin.id, name, at(secs))
                .await
                .unwrap(),
            outcome,
            "{name} at {secs}"
        );
    }
    let names = store.attendance(checkin.id).await.unwrap();
    assert_eq!(
        names,
        [("zoe", 1), ("amy", 2), ("毛", 4)]
            .map(|(name, secs)| Attendance {
                name: name.into(),
                at: millis(at(secs)),
            })
            .to_vec()
    );
    assert!(store.attendance(checkin.id + 1).await.unwrap().is_empty());
}

async fn attendance_order_is_per_checkin(db: Db) {
    let (store, first) = store_with_checkin(&db).await;
    let second = store
        .open_checkin(&channel("live"), 5, first_closes(), first_closes())
        .await
        .unwrap()
        .opened()
        .expect("no other check-in is open in the room");
    for (id, name) in [
        (first.id, "a"),
        (second.id, "b"),
        (first.id, "c"),
        (second.id, "a"),
    ] {
        assert!(
            store
                .record_attendance(id, name, noon())
                .await
                .unwrap()
                .is_new()
        );
    }
    let names = |list: Vec<Attendance>| list.into_iter().map(|a| a.name).collect::<Vec<_>>();
    assert_eq!(names(store.attendance(first.id).await.unwrap()), ["a", "c"]);
    assert_eq!(
        names(store.attendance(second.id).await.unwrap()),
        ["b", "a"]
    );
}

/// Names checking in at once through several instances all land, once each, each with its own
/// position.
async fn attendance_recorded_at_once_on_separate_instances_keeps_one_order(db: Db) {
    let (first, checkin) = store_with_checkin(&db).await;
    let mut instances = vec![first];
    for _ in 0..2 {
        instances.push(db.open().await);
    }
    let writes: Vec<_> = (0..60)
        .map(|n| {
            let store = instances[n % instances.len()].clone();
            tokio::spawn(async move {
                // Every name twice: the second time changes nothing.
                let name = format!("viewer{}", n % 30);
                store
                    .record_attendance(checkin.id, &name, noon())
                    .await
                    .unwrap()
                    .is_new()
            })
        })
        .collect();
    let mut added = 0;
    for write in writes {
        added += usize::from(write.await.unwrap());
    }
    assert_eq!(added, 30);
    let list = instances[1].attendance(checkin.id).await.unwrap();
    let mut names: Vec<_> = list.iter().map(|a| a.name.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 30);
    assert_eq!(instances[2].close_checkin(checkin.id).await.unwrap(), 30);
}

async fn unclosed_checkins_and_their_attendance_survive_reopening(db: Db) {
    let (kept, closed, later) = {
        let (store, kept) = store_with_checkin(&db).await;
        store
            .create_room(&channel("other"), None, [0; 32])
            .await
            .unwrap();
        let closed = store
            .open_checkin(&channel("other"), 10, noon(), noon())
            .await
            .unwrap()
            .opened()
            .expect("no other check-in is open in the room");
        let later = store
            .open_checkin(
                &channel("other"),
                60,
                noon(),
                noon() + chrono::Duration::hours(1),
            )
            .await
            .unwrap()
            .opened()
            .expect("no other check-in is open in the room");
        store
            .record_attendance(kept.id, "ann", noon())
            .await
            .unwrap();
        store.close_checkin(closed.id).await.unwrap();
        (kept, closed, later)
    };
    let store = db.open().await;
    assert_eq!(
        store.unclosed_checkins().await.unwrap(),
        vec![kept.clone(), later.clone()]
    );
    assert!(store.checkin(closed.id).await.unwrap().unwrap().closed);
    assert_eq!(store.attendance(kept.id).await.unwrap().len(), 1);
    assert!(store.room(&channel("live")).await.unwrap().is_some());
    let next = store
        .open_checkin(&channel("live"), 5, first_closes(), first_closes())
        .await
        .unwrap()
        .opened()
        .expect("no other check-in is open in the room");
    assert!(next.id > later.id);
}

async fn appends_stay_dense_and_in_commit_order_among_room_writes(db: Db) {
    let (store, checkin) = store_with_checkin(&db).await;
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = heard.clone();
    store.on_append(Box::new(move |what| {
        if let Committed::Comment(item) = what {
            sink.lock().unwrap().push(item.id);
        }
    }));

    let appends: Vec<_> = (0..100)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(&channel("live"), comment(&format!("c{n}"), None))
                    .await
                    .unwrap()
                    .id
            })
        })
        .collect();
    let room_writes: Vec<_> = (0..50)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let name = format!("viewer{n}");
                assert!(
                    store
                        .record_attendance(checkin.id, &name, noon())
                        .await
                        .unwrap()
                        .is_new()
                );
                store
                    .create_room(&channel(&format!("room{n}")), None, [0; 32])
                    .await
                    .unwrap()
                    .is_some()
            })
        })
        .collect();

    let mut ids = Vec::new();
    for task in appends {
        ids.push(task.await.unwrap());
    }
    for task in room_writes {
        assert!(task.await.unwrap());
    }
    ids.sort();
    assert_eq!(ids, (1..=100).collect::<Vec<i64>>());
    assert_eq!(*heard.lock().unwrap(), (1..=100).collect::<Vec<i64>>());
    let attended = store.attendance(checkin.id).await.unwrap();
    assert_eq!(attended.len(), 50);
}

// ---------------------------------------------------------------------- check-in secrets

/// Every check-in gets a secret of its own when it opens, and every instance (and every later
/// run) reads the same one: the live service derives the codes from it.
async fn each_checkin_keeps_its_own_random_secret_for_every_instance(db: Db) {
    let (first, opened) = store_with_checkin(&db).await;
    first
        .create_room(&channel("other"), None, [0; 32])
        .await
        .unwrap();
    let other = first
        .open_checkin(&channel("other"), 5, noon(), first_closes())
        .await
        .unwrap()
        .opened()
        .expect("no other check-in is open in the room");
    assert_ne!(opened.secret, other.secret);
    assert_ne!(opened.secret.expose(), &[0; 32]);
    let second = db.open().await;
    assert_eq!(second.checkin(opened.id).await.unwrap().unwrap(), opened);
    assert_eq!(
        second.unclosed_checkins().await.unwrap(),
        vec![opened.clone(), other.clone()]
    );
    assert_eq!(
        second
            .current_checkin(&channel("live"), noon())
            .await
            .unwrap()
            .map(|c| c.secret),
        Some(opened.secret.clone())
    );
    // A second host's try is refused with the running check-in, secret and all.
    let refused = second
        .open_checkin(&channel("live"), 5, noon(), first_closes())
        .await
        .unwrap();
    assert_eq!(refused, CheckinOpening::AlreadyOpen(opened.clone()));
    drop((first, second));
    let reopened = db.open().await;
    assert_eq!(reopened.checkin(other.id).await.unwrap().unwrap(), other);
}

async fn the_secret_stays_out_of_debug_output(db: Db) {
    let (_store, opened) = store_with_checkin(&db).await;
    let shown = format!("{opened:?} {:?}", CheckinOpening::Opened(opened.clone()));
    let bytes = opened.secret.expose();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert!(!shown.contains(&format!("{bytes:?}")), "{shown}");
    assert!(!shown.contains(&hex), "{shown}");
    assert!(!shown.contains(&format!("{}, {}, {}", bytes[0], bytes[1], bytes[2])));
    assert!(shown.contains("redacted"), "{shown}");
}

/// Every instance that holds a check-in closes it when its time is up: the first close counts,
/// later ones report that count, and a name arriving after it is not recorded, so every instance
/// tells its viewers the same number.
async fn the_first_close_keeps_the_count_and_attendance_stops_there(db: Db) {
    let (store, opened) = store_with_checkin(&db).await;
    for name in ["ann", "bob"] {
        store
            .record_attendance(opened.id, name, noon())
            .await
            .unwrap();
    }
    assert_eq!(store.close_checkin(opened.id).await.unwrap(), 2);
    assert_eq!(
        store
            .record_attendance(opened.id, "late", first_closes())
            .await
            .unwrap(),
        AttendanceOutcome::Closed
    );
    assert_eq!(
        store
            .record_attendance(opened.id, "ann", first_closes())
            .await
            .unwrap(),
        AttendanceOutcome::Closed
    );
    let other = db.open().await;
    assert_eq!(other.close_checkin(opened.id).await.unwrap(), 2);
    assert_eq!(store.close_checkin(opened.id).await.unwrap(), 2);
    let names: Vec<_> = other
        .attendance(opened.id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["ann", "bob"]);
}

/// Instances closing one check-in at once while names still arrive: all report one count, and
/// it is the number of names the list holds.
async fn closes_on_separate_instances_at_once_all_report_the_same_count(db: Db) {
    let (first, checkin) = store_with_checkin(&db).await;
    let mut instances = vec![first];
    for _ in 0..3 {
        instances.push(db.open().await);
    }
    let attends: Vec<_> = (0..40)
        .map(|n| {
            let store = instances[n % instances.len()].clone();
            tokio::spawn(async move {
                store
                    .record_attendance(checkin.id, &format!("v{n}"), noon())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let closes: Vec<_> = (0..8)
        .map(|n| {
            let store = instances[n % instances.len()].clone();
            tokio::spawn(async move { store.close_checkin(checkin.id).await.unwrap() })
        })
        .collect();
    let mut recorded = 0;
    for attend in attends {
        if attend.await.unwrap() == AttendanceOutcome::New {
            recorded += 1;
        }
    }
    let mut counts = Vec::new();
    for close in closes {
        counts.push(close.await.unwrap());
    }
    assert!(counts.iter().all(|c| *c == counts[0]), "{counts:?}");
    assert_eq!(counts[0], recorded);
    assert_eq!(
        instances[1].attendance(checkin.id).await.unwrap().len(),
        recorded
    );
}

async fn the_current_checkin_of_a_room_is_found_until_it_closes(db: Db) {
    let (store, opened) = store_with_checkin(&db).await;
    let current = |at| {
        let store = store.clone();
        async move {
            store
                .current_checkin(&channel("live"), at)
                .await
                .unwrap()
                .map(|c| c.id)
        }
    };
    assert_eq!(current(noon()).await, Some(opened.id));
    assert_eq!(current(first_closes()).await, None, "its time is over");
    assert_eq!(
        store
            .current_checkin(&channel("nowhere"), noon())
            .await
            .unwrap(),
        None
    );
    store.close_checkin(opened.id).await.unwrap();
    assert_eq!(current(noon()).await, None, "closed");
}

/// Room `live` with three check-ins a minute apart from [`noon`]: the first two closed (ann and
/// bob at the first, bob at the second), the third still open with `ann` so far; room `other`
/// has one of its own (with `ann`) between the second and the third.
async fn store_with_three_checkins(db: &Db) -> (Handle, [CheckinRecord; 3], CheckinRecord) {
    let (store, first) = store_with_checkin(db).await;
    store
        .create_room(&channel("other"), None, [8; 32])
        .await
        .unwrap()
        .unwrap();
    let minute = chrono::Duration::minutes(1);
    let open = |room: &'static str, at: DateTime<Utc>| {
        let store = store.clone();
        async move {
            store
                .open_checkin(&channel(room), 7, at, at + minute)
                .await
                .unwrap()
                .opened()
                .expect("the room's earlier check-in has closed")
        }
    };
    let attend = |id: i64, names: &'static [&'static str]| {
        let store = store.clone();
        async move {
            for name in names {
                assert!(
                    store
                        .record_attendance(id, name, noon())
                        .await
                        .unwrap()
                        .is_new()
                );
            }
        }
    };
    attend(first.id, &["ann", "bob"]).await;
    assert_eq!(store.close_checkin(first.id).await.unwrap(), 2);
    let second = open("live", noon() + minute).await;
    attend(second.id, &["bob"]).await;
    assert_eq!(store.close_checkin(second.id).await.unwrap(), 1);
    let elsewhere = open("other", noon() + minute * 2).await;
    attend(elsewhere.id, &["ann"]).await;
    let third = open("live", noon() + minute * 3).await;
    attend(third.id, &["ann"]).await;
    (store, [first, second, third], elsewhere)
}

fn summary(record: &CheckinRecord, closed: bool, attended: usize) -> CheckinSummary {
    CheckinSummary {
        id: record.id,
        interval_secs: record.interval_secs,
        opened_at: record.opened_at,
        closes_at: record.closes_at,
        closed,
        attended,
    }
}

/// The host's list of past check-ins: a closed one counts what its close kept (a name arriving
/// after it is not counted), an open one its names so far, and another room's are not listed.
async fn a_rooms_checkins_are_listed_oldest_first_with_their_counts(db: Db) {
    let (store, [first, second, third], elsewhere) = store_with_three_checkins(&db).await;
    assert_eq!(
        store
            .record_attendance(first.id, "late", first_closes())
            .await
            .unwrap(),
        AttendanceOutcome::Closed
    );
    let other = db.open().await;
    let listed = other.room_checkins(&channel("live"), 100).await.unwrap();
    assert_eq!(
        listed,
        [
            summary(&first, true, 2),
            summary(&second, true, 1),
            summary(&third, false, 1),
        ]
    );
    assert_eq!(listed[1].interval_secs, 7);
    assert_eq!(
        listed[1].opened_at,
        millis(noon() + chrono::Duration::minutes(1))
    );

    // The open one's count follows its list.
    store
        .record_attendance(third.id, "cy", noon())
        .await
        .unwrap();
    assert_eq!(
        other.room_checkins(&channel("live"), 100).await.unwrap()[2].attended,
        2
    );
    assert_eq!(
        other.room_checkins(&channel("live"), 2).await.unwrap(),
        [summary(&second, true, 1), summary(&third, false, 2)],
        "the newest two"
    );
    assert_eq!(
        other.room_checkins(&channel("other"), 100).await.unwrap(),
        [summary(&elsewhere, false, 1)]
    );
    assert!(
        other
            .room_checkins(&channel("never"), 100)
            .await
            .unwrap()
            .is_empty()
    );
}

/// The attendance of a whole room, for its table: one query, newest check-in first and each
/// one's names in order; from a given check-in on; a cut by the limit falls in the oldest.
async fn a_rooms_attendance_is_read_newest_checkin_first_and_cut_only_in_the_oldest(db: Db) {
    let (store, [first, second, third], elsewhere) = store_with_three_checkins(&db).await;
    let read = |from: i64, limit: usize| {
        let store = store.clone();
        async move {
            store
                .room_attendance(&channel("live"), from, limit)
                .await
                .unwrap()
                .into_iter()
                .map(|a| (a.checkin, a.name))
                .collect::<Vec<_>>()
        }
    };
    let row = |id: i64, name: &str| (id, name.to_owned());
    assert_eq!(
        read(first.id, 100).await,
        [
            row(third.id, "ann"),
            row(second.id, "bob"),
            row(first.id, "ann"),
            row(first.id, "bob"),
        ]
    );
    assert_eq!(
        read(second.id, 100).await,
        [row(third.id, "ann"), row(second.id, "bob")]
    );
    assert_eq!(
        read(first.id, 3).await,
        [
            row(third.id, "ann"),
            row(second.id, "bob"),
            row(first.id, "ann")
        ]
    );
    assert_eq!(
        store
            .room_attendance(&channel("other"), 0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|a| (a.checkin, a.name))
            .collect::<Vec<_>>(),
        [row(elsewhere.id, "ann")]
    );
    assert!(
        store
            .room_attendance(&channel("never"), 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

// -------------------------------------------------------------------------------- moderation

async fn a_deleted_comment_leaves_every_read_is_heard_of_and_logged_once(db: Db) {
    let store = db.open().await;
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = heard.clone();
    store.on_append(Box::new(move |what| {
        if let Committed::Deleted { channel, id } = what {
            sink.lock().unwrap().push((channel.to_string(), id));
        }
    }));
    let v = channel("v");
    for (n, time) in [(1, 1.0), (2, 2.0), (3, 3.0)] {
        store
            .append(&v, comment(&format!("c{n}"), Some(time)))
            .await
            .unwrap();
    }
    let deleted = store.delete_comment(&v, 2, "host").await.unwrap();
    assert_eq!(deleted.map(|d| (d.id, d.text)), Some((2, "c2".to_owned())));
    assert_eq!(ids(&store.after(&v, 0, 10).await.unwrap()), [1, 3]);
    assert_eq!(ids(&store.latest(&v, 2).await.unwrap()), [1, 3]);
    assert_eq!(
        ids(&store.time_window(&v, 0.0, 10.0, 10).await.unwrap()),
        [1, 3]
    );
    // Except where the store is asked what it holds (to recognise an archive's rows).
    assert_eq!(
        ids(&store.after_including_deleted(&v, 0, 10).await.unwrap()),
        [1, 2, 3]
    );
    // Another instance reads the same.
    let other = db.open().await;
    assert_eq!(ids(&other.after(&v, 0, 10).await.unwrap()), [1, 3]);
    // Twice, or an id that never was, is nothing (and logs nothing).
    assert_eq!(store.delete_comment(&v, 2, "host").await.unwrap(), None);
    assert_eq!(store.delete_comment(&v, 99, "host").await.unwrap(), None);
    assert_eq!(*heard.lock().unwrap(), [("v".to_owned(), 2)]);
    // The id is not reused.
    assert_eq!(store.last_id(&v).await.unwrap(), 3);
    let next = store.append(&v, comment("c4", Some(4.0))).await.unwrap();
    assert_eq!(next.id, 4);
    let log = store.moderation_log(&v, 10).await.unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].action, ModerationAction::Delete);
    assert_eq!(log[0].actor, "host");
    assert_eq!(log[0].target, "2");
    assert_eq!(log[0].detail.as_deref(), Some("ann: c2"));
    assert!((Utc::now() - log[0].at).num_seconds().abs() < 60);
    // A poller reads the deletes after the last line it saw, and only deletes.
    store.mute(&v, "bob", time::now(), "host").await.unwrap();
    store.delete_comment(&v, 1, "admin").await.unwrap();
    let deleted = store.deletions(&v, 0, 10).await.unwrap();
    assert_eq!(
        deleted.iter().map(|(_, id)| *id).collect::<Vec<_>>(),
        [2, 1]
    );
    assert_eq!(
        store.deletions(&v, deleted[0].0, 10).await.unwrap(),
        [deleted[1]]
    );
    assert_eq!(store.deletions(&v, 0, 1).await.unwrap(), [deleted[0]]);
    assert!(
        store
            .deletions(&channel("w"), 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_deleted_import_is_not_brought_back_by_importing_it_again(db: Db) {
    let store = db.open().await;
    let v = channel("v");
    let archive = || {
        vec![ImportedDanmaku {
            new: comment("old", Some(1.0)),
            origin: "file:1".into(),
            sent_at: None,
        }]
    };
    store.import(&v, archive()).await.unwrap();
    assert!(
        store
            .delete_comment(&v, 1, "admin")
            .await
            .unwrap()
            .is_some()
    );
    let again = store.import(&v, archive()).await.unwrap();
    assert_eq!(again.added, 0, "{again:?}");
    assert!(store.after(&v, 0, 10).await.unwrap().is_empty());
}

async fn mutes_last_until_their_time_and_can_be_lifted(db: Db) {
    let store = db.open().await;
    let r = channel("r");
    let now = time::now();
    let soon = now + chrono::Duration::minutes(10);
    store.mute(&r, "bob", soon, "host").await.unwrap();
    store
        .mute(&r, "carl", now - chrono::Duration::seconds(1), "host")
        .await
        .unwrap();
    store
        .mute(&channel("elsewhere"), "dan", soon, "host")
        .await
        .unwrap();
    assert_eq!(
        store.mutes(&r, now).await.unwrap(),
        [Mute {
            name: "bob".into(),
            until: time::to_millis(soon),
        }],
        "a mute that ended is not listed; another room's is not"
    );
    // A new mute replaces the old one.
    let later = now + chrono::Duration::hours(1);
    store.mute(&r, "bob", later, "host").await.unwrap();
    assert_eq!(
        db.open().await.mutes(&r, now).await.unwrap()[0].until,
        time::to_millis(later)
    );
    assert!(
        !store.unmute(&r, "carl", "host").await.unwrap(),
        "had ended"
    );
    assert!(store.unmute(&r, "bob", "host").await.unwrap());
    assert!(store.mutes(&r, now).await.unwrap().is_empty());
    let actions: Vec<_> = store
        .moderation_log(&r, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| (e.action, e.target.clone()))
        .collect();
    assert_eq!(
        actions,
        [
            (ModerationAction::Unmute, "bob".to_owned()),
            (ModerationAction::Mute, "bob".to_owned()),
            (ModerationAction::Mute, "carl".to_owned()),
            (ModerationAction::Mute, "bob".to_owned()),
        ]
    );
}

async fn banned_words_are_replaced_whole_and_kept_in_order(db: Db) {
    let store = db.open().await;
    let r = channel("r");
    assert!(store.banned_words(&r).await.unwrap().is_empty());
    let words = |list: &[&str]| list.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
    store
        .set_banned_words(&r, words(&["zeta", "alpha", "剧透"]), "host")
        .await
        .unwrap();
    assert_eq!(
        db.open().await.banned_words(&r).await.unwrap(),
        words(&["zeta", "alpha", "剧透"])
    );
    store
        .set_banned_words(&r, words(&["beta"]), "admin")
        .await
        .unwrap();
    assert_eq!(store.banned_words(&r).await.unwrap(), words(&["beta"]));
    store
        .set_banned_words(&r, Vec::new(), "host")
        .await
        .unwrap();
    assert!(store.banned_words(&r).await.unwrap().is_empty());
    let log = store.moderation_log(&r, 10).await.unwrap();
    assert_eq!(log.len(), 3);
    assert_eq!(log[1].actor, "admin");
    assert_eq!(log[1].detail.as_deref(), Some("1 word"));
}

async fn the_moderation_log_is_per_channel_and_newest_first(db: Db) {
    let store = db.open().await;
    let (a, b) = (channel("a"), channel("b"));
    for n in 0..5 {
        store
            .mute(&a, &format!("n{n}"), time::now(), "host")
            .await
            .unwrap();
    }
    store.mute(&b, "other", time::now(), "host").await.unwrap();
    let log = store.moderation_log(&a, 3).await.unwrap();
    let targets: Vec<_> = log.iter().map(|e| e.target.as_str()).collect();
    assert_eq!(targets, ["n4", "n3", "n2"]);
    assert!(log.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(store.moderation_log(&b, 10).await.unwrap().len(), 1);
}

async fn a_streams_start_is_marked_replaced_and_kept_per_room(db: Db) {
    let store = db.open().await;
    let (room, other) = (channel("room"), channel("other"));
    for r in [&room, &other] {
        store.create_room(r, None, [1; 32]).await.unwrap();
    }
    assert_eq!(store.stream_start(&room).await.unwrap(), None);
    store.mark_stream_start(&room, noon()).await.unwrap();
    let later = noon() + chrono::Duration::milliseconds(90_123);
    store.mark_stream_start(&room, later).await.unwrap();
    assert_eq!(
        db.open().await.stream_start(&room).await.unwrap(),
        Some(millis(later))
    );
    assert_eq!(store.stream_start(&other).await.unwrap(), None);
    // A room never created has no stream to start.
    assert!(matches!(
        store.mark_stream_start(&channel("nobody"), noon()).await,
        Err(StoreError::Database(_))
    ));
}
