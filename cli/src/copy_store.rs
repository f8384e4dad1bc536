//! `danmaku copy-store`: copies a service's SQLite store into a PostgreSQL database (comments
//! with their ids and import keys, rooms, check-ins, attendance), with a progress bar. The work
//! is `danmaku_store::copy`; this draws the bar and prints what was done. Built with the `copy`
//! feature (on by default), the only part of the client with database code.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use clap::builder::TypedValueParser;
use danmaku_store::copy::{self, CopyError, CopyOptions, CopyReport, Table};
use danmaku_store::{StoreError, redact_url};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::CliError;

/// What `danmaku copy-store --help` ends with.
const DETAILS: &str = "\
Copies every comment (with its id, so clients' cursors stay valid, and its import key), every
room (title, host token digest), check-in (id, times, closed flag) and attendance (in order).
The SQLite file is only read; a service may keep running on it. Each batch is one transaction:
run the command again to finish an interrupted copy (what is there is checked, not copied
twice); a second run copies nothing. A database that holds other comments under the same
channel and id is refused. Start the services on PostgreSQL after the copy.

Example:
  danmaku copy-store --from data/ws-stream.db --to postgres://postgres@127.0.0.1:5432/danmaku";

/// Arguments of `danmaku copy-store`.
#[derive(Debug, Args)]
#[command(after_help = DETAILS)]
pub struct CopyStoreArgs {
    /// The SQLite store to copy: a service's `--store` file (a path or sqlite://PATH). Only
    /// read, never changed.
    #[arg(long, value_name = "FILE")]
    pub from: String,
    /// The PostgreSQL database to copy into (postgres://user:password@host:port/db); its tables
    /// are created if missing. Set DANMAKU_COPY_TO instead to keep a password out of the
    /// process list.
    #[arg(
        long,
        value_name = "URL",
        env = "DANMAKU_COPY_TO",
        hide_env_values = true
    )]
    pub to: String,
    /// Rows per transaction.
    #[arg(long, value_name = "ROWS", default_value_t = copy::DEFAULT_BATCH_ROWS,
          value_parser = clap::value_parser!(u32).range(1..=100_000).map(|n| n as usize))]
    pub batch: usize,
    /// How long connecting, and each batch, may take, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = copy::DEFAULT_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
    /// No progress bar (it is drawn on stderr when that is a terminal).
    #[arg(long)]
    pub quiet: bool,
}

/// Runs the copy and prints what it did.
pub async fn run(args: CopyStoreArgs) -> Result<(), CliError> {
    let from = match args.from.strip_prefix("sqlite://") {
        Some("") => return Err(CliError::Usage("--from sqlite:// needs a file path".into())),
        Some(path) => PathBuf::from(path),
        None if args.from.contains("://") => {
            return Err(CliError::Usage(format!(
                "--from takes a SQLite file (a path or sqlite://PATH), not {}",
                redact_url(&args.from)
            )));
        }
        None => PathBuf::from(&args.from),
    };
    if !(args.to.starts_with("postgres://") || args.to.starts_with("postgresql://")) {
        return Err(CliError::Usage(format!(
            "--to takes a PostgreSQL URL (postgres://user:password@host:port/db), not {}",
            redact_url(&args.to)
        )));
    }
    let bar = ProgressBar::with_draw_target(
        None,
        if args.quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    // Holds: a constant template indicatif accepts.
    let style = ProgressStyle::with_template(
        "{msg:>10} [{bar:40}] {human_pos}/{human_len} rows {per_sec} eta {eta}",
    )
    .expect("a valid progress template")
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message("connecting");
    let options = CopyOptions {
        batch_rows: args.batch,
        stop_after_batches: None,
        timeout: Duration::from_secs(args.timeout),
    };
    let copied = copy::copy_sqlite_to_postgres(&from, &args.to, &options, |progress| {
        bar.set_length(progress.total.max(progress.done));
        bar.set_position(progress.done);
        bar.set_message(progress.table.name());
    })
    .await;
    bar.finish_and_clear();
    let report = copied.map_err(|e| match e {
        CopyError::Target(StoreError::Unavailable(reason)) => CliError::Connect {
            addr: redact_url(&args.to),
            reason,
        },
        e => CliError::Copy(e.to_string()),
    })?;
    print!(
        "{}",
        summary(&from.display().to_string(), &redact_url(&args.to), &report)
    );
    Ok(())
}

/// What a finished copy prints: one line per table.
fn summary(from: &str, to: &str, report: &CopyReport) -> String {
    let mut out = format!("copied {from} into {to}\n");
    for table in Table::ALL {
        let counts = report.of(table);
        out.push_str(&format!(
            "  {:<14} {:>9} read {:>9} copied {:>9} already there\n",
            table.name(),
            counts.read,
            counts.copied,
            counts.present
        ));
    }
    if report.copied() == 0 {
        out.push_str("nothing new: the database already held all of it\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use danmaku_store::copy::TableCounts;

    #[test]
    fn the_summary_says_per_table_what_was_copied() {
        let mut report = CopyReport::default();
        report.counts.insert(
            Table::Comments,
            TableCounts {
                read: 10,
                copied: 4,
                present: 6,
            },
        );
        let text = summary("a.db", "postgres://h/d", &report);
        assert!(
            text.starts_with("copied a.db into postgres://h/d\n"),
            "{text}"
        );
        assert!(
            text.contains("comments              10 read         4 copied         6 already there"),
            "{text}"
        );
        assert!(!text.contains("nothing new"), "{text}");
        assert!(summary("a", "b", &CopyReport::default()).contains("nothing new"));
    }
}
