//! `ws-stream`: live rooms over WebSocket. Every comment is broadcast to the whole room at once,
//! a newcomer's chat box shows the last 50, a reconnecting viewer gets exactly what it missed, the
//! viewer count stays current, and a host can run a classroom check-in whose code rotates every
//! few seconds on the host's screen only.
//!
//! - [`config`]: the settings ([`Config`]).
//! - [`routes`]: the WebSocket upgrade and the HTTP routes (rooms, history, check-ins); they
//!   parse and answer.
//! - [`session`]: what a connection's frames mean ([`session::LiveSession`]).
//! - [`rooms`]: the rules: hosts, opening a check-in, checking in, history, sending
//!   ([`rooms::LiveRooms`]).
//! - [`hub`]: the shared rooms hub plus what only live rooms have: hosts, check-in codes and the
//!   limits on guessing them ([`hub::LiveHub`]).
//! - [`peers`]: what the instances tell each other of check-ins ([`peers::LiveEvent`]).
//! - [`recent`]: each room's newest comments in memory, kept current by the fan-out
//!   ([`recent::LiveSink`]).
//! - [`codes`]: check-in codes (TOTP-style, from each check-in's stored secret, the same on every
//!   instance) and host tokens, pure.
//! - [`state`]: what the handlers share.
//!
//! [`build_with_listener`] makes the server from a [`Config`] on a bound listener; `main` (through
//! `service_kit::server::main`) and the tests both use it.

pub mod codes;
pub mod config;
pub mod hub;
pub mod peers;
pub mod recent;
pub mod recording;
pub mod rooms;
pub mod routes;
pub mod session;
pub mod state;

use std::net::TcpListener;
use std::sync::Arc;

use actix::Actor;
use actix_web::web;
use danmaku_store::{Backend, RoomStore, Store};
use service_kit::fanout::Fanout;
use service_kit::moderation::{Moderation, ModerationRoutes};
use service_kit::server::{RunningServer, ServiceError};
use service_kit::ws::WsSettings;
use service_kit::ws::hub::Shutdown;

pub use config::Config;

use crate::hub::StartCheckin;
use crate::recent::{LiveSink, RecentComments};
use crate::rooms::{HISTORY_ITEMS, HostOrAdmin, LiveRooms};
use crate::state::LiveState;

/// The page this service serves at `/`.
pub const INDEX_PAGE: &str = "live.html";

/// Builds the server on an already-bound listener (tests bind port 0 themselves). Check-ins
/// left open by a previous run resume, with the same codes (they derive from each check-in's
/// stored secret and the time), until they close.
pub fn build_with_listener(
    config: Config,
    listener: TcpListener,
    store: Arc<dyn Backend>,
) -> Result<RunningServer, ServiceError> {
    let addr = listener.local_addr()?;
    let rooms: Arc<dyn RoomStore> = store.clone();
    let fanout = Fanout::start(store.clone() as Arc<dyn Store>, &config.server, "ws-stream");
    let hub = hub::new(
        rooms.clone(),
        config.service.checkin.limits(),
        fanout.clone(),
    )
    .start();
    let recent = RecentComments::new(
        HISTORY_ITEMS,
        config.service.history_cache_rooms.get(),
        Some(fanout.clone()),
    );
    fanout.connect(LiveSink {
        recent: recent.clone(),
        hub: hub.clone(),
    });
    fanout.connect_peers(Arc::new(peers::LivePeers {
        rooms: rooms.clone(),
        hub: hub.clone(),
    }));
    {
        let (rooms, hub) = (rooms.clone(), hub.clone());
        actix_rt::spawn(async move {
            match rooms.unclosed_checkins().await {
                Ok(open) => {
                    for record in open {
                        hub.do_send(StartCheckin { record });
                    }
                }
                Err(e) => log::error!("cannot resume open check-ins: {e}"),
            }
        });
    }
    let ws = WsSettings::from_args(&config.server, &config.ws);
    let moderation = Moderation::new(store.clone(), config.server.admin());
    let state = web::Data::new(LiveState {
        live: Arc::new(LiveRooms {
            moderation: moderation.clone(),
            comments: store as Arc<dyn Store>,
            recent,
            rooms,
            hub: hub.clone(),
            budget: ws.budget.clone(),
            fanout: fanout.clone(),
            guess_limits: config.service.checkin.limits(),
            shared_limits: config.server.shared_limits(),
        }),
        ws,
        recorder: recording::Recorder::new(config.service.video_url.clone(), config.server.admin()),
    });
    let moderator_routes = web::Data::new(ModerationRoutes {
        moderation,
        authorize: Box::new(HostOrAdmin(state.live.clone())),
    });
    let health = service_kit::server::HealthCheck::new(state.live.comments.clone(), Some(fanout));
    let server = service_kit::server::serve_ws(
        listener,
        &config.server,
        &config.ws,
        INDEX_PAGE,
        move |cfg| {
            cfg.app_data(state.clone())
                .app_data(health.clone())
                .app_data(moderator_routes.clone())
                .configure(routes::configure);
        },
    )?;
    Ok(RunningServer::new("ws-stream", server, addr).on_shutdown(move || hub.do_send(Shutdown)))
}
