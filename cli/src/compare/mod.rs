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
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::ProgressBar;
use shared_model::ChannelId;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bench::seconds;
use crate::endpoint::Base;
use crate::error::CliError;
use crate::output;
use crate::procfs::{self, CpuUse, CpuVerdict, MachineSample, ProcSample};
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
    output::print_report(&report, args.json, CompareReport::render);
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

/// Runs the comparison and returns its report (the chart is written on the way): checks the
/// flags, finds or starts the services, then runs the phases in order (connect, wait until
/// every viewer is ready, start the stream, measure, stop) and reports per row.
pub async fn compare(args: &CompareArgs) -> Result<CompareReport, CliError> {
    let plan = Plan::from_args(args)?;
    servers::raise_open_file_limit();
    let services = Services::find_or_start(args)?;
    if !args.json && !args.quiet {
        eprintln!(
            "compare: {} rows × {} viewers; HTTP service {}, live service {}",
            plan.transports.len(),
            args.viewers,
            services.http,
            services.live
        );
    }

    let epoch = Instant::now();
    let (schedule_tx, schedule_rx) = watch::channel(None::<Schedule>);
    let (end_tx, end_rx) = watch::channel(None::<Instant>);
    let ctx = Arc::new(Context {
        http: services.http.clone(),
        live: services.live.clone(),
        room: plan.room.clone(),
        run: rand::random(),
        epoch,
        schedule: schedule_rx,
        end: end_rx,
        ready: Default::default(),
        text_len: args.text_len,
    });
    let mut clients = connect(&ctx, &plan.transports, args.viewers);
    clients.wait_until_ready(&ctx).await;
    let window = start_stream(&plan, epoch, &schedule_tx, &end_tx);
    let progress = output::progress_bar(
        "{elapsed:>4} [{bar:30}] streaming, {percent}%",
        args.quiet || args.json,
        plan.duration + plan.linger,
    );
    let measured = measure(&clients.rows, window, &services.pids, &progress).await;
    progress.finish_and_clear();
    let seen_by_row = clients.stop().await;

    let http_stored = locked_clone(&clients.stored.http);
    let live_stored = locked_clone(&clients.stored.live);
    let (lines, reports) = row_reports(
        &clients.rows,
        &measured.bases,
        &seen_by_row,
        [&http_stored, &live_stored],
        args.viewers,
    );
    let subtitle = format!(
        "{} comment/s for {} s, {} viewers per transport",
        args.rate, args.duration, args.viewers
    );
    chart::draw(&args.chart, &lines, &subtitle, plan.duration.as_secs_f64())?;

    let cpu = cpu_verdict(window.length(), &measured.at_start, &measured.at_end);
    let (http, live) = (services.http.http_url(), services.live.ws_url());
    drop(services);
    Ok(CompareReport {
        rate_per_sec: args.rate,
        duration_secs: args.duration,
        linger_secs: plan.linger.as_secs_f64(),
        viewers: args.viewers,
        room: plan.room.to_string(),
        http,
        live,
        http_stored: http_stored.len(),
        live_stored: live_stored.len(),
        max_send_lag_ms: clients.stored.max_lag_micros.load(Ordering::Relaxed) as f64 / 1000.0,
        rows: reports,
        chart: args.chart.display().to_string(),
        sender_errors: locked_clone(&clients.stored.errors),
        cpu,
    })
}

/// The flags of a comparison, checked: the room, the rows and the stream's timing.
struct Plan {
    /// The room, on both services.
    room: ChannelId,
    /// The rows to measure, in table order.
    transports: Vec<Transport>,
    /// Comments per second (positive, finite).
    rate: f64,
    /// How long comments are posted (positive).
    duration: Duration,
    /// How long receiving goes on after the last comment: `--linger`, or the slowest poll
    /// interval plus [`LINGER_MARGIN_SECS`], so every row can see the last comment.
    linger: Duration,
}

impl Plan {
    /// Checks `args`; a [`CliError::Usage`] names the first bad flag. Nothing has been started
    /// yet when this fails.
    fn from_args(args: &CompareArgs) -> Result<Self, CliError> {
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
        Ok(Self {
            room,
            transports,
            rate: args.rate,
            duration,
            linger,
        })
    }
}

/// The two services compared, found at their URLs or started here.
struct Services {
    /// The HTTP service's address.
    http: Base,
    /// The live service's address.
    live: Base,
    /// Both services' pids when this tool started both (they share the machine, so only then
    /// is their CPU known); empty otherwise.
    pids: Vec<u32>,
    /// The services started here, stopped when this is dropped: keep it until the last
    /// reading.
    _local: (Option<LocalService>, Option<LocalService>),
}

impl Services {
    /// The services at `--http-url` and `--ws-url`, each started here when its URL is missing.
    fn find_or_start(args: &CompareArgs) -> Result<Self, CliError> {
        let (local_http, http) = service_or_url("http-danmaku", args.http_url.as_deref(), args)?;
        let (local_live, live) = service_or_url("ws-stream", args.ws_url.as_deref(), args)?;
        let pids = match (&local_http, &local_live) {
            (Some(h), Some(l)) => vec![h.pid, l.pid],
            _ => Vec::new(),
        };
        Ok(Self {
            http,
            live,
            pids,
            _local: (local_http, local_live),
        })
    }
}

/// The spawned clients of a comparison: M viewers per row and the senders.
struct Clients {
    /// The rows, in table order, each with its counters.
    rows: Vec<Arc<Row>>,
    /// Each viewer task with the index of its row.
    viewers: Vec<(usize, JoinHandle<IndexSet>)>,
    /// The HTTP posters and the live sender.
    senders: Vec<JoinHandle<()>>,
    /// What the services stored, as the senders learn it.
    stored: Arc<Stored>,
}

/// **Connect.** Spawns `viewers` viewers for each of `transports` and the senders
/// ([`HTTP_POSTERS`] HTTP posters and one live sender). They connect at once and wait for the
/// schedule in `ctx`.
fn connect(ctx: &Arc<Context>, transports: &[Transport], viewers: usize) -> Clients {
    let rows: Vec<Arc<Row>> = transports.iter().map(|&t| Arc::new(Row::new(t))).collect();
    let mut viewer_tasks = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        for number in 0..viewers {
            viewer_tasks.push((
                index,
                tokio::spawn(clients::viewer(ctx.clone(), row.clone(), number, viewers)),
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
    Clients {
        rows,
        viewers: viewer_tasks,
        senders,
        stored,
    }
}

impl Clients {
    /// Waits until every viewer is ready to receive (cursor known, socket open) or has
    /// failed, for at most [`READY_TIMEOUT`], so the stream starts with everyone listening.
    async fn wait_until_ready(&self, ctx: &Context) {
        let total = self.viewers.len() as u64;
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            let finished = self.viewers.iter().filter(|(_, h)| h.is_finished()).count() as u64;
            if ctx.ready.load(Ordering::Relaxed) + finished >= total {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// **Stop.** Joins every task within [`JOIN_GRACE`] (they stop by themselves at the
    /// window's end); returns, per row, each viewer's comments seen, an empty set for a viewer
    /// that failed or did not finish (its comments count as lost). Late tasks are aborted.
    async fn stop(&mut self) -> Vec<Vec<IndexSet>> {
        let mut seen_by_row: Vec<Vec<IndexSet>> = vec![Vec::new(); self.rows.len()];
        let deadline = tokio::time::Instant::now() + JOIN_GRACE;
        for (index, handle) in self.viewers.drain(..) {
            let abort = handle.abort_handle();
            match tokio::time::timeout_at(deadline, handle).await {
                Ok(Ok(seen)) => seen_by_row[index].push(seen),
                _ => {
                    abort.abort();
                    seen_by_row[index].push(IndexSet::default());
                }
            }
        }
        for handle in self.senders.drain(..) {
            let abort = handle.abort_handle();
            if tokio::time::timeout_at(deadline, handle).await.is_err() {
                abort.abort();
            }
        }
        seen_by_row
    }
}

/// The measured window: from the first comment's due time to the end of receiving.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// When comment 0 is due.
    start: Instant,
    /// When receiving stops: the stream's end plus the linger.
    end: Instant,
}

impl Window {
    /// How long the window lasts.
    fn length(&self) -> Duration {
        self.end.saturating_duration_since(self.start)
    }
}

/// **Start.** Fixes the stream to start 300 ms from now, for the plan's duration, with
/// receiving until the linger after it, and hands the schedule and the end to every client.
fn start_stream(
    plan: &Plan,
    epoch: Instant,
    schedule_tx: &watch::Sender<Option<Schedule>>,
    end_tx: &watch::Sender<Option<Instant>>,
) -> Window {
    let start = Instant::now() + Duration::from_millis(300);
    let schedule = Schedule::new(epoch, start, plan.rate, plan.duration);
    let end = start + plan.duration + plan.linger;
    let _ = schedule_tx.send(Some(schedule));
    let _ = end_tx.send(Some(end));
    Window { start, end }
}
/// CPU readings at one moment: this tool, the machine, and the local services together.
struct Readings {
    /// This tool.
    client: Option<ProcSample>,
    /// The whole machine's CPU counters.
    machine: Option<MachineSample>,
    /// Both local services' CPU time together ([`servers_cpu`]).
    servers: Option<Duration>,
}

impl Readings {
    /// Reads everything now; `pids` are the local services' (empty when not both started here).
    fn take(pids: &[u32]) -> Self {
        Self {
            client: procfs::sample(None).ok(),
            machine: procfs::machine().ok(),
            servers: servers_cpu(pids),
        }
    }
}

/// What [`measure`] recorded besides each row's series.
struct Measured {
    /// Each row's traffic when the window started: the rows' figures count from here.
    bases: Vec<TrafficSnapshot>,
    /// CPU readings at the window's start.
    at_start: Readings,
    /// CPU readings at the window's end.
    at_end: Readings,
}

/// **Measure.** Waits for the window's start, then every [`SAMPLE_EVERY`] (and once at the
/// end) appends each row's traffic since the start to its series for the chart and moves the
/// progress bar, until the window's end. CPU is read at both ends.
async fn measure(
    rows: &[Arc<Row>],
    window: Window,
    pids: &[u32],
    progress: &ProgressBar,
) -> Measured {
    tokio::time::sleep_until(window.start.into()).await;
    let at_start = Readings::take(pids);
    let bases: Vec<TrafficSnapshot> = rows.iter().map(|r| r.traffic.snapshot()).collect();
    let mut next = window.start;
    loop {
        let now = Instant::now();
        let t = now.saturating_duration_since(window.start).as_secs_f64();
        for (row, base) in rows.iter().zip(&bases) {
            row.series
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((t, row.traffic.snapshot() - *base));
        }
        progress.set_position(now.saturating_duration_since(window.start).as_millis() as u64);
        if now >= window.end {
            break;
        }
        next = (next + SAMPLE_EVERY).min(window.end);
        tokio::time::sleep_until(next.into()).await;
    }
    let at_end = Readings::take(pids);
    Measured {
        bases,
        at_start,
        at_end,
    }
}

/// **Report.** Each row's figures and chart line. A row's expected deliveries are the comments
/// its service stored (`stored[0]` for the HTTP rows, `stored[1]` for the WebSocket one) times
/// `viewers`; a viewer's delivered comments are the stored ones it saw; its traffic counts from
/// its base in `bases`.
fn row_reports(
    rows: &[Arc<Row>],
    bases: &[TrafficSnapshot],
    seen_by_row: &[Vec<IndexSet>],
    [http_stored, live_stored]: [&IndexSet; 2],
    viewers: usize,
) -> (Vec<chart::Line>, Vec<RowReport>) {
    let mut lines = Vec::new();
    let mut reports = Vec::new();
    for ((row, base), seen) in rows.iter().zip(bases).zip(seen_by_row) {
        let stored_set = if row.transport.over_http() {
            http_stored
        } else {
            live_stored
        };
        let delivered: u64 = seen
            .iter()
            .map(|s| stored_set.len() - stored_set.missing_from(s))
            .sum();
        let expected = stored_set.len() * viewers as u64;
        let traffic = row.traffic.snapshot() - *base;
        let series = row.series.lock().unwrap_or_else(|p| p.into_inner());
        lines.push(chart::Line {
            label: row.transport.label(),
            points: series.iter().map(|&(t, s)| (t, s.bytes_total())).collect(),
        });
        reports.push(RowReport {
            transport: row.transport.label(),
            viewers,
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
            errors: locked_clone(&row.errors),
        });
    }
    (lines, reports)
}

/// Who used the CPU over a window of `length`, from the readings at its start and its end:
/// this tool, the local services together (no busiest thread: there are two servers), the
/// machine.
fn cpu_verdict(length: Duration, start: &Readings, end: &Readings) -> CpuVerdict {
    let client = match (start.client, end.client) {
        (Some(a), Some(b)) => b.cpu.saturating_sub(a.cpu),
        _ => Duration::ZERO,
    };
    let server = match (start.servers, end.servers) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    CpuVerdict::judge(
        length,
        CpuUse {
            client,
            server,
            busiest: None,
            machine: start.machine.zip(end.machine),
        },
        procfs::cores(),
    )
}

/// A copy of what `lock` guards, also after a task panicked holding it.
fn locked_clone<T: Clone>(lock: &Mutex<T>) -> T {
    lock.lock().unwrap_or_else(|p| p.into_inner()).clone()
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
