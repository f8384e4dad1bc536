//! What a video connection's frames mean: `send` stores a comment and publishes it, `range`
//! answers a window of the timeline. The connection itself (heartbeat, limits, decoding) is
//! [`service_kit::ws::session`].

use std::sync::Arc;

use actix::Addr;
use service_kit::ws::{Connected, ConnectionId, LocalFuture, SessionLogic, Viewer};
use shared_model::comment::TimeRule;
use shared_model::limits::MAX_VIDEO_TIME_SECS;
use shared_model::protocol::send_to_draft;
use shared_model::{ApiError, ChannelId, ClientMessage, ErrorCode, ServerMessage, Store};

use crate::hub::{Join, Leave, VideoHub};

/// Most comments one `range` answer holds; a page asks for windows of a minute or so.
pub const MAX_RANGE_ITEMS: usize = 5_000;

/// One viewer of one video.
pub struct VideoSession {
    /// The video watched.
    pub video: ChannelId,
    /// Where comments live.
    pub store: Arc<dyn Store>,
    /// The fan-out.
    pub hub: Addr<VideoHub>,
}

impl SessionLogic for VideoSession {
    fn connect(&mut self, me: Viewer) -> LocalFuture<Connected> {
        let (hub, video) = (self.hub.clone(), self.video.clone());
        Box::pin(async move {
            let viewers = hub
                .send(Join {
                    video: video.clone(),
                    viewer: me,
                })
                .await
                .unwrap_or(1);
            Connected {
                frames: vec![ServerMessage::Hello { video, viewers }],
                seen_up_to: None,
            }
        })
    }

    fn handle(&mut self, message: ClientMessage) -> LocalFuture<Vec<ServerMessage>> {
        let reference = message.reference().cloned();
        let (store, video) = (self.store.clone(), self.video.clone());
        Box::pin(async move {
            let answer = match message {
                ClientMessage::Send {
                    text,
                    color,
                    mode,
                    time,
                    author,
                    reference,
                } => send(
                    &*store,
                    &video,
                    send_to_draft(text, color, mode, time, author, ""),
                )
                .await
                .map(|item| ServerMessage::Ack { reference, item }),
                ClientMessage::Range {
                    from,
                    to,
                    reference,
                } => range(&*store, &video, from, to)
                    .await
                    .map(|items| ServerMessage::Range {
                        from,
                        to,
                        items,
                        reference,
                    }),
                ClientMessage::Checkin { .. } | ClientMessage::Ping => Err(ApiError::new(
                    ErrorCode::UnknownType,
                    "the video service takes send, range and ping frames",
                )),
            };
            vec![answer.unwrap_or_else(|error| ServerMessage::error(error, reference))]
        })
    }

    fn disconnect(&mut self, id: ConnectionId) {
        self.hub.do_send(Leave {
            video: self.video.clone(),
            id,
        });
    }

    fn describe(&self) -> String {
        format!("video {}", self.video)
    }
}

async fn send(
    store: &dyn Store,
    video: &ChannelId,
    draft: shared_model::DraftDanmaku,
) -> Result<shared_model::Danmaku, ApiError> {
    let new = draft.validate(TimeRule::Required)?;
    let item = store.append(video, new).await.map_err(|e| {
        log::error!("video {video}: storing a comment failed: {e}");
        ApiError::internal()
    })?;
    // The hub hears of it from the store, in commit order.
    Ok(item)
}

async fn range(
    store: &dyn Store,
    video: &ChannelId,
    from: f64,
    to: f64,
) -> Result<Vec<shared_model::Danmaku>, ApiError> {
    check_window(from, to)?;
    store
        .time_window(video, from, to, MAX_RANGE_ITEMS)
        .await
        .map_err(|e| {
            log::error!("video {video}: reading a range failed: {e}");
            ApiError::internal()
        })
}

/// A window must be finite, start at 0 or later, and not end before it starts.
pub fn check_window(from: f64, to: f64) -> Result<(), ApiError> {
    if from.is_finite() && to.is_finite() && from >= 0.0 && from <= to {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidTime,
            format!(
                "a range is from <= to, both finite seconds from 0 (comments go up to {MAX_VIDEO_TIME_SECS})"
            ),
        ))
    }
}
