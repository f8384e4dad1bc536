//! The settings of `ws-stream`: those of every WebSocket service
//! ([`service_kit::config::WsServiceConfig`]), with this binary's name, help and defaults.
//!
//! Read them with `service_kit::config::from_env(&INFO)` (in `main`) or
//! `service_kit::config::parse_from(&INFO, args)` (in tests), like every service.

use service_kit::config::{ServiceDefaults, ServiceInfo, WsServiceConfig};

/// The settings of `ws-stream`.
pub type Config = WsServiceConfig;

/// What `ws-stream --help` says, and its defaults.
pub const INFO: ServiceInfo = ServiceInfo {
    name: "ws-stream",
    about: "Live danmaku rooms over WebSocket: broadcast, chat history, viewer counts, and the rotating classroom check-in.",
    after_help: "Routes: GET /ws/live/{room}?name=&since=&host_token= (WebSocket), POST /api/rooms, GET /api/rooms/{room}/history, POST /api/rooms/{room}/checkins, GET /api/checkins/{id} and {id}.csv, POST /api/checkins/{id}/attend, GET /healthz, and the pages at / and /host.html.\nLogging: RUST_LOG=debug for per-request detail.",
    defaults: ServiceDefaults {
        port: 8083,
        db: "data/ws-stream.db",
    },
};
