//! The viewers of one channel (a video or a live room) and what a hub does with them: fan a
//! batch of comments out as one shared frame, and report the viewer count at most so often.
//!
//! A `Room` is plain data owned by a hub actor; the hub decides when to flush (once it has
//! handled what reached it meanwhile, so comments arriving together share a frame: see
//! `hub::Publish`) and when to report counts (on a timer). Frames go to each viewer's outbox
//! (`outbox.rs`).

use std::collections::HashMap;

use shared_model::{Danmaku, ServerMessage};

use super::{ConnectionId, Outgoing, Viewer};

/// One channel's viewers and its comments waiting to go out.
#[derive(Default)]
pub struct Room {
    viewers: HashMap<ConnectionId, Viewer>,
    /// Comments stored since the last flush, oldest first.
    pending: Vec<Danmaku>,
    /// The count last reported (this instance's viewers and the others').
    reported: Option<usize>,
}

impl Room {
    /// Adds a viewer; returns the count, this viewer included.
    pub fn join(&mut self, viewer: Viewer) -> usize {
        self.viewers.insert(viewer.id, viewer);
        self.viewers.len()
    }

    /// Removes a viewer (it is fine if it already left).
    pub fn leave(&mut self, id: ConnectionId) {
        self.viewers.remove(&id);
    }

    /// Viewers now.
    pub fn viewer_count(&self) -> usize {
        self.viewers.len()
    }

    /// Whether nobody watches and nothing waits (the hub can forget the room).
    pub fn is_idle(&self) -> bool {
        self.viewers.is_empty() && self.pending.is_empty()
    }

    /// Queues a stored comment. `true` when it is the first of a batch: the hub should schedule
    /// a [`Room::flush`].
    pub fn queue(&mut self, item: Danmaku) -> bool {
        self.pending.push(item);
        self.pending.len() == 1
    }

    /// Takes comment `id` out of the batch waiting to go out (a moderator deleted it).
    pub fn unqueue(&mut self, id: i64) {
        self.pending.retain(|item| item.id != id);
    }

    /// Sends the queued comments to every viewer as one frame, serialized once. Viewers too
    /// slow to take it are dropped (they have been told to close). Returns how many were.
    pub fn flush(&mut self) -> usize {
        if self.pending.is_empty() {
            return 0;
        }
        let mut items = std::mem::take(&mut self.pending);
        items.sort_by_key(|item| item.id);
        let message = ServerMessage::Danmaku { items };
        let frame: bytestring::ByteString = message.to_json().into();
        let ServerMessage::Danmaku { items } = message else {
            unreachable!("built as a danmaku frame just above")
        };
        let items: std::sync::Arc<[Danmaku]> = items.into();
        let before = self.viewers.len();
        self.viewers.retain(|_, viewer| {
            viewer.push_outgoing(Outgoing::Comments {
                frame: frame.clone(),
                items: items.clone(),
            })
        });
        before - self.viewers.len()
    }

    /// Whether `id` watches this room.
    pub fn has_viewer(&self, id: ConnectionId) -> bool {
        self.viewers.contains_key(&id)
    }

    /// Sends `message` to every viewer, serialized once; drops the viewers too slow to take it.
    /// Returns how many were dropped.
    pub fn broadcast(&mut self, message: &ServerMessage) -> usize {
        let Outgoing::Frame(frame) = Outgoing::frame(message) else {
            unreachable!("Outgoing::frame makes a frame")
        };
        self.broadcast_to(frame, |_| true)
    }

    /// Sends an already-serialized frame to the viewers `to` selects; drops those too slow to
    /// take it. Returns how many were dropped.
    pub fn broadcast_to(
        &mut self,
        frame: bytestring::ByteString,
        to: impl Fn(&Viewer) -> bool,
    ) -> usize {
        let before = self.viewers.len();
        self.viewers
            .retain(|_, viewer| !to(viewer) || viewer.push(frame.clone()));
        before - self.viewers.len()
    }

    /// The `viewers` frame to send if the total (these viewers and `others` elsewhere) changed
    /// since the last call.
    pub fn take_count_update(&mut self, others: usize) -> Option<ServerMessage> {
        let count = self.viewers.len() + others;
        (self.reported.replace(count) != Some(count)).then_some(ServerMessage::Viewers { count })
    }

    /// Tells every viewer to close (shutdown) and forgets them.
    pub fn close_all(&mut self, code: u16, reason: &str) {
        for viewer in self.viewers.values() {
            viewer.close(code, reason);
        }
        self.viewers.clear();
    }
}
