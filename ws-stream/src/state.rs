//! What every handler of the live service shares.

use std::sync::Arc;

use actix::Addr;
use service_kit::ClientRateLimiter;
use service_kit::ws::WsSettings;
use shared_model::Store;
use shared_model::store::RoomStore;

use crate::hub::LiveHub;

/// The handlers' shared state; one per server, cloned into every worker as `web::Data`.
pub struct LiveState {
    /// Where comments live.
    pub comments: Arc<dyn Store>,
    /// Where rooms and check-ins live.
    pub rooms: Arc<dyn RoomStore>,
    /// The hub. It hears of every stored comment from the store itself, in commit order.
    pub hub: Addr<LiveHub>,
    /// Requests per client address for the HTTP routes that write (rooms, check-ins,
    /// attendance); WebSocket connections have their own.
    pub limiter: ClientRateLimiter,
    /// Limits of every WebSocket connection.
    pub ws: WsSettings,
}
