//! Wake-ups for long polls: a waiter learns that its room has something newer without asking
//! the database again and again.
//!
//! Each room someone is waiting on has a `watch` channel holding the newest id committed there.
//! The feed hears of every commit through `service_kit::fanout` (so a comment wakes the waiters
//! whatever stored it, on this instance or, with a bus, on any other); a long poll
//! subscribes *before* it first queries, so a comment committed between the query and the wait
//! still wakes it. Rooms nobody waits on have no channel, and the last waiter to leave removes
//! it, so memory follows the waiters.
//!
//! A moderator's delete wakes the room's waiters too (those that asked for deletions, see
//! [`Subscription::changed`]), so a page that long-polls takes a deleted comment off its screen
//! at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use service_kit::fanout::WakeSink;
use shared_model::ChannelId;
use tokio::sync::watch;

/// The wake-up channels of every room with a waiter. Cheap to clone.
#[derive(Clone, Default)]
pub struct RoomFeeds {
    /// A std mutex: it guards only map lookups and is never held across an await, so an async
    /// lock would add cost and nothing else.
    inner: Arc<Mutex<FeedsInner>>,
}

/// What a room's waiters are told.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Newest {
    /// The newest id committed.
    id: i64,
    /// Deletes heard of (a count: it only tells that another happened).
    deletes: u64,
}

#[derive(Default)]
struct FeedsInner {
    rooms: HashMap<ChannelId, watch::Sender<Newest>>,
    /// Set on shutdown: no new waiters, and the old ones have been woken.
    closed: bool,
}

/// A waiter's view of one room; leaving drops the room's channel if nobody else waits.
pub struct Subscription {
    feeds: RoomFeeds,
    room: ChannelId,
    rx: Option<watch::Receiver<Newest>>,
    /// Deletes heard of when it subscribed.
    deletes_seen: u64,
}

impl RoomFeeds {
    /// Starts waiting on `room`, or `None` once the service is shutting down.
    pub fn subscribe(&self, room: &ChannelId) -> Option<Subscription> {
        let mut inner = self.lock();
        if inner.closed {
            return None;
        }
        let rx = inner
            .rooms
            .entry(room.clone())
            .or_insert_with(|| watch::channel(Newest::default()).0)
            .subscribe();
        let deletes_seen = rx.borrow().deletes;
        Some(Subscription {
            feeds: self.clone(),
            room: room.clone(),
            rx: Some(rx),
            deletes_seen,
        })
    }

    /// Tells `room`'s waiters that `id` is committed. Ids may arrive out of order from
    /// concurrent appends; the channel keeps the largest.
    pub fn publish(&self, room: &ChannelId, id: i64) {
        let inner = self.lock();
        if let Some(tx) = inner.rooms.get(room) {
            tx.send_if_modified(|newest| {
                let newer = id > newest.id;
                if newer {
                    newest.id = id;
                }
                newer
            });
        }
    }

    /// Tells `room`'s waiters that a comment of it was deleted.
    pub fn publish_deleted(&self, room: &ChannelId) {
        let inner = self.lock();
        if let Some(tx) = inner.rooms.get(room) {
            tx.send_modify(|newest| newest.deletes += 1);
        }
    }

    /// Wakes every waiter for good (shutdown): their channels close.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.rooms.clear();
    }

    /// Rooms with at least one waiter.
    pub fn rooms_waited_on(&self) -> usize {
        self.lock().rooms.len()
    }

    /// Long polls waiting now, in every room.
    pub fn waiters(&self) -> usize {
        self.lock()
            .rooms
            .values()
            .map(watch::Sender::receiver_count)
            .sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FeedsInner> {
        // A panic while holding this lock leaves the map consistent (every operation on it is a
        // single map call), so a poisoned lock is safe to keep using.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl WakeSink for RoomFeeds {
    fn committed(&self, channel: &ChannelId, id: i64) {
        self.publish(channel, id);
    }

    fn deleted(&self, channel: &ChannelId, _id: i64) {
        self.publish_deleted(channel);
    }

    fn channels(&self) -> Vec<ChannelId> {
        self.lock().rooms.keys().cloned().collect()
    }
}

impl Subscription {
    /// Waits until an id above `after` is published. `false` when the feed closed (shutdown).
    pub async fn newer_than(&mut self, after: i64) -> bool {
        let Some(rx) = self.rx.as_mut() else {
            return false;
        };
        rx.wait_for(|newest| newest.id > after).await.is_ok()
    }

    /// Waits until an id above `after` is published or, with `deletes`, a comment of the room is
    /// deleted after the subscription began. `false` when the feed closed (shutdown).
    pub async fn changed(&mut self, after: i64, deletes: bool) -> bool {
        let seen = self.deletes_seen;
        let Some(rx) = self.rx.as_mut() else {
            return false;
        };
        rx.wait_for(|newest| newest.id > after || (deletes && newest.deletes != seen))
            .await
            .is_ok()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.rx.take());
        let mut inner = self.feeds.lock();
        if inner
            .rooms
            .get(&self.room)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            inner.rooms.remove(&self.room);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn room(name: &str) -> ChannelId {
        ChannelId::parse(name).unwrap()
    }

    #[tokio::test]
    async fn a_publish_wakes_only_waiters_of_that_room_for_newer_ids() {
        let feeds = RoomFeeds::default();
        let mut a = feeds.subscribe(&room("a")).unwrap();
        let mut b = feeds.subscribe(&room("b")).unwrap();
        feeds.publish(&room("a"), 5);
        assert!(a.newer_than(4).await);
        let b_woke = tokio::time::timeout(Duration::from_millis(50), b.newer_than(0)).await;
        assert!(b_woke.is_err(), "room b got room a's wake-up");
        let stale = tokio::time::timeout(Duration::from_millis(50), a.newer_than(5)).await;
        assert!(stale.is_err(), "id 5 is not newer than 5");
    }

    #[tokio::test]
    async fn a_delete_wakes_only_the_waiters_that_asked_for_deletes() {
        let feeds = RoomFeeds::default();
        let mut asked = feeds.subscribe(&room("a")).unwrap();
        let mut plain = feeds.subscribe(&room("a")).unwrap();
        feeds.publish_deleted(&room("a"));
        assert!(asked.changed(0, true).await);
        let woke = tokio::time::timeout(Duration::from_millis(50), plain.changed(0, false)).await;
        assert!(woke.is_err(), "a waiter for comments only woke on a delete");
        // A delete from before the subscription does not wake a new waiter.
        let mut later = feeds.subscribe(&room("a")).unwrap();
        let woke = tokio::time::timeout(Duration::from_millis(50), later.changed(0, true)).await;
        assert!(woke.is_err());
    }

    #[tokio::test]
    async fn a_publish_before_the_wait_is_not_lost() {
        let feeds = RoomFeeds::default();
        let mut sub = feeds.subscribe(&room("a")).unwrap();
        feeds.publish(&room("a"), 1);
        assert!(sub.newer_than(0).await);
    }

    #[tokio::test]
    async fn the_last_waiter_removes_the_room_and_close_wakes_everyone() {
        let feeds = RoomFeeds::default();
        let first = feeds.subscribe(&room("a")).unwrap();
        let mut second = feeds.subscribe(&room("a")).unwrap();
        assert_eq!(feeds.rooms_waited_on(), 1);
        assert_eq!(feeds.waiters(), 2);
        drop(first);
        assert_eq!(feeds.rooms_waited_on(), 1);
        feeds.close();
        assert!(!second.newer_than(0).await, "close wakes with false");
        drop(second);
        assert_eq!(feeds.rooms_waited_on(), 0);
        assert!(feeds.subscribe(&room("a")).is_none());
    }
}
