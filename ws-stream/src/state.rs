//! What every handler of the live service shares.

use std::sync::Arc;

use service_kit::ws::WsSettings;

use crate::recording::Recorder;
use crate::rooms::LiveRooms;

/// The handlers' shared state; one per server, cloned into every worker as `web::Data`.
pub struct LiveState {
    /// The rooms and their rules, shared by every connection's session (behind an `Arc`, so
    /// each session holds a pointer rather than a copy of the handles).
    pub live: Arc<LiveRooms>,
    /// Limits of every WebSocket connection, and each client's budget (`ws.budget`), which the
    /// HTTP routes spend too.
    pub ws: WsSettings,
    /// Sends a session's comments to the video service as a recording's timeline.
    pub recorder: Recorder,
}
