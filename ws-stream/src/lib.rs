//! `ws-stream`: A live room over WebSocket: broadcast comments, chat history, viewer counts and the rotating check-in (skeleton: health and page; the rooms are their own issue).
//!
//! - [`config`]: the settings ([`Config`]).
//!
//! [`build`] makes the server from a [`Config`]; `main` and the tests both use it.

pub mod config;

use std::net::TcpListener;

use actix_web::web;
use service_kit::server::{RunningServer, ServiceError};
use shared_model::SqliteStore;

pub use config::Config;

/// The page this service serves at `/`.
pub const INDEX_PAGE: &str = "live.html";

/// Opens the database, binds the address from `config`, and builds the server.
pub fn build(config: Config) -> Result<RunningServer, ServiceError> {
    let listener = service_kit::server::bind(config.server.socket_addr())?;
    build_with_listener(config, listener)
}

/// Builds the server on an already-bound listener (tests bind port 0 themselves).
pub fn build_with_listener(
    config: Config,
    listener: TcpListener,
) -> Result<RunningServer, ServiceError> {
    let store = SqliteStore::open(&config.server.db)?;
    log::info!("database: {}", store.path().display());
    let addr = listener.local_addr()?;
    let server = service_kit::server::serve(listener, &config.server, INDEX_PAGE, |cfg| {
        cfg.route("/healthz", web::get().to(service_kit::server::health));
    })?;
    Ok(RunningServer::new("ws-stream", server, addr))
}
