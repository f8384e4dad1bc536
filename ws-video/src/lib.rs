//! `ws-video`: comments pinned to a recorded video's timeline. Viewers of a video share one
//! WebSocket channel: a comment sent at 12.5 s is stored, acknowledged, and pushed to everyone
//! watching, and a page loads the comments ahead of its playhead in windows. The same comments
//! are open over HTTP, to DPlayer (its v3 API) and as Bilibili XML archives.
//!
//! - [`config`]: the settings ([`Config`]).
//! - [`routes`]: the WebSocket upgrade and its HTTP twin (post a comment, read a window), and
//!   a video's density (comments per time bucket, for the page's bar).
//! - [`archive`]: the DPlayer v3 API and Bilibili XML import and export.
//! - [`budget`]: what reads and imports cost a client, and the bound on concurrent imports.
//! - [`cache`]: brief caches of the heaviest reads (DPlayer lists, export first pages,
//!   densities).
//! - [`session`]: what a connection's frames mean ([`session::VideoSession`]).
//! - [`timeline`]: the rules of a video's timeline, shared by all of the above.
//! - [`hub`]: the fan-out to each video's viewers (the shared rooms hub, nothing of its own).
//! - [`state`]: what the handlers share.
//!
//! [`build_with_listener`] makes the server from a [`Config`] on a bound listener; `main` (through
//! `service_kit::server::main`) and the tests both use it.

pub mod archive;
pub mod budget;
pub mod cache;
pub mod config;
pub mod hub;
pub mod routes;
pub mod session;
pub mod state;
pub mod timeline;

use std::net::TcpListener;
use std::sync::Arc;

use actix::Actor;
use actix_web::web;
use danmaku_store::{Backend, Committed, Store};
use service_kit::fanout::Fanout;
use service_kit::moderation::{Moderation, ModerationRoutes};
use service_kit::server::{RunningServer, ServiceError};
use service_kit::ws::WsSettings;
use service_kit::ws::hub::Shutdown;

use crate::state::VideoState;
use crate::timeline::Timeline;

pub use config::Config;

/// The page this service serves at `/`.
pub const INDEX_PAGE: &str = "video.html";

/// Builds the server on an already-bound listener (tests bind port 0 themselves).
pub fn build_with_listener(
    config: Config,
    listener: TcpListener,
    backend: Arc<dyn Backend>,
) -> Result<RunningServer, ServiceError> {
    let store: Arc<dyn Store> = backend.clone();
    let addr = listener.local_addr()?;
    let fanout = Fanout::start(store.clone(), &config.server, "ws-video");
    let hub = hub::new(fanout.clone()).start();
    fanout.connect(hub.clone());
    fanout.connect_peers(Arc::new(hub.clone()));
    let moderation = Moderation::new(backend, config.server.admin());
    let cache = cache::ReadCache::new(config.service.read_cache_ttl());
    {
        // A deleted comment leaves the brief caches at once (on this instance; the others'
        // expire within their time to live).
        let cache = cache.clone();
        store.on_append(Box::new(move |what| {
            if let Committed::Deleted { .. } = what {
                cache.clear();
            }
        }));
    }
    let moderator_routes = web::Data::new(ModerationRoutes {
        moderation: moderation.clone(),
        authorize: Box::new(moderation.clone()),
    });
    let state = web::Data::new(VideoState {
        timeline: Timeline::new(store, moderation.clone()),
        moderation,
        hub: hub.clone(),
        ws: WsSettings::from_args(&config.server, &config.ws),
        imports: budget::Imports::from_args(&config.service),
        cache,
    });
    let health =
        service_kit::server::HealthCheck::new(state.timeline.store().clone(), Some(fanout));
    let server = service_kit::server::serve_ws(
        listener,
        &config.server,
        &config.ws,
        INDEX_PAGE,
        move |cfg| {
            cfg.app_data(state.clone())
                .app_data(health.clone())
                .app_data(moderator_routes.clone())
                .configure(routes::configure)
                .configure(archive::configure);
        },
    )?;
    Ok(RunningServer::new("ws-video", server, addr).on_shutdown(move || hub.do_send(Shutdown)))
}
