//! The settings of `http-danmaku`.

use clap::Parser;
use service_kit::ServerArgs;
use service_kit::config::{self, ServiceDefaults, ServiceInfo};

/// What `http-danmaku --help` says, and its defaults.
pub const INFO: ServiceInfo = ServiceInfo {
    name: "http-danmaku",
    about: "Danmaku over plain HTTP: post comments, fetch them by short or long polling.",
    after_help: "Routes: POST /api/rooms/{room}/danmaku, \
                 GET /api/rooms/{room}/danmaku?after=&limit=&wait=, GET /polling, \
                 GET /healthz, and the page at /.\nLogging: RUST_LOG=debug for per-request detail.",
    defaults: ServiceDefaults {
        port: 8081,
        db: "data/http-danmaku.db",
    },
};

/// Settings of the HTTP danmaku service. Each flag can also be set through its `DANMAKU_*`
/// variable; the flag wins.
#[derive(Debug, Clone, Parser)]
#[command(version)]
pub struct Config {
    /// Settings every service shares.
    #[command(flatten)]
    pub server: ServerArgs,
}

impl Config {
    /// Reads the process's flags and environment; exits with a message on a bad value.
    pub fn from_env() -> Self {
        config::parse(&INFO)
    }

    /// Parses `args` (program name first) the way [`Config::from_env`] does.
    pub fn parse_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        config::parse_from(&INFO, args)
    }
}
