//! Services this tool starts itself, so `bench` and `compare` work out of the box: the sibling
//! binaries of the same build (`target/release/ws-stream` beside `target/release/danmaku`) on
//! ephemeral ports, each with a fresh database in a temporary folder and its comment rate limit
//! raised (a load test sends far more than the 5 comments per second a person may).
//!
//! Also the open-file limit: one descriptor per connection, so a run of 19,000 connections
//! needs the soft limit raised to the hard one.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::endpoint::Base;
use crate::error::CliError;

/// The per-client budgets (writes and rows read) given to services this tool starts: high enough
/// that no run reaches them.
pub const RAISED_RATE_LIMIT: &str = "1000000";

/// The WebSocket connections per client given to the WebSocket services this tool starts: every
/// viewer of a run comes from this machine's one address.
pub const RAISED_CONNECTION_LIMIT: &str = "1000000";

/// How long a starting service may take to log its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a service gets to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A service binary running on an ephemeral port; stopped (SIGTERM, then SIGKILL) and its
/// database removed when dropped.
pub struct LocalService {
    /// The binary's name (`ws-stream`).
    pub name: &'static str,
    /// Where it listens.
    pub base: Base,
    /// Its process id, for CPU and memory readings.
    pub pid: u32,
    child: Child,
    _dir: tempfile::TempDir,
}

impl LocalService {
    /// Starts service `name` (`http-danmaku`, `ws-video` or `ws-stream`) with its per-client
    /// budgets (and a WebSocket service's connections per client) raised, since every benchmark
    /// client is one address, and `extra` flags, and waits until it listens. With `echo_log` its log goes to
    /// this tool's stderr; otherwise it is read and dropped.
    pub fn start(name: &'static str, extra: &[String], echo_log: bool) -> Result<Self, CliError> {
        let exe = locate(name)?;
        let dir = tempfile::tempdir()?;
        // A fresh SQLite file, unless the caller names a store (say, PostgreSQL) itself.
        let names_store = extra.iter().any(|arg| {
            let flag = arg.split_once('=').map_or(arg.as_str(), |(flag, _)| flag);
            flag == "--store" || flag == "--db"
        });
        let store = match names_store {
            true => Vec::new(),
            false => vec![
                "--store".into(),
                dir.path().join(format!("{name}.db")).into_os_string(),
            ],
        };
        let mut command = Command::new(&exe);
        command
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(&store)
            .args(["--rate-per-sec", RAISED_RATE_LIMIT])
            .args(["--rate-burst", RAISED_RATE_LIMIT])
            .args(["--read-rows-per-sec", RAISED_RATE_LIMIT])
            .args(["--read-rows-burst", RAISED_RATE_LIMIT])
            .args(if name == "http-danmaku" {
                &[][..]
            } else {
                &["--max-connections-per-client", RAISED_CONNECTION_LIMIT][..]
            })
            .args(extra)
            // Only the line naming the address is needed; per-connection logs would cost the
            // server CPU in a benchmark.
            .env("RUST_LOG", "warn,service_kit::server=info");
        Self::launch(name, command, dir, echo_log)
    }

    /// Starts any server `command` that logs `listening on http://ADDR` on stderr once it
    /// listens (the peers of `danmaku versus` do), and waits for that line. Stopped like the
    /// services when dropped.
    pub fn start_command(
        name: &'static str,
        command: Command,
        echo_log: bool,
    ) -> Result<Self, CliError> {
        Self::launch(name, command, tempfile::tempdir()?, echo_log)
    }

    /// Spawns `command` with its stderr read on a thread, and waits up to [`START_TIMEOUT`] for
    /// the address it logs; `dir` lives as long as the service.
    fn launch(
        name: &'static str,
        mut command: Command,
        dir: tempfile::TempDir,
        echo_log: bool,
    ) -> Result<Self, CliError> {
        let exe = PathBuf::from(command.get_program());
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| CliError::LocalService(format!("cannot start {}: {e}", exe.display())))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| CliError::LocalService("no stderr pipe".into()))?;
        let (tx, rx) = mpsc::channel();
        // Keeps reading for the process's life, so a chatty server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on http://").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.trim().to_owned());
                }
                if echo_log {
                    eprintln!("[{name}] {line}");
                }
            }
        });
        let pid = child.id();
        let addr = match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                return Err(CliError::LocalService(format!(
                    "{} did not start within {} s (exit status {status:?}); run it by hand to see why",
                    exe.display(),
                    START_TIMEOUT.as_secs()
                )));
            }
        };
        Ok(Self {
            name,
            base: Base::parse(&addr)?,
            pid,
            child,
            _dir: dir,
        })
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for LocalService {
    fn drop(&mut self) {
        if !self.is_running() {
            return;
        }
        let pid = rustix::process::Pid::from_raw(self.pid as i32);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = std::time::Instant::now() + STOP_TIMEOUT;
        while std::time::Instant::now() < deadline {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The path of service binary `name`: in `DANMAKU_BIN_DIR` when set, else beside this
/// executable (the same `target/` profile folder after `cargo build`).
pub fn locate(name: &str) -> Result<PathBuf, CliError> {
    let dir = match std::env::var_os("DANMAKU_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::current_exe()?
            .parent()
            .map(PathBuf::from)
            .ok_or_else(|| CliError::LocalService("this executable has no folder".into()))?,
    };
    let exe = dir.join(name);
    if exe.is_file() {
        Ok(exe)
    } else {
        Err(CliError::LocalService(format!(
            "{} not found: build the services first (cargo build --release), set \
             DANMAKU_BIN_DIR to their folder, or give the services' URLs",
            exe.display()
        )))
    }
}

/// Raises this process's soft limit on open files to its hard limit, and returns the limit now
/// in force (children started afterwards inherit it). `None` means unlimited.
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if setrlimit(Resource::Nofile, limit).is_err() {
            // Keep what we had; the caller compares it with what it needs.
            return getrlimit(Resource::Nofile).current;
        }
    }
    getrlimit(Resource::Nofile).current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_file_limit_is_raised_to_the_hard_limit() {
        let after = raise_open_file_limit();
        let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
        assert_eq!(after, hard);
    }

    #[test]
    fn a_missing_service_binary_says_how_to_build_it() {
        let err = locate("no-such-service").unwrap_err();
        assert!(err.to_string().contains("cargo build"), "{err}");
    }
}
