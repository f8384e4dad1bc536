//! What every handler of the live service shares.

use service_kit::ClientRateLimiter;
use service_kit::ws::WsSettings;

use crate::rooms::LiveRooms;

/// The handlers' shared state; one per server, cloned into every worker as `web::Data`.
pub struct LiveState {
    /// The rooms and their rules.
    pub live: LiveRooms,
    /// Requests per client address for the HTTP routes that write (rooms, check-ins,
    /// attendance); WebSocket connections have their own.
    pub limiter: ClientRateLimiter,
    /// Limits of every WebSocket connection.
    pub ws: WsSettings,
}
