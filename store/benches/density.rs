//! The density of a video with a million comments: how long [`Store::density`] (counts per time
//! bucket, computed by the database in one `GROUP BY`) takes, against fetching every row and
//! counting in Rust, which is what a service would do without it.
//!
//! For each backend this opens a fresh store with the services' settings except a long deadline
//! (fetching a million rows takes longer than the services' 5 s; SQLite: a file in a temporary
//! folder; PostgreSQL: a fresh database on the server named by `DANMAKU_TEST_POSTGRES`), fills
//! one video with `DENSITY_COMMENTS` comments (default 1,000,000, imported in batches) spread
//! over a 20-minute video with a peak at its middle, and times:
//!
//! - `density` with the page's duration and 100 buckets, and with 1,000;
//! - `density` without a duration (the latest comment's time is looked up first);
//! - every row of the video (`time_window` over the whole video, no limit), counted in Rust.
//!
//! It prints a Markdown table (median, fastest and slowest of the runs, and the load average
//! around them) for BENCHMARKS.md.
//!
//! ```sh
//! DANMAKU_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/postgres \
//!     cargo bench -p danmaku-store --bench density
//! ```
//!
//! Without `DANMAKU_TEST_POSTGRES` only SQLite is measured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use danmaku_store::{
    ImportedDanmaku, PgOptions, PgStore, SqliteOptions, SqliteStore, Store, testing,
};
use shared_model::comment::{ChannelId, DraftDanmaku, TimeRule};

/// The video's length in seconds (20 minutes).
const VIDEO_SECS: f64 = 1200.0;

/// Comments per import transaction while filling.
const FILL_BATCH: usize = 20_000;

/// Timed runs of each density case.
const DENSITY_RUNS: usize = 10;

/// Timed runs of the fetch-every-row case (it is slow; a few runs say enough).
const FETCH_RUNS: usize = 3;

/// The store deadline for the benchmark: long enough to fetch a million rows.
const BENCH_DEADLINE: Duration = Duration::from_secs(300);

fn main() {
    let comments: usize = std::env::var("DENSITY_COMMENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run(comments));
}

/// One timed case on one backend.
struct Row {
    /// `SQLite` or `PostgreSQL`.
    backend: &'static str,
    /// What was timed.
    case: String,
    /// The run times, sorted.
    times: Vec<Duration>,
    /// `/proc/loadavg`'s 1-minute figure before and after.
    load: (String, String),
}

async fn run(comments: usize) {
    eprintln!(
        "{comments} comments, {} worker threads, load before: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    let mut rows = Vec::new();

    let folder = tempfile::tempdir().expect("a temporary folder");
    let sqlite = SqliteStore::open_with(
        folder.path().join("bench.db"),
        SqliteOptions {
            timeout: BENCH_DEADLINE,
            ..SqliteOptions::default()
        },
    )
    .expect("opening SQLite");
    let sqlite: Arc<dyn Store> = Arc::new(sqlite);
    measure(&sqlite, "SQLite", comments, &mut rows, None).await;
    drop(sqlite);

    let database = testing::postgres().await;
    if let Some(database) = &database {
        let pg = PgStore::connect(
            database.url(),
            PgOptions {
                timeout: BENCH_DEADLINE,
                ..PgOptions::default()
            },
        )
        .await
        .expect("connecting to PostgreSQL");
        let pg: Arc<dyn Store> = Arc::new(pg);
        measure(&pg, "PostgreSQL", comments, &mut rows, Some(database.url())).await;
    } else {
        eprintln!(
            "PostgreSQL skipped: set {} to measure it",
            testing::POSTGRES_VAR
        );
    }
    drop(database);

    println!(
        "| backend | case ({comments} comments) | runs | median ms | fastest ms | slowest ms | load 1 min before → after |"
    );
    println!("|---|---|---:|---:|---:|---:|---|");
    for row in &rows {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {} → {} |",
            row.backend,
            row.case,
            row.times.len(),
            ms(row.times[row.times.len() / 2]),
            ms(row.times[0]),
            ms(row.times[row.times.len() - 1]),
            row.load.0,
            row.load.1
        );
    }
}

/// Fills `store` and times every case on it. For PostgreSQL (`vacuum` is its URL), the first
/// case is timed right after the bulk import too, before the `VACUUM ANALYZE` that autovacuum
/// would run soon after one (an index-only scan needs the visibility map it writes).
async fn measure(
    store: &Arc<dyn Store>,
    backend: &'static str,
    comments: usize,
    rows: &mut Vec<Row>,
    vacuum: Option<&str>,
) {
    let video = ChannelId::parse("bench-video").expect("a valid channel");
    let started = Instant::now();
    fill(store, &video, comments).await;
    eprintln!(
        "{backend}: filled {comments} comments in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Each case checks its answer, so that a broken query cannot look fast.
    let total = u64::try_from(comments).expect("a count fits");
    if let Some(url) = vacuum {
        rows.push(
            time_runs(
                backend,
                "density, 100 buckets, right after the import (before VACUUM)".into(),
                FETCH_RUNS,
                || async {
                    let density = store
                        .density(&video, Some(VIDEO_SECS), 100)
                        .await
                        .expect("a density");
                    assert_eq!(density.counts.iter().sum::<u64>(), total);
                },
            )
            .await,
        );
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connecting to PostgreSQL");
        tokio::spawn(connection);
        client
            .batch_execute("VACUUM ANALYZE danmaku")
            .await
            .expect("VACUUM ANALYZE");
        // The plan, for the record: an index-only scan of danmaku_visible_by_time.
        let plan = client
            .query(
                "EXPLAIN (ANALYZE, BUFFERS) SELECT FLOOR(time * 100 / 1200.0)::BIGINT AS bucket,
                        COUNT(*) FROM danmaku
                 WHERE channel = 'bench-video' AND time >= 0 AND time <= 1200.0
                   AND deleted_at IS NULL
                 GROUP BY bucket",
                &[],
            )
            .await
            .expect("EXPLAIN");
        for line in plan {
            eprintln!("  {}", line.get::<_, String>(0));
        }
    }
    for buckets in [100, 1000] {
        rows.push(
            time_runs(
                backend,
                format!("density, {buckets} buckets"),
                DENSITY_RUNS,
                || async {
                    let density = store
                        .density(&video, Some(VIDEO_SECS), buckets)
                        .await
                        .expect("a density");
                    assert_eq!(density.counts.iter().sum::<u64>(), total);
                },
            )
            .await,
        );
    }
    rows.push(
        time_runs(
            backend,
            "density, 100 buckets, no duration".into(),
            DENSITY_RUNS,
            || async {
                let density = store.density(&video, None, 100).await.expect("a density");
                assert_eq!(density.counts.iter().sum::<u64>(), total);
            },
        )
        .await,
    );
    rows.push(
        time_runs(
            backend,
            "every row fetched, counted in Rust (100 buckets)".into(),
            FETCH_RUNS,
            || async {
                let items = store
                    .time_window(&video, 0.0, VIDEO_SECS + 1.0, usize::MAX)
                    .await
                    .expect("the rows");
                let mut counts = [0u64; 100];
                for item in &items {
                    let time = item.time.expect("a video comment has a time");
                    let bucket = ((time * 100.0 / VIDEO_SECS) as usize).min(99);
                    counts[bucket] += 1;
                }
                assert_eq!(counts.iter().sum::<u64>(), total);
            },
        )
        .await,
    );
}

/// Runs `case` once untimed (to warm caches), then `runs` times timed.
async fn time_runs<F, Fut>(backend: &'static str, case: String, runs: usize, case_fn: F) -> Row
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    case_fn().await;
    let before = loadavg();
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        case_fn().await;
        times.push(started.elapsed());
    }
    times.sort();
    eprintln!("{backend}: {case}: median {:?}", times[times.len() / 2]);
    Row {
        backend,
        case,
        times,
        load: (before, loadavg()),
    }
}

/// Imports `comments` comments into `video`: most spread evenly over the video, one in four
/// crowded into the minute around its middle (the "everyone reacted" peak).
async fn fill(store: &Arc<dyn Store>, video: &ChannelId, comments: usize) {
    let mut n = 0;
    while n < comments {
        let batch: Vec<ImportedDanmaku> = (n..comments.min(n + FILL_BATCH))
            .map(|i| {
                // A cheap, repeatable scatter (a multiplicative hash), in milliseconds.
                let spread = (i as u64).wrapping_mul(2_654_435_761) % 1_000_000;
                let time = if i % 4 == 0 {
                    570.0 + spread as f64 * 60.0 / 1_000_000.0
                } else {
                    spread as f64 * VIDEO_SECS / 1_000_000.0
                };
                let new = DraftDanmaku {
                    author: format!("viewer{}", i % 5000),
                    text: format!("comment {i} at {time:.1} s"),
                    time: Some(time),
                    ..Default::default()
                }
                .validate(TimeRule::Required)
                .expect("a valid comment");
                ImportedDanmaku {
                    new,
                    origin: format!("bench:{i}"),
                    sent_at: None,
                }
            })
            .collect();
        n += batch.len();
        store.import(video, batch).await.expect("an import");
    }
}

/// The 1-minute load average from `/proc/loadavg`, or `?`.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}
