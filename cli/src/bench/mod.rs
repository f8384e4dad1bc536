//! `danmaku bench`: N viewers and K senders on a live room (or a video).
//!
//! The run has three phases. **Connect**: viewers connect evenly over the ramp, then the senders;
//! each attempt has a timeout. **Send**: the senders post `rate` comments per second between
//! them for `duration`, on a fixed schedule ([`crate::stamp`]), each comment carrying the time it
//! was due; viewers record each comment's first delivery and its latency (receive time minus
//! due time, so a stall counts against every comment it delayed). **Drain**: up to `drain`
//! seconds for late deliveries, ending as soon as every acknowledged comment reached every
//! viewer. A run whose connections are all gone (a killed server) stops early and reports the
//! failures; every wait has a bound, so nothing hangs.
//!
//! - [`tasks`]: the viewer and sender tasks.
//! - [`report`]: what is reported, as text or JSON.

pub mod report;
pub mod tasks;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shared_model::ChannelId;
use tokio::sync::watch;

use crate::endpoint::{Base, Kind};
use crate::error::CliError;
use crate::latency::LatencyRecorder;
use crate::procfs::{self, CpuUse, CpuVerdict, ProcSample};
use crate::servers::{self, LocalService};
use crate::stamp::{IndexSet, Schedule};
use crate::transport::counting::Traffic;
use report::{BenchReport, ServerUsage};
use tasks::{Counts, Shared, ViewerOutcome};

/// Descriptors kept free besides one per connection (the runtime, stdio, the local services'
/// pipes).
const SPARE_FILES: u64 = 64;
/// How long after the stop signal the tasks get to finish before they are abandoned.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the progress bar and the phase checks run.
const TICK: Duration = Duration::from_millis(100);

/// Options of `danmaku bench`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  danmaku bench                                   # 100 viewers, 10 comments/s, 10 s
  danmaku bench --viewers 1000 --rate 100 --duration 20 --ramp 10
  danmaku bench --viewers 10000 --senders 4 --rate 10 --duration 30 --ramp 20 --json
  danmaku bench --url ws://127.0.0.1:8083 --live lobby --server-pid $(pgrep -n ws-stream)

Without --url the tool starts ws-stream (or ws-video with --video) from its own folder on an
ephemeral port, with the comment rate limit raised (--rate-per-sec/--rate-burst 1000000), and
reads its CPU and memory. Against a running service, raise its limits yourself
(DANMAKU_RATE_PER_SEC, DANMAKU_RATE_BURST): each sender posts rate/senders comments per second.
Exit status 0 when everyone connected and nothing was lost, repeated or refused; 1 otherwise.")]
pub struct BenchArgs {
    /// The live room to load (default: bench).
    #[arg(long, value_name = "ROOM", group = "channel")]
    pub live: Option<String>,
    /// A video to load instead of a live room.
    #[arg(long, value_name = "VIDEO", group = "channel")]
    pub video: Option<String>,
    /// The service's address (ws://host:port); without it the tool starts the service itself.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Viewers (connections that only receive).
    #[arg(long, default_value = "100")]
    pub viewers: usize,
    /// Senders (connections that post; they receive too, but are not counted as viewers).
    #[arg(long, default_value = "1")]
    pub senders: usize,
    /// Comments per second, all senders together.
    #[arg(long, default_value = "10")]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value = "10")]
    pub duration: f64,
    /// Seconds over which the viewers connect, evenly spread.
    #[arg(long, default_value = "5")]
    pub ramp: f64,
    /// Seconds to wait after the last send for late deliveries; what has not arrived by then
    /// counts as lost.
    #[arg(long, default_value = "5")]
    pub drain: f64,
    /// Seconds a connection attempt (and its greeting) may take.
    #[arg(long, default_value = "10")]
    pub connect_timeout: f64,
    /// Characters per comment (padded), at most 100.
    #[arg(long, default_value = "40")]
    pub text_len: usize,
    /// The server's process id, for its CPU time and memory (known already when the tool
    /// started the server).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// A flag for the service the tool starts, e.g. --server-arg=--workers=2 (repeatable).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub server_arg: Vec<String>,
    /// Show the started service's log on stderr.
    #[arg(long)]
    pub server_log: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// A positive, finite number of seconds from flag `name`.
pub(crate) fn seconds(name: &str, value: f64) -> Result<Duration, CliError> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| CliError::Usage(format!("{name} must be a positive number of seconds")))
}

/// Runs the bench and prints its report; exit status 1 when it was not clean.
pub async fn run(args: BenchArgs) -> Result<ExitCode, CliError> {
    let report = bench(&args).await?;
    if args.json {
        // Holds: the report is numbers, strings and maps of those.
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("a report always serializes")
        );
    } else {
        print!("{}", report.render());
    }
    Ok(if report.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs the bench and returns its report.
pub async fn bench(args: &BenchArgs) -> Result<BenchReport, CliError> {
    let (kind, raw_channel) = match (&args.live, &args.video) {
        (_, Some(video)) => (Kind::Video, video.as_str()),
        (Some(room), None) => (Kind::Live, room.as_str()),
        (None, None) => (Kind::Live, "bench"),
    };
    let channel = ChannelId::parse(raw_channel)
        .map_err(|e| CliError::Usage(format!("{raw_channel:?}: {}", e.message)))?;
    if args.viewers == 0 || args.senders == 0 {
        return Err(CliError::Usage(
            "--viewers and --senders must be at least 1".into(),
        ));
    }
    if !(args.rate.is_finite() && args.rate > 0.0) {
        return Err(CliError::Usage("--rate must be a positive number".into()));
    }
    let duration = seconds("--duration", args.duration)?;
    let ramp = Duration::try_from_secs_f64(args.ramp)
        .map_err(|_| CliError::Usage("--ramp must be 0 or more seconds".into()))?;
    let drain = seconds("--drain", args.drain)?;
    let connect_timeout = seconds("--connect-timeout", args.connect_timeout)?;

    let connections = (args.viewers + args.senders) as u64;
    let limit = servers::raise_open_file_limit();
    if let Some(limit) = limit
        && limit < connections + SPARE_FILES
    {
        return Err(CliError::Usage(format!(
            "{connections} connections need about {} open files, but this process may open \
             {limit} (the hard limit; raise it with ulimit -Hn or limits.conf)",
            connections + SPARE_FILES
        )));
    }

    let (local, base) = match &args.url {
        Some(url) => (None, Base::parse(url)?),
        None => {
            let service = LocalService::start(kind.service(), &args.server_arg, args.server_log)?;
            let base = service.base.clone();
            (Some(service), base)
        }
    };
    let pid = args.server_pid.or(local.as_ref().map(|s| s.pid));
    let target = format!("{} {channel} at {base}", kind.noun());
    if !args.json {
        let started = match &local {
            Some(service) => format!(" (started {} pid {})", service.name, service.pid),
            None => String::new(),
        };
        eprintln!(
            "bench: viewers {}, senders {} on {target}{started}",
            args.viewers, args.senders
        );
    }

    let epoch = Instant::now();
    let planned = Schedule::new(epoch, epoch, args.rate, duration).planned;
    let shared = Arc::new(Shared {
        base,
        kind,
        channel,
        run: rand::random(),
        epoch,
        planned,
        connect_timeout,
        text_len: args.text_len,
        traffic: Traffic::shared(),
        latency: LatencyRecorder::new(),
        counts: Counts::default(),
        errors: Mutex::default(),
        acked: Mutex::new(IndexSet::with_capacity(planned)),
    });
    let server_before = pid.and_then(|pid| procfs::sample(Some(pid)).ok());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (schedule_tx, schedule_rx) = watch::channel(None::<Schedule>);

    let progress = progress_bar(args.quiet || args.json, ramp + duration + drain);

    // Connect.
    let mut viewers = Vec::with_capacity(args.viewers);
    for number in 0..args.viewers {
        let at = epoch + ramp.mul_f64(number as f64 / args.viewers as f64);
        viewers.push(tokio::spawn(tasks::viewer(
            shared.clone(),
            number,
            at,
            stop_rx.clone(),
        )));
    }
    let mut senders = Vec::with_capacity(args.senders);
    for number in 0..args.senders {
        senders.push(tokio::spawn(tasks::sender(
            shared.clone(),
            number,
            args.senders,
            epoch + ramp,
            schedule_rx.clone(),
            stop_rx.clone(),
        )));
    }
    let connect_deadline = epoch + ramp + connect_timeout + Duration::from_secs(1);
    while shared.counts.attempts_done.load(Ordering::Relaxed) < connections
        && Instant::now() < connect_deadline
    {
        tick(&progress, &shared, "connecting", epoch, args.viewers).await;
    }
    let server_connected = pid.and_then(|pid| procfs::sample(Some(pid)).ok());

    // Send.
    let start = Instant::now() + Duration::from_millis(200);
    let schedule = Schedule::new(epoch, start, args.rate, duration);
    let viewers_at_start = shared.counts.viewers_connected.load(Ordering::Relaxed);
    let client_at_start = procfs::sample(None).ok();
    let machine_at_start = procfs::machine().ok();
    let server_at_start = pid.and_then(|pid| procfs::sample(Some(pid)).ok());
    let threads_at_start = pid.and_then(|pid| procfs::threads(pid).ok());
    let _ = schedule_tx.send(Some(schedule));
    let send_end = start + duration;
    let mut stopped_early = false;
    while Instant::now() < send_end {
        tick(&progress, &shared, "sending", epoch, args.viewers).await;
        if shared.counts.alive.load(Ordering::Relaxed) <= 0 {
            stopped_early = true;
            break;
        }
    }

    // Drain.
    let drain_end = Instant::now().max(send_end) + drain;
    while !stopped_early && Instant::now() < drain_end {
        let (sent, acked, delivered, _) = shared.counts.flow();
        let all_sent = sent >= schedule.planned
            || shared.counts.senders_connected.load(Ordering::Relaxed) == 0;
        if all_sent && acked >= sent && delivered >= acked * viewers_at_start {
            break;
        }
        if shared.counts.alive.load(Ordering::Relaxed) <= 0 {
            stopped_early = true;
            break;
        }
        tick(&progress, &shared, "draining", epoch, args.viewers).await;
    }
    let end = Instant::now();
    let client_at_end = procfs::sample(None).ok();
    let machine_at_end = procfs::machine().ok();
    let server_at_end = pid.and_then(|pid| procfs::sample(Some(pid)).ok());
    // A process that is gone (or a zombie, which has no memory figures) has no threads to read.
    let threads_at_end = pid
        .filter(|_| server_at_end.is_some())
        .and_then(|pid| procfs::threads(pid).ok());
    progress.finish_and_clear();

    // Stop and collect.
    let _ = stop_tx.send(true);
    let outcomes = join_all(viewers).await;
    join_all(senders).await;
    let outcomes: Vec<ViewerOutcome> = outcomes.into_iter().flatten().collect();
    let abandoned = args.viewers - outcomes.len();
    if abandoned > 0 {
        shared.error(format!("viewer task did not finish ({abandoned})"));
    }

    let acked = shared
        .acked
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let counted: Vec<&ViewerOutcome> = outcomes
        .iter()
        .filter(|o| o.joined_at.is_some_and(|at| at <= start))
        .collect();
    let expected = acked.len() * counted.len() as u64;
    let lost: u64 = counted.iter().map(|o| acked.missing_from(&o.seen)).sum();
    let received: u64 = counted.iter().map(|o| o.seen.len()).sum();
    let window = end.saturating_duration_since(start);
    let (sent, acked_count, _, duplicated) = shared.counts.flow();
    let traffic = shared.traffic.snapshot();

    let server = pid.map(|pid| {
        server_usage(
            pid,
            [
                server_before,
                server_connected,
                server_at_start,
                server_at_end,
            ],
            received,
            shared.counts.viewers_connected.load(Ordering::Relaxed)
                + shared.counts.senders_connected.load(Ordering::Relaxed),
        )
    });
    let client_cpu = match (client_at_start, client_at_end) {
        (Some(a), Some(b)) => b.cpu.saturating_sub(a.cpu),
        _ => Duration::ZERO,
    };
    let server_cpu = match (server_at_start, server_at_end) {
        (Some(a), Some(b)) => Some(b.cpu.saturating_sub(a.cpu)),
        _ => None,
    };
    drop(local);
    Ok(BenchReport {
        target,
        viewers: args.viewers,
        senders: args.senders,
        rate_per_sec: args.rate,
        duration_secs: args.duration,
        ramp_secs: args.ramp,
        viewers_connected: shared.counts.viewers_connected.load(Ordering::Relaxed),
        senders_connected: shared.counts.senders_connected.load(Ordering::Relaxed),
        sent,
        acked: acked_count,
        expected_deliveries: expected,
        received,
        lost,
        duplicated,
        deliveries_per_sec: received as f64 / window.as_secs_f64().max(1e-9),
        window_secs: window.as_secs_f64(),
        latency: shared.latency.percentiles(),
        max_send_lag_ms: shared.counts.max_send_lag_micros.load(Ordering::Relaxed) as f64 / 1000.0,
        client_bytes_down: traffic.bytes_down,
        client_bytes_up: traffic.bytes_up,
        client_peak_rss_kib: client_at_end.map(|s| s.peak_rss_kib),
        errors: shared.errors(),
        stopped_early,
        server,
        cpu: CpuVerdict::judge(
            window,
            CpuUse {
                client: client_cpu,
                server: server_cpu,
                busiest: threads_at_start
                    .zip(threads_at_end)
                    .and_then(|(a, b)| procfs::busiest_thread(&a, &b)),
                machine: machine_at_start.zip(machine_at_end),
            },
            procfs::cores(),
        ),
    })
}

/// The server's CPU and memory from readings taken before connecting, once connected, at the
/// start of sending and at the end.
fn server_usage(
    pid: u32,
    [before, connected, start, end]: [Option<ProcSample>; 4],
    delivered: u64,
    connections: u64,
) -> ServerUsage {
    let cpu = match (start, end) {
        (Some(a), Some(b)) => Some(b.cpu.saturating_sub(a.cpu)),
        _ => None,
    };
    let rss_per_connection = match (before, connected) {
        (Some(b), Some(c)) if connections > 0 => {
            Some(c.rss_kib.saturating_sub(b.rss_kib) as f64 / connections as f64)
        }
        _ => None,
    };
    ServerUsage {
        pid,
        cpu_secs: cpu.map(|c| c.as_secs_f64()),
        cpu_micros_per_delivery: cpu
            .filter(|_| delivered > 0)
            .map(|c| c.as_secs_f64() * 1e6 / delivered as f64),
        connect_cpu_secs: match (before, start) {
            (Some(a), Some(b)) => Some(b.cpu.saturating_sub(a.cpu).as_secs_f64()),
            _ => None,
        },
        rss_before_kib: before.map(|s| s.rss_kib),
        rss_connected_kib: connected.map(|s| s.rss_kib),
        peak_rss_kib: end.or(connected).map(|s| s.peak_rss_kib),
        rss_per_connection_kib: rss_per_connection,
        exited: end.is_none(),
    }
}

/// Waits for every task, giving them [`JOIN_TIMEOUT`] in all; tasks still running then are
/// aborted and left out.
async fn join_all<T: Send + 'static>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<Option<T>> {
    let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        let abort = handle.abort_handle();
        match tokio::time::timeout_at(deadline, handle).await {
            Ok(Ok(value)) => results.push(Some(value)),
            Ok(Err(_)) => results.push(None),
            Err(_) => {
                abort.abort();
                results.push(None);
            }
        }
    }
    results
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
    let style = ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {msg}")
        .expect("a valid progress template")
        .progress_chars("=> ");
    bar.set_style(style);
    bar
}

/// Sleeps one tick and redraws the progress bar.
async fn tick(bar: &ProgressBar, shared: &Shared, phase: &str, epoch: Instant, viewers: usize) {
    tokio::time::sleep(TICK).await;
    let counts = &shared.counts;
    let (sent, acked, delivered, _) = counts.flow();
    bar.set_position(epoch.elapsed().as_millis() as u64);
    bar.set_message(format!(
        "{phase}: viewers {}/{} · senders {} · sent {sent} acked {acked} · deliveries {delivered} · errors {}",
        counts.viewers_connected.load(Ordering::Relaxed),
        viewers,
        counts.senders_connected.load(Ordering::Relaxed),
        shared.error_count(),
    ));
}
