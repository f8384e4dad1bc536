//! What every request handler shares.

use std::sync::Arc;

use danmaku_store::Store;
use service_kit::ClientBudget;
use service_kit::moderation::Moderation;

use crate::feed::RoomFeeds;

/// The handlers' shared state; one per server, cloned into every worker as `web::Data`.
pub struct AppState {
    /// Where comments live.
    pub store: Arc<dyn Store>,
    /// Mutes and banned words (set with the admin token), checked before a comment is stored.
    pub moderation: Moderation,
    /// Wake-ups for long polls.
    pub feeds: RoomFeeds,
    /// Comments per client address.
    pub budget: ClientBudget,
}
