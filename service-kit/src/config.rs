//! Settings shared by the binaries. Each is a flag and a `DANMAKU_*` variable; the flag wins.
//!
//! A service declares its own `clap::Parser` struct, flattens [`ServerArgs`] (and [`WsArgs`] for
//! the WebSocket services) into it, and calls [`parse`] with its default port and database file,
//! so `--help` of every binary shows that binary's real defaults.

use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// What one binary defaults to where the binaries differ.
#[derive(Debug, Clone, Copy)]
pub struct ServiceDefaults {
    /// Default `--port`.
    pub port: u16,
    /// Default `--db`, relative to the working directory.
    pub db: &'static str,
}

/// What a binary says about itself in `--help`, and its defaults.
#[derive(Debug, Clone, Copy)]
pub struct ServiceInfo {
    /// The binary's name.
    pub name: &'static str,
    /// One line on what it does.
    pub about: &'static str,
    /// Shown after the settings: the routes, and how to tune logging.
    pub after_help: &'static str,
    /// Its defaults.
    pub defaults: ServiceDefaults,
}

/// The settings of a WebSocket service (`ws-video`, `ws-stream`): what every service takes plus
/// the WebSocket limits. Each flag can also be set through its `DANMAKU_*` variable.
#[derive(Debug, Clone, Parser)]
#[command(version)]
pub struct WsServiceConfig {
    /// Settings every service shares.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Settings of the WebSocket services.
    #[command(flatten)]
    pub ws: WsArgs,
}

impl WsServiceConfig {
    /// Reads the process's flags and environment; exits with a message naming the setting on a
    /// bad value.
    pub fn from_env(info: &ServiceInfo) -> Self {
        let config: Self = parse(info);
        if let Err(problem) = config.ws.check() {
            eprintln!("error: {problem}");
            std::process::exit(2);
        }
        config
    }

    /// Parses `args` (program name first) like [`WsServiceConfig::from_env`], returning the
    /// problem instead of exiting.
    pub fn parse_from<I, T>(info: &ServiceInfo, args: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let config: Self = parse_from(info, args).map_err(|e| e.to_string())?;
        config.ws.check()?;
        Ok(config)
    }
}

/// Settings every service takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Address to listen on. Use 0.0.0.0 to accept connections from other machines.
    #[arg(long, env = "DANMAKU_BIND", default_value = "127.0.0.1")]
    pub bind: IpAddr,

    /// Port to listen on; 0 picks a free one (the log says which).
    #[arg(long, env = "DANMAKU_PORT")]
    pub port: u16,

    /// The SQLite database file. Its folder is created if missing.
    #[arg(long, env = "DANMAKU_DB")]
    pub db: PathBuf,

    /// Serve the pages from this folder instead of the copy built into the binary (for editing
    /// the pages without rebuilding).
    #[arg(long, env = "DANMAKU_WEB_DIR")]
    pub web_dir: Option<PathBuf>,

    /// Comments each client (by IP address) may post per second, sustained.
    #[arg(long, env = "DANMAKU_RATE_PER_SEC", default_value = "5")]
    pub rate_per_sec: NonZeroU32,

    /// Comments a client may post in a burst before the per-second rate applies.
    #[arg(long, env = "DANMAKU_RATE_BURST", default_value = "10")]
    pub rate_burst: NonZeroU32,

    /// Worker threads serving requests; defaults to the number of CPU cores.
    #[arg(long, env = "DANMAKU_WORKERS")]
    pub workers: Option<NonZeroUsize>,

    /// On SIGTERM, how long to let open requests finish before closing them, in seconds.
    #[arg(long, env = "DANMAKU_SHUTDOWN_TIMEOUT_SECS", default_value = "10")]
    pub shutdown_timeout_secs: u64,
}

impl ServerArgs {
    /// The address to bind.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }

    /// The grace period on shutdown.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }
}

/// Settings of the WebSocket services.
#[derive(Debug, Clone, clap::Args)]
pub struct WsArgs {
    /// Seconds between the server's pings to each connection.
    #[arg(long, env = "DANMAKU_HEARTBEAT_SECS", default_value = "5")]
    pub heartbeat_secs: NonZeroU32,

    /// Seconds of silence after which a connection is dropped. Must exceed the heartbeat.
    #[arg(long, env = "DANMAKU_CLIENT_TIMEOUT_SECS", default_value = "15")]
    pub client_timeout_secs: NonZeroU32,

    /// Origins (scheme://host:port, comma-separated) whose pages may open WebSockets, besides
    /// the service's own origin. Requests without an Origin header (non-browser clients) are
    /// always allowed.
    #[arg(long, env = "DANMAKU_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Frames that may wait for one slow connection; past that it is closed with 1008 so it
    /// cannot hold up the others or grow the server's memory.
    #[arg(long, env = "DANMAKU_MAX_QUEUED_FRAMES", default_value = "256")]
    pub max_queued_frames: NonZeroUsize,
}

impl WsArgs {
    /// Checks the settings against each other; the error names the settings involved.
    pub fn check(&self) -> Result<(), String> {
        if self.client_timeout_secs <= self.heartbeat_secs {
            return Err(format!(
                "DANMAKU_CLIENT_TIMEOUT_SECS ({}) must be greater than DANMAKU_HEARTBEAT_SECS ({})",
                self.client_timeout_secs, self.heartbeat_secs
            ));
        }
        for origin in &self.allowed_origins {
            let ok = (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.ends_with('/');
            if !ok {
                return Err(format!(
                    "DANMAKU_ALLOWED_ORIGINS: {origin:?} is not an origin like https://example.com:8080"
                ));
            }
        }
        Ok(())
    }

    /// The heartbeat interval.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs.get().into())
    }

    /// The client timeout.
    pub fn client_timeout(&self) -> Duration {
        Duration::from_secs(self.client_timeout_secs.get().into())
    }
}

/// Parses the process's flags and environment into `C` with this service's defaults; prints the
/// problem and exits on a bad value (clap's usual behaviour).
pub fn parse<C: Parser>(info: &ServiceInfo) -> C {
    let command = command::<C>(info);
    let parsed = command
        .clone()
        .try_get_matches()
        .and_then(|matches| C::from_arg_matches(&matches));
    parsed.unwrap_or_else(|e| {
        if let Some(variable) = variable_of_bad_value(&command, &e) {
            let _ = e.print();
            eprintln!("(this setting is the flag or the variable {variable})");
            std::process::exit(2);
        }
        e.exit()
    })
}

/// The environment variable behind the setting a value error is about, so the message names it
/// too: a bad `DANMAKU_PORT` is otherwise reported only as `--port`.
fn variable_of_bad_value(command: &clap::Command, error: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = arg.trim_start_matches("--").split(' ').next()?;
    command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|env| env.to_string_lossy().into_owned())
}

/// Parses `args` (the first is the program name) like [`parse`], returning errors instead of
/// exiting. Tests use it to build configs through the same path as `main`.
pub fn parse_from<C, I, T>(info: &ServiceInfo, args: I) -> Result<C, clap::Error>
where
    C: Parser,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = command::<C>(info).try_get_matches_from(args)?;
    C::from_arg_matches(&matches)
}

fn command<C: Parser>(info: &ServiceInfo) -> clap::Command {
    let defaults = info.defaults;
    C::command()
        .name(info.name)
        .bin_name(info.name)
        .about(info.about)
        .after_help(info.after_help)
        .mut_arg("port", |a| {
            a.default_value(defaults.port.to_string()).required(false)
        })
        .mut_arg("db", |a| a.default_value(defaults.db).required(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    struct TestConfig {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        ws: WsArgs,
    }

    const DEFAULTS: ServiceInfo = ServiceInfo {
        name: "svc",
        about: "a test service",
        after_help: "",
        defaults: ServiceDefaults {
            port: 8099,
            db: "data/test.db",
        },
    };

    #[test]
    fn defaults_come_from_the_service() {
        let c: TestConfig = parse_from(&DEFAULTS, ["svc"]).unwrap();
        assert_eq!(c.server.port, 8099);
        assert_eq!(c.server.db, PathBuf::from("data/test.db"));
        assert_eq!(c.server.rate_per_sec.get(), 5);
        assert_eq!(c.server.rate_burst.get(), 10);
        assert_eq!(c.ws.heartbeat(), Duration::from_secs(5));
        assert_eq!(c.ws.client_timeout(), Duration::from_secs(15));
        assert!(c.ws.check().is_ok());
    }

    #[test]
    fn flags_parse_and_origins_split_on_commas() {
        let c: TestConfig = parse_from(
            &DEFAULTS,
            [
                "svc",
                "--port",
                "0",
                "--bind",
                "0.0.0.0",
                "--allowed-origins",
                "http://a.test:1,https://b.test",
            ],
        )
        .unwrap();
        assert_eq!(c.server.port, 0);
        assert_eq!(c.ws.allowed_origins, ["http://a.test:1", "https://b.test"]);
    }

    #[test]
    fn a_value_error_finds_the_variable_behind_the_flag() {
        let command = command::<TestConfig>(&DEFAULTS);
        let err = command
            .clone()
            .try_get_matches_from(["svc", "--port", "x"])
            .unwrap_err();
        assert_eq!(
            variable_of_bad_value(&command, &err).as_deref(),
            Some("DANMAKU_PORT")
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_setting_named() {
        let err =
            parse_from::<TestConfig, _, _>(&DEFAULTS, ["svc", "--port", "eighty"]).unwrap_err();
        assert!(err.to_string().contains("--port"), "{err}");
        let err =
            parse_from::<TestConfig, _, _>(&DEFAULTS, ["svc", "--rate-per-sec", "0"]).unwrap_err();
        assert!(err.to_string().contains("--rate-per-sec"), "{err}");
        let c: TestConfig = parse_from(
            &DEFAULTS,
            [
                "svc",
                "--heartbeat-secs",
                "10",
                "--client-timeout-secs",
                "5",
            ],
        )
        .unwrap();
        assert!(
            c.ws.check()
                .unwrap_err()
                .contains("DANMAKU_CLIENT_TIMEOUT_SECS")
        );
        let c: TestConfig =
            parse_from(&DEFAULTS, ["svc", "--allowed-origins", "example.com"]).unwrap();
        assert!(
            c.ws.check()
                .unwrap_err()
                .contains("DANMAKU_ALLOWED_ORIGINS")
        );
    }
}
