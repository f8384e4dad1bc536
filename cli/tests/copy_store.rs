//! `danmaku copy-store` end to end: the real binary copies a real SQLite store into a real
//! PostgreSQL database (`DANMAKU_TEST_POSTGRES`; without it the test says it skipped, except
//! under `CI=true`), the copy reads back the same, a second run copies nothing, and a database
//! with another history is refused with a clear message and a failing status.
#![cfg(feature = "copy")]

mod helpers;

use danmaku_store::{ImportedDanmaku, PgOptions, PgStore, RoomStore, SqliteStore, Store, testing};
use helpers::{WAIT, run_danmaku};
use shared_model::comment::{ChannelId, DraftDanmaku, NewDanmaku, TimeRule};

fn channel(name: &str) -> ChannelId {
    ChannelId::parse(name).unwrap()
}

fn comment(text: &str, time: Option<f64>) -> NewDanmaku {
    let draft = DraftDanmaku {
        author: "ann".into(),
        text: text.into(),
        color: Some("#ff8800".into()),
        mode: Some("top".into()),
        time,
    };
    let rule = if time.is_some() {
        TimeRule::Required
    } else {
        TimeRule::Absent
    };
    draft.validate(rule).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_store_copies_a_sqlite_store_into_postgres_once() {
    let Some(db) = testing::postgres().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("ws-stream.db");
    let sqlite = SqliteStore::open(&source).unwrap();
    for n in 0..25 {
        sqlite
            .append(&channel("lobby"), comment(&format!("live {n}"), None))
            .await
            .unwrap();
    }
    let archive: Vec<_> = (0..10)
        .map(|n| ImportedDanmaku {
            new: comment(&format!("archived {n}"), Some(f64::from(n))),
            origin: format!("xml:{n}"),
            sent_at: None,
        })
        .collect();
    sqlite.import(&channel("demo"), archive).await.unwrap();
    sqlite
        .create_room(&channel("lobby"), Some("Lobby".into()), [3; 32])
        .await
        .unwrap();

    let from = source.to_str().unwrap();
    let args = [
        "copy-store",
        "--from",
        from,
        "--to",
        db.url(),
        "--batch",
        "7",
    ];
    let first = run_danmaku(&args, WAIT);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{first:?} {stdout} {}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        stdout.contains("comments              35 read        35 copied         0 already there"),
        "{stdout}"
    );
    assert!(
        stdout.contains("rooms                  1 read         1 copied"),
        "{stdout}"
    );

    let pg = PgStore::connect(db.url(), PgOptions::default())
        .await
        .unwrap();
    for name in ["lobby", "demo"] {
        assert_eq!(
            pg.after(&channel(name), 0, 100).await.unwrap(),
            sqlite.after(&channel(name), 0, 100).await.unwrap(),
            "{name}"
        );
    }
    assert_eq!(
        pg.room(&channel("lobby")).await.unwrap(),
        sqlite.room(&channel("lobby")).await.unwrap()
    );

    let second = run_danmaku(&args, WAIT);
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "{second:?}");
    assert!(
        stdout.contains("comments              35 read         0 copied        35 already there"),
        "{stdout}"
    );
    assert!(stdout.contains("nothing new"), "{stdout}");

    // Another history: the SQLite file of another instance, with a different comment 1.
    let other = dir.path().join("other.db");
    SqliteStore::open(&other)
        .unwrap()
        .append(&channel("lobby"), comment("someone else", None))
        .await
        .unwrap();
    let refused = run_danmaku(
        &[
            "copy-store",
            "--from",
            other.to_str().unwrap(),
            "--to",
            db.url(),
            "--quiet",
        ],
        WAIT,
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        stderr.contains("comment 1 of channel `lobby`") && stderr.contains("another history"),
        "{stderr}"
    );
    assert_eq!(
        pg.after(&channel("lobby"), 0, 1).await.unwrap()[0].text,
        "live 0"
    );
}

#[test]
fn copy_store_refuses_a_target_that_is_not_postgres() {
    let out = run_danmaku(
        &["copy-store", "--from", "a.db", "--to", "sqlite://b.db"],
        WAIT,
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--to takes a PostgreSQL URL"), "{stderr}");
}
