//! The viewers of one channel (a video or a live room) and what a hub does with them: fan a
//! batch of comments out as one shared frame, and report the viewer count at most so often.
//!
//! A `Room` is plain data owned by a hub actor; the hub decides when to flush (once it has
//! handled what reached it meanwhile, so comments arriving together share a frame: see
//! `hub::Publish`) and when to report counts (on a timer). Frames go to each viewer's outbox
//! (`outbox.rs`), pushed on the viewer's own worker thread (`lanes.rs`).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use shared_model::{Danmaku, ServerMessage};

use super::hub::COUNT_INTERVAL;
use super::lanes::{self, Delivery, Gone, Lane, Members};
use super::{ConnectionId, Outgoing, Viewer};

/// One channel's viewers and its comments waiting to go out.
#[derive(Default)]
pub struct Room {
    viewers: HashMap<ConnectionId, Viewer>,
    /// The viewers grouped by lane, for deliveries to all; `None` after a join or a leave, made
    /// again at the next delivery.
    lanes: Option<Vec<(Option<Arc<Lane>>, Members)>>,
    /// Viewers the lanes found too slow, for [`Room::take_gone`].
    gone: Gone,
    /// Comments stored since the last flush, oldest first.
    pending: Vec<Danmaku>,
    /// The count last reported (this instance's viewers and the others').
    reported: Option<usize>,
    /// A changed count waiting to go out with the next comments (see [`Room::announce_count`]).
    held_count: Option<ServerMessage>,
    /// When comments last went out.
    last_flush: Option<Instant>,
}

impl Room {
    /// Adds a viewer; returns the count, this viewer included.
    pub fn join(&mut self, viewer: Viewer) -> usize {
        self.viewers.insert(viewer.id, viewer);
        self.lanes = None;
        self.viewers.len()
    }

    /// Removes a viewer (it is fine if it already left).
    pub fn leave(&mut self, id: ConnectionId) {
        if self.viewers.remove(&id).is_some() {
            self.lanes = None;
        }
    }

    /// Forgets the viewers found too slow since the last call (they have been told to close)
    /// and returns their ids, for the hub to forget too.
    pub fn take_gone(&mut self) -> Vec<ConnectionId> {
        let gone = std::mem::take(&mut *self.gone.lock().unwrap_or_else(PoisonError::into_inner));
        self.forget(&gone);
        gone
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
    /// slow to take it are told to close and dropped: at once when they have no lane (returns
    /// how many), else through [`Room::take_gone`].
    pub fn flush(&mut self) -> usize {
        if self.pending.is_empty() {
            return 0;
        }
        if let Some(count) = self.held_count.take() {
            // Sent just before the comments, it reaches each lane with them, and a viewer whose
            // frames go straight to its socket gets both in one write (`lanes.rs`).
            self.broadcast(&count);
        }
        self.last_flush = Some(Instant::now());
        let mut items = std::mem::take(&mut self.pending);
        items.sort_by_key(|item| item.id);
        let message = ServerMessage::Danmaku { items };
        let frame: bytestring::ByteString = message.to_json().into();
        let ServerMessage::Danmaku { items } = message else {
            unreachable!("built as a danmaku frame just above")
        };
        let items: std::sync::Arc<[Danmaku]> = items.into();
        let wire = crate::upgrade::text_frame(frame.as_bytes());
        self.deliver_to_all(Delivery::Push(Outgoing::Comments { frame, wire, items }))
    }

    /// Whether `id` watches this room.
    pub fn has_viewer(&self, id: ConnectionId) -> bool {
        self.viewers.contains_key(&id)
    }

    /// Sends `message` to every viewer, serialized once; drops the viewers too slow to take it
    /// (as [`Room::flush`] does).
    pub fn broadcast(&mut self, message: &ServerMessage) -> usize {
        self.deliver_to_all(Delivery::Push(Outgoing::frame(message)))
    }

    /// Sends an already-serialized frame to the viewers `to` selects; drops those too slow to
    /// take it (as [`Room::flush`] does).
    pub fn broadcast_to(
        &mut self,
        frame: bytestring::ByteString,
        to: impl Fn(&Viewer) -> bool,
    ) -> usize {
        let groups = by_lane(self.viewers.values().filter(|viewer| to(viewer)));
        let dropped = deliver(&groups, &Delivery::Push(Outgoing::text(frame)), &self.gone);
        self.forget(&dropped)
    }

    /// Delivers `what` to every viewer, through their lanes; forgets the viewers found too slow
    /// here (those without a lane) and returns how many.
    fn deliver_to_all(&mut self, what: Delivery) -> usize {
        let viewers = &self.viewers;
        let groups = self.lanes.get_or_insert_with(|| by_lane(viewers.values()));
        let dropped = deliver(groups, &what, &self.gone);
        self.forget(&dropped)
    }

    /// Forgets `dropped` viewers; returns how many there were.
    fn forget(&mut self, dropped: &[ConnectionId]) -> usize {
        for id in dropped {
            self.leave(*id);
        }
        dropped.len()
    }

    /// The `viewers` frame to send if the total (these viewers and `others` elsewhere) changed
    /// since the last call.
    pub fn take_count_update(&mut self, others: usize) -> Option<ServerMessage> {
        let count = self.viewers.len() + others;
        (self.reported.replace(count) != Some(count)).then_some(ServerMessage::Viewers { count })
    }

    /// A joining viewer was told `count` (in its welcome). If that is not the count last
    /// reported, the next report sends the count to everyone even if it is back to the one
    /// reported: a viewer that joined while another was leaving (a page reconnecting) would
    /// otherwise keep a count one too high.
    pub fn told(&mut self, count: usize) {
        if self.reported != Some(count) {
            self.reported = None;
        }
    }

    /// Sends `update` (a changed viewer count, from [`Room::take_count_update`]) to every viewer.
    /// The hub calls this every [`COUNT_INTERVAL`], with or without a change.
    ///
    /// In a quiet room the count goes out at once. In a busy one (comments went out within the
    /// last interval), it waits for the next comments and goes out with them: a room that
    /// thousands of viewers are joining changes its count at every report, and a frame of its
    /// own would cost every viewer a write of its own twice a second, on top of the comments'.
    /// A count that waited a whole interval without comments goes out then, so it is never
    /// late by more than two intervals.
    pub fn announce_count(&mut self, update: Option<ServerMessage>) {
        let stale = self.held_count.take();
        let waited = stale.is_some();
        let Some(count) = update.or(stale) else {
            return;
        };
        let busy = self
            .last_flush
            .is_some_and(|at| at.elapsed() < COUNT_INTERVAL);
        if busy && !waited {
            self.held_count = Some(count);
        } else {
            self.broadcast(&count);
        }
    }

    /// Tells every viewer to close (shutdown), after what was sent to them before, and forgets
    /// them.
    pub fn close_all(&mut self, code: u16, reason: &str) {
        self.deliver_to_all(Delivery::Close(code, reason.into()));
        self.viewers.clear();
        self.lanes = None;
    }
}

/// Delivers `what` to each group on its lane; returns the viewers found too slow here (those
/// without a lane).
fn deliver(
    groups: &[(Option<Arc<Lane>>, Members)],
    what: &Delivery,
    gone: &Gone,
) -> Vec<ConnectionId> {
    groups
        .iter()
        .flat_map(|(lane, members)| {
            lanes::deliver(lane.as_deref(), members.clone(), what.clone(), gone)
        })
        .collect()
}

/// `viewers` grouped by lane.
fn by_lane<'a>(viewers: impl Iterator<Item = &'a Viewer>) -> Vec<(Option<Arc<Lane>>, Members)> {
    let mut groups: Vec<(Option<Arc<Lane>>, Vec<_>)> = Vec::new();
    for viewer in viewers {
        let lane_id = viewer.lane.as_ref().map(|lane| lane.id);
        let member = (viewer.id, viewer.outbox.clone());
        match groups
            .iter_mut()
            .find(|(lane, _)| lane.as_ref().map(|lane| lane.id) == lane_id)
        {
            Some((_, members)) => members.push(member),
            None => groups.push((viewer.lane.clone(), vec![member])),
        }
    }
    groups
        .into_iter()
        .map(|(lane, members)| (lane, members.into()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::Duration;

    use futures_util::StreamExt;

    use super::*;
    use crate::ws::outbox::OutboxStream;
    use crate::ws::test_comment;

    /// A room with one viewer (no lane: delivered to here), and that viewer's queue.
    fn room() -> (Room, OutboxStream) {
        let (viewer, stream) = Viewer::new(1, 64);
        let mut room = Room::default();
        room.join(viewer);
        (room, stream)
    }

    /// The types of what waits in `stream`, taken now.
    async fn taken(stream: &mut OutboxStream) -> Vec<String> {
        let batch = tokio::time::timeout(Duration::from_millis(20), stream.next())
            .await
            .ok()
            .flatten()
            .unwrap_or_else(VecDeque::new);
        batch
            .iter()
            .map(|outgoing| match outgoing {
                Outgoing::Frame { text, .. } | Outgoing::Comments { frame: text, .. } => {
                    let value: serde_json::Value = serde_json::from_str(text).unwrap();
                    value["type"].as_str().unwrap().to_owned()
                }
                Outgoing::Close { .. } => "close".to_owned(),
            })
            .collect()
    }

    fn count(count: usize) -> Option<ServerMessage> {
        Some(ServerMessage::Viewers { count })
    }

    #[tokio::test]
    async fn a_viewer_told_a_count_while_another_left_gets_the_right_one_at_the_next_report() {
        let (mut room, _stream) = room();
        let (second, _second_stream) = Viewer::new(2, 64);
        room.join(second);
        assert_eq!(room.take_count_update(0), count(2));
        // A page reconnects: its new connection joins (and is told 3) before the old one
        // leaves, and the total is back to the 2 reported before.
        let (again, _again_stream) = Viewer::new(3, 64);
        let told = room.join(again);
        room.told(told);
        room.leave(2);
        assert_eq!(room.take_count_update(0), count(2), "the joiner was told 3");
        assert_eq!(room.take_count_update(0), None, "and only once");
    }

    #[tokio::test]
    async fn a_quiet_rooms_count_goes_out_at_once() {
        let (mut room, mut stream) = room();
        room.announce_count(count(1));
        assert_eq!(taken(&mut stream).await, ["viewers"]);
    }

    #[tokio::test]
    async fn a_busy_rooms_count_waits_for_the_next_comments_and_goes_just_before_them() {
        let (mut room, mut stream) = room();
        room.queue(test_comment("room", 1));
        room.flush();
        assert_eq!(taken(&mut stream).await, ["danmaku"]);

        room.announce_count(count(2));
        assert_eq!(taken(&mut stream).await, Vec::<String>::new(), "held");
        room.queue(test_comment("room", 2));
        room.flush();
        assert_eq!(taken(&mut stream).await, ["viewers", "danmaku"]);
    }

    #[tokio::test]
    async fn a_held_count_goes_out_at_the_next_report_when_no_comment_came() {
        let (mut room, mut stream) = room();
        room.queue(test_comment("room", 1));
        room.flush();
        taken(&mut stream).await;

        room.announce_count(count(2));
        assert_eq!(taken(&mut stream).await, Vec::<String>::new(), "held");
        // The next report, with no change since: the held count goes anyway.
        room.announce_count(None);
        assert_eq!(taken(&mut stream).await, ["viewers"]);
        // And nothing is left to send twice.
        room.queue(test_comment("room", 2));
        room.flush();
        assert_eq!(taken(&mut stream).await, ["danmaku"]);
    }
}
