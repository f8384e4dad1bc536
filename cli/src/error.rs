//! What can go wrong in a command, and the exit status each failure maps to.

use std::process::ExitCode;

use shared_model::ApiError;

/// A command's failure. `main` prints it on stderr and exits with [`CliError::exit_code`].
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line asks for something impossible (a video comment without `--time`).
    #[error("{0}")]
    Usage(String),
    /// The server answered with its error body or frame: its code and message, verbatim.
    #[error("the server refused: {}: {}", .0.code, .0.message)]
    Refused(ApiError),
    /// The service could not be reached at all.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// Why not.
        reason: String,
    },
    /// The server answered something this client does not understand, or the connection broke.
    #[error("{0}")]
    Protocol(String),
    /// Nothing came back in time.
    #[error("timed out after {secs:.1} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        secs: f64,
    },
    /// A local service binary (for the runs that start their own services) is missing or failed.
    #[error("{0}")]
    LocalService(String),
    /// Copying a store failed (`copy-store`): the source cannot be read, PostgreSQL failed, or it
    /// holds another history.
    #[error("{0}")]
    Copy(String),
    /// Local input or output failed (writing the chart, reading /proc).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl CliError {
    /// The process exit status: 2 for usage errors (as clap uses), 3 when the server could not be
    /// reached, 1 for everything else (the server refused, broke the protocol, or timed out).
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Usage(_) => ExitCode::from(2),
            Self::Connect { .. } => ExitCode::from(3),
            _ => ExitCode::FAILURE,
        }
    }

    /// A timeout while waiting for `what` after `limit`.
    pub fn timeout(what: impl Into<String>, limit: std::time::Duration) -> Self {
        Self::Timeout {
            what: what.into(),
            secs: limit.as_secs_f64(),
        }
    }
}
