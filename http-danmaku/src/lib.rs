//! `http-danmaku`: danmaku over plain HTTP. Clients post comments and fetch new ones with a
//! cursor, by short polling or by long polling (`wait`), and the assignment's original
//! `GET /polling` is kept so its losses can be measured against the cursor API.
//!
//! - [`config`]: the settings ([`Config`]).
//! - [`routes`]: the HTTP routes.
//! - [`feed`]: long-poll wake-ups ([`feed::RoomFeeds`]).
//! - [`state`]: what the handlers share ([`state::AppState`]).
//!
//! [`Application`] builds the server from a [`Config`]; `main` and the tests both use it.

pub mod config;
pub mod feed;
pub mod routes;
pub mod state;

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::web;
use service_kit::ClientRateLimiter;
use service_kit::server::RunningServer;
use shared_model::{SqliteStore, StoreError};

pub use config::Config;

use crate::feed::RoomFeeds;
use crate::state::AppState;

/// The page this service serves at `/`.
pub const INDEX_PAGE: &str = "http.html";

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address from the settings.
        addr: std::net::SocketAddr,
        /// Why not.
        source: std::io::Error,
    },
}

/// A bound, ready-to-run server.
pub struct Application {
    server: RunningServer,
    feeds: RoomFeeds,
}

impl Application {
    /// Opens the database, binds the address from `config`, and builds the server.
    pub fn build(config: Config) -> Result<Self, StartError> {
        let addr = config.server.socket_addr();
        let listener =
            TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
        Self::build_with_listener(config, listener)
    }

    /// Builds the server on an already-bound listener (tests bind port 0 themselves).
    pub fn build_with_listener(config: Config, listener: TcpListener) -> Result<Self, StartError> {
        let store = SqliteStore::open(&config.server.db)?;
        log::info!("database: {}", config.server.db.display());
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.server.socket_addr(),
            source,
        })?;
        let feeds = RoomFeeds::default();
        let state = web::Data::new(AppState {
            store: Arc::new(store),
            feeds: feeds.clone(),
            limiter: ClientRateLimiter::new(config.server.rate_per_sec, config.server.rate_burst),
        });
        let server = service_kit::server::serve(listener, &config.server, INDEX_PAGE, move |cfg| {
            cfg.app_data(state.clone());
            routes::configure(cfg);
        })
        .map_err(|source| StartError::Bind { addr, source })?;
        Ok(Self {
            server: RunningServer::new("http-danmaku", server, addr),
            feeds,
        })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.server.addr().port()
    }

    /// A handle to stop the server from elsewhere.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Runs until SIGTERM or SIGINT (or a stop through [`Application::handle`]). On a signal it
    /// stops accepting, answers every waiting long poll at once, and lets open requests finish
    /// within the shutdown timeout. Acknowledged comments are already on disk.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let feeds = self.feeds.clone();
        let result = self.server.run_until_stopped(move || feeds.close()).await;
        log::info!("http-danmaku stopped");
        result
    }

    /// Runs without listening for signals; stop it through [`Application::handle`].
    pub async fn run(self) -> std::io::Result<()> {
        let result = self.server.run().await;
        self.feeds.close();
        result
    }
}
