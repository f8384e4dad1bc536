//! The settings of `ws-video`: those of every WebSocket service
//! ([`service_kit::config::WsServiceConfig`]), with this binary's name, help and defaults.
//!
//! Read them with `service_kit::config::from_env(&INFO)` (in `main`) or
//! `service_kit::config::parse_from(&INFO, args)` (in tests), like every service.

use service_kit::config::{ServiceDefaults, ServiceInfo, WsServiceConfig};

/// The settings of `ws-video`.
pub type Config = WsServiceConfig;

/// What `ws-video --help` says, and its defaults.
pub const INFO: ServiceInfo = ServiceInfo {
    name: "ws-video",
    about: "Danmaku on a video's timeline over WebSocket, the DPlayer v3 API, and Bilibili XML import and export.",
    after_help: "Routes: GET /ws/videos/{video} (WebSocket), GET and POST /api/videos/{video}/danmaku, GET and POST /api/videos/{video}/danmaku.xml (Bilibili), GET and POST /dplayer/v3/, GET /healthz, and the page at /.\nLogging: RUST_LOG=debug for per-request detail.",
    defaults: ServiceDefaults {
        port: 8082,
        db: "data/ws-video.db",
    },
};
