//! The actix-web pieces every danmaku service shares, so the three binaries stay thin and behave
//! alike at their edges.
//!
//! - [`body`]: the JSON body extractor, whose errors name the field at fault.
//! - [`bus`]: the Redis bus that joins several instances of a service into one.
//! - [`config`]: the settings every binary takes (flags and `DANMAKU_*` variables) and the one
//!   way a service reads them with its own defaults ([`config::from_env`], [`config::parse_from`]).
//! - [`error`]: [`HttpError`], the JSON error response, and the extractor configurations that turn
//!   bad bodies, queries and paths into it.
//! - [`assets`]: the pages of `web/`, embedded in the binary or served from a folder.
//! - [`fanout`]: the one path by which committed comments reach the clients waiting for them.
//! - [`headers`]: security headers (Content-Security-Policy and friends) for every response.
//! - [`hosts`]: the `Host` names a service answers to (against DNS rebinding).
//! - [`moderation`]: who moderates a channel (a live room's host, the operator's admin token),
//!   the mute and banned-word check before a comment is stored, and the moderator's routes.
//! - [`proxies`]: who the client is behind a trusted reverse proxy (`--trusted-proxies`).
//! - [`rate`]: per-client rate limits.
//! - [`server`]: the HTTP server around a service's routes.
//! - [`shared_limits`]: limits kept in Redis, so that instances on one bus enforce them as one.
//! - [`shutdown`]: waiting for SIGTERM or Ctrl-C.
//! - `testing` (feature `testing`, for dev-dependencies only): the real service on an ephemeral
//!   port and clients with timeouts, for integration tests.
//! - [`ws`]: the WebSocket session actor, rooms and the Origin check both WebSocket services use.

pub mod assets;
pub mod body;
pub mod bus;
pub mod config;
pub mod error;
pub mod fanout;
pub mod headers;
pub mod hosts;
pub mod moderation;
pub mod proxies;
pub mod rate;
pub mod server;
pub mod shared_limits;
pub mod shutdown;
#[cfg(feature = "testing")]
pub mod testing;
mod upgrade;
pub mod ws;

pub use config::{ConfigError, ServerArgs, Settings, WsArgs};
pub use error::HttpError;
pub use rate::{ClientBudget, ClientRateLimiter, ReadTicket};

/// Starts logging through `env_logger`: `info` unless `RUST_LOG` says otherwise.
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
}
