//! `danmaku`, the command-line client of the danmaku services: post to and follow any of the
//! three services from a terminal (so the WebSocket APIs can be tried without a browser), load
//! a live room or a video with thousands of simulated viewers, and measure what short polling,
//! long polling and WebSocket cost to deliver the same comments.
//!
//! One module per subcommand, over shared transport code:
//!
//! - [`send`], [`tail`]: one comment out; every comment in, as it arrives.
//! - `copy_store` (feature `copy`, on by default): a service's SQLite store copied into
//!   PostgreSQL, with a progress bar. The only module with database code: without the feature
//!   the client builds without SQLite or PostgreSQL.
//! - [`bench`]: N viewers and K senders on a fixed schedule; deliveries, loss, latency
//!   percentiles, the server's CPU and memory.
//! - [`compare`]: the same comment stream over each transport; requests, bytes each way,
//!   latency, loss; a table and an SVG chart.
//! - [`versus`]: ws-stream, Bun's pub/sub and Node's `ws` at the same points in one run; the
//!   side-by-side table written into a markdown file.
//! - [`transport`]: counted sockets, the HTTP/1.1 client, WebSocket frames.
//! - [`endpoint`]: addresses, channels and routes; [`output`]: how comments are printed;
//!   [`filter`]: the block list of `tail --hide-*`, the pages' rules.
//! - [`stamp`]: the send schedule and the intended send time carried in each measured comment;
//!   [`latency`]: HDR histograms; [`procfs`]: CPU and memory from `/proc`.
//! - [`servers`]: the services started by the tool itself, and the open-file limit; [`disk`]:
//!   how long a durable write takes, the floor under ours' latency that `versus` reports.
//! - [`error`]: failures and exit statuses.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod bench;
pub mod compare;
#[cfg(feature = "copy")]
pub mod copy_store;
pub mod disk;
pub mod endpoint;
pub mod error;
pub mod filter;
pub mod latency;
pub mod output;
pub mod procfs;
pub mod send;
pub mod servers;
pub mod stamp;
pub mod tail;
pub mod transport;
pub mod versus;

pub use error::CliError;

/// Examples shown by `danmaku --help`.
const EXAMPLES: &str = "Examples:
  danmaku send --room lobby 'hello'                  # HTTP service, 127.0.0.1:8081
  danmaku tail --live lobby --json                   # live service, 127.0.0.1:8083
  danmaku send --video demo --time 3.5 'nice shot'   # video service, 127.0.0.1:8082
  danmaku bench --viewers 1000 --rate 100 --duration 20
  danmaku compare --viewers 20 --rate 1 --duration 30 --chart compare.svg
  danmaku versus --markdown BENCHMARKS.md             # ours, Bun and Node side by side
  danmaku copy-store --from data/ws-stream.db --to postgres://postgres@127.0.0.1:5432/danmaku

bench, compare and versus start their own services (the binaries beside this one, with raised rate
limits) unless given the services' URLs. Each subcommand's --help has more.";

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "danmaku",
    version,
    about = "Send, follow, load-test and compare the danmaku services from a terminal, and move a \
             store from SQLite to PostgreSQL.",
    after_help = EXAMPLES
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Post one comment and print it as stored.
    Send(send::SendArgs),
    /// Print each comment of a room, video or live room as it arrives.
    Tail(tail::TailArgs),
    /// Load a live room (or a video) with many viewers and senders and measure delivery.
    Bench(bench::BenchArgs),
    /// Deliver the same comment stream over short polling, long polling and WebSocket and
    /// measure what each costs.
    Compare(compare::CompareArgs),
    /// Run ws-stream, Bun's pub/sub and Node's `ws` at the same points and write the
    /// side-by-side table into a markdown file.
    Versus(versus::VersusArgs),
    /// Copy a service's SQLite store into a PostgreSQL database (ids, import keys, rooms,
    /// check-ins, attendance), resumable and idempotent, with a progress bar.
    #[cfg(feature = "copy")]
    CopyStore(copy_store::CopyStoreArgs),
}

/// Runs a parsed command line; the exit status on success (bench exits 1 when it saw loss or
/// errors).
pub async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Send(args) => send::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Tail(args) => tail::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Bench(args) => bench::run(args).await,
        Command::Compare(args) => compare::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Versus(args) => versus::run(args).await,
        #[cfg(feature = "copy")]
        Command::CopyStore(args) => copy_store::run(args).await.map(|()| ExitCode::SUCCESS),
    }
}
