//! The settings of `ws-video`.

use clap::Parser;
use service_kit::config::{self, ServiceDefaults};
use service_kit::{ServerArgs, WsArgs};

/// Defaults where this binary differs from the others.
pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    port: 8082,
    db: "data/ws-video.db",
};

/// Settings of `ws-video`. Each flag can also be set through its `DANMAKU_*` variable; the flag
/// wins.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ws-video",
    version,
    about = "Comments pinned to a recorded video's timeline over WebSocket (skeleton: health and page; the WebSocket, DPlayer and Bilibili routes are their own issue).",
    after_help = "Routes: GET /ws/videos/{video} (WebSocket), GET and POST /api/videos/{video}/danmaku, GET and POST /api/videos/{video}/danmaku.xml (Bilibili), GET and POST /dplayer/v3/, GET /healthz, and the page at /.\nLogging: RUST_LOG=debug for per-request detail."
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
