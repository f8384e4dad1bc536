//! `danmaku bench`: N viewers and K senders on a live room (or a video).
//!
//! The run has three phases. **Connect**: viewers connect evenly over the ramp, then the senders;
//! each attempt has a timeout. **Send**: the senders post `rate` comments per second between
//! them for `duration`, on a fixed schedule ([`crate::stamp`]), each comment carrying the time it
//! was due; viewers record each comment's first delivery and its latency (receive time minus
//! due time, so a stall counts against every comment it delayed). **Drain**: up to `drain`
//! seconds for late deliveries, ending as soon as every acknowledged comment reached every
//! viewer. A run whose connections are all gone (a killed server) stops early and reports the
//! failures; every wait has a bound, so nothing hangs. Each phase is one method of the run
//! (connect, send, drain, then finish for the end readings, stop, and report).
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
use indicatif::ProgressBar;
use shared_model::ChannelId;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::endpoint::{Base, Kind};
use crate::error::CliError;
use crate::latency::LatencyRecorder;
use crate::output;
use crate::procfs::{self, CpuUse, CpuVerdict, MachineSample, ProcSample, ThreadSample};
use crate::servers::{self, LocalService};
use crate::stamp::{IndexSet, Schedule};
use crate::transport::counting::Traffic;
use report::{BenchReport, BurstReport, ServerUsage};
use tasks::{Burst, Counts, Shared, ViewerOutcome};

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
  danmaku bench --url ws://127.0.0.1:9183,ws://127.0.0.1:9283 --senders 2 \
      --server-pid 4101 --server-pid 4102     # two instances of one service, both measured

Without --url the tool starts ws-stream (or ws-video with --video) from its own folder on an
ephemeral port, with the comment rate limit raised (--rate-per-sec/--rate-burst 1000000) and
the connections per client too (--max-connections-per-client 1000000), and reads its CPU and
memory. Against a running service, raise its limits yourself (DANMAKU_RATE_PER_SEC,
DANMAKU_RATE_BURST, and DANMAKU_MAX_CONNECTIONS_PER_CLIENT above the viewers and senders, who
all come from this machine): each sender posts rate/senders comments per second.
Several --url (repeated or comma-separated) name instances of one service: viewer and sender n
connect to URL n mod count, so both spread round-robin (give at least as many senders as URLs
to send through every instance). --server-pid repeats too, and the server figures are then the
sums over those processes.
Exit status 0 when everyone connected and nothing was lost, repeated or refused; 1 otherwise.")]
pub struct BenchArgs {
    /// The live room to load (default: bench).
    #[arg(long, value_name = "ROOM", group = "channel")]
    pub live: Option<String>,
    /// A video to load instead of a live room.
    #[arg(long, value_name = "VIDEO", group = "channel")]
    pub video: Option<String>,
    /// The service's address (ws://host:port); repeat it (or separate with commas) for several
    /// instances of one service, which viewers and senders spread over round-robin. Without
    /// it the tool starts the service itself.
    #[arg(long, value_name = "URL", value_delimiter = ',')]
    pub url: Vec<String>,
    /// Viewers (connections that only receive).
    #[arg(long, default_value = "100")]
    pub viewers: usize,
    /// Senders (connections that post; they receive too, but are not counted as viewers). 0
    /// makes an idle room: the viewers connect and wait, nothing is sent (for the memory of
    /// idle connections).
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
    /// Viewers that join during the sending, all within --burst-over seconds (a stream
    /// starting): each is timed from its attempt to its welcome and checked for history, and
    /// the delivery latency of the viewers already there is reported for the comments sent
    /// meanwhile. They count as neither viewers nor deliveries.
    #[arg(long, default_value = "0")]
    pub burst: usize,
    /// Seconds into the sending when the burst starts (default: a third of --duration).
    #[arg(long, value_name = "SECS")]
    pub burst_at: Option<f64>,
    /// Seconds over which the burst's viewers connect, evenly spread.
    #[arg(long, value_name = "SECS", default_value = "2")]
    pub burst_over: f64,
    /// The server's process id, for its CPU time and memory (known already when the tool
    /// started the server); repeat it (or separate with commas) to measure several instances,
    /// whose figures are then added up.
    #[arg(long, value_name = "PID", value_delimiter = ',')]
    pub server_pid: Vec<u32>,
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
    output::print_report(&report, args.json, BenchReport::render);
    Ok(if report.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs the bench and returns its report: checks the flags, finds or starts the server, then
/// runs the phases in order (`connect`, `send`, `drain`, `finish`, `stop`) and builds the
/// report from what they measured.
pub async fn bench(args: &BenchArgs) -> Result<BenchReport, CliError> {
    let plan = Plan::from_args(args)?;
    ensure_open_files(plan.connections())?;
    let (local, bases) = server(args, plan.kind)?;
    let pids = match &local {
        Some(service) if args.server_pid.is_empty() => vec![service.pid],
        _ => args.server_pid.clone(),
    };
    let addresses: Vec<String> = bases.iter().map(Base::to_string).collect();
    let target = format!(
        "{} {} at {}",
        plan.kind.noun(),
        plan.channel,
        addresses.join(", ")
    );
    if !args.json {
        announce(&plan, &target, local.as_ref());
    }

    let run = Run::new(plan, bases, pids, args.quiet || args.json);
    let server_before = run.server_sample();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (schedule_tx, schedule_rx) = watch::channel(None::<Schedule>);
    let tasks = run.connect(&schedule_rx, &stop_rx).await;
    let baseline = Baseline {
        before: server_before,
        connected: run.server_sample(),
    };
    let mut sending = run.send(&schedule_tx, &stop_rx).await;
    if !sending.stopped_early {
        sending.stopped_early = run.drain(&sending).await;
    }
    let ended = run.finish();
    let burst = std::mem::take(&mut sending.burst);
    let outcomes = run.stop(&stop_tx, tasks, burst).await;
    let report = run.report(target, &baseline, &sending, &ended, &outcomes);
    drop(local);
    Ok(report)
}

/// The flags of a bench, checked: every value a phase needs, in the units it needs.
struct Plan {
    /// Live room or video.
    kind: Kind,
    /// The channel under load.
    channel: ChannelId,
    /// Viewers asked for (at least 1).
    viewers: usize,
    /// Senders asked for (0: an idle room).
    senders: usize,
    /// Comments per second, all senders together (positive, finite).
    rate: f64,
    /// How long the senders send (positive).
    duration: Duration,
    /// How long the viewers take to connect, evenly spread (may be zero).
    ramp: Duration,
    /// The longest wait for late deliveries (positive).
    drain: Duration,
    /// How long one connection attempt may take (positive).
    connect_timeout: Duration,
    /// Characters per comment.
    text_len: usize,
    /// Viewers joining in the burst (0: no burst).
    burst: usize,
    /// When the burst starts, after message 0 is due.
    burst_at: Duration,
    /// How long the burst's viewers take to connect, evenly spread.
    burst_over: Duration,
    /// `--duration` as given, for the report.
    duration_secs: f64,
    /// `--ramp` as given, for the report.
    ramp_secs: f64,
}

impl Plan {
    /// Checks `args`; a [`CliError::Usage`] names the first bad flag. Nothing has been started
    /// yet when this fails.
    fn from_args(args: &BenchArgs) -> Result<Self, CliError> {
        let (kind, raw_channel) = match (&args.live, &args.video) {
            (_, Some(video)) => (Kind::Video, video.as_str()),
            (Some(room), None) => (Kind::Live, room.as_str()),
            (None, None) => (Kind::Live, "bench"),
        };
        let channel = ChannelId::parse(raw_channel)
            .map_err(|e| CliError::Usage(format!("{raw_channel:?}: {}", e.message)))?;
        if args.viewers == 0 {
            return Err(CliError::Usage("--viewers must be at least 1".into()));
        }
        if !(args.rate.is_finite() && args.rate > 0.0) {
            return Err(CliError::Usage("--rate must be a positive number".into()));
        }
        let duration = seconds("--duration", args.duration)?;
        let ramp = Duration::try_from_secs_f64(args.ramp)
            .map_err(|_| CliError::Usage("--ramp must be 0 or more seconds".into()))?;
        let drain = seconds("--drain", args.drain)?;
        let connect_timeout = seconds("--connect-timeout", args.connect_timeout)?;
        let burst_at = match args.burst_at {
            Some(at) => Duration::try_from_secs_f64(at)
                .ok()
                .filter(|at| *at < duration)
                .ok_or_else(|| {
                    CliError::Usage(
                        "--burst-at must be 0 or more seconds, within --duration".into(),
                    )
                })?,
            None => duration / 3,
        };
        let burst_over = Duration::try_from_secs_f64(args.burst_over)
            .map_err(|_| CliError::Usage("--burst-over must be 0 or more seconds".into()))?;
        Ok(Self {
            kind,
            channel,
            viewers: args.viewers,
            senders: args.senders,
            rate: args.rate,
            duration,
            ramp,
            drain,
            connect_timeout,
            text_len: args.text_len,
            burst: args.burst,
            burst_at,
            burst_over,
            duration_secs: args.duration,
            ramp_secs: args.ramp,
        })
    }

    /// Connections the run opens: every viewer and every sender, and the burst's viewers.
    fn connections(&self) -> u64 {
        (self.viewers + self.senders + self.burst) as u64
    }
}

/// Raises the open-file limit and refuses a run of `connections` that it cannot hold (one
/// descriptor per connection plus [`SPARE_FILES`]), before anything connects.
fn ensure_open_files(connections: u64) -> Result<(), CliError> {
    if let Some(limit) = servers::raise_open_file_limit()
        && limit < connections + SPARE_FILES
    {
        return Err(CliError::Usage(format!(
            "{connections} connections need about {} open files, but this process may open \
             {limit} (the hard limit; raise it with ulimit -Hn or limits.conf)",
            connections + SPARE_FILES
        )));
    }
    Ok(())
}

/// The service under load: the instances at `--url` (one or more, in the order given), or
/// `kind`'s service started here (stopped when the returned [`LocalService`] is dropped, so keep
/// it until the last reading).
fn server(args: &BenchArgs, kind: Kind) -> Result<(Option<LocalService>, Vec<Base>), CliError> {
    if args.url.is_empty() {
        let service = LocalService::start(kind.service(), &args.server_arg, args.server_log)?;
        let base = service.base.clone();
        return Ok((Some(service), vec![base]));
    }
    let bases = args
        .url
        .iter()
        .map(|url| Base::parse(url))
        .collect::<Result<_, _>>()?;
    Ok((None, bases))
}

/// Says on stderr what is about to be loaded, and which server this tool started.
fn announce(plan: &Plan, target: &str, local: Option<&LocalService>) {
    let started = match local {
        Some(service) => format!(" (started {} pid {})", service.name, service.pid),
        None => String::new(),
    };
    eprintln!(
        "bench: viewers {}, senders {} on {target}{started}",
        plan.viewers, plan.senders
    );
}

/// A bench under way: the plan, the state every task shares, the servers' pids (when known) and
/// the progress bar. Its methods are the phases, called once each and in order.
struct Run {
    /// The checked flags.
    plan: Plan,
    /// What the viewer and sender tasks share; its epoch is the run's start.
    shared: Arc<Shared>,
    /// The server's processes, for their CPU and memory (summed); empty when unknown.
    pids: Vec<u32>,
    /// Redrawn every [`TICK`] until [`Run::finish`].
    progress: ProgressBar,
}

/// The spawned tasks of a run, until [`Run::stop`] joins them.
struct Tasks {
    /// One per viewer, in viewer order.
    viewers: Vec<JoinHandle<ViewerOutcome>>,
    /// One per sender.
    senders: Vec<JoinHandle<()>>,
}

/// The server's readings before any connection and once the connect phase ended: its memory
/// per connection comes from these.
struct Baseline {
    /// Before the first connection.
    before: Option<ProcSample>,
    /// When every connection attempt had finished (or the connect deadline passed).
    connected: Option<ProcSample>,
}

/// What the send phase leaves for the drain and the report.
struct Sending {
    /// The schedule the senders followed.
    schedule: Schedule,
    /// When message 0 was due: the start of the measured window.
    start: Instant,
    /// When the last message was due.
    end: Instant,
    /// Viewers connected when sending began: each should receive every acknowledged comment.
    viewers_at_start: u64,
    /// Readings at the start of the window.
    readings: Readings,
    /// Whether every connection was gone before the end (set by the send or the drain phase).
    stopped_early: bool,
    /// The burst's viewers, spawned when the schedule was fixed.
    burst: Vec<JoinHandle<()>>,
}

/// The end of the measured window: when it ended and the readings then.
struct Ended {
    /// When the drain ended.
    at: Instant,
    /// Readings at that moment.
    readings: Readings,
}

/// CPU and memory at one moment: this tool, the machine, and the server and its threads when
/// the server's pids are known (several instances read as their sum, and their threads
/// together). A reading that failed is `None`.
struct Readings {
    /// This tool.
    client: Option<ProcSample>,
    /// The whole machine's CPU counters.
    machine: Option<MachineSample>,
    /// The server (the sum over its processes).
    server: Option<ProcSample>,
    /// The threads of every server process; `None` when the server itself could not be read.
    threads: Option<Vec<ThreadSample>>,
}

impl Readings {
    /// Reads everything now (this tool first, the server's threads last).
    fn take(pids: &[u32]) -> Self {
        let client = procfs::sample(None).ok();
        let machine = procfs::machine().ok();
        let server = procfs::sample_sum(pids).ok();
        // A process that is gone (or a zombie, which has no memory figures) has no threads to
        // read.
        let threads = server.and_then(|_| {
            pids.iter()
                .map(|&pid| procfs::threads(pid))
                .collect::<Result<Vec<_>, _>>()
                .ok()
                .map(|threads| threads.concat())
        });
        Self {
            client,
            machine,
            server,
            threads,
        }
    }
}

impl Run {
    /// Starts the clock (the run's epoch) and the progress bar, hidden when `quiet`.
    fn new(plan: Plan, bases: Vec<Base>, pids: Vec<u32>, quiet: bool) -> Self {
        let epoch = Instant::now();
        let planned = Schedule::new(epoch, epoch, plan.rate, plan.duration).planned;
        let shared = Arc::new(Shared {
            bases,
            kind: plan.kind,
            channel: plan.channel.clone(),
            run: rand::random(),
            epoch,
            planned,
            connect_timeout: plan.connect_timeout,
            text_len: plan.text_len,
            traffic: Traffic::shared(),
            latency: LatencyRecorder::new(),
            counts: Counts::default(),
            errors: Mutex::default(),
            acked: Mutex::new(IndexSet::with_capacity(planned)),
            burst: Burst::default(),
        });
        let progress = output::progress_bar(
            "{elapsed:>4} [{bar:30}] {msg}",
            quiet,
            plan.ramp + plan.duration + plan.drain,
        );
        Self {
            plan,
            shared,
            pids,
            progress,
        }
    }

    /// The server's CPU and memory now, summed over its processes; `None` without a pid or
    /// when one cannot be read.
    fn server_sample(&self) -> Option<ProcSample> {
        procfs::sample_sum(&self.pids).ok()
    }

    /// **Connect.** Spawns the viewers, each due at its share of the ramp, and the senders, due
    /// at its end; then waits until every attempt finished or the last viewer's attempt must
    /// have timed out (ramp + connect timeout + 1 s). The senders wait for the schedule on
    /// `schedule`; everyone stops when `stop` turns true.
    async fn connect(
        &self,
        schedule: &watch::Receiver<Option<Schedule>>,
        stop: &watch::Receiver<bool>,
    ) -> Tasks {
        let plan = &self.plan;
        let epoch = self.shared.epoch;
        let viewers = (0..plan.viewers)
            .map(|number| {
                let at = epoch + plan.ramp.mul_f64(number as f64 / plan.viewers as f64);
                tokio::spawn(tasks::viewer(self.shared.clone(), number, at, stop.clone()))
            })
            .collect();
        let senders = (0..plan.senders)
            .map(|number| {
                tokio::spawn(tasks::sender(
                    self.shared.clone(),
                    number,
                    plan.senders,
                    epoch + plan.ramp,
                    schedule.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        let deadline = epoch + plan.ramp + plan.connect_timeout + Duration::from_secs(1);
        let attempts = (plan.viewers + plan.senders) as u64;
        while self.shared.counts.attempts_done.load(Ordering::Relaxed) < attempts
            && Instant::now() < deadline
        {
            self.tick("connecting").await;
        }
        Tasks { viewers, senders }
    }

    /// **Send.** Fixes the schedule to start 200 ms from now, takes the start readings, hands
    /// the schedule to the senders and waits for its end, or until every connection is gone
    /// (then `stopped_early`). The window measured starts when message 0 is due.
    async fn send(
        &self,
        schedule_tx: &watch::Sender<Option<Schedule>>,
        stop: &watch::Receiver<bool>,
    ) -> Sending {
        let plan = &self.plan;
        let start = Instant::now() + Duration::from_millis(200);
        let schedule = Schedule::new(self.shared.epoch, start, plan.rate, plan.duration);
        let viewers_at_start = self.shared.counts.viewers_connected.load(Ordering::Relaxed);
        let readings = Readings::take(&self.pids);
        let _ = schedule_tx.send(Some(schedule));
        let burst = self.spawn_burst(start, stop);
        let end = start + plan.duration;
        let mut stopped_early = false;
        while Instant::now() < end {
            self.tick("sending").await;
            if self.shared.counts.alive.load(Ordering::Relaxed) <= 0 {
                stopped_early = true;
                break;
            }
        }
        Sending {
            schedule,
            start,
            end,
            viewers_at_start,
            readings,
            stopped_early,
            burst,
        }
    }

    /// Spawns the burst's viewers, due from `--burst-at` after `start` (when message 0 is
    /// due) over `--burst-over`, and marks the comments due from the first join to a second
    /// after the last as sent during the burst.
    fn spawn_burst(&self, start: Instant, stop: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let plan = &self.plan;
        if plan.burst == 0 {
            return Vec::new();
        }
        let first = start + plan.burst_at;
        let since_epoch = |at: Instant| at.saturating_duration_since(self.shared.epoch).as_micros();
        let window_end = first + plan.burst_over + Duration::from_secs(1);
        let _ = self
            .shared
            .burst
            .window
            .set((since_epoch(first) as u64, since_epoch(window_end) as u64));
        (0..plan.burst)
            .map(|k| {
                let at = first + plan.burst_over.mul_f64(k as f64 / plan.burst as f64);
                // Numbered after the viewers and senders, so they spread over the instances too.
                let number = plan.viewers + plan.senders + k;
                tokio::spawn(tasks::burst_viewer(
                    self.shared.clone(),
                    number,
                    at,
                    stop.clone(),
                ))
            })
            .collect()
    }

    /// **Drain.** Waits up to the drain time past the send phase for late deliveries, and ends
    /// as soon as every message was sent (or no sender is left) and acknowledged and every
    /// acknowledged one reached every viewer counted at the start. Returns whether every
    /// connection was gone first.
    async fn drain(&self, sending: &Sending) -> bool {
        let counts = &self.shared.counts;
        let end = Instant::now().max(sending.end) + self.plan.drain;
        while Instant::now() < end {
            let (sent, acked, delivered, _) = counts.flow();
            let all_sent = sent >= sending.schedule.planned
                || counts.senders_connected.load(Ordering::Relaxed) == 0;
            if all_sent && acked >= sent && delivered >= acked * sending.viewers_at_start {
                break;
            }
            if counts.alive.load(Ordering::Relaxed) <= 0 {
                return true;
            }
            self.tick("draining").await;
        }
        false
    }

    /// **Measure.** Ends the measured window: the end readings, taken before the tasks are
    /// stopped so the tool's own teardown is not counted, and the progress bar cleared.
    fn finish(&self) -> Ended {
        let at = Instant::now();
        let readings = Readings::take(&self.pids);
        self.progress.finish_and_clear();
        Ended { at, readings }
    }

    /// **Stop.** Tells every task to stop and joins them within [`JOIN_TIMEOUT`]; returns the
    /// outcomes of the viewers that finished, and counts the others as an error.
    async fn stop(
        &self,
        stop_tx: &watch::Sender<bool>,
        tasks: Tasks,
        burst: Vec<JoinHandle<()>>,
    ) -> Vec<ViewerOutcome> {
        let _ = stop_tx.send(true);
        let outcomes = join_all(tasks.viewers).await;
        join_all(tasks.senders).await;
        join_all(burst).await;
        let outcomes: Vec<ViewerOutcome> = outcomes.into_iter().flatten().collect();
        let abandoned = self.plan.viewers - outcomes.len();
        if abandoned > 0 {
            self.shared
                .error(format!("viewer task did not finish ({abandoned})"));
        }
        outcomes
    }

    /// **Report.** What the run measured. Only viewers that had joined when message 0 was due
    /// count towards the expected deliveries and the losses (each should have every
    /// acknowledged comment); the window runs from message 0's due time to the end of the drain.
    fn report(
        &self,
        target: String,
        baseline: &Baseline,
        sending: &Sending,
        ended: &Ended,
        outcomes: &[ViewerOutcome],
    ) -> BenchReport {
        let shared = &self.shared;
        let counts = &shared.counts;
        let acked_set = shared
            .acked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let counted: Vec<&ViewerOutcome> = outcomes
            .iter()
            .filter(|o| o.joined_at.is_some_and(|at| at <= sending.start))
            .collect();
        let expected = acked_set.len() * counted.len() as u64;
        let lost: u64 = counted
            .iter()
            .map(|o| acked_set.missing_from(&o.seen))
            .sum();
        let received: u64 = counted.iter().map(|o| o.seen.len()).sum();
        let window = ended.at.saturating_duration_since(sending.start);
        let (sent, acked, _, duplicated) = counts.flow();
        let traffic = shared.traffic.snapshot();
        let viewers_connected = counts.viewers_connected.load(Ordering::Relaxed);
        let senders_connected = counts.senders_connected.load(Ordering::Relaxed);
        let server = (!self.pids.is_empty()).then(|| {
            server_usage(
                &self.pids,
                [
                    baseline.before,
                    baseline.connected,
                    sending.readings.server,
                    ended.readings.server,
                ],
                received,
                viewers_connected + senders_connected,
            )
        });
        BenchReport {
            target,
            viewers: self.plan.viewers,
            senders: self.plan.senders,
            rate_per_sec: self.plan.rate,
            duration_secs: self.plan.duration_secs,
            ramp_secs: self.plan.ramp_secs,
            viewers_connected,
            senders_connected,
            sent,
            acked,
            expected_deliveries: expected,
            received,
            lost,
            duplicated,
            deliveries_per_sec: received as f64 / window.as_secs_f64().max(1e-9),
            window_secs: window.as_secs_f64(),
            latency: shared.latency.percentiles(),
            max_send_lag_ms: counts.max_send_lag_micros.load(Ordering::Relaxed) as f64 / 1000.0,
            client_bytes_down: traffic.bytes_down,
            client_bytes_up: traffic.bytes_up,
            client_peak_rss_kib: ended.readings.client.map(|s| s.peak_rss_kib),
            errors: shared.errors(),
            stopped_early: sending.stopped_early,
            burst: self.burst_report(sending.start),
            server,
            cpu: cpu_verdict(window, &sending.readings, &ended.readings),
        }
    }

    /// What the burst measured, if there was one; message 0 was due at `start`.
    fn burst_report(&self, start: Instant) -> Option<BurstReport> {
        let plan = &self.plan;
        let burst = &self.shared.burst;
        (plan.burst > 0).then(|| {
            let joined = burst.joined.load(Ordering::Relaxed);
            let first = (start + plan.burst_at).saturating_duration_since(self.shared.epoch);
            let last = Duration::from_micros(burst.last_welcome_micros.load(Ordering::Relaxed));
            let took = last.saturating_sub(first).as_secs_f64();
            BurstReport {
                viewers: plan.burst,
                at_secs: plan.burst_at.as_secs_f64(),
                over_secs: plan.burst_over.as_secs_f64(),
                joined,
                with_history: burst.with_history.load(Ordering::Relaxed),
                joins_per_sec: if took > 0.0 {
                    joined as f64 / took
                } else {
                    0.0
                },
                welcome_wait: burst.welcome_wait.percentiles(),
                latency_during: burst.latency_during.percentiles(),
            }
        })
    }

    /// Sleeps one [`TICK`] and redraws the progress bar for `phase`.
    async fn tick(&self, phase: &str) {
        tokio::time::sleep(TICK).await;
        let counts = &self.shared.counts;
        let (sent, acked, delivered, _) = counts.flow();
        self.progress
            .set_position(self.shared.epoch.elapsed().as_millis() as u64);
        self.progress.set_message(format!(
            "{phase}: viewers {}/{} · senders {} · sent {sent} acked {acked} · deliveries {delivered} · errors {}",
            counts.viewers_connected.load(Ordering::Relaxed),
            self.plan.viewers,
            counts.senders_connected.load(Ordering::Relaxed),
            self.shared.error_count(),
        ));
    }
}

/// Who used the CPU over `window`, from the readings at its start and its end: this tool, the
/// server (and its busiest thread), the machine.
fn cpu_verdict(window: Duration, start: &Readings, end: &Readings) -> CpuVerdict {
    let client = match (start.client, end.client) {
        (Some(a), Some(b)) => b.cpu.saturating_sub(a.cpu),
        _ => Duration::ZERO,
    };
    let server = match (start.server, end.server) {
        (Some(a), Some(b)) => Some(b.cpu.saturating_sub(a.cpu)),
        _ => None,
    };
    let busiest = start
        .threads
        .as_ref()
        .zip(end.threads.as_ref())
        .and_then(|(a, b)| procfs::busiest_thread(a, b));
    CpuVerdict::judge(
        window,
        CpuUse {
            client,
            server,
            busiest,
            machine: start.machine.zip(end.machine),
        },
        procfs::cores(),
    )
}

/// The server's CPU and memory (summed over `pids`, which is not empty) from readings taken
/// before connecting, once connected, at the start of sending and at the end.
fn server_usage(
    pids: &[u32],
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
        pid: pids[0],
        pids: pids.to_vec(),
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
async fn join_all<T: Send + 'static>(handles: Vec<JoinHandle<T>>) -> Vec<Option<T>> {
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
