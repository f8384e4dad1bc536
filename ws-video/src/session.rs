//! What a video connection's frames mean: `send` pins a comment to the timeline, `range`
//! answers a window of it. The connection itself (heartbeat, limits, decoding) is
//! [`service_kit::ws::session`]; the timeline's rules are [`crate::timeline`].
//!
//! A `range` needs one token of the read budget its HTTP requests spend too before the store is
//! asked, and then costs the rows it returns (at most [`crate::timeline::MAX_RANGE_ITEMS`]; see
//! [`crate::budget`]); without a token, the answer is a `rate_limited` error frame, the store is
//! not asked, and the connection stays.

use actix::Addr;
use service_kit::ws::hub::{Join, Leave};
use service_kit::ws::{Client, Connected, ConnectionId, LocalFuture, SessionLogic, Viewer};
use shared_model::protocol::send_to_draft;
use shared_model::{ApiError, ChannelId, ClientMessage, ErrorCode, ServerMessage};

use crate::hub::VideoHub;
use crate::timeline::{Timeline, check_window};

/// One viewer of one video.
pub struct VideoSession {
    /// The video watched.
    pub video: ChannelId,
    /// The comments and their rules.
    pub timeline: Timeline,
    /// The fan-out.
    pub hub: Addr<VideoHub>,
    /// Who is at the other end, whose read budget (shared with the HTTP routes) a `range`
    /// spends.
    pub client: Client,
}

impl SessionLogic for VideoSession {
    fn connect(&mut self, me: Viewer) -> LocalFuture<Connected> {
        let (hub, video) = (self.hub.clone(), self.video.clone());
        Box::pin(async move {
            let viewers = hub
                .send(Join {
                    channel: video.clone(),
                    viewer: me,
                    join_as: (),
                })
                .await
                .map_or(1, |joined| joined.viewers);
            Connected {
                frames: vec![ServerMessage::Hello { video, viewers }],
                seen_up_to: None,
            }
        })
    }

    fn handle(&mut self, message: ClientMessage) -> LocalFuture<Result<ServerMessage, ApiError>> {
        let (timeline, video) = (self.timeline.clone(), self.video.clone());
        let client = self.client.clone();
        Box::pin(async move {
            match message {
                ClientMessage::Send {
                    text,
                    color,
                    mode,
                    time,
                    author,
                    reference,
                } => {
                    let new = Timeline::pin(send_to_draft(text, color, mode, time, author, ""))?;
                    let item = timeline.append(&video, new).await?;
                    Ok(ServerMessage::Ack { reference, item })
                }
                ClientMessage::Range {
                    from,
                    to,
                    reference,
                } => {
                    // A malformed window costs nothing; a refused one never reaches the store.
                    check_window(from, to)?;
                    let ticket = client.admit_read("a range")?;
                    let items = timeline.window(&video, from, to).await?;
                    ticket.pay(items.len());
                    Ok(ServerMessage::Range {
                        from,
                        to,
                        items,
                        reference,
                    })
                }
                ClientMessage::Checkin { .. } | ClientMessage::Ping => Err(ApiError::new(
                    ErrorCode::UnknownType,
                    "the video service takes send, range and ping frames",
                )),
            }
        })
    }

    fn disconnect(&mut self, id: ConnectionId) {
        self.hub.do_send(Leave {
            channel: self.video.clone(),
            id,
        });
    }

    fn describe(&self) -> String {
        format!("video {}", self.video)
    }
}
