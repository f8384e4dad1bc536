//! The hub: one actor that knows who watches which video and fans new comments out to them.
//!
//! Comments that arrive within [`BATCH_WINDOW`] of each other go out as one `danmaku` frame,
//! serialized once for all viewers of the video. Viewer counts go out at most every
//! [`COUNT_INTERVAL`]. A viewer too slow to take a frame is dropped (see
//! [`service_kit::ws::Viewer::push`]); the others are not held up.

use std::collections::HashMap;
use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler, Message};
use service_kit::ws::room::Room;
use service_kit::ws::{ConnectionId, Viewer};
use shared_model::{ChannelId, Danmaku};

/// How long the first comment of a batch waits for others to share its frame.
pub const BATCH_WINDOW: Duration = Duration::from_millis(5);

/// How often changed viewer counts are reported (the contract allows twice a second).
pub const COUNT_INTERVAL: Duration = Duration::from_millis(500);

/// Keeps the viewers of every video being watched.
#[derive(Default)]
pub struct VideoHub {
    videos: HashMap<ChannelId, Room>,
}

impl VideoHub {
    fn flush(&mut self, video: &ChannelId) {
        if let Some(room) = self.videos.get_mut(video) {
            let dropped = room.flush();
            if dropped > 0 {
                log::info!("video {video}: dropped {dropped} viewers too slow to keep up");
            }
        }
    }

    fn report_counts(&mut self) {
        for room in self.videos.values_mut() {
            if let Some(update) = room.take_count_update() {
                room.broadcast(&update);
            }
        }
        self.videos.retain(|_, room| !room.is_idle());
    }
}

impl Actor for VideoHub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(COUNT_INTERVAL, |hub, _| hub.report_counts());
    }
}

/// A connection starts watching a video.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Join {
    /// The video.
    pub video: ChannelId,
    /// The connection's handle.
    pub viewer: Viewer,
}

impl Handler<Join> for VideoHub {
    type Result = usize;
    fn handle(&mut self, msg: Join, _ctx: &mut Context<Self>) -> usize {
        self.videos.entry(msg.video).or_default().join(msg.viewer)
    }
}

/// A connection stops watching.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    /// The video.
    pub video: ChannelId,
    /// The connection.
    pub id: ConnectionId,
}

impl Handler<Leave> for VideoHub {
    type Result = ();
    fn handle(&mut self, msg: Leave, _ctx: &mut Context<Self>) {
        if let Some(room) = self.videos.get_mut(&msg.video) {
            room.leave(msg.id);
        }
    }
}

/// A stored comment to push to every viewer of its video.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish {
    /// The comment, already acknowledged by the store.
    pub item: Danmaku,
}

impl Handler<Publish> for VideoHub {
    type Result = ();
    fn handle(&mut self, msg: Publish, ctx: &mut Context<Self>) {
        let video = msg.item.channel.clone();
        let Some(room) = self.videos.get_mut(&video) else {
            return; // nobody watching
        };
        if room.queue(msg.item) {
            ctx.run_later(BATCH_WINDOW, move |hub, _| hub.flush(&video));
        }
    }
}

/// The service is stopping: close every connection with 1001.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for VideoHub {
    type Result = ();
    fn handle(&mut self, _msg: Shutdown, _ctx: &mut Context<Self>) {
        for room in self.videos.values_mut() {
            room.flush();
            room.close_all(
                shared_model::protocol::close::GOING_AWAY,
                "the server is shutting down",
            );
        }
        self.videos.clear();
    }
}
