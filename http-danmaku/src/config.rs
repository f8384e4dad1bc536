//! The settings of `http-danmaku`.
//!
//! Read them with `service_kit::config::from_env(&INFO)` (in `main`) or
//! `service_kit::config::parse_from(&INFO, args)` (in tests), like every service.

use clap::Parser;
use service_kit::ServerArgs;
use service_kit::config::{ServiceDefaults, ServiceInfo, Settings};

/// What `http-danmaku --help` says, and its defaults.
pub const INFO: ServiceInfo = ServiceInfo {
    name: "http-danmaku",
    about: "Danmaku over plain HTTP: post comments, fetch them by short or long polling.",
    after_help: "Routes: POST /api/rooms/{room}/danmaku, \
                 GET /api/rooms/{room}/danmaku?after=&limit=&wait=, GET /polling, GET /api/stats, \
                 GET /healthz, and the page at /.\nLogging: RUST_LOG=debug for per-request detail.",
    defaults: ServiceDefaults {
        port: 8081,
        store: "data/http-danmaku.db",
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

/// Nothing to check beyond what clap checks: every [`ServerArgs`] value stands alone.
impl Settings for Config {
    fn server(&self) -> &ServerArgs {
        &self.server
    }
}
