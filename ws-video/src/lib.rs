//! `ws-video`: Comments pinned to a recorded video's timeline over WebSocket (skeleton: health and page; the WebSocket, DPlayer and Bilibili routes are their own issue).
//!
//! - [`config`]: the settings ([`Config`]).
//!
//! [`Application`] builds the server from a [`Config`]; `main` and the tests both use it.

pub mod config;

use std::net::TcpListener;

use actix_web::dev::ServerHandle;
use actix_web::web;
use service_kit::server::RunningServer;
use shared_model::{SqliteStore, StoreError};

pub use config::Config;

/// The page this service serves at `/`.
pub const INDEX_PAGE: &str = "video.html";

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
        log::info!("database: {}", store.path().display());
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.server.socket_addr(),
            source,
        })?;
        let server = service_kit::server::serve(listener, &config.server, INDEX_PAGE, |cfg| {
            cfg.route("/healthz", web::get().to(service_kit::server::health));
        })
        .map_err(|source| StartError::Bind { addr, source })?;
        Ok(Self {
            server: RunningServer::new("ws-video", server, addr),
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

    /// Runs until SIGTERM or SIGINT, then stops gracefully.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.run_until_stopped(|| {}).await;
        log::info!("ws-video stopped");
        result
    }

    /// Runs without listening for signals; stop it through [`Application::handle`].
    pub async fn run(self) -> std::io::Result<()> {
        self.server.run().await
    }
}
