//! `ws-video`: Comments pinned to a recorded video's timeline over WebSocket (skeleton: health and page; the WebSocket, DPlayer and Bilibili routes are their own issue).
//!
//! - [`config`]: the settings ([`Config`]).
//!
//! [`build`] makes the server from a [`Config`]; `main` and the tests both use it.

pub mod archive;
pub mod config;
pub mod hub;
pub mod routes;
pub mod session;
pub mod state;

use std::net::TcpListener;
use std::sync::Arc;

use actix::Actor;
use actix_web::web;
use service_kit::ClientRateLimiter;
use service_kit::server::{RunningServer, ServiceError};
use service_kit::ws::WsSettings;
use shared_model::{SqliteStore, Store};

use crate::hub::{Publish, Shutdown, VideoHub};
use crate::state::VideoState;

pub use config::Config;

/// The page this service serves at `/`.
pub const INDEX_PAGE: &str = "video.html";

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
    let hub = VideoHub::default().start();
    let publisher = hub.clone();
    store.on_append(Box::new(move |item| {
        publisher.do_send(Publish { item: item.clone() })
    }));
    let state = web::Data::new(VideoState {
        store: Arc::new(store),
        limiter: ClientRateLimiter::new(config.server.rate_per_sec, config.server.rate_burst),
        hub: hub.clone(),
        ws: WsSettings::from_args(&config.server, &config.ws),
    });
    let server = service_kit::server::serve(listener, &config.server, INDEX_PAGE, move |cfg| {
        cfg.app_data(state.clone())
            .configure(routes::configure)
            .configure(archive::configure);
    })?;
    Ok(RunningServer::new("ws-video", server, addr).on_shutdown(move || hub.do_send(Shutdown)))
}
