//! `danmaku versus`: ws-stream and its peers, Bun's WebSocket pub/sub and Node's `ws`, loaded
//! at the same points in one run, and the side-by-side table written into a markdown file.
//!
//! For each point (viewers × comments per second, with a number of senders) and each server,
//! in turn (ours, ours-cores, bun, node at the first point, then the same at the next, so that all
//! of them see the same machine), the command starts the server on an ephemeral port, runs
//! [`crate::bench::bench`] in this process against it with its pid (so the server's CPU and
//! memory are read as for `bench`), and stops it. Ours is ws-stream started exactly as `bench`
//! starts it ([`LocalService::start`]: a fresh SQLite store, limits raised), with its default
//! workers (one per core but one: one event loop for the connections on 2 cores, as each peer
//! has, and the fan-out helper on the core left over), and ours-cores the same with a worker on
//! every core (and so no helper); the peers are the small servers of `bench/peers/` (see the
//! README there), run by the `bun` the npm package installed and by `node`.
//!
//! The table goes between [`BEGIN_MARKER`] and [`END_MARKER`] in the `--markdown` file, replacing
//! what was there and keeping the rest of the file; a file without the markers gets them, with
//! the table, appended at its end ([`splice`]). Each run's report is also written as JSON when
//! `--json-dir` is given.
//!
//! Before the first run, the command times a durable write beside ours' database ([`disk`]):
//! the flush each of ours' comments waits for, which the peers, storing nothing, skip. The
//! table's header gives it, so a quiet point's gap can be read against it.
//!
//! Peers are optional: without `--servers`, a peer that is not installed (no
//! `bench/peers/node_modules`, which `scripts/bench-peers.sh` fills with `npm ci`) is skipped
//! with a message; named in `--servers`, it is an error.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use serde::Serialize;

use crate::bench::{self, BenchArgs, report::BenchReport};
use crate::disk::{self, Flush};
use crate::error::CliError;
use crate::latency::format_ms;
use crate::procfs;
use crate::servers::{self, LocalService};

/// The line before the table in the markdown file.
pub const BEGIN_MARKER: &str = "<!-- versus:begin -->";
/// The line after it.
pub const END_MARKER: &str = "<!-- versus:end -->";

/// The live room every run loads (each run has a fresh server).
const ROOM: &str = "versus";
/// How long the machine is watched before the first run, to warn when it is busy.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// Durable writes timed before the first run (about a second in all, with [`FLUSH_PAUSE`]):
/// enough for a median and a tail.
const FLUSH_SAMPLES: usize = 50;
/// The pause before each, so that each finds the disk idle, as a quiet room's commit does.
const FLUSH_PAUSE: Duration = Duration::from_millis(20);

/// Options of `danmaku versus`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  danmaku versus                                    # the three points: ours, ours-cores, bun, node
  danmaku versus --point 200x100/10 --duration 5 --markdown BENCHMARKS.md
  danmaku versus --servers ours --point 5x20/1 --duration 1 --markdown /tmp/t.md

A point is VIEWERSxRATE/SENDERS: viewers, comments per second (all senders together) and
senders (default 10). Ours is ws-stream beside this binary (or in DANMAKU_BIN_DIR), started as
bench starts it, with its default workers (one per core but one) and fan-out helper;
ours-cores is the same with a worker on every core (and no helper). The peers live in
--peers-dir (bench/peers): install them first with `npm ci` there, as scripts/bench-peers.sh
does. Without --servers every server is tried and a peer that is not installed is skipped with
a message; a server named in --servers must be there.
The table replaces whatever is between the lines <!-- versus:begin --> and <!-- versus:end -->
of the --markdown file (they are appended, with the table, when missing).
Exit status 0 when every run finished (lost comments show in the table), 1 otherwise.")]
pub struct VersusArgs {
    /// Points VIEWERSxRATE/SENDERS, repeated or comma-separated.
    #[arg(
        long = "point",
        value_name = "POINT",
        value_delimiter = ',',
        default_values = ["200x100/10", "1000x100/10", "2000x200/20"]
    )]
    pub points: Vec<Point>,
    /// The servers to run, in this order at each point (default: all, skipping the peers that
    /// are not installed).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub servers: Vec<Server>,
    /// Seconds of sending per run.
    #[arg(long, default_value = "10")]
    pub duration: f64,
    /// Seconds over which the viewers connect.
    #[arg(long, default_value = "5")]
    pub ramp: f64,
    /// Seconds to wait for late deliveries after the last send.
    #[arg(long, default_value = "5")]
    pub drain: f64,
    /// Seconds of rest between two runs, so one server's teardown does not land in the next
    /// run's window.
    #[arg(long, default_value = "2")]
    pub pause: f64,
    /// The folder of the peers' servers and their node_modules.
    #[arg(long, value_name = "DIR", default_value = "bench/peers")]
    pub peers_dir: PathBuf,
    /// The Node.js binary for the node peer.
    #[arg(long, value_name = "PATH", default_value = "node")]
    pub node: PathBuf,
    /// Write the table between the markers of this markdown file.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Write each run's report as `versus-SERVER-VIEWERSxRATE.json` into this folder, and the
    /// durable write's timing as `versus-disk-flush.json`.
    #[arg(long, value_name = "DIR")]
    pub json_dir: Option<PathBuf>,
    /// Show the servers' logs on stderr.
    #[arg(long)]
    pub server_log: bool,
}

/// One load: viewers, comments per second and senders.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Viewers.
    pub viewers: usize,
    /// Comments per second, all senders together.
    pub rate: f64,
    /// Senders.
    pub senders: usize,
}

impl Point {
    /// Senders when a point does not say.
    pub const DEFAULT_SENDERS: usize = 10;

    /// `200x100/10`.
    pub fn label(&self) -> String {
        format!("{}x{}/{}", self.viewers, self.rate, self.senders)
    }
}

impl FromStr for Point {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{raw:?}: a point is VIEWERSxRATE or VIEWERSxRATE/SENDERS");
        let (load, senders) = match raw.split_once('/') {
            Some((load, senders)) => (load, senders.parse().map_err(|_| bad())?),
            None => (raw, Self::DEFAULT_SENDERS),
        };
        let (viewers, rate) = load.split_once(['x', 'X']).ok_or_else(bad)?;
        let point = Self {
            viewers: viewers.parse().map_err(|_| bad())?,
            rate: rate.parse().map_err(|_| bad())?,
            senders,
        };
        if point.viewers == 0 || point.senders == 0 || !(point.rate.is_finite() && point.rate > 0.0)
        {
            return Err(format!(
                "{raw:?}: viewers, rate and senders must be positive"
            ));
        }
        Ok(point)
    }
}

/// A server under comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Server {
    /// ws-stream: every comment committed to SQLite before anyone sees it.
    Ours,
    /// ws-stream with a worker on every CPU core (`--workers N`), where its default leaves one
    /// core to its store's writer, its hub and the fan-out helper.
    #[value(name = "ours-cores")]
    #[serde(rename = "ours-cores")]
    OursEveryCore,
    /// `bench/peers/bun-server.js` on Bun: `server.publish`, nothing stored.
    Bun,
    /// `bench/peers/node-server.js` on Node with `ws`: a loop over the room, nothing stored.
    Node,
}

impl Server {
    /// Every server, in run order.
    pub const ALL: [Self; 4] = [Self::Ours, Self::OursEveryCore, Self::Bun, Self::Node];

    /// Whether it commits each comment to a database before anyone sees it (ours does).
    pub fn stores(self) -> bool {
        matches!(self, Self::Ours | Self::OursEveryCore)
    }

    /// The lowercase name (`ours`), for file names and messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ours => "ours",
            Self::OursEveryCore => "ours-cores",
            Self::Bun => "bun",
            Self::Node => "node",
        }
    }
}

/// One server ready to be started: what runs and what it is, for the table's header.
#[derive(Debug, Clone)]
struct Contender {
    /// Which.
    server: Server,
    /// `ws-stream (SQLite, fsync)`, `Bun 1.4.5`, `Node v20.20.2 + ws 8.23.0`.
    description: String,
    /// How a peer is started; `None` for ours, which [`LocalService::start`] finds and starts
    /// with these flags.
    program: Option<PeerProgram>,
    /// Ours' flags besides those `LocalService::start` gives every service.
    flags: Vec<String>,
}

/// A peer's server: a script of the peers' folder run by a JavaScript runtime.
#[derive(Debug, Clone)]
struct PeerProgram {
    /// `bun` (an absolute path into node_modules) or `node`.
    runtime: PathBuf,
    /// The server's file, in `dir`.
    script: &'static str,
    /// The peers' folder, absolute: the server's working directory.
    dir: PathBuf,
}

impl Contender {
    /// Starts the server and waits until it listens.
    fn start(&self, echo_log: bool) -> Result<LocalService, CliError> {
        match &self.program {
            None => LocalService::start("ws-stream", &self.flags, echo_log),
            Some(peer) => {
                let mut command = Command::new(&peer.runtime);
                command
                    .arg(peer.script)
                    .current_dir(&peer.dir)
                    .env("PORT", "0")
                    .env("HOST", "127.0.0.1");
                LocalService::start_command(self.server.name(), command, echo_log)
            }
        }
    }
}

/// One finished run.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The load.
    pub point: Point,
    /// The server.
    pub server: Server,
    /// What the bench measured.
    pub report: BenchReport,
}

/// What the table's header says about the run as a whole.
#[derive(Debug, Clone)]
pub struct Header {
    /// When the run started (RFC 3339).
    pub date: String,
    /// Cores this process may use.
    pub cores: usize,
    /// The CPU's model name, from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Cores busy with anything before the first run, over [`IDLE_CHECK`].
    pub busy_before: Option<f64>,
    /// A durable write beside ours' database, timed before the first run (`None` when ours
    /// is not run, or the write failed).
    pub flush: Option<Flush>,
    /// The command as typed, program name shortened to `danmaku`.
    pub command: String,
    /// Each server compared and what it is.
    pub servers: Vec<(Server, String)>,
    /// Seconds of sending, ramp and drain of each run.
    pub timing: (f64, f64, f64),
}

/// Runs every point on every server and writes the table; exit status 1 when a run failed.
pub async fn run(args: VersusArgs) -> Result<ExitCode, CliError> {
    // Children inherit the limit: thousands of connections need it raised before any server
    // (ours or a peer) starts; `bench` checks it again per run.
    servers::raise_open_file_limit();
    let contenders = contenders(&args)?;
    if contenders.is_empty() {
        return Err(CliError::Usage("no server to run".into()));
    }
    // Everything that can be checked before the first run is, so a long run never ends in a
    // usage error: the timings, and the markers of the file the table goes into.
    bench::seconds("--duration", args.duration)?;
    bench::seconds("--drain", args.drain)?;
    let pause = Duration::try_from_secs_f64(args.pause)
        .map_err(|_| CliError::Usage("--pause must be 0 or more seconds".into()))?;
    if args.ramp.is_nan() || args.ramp < 0.0 {
        return Err(CliError::Usage("--ramp must be 0 or more seconds".into()));
    }
    if let Some(path) = &args.markdown {
        splice(&read_markdown(path)?, "")?;
    }
    let busy_before = busy_cores(IDLE_CHECK).await;
    if let Some(busy) = busy_before.filter(|b| *b >= 0.25) {
        eprintln!(
            "versus: WARNING the machine is busy ({busy:.2} of {} cores in use before the first \
             run); the figures will be noisy",
            procfs::cores()
        );
    }
    let runs_ours = contenders.iter().any(|c| c.server.stores());
    let header = Header {
        date: shared_model::time::rfc3339(shared_model::time::now()),
        cores: procfs::cores(),
        cpu_model: cpu_model(),
        busy_before,
        flush: if runs_ours { time_flush().await } else { None },
        command: command_line(),
        servers: contenders
            .iter()
            .map(|c| (c.server, c.description.clone()))
            .collect(),
        timing: (args.duration, args.ramp, args.drain),
    };
    if let (Some(dir), Some(flush)) = (&args.json_dir, &header.flush) {
        write_flush_json(dir, flush)?;
    }
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for point in &args.points {
        for contender in &contenders {
            if !outcomes.is_empty() || !failures.is_empty() {
                tokio::time::sleep(pause).await;
            }
            eprintln!(
                "versus: {} at {} viewers x {} comments/s ({} senders)",
                contender.server.name(),
                point.viewers,
                point.rate,
                point.senders
            );
            match run_one(&args, *point, contender).await {
                Ok(report) => {
                    eprint!("{}", report.render());
                    let outcome = Outcome {
                        point: *point,
                        server: contender.server,
                        report,
                    };
                    if let Some(dir) = &args.json_dir {
                        write_json(dir, &outcome)?;
                    }
                    outcomes.push(outcome);
                }
                Err(e) => {
                    let failure = format!("{} at {}: {e}", contender.server.name(), point.label());
                    eprintln!("versus: {failure}");
                    failures.push(failure);
                }
            }
        }
    }
    let table = render(&header, &outcomes, &failures);
    println!("{table}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, splice(&read_markdown(path)?, &table)?)?;
        eprintln!("versus: table written into {}", path.display());
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The markdown file's text; empty when there is no such file yet.
fn read_markdown(path: &Path) -> Result<String, CliError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e.into()),
    }
}

/// The servers to run, each checked: named ones must be there, the others are skipped with a
/// message when they are not.
fn contenders(args: &VersusArgs) -> Result<Vec<Contender>, CliError> {
    let explicit = !args.servers.is_empty();
    let wanted: Vec<Server> = if explicit {
        args.servers.clone()
    } else {
        Server::ALL.to_vec()
    };
    let mut found = Vec::new();
    for server in wanted {
        match contender(args, server) {
            Ok(contender) => found.push(contender),
            Err(e) if explicit || matches!(server, Server::Ours | Server::OursEveryCore) => {
                return Err(e);
            }
            Err(e) => eprintln!("versus: skipping {}: {e}", server.name()),
        }
    }
    Ok(found)
}

/// Finds what `server` needs, or says what is missing.
fn contender(args: &VersusArgs, server: Server) -> Result<Contender, CliError> {
    let not_installed = |what: &Path| {
        CliError::LocalService(format!(
            "{} not found; install the peers with `npm ci` in {} (scripts/bench-peers.sh does)",
            what.display(),
            args.peers_dir.display()
        ))
    };
    let dir = &args.peers_dir;
    match server {
        Server::Ours => {
            servers::locate("ws-stream")?;
            Ok(Contender {
                server,
                description: "ws-stream, each comment committed to SQLite (fsync) before it is \
                              sent; its default workers, one per core but one, and the fan-out \
                              helper on the core left over"
                    .into(),
                program: None,
                flags: Vec::new(),
            })
        }
        Server::OursEveryCore => {
            servers::locate("ws-stream")?;
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            Ok(Contender {
                server,
                description: format!(
                    "the same with a worker on every core (`--workers {cores}`), where its \
                     default leaves one core to its store's writer, its hub and the fan-out \
                     helper (off here: no core is left over)"
                ),
                program: None,
                flags: vec!["--workers".into(), cores.to_string()],
            })
        }
        Server::Bun => {
            let bun = dir.join("node_modules/.bin/bun");
            if !bun.is_file() {
                return Err(not_installed(&bun));
            }
            let bun = bun.canonicalize()?;
            let version = version_of(&bun)?;
            Ok(Contender {
                server,
                description: format!("Bun {version}, `server.publish`, nothing stored"),
                program: Some(PeerProgram {
                    runtime: bun,
                    script: "bun-server.js",
                    dir: dir.canonicalize()?,
                }),
                flags: Vec::new(),
            })
        }
        Server::Node => {
            let ws = dir.join("node_modules/ws/package.json");
            let ws_version = std::fs::read_to_string(&ws)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|package| package["version"].as_str().map(str::to_owned))
                .ok_or_else(|| not_installed(&ws))?;
            let version = version_of(&args.node)?;
            Ok(Contender {
                server,
                description: format!(
                    "Node {version} with ws {ws_version}, a loop over the room, nothing stored"
                ),
                program: Some(PeerProgram {
                    runtime: args.node.clone(),
                    script: "node-server.js",
                    dir: dir.canonicalize()?,
                }),
                flags: Vec::new(),
            })
        }
    }
}

/// `program --version`, trimmed; an error when it cannot be run.
fn version_of(program: &Path) -> Result<String, CliError> {
    let output = Command::new(program)
        .arg("--version")
        .output()
        .map_err(|e| CliError::LocalService(format!("cannot run {}: {e}", program.display())))?;
    if !output.status.success() {
        return Err(CliError::LocalService(format!(
            "{} --version failed ({})",
            program.display(),
            output.status
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Starts `contender`, benches it at `point` in this process, and stops it.
async fn run_one(
    args: &VersusArgs,
    point: Point,
    contender: &Contender,
) -> Result<BenchReport, CliError> {
    let service = contender.start(args.server_log)?;
    let bench_args = bench_args(args, point, &service)?;
    let report = bench::bench(&bench_args).await;
    drop(service);
    report
}

/// The command line `bench` would take for this run, parsed by `bench`'s own parser so that
/// every flag not given here keeps its default.
#[derive(Debug, Parser)]
struct BenchLine {
    #[command(flatten)]
    args: BenchArgs,
}

/// `bench`'s arguments for `point` against `service`.
fn bench_args(
    args: &VersusArgs,
    point: Point,
    service: &LocalService,
) -> Result<BenchArgs, CliError> {
    let line = [
        "bench".to_owned(),
        format!("--url=ws://{}", service.base),
        format!("--server-pid={}", service.pid),
        format!("--live={ROOM}"),
        format!("--viewers={}", point.viewers),
        format!("--senders={}", point.senders),
        format!("--rate={}", point.rate),
        format!("--duration={}", args.duration),
        format!("--ramp={}", args.ramp),
        format!("--drain={}", args.drain),
        "--quiet".to_owned(),
    ];
    BenchLine::try_parse_from(line)
        .map(|line| line.args)
        .map_err(|e| CliError::Usage(e.to_string()))
}

/// Writes the durable write's timing into `dir` as `versus-disk-flush.json`, beside the runs'.
fn write_flush_json(dir: &Path, flush: &Flush) -> Result<(), CliError> {
    std::fs::create_dir_all(dir)?;
    // Holds: a flush is four numbers; serializing cannot fail.
    let text = serde_json::to_string_pretty(flush).expect("a flush always serializes");
    std::fs::write(dir.join("versus-disk-flush.json"), text + "\n")?;
    Ok(())
}

/// Writes `outcome` as `versus-SERVER-VIEWERSxRATE.json` in `dir`.
fn write_json(dir: &Path, outcome: &Outcome) -> Result<(), CliError> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!(
        "versus-{}-{}x{}.json",
        outcome.server.name(),
        outcome.point.viewers,
        outcome.point.rate
    ));
    // Holds: a report is numbers, strings and maps of those; serializing cannot fail.
    let text = serde_json::to_string_pretty(outcome).expect("a report always serializes");
    std::fs::write(path, text + "\n")?;
    Ok(())
}

/// Cores busy with anything over `window`, or `None` when `/proc/stat` cannot be read.
async fn busy_cores(window: Duration) -> Option<f64> {
    let start = procfs::machine().ok()?;
    tokio::time::sleep(window).await;
    let end = procfs::machine().ok()?;
    let total = end.total.checked_sub(start.total).filter(|t| *t > 0)?;
    let busy = end.busy.saturating_sub(start.busy);
    Some(busy as f64 / total as f64 * procfs::cores() as f64)
}

/// A durable write in the folder where ours' database goes ([`LocalService::start`] makes it a
/// fresh temporary folder), timed [`FLUSH_SAMPLES`] times; `None`, with a message, when it fails.
async fn time_flush() -> Option<Flush> {
    let dir = std::env::temp_dir();
    let timed =
        tokio::task::spawn_blocking(move || disk::measure(&dir, FLUSH_SAMPLES, FLUSH_PAUSE)).await;
    match timed {
        Ok(Ok(flush)) => Some(flush),
        Ok(Err(e)) => {
            eprintln!("versus: cannot time a durable write in the temporary folder: {e}");
            None
        }
        Err(e) => {
            eprintln!("versus: timing a durable write failed: {e}");
            None
        }
    }
}

/// The CPU's model name, or `unknown`.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// This process's command line with the program shortened to `danmaku` (no machine paths).
fn command_line() -> String {
    let mut words = vec!["danmaku".to_owned()];
    words.extend(std::env::args().skip(1).map(|arg| {
        if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
            format!("'{}'", arg.replace('\'', r"'\''"))
        } else {
            arg
        }
    }));
    words.join(" ")
}

/// The markdown that goes between the markers: what was run where, then one row per run, then
/// the runs that failed to run at all (a server that did not start, say), one line each.
pub fn render(header: &Header, outcomes: &[Outcome], failures: &[String]) -> String {
    let mut out = String::new();
    let (duration, ramp, drain) = header.timing;
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "Run {} on {} cores ({}); {} s of sending per run after a {} s ramp, up to {} s of drain.",
        header.date, header.cores, header.cpu_model, duration, ramp, drain
    );
    if let Some(busy) = header.busy_before {
        let _ = writeln!(
            out,
            "Cores busy on the machine just before the first run: {busy:.2}."
        );
    }
    if let Some(flush) = header.flush {
        let _ = writeln!(
            out,
            "A durable write beside ours' database ({} KiB, then `fsync`; {} times): p50 {:.3} ms, \
             p99 {:.3} ms. Each of ours' comments waits for one, its commit, before anyone sees \
             it; the peers store nothing.",
            flush.bytes / 1024,
            flush.samples,
            flush.p50_ms,
            flush.p99_ms
        );
    }
    let _ = writeln!(out, "Command: `{}`.", header.command);
    let _ = writeln!(out);
    for (server, description) in &header.servers {
        let _ = writeln!(out, "- **{}**: {description}", server.name());
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| viewers × comments/s (senders) | server | offered comments/s | offered deliveries/s \
         | delivered/s | lost | p50 ms | p90 ms | p99 ms | max ms | server CPU µs/delivery \
         | peak RSS MiB | RSS/conn KiB | other cores busy | bottleneck | notes |"
    );
    let _ = writeln!(
        out,
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|---|"
    );
    for outcome in outcomes {
        let _ = writeln!(out, "{}", row(outcome));
    }
    if outcomes.is_empty() {
        let _ = writeln!(out, "\n(no run finished)");
    }
    if !failures.is_empty() {
        let _ = writeln!(out, "\nRuns that failed:\n");
        for failure in failures {
            let _ = writeln!(out, "- {failure}");
        }
    }
    out
}

/// One table row.
fn row(outcome: &Outcome) -> String {
    let (point, r) = (&outcome.point, &outcome.report);
    let server = r.server.as_ref();
    let missing = || "?".to_owned();
    let cpu = server
        .and_then(|s| s.cpu_micros_per_delivery)
        .map_or_else(missing, |us| format!("{us:.2}"));
    let peak = server
        .and_then(|s| s.peak_rss_kib)
        .map_or_else(missing, |kib| format!("{:.1}", kib as f64 / 1024.0));
    let per_connection = server
        .and_then(|s| s.rss_per_connection_kib)
        .map_or_else(missing, |kib| format!("{kib:.1}"));
    let other = r
        .cpu
        .other_cores_busy
        .map_or_else(missing, |o| format!("{o:.2}"));
    let l = &r.latency;
    format!(
        "| {} × {} ({}) | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        point.viewers,
        point.rate,
        point.senders,
        outcome.server.name(),
        point.rate,
        point.rate * point.viewers as f64,
        r.deliveries_per_sec,
        r.lost,
        format_ms(l.p50_ms),
        format_ms(l.p90_ms),
        format_ms(l.p99_ms),
        format_ms(l.max_ms),
        cpu,
        peak,
        per_connection,
        other,
        r.cpu.bottleneck,
        notes(r),
    )
}

/// What went wrong in a run, briefly: connections missing, sends not acknowledged, errors.
fn notes(r: &BenchReport) -> String {
    let mut notes = Vec::new();
    if r.viewers_connected < r.viewers as u64 || r.senders_connected < r.senders as u64 {
        notes.push(format!(
            "connected {}/{} viewers, {}/{} senders",
            r.viewers_connected, r.viewers, r.senders_connected, r.senders
        ));
    }
    if r.acked < r.sent {
        notes.push(format!("acked {}/{}", r.acked, r.sent));
    }
    if r.duplicated > 0 {
        notes.push(format!("{} duplicated", r.duplicated));
    }
    notes.extend(r.errors.iter().map(|(what, n)| format!("{what}: {n}")));
    if r.server.as_ref().is_some_and(|s| s.exited) {
        notes.push("server exited".into());
    }
    if notes.is_empty() {
        "clean".into()
    } else {
        notes.join("; ").replace('|', "/")
    }
}

/// `document` with `table` between its markers: what was between them is replaced and the rest
/// kept. Without the markers, they are appended (with the table) at the end. A begin marker
/// without an end marker after it (or the reverse) is an error, so a damaged file is never
/// half overwritten.
pub fn splice(document: &str, table: &str) -> Result<String, CliError> {
    let table = table.trim_end_matches('\n');
    let block = format!("{BEGIN_MARKER}\n{table}\n{END_MARKER}");
    match (document.find(BEGIN_MARKER), document.find(END_MARKER)) {
        (Some(begin), Some(end)) if begin < end => Ok(format!(
            "{}{block}{}",
            &document[..begin],
            &document[end + END_MARKER.len()..]
        )),
        (None, None) => {
            let mut out = document.to_owned();
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&block);
            out.push('\n');
            Ok(out)
        }
        _ => Err(CliError::Usage(format!(
            "the markdown file has {BEGIN_MARKER} or {END_MARKER} without the other (or in the \
             wrong order); fix it by hand"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_read_viewers_rate_and_senders() {
        let p: Point = "2000x200/20".parse().unwrap();
        assert_eq!((p.viewers, p.rate, p.senders), (2000, 200.0, 20));
        let p: Point = "5x0.5".parse().unwrap();
        assert_eq!(
            (p.viewers, p.rate, p.senders),
            (5, 0.5, Point::DEFAULT_SENDERS)
        );
        for bad in [
            "", "200", "x100", "200x", "200x100/", "0x10", "10x0", "10x10/0", "axb",
        ] {
            assert!(bad.parse::<Point>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_table_replaces_what_is_between_the_markers_and_keeps_the_rest() {
        let document =
            format!("# Title\n\nbefore\n{BEGIN_MARKER}\nold table\n{END_MARKER}\nafter\n");
        let out = splice(&document, "| new |\n").unwrap();
        assert_eq!(
            out,
            format!("# Title\n\nbefore\n{BEGIN_MARKER}\n| new |\n{END_MARKER}\nafter\n")
        );
        // Twice gives the same file: the markers stay, one table between them.
        assert_eq!(splice(&out, "| new |").unwrap(), out);
    }

    #[test]
    fn a_file_without_markers_gets_them_appended_with_the_table() {
        assert_eq!(
            splice("# Benchmarks", "| t |").unwrap(),
            format!("# Benchmarks\n\n{BEGIN_MARKER}\n| t |\n{END_MARKER}\n")
        );
        assert_eq!(
            splice("", "| t |").unwrap(),
            format!("{BEGIN_MARKER}\n| t |\n{END_MARKER}\n")
        );
    }

    #[test]
    fn a_lone_or_reversed_marker_is_an_error() {
        assert!(splice(&format!("a\n{BEGIN_MARKER}\nb\n"), "t").is_err());
        assert!(splice(&format!("a\n{END_MARKER}\nb\n"), "t").is_err());
        assert!(splice(&format!("{END_MARKER}\n{BEGIN_MARKER}\n"), "t").is_err());
    }

    /// A clean report of 5 viewers at 20 comments/s.
    fn report() -> BenchReport {
        BenchReport {
            target: "live room versus at 127.0.0.1:1".into(),
            viewers: 5,
            senders: 1,
            rate_per_sec: 20.0,
            duration_secs: 1.0,
            ramp_secs: 0.0,
            viewers_connected: 5,
            senders_connected: 1,
            sent: 20,
            acked: 20,
            expected_deliveries: 100,
            received: 100,
            lost: 0,
            duplicated: 0,
            deliveries_per_sec: 98.4,
            window_secs: 1.02,
            latency: crate::latency::Percentiles {
                count: 100,
                p50_ms: 0.8,
                p90_ms: 1.2,
                p99_ms: 3.1,
                p999_ms: 4.0,
                max_ms: 4.0,
                mean_ms: 1.0,
            },
            max_send_lag_ms: 0.1,
            client_bytes_down: 1,
            client_bytes_up: 1,
            client_peak_rss_kib: None,
            errors: Default::default(),
            stopped_early: false,
            burst: None,
            server: Some(crate::bench::report::ServerUsage {
                pid: 1,
                pids: vec![1],
                cpu_secs: Some(0.01),
                cpu_micros_per_delivery: Some(100.0),
                connect_cpu_secs: None,
                rss_before_kib: Some(10_240),
                rss_connected_kib: Some(10_340),
                peak_rss_kib: Some(20_480),
                rss_per_connection_kib: Some(16.7),
                exited: false,
            }),
            cpu: procfs::CpuVerdict::judge(Duration::from_secs(1), procfs::CpuUse::default(), 2),
        }
    }

    #[test]
    fn a_row_shows_offered_and_delivered_rates_latency_cpu_and_memory() {
        let point = Point {
            viewers: 5,
            rate: 20.0,
            senders: 1,
        };
        let header = Header {
            date: "2026-11-30T00:00:00.000Z".into(),
            cores: 2,
            cpu_model: "Some CPU".into(),
            busy_before: Some(0.05),
            flush: Some(Flush {
                bytes: 12_288,
                samples: 50,
                p50_ms: 0.9,
                p99_ms: 1.75,
            }),
            command: "danmaku versus --servers ours".into(),
            servers: vec![(Server::Ours, "ws-stream".into())],
            timing: (1.0, 0.0, 5.0),
        };
        let mut outcomes = vec![Outcome {
            point,
            server: Server::Ours,
            report: report(),
        }];
        let mut lossy = report();
        lossy.lost = 3;
        lossy.errors.insert("viewer disconnected".into(), 1);
        outcomes.push(Outcome {
            point,
            server: Server::Node,
            report: lossy,
        });
        let table = render(
            &header,
            &outcomes,
            &["bun at 5x20/1: it did not start".into()],
        );
        assert!(table.contains("on 2 cores (Some CPU)"), "{table}");
        assert!(
            table.contains(
                "A durable write beside ours' database (12 KiB, then `fsync`; 50 times): \
                 p50 0.900 ms, p99 1.750 ms."
            ),
            "{table}"
        );
        assert!(
            table.contains("Command: `danmaku versus --servers ours`"),
            "{table}"
        );
        assert!(
            table.contains(
                "| 5 × 20 (1) | ours | 20 | 100 | 98 | 0 | 0.80 | 1.20 | 3.10 | 4.00 | 100.00 \
                 | 20.0 | 16.7 | ? | none | clean |"
            ),
            "{table}"
        );
        assert!(table.contains("| 3 |"), "{table}");
        assert!(table.contains("| viewer disconnected: 1 |"), "{table}");
        assert!(
            table.ends_with("Runs that failed:\n\n- bun at 5x20/1: it did not start\n"),
            "{table}"
        );
    }
}
