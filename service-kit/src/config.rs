//! Settings shared by the binaries. Each is a flag and a `DANMAKU_*` variable; the flag wins.
//!
//! One way for every service: its settings type implements [`Settings`] (a `clap::Parser` that
//! flattens [`ServerArgs`], and [`WsArgs`] for the WebSocket services, as [`WsServiceConfig`]
//! does), its [`ServiceInfo`] gives its name, help and defaults, and
//!
//! - `main` calls [`from_env`], which exits with a message naming the setting on a bad value;
//! - tests call [`parse_from`] with an argument list, the same path returning a [`ConfigError`].
//!
//! Both parse, then run [`Settings::check`], so `--help` of every binary shows that binary's real
//! defaults and every service refuses inconsistent settings the same way.

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
    /// Default `--store`, a SQLite file relative to the working directory.
    pub store: &'static str,
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

/// The settings of a WebSocket service (`ws-video`, `ws-stream`): what every service takes, the
/// WebSocket limits, and the service's own settings `E` ([`ServiceArgs`]; [`NoArgs`] for none).
/// Each flag can also be set through its `DANMAKU_*` variable.
#[derive(Debug, Clone, Parser)]
#[command(version)]
pub struct WsServiceConfig<E: ServiceArgs = NoArgs> {
    /// Settings every service shares.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Settings of the WebSocket services.
    #[command(flatten)]
    pub ws: WsArgs,
    /// Settings of this service alone.
    #[command(flatten)]
    pub service: E,
}

impl<E: ServiceArgs> Settings for WsServiceConfig<E> {
    fn server(&self) -> &ServerArgs {
        &self.server
    }

    fn check(&self) -> Result<(), String> {
        self.ws.check()?;
        self.service.check()
    }
}

/// A service's own settings, flattened into its [`WsServiceConfig`], with the rules between them.
pub trait ServiceArgs: clap::Args + Clone + std::fmt::Debug {
    /// Checks these settings against each other; nothing to check unless a service says so.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// No settings of a service's own.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NoArgs {}

impl ServiceArgs for NoArgs {}

/// A binary's settings: flags and `DANMAKU_*` variables (the `clap::Parser`), and the rules
/// between them that clap cannot express.
pub trait Settings: Parser {
    /// The settings every service shares.
    fn server(&self) -> &ServerArgs;

    /// Checks the parsed settings against each other; the message names the `DANMAKU_*`
    /// variables involved. Nothing to check unless a service says otherwise.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Why a service's settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A flag or variable is unknown, missing or malformed; clap's message, and the variable
    /// behind the flag when it is a bad value. `--help` and `--version` also arrive here (clap's
    /// way of stopping the parse); [`ConfigError::exit`] prints them and exits with success.
    #[error("{}", invalid_message(.error, .variable.as_deref()))]
    Invalid {
        /// What clap says.
        error: clap::Error,
        /// The `DANMAKU_*` variable of the setting with the bad value, if that was the problem.
        variable: Option<String>,
    },
    /// The settings parse but disagree ([`Settings::check`]).
    #[error("error: {0}")]
    Inconsistent(String),
}

impl ConfigError {
    /// Prints the problem (or the help asked for) as command-line tools do and exits: status 2
    /// for bad settings, 0 for `--help` and `--version`.
    pub fn exit(&self) -> ! {
        match self {
            Self::Invalid {
                error,
                variable: Some(variable),
            } => {
                let _ = error.print();
                eprintln!("{}", variable_note(variable));
                std::process::exit(2);
            }
            Self::Invalid {
                error,
                variable: None,
            } => error.exit(),
            Self::Inconsistent(_) => {
                eprintln!("{self}");
                std::process::exit(2);
            }
        }
    }
}

fn invalid_message(error: &clap::Error, variable: Option<&str>) -> String {
    match variable {
        Some(variable) => format!("{}{}", error, variable_note(variable)),
        None => error.to_string(),
    }
}

/// The line added to a bad value's message: the flag alone does not say which variable to fix.
fn variable_note(variable: &str) -> String {
    format!("(this setting is the flag or the variable {variable})")
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

    /// Where comments, rooms and check-ins are kept: a SQLite file (a path, or `sqlite://PATH`),
    /// its folder created if missing, or a PostgreSQL database (`postgres://user:pw@host/db`)
    /// that several instances may share. `--db` is the old name of this flag.
    #[arg(long, env = "DANMAKU_STORE", alias = "db")]
    pub store: StoreLocation,

    /// The bus that joins several instances of this service into one (`redis://host:port/`):
    /// comments stored through any instance reach the viewers and long polls of every instance,
    /// viewer counts are totals, check-ins are shared. Without it the instance runs alone.
    #[arg(long, env = "DANMAKU_BUS")]
    pub bus: Option<crate::bus::BusUrl>,

    /// The Redis pub/sub channel the instances of this service share on the bus; the default
    /// is `danmaku.<service>`. Give each deployment sharing one Redis its own (pub/sub ignores
    /// the database number in the URL).
    #[arg(long, env = "DANMAKU_BUS_CHANNEL")]
    pub bus_channel: Option<String>,

    /// Host names (with or without :port, comma-separated) this service answers to besides
    /// localhost, 127.0.0.1, [::1] and the bind address (bound to 0.0.0.0 or ::, any IP
    /// address). A request whose Host header names another is refused (421), so a web page
    /// cannot reach the service by making its own name point here (DNS rebinding). `*` answers
    /// to any name: only behind a proxy that checks the host itself.
    #[arg(long, env = "DANMAKU_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<crate::hosts::AllowedHost>,

    /// Reverse proxies (IP addresses and CIDR networks, IPv4 or IPv6, comma-separated, such
    /// as 127.0.0.1,10.0.0.0/8,::1) whose X-Forwarded-For, or else Forwarded, header names the
    /// client. A request from one of them is its client's (the rightmost address of the header
    /// that is not a listed proxy) for budgets, connection caps, check-in guesses and the log;
    /// a request from any other address is its own, whatever it sends. None by default: list
    /// only the proxies' addresses, never the clients'.
    #[arg(long, env = "DANMAKU_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<crate::proxies::TrustedProxy>,

    /// Serve the pages from this folder instead of the copy built into the binary (for editing
    /// the pages without rebuilding).
    #[arg(long, env = "DANMAKU_WEB_DIR")]
    pub web_dir: Option<PathBuf>,

    /// Comments (on every route and connection) and check-in guesses each client (by IP
    /// address, IPv6 by /64) may send per second, sustained.
    #[arg(long, env = "DANMAKU_RATE_PER_SEC", default_value = "5")]
    pub rate_per_sec: NonZeroU32,

    /// Comments a client may post in a burst before the per-second rate applies.
    #[arg(long, env = "DANMAKU_RATE_BURST", default_value = "10")]
    pub rate_burst: NonZeroU32,

    /// Rows each client may read per second, sustained: a read (a poll, a window or range, a
    /// history, a join's chat box or recovery, a DPlayer list, an export page) needs one row
    /// left to start and costs the rows it returns.
    #[arg(long, env = "DANMAKU_READ_ROWS_PER_SEC", default_value = "5000")]
    pub read_rows_per_sec: NonZeroU32,

    /// Rows a client may read in a burst before the per-second rate applies; a read that
    /// returns more empties the budget, and the client's next read waits until the rest is
    /// earned back.
    #[arg(long, env = "DANMAKU_READ_ROWS_BURST", default_value = "20000")]
    pub read_rows_burst: NonZeroU32,

    /// Worker threads serving requests; defaults to one per CPU core but one (at least one),
    /// which leaves the store's writer and the hub a core.
    #[arg(long, env = "DANMAKU_WORKERS")]
    pub workers: Option<NonZeroUsize>,

    /// Whether a helper thread writes part of a lone comment's frame to a large room, beside the
    /// worker that holds the room's connections, while the room is not busy; defaults to on when
    /// the workers leave a core over (the default workers do, on two cores or more).
    #[arg(long, env = "DANMAKU_FANOUT_HELPER")]
    pub fanout_helper: Option<bool>,

    /// On SIGTERM, how long to let open requests finish before closing them, in seconds.
    #[arg(long, env = "DANMAKU_SHUTDOWN_TIMEOUT_SECS", default_value = "10")]
    pub shutdown_timeout_secs: u64,

    /// How long a database call may take, queueing included, in milliseconds; past it the
    /// request fails with 503 `unavailable` (or an `unavailable` error frame) instead of
    /// waiting, and `/healthz` answers 503.
    #[arg(long, env = "DANMAKU_DB_TIMEOUT_MS", default_value = "5000")]
    pub db_timeout_ms: NonZeroU32,

    /// The operator's token (at least 16 characters): sent as `Authorization: Bearer`, it
    /// moderates every channel of the service (delete comments, mute names, set banned words).
    /// Unset, only a live room's host moderates (their own room). Prefer the variable to the
    /// flag, which other users of the machine can see in the process list.
    #[arg(long, env = "DANMAKU_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<crate::moderation::AdminToken>,
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

    /// The limits shared by every instance on the bus, if there is one (keys under the bus
    /// channel, or `danmaku` by default: every service of a deployment shares a client's write
    /// budget).
    pub fn shared_limits(&self) -> Option<crate::shared_limits::SharedLimits> {
        let url = self.bus.as_ref()?;
        let prefix = self.bus_channel.as_deref().unwrap_or("danmaku");
        Some(crate::shared_limits::SharedLimits::new(url, prefix))
    }

    /// The operator's admin token, if one is set (an empty `DANMAKU_ADMIN_TOKEN` is none).
    pub fn admin(&self) -> Option<crate::moderation::AdminToken> {
        self.admin_token.clone().filter(|t| t.is_set())
    }

    /// The deadline of every database call.
    pub fn db_timeout(&self) -> Duration {
        Duration::from_millis(self.db_timeout_ms.get().into())
    }
}

/// Where a service keeps its data (`--store`): the embedded SQLite file, written as a path or as
/// `sqlite://PATH` (`sqlite:///abs/path` for an absolute one), or a PostgreSQL database,
/// `postgres://user:password@host:5432/db` (or `postgresql://`), which several instances can
/// share.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (it may hold a password: shown only redacted).
    Postgres(String),
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreLocation({self})")
    }
}

impl std::str::FromStr for StoreLocation {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if let Some(path) = value.strip_prefix("sqlite://") {
            return match path {
                "" => Err("sqlite:// needs a file path, as in sqlite://data/danmaku.db".into()),
                path => Ok(Self::Sqlite(PathBuf::from(path))),
            };
        }
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            return Ok(Self::Postgres(value.to_owned()));
        }
        if let Some((scheme, _)) = value.split_once("://") {
            return Err(format!(
                "{scheme}:// is not a store this build knows (a file path, sqlite://PATH or \
                 postgres://...)"
            ));
        }
        match value {
            "" => Err("the store is empty; give a file path or sqlite://PATH".into()),
            path => Ok(Self::Sqlite(PathBuf::from(path))),
        }
    }
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Self::Postgres(url) => f.write_str(&danmaku_store::redact_url(url)),
        }
    }
}

/// Settings of the WebSocket services.
#[derive(Debug, Clone, clap::Args)]
pub struct WsArgs {
    /// Seconds between the server's pings to each connection.
    #[arg(long, env = "DANMAKU_HEARTBEAT_SECS", default_value = "5")]
    pub heartbeat_secs: NonZeroU32,

    /// Seconds of silence after which a connection is dropped. Must exceed the heartbeat. Also
    /// how long what the server sent may stay unacknowledged (a client that stopped reading)
    /// before the kernel drops the connection (TCP_USER_TIMEOUT, Linux).
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

    /// WebSocket connections each client (by IP address, IPv6 by /64) may hold open at once;
    /// one more is refused with 429. A classroom behind one NAT address shares it.
    #[arg(
        long,
        env = "DANMAKU_MAX_CONNECTIONS_PER_CLIENT",
        default_value = "100"
    )]
    pub max_connections_per_client: NonZeroUsize,

    /// Malformed frames in a row (bad JSON, unknown type, binary, invalid values) after which a
    /// connection is closed with 1008. Each one also costs a token of the client's comment rate.
    #[arg(long, env = "DANMAKU_MAX_BAD_FRAMES", default_value = "20")]
    pub max_bad_frames: NonZeroU32,
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

/// Reads the process's flags and environment into `C` with this service's name, help and
/// defaults, and checks them; on a bad value prints the problem, naming the setting, and exits
/// (see [`ConfigError::exit`]).
pub fn from_env<C: Settings>(info: &ServiceInfo) -> C {
    parse_from(info, std::env::args_os()).unwrap_or_else(|e| e.exit())
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

/// Parses `args` (the first is the program name) and the environment like [`from_env`],
/// returning the problem instead of exiting. Tests use it to build settings through the same
/// path as `main`.
pub fn parse_from<C, I, T>(info: &ServiceInfo, args: I) -> Result<C, ConfigError>
where
    C: Settings,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let command = command::<C>(info);
    let config = command
        .clone()
        .try_get_matches_from(args)
        .and_then(|matches| C::from_arg_matches(&matches))
        .map_err(|error| ConfigError::Invalid {
            variable: variable_of_bad_value(&command, &error),
            error,
        })?;
    config.check().map_err(ConfigError::Inconsistent)?;
    Ok(config)
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
        .mut_arg("store", |a| a.default_value(defaults.store).required(false))
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

    // Unchecked, so the tests below can look at `WsArgs::check` by itself.
    impl Settings for TestConfig {
        fn server(&self) -> &ServerArgs {
            &self.server
        }
    }

    const DEFAULTS: ServiceInfo = ServiceInfo {
        name: "svc",
        about: "a test service",
        after_help: "",
        defaults: ServiceDefaults {
            port: 8099,
            store: "data/test.db",
        },
    };

    #[test]
    fn a_store_is_a_path_or_a_sqlite_url() {
        let sqlite = |p: &str| Ok(StoreLocation::Sqlite(PathBuf::from(p)));
        assert_eq!("data/x.db".parse(), sqlite("data/x.db"));
        assert_eq!("sqlite://data/x.db".parse(), sqlite("data/x.db"));
        assert_eq!("sqlite:///var/lib/x.db".parse(), sqlite("/var/lib/x.db"));
        assert!("sqlite://".parse::<StoreLocation>().is_err());
        assert!("".parse::<StoreLocation>().is_err());
        let pg: StoreLocation = "postgres://ann:secret@db:5432/danmaku".parse().unwrap();
        assert_eq!(
            pg,
            StoreLocation::Postgres("postgres://ann:secret@db:5432/danmaku".into())
        );
        assert!(!pg.to_string().contains("secret"), "{pg}");
        assert!(!format!("{pg:?}").contains("secret"), "{pg:?}");
        let err = "mysql://db/x".parse::<StoreLocation>().unwrap_err();
        assert!(err.contains("mysql://"), "{err}");
        let c: TestConfig = parse_from(&DEFAULTS, ["svc", "--db", "old/flag.db"]).unwrap();
        assert_eq!(c.server.store, StoreLocation::Sqlite("old/flag.db".into()));
    }

    #[test]
    fn defaults_come_from_the_service() {
        let c: TestConfig = parse_from(&DEFAULTS, ["svc"]).unwrap();
        assert_eq!(c.server.port, 8099);
        assert_eq!(
            c.server.store,
            StoreLocation::Sqlite(PathBuf::from("data/test.db"))
        );
        assert_eq!(c.server.rate_per_sec.get(), 5);
        assert_eq!(c.server.rate_burst.get(), 10);
        assert_eq!(c.server.db_timeout(), Duration::from_secs(5));
        assert_eq!(c.ws.heartbeat(), Duration::from_secs(5));
        assert_eq!(c.ws.client_timeout(), Duration::from_secs(15));
        assert_eq!(c.ws.max_connections_per_client.get(), 100);
        assert_eq!(c.ws.max_bad_frames.get(), 20);
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
        let err =
            parse_from::<TestConfig, _, _>(&DEFAULTS, ["svc", "--db-timeout-ms", "0"]).unwrap_err();
        assert!(err.to_string().contains("--db-timeout-ms"), "{err}");
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

    #[test]
    fn every_service_checks_its_settings_in_the_same_path() {
        let err = parse_from::<WsServiceConfig, _, _>(
            &DEFAULTS,
            [
                "svc",
                "--heartbeat-secs",
                "10",
                "--client-timeout-secs",
                "10",
            ],
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::Inconsistent(_)), "{err:?}");
        assert!(
            err.to_string().contains("DANMAKU_CLIENT_TIMEOUT_SECS"),
            "{err}"
        );
        let ok: WsServiceConfig = parse_from(&DEFAULTS, ["svc"]).unwrap();
        assert_eq!(ok.server.port, 8099);
    }

    #[test]
    fn a_bad_value_names_the_flag_and_its_variable() {
        let err = parse_from::<WsServiceConfig, _, _>(&DEFAULTS, ["svc", "--port", "eighty"])
            .unwrap_err();
        let ConfigError::Invalid { variable, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(variable.as_deref(), Some("DANMAKU_PORT"));
        let text = err.to_string();
        assert!(text.contains("--port"), "{text}");
        assert!(
            text.contains("(this setting is the flag or the variable DANMAKU_PORT)"),
            "{text}"
        );
        let err =
            parse_from::<WsServiceConfig, _, _>(&DEFAULTS, ["svc", "--no-such-flag"]).unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { variable: None, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn trusted_proxies_are_none_by_default_and_a_bad_one_names_the_setting() {
        let c: TestConfig = parse_from(&DEFAULTS, ["svc"]).unwrap();
        assert!(c.server.trusted_proxies.is_empty());
        let c: TestConfig = parse_from(
            &DEFAULTS,
            ["svc", "--trusted-proxies", "127.0.0.1, 10.0.0.0/8,::1"],
        )
        .unwrap();
        let listed = crate::proxies::TrustedProxies::from_args(&c.server);
        assert_eq!(listed.to_string(), "127.0.0.1, 10.0.0.0/8, ::1");
        let err = parse_from::<TestConfig, _, _>(
            &DEFAULTS,
            ["svc", "--trusted-proxies", "127.0.0.1,proxy.example"],
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("--trusted-proxies"), "{text}");
        assert!(text.contains("DANMAKU_TRUSTED_PROXIES"), "{text}");
        assert!(
            text.contains("\"proxy.example\" is not an IP address"),
            "{text}"
        );
    }

    #[test]
    fn help_shows_the_services_name_and_defaults() {
        let err = parse_from::<WsServiceConfig, _, _>(&DEFAULTS, ["svc", "--help"]).unwrap_err();
        let ConfigError::Invalid { error, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(error.kind(), clap::error::ErrorKind::DisplayHelp);
        let help = err.to_string();
        assert!(help.contains("a test service"), "{help}");
        assert!(help.contains("Usage: svc"), "{help}");
        assert!(help.contains("[default: 8099]"), "{help}");
        assert!(help.contains("[default: data/test.db]"), "{help}");
        assert!(help.contains("DANMAKU_HEARTBEAT_SECS"), "{help}");
    }
}
