//! What every handler of the video service shares.

use std::sync::Arc;

use actix::Addr;
use service_kit::ClientRateLimiter;
use service_kit::ws::WsSettings;
use shared_model::Store;

use crate::hub::VideoHub;

/// The handlers' shared state; one per server, cloned into every worker as `web::Data`.
pub struct VideoState {
    /// Where comments live.
    pub store: Arc<dyn Store>,
    /// Comments per client address, for the HTTP routes (WebSocket connections have their own).
    pub limiter: ClientRateLimiter,
    /// The hub that fans comments out to the viewers of each video. It hears of every stored
    /// comment from the store itself (see `lib.rs`), in commit order, whichever route stored it.
    pub hub: Addr<VideoHub>,
    /// Limits of every WebSocket connection.
    pub ws: WsSettings,
}
