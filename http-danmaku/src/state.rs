//! What every request handler shares.

use std::sync::Arc;

use danmaku_store::Store;
use service_kit::ClientBudget;

use crate::feed::RoomFeeds;

/// The handlers' shared state; one per server, cloned into every worker as `web::Data`.
pub struct AppState {
    /// Where comments live.
    pub store: Arc<dyn Store>,
    /// Wake-ups for long polls.
    pub feeds: RoomFeeds,
    /// Comments per client address.
    pub budget: ClientBudget,
}
