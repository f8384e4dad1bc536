//! What every request handler shares.

use std::sync::Arc;

use service_kit::ClientBudget;
use shared_model::Store;

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
