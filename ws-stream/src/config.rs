//! The settings of `ws-stream`.

use clap::Parser;
use service_kit::config::{self, ServiceDefaults};
use service_kit::{ServerArgs, WsArgs};

/// Defaults where this binary differs from the others.
pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    port: 8083,
    db: "data/ws-stream.db",
};

/// Settings of `ws-stream`. Each flag can also be set through its `DANMAKU_*` variable; the flag
/// wins.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ws-stream",
    version,
    about = "A live room over WebSocket: broadcast comments, chat history, viewer counts and the rotating check-in (skeleton: health and page; the rooms are their own issue).",
    after_help = "Routes: GET /ws/live/{room}?name=&since=&host_token= (WebSocket), POST /api/rooms, GET /api/rooms/{room}/history, POST /api/rooms/{room}/checkins, GET /api/checkins/{id} and {id}.csv, POST /api/checkins/{id}/attend, GET /healthz, and the pages at / and /host.html.\nLogging: RUST_LOG=debug for per-request detail."
)]
pub struct Config {
    /// Settings every service shares.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Settings of the WebSocket services.
    #[command(flatten)]
    pub ws: WsArgs,
}

impl Config {
    /// Reads the process's flags and environment; exits with a message on a bad value.
    pub fn from_env() -> Self {
        let config: Self = config::parse(DEFAULTS);
        if let Err(problem) = config.ws.check() {
            eprintln!("error: {problem}");
            std::process::exit(2);
        }
        config
    }

    /// Parses `args` (program name first) the way [`Config::from_env`] does, returning the
    /// problem instead of exiting.
    pub fn parse_from<I, T>(args: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let config: Self = config::parse_from(DEFAULTS, args).map_err(|e| e.to_string())?;
        config.ws.check()?;
        Ok(config)
    }
}
