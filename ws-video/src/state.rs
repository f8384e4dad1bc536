//! What every handler of the video service shares.

use actix::Addr;
use service_kit::moderation::Moderation;
use service_kit::ws::WsSettings;

use crate::budget::Imports;
use crate::cache::ReadCache;
use crate::hub::VideoHub;
use crate::timeline::Timeline;

/// The handlers' shared state; one per server, cloned into every worker as `web::Data`.
pub struct VideoState {
    /// The comments of every video, and their rules.
    pub timeline: Timeline,
    /// The hub that fans comments out to the viewers of each video. It hears of every stored
    /// comment from the store itself (see `lib.rs`), in commit order, whichever route stored it.
    pub hub: Addr<VideoHub>,
    /// Limits of every WebSocket connection, and each client's budget (`ws.budget`), which the
    /// HTTP routes spend too.
    pub ws: WsSettings,
    /// What Bilibili imports may take: permits, the entry cap, each client's import budget.
    pub imports: Imports,
    /// Brief caches of the heaviest reads (DPlayer lists, export first pages, densities).
    pub cache: ReadCache,
    /// Who moderates (the admin token) and each video's rules.
    pub moderation: Moderation,
}
