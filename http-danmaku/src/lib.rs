//! `http-danmaku`: danmaku over plain HTTP. Clients post comments and fetch new ones with a
//! cursor, by short polling or by long polling (`wait`), and the assignment's original
//! `GET /polling` is kept so its losses can be measured against the cursor API.
//!
//! - [`config`]: the settings ([`Config`]).
//! - [`routes`]: the HTTP routes.
//! - [`feed`]: long-poll wake-ups ([`feed::RoomFeeds`]), fed by the store's commits.
//! - [`state`]: what the handlers share ([`state::AppState`]).
//!
//! [`build_with_listener`] makes the server from a [`Config`] on a bound listener and an opened
//! store; `main` (through `service_kit::server::main`, which opens the store the settings name)
//! and the tests both use it (some tests open the store themselves, to inject faults into it).

pub mod config;
pub mod feed;
pub mod routes;
pub mod state;

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::web;
use danmaku_store::{Backend, Store};
use service_kit::ClientBudget;
use service_kit::fanout::Fanout;
use service_kit::moderation::{Moderation, ModerationRoutes};
use service_kit::server::{RunningServer, ServiceError};

pub use config::Config;

use crate::feed::RoomFeeds;
use crate::state::AppState;

/// The page this service serves at `/`.
pub const INDEX_PAGE: &str = "http.html";

/// Builds the server on an already-bound listener (tests bind port 0 themselves).
///
/// On SIGTERM it stops accepting, answers every waiting long poll at once, and lets open
/// requests finish within the shutdown timeout. Acknowledged comments are already on disk.
pub fn build_with_listener(
    config: Config,
    listener: TcpListener,
    backend: Arc<dyn Backend>,
) -> Result<RunningServer, ServiceError> {
    let store: Arc<dyn Store> = backend.clone();
    let moderation = Moderation::new(backend, config.server.admin());
    let moderator_routes = web::Data::new(ModerationRoutes {
        moderation: moderation.clone(),
        authorize: Box::new(moderation.clone()),
    });
    let addr = listener.local_addr()?;
    let fanout = Fanout::start(store.clone(), &config.server, "http-danmaku");
    let feeds = RoomFeeds::default();
    fanout.connect_wake(Arc::new(feeds.clone()));
    let health = service_kit::server::HealthCheck::new(store.clone(), Some(fanout));
    let state = web::Data::new(AppState {
        store,
        moderation,
        feeds: feeds.clone(),
        budget: ClientBudget::from_args(&config.server),
    });
    let server = service_kit::server::serve(listener, &config.server, INDEX_PAGE, move |cfg| {
        cfg.app_data(state.clone())
            .app_data(health.clone())
            .app_data(moderator_routes.clone());
        routes::configure(cfg);
    })?;
    Ok(RunningServer::new("http-danmaku", server, addr).on_shutdown(move || feeds.close()))
}
