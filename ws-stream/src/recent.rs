//! The newest comments of each room, kept in memory from the fan-out, so a join (its chat box),
//! a short reconnect and the history route read no database.
//!
//! Every committed comment reaches [`LiveSink`] from the store, in commit order (see
//! `service_kit::fanout`); the sink adds it to its room's tail here, then hands it to the hub.
//! A room is loaded from the store once, on its first read, and kept up to date from then on.
//!
//! Loading races with new comments, so it goes in two steps: [`RecentComments::begin_load`]
//! makes the room's entry and watches the room through the fan-out, which from then on delivers
//! every comment after the room's newest id at that moment, in order; once that starting point
//! is known (the future `begin_load` returns), the caller reads the store and hands the rows to
//! [`RecentComments::finish_load`], which merges both by id. A comment committed before the
//! starting point is in the rows read after it; one committed later is delivered; one in both
//! is kept once. Until a load finished, reads of that room go to the store.
//!
//! At most `max_rooms` rooms are kept; a new one pushes out the one read least recently.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use actix::Addr;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use service_kit::fanout::{CommentSink, Fanout};
use shared_model::{ChannelId, Danmaku};

use crate::hub::LiveHub;

/// One room's newest comments.
#[derive(Debug, Default)]
struct Tail {
    /// Oldest first, at most the capacity, in id order.
    items: VecDeque<Danmaku>,
    /// Whether the room's rows were read from the store into it (see the module docs).
    loaded: bool,
    /// When it was last read (a counter), to push out the least recently read room.
    used: u64,
    /// Resolves once the fan-out knows where the room's comments start.
    ready: Option<Shared<BoxFuture<'static, ()>>>,
}

/// The rooms' tails.
#[derive(Debug, Default)]
struct Tails {
    rooms: HashMap<ChannelId, Tail>,
    /// Counts reads, for [`Tail::used`].
    clock: u64,
}

/// The newest comments of each room. Cheap to clone; clones share the rooms.
#[derive(Clone, Debug)]
pub struct RecentComments {
    /// A plain mutex: every hold is a few pointer moves (no I/O, no await), and the store's
    /// writer thread takes it once per commit.
    tails: Arc<Mutex<Tails>>,
    /// Comments kept per room.
    capacity: usize,
    /// Rooms kept.
    max_rooms: usize,
    /// Where kept rooms are watched; `None` in tests of the cache alone.
    fanout: Option<Fanout>,
}

impl RecentComments {
    /// Keeps the newest `capacity` comments of at most `max_rooms` rooms, each watched through
    /// `fanout`.
    pub fn new(capacity: usize, max_rooms: usize, fanout: Option<Fanout>) -> Self {
        Self {
            tails: Arc::default(),
            capacity,
            max_rooms: max_rooms.max(1),
            fanout,
        }
    }

    /// Comments kept per room.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tails> {
        // Nothing under the lock can leave a tail half-changed, so a panic elsewhere while it
        // was held does not make the data wrong.
        self.tails.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A comment was committed: its room's tail, if kept, gets it.
    pub fn record(&self, item: &Danmaku) {
        let mut tails = self.lock();
        if let Some(tail) = tails.rooms.get_mut(&item.channel) {
            insert(&mut tail.items, item.clone(), self.capacity);
        }
    }

    /// A moderator deleted a comment of `room`: its tail, if kept, is dropped, and the room's
    /// next read loads it again from the store, which leaves the comment out. (Taking the one
    /// comment out would leave a tail that looks like a whole room when it is not: see
    /// [`covers`].) Deletes are rare; a reload is one read.
    pub fn forget(&self, room: &ChannelId) {
        let mut tails = self.lock();
        if tails.rooms.remove(room).is_some()
            && let Some(fanout) = &self.fanout
        {
            fanout.unwatch(room);
        }
    }

    /// Starts loading `room` (see the module docs): from now on its new comments are kept.
    /// Read the store once the answer, if any, resolves.
    pub fn begin_load(&self, room: &ChannelId) -> Option<BoxFuture<'static, ()>> {
        let mut tails = self.lock();
        if let Some(tail) = tails.rooms.get(room) {
            return tail.ready.clone().map(FutureExt::boxed);
        }
        if tails.rooms.len() >= self.max_rooms {
            let oldest = tails
                .rooms
                .iter()
                .min_by_key(|(_, tail)| tail.used)
                .map(|(room, _)| room.clone());
            if let Some(oldest) = oldest {
                tails.rooms.remove(&oldest);
                if let Some(fanout) = &self.fanout {
                    fanout.unwatch(&oldest);
                }
            }
        }
        tails.clock += 1;
        let used = tails.clock;
        let ready = self.fanout.as_ref().map(|fanout| {
            let watched = fanout.watch(room);
            // An error means the fan-out is gone (shutting down): nothing more will come.
            async move {
                let _ = watched.await;
            }
            .boxed()
            .shared()
        });
        tails.rooms.insert(
            room.clone(),
            Tail {
                used,
                ready: ready.clone(),
                ..Tail::default()
            },
        );
        ready.map(FutureExt::boxed)
    }

    /// `rows`, the newest comments of `room` read from the store after [`Self::begin_load`],
    /// complete its tail.
    pub fn finish_load(&self, room: &ChannelId, rows: Vec<Danmaku>) {
        let mut tails = self.lock();
        // Pushed out meanwhile: the rows served their reader; the next read loads it again.
        let Some(tail) = tails.rooms.get_mut(room) else {
            return;
        };
        for item in rows {
            insert(&mut tail.items, item, self.capacity);
        }
        tail.loaded = true;
    }

    /// The newest `limit` comments of `room`, oldest first, if its tail is loaded and holds
    /// that many (or the whole room).
    pub fn latest(&self, room: &ChannelId, limit: usize) -> Option<Vec<Danmaku>> {
        if limit > self.capacity {
            return None;
        }
        self.read(room, |items| {
            let skip = items.len().saturating_sub(limit);
            Some(items.iter().skip(skip).cloned().collect())
        })
    }

    /// The comments of `room` after id `after`, oldest first, at most `limit`, if its tail holds
    /// every one of them.
    pub fn after(&self, room: &ChannelId, after: i64, limit: usize) -> Option<Vec<Danmaku>> {
        let capacity = self.capacity;
        self.read(room, |items| {
            covers(items, capacity, after).then(|| {
                items
                    .iter()
                    .filter(|item| item.id > after)
                    .take(limit)
                    .cloned()
                    .collect()
            })
        })
    }

    fn read<T>(
        &self,
        room: &ChannelId,
        f: impl FnOnce(&VecDeque<Danmaku>) -> Option<T>,
    ) -> Option<T> {
        let mut tails = self.lock();
        tails.clock += 1;
        let clock = tails.clock;
        let tail = tails.rooms.get_mut(room).filter(|tail| tail.loaded)?;
        tail.used = clock;
        f(&tail.items)
    }
}

/// Whether a loaded tail holds every comment of its room after `after`: it holds the whole
/// room (fewer than its capacity), or its oldest is at or before `after`.
fn covers(items: &VecDeque<Danmaku>, capacity: usize, after: i64) -> bool {
    items.len() < capacity || items.front().is_some_and(|first| first.id <= after)
}

/// Adds `item` in id order (usually at the end), once, keeping the newest `capacity`.
fn insert(items: &mut VecDeque<Danmaku>, item: Danmaku, capacity: usize) {
    match items.back() {
        None => items.push_back(item),
        Some(last) if last.id < item.id => items.push_back(item),
        Some(_) => {
            if let Err(at) = items.binary_search_by_key(&item.id, |i| i.id) {
                items.insert(at, item);
            }
        }
    }
    while items.len() > capacity {
        items.pop_front();
    }
}

/// Where the store reports each commit: the room's tail first, then the hub, so a joining
/// connection that reads the tail after joining the hub misses nothing.
pub struct LiveSink {
    /// The rooms' tails.
    pub recent: RecentComments,
    /// The hub that fans comments out.
    pub hub: Addr<LiveHub>,
}

impl CommentSink for LiveSink {
    fn deliver(&self, item: &Danmaku) {
        self.recent.record(item);
        self.hub.deliver(item);
    }

    fn deleted(&self, channel: &ChannelId, id: i64) {
        self.recent.forget(channel);
        self.hub.deleted(channel, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_model::{Color, Mode};

    fn comment(room: &str, id: i64) -> Danmaku {
        Danmaku {
            id,
            channel: ChannelId::parse(room).unwrap(),
            author: "ann".into(),
            text: format!("n{id}"),
            color: Color::default(),
            mode: Mode::default(),
            time: None,
            sent_at: shared_model::time::now(),
        }
    }

    fn ids(items: &[Danmaku]) -> Vec<i64> {
        items.iter().map(|i| i.id).collect()
    }

    #[test]
    fn a_room_is_read_from_the_cache_only_once_loaded_and_merges_what_came_meanwhile() {
        let recent = RecentComments::new(3, 10, None);
        let room = ChannelId::parse("r").unwrap();
        recent.record(&comment("r", 1)); // not kept: nobody loaded the room
        assert_eq!(recent.latest(&room, 3), None);
        recent.begin_load(&room);
        recent.record(&comment("r", 5)); // committed while the store was read
        recent.record(&comment("other", 6));
        assert_eq!(recent.latest(&room, 3), None, "not loaded yet");
        // The store's rows: some older, one the tail already has.
        recent.finish_load(
            &room,
            vec![comment("r", 2), comment("r", 4), comment("r", 5)],
        );
        assert_eq!(ids(&recent.latest(&room, 3).unwrap()), [2, 4, 5]);
        recent.record(&comment("r", 7));
        assert_eq!(ids(&recent.latest(&room, 2).unwrap()), [5, 7]);
        assert_eq!(ids(&recent.latest(&room, 3).unwrap()), [4, 5, 7]);
        assert_eq!(recent.latest(&room, 4), None, "more than it keeps");
    }

    #[test]
    fn after_answers_only_when_the_tail_holds_everything_missed() {
        let recent = RecentComments::new(3, 10, None);
        let room = ChannelId::parse("r").unwrap();
        recent.begin_load(&room);
        recent.finish_load(&room, vec![comment("r", 1)]);
        assert_eq!(
            ids(&recent.after(&room, 0, 10).unwrap()),
            [1],
            "the whole room is in the tail"
        );
        for id in [3, 5, 8] {
            recent.record(&comment("r", id));
        }
        // The tail is 3, 5, 8: it knows what came after 3 or later, not after 2.
        assert_eq!(ids(&recent.after(&room, 3, 10).unwrap()), [5, 8]);
        assert_eq!(ids(&recent.after(&room, 4, 1).unwrap()), [5]);
        assert!(recent.after(&room, 8, 10).unwrap().is_empty());
        assert_eq!(recent.after(&room, 2, 10), None);
        assert_eq!(
            recent.after(&ChannelId::parse("unknown").unwrap(), 0, 10),
            None
        );
    }

    #[test]
    fn the_least_recently_read_room_is_pushed_out() {
        let recent = RecentComments::new(3, 2, None);
        let [a, b, c] = ["a", "b", "c"].map(|r| ChannelId::parse(r).unwrap());
        for room in [&a, &b] {
            recent.begin_load(room);
            recent.finish_load(room, Vec::new());
        }
        assert!(recent.latest(&a, 1).is_some()); // a is read after b
        recent.begin_load(&c);
        recent.finish_load(&c, Vec::new());
        assert!(recent.latest(&a, 1).is_some());
        assert!(recent.latest(&b, 1).is_none(), "b was read least recently");
        assert!(recent.latest(&c, 1).is_some());
    }
}
