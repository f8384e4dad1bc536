//! The rooms hub: the one actor of a WebSocket service that knows who watches which channel (a
//! video or a live room) and fans new comments out to them.
//!
//! Both WebSocket services run this same actor. It owns the viewers of every channel, the
//! batching of comments into shared frames (naturally: see [`Publish`]), the viewer counts
//! ([`COUNT_INTERVAL`]), and the shutdown. What a service keeps per channel beside its viewers
//! (the live service's hosts and check-in) is its [`HubExtension`]; its own messages are
//! handlers on `RoomsHub<ItsExtension>` in its own crate, using [`RoomsHub::channel_mut`] and
//! [`RoomsHub::channel_entry`].
//!
//! Comments reach the hub as [`Publish`] messages, and only from [`crate::fanout`]: that is the
//! one place new comments enter, whoever stored them, on this instance or another. The hub
//! watches a channel through the fan-out while it holds it, and answers a [`Join`] only once the
//! fan-out knows where the channel's comments start, so that what a viewer then reads as history
//! and what it is pushed meet without a gap.
//!
//! Viewer counts are the room's total over every instance: the hub tells the others its own
//! counts through the fan-out's bus when they change (and every second at least), and adds theirs
//! ([`PeerViewers`]); an instance not heard from for [`PEER_COUNTS_TTL`] no longer counts.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext, Context, Handler, Message, ResponseFuture};
use futures_util::FutureExt;
use futures_util::future::Shared;
use shared_model::protocol::{ServerMessage, close};
use shared_model::{ChannelId, Danmaku};
use tokio::sync::oneshot;

use super::room::Room;
use super::{ConnectionId, Viewer};
use crate::bus::InstanceId;
use crate::fanout::{Fanout, PeerSink};

/// How often changed viewer counts are reported (at most twice a second).
pub const COUNT_INTERVAL: Duration = Duration::from_millis(500);

/// How long another instance's viewer counts stand without news from it: an instance that died
/// stops counting after this.
pub const PEER_COUNTS_TTL: Duration = Duration::from_secs(3);

/// What a service adds to the hub: state of its own per channel, and what happens when a
/// connection joins or leaves. The video service adds nothing (`()`); the live service keeps
/// each room's hosts and open check-in.
pub trait HubExtension: Unpin + Sized + 'static {
    /// Kept per channel beside its viewers.
    type Room: Default + Unpin + 'static;
    /// What a joining connection tells the hub beside its handle (say, that it is the host).
    type JoinAs: Send + 'static;
    /// What the hub answers a joining connection beside the viewer count.
    type Joined: Send + 'static;

    /// `viewer` joined `channel` (it is already among `channel.viewers`).
    fn joined(
        &mut self,
        channel: &mut Channel<Self::Room>,
        viewer: &Viewer,
        join_as: Self::JoinAs,
    ) -> Self::Joined;

    /// Connection `id` left `channel`.
    fn left(&mut self, _channel: &mut Channel<Self::Room>, _id: ConnectionId) {}

    /// Whether a channel nobody watches must be kept anyway (an open check-in has to close).
    fn keeps(&self, _room: &Self::Room) -> bool {
        false
    }
}

/// The plain hub: nothing per channel beyond its viewers (the video service).
impl HubExtension for () {
    type Room = ();
    type JoinAs = ();
    type Joined = ();

    fn joined(&mut self, _channel: &mut Channel<()>, _viewer: &Viewer, _join_as: ()) {}
}

/// One channel as the hub holds it.
#[derive(Default)]
pub struct Channel<R> {
    /// Who watches, and the comments waiting for the next flush.
    pub viewers: Room,
    /// What the service keeps of its own.
    pub ext: R,
    /// Resolves once the fan-out knows where the channel's comments start (see the module docs).
    ready: Option<Shared<oneshot::Receiver<()>>>,
}

/// The hub actor of a WebSocket service. Start it with [`RoomsHub::new`] and connect it to the
/// comments with [`crate::fanout::connect`].
pub struct RoomsHub<E: HubExtension> {
    channels: HashMap<ChannelId, Channel<E::Room>>,
    ext: E,
    /// What a channel is called in the logs ("video", "room").
    noun: &'static str,
    /// Where the hub's channels are watched; `None` in tests of the hub alone.
    fanout: Option<Fanout>,
    /// The other instances' viewers per channel, and when each was last heard from.
    peers: HashMap<InstanceId, (Instant, HashMap<ChannelId, u32>)>,
    /// The counts last told to the other instances, and when.
    told: Option<(Instant, Vec<(ChannelId, u32)>)>,
}

impl<E: HubExtension> RoomsHub<E> {
    /// A hub with `ext`, whose channels the logs call `noun`, fed by `fanout` (`None`: by
    /// [`Publish`] messages alone, as the hub's own tests do).
    pub fn new(ext: E, noun: &'static str, fanout: Option<Fanout>) -> Self {
        Self {
            channels: HashMap::new(),
            ext,
            noun,
            fanout,
            peers: HashMap::new(),
            told: None,
        }
    }

    /// The fan-out, if any.
    pub fn fanout(&self) -> Option<&Fanout> {
        self.fanout.as_ref()
    }

    /// The service's extension.
    pub fn ext(&self) -> &E {
        &self.ext
    }

    /// `channel`, if anyone watches it or the extension keeps it.
    pub fn channel_mut(&mut self, channel: &ChannelId) -> Option<&mut Channel<E::Room>> {
        self.channels.get_mut(channel)
    }

    /// `channel`, made (and watched through the fan-out) if nobody watched it yet.
    pub fn channel_entry(&mut self, channel: ChannelId) -> &mut Channel<E::Room> {
        entry(&mut self.channels, self.fanout.as_ref(), channel)
    }

    /// The other instances' viewers of `channel`.
    fn peer_viewers(&self, channel: &ChannelId) -> usize {
        self.peers
            .values()
            .filter_map(|(_, counts)| counts.get(channel))
            .map(|&n| n as usize)
            .sum()
    }

    /// Sends `channel`'s queued comments as one frame.
    fn flush(&mut self, channel: &ChannelId) {
        if let Some(found) = self.channels.get_mut(channel) {
            let dropped = found.viewers.flush();
            if dropped > 0 {
                log::info!(
                    "{} {channel}: dropped {dropped} viewers too slow to keep up",
                    self.noun
                );
            }
        }
    }

    /// Forgets the viewers found too slow, tells the other instances this one's counts, tells
    /// every channel whose total changed, and forgets channels nobody needs.
    fn report_counts(&mut self) {
        // First forget the viewers the lanes found too slow, so the counts leave them out.
        for (id, channel) in &mut self.channels {
            let gone = channel.viewers.take_gone();
            if !gone.is_empty() {
                log::info!(
                    "{} {id}: dropped {} viewers too slow to keep up",
                    self.noun,
                    gone.len()
                );
            }
            for viewer in gone {
                self.ext.left(channel, viewer);
            }
        }
        let now = Instant::now();
        self.peers
            .retain(|_, (heard, _)| now.duration_since(*heard) < PEER_COUNTS_TTL);
        if let Some(fanout) = self.fanout.as_ref().filter(|f| f.clustered()) {
            let mut counts: Vec<(ChannelId, u32)> = self
                .channels
                .iter()
                .filter(|(_, channel)| channel.viewers.viewer_count() > 0)
                .map(|(id, channel)| {
                    let n = u32::try_from(channel.viewers.viewer_count()).unwrap_or(u32::MAX);
                    (id.clone(), n)
                })
                .collect();
            counts.sort_unstable();
            // Told when they change, and at least every `PEER_COUNTS_TTL / 3` so the others keep
            // counting this instance (and it stays heard on the bus without heartbeats).
            let stale = self.told.as_ref().is_none_or(|(at, told)| {
                *told != counts || now.duration_since(*at) >= PEER_COUNTS_TTL / 3
            });
            if stale {
                fanout.tell_viewers(counts.clone());
                self.told = Some((now, counts));
            }
        }
        let others: HashMap<ChannelId, usize> = self
            .channels
            .keys()
            .map(|id| (id.clone(), self.peer_viewers(id)))
            .collect();
        for (id, channel) in &mut self.channels {
            let others = others.get(id).copied().unwrap_or(0);
            let update = channel.viewers.take_count_update(others);
            channel.viewers.announce_count(update);
        }
        let (ext, fanout) = (&self.ext, &self.fanout);
        self.channels.retain(|id, channel| {
            let keep = !channel.viewers.is_idle() || ext.keeps(&channel.ext);
            if !keep && let Some(fanout) = fanout {
                fanout.unwatch(id);
            }
            keep
        });
    }
}

/// `channel` in `channels`, made (and watched through `fanout`) if missing.
fn entry<'a, R: Default>(
    channels: &'a mut HashMap<ChannelId, Channel<R>>,
    fanout: Option<&Fanout>,
    channel: ChannelId,
) -> &'a mut Channel<R> {
    channels
        .entry(channel)
        .or_insert_with_key(|channel| Channel {
            ready: fanout.map(|f| f.watch(channel).shared()),
            viewers: Room::default(),
            ext: R::default(),
        })
}

impl<E: HubExtension> Actor for RoomsHub<E> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(COUNT_INTERVAL, |hub, _| hub.report_counts());
    }
}

/// A connection starts watching a channel.
pub struct Join<E: HubExtension> {
    /// The channel.
    pub channel: ChannelId,
    /// The connection's handle.
    pub viewer: Viewer,
    /// What the service needs to know of it.
    pub join_as: E::JoinAs,
}

impl<E: HubExtension> Message for Join<E> {
    type Result = Joined<E::Joined>;
}

/// The hub's answer to [`Join`].
#[derive(Debug)]
pub struct Joined<J> {
    /// Viewers now, this one included.
    pub viewers: usize,
    /// What the service's extension answered.
    pub ext: J,
}

impl<E: HubExtension> Handler<Join<E>> for RoomsHub<E> {
    type Result = ResponseFuture<Joined<E::Joined>>;
    fn handle(&mut self, msg: Join<E>, _ctx: &mut Context<Self>) -> Self::Result {
        let others = self.peer_viewers(&msg.channel);
        let channel = entry(&mut self.channels, self.fanout.as_ref(), msg.channel);
        let viewers = channel.viewers.join(msg.viewer.clone()) + others;
        channel.viewers.told(viewers);
        let ready = channel.ready.clone();
        let ext = self.ext.joined(channel, &msg.viewer, msg.join_as);
        Box::pin(async move {
            if let Some(ready) = ready {
                // An error means the fan-out is gone (shutting down): nothing more will come.
                let _ = ready.await;
            }
            Joined { viewers, ext }
        })
    }
}

/// Another instance's viewers per channel (all its channels with any).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerViewers {
    /// The instance.
    pub from: InstanceId,
    /// Its viewers per channel.
    pub counts: Vec<(ChannelId, u32)>,
}

impl<E: HubExtension> Handler<PeerViewers> for RoomsHub<E> {
    type Result = ();
    fn handle(&mut self, msg: PeerViewers, _ctx: &mut Context<Self>) {
        self.peers
            .insert(msg.from, (Instant::now(), msg.counts.into_iter().collect()));
    }
}

impl<E: HubExtension> PeerSink for actix::Addr<RoomsHub<E>> {
    fn viewers(&self, from: InstanceId, counts: &[(ChannelId, u32)]) {
        self.do_send(PeerViewers {
            from,
            counts: counts.to_vec(),
        });
    }
}

/// A connection stops watching.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    /// The channel.
    pub channel: ChannelId,
    /// The connection.
    pub id: ConnectionId,
}

impl<E: HubExtension> Handler<Leave> for RoomsHub<E> {
    type Result = ();
    fn handle(&mut self, msg: Leave, _ctx: &mut Context<Self>) {
        if let Some(channel) = self.channels.get_mut(&msg.channel) {
            channel.viewers.leave(msg.id);
            self.ext.left(channel, msg.id);
        }
    }
}

/// A committed comment to push to every viewer of its channel. Sent by [`crate::fanout`] only.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish {
    /// The comment, already committed.
    pub item: Danmaku,
}

/// Batching is natural, with no waiting window: the first comment of a batch asks the hub to
/// flush its channel ([`ctx.notify`](AsyncContext::notify)), which the hub does once it has
/// handled the messages already in its mailbox. A quiet room's comment goes out the moment it
/// arrives; in a busy room, whatever arrived while the hub was busy with the previous frame goes
/// out together, as one frame serialized once.
impl<E: HubExtension> Handler<Publish> for RoomsHub<E> {
    type Result = ();
    fn handle(&mut self, msg: Publish, ctx: &mut Context<Self>) {
        let channel = msg.item.channel.clone();
        let Some(found) = self.channels.get_mut(&channel) else {
            return; // nobody watching
        };
        if found.viewers.queue(msg.item) {
            ctx.notify(Flush { channel });
        }
    }
}

/// A moderator deleted a comment: it is taken out of the batch waiting to go out, if it is
/// there, and every viewer of its channel is told to take it off the screen. Sent by
/// [`crate::fanout`] only.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unpublish {
    /// The comment's channel.
    pub channel: ChannelId,
    /// Its id.
    pub id: i64,
}

impl<E: HubExtension> Handler<Unpublish> for RoomsHub<E> {
    type Result = ();
    fn handle(&mut self, msg: Unpublish, _ctx: &mut Context<Self>) {
        if let Some(found) = self.channels.get_mut(&msg.channel) {
            found.viewers.unqueue(msg.id);
            found
                .viewers
                .broadcast(&ServerMessage::Deleted { ids: vec![msg.id] });
        }
    }
}

/// Sends a channel's queued comments as one frame (the hub asks itself; see [`Publish`]).
#[derive(Message)]
#[rtype(result = "()")]
struct Flush {
    channel: ChannelId,
}

impl<E: HubExtension> Handler<Flush> for RoomsHub<E> {
    type Result = ();
    fn handle(&mut self, msg: Flush, _ctx: &mut Context<Self>) {
        self.flush(&msg.channel);
    }
}

/// The service is stopping: send what is queued, then close every connection with
/// [`close::GOING_AWAY`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl<E: HubExtension> Handler<Shutdown> for RoomsHub<E> {
    type Result = ();
    fn handle(&mut self, _msg: Shutdown, _ctx: &mut Context<Self>) {
        for (id, channel) in &mut self.channels {
            channel.viewers.flush();
            channel
                .viewers
                .close_all(close::GOING_AWAY, "the server is shutting down");
            if let Some(fanout) = &self.fanout {
                fanout.unwatch(id);
            }
        }
        self.channels.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use crate::ws::test_comment;
    use actix::Addr;
    use futures_util::StreamExt;

    use super::*;
    use crate::ws::Outgoing;

    /// A stand-in connection that keeps every frame the hub sends it.
    fn viewer(id: ConnectionId) -> (Viewer, Arc<Mutex<Vec<serde_json::Value>>>) {
        let frames = Arc::new(Mutex::new(Vec::new()));
        let (viewer, mut outbox) = Viewer::new(id, 64);
        let kept = frames.clone();
        actix_rt::spawn(async move {
            while let Some(batch) = outbox.next().await {
                for outgoing in batch {
                    let text = match outgoing {
                        Outgoing::Frame { text: frame, .. } | Outgoing::Comments { frame, .. } => {
                            frame.to_string()
                        }
                        Outgoing::Close { code, .. } => {
                            format!("{{\"type\":\"close\",\"code\":{code}}}")
                        }
                    };
                    let frame = serde_json::from_str(&text).expect("the hub sends JSON");
                    kept.lock().expect("not poisoned").push(frame);
                }
            }
        });
        (viewer, frames)
    }

    fn types(frames: &Mutex<Vec<serde_json::Value>>) -> Vec<String> {
        let frames = frames.lock().unwrap();
        frames
            .iter()
            .map(|f| f["type"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Waits (up to 5 s) for the first frame `wanted` accepts.
    async fn first_frame(
        frames: &Mutex<Vec<serde_json::Value>>,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            if let Some(found) = frames.lock().unwrap().iter().find(|f| wanted(f)) {
                return found.clone();
            }
            assert!(std::time::Instant::now() < deadline, "no such frame");
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[actix_rt::test]
    async fn comments_published_together_go_out_as_one_frame_in_id_order_to_their_channel_only() {
        let hub = RoomsHub::new((), "video", None).start();
        let (a, a_frames) = viewer(1);
        let (b, b_frames) = viewer(2);
        let a_channel = ChannelId::parse("a").unwrap();
        let joined = hub
            .send(Join::<()> {
                channel: a_channel.clone(),
                viewer: a,
                join_as: (),
            })
            .await
            .unwrap();
        assert_eq!(joined.viewers, 1);
        hub.send(Join::<()> {
            channel: ChannelId::parse("b").unwrap(),
            viewer: b,
            join_as: (),
        })
        .await
        .unwrap();
        for id in [2, 1, 3] {
            hub.do_send(Publish {
                item: test_comment("a", id),
            });
        }
        // Published while the hub was busy (all three were in its mailbox before it flushed):
        // the first frame holds all three, sorted.
        let batch = first_frame(&a_frames, |f| f["type"] == "danmaku").await;
        let ids: Vec<_> = batch["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, [1, 2, 3]);
        assert!(
            !types(&b_frames).contains(&"danmaku".to_owned()),
            "channel b got channel a's comments"
        );
        hub.send(Leave {
            channel: a_channel,
            id: 1,
        })
        .await
        .unwrap();
    }

    /// Joins `viewers` to the channel `lobby`, one after the other.
    async fn join_lobby(hub: &Addr<RoomsHub<()>>, viewers: impl IntoIterator<Item = Viewer>) {
        for viewer in viewers {
            hub.send(Join::<()> {
                channel: ChannelId::parse("lobby").unwrap(),
                viewer,
                join_as: (),
            })
            .await
            .unwrap();
        }
    }

    #[actix_rt::test]
    async fn viewer_counts_are_reported_after_joins_and_shutdown_closes_with_1001() {
        let hub = RoomsHub::new((), "room", None).start();
        let (first, frames) = viewer(1);
        let (second, _) = viewer(2);
        join_lobby(&hub, [first, second]).await;
        // Counts go out on the hub's timer.
        first_frame(&frames, |f| f["type"] == "viewers" && f["count"] == 2).await;
        hub.send(Shutdown).await.unwrap();
        let close = first_frame(&frames, |f| f["type"] == "close").await;
        assert_eq!(close["code"], close::GOING_AWAY);
    }

    #[actix_rt::test]
    async fn a_viewer_too_slow_is_closed_by_its_lane_and_leaves_the_count() {
        let hub = RoomsHub::new((), "room", None).start();
        let (reader, frames) = viewer(1);
        // A session that never drains its queue of 2.
        let (stalled, mut stalled_outbox) = Viewer::new(2, 2);
        assert!(
            stalled.lane.is_some(),
            "made on an arbiter, so it has a lane"
        );
        join_lobby(&hub, [reader, stalled]).await;
        first_frame(&frames, |f| f["type"] == "viewers" && f["count"] == 2).await;
        for id in 1..=5 {
            hub.send(Publish {
                item: test_comment("lobby", id),
            })
            .await
            .unwrap();
            // One frame each: let the hub flush before the next.
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        // The reader got all five; the stalled one is forgotten at the next report.
        first_frame(&frames, |f| {
            f["type"] == "danmaku" && f["items"][0]["id"] == 5
        })
        .await;
        first_frame(&frames, |f| f["type"] == "viewers" && f["count"] == 1).await;
        // What the stalled one finds when it finally reads: only the close.
        let batch = stalled_outbox.next().await.unwrap();
        assert!(
            matches!(
                batch.iter().collect::<Vec<_>>()[..],
                [Outgoing::Close {
                    code: close::POLICY_VIOLATION,
                    ..
                }]
            ),
            "{batch:?}"
        );
    }
}
