//! What every handler of the video service shares.

use std::sync::Arc;

use actix::Addr;
use service_kit::ClientRateLimiter;
use service_kit::ws::WsSettings;
use shared_model::{Danmaku, Store};

use crate::hub::{Publish, VideoHub};

/// The handlers' shared state; one per server, cloned into every worker as `web::Data`.
pub struct VideoState {
    /// Where comments live.
    pub store: Arc<dyn Store>,
    /// Comments per client address, for the HTTP routes (WebSocket connections have their own).
    pub limiter: ClientRateLimiter,
    /// The hub that fans comments out to the viewers of each video.
    pub hub: Addr<VideoHub>,
    /// Limits of every WebSocket connection.
    pub ws: WsSettings,
}

impl VideoState {
    /// Pushes a stored comment to everyone watching its video over WebSocket. Call it after the
    /// store acknowledged the comment, from any route that adds one.
    pub fn publish(&self, item: Danmaku) {
        self.hub.do_send(Publish { item });
    }
}
