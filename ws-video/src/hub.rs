//! The video hub: the shared rooms hub ([`service_kit::ws::hub::RoomsHub`]) with nothing of the
//! video service's own, since a video's channel is just its viewers. Comments reach it from
//! `service_kit::fanout`, in commit order, whichever route stored them.

use service_kit::fanout::Fanout;
use service_kit::ws::hub::RoomsHub;

/// Knows who watches which video, batches new comments into shared frames, reports counts.
pub type VideoHub = RoomsHub<()>;

/// A fresh video hub fed by `fanout`, not started yet.
pub fn new(fanout: Fanout) -> VideoHub {
    RoomsHub::new((), "video", Some(fanout))
}
