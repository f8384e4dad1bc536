//! Appends per second and ack latency of the store's backends, SQLite against PostgreSQL.
//!
//! For each backend this opens a fresh store with the settings the services use (SQLite: a file in
//! a temporary folder, WAL, `synchronous=FULL`, [`SqliteOptions::default`]; PostgreSQL: a fresh
//! database on the server named by `DANMAKU_TEST_POSTGRES`, [`PgOptions::default`]) and runs three
//! cases for a fixed time each:
//!
//! - one writer appending comments one after the other (each `append` awaited before the next);
//! - 50 writers (tokio tasks on a multi-thread runtime) appending to one channel at once;
//! - 50 writers each appending to a channel of its own.
//!
//! Each append's latency is the time from calling `append` until its future resolved, which is
//! the ack (the comment committed). It prints a Markdown table: appends per second, p50, p99 and
//! the longest ack, then the ratios PostgreSQL/SQLite per case.
//!
//! ```sh
//! DANMAKU_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/postgres \
//!     cargo bench -p danmaku-store --bench append
//! ```
//!
//! Without `DANMAKU_TEST_POSTGRES` only SQLite is measured. `BENCH_SECS` sets the seconds per
//! case (default 5); each case is preceded by a short warm-up that is not counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use danmaku_store::{PgOptions, PgStore, SqliteOptions, SqliteStore, Store, testing};
use shared_model::comment::{ChannelId, DraftDanmaku, NewDanmaku, TimeRule};

/// Concurrent writers of the concurrent cases.
const WRITERS: usize = 50;

/// Warm-up before each case, not counted.
const WARM_UP: Duration = Duration::from_millis(500);

/// One measured case.
#[derive(Debug, Clone, Copy)]
struct Case {
    /// What the row says.
    name: &'static str,
    /// Tasks appending at once.
    writers: usize,
    /// Whether each writer has a channel of its own.
    own_channels: bool,
}

/// The cases, in the order they run and print.
const CASES: [Case; 3] = [
    Case {
        name: "1 writer",
        writers: 1,
        own_channels: false,
    },
    Case {
        name: "50 writers, 1 channel",
        writers: WRITERS,
        own_channels: false,
    },
    Case {
        name: "50 writers, 50 channels",
        writers: WRITERS,
        own_channels: true,
    },
];

/// What one case measured.
#[derive(Debug, Clone)]
struct Outcome {
    /// Acknowledged appends.
    appends: usize,
    /// Appends that failed.
    errors: usize,
    /// How long the case ran.
    elapsed: Duration,
    /// Ack latencies, sorted.
    latencies: Vec<Duration>,
    /// `/proc/loadavg`'s 1-minute figure before and after.
    load: (String, String),
}

impl Outcome {
    fn per_sec(&self) -> f64 {
        self.appends as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p`-th quantile (nearest rank) in milliseconds.
    fn quantile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank =
            ((p * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1].as_secs_f64() * 1000.0
    }
}

fn main() {
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let duration = Duration::from_secs_f64(secs);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run(duration));
}

async fn run(duration: Duration) {
    eprintln!(
        "{} s per case, {} worker threads, load before: {}",
        duration.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    let mut rows: Vec<(&'static str, Case, Outcome)> = Vec::new();

    let folder = tempfile::tempdir().expect("a temporary folder");
    let sqlite = SqliteStore::open_with(folder.path().join("bench.db"), SqliteOptions::default())
        .expect("opening SQLite");
    let sqlite: Arc<dyn Store> = Arc::new(sqlite);
    for case in CASES {
        let outcome = measure(&sqlite, case, "sqlite", duration).await;
        rows.push(("SQLite", case, outcome));
    }
    drop(sqlite);

    let database = testing::postgres().await;
    if let Some(database) = &database {
        let pg = PgStore::connect(database.url(), PgOptions::default())
            .await
            .expect("connecting to PostgreSQL");
        let pg: Arc<dyn Store> = Arc::new(pg);
        for case in CASES {
            let outcome = measure(&pg, case, "pg", duration).await;
            rows.push(("PostgreSQL", case, outcome));
        }
    } else {
        eprintln!(
            "PostgreSQL skipped: set {} to measure it",
            testing::POSTGRES_VAR
        );
    }
    drop(database);

    println!(
        "| backend | case | appends | errors | appends/s | p50 ms | p99 ms | max ms | load 1 min before → after |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---|");
    for (backend, case, o) in &rows {
        println!(
            "| {backend} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} → {} |",
            case.name,
            o.appends,
            o.errors,
            o.per_sec(),
            o.quantile_ms(0.50),
            o.quantile_ms(0.99),
            o.quantile_ms(1.0),
            o.load.0,
            o.load.1
        );
    }
    let find = |backend: &str, case: &str| {
        rows.iter()
            .find(|(b, c, _)| *b == backend && c.name == case)
            .map(|(_, _, o)| o)
    };
    if rows.iter().any(|(b, _, _)| *b == "PostgreSQL") {
        println!();
        println!("| case (PostgreSQL/SQLite) | appends/s | p50 | p99 |");
        println!("|---|---:|---:|---:|");
        for case in CASES {
            if let (Some(s), Some(p)) = (find("SQLite", case.name), find("PostgreSQL", case.name)) {
                println!(
                    "| {} | {:.2}× | {:.2}× | {:.2}× |",
                    case.name,
                    p.per_sec() / s.per_sec(),
                    p.quantile_ms(0.50) / s.quantile_ms(0.50),
                    p.quantile_ms(0.99) / s.quantile_ms(0.99)
                );
            }
        }
    }
    eprintln!("load after: {}", loadavg());
}

/// Runs `case` on `store`: a warm-up, then `duration` of appends by `case.writers` tasks.
async fn measure(store: &Arc<dyn Store>, case: Case, prefix: &str, duration: Duration) -> Outcome {
    let tag = format!("{prefix}-{}-{}", case.writers, case.own_channels);
    let _ = run_writers(store, case, &format!("warm-{tag}"), WARM_UP).await;
    let before = loadavg();
    let started = Instant::now();
    let results = run_writers(store, case, &tag, duration).await;
    let elapsed = started.elapsed();
    let after = loadavg();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for (ok, failed) in results {
        latencies.extend(ok);
        errors += failed;
    }
    latencies.sort_unstable();
    let outcome = Outcome {
        appends: latencies.len(),
        errors,
        elapsed,
        latencies,
        load: (before, after),
    };
    eprintln!(
        "{prefix} {}: {:.0} appends/s, p50 {:.2} ms, p99 {:.2} ms",
        case.name,
        outcome.per_sec(),
        outcome.quantile_ms(0.5),
        outcome.quantile_ms(0.99)
    );
    outcome
}

/// `case.writers` tasks appending until `duration` passed; each returns its ack latencies and
/// its count of failed appends.
async fn run_writers(
    store: &Arc<dyn Store>,
    case: Case,
    tag: &str,
    duration: Duration,
) -> Vec<(Vec<Duration>, usize)> {
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..case.writers)
        .map(|writer| {
            let store = Arc::clone(store);
            let name = if case.own_channels {
                format!("{tag}-{writer}")
            } else {
                tag.to_owned()
            };
            let channel = ChannelId::parse(&name).expect("a valid channel name");
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                let mut n = 0u64;
                while Instant::now() < deadline {
                    n += 1;
                    let new = comment(writer, n);
                    let sent = Instant::now();
                    match store.append(&channel, new).await {
                        Ok(_) => latencies.push(sent.elapsed()),
                        Err(_) => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.expect("a writer task"));
    }
    results
}

/// A 40-character live-room comment, as the services would store it.
fn comment(writer: usize, n: u64) -> NewDanmaku {
    let text = format!("writer {writer:02} comment {n:08} ............");
    DraftDanmaku {
        author: format!("w{writer}"),
        text: text.chars().take(40).collect(),
        ..Default::default()
    }
    .validate(TimeRule::Absent)
    .expect("a valid comment")
}

/// The 1-minute load average from `/proc/loadavg`, or `?`.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}
