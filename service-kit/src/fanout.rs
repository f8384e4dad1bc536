//! The one path by which a new comment reaches the clients waiting for it.
//!
//! Whatever stores a comment (a WebSocket `send`, an HTTP post, the DPlayer API), the store
//! reports it here right after its commit, in commit order, and [`connect`] hands it to the
//! service's [`CommentSink`]: the rooms hub of a WebSocket service, the long-poll wake-ups of the
//! HTTP service. No route tells anyone of a comment it stored, so every comment reaches every
//! waiting client the same way, and only after it is durable.
//!
//! This is also the one spot where comments from elsewhere (other instances, through a bus) will
//! come in: they go to the same sinks, so no service changes.

use actix::Addr;
use danmaku_store::Store;
use shared_model::Danmaku;

use crate::ws::hub::{HubExtension, Publish, RoomsHub};

/// Something that must hear of every committed comment. Called on the store's writer thread:
/// keep it short and non-blocking (hand the comment to an actor or a channel).
pub trait CommentSink: Send + Sync + 'static {
    /// `item` was committed.
    fn deliver(&self, item: &Danmaku);
}

impl<E: HubExtension> CommentSink for Addr<RoomsHub<E>> {
    fn deliver(&self, item: &Danmaku) {
        self.do_send(Publish { item: item.clone() });
    }
}

/// Sends every comment `store` commits from now on to `sink`, in commit order.
pub fn connect(store: &dyn Store, sink: impl CommentSink) {
    store.on_append(Box::new(move |item| sink.deliver(item)));
}
