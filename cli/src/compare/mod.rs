//! `danmaku compare`: one comment stream, delivered to M viewers over each transport at once,
//! measured at the viewers' sockets — the seed's traffic comparison, with numbers.
//!
//! Senders post the same schedule of comments to a room of the HTTP service and to the live
//! room of the same name on the live service. Meanwhile M viewers per row receive them: short
//! polling the cursor API at each `--short-intervals` (the seed's 10 s and a faster one), long
//! polling it, the seed's own `GET /polling` (which loses and repeats comments), and the live
//! room's WebSocket. Every row reports requests, bytes each way, bytes per delivered comment,
//! latency, and comments lost or repeated; an SVG chart shows bytes over time per row.
//!
//! - [`clients`]: the receiving loops and the senders.
//! - [`report`]: the table and the JSON.
//! - [`chart`]: the SVG.

pub mod chart;
pub mod clients;
pub mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shared_model::ChannelId;
use tokio::sync::watch;

use crate::bench::seconds;
use crate::endpoint::Base;
use crate::error::CliError;
use crate::procfs::{self, CpuUse, CpuVerdict};
use crate::servers::{self, LocalService};
use crate::stamp::{IndexSet, Schedule};
use crate::transport::counting::TrafficSnapshot;
use clients::{Context, Row, Stored, Transport};
use report::{CompareReport, RowReport};

/// How often bytes are sampled for the chart.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// How long viewers may take to get ready (first cursor, WebSocket upgrade).
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Extra time after the end for the tasks to finish before they are abandoned.
const JOIN_GRACE: Duration = Duration::from_secs(15);
/// HTTP posters sharing the stream (each waits for its 201 before the next post).
const HTTP_POSTERS: u64 = 4;
/// Receiving goes on this long after the slowest poll interval, so every row sees the last
/// comment.
const LINGER_MARGIN_SECS: f64 = 2.0;

/// Options of `danmaku compare`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  danmaku compare                                     # 10 viewers, 1 comment/s, 30 s
  danmaku compare --viewers 20 --rate 0.2 --duration 60 --chart low-rate.svg
  danmaku compare --rate 20 --short-intervals 10,1,0.25 --json > compare.json
  danmaku compare --http-url http://127.0.0.1:8081 --ws-url ws://127.0.0.1:8083 --room cmp

Without URLs the tool starts http-danmaku and ws-stream from its own folder on ephemeral ports,
with the comment rate limit raised. Against running services, raise their limits yourself
(DANMAKU_RATE_PER_SEC, DANMAKU_RATE_BURST): all posts come from this one address.
The seed's GET /polling row reads room \"default\" only; it is left out for other rooms.")]
pub struct CompareArgs {
    /// Viewers per transport.
    #[arg(long, default_value = "10")]
    pub viewers: usize,
    /// Comments per second in the stream.
    #[arg(long, default_value = "1")]
    pub rate: f64,
    /// Seconds of the stream.
    #[arg(long, default_value = "30")]
    pub duration: f64,
    /// Short-polling intervals in seconds, comma-separated: one row each.
    #[arg(long, value_delimiter = ',', default_value = "10,1")]
    pub short_intervals: Vec<f64>,
    /// How long each long poll waits, seconds (1 to 30).
    #[arg(long, default_value = "25")]
    pub long_poll_wait: u32,
    /// Interval of the seed's GET /polling row, seconds; 0 leaves the row out.
    #[arg(long, default_value = "10")]
    pub seed_interval: f64,
    /// Seconds of receiving after the stream ends (default: the longest interval + 2).
    #[arg(long)]
    pub linger: Option<f64>,
    /// The HTTP service (http://host:port); without it the tool starts http-danmaku.
    #[arg(long, value_name = "URL")]
    pub http_url: Option<String>,
    /// The live service (ws://host:port); without it the tool starts ws-stream.
    #[arg(long, value_name = "URL")]
    pub ws_url: Option<String>,
    /// The room, on both services.
    #[arg(long, default_value = "default")]
    pub room: String,
    /// Where to write the SVG chart.
    #[arg(long, default_value = "compare.svg")]
    pub chart: PathBuf,
    /// Characters per comment (padded), at most 100.
    #[arg(long, default_value = "40")]
    pub text_len: usize,
    /// Show the started services' logs on stderr.
    #[arg(long)]
    pub server_log: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs the comparison and prints its table (or JSON).
pub async fn run(args: CompareArgs) -> Result<(), CliError> {
    let report = compare(&args).await?;
    if args.json {
        // Holds: the report is numbers, strings and maps of those.
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("a report always serializes")
        );
    } else {
        print!("{}", report.render());
    }
    Ok(())
}

/// The rows to measure, in table order.
fn transports(args: &CompareArgs) -> Result<Vec<Transport>, CliError> {
    let mut rows = Vec::new();
    for &every in &args.short_intervals {
        rows.push(Transport::ShortPoll(seconds("--short-intervals", every)?));
    }
    if !(1..=30).contains(&args.long_poll_wait) {
        return Err(CliError::Usage(
            "--long-poll-wait is 1 to 30 seconds".into(),
        ));
    }
    rows.push(Transport::LongPoll(args.long_poll_wait));
    if args.seed_interval > 0.0 && args.room == "default" {
        rows.push(Transport::Seed(seconds(
            "--seed-interval",
            args.seed_interval,
        )?));
    }
    rows.push(Transport::WebSocket);
    Ok(rows)
}

/// Runs the comparison and returns its report (the chart is written on the way).
pub async fn compare(args: &CompareArgs) -> Result<CompareReport, CliError> {
    let room = ChannelId::parse(&args.room)
        .map_err(|e| CliError::Usage(format!("{:?}: {}", args.room, e.message)))?;
    if args.viewers == 0 {
        return Err(CliError::Usage("--viewers must be at least 1".into()));
    }
    if !(args.rate.is_finite() && args.rate > 0.0) {
        return Err(CliError::Usage("--rate must be a positive number".into()));
    }
    let duration = seconds("--duration", args.duration)?;
    let transports = transports(args)?;
    let slowest = transports
        .iter()
        .map(|t| match t {
            Transport::ShortPoll(every) | Transport::Seed(every) => every.as_secs_f64(),
            _ => 0.0,
        })
        .fold(0.0, f64::max);
    let linger = match args.linger {
        Some(linger) => Duration::try_from_secs_f64(linger)
            .map_err(|_| CliError::Usage("--linger must be 0 or more seconds".into()))?,
        None => Duration::from_secs_f64(slowest + LINGER_MARGIN_SECS),
    };
    servers::raise_open_file_limit();

    let (local_http, http) = service_or_url("http-danmaku", args.http_url.as_deref(), args)?;
    let (local_live, live) = service_or_url("ws-stream", args.ws_url.as_deref(), args)?;
    // The services' CPU is known only when this tool started both (they share the machine).
    let local_pids: Vec<u32> = match (&local_http, &local_live) {
        (Some(h), Some(l)) => vec![h.pid, l.pid],
        _ => Vec::new(),
    };
    if !args.json && !args.quiet {
        eprintln!(
            "compare: {} rows × {} viewers; HTTP service {http}, live service {live}",
            transports.len(),
            args.viewers
        );
    }

    let epoch = Instant::now();
    let (schedule_tx, schedule_rx) = watch::channel(None::<Schedule>);
    let (end_tx, end_rx) = watch::channel(None::<Instant>);
    let ctx = Arc::new(Context {
        http: http.clone(),
        live: live.clone(),
        room: room.clone(),
        run: rand::random(),
        epoch,
        schedule: schedule_rx,
        end: end_rx,
        ready: Default::default(),
        text_len: args.text_len,
    });
    let rows: Vec<Arc<Row>> = transports.iter().map(|&t| Arc::new(Row::new(t))).collect();
    let mut viewers = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        for number in 0..args.viewers {
            viewers.push((
                index,
                tokio::spawn(clients::viewer(
                    ctx.clone(),
                    row.clone(),
                    number,
                    args.viewers,
                )),
            ));
        }
    }
    let stored = Arc::new(Stored::default());
    let mut senders = Vec::new();
    for number in 0..HTTP_POSTERS {
        senders.push(tokio::spawn(clients::http_poster(
            ctx.clone(),
            stored.clone(),
            number,
            HTTP_POSTERS,
        )));
    }
    senders.push(tokio::spawn(clients::live_sender(
        ctx.clone(),
        stored.clone(),
    )));

    // Every viewer ready (or failed) before the stream starts.
    let total = viewers.len() as u64;
    let ready_deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < ready_deadline {
        let finished = viewers.iter().filter(|(_, h)| h.is_finished()).count() as u64;
        if ctx.ready.load(Ordering::Relaxed) + finished >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let start = Instant::now() + Duration::from_millis(300);
    let schedule = Schedule::new(epoch, start, args.rate, duration);
    let end = start + duration + linger;
    let _ = schedule_tx.send(Some(schedule));
    let _ = end_tx.send(Some(end));

    let progress = progress_bar(args.quiet || args.json, duration + linger);
    tokio::time::sleep_until(start.into()).await;
    let client_at_start = procfs::sample(None).ok();
    let machine_at_start = procfs::machine().ok();
    let servers_at_start = servers_cpu(&local_pids);
    let bases: Vec<TrafficSnapshot> = rows.iter().map(|r| r.traffic.snapshot()).collect();
    let mut next = start;
    loop {
        let now = Instant::now();
        let t = now.saturating_duration_since(start).as_secs_f64();
        for (row, base) in rows.iter().zip(&bases) {
            row.series
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((t, row.traffic.snapshot() - *base));
        }
        progress.set_position(now.saturating_duration_since(start).as_millis() as u64);
        if now >= end {
            break;
        }
        next = (next + SAMPLE_EVERY).min(end);
        tokio::time::sleep_until(next.into()).await;
    }
    let client_at_end = procfs::sample(None).ok();
    let machine_at_end = procfs::machine().ok();
    let servers_at_end = servers_cpu(&local_pids);
    progress.finish_and_clear();

    let mut seen_by_row: Vec<Vec<IndexSet>> = vec![Vec::new(); rows.len()];
    let join_deadline = tokio::time::Instant::now() + JOIN_GRACE;
    for (index, handle) in viewers {
        let abort = handle.abort_handle();
        match tokio::time::timeout_at(join_deadline, handle).await {
            Ok(Ok(seen)) => seen_by_row[index].push(seen),
            _ => {
                abort.abort();
                seen_by_row[index].push(IndexSet::default());
            }
        }
    }
    for handle in senders {
        let abort = handle.abort_handle();
        if tokio::time::timeout_at(join_deadline, handle)
            .await
            .is_err()
        {
            abort.abort();
        }
    }

    let http_stored = stored
        .http
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let live_stored = stored
        .live
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut lines = Vec::new();
    let mut reports = Vec::new();
    for ((row, base), seen) in rows.iter().zip(&bases).zip(&seen_by_row) {
        let stored_set = if row.transport.over_http() {
            &http_stored
        } else {
            &live_stored
        };
        let delivered: u64 = seen
            .iter()
            .map(|s| stored_set.len() - stored_set.missing_from(s))
            .sum();
        let expected = stored_set.len() * args.viewers as u64;
        let traffic = row.traffic.snapshot() - *base;
        let series = row.series.lock().unwrap_or_else(|p| p.into_inner());
        lines.push(chart::Line {
            label: row.transport.label(),
            points: series.iter().map(|&(t, s)| (t, s.bytes_total())).collect(),
        });
        reports.push(RowReport {
            transport: row.transport.label(),
            viewers: args.viewers,
            requests: traffic.requests,
            connections: traffic.connections,
            bytes_up: traffic.bytes_up,
            bytes_down: traffic.bytes_down,
            expected,
            delivered,
            lost: expected.saturating_sub(delivered),
            repeated: row.repeated.load(Ordering::Relaxed),
            bytes_per_comment: (delivered > 0)
                .then(|| traffic.bytes_total() as f64 / delivered as f64),
            latency: row.latency.percentiles(),
            errors: row.errors.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        });
    }
    let subtitle = format!(
        "{} comment/s for {} s, {} viewers per transport",
        args.rate, args.duration, args.viewers
    );
    chart::draw(&args.chart, &lines, &subtitle, duration.as_secs_f64())?;

    let window = end.saturating_duration_since(start);
    let client_cpu = match (client_at_start, client_at_end) {
        (Some(a), Some(b)) => b.cpu.saturating_sub(a.cpu),
        _ => Duration::ZERO,
    };
    let server_cpu = match (servers_at_start, servers_at_end) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    drop((local_http, local_live));
    Ok(CompareReport {
        rate_per_sec: args.rate,
        duration_secs: args.duration,
        linger_secs: linger.as_secs_f64(),
        viewers: args.viewers,
        room: room.to_string(),
        http: http.http_url(),
        live: live.ws_url(),
        http_stored: http_stored.len(),
        live_stored: live_stored.len(),
        max_send_lag_ms: stored.max_lag_micros.load(Ordering::Relaxed) as f64 / 1000.0,
        rows: reports,
        chart: args.chart.display().to_string(),
        sender_errors: stored
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        cpu: CpuVerdict::judge(
            window,
            CpuUse {
                client: client_cpu,
                server: server_cpu,
                busiest: None,
                machine: machine_at_start.zip(machine_at_end),
            },
            procfs::cores(),
        ),
    })
}

/// The service at `url`, or service `name` started here when no URL was given.
fn service_or_url(
    name: &'static str,
    url: Option<&str>,
    args: &CompareArgs,
) -> Result<(Option<LocalService>, Base), CliError> {
    match url {
        Some(url) => Ok((None, Base::parse(url)?)),
        None => {
            let service = LocalService::start(name, &[], args.server_log)?;
            let base = service.base.clone();
            Ok((Some(service), base))
        }
    }
}

/// The CPU time of the local services together; `None` when not both were started here.
fn servers_cpu(pids: &[u32]) -> Option<Duration> {
    if pids.is_empty() {
        return None;
    }
    pids.iter()
        .map(|&pid| procfs::sample(Some(pid)).ok().map(|s| s.cpu))
        .sum()
}

fn progress_bar(hidden: bool, total: Duration) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(total.as_millis() as u64),
        if hidden {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    // Holds: the template is a constant indicatif accepts.
    let style = ProgressStyle::with_template("{elapsed:>4} [{bar:30}] streaming, {percent}%")
        .expect("a valid progress template")
        .progress_chars("=> ");
    bar.set_style(style);
    bar
}
