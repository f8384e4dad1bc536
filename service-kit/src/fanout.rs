//! The one path by which a new comment reaches the clients waiting for it, from this instance or
//! from any other.
//!
//! Whatever stores a comment (a WebSocket `send`, an HTTP post, the DPlayer API), the store
//! reports it here right after its commit; with a bus ([`crate::bus`]), so do the other instances
//! of the service for what they commit. No route tells anyone of a comment it stored, so every
//! comment reaches every waiting client the same way, and only after it is durable.
//!
//! Two kinds of consumer:
//!
//! - **Ordered** ([`CommentSink`]: the rooms hub, a live room's recent comments) get each
//!   comment of the channels they [`Fanout::watch`] exactly once and in id order, whichever
//!   instance committed it. Ids are dense within a channel (both stores take the next id under
//!   the channel's lock), so a comment whose predecessor has not arrived waits for it; if it does
//!   not come within [`REORDER_WINDOW`] (a message lost while Redis was away, say), the
//!   missing ids are read from the store, which is the record. After the bus reconnects, every
//!   watched channel reads what it missed the same way. A watch starts from the channel's newest
//!   id in the store: everything up to it is the watcher's to read (its history), everything
//!   after it is delivered.
//! - **Wake-ups** ([`WakeSink`]: long polls) hear of every comment of every channel once, in
//!   whatever order it arrives; they read the store themselves.
//!
//! Other instances' viewer counts and a service's own events (a check-in opened elsewhere) go
//! to [`PeerSink`]s.
//!
//! The ordering runs in one task (the sequencer), so no lock is taken per comment beyond the
//! channel into it; the store's writer thread only hands comments over.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use actix::Addr;
use danmaku_store::{Committed, Store, StoreError};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use shared_model::{ChannelId, Danmaku};
use tokio::sync::{mpsc, oneshot};

use crate::ServerArgs;
use crate::bus::{Bus, BusEvent, BusListener, BusStatus, InstanceId};
use crate::ws::hub::{HubExtension, Publish, RoomsHub, Unpublish};

/// How long a comment waits for its predecessor before the missing ids are read from the store.
pub const REORDER_WINDOW: Duration = Duration::from_millis(100);

/// Comments read from the store at once when filling a gap.
const FILL_LIMIT: usize = 1_000;

/// Something that must hear, in id order and once, of every comment of the channels watched
/// through the fan-out. Called on the sequencer's task: keep it short and non-blocking (hand the
/// comment to an actor or a channel).
pub trait CommentSink: Send + Sync + 'static {
    /// `item` was committed.
    fn deliver(&self, item: &Danmaku);

    /// A moderator deleted comment `id` of `channel` (a watched one), after it was delivered or
    /// instead of it: drop it wherever it is kept or shown.
    fn deleted(&self, _channel: &ChannelId, _id: i64) {}
}

impl<E: HubExtension> CommentSink for Addr<RoomsHub<E>> {
    fn deliver(&self, item: &Danmaku) {
        self.do_send(Publish { item: item.clone() });
    }

    fn deleted(&self, channel: &ChannelId, id: i64) {
        self.do_send(Unpublish {
            channel: channel.clone(),
            id,
        });
    }
}

/// Something that must hear that a channel has something new, whatever the order (long polls,
/// which then read the store). Called on the store's writer thread or the bus's task: keep it
/// short.
pub trait WakeSink: Send + Sync + 'static {
    /// `channel` has comments up to `id`.
    fn committed(&self, channel: &ChannelId, id: i64);
    /// A moderator deleted comment `id` of `channel`.
    fn deleted(&self, _channel: &ChannelId, _id: i64) {}
    /// The channels it waits on, for a catch-up after the bus reconnected.
    fn channels(&self) -> Vec<ChannelId>;
}

/// Something that hears what the other instances say besides comments.
pub trait PeerSink: Send + Sync + 'static {
    /// Instance `from` has these viewers per channel (all of its channels with any).
    fn viewers(&self, _from: InstanceId, _counts: &[(ChannelId, u32)]) {}
    /// Instance `from` sent a service's own `event`.
    fn service(&self, _from: InstanceId, _event: &serde_json::Value) {}
}

/// The fan-out of one service instance. Cheap to clone.
#[derive(Clone)]
pub struct Fanout {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout")
            .field("clustered", &self.clustered())
            .finish_non_exhaustive()
    }
}

struct Inner {
    store: Arc<dyn Store>,
    /// Into the sequencer task.
    sequencer: mpsc::UnboundedSender<Input>,
    /// Read far more often than written (once per sink at start): an `RwLock`.
    wake: RwLock<Vec<Arc<dyn WakeSink>>>,
    peers: RwLock<Vec<Arc<dyn PeerSink>>>,
    bus: OnceLock<Bus>,
}

/// What the sequencer is told.
enum Input {
    Sink(Box<dyn CommentSink>),
    Watch {
        channel: ChannelId,
        ready: oneshot::Sender<()>,
    },
    Unwatch(ChannelId),
    Comment(Danmaku),
    Imported {
        channel: ChannelId,
        first: i64,
        last: i64,
    },
    /// A moderator deleted comment `id` of `channel`.
    Deleted {
        channel: ChannelId,
        id: i64,
    },
    /// Committed up to `last`: whatever of it has not arrived is read from the store.
    Committed {
        channel: ChannelId,
        last: i64,
    },
    /// The bus reconnected: every watched channel reads what it missed.
    CatchUp,
}

impl Fanout {
    /// The fan-out of comments committed to `store` by this instance and, with a bus in
    /// `settings`, by every other instance of `service` on it. Starts its tasks: call it inside
    /// the runtime.
    pub fn start(store: Arc<dyn Store>, settings: &ServerArgs, service: &str) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            store: store.clone(),
            sequencer: tx,
            wake: RwLock::default(),
            peers: RwLock::default(),
            bus: OnceLock::new(),
        });
        tokio::spawn(sequence(store.clone(), rx));
        // The store and the bus hold the fan-out weakly: it lives as long as the service does.
        let weak = Arc::downgrade(&inner);
        store.on_append(Box::new(move |what| {
            if let Some(inner) = weak.upgrade() {
                inner.local(what);
            }
        }));
        if let Some(url) = &settings.bus {
            let listener = Arc::new(Listener(Arc::downgrade(&inner)));
            let channel = settings
                .bus_channel
                .clone()
                .unwrap_or_else(|| format!("danmaku.{service}"));
            let bus = Bus::start(url, &channel, listener);
            let _ = inner.bus.set(bus);
        }
        Self { inner }
    }

    /// Adds an ordered consumer.
    pub fn connect(&self, sink: impl CommentSink) {
        let _ = self.inner.sequencer.send(Input::Sink(Box::new(sink)));
    }

    /// Adds a wake-up consumer.
    pub fn connect_wake(&self, sink: Arc<dyn WakeSink>) {
        write(&self.inner.wake).push(sink);
    }

    /// Adds a consumer of what other instances say besides comments.
    pub fn connect_peers(&self, sink: Arc<dyn PeerSink>) {
        write(&self.inner.peers).push(sink);
    }

    /// Starts delivering `channel`'s comments to the ordered consumers (once per call; undo
    /// with [`Self::unwatch`]). The answer comes once the channel's starting point is known:
    /// read its history after that, and everything newer will be delivered.
    pub fn watch(&self, channel: &ChannelId) -> oneshot::Receiver<()> {
        let (ready, answer) = oneshot::channel();
        let _ = self.inner.sequencer.send(Input::Watch {
            channel: channel.clone(),
            ready,
        });
        answer
    }

    /// Undoes one [`Self::watch`] of `channel`.
    pub fn unwatch(&self, channel: &ChannelId) {
        let _ = self.inner.sequencer.send(Input::Unwatch(channel.clone()));
    }

    /// Sends a service's own event to the other instances (nothing without a bus).
    pub fn tell_peers(&self, event: serde_json::Value) {
        if let Some(bus) = self.inner.bus.get() {
            bus.publish(BusEvent::Service { event });
        }
    }

    /// Sends this instance's viewers per channel to the other instances (nothing without a bus).
    pub fn tell_viewers(&self, counts: Vec<(ChannelId, u32)>) {
        if let Some(bus) = self.inner.bus.get() {
            bus.publish(BusEvent::Viewers { counts });
        }
    }

    /// Whether this instance has a bus.
    pub fn clustered(&self) -> bool {
        self.inner.bus.get().is_some()
    }

    /// The bus's state, if there is a bus.
    pub fn bus_status(&self) -> Option<BusStatus> {
        self.inner.bus.get().map(Bus::status)
    }
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    // Every write is one push: a panic elsewhere cannot leave the list half-changed.
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Inner {
    /// The store committed `what` (on its own thread).
    fn local(&self, what: Committed<'_>) {
        let (input, event) = match what {
            Committed::Comment(item) => {
                for sink in read(&self.wake).iter() {
                    sink.committed(&item.channel, item.id);
                }
                (
                    Input::Comment(item.clone()),
                    self.bus
                        .get()
                        .is_some()
                        .then(|| BusEvent::Comment { item: item.clone() }),
                )
            }
            Committed::Imported {
                channel,
                first,
                last,
            } => (
                Input::Imported {
                    channel: channel.clone(),
                    first,
                    last,
                },
                Some(BusEvent::Imported {
                    channel: channel.clone(),
                    first,
                    last,
                }),
            ),
            Committed::Deleted { channel, id } => {
                for sink in read(&self.wake).iter() {
                    sink.deleted(channel, id);
                }
                (
                    Input::Deleted {
                        channel: channel.clone(),
                        id,
                    },
                    Some(BusEvent::Deleted {
                        channel: channel.clone(),
                        id,
                    }),
                )
            }
        };
        if let (Some(bus), Some(event)) = (self.bus.get(), event) {
            bus.publish(event);
        }
        let _ = self.sequencer.send(input);
    }

    /// Catches the wake-up consumers up after the bus reconnected: each channel they wait on is
    /// told its newest id.
    fn catch_up_wake(&self) {
        let sinks: Vec<_> = read(&self.wake).clone();
        if sinks.is_empty() {
            return;
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            for sink in sinks {
                for channel in sink.channels() {
                    match store.last_id(&channel).await {
                        Ok(last) if last > 0 => sink.committed(&channel, last),
                        Ok(_) => {}
                        Err(e) => log::warn!("catching up {channel} after the bus: {e}"),
                    }
                }
            }
        });
    }
}

/// What the bus hears, handed to the fan-out while the service lives.
struct Listener(Weak<Inner>);

impl BusListener for Listener {
    fn heard(&self, from: InstanceId, event: BusEvent) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        let input = match event {
            BusEvent::Comment { item } => {
                for sink in read(&inner.wake).iter() {
                    sink.committed(&item.channel, item.id);
                }
                Input::Comment(item)
            }
            BusEvent::Imported {
                channel,
                first,
                last,
            } => Input::Imported {
                channel,
                first,
                last,
            },
            BusEvent::Deleted { channel, id } => {
                for sink in read(&inner.wake).iter() {
                    sink.deleted(&channel, id);
                }
                Input::Deleted { channel, id }
            }
            BusEvent::Committed { channel, last } => {
                for sink in read(&inner.wake).iter() {
                    sink.committed(&channel, last);
                }
                Input::Committed { channel, last }
            }
            BusEvent::Viewers { counts } => {
                for sink in read(&inner.peers).iter() {
                    sink.viewers(from, &counts);
                }
                return;
            }
            BusEvent::Service { event } => {
                for sink in read(&inner.peers).iter() {
                    sink.service(from, &event);
                }
                return;
            }
            BusEvent::Heartbeat => return,
        };
        let _ = inner.sequencer.send(input);
    }

    fn reconnected(&self) {
        if let Some(inner) = self.0.upgrade() {
            let _ = inner.sequencer.send(Input::CatchUp);
            inner.catch_up_wake();
        }
    }
}

/// A comment waiting for its predecessors, or the ids an import took.
enum Held {
    Comment(Danmaku),
    /// Ids up to this one (from the key) were an import's.
    Skip(i64),
}

impl Held {
    /// The last id this covers, from `first`.
    fn end(&self, first: i64) -> i64 {
        match self {
            Self::Comment(_) => first,
            Self::Skip(last) => *last,
        }
    }
}

/// One watched channel's place in its sequence.
#[derive(Default)]
struct Seq {
    /// Watches not undone.
    watchers: usize,
    /// Who waits for the starting point, while it is being read.
    loading: Option<Vec<oneshot::Sender<()>>>,
    /// The newest id delivered (or known to be history); `None` until the first comment when
    /// the starting point could not be read.
    delivered: Option<i64>,
    /// What arrived ahead of a missing id, by first id.
    pending: BTreeMap<i64, Held>,
    /// The newest id known to be committed.
    known: i64,
    /// Since when an id has been missing.
    gap_since: Option<Instant>,
    /// A read of the missing ids is under way.
    filling: bool,
    /// The bus reconnected: read whatever came meanwhile, even with no id known missing.
    catch_up: bool,
}

impl Seq {
    fn hold(&mut self, first: i64, held: Held) {
        self.known = self.known.max(held.end(first));
        if self.delivered.is_none_or(|d| held.end(first) > d) {
            self.pending.entry(first).or_insert(held);
        }
    }

    /// Delivers what follows without a gap (ids up to `holes_up_to` that never came are taken
    /// as never stored), into `out`.
    fn drain(&mut self, holes_up_to: i64, out: &mut Vec<Danmaku>) {
        while let Some(entry) = self.pending.first_entry() {
            let first = *entry.key();
            let end = entry.get().end(first);
            if let Some(d) = self.delivered {
                if end <= d {
                    entry.remove();
                    continue;
                }
                if first > d + 1 && first > holes_up_to + 1 {
                    break;
                }
            }
            self.delivered = Some(end.max(self.delivered.unwrap_or(end)));
            if let Held::Comment(item) = entry.remove() {
                out.push(item);
            }
        }
        if let Some(d) = self.delivered
            && holes_up_to > d
            && self.pending.is_empty()
        {
            self.delivered = Some(holes_up_to);
        }
    }

    /// Whether an id is missing.
    fn has_gap(&self) -> bool {
        match self.delivered {
            Some(d) => self.catch_up || !self.pending.is_empty() || self.known > d,
            None => false,
        }
    }
}

/// A store read the sequencer started.
enum Read {
    Start {
        channel: ChannelId,
        result: Result<i64, StoreError>,
    },
    Fill {
        channel: ChannelId,
        /// The newest id known committed when the read started.
        known: i64,
        result: Result<Vec<Danmaku>, StoreError>,
    },
}

/// The sequencer task: every ordered delivery happens here, in one place.
async fn sequence(store: Arc<dyn Store>, mut inputs: mpsc::UnboundedReceiver<Input>) {
    let mut sinks: Vec<Box<dyn CommentSink>> = Vec::new();
    let mut channels: HashMap<ChannelId, Seq> = HashMap::new();
    let mut gaps: HashSet<ChannelId> = HashSet::new();
    let mut reads: FuturesUnordered<BoxFuture<'static, Read>> = FuturesUnordered::new();
    let mut out = Vec::new();
    loop {
        let next_fill = gaps
            .iter()
            .filter_map(|c| channels.get(c))
            .filter(|seq| !seq.filling)
            .filter_map(|seq| seq.gap_since)
            .min()
            .map(|since| since + REORDER_WINDOW);
        let touched: Option<ChannelId> = tokio::select! {
            input = inputs.recv() => {
                let Some(input) = input else { return };
                match input {
                    Input::Sink(sink) => { sinks.push(sink); None }
                    Input::Watch { channel, ready } => {
                        let seq = channels.entry(channel.clone()).or_default();
                        seq.watchers += 1;
                        if seq.watchers == 1 {
                            seq.loading = Some(Vec::new());
                            let store = store.clone();
                            let channel = channel.clone();
                            reads.push(Box::pin(async move {
                                let result = store.last_id(&channel).await;
                                Read::Start { channel, result }
                            }));
                        }
                        match &mut seq.loading {
                            Some(waiting) => waiting.push(ready),
                            None => { let _ = ready.send(()); }
                        }
                        None
                    }
                    Input::Unwatch(channel) => {
                        if let Some(seq) = channels.get_mut(&channel) {
                            seq.watchers = seq.watchers.saturating_sub(1);
                            if seq.watchers == 0 {
                                channels.remove(&channel);
                                gaps.remove(&channel);
                            }
                        }
                        None
                    }
                    Input::Comment(item) => {
                        let channel = item.channel.clone();
                        channels.get_mut(&channel).map(|seq| {
                            seq.hold(item.id, Held::Comment(item));
                            channel
                        })
                    }
                    Input::Imported { channel, first, last } => {
                        channels.get_mut(&channel).map(|seq| {
                            seq.hold(first, Held::Skip(last));
                            channel
                        })
                    }
                    Input::Deleted { channel, id } => {
                        if let Some(seq) = channels.get_mut(&channel) {
                            // Not delivered yet (waiting for a predecessor): it never will be.
                            if let Some(held @ Held::Comment(_)) = seq.pending.get_mut(&id) {
                                *held = Held::Skip(id);
                            }
                            for sink in &sinks {
                                sink.deleted(&channel, id);
                            }
                        }
                        None
                    }
                    Input::Committed { channel, last } => {
                        channels.get_mut(&channel).map(|seq| {
                            seq.known = seq.known.max(last);
                            seq.gap_since = Some(Instant::now() - REORDER_WINDOW);
                            channel
                        })
                    }
                    Input::CatchUp => {
                        for (channel, seq) in &mut channels {
                            if seq.loading.is_none() && !seq.filling {
                                seq.gap_since = Some(Instant::now() - REORDER_WINDOW);
                                seq.catch_up = true;
                                gaps.insert(channel.clone());
                            }
                        }
                        None
                    }
                }
            }
            Some(done) = reads.next(), if !reads.is_empty() => {
                match done {
                    Read::Start { channel, result } => {
                        channels.get_mut(&channel).map(|seq| {
                            match result {
                                Ok(last) => seq.delivered = Some(last),
                                Err(e) => log::warn!(
                                    "{channel}: cannot read where its comments start ({e}); \
                                     starting at the next one"
                                ),
                            }
                            for ready in seq.loading.take().unwrap_or_default() {
                                let _ = ready.send(());
                            }
                            channel
                        })
                    }
                    Read::Fill { channel, known, result } => {
                        channels.get_mut(&channel).map(|seq| {
                            seq.filling = false;
                            let rows = match result {
                                Ok(rows) => rows,
                                Err(e) => {
                                    log::warn!("{channel}: cannot read missing comments: {e}");
                                    seq.gap_since = Some(Instant::now());
                                    return channel;
                                }
                            };
                            let complete = rows.len() < FILL_LIMIT;
                            let top = rows.last().map_or(0, |r| r.id);
                            for row in rows {
                                seq.hold(row.id, Held::Comment(row));
                            }
                            // Everything up to what was known when the read started was in
                            // the store then: what the read did not find never will be.
                            let holes_up_to = if complete { top.max(known) } else { top };
                            seq.drain(holes_up_to, &mut out);
                            if !complete {
                                seq.gap_since = Some(Instant::now() - REORDER_WINDOW);
                            }
                            channel
                        })
                    }
                }
            }
            () = sleep_until(next_fill), if next_fill.is_some() => {
                let now = Instant::now();
                for channel in &gaps {
                    let Some(seq) = channels.get_mut(channel) else { continue };
                    if seq.filling || seq.gap_since.is_none_or(|since| since + REORDER_WINDOW > now) {
                        continue;
                    }
                    let Some(after) = seq.delivered else { continue };
                    seq.filling = true;
                    seq.catch_up = false;
                    let (store, channel, known) = (store.clone(), channel.clone(), seq.known);
                    reads.push(Box::pin(async move {
                        let result = store.after(&channel, after, FILL_LIMIT).await;
                        Read::Fill { channel, known, result }
                    }));
                }
                None
            }
        };
        let Some(channel) = touched else { continue };
        let Some(seq) = channels.get_mut(&channel) else {
            continue;
        };
        if seq.loading.is_none() {
            seq.drain(i64::MIN, &mut out);
        }
        if seq.has_gap() || seq.filling {
            seq.gap_since.get_or_insert_with(Instant::now);
            gaps.insert(channel);
        } else {
            seq.gap_since = None;
            gaps.remove(&channel);
        }
        for item in out.drain(..) {
            for sink in &sinks {
                sink.deliver(&item);
            }
        }
    }
}

/// Sleeps until `at` (never called without one).
async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}
