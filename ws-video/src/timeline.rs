//! The rules of a video's timeline, the same whichever way a client comes in (the WebSocket
//! session, the HTTP routes, DPlayer): a comment is pinned to a time in the video, and the
//! timeline is read in windows.

use std::collections::HashMap;
use std::sync::Arc;

use danmaku_store::Store;
use service_kit::moderation::Moderation;
use shared_model::comment::TimeRule;
use shared_model::limits::MAX_VIDEO_TIME_SECS;
use shared_model::{ApiError, ChannelId, Danmaku, DraftDanmaku, ErrorCode, NewDanmaku};

/// Most comments one window holds; a page asks for windows of a minute or so.
pub const MAX_RANGE_ITEMS: usize = 5_000;

/// The end of a window that asks for no end: past the end of any video.
pub const WHOLE_VIDEO_END: f64 = MAX_VIDEO_TIME_SECS + 1.0;

/// The comments of every video. Cheap to clone.
#[derive(Clone)]
pub struct Timeline {
    store: Arc<dyn Store>,
    /// Mutes and banned words (set with the admin token), checked before a comment is stored.
    moderation: Moderation,
}

impl Timeline {
    /// The timelines kept in `store`, moderated by `moderation`.
    pub fn new(store: Arc<dyn Store>, moderation: Moderation) -> Self {
        Self { store, moderation }
    }

    /// Where the comments live (for the archive formats, which read and write whole videos).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Checks `draft` against the rules of a comment, which on a video include a time.
    pub fn pin(draft: DraftDanmaku) -> Result<NewDanmaku, ApiError> {
        draft.validate(TimeRule::Required)
    }

    /// Stores a checked comment; returns once it is committed. Viewers hear of it from the store
    /// (see `service_kit::fanout`), in commit order, not from here.
    pub async fn append(&self, video: &ChannelId, new: NewDanmaku) -> Result<Danmaku, ApiError> {
        self.moderation.check(video, &new.author, &new.text).await?;
        self.store.append(video, new).await.map_err(|e| {
            log::error!("video {video}: storing a comment failed: {e}");
            e.client_error()
        })
    }

    /// The comments with `from <= time < to`, ordered by time, at most [`MAX_RANGE_ITEMS`].
    pub async fn window(
        &self,
        video: &ChannelId,
        from: f64,
        to: f64,
    ) -> Result<Vec<Danmaku>, ApiError> {
        check_window(from, to)?;
        self.store
            .time_window(video, from, to, MAX_RANGE_ITEMS)
            .await
            .map_err(|e| {
                log::error!("video {video}: reading a window failed: {e}");
                e.client_error()
            })
    }

    /// The rows of `video` with these ids (those it has, deleted ones included: an export
    /// imported again must recognise a row a moderator deleted since, not bring it back), read
    /// in runs of neighbouring ids: one store read per run, and never more than twice as many
    /// rows read as ids asked for. Ids are dense within a video (each is the previous newest
    /// plus one), so the rows after `id - 1` start at `id`.
    pub async fn rows_by_id(
        &self,
        video: &ChannelId,
        ids: &[i64],
    ) -> Result<HashMap<i64, Danmaku>, ApiError> {
        let mut ids: Vec<i64> = ids.iter().copied().filter(|&id| id >= 1).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut found = HashMap::new();
        let mut first = 0;
        while first < ids.len() {
            let start = ids[first];
            // Grow the run while its span stays within twice the ids it covers.
            let mut last = first;
            while let Some(&next) = ids.get(last + 1) {
                let covered = i64::try_from(last + 2 - first).unwrap_or(i64::MAX);
                if next - start + 1 > covered.saturating_mul(2) {
                    break;
                }
                last += 1;
            }
            let span = usize::try_from(ids[last] - start + 1).unwrap_or(usize::MAX);
            let rows = self
                .store
                .after_including_deleted(video, start - 1, span)
                .await
                .map_err(|e| {
                    log::error!("video {video}: reading rows by id failed: {e}");
                    ApiError::internal()
                })?;
            if rows.is_empty() {
                // Nothing at or past `start`: no later id exists either.
                break;
            }
            let run = &ids[first..=last];
            for row in rows {
                if run.binary_search(&row.id).is_ok() {
                    found.insert(row.id, row);
                }
            }
            first = last + 1;
        }
        Ok(found)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_must_be_finite_ordered_and_not_negative() {
        assert!(check_window(0.0, 0.0).is_ok());
        assert!(check_window(1.5, WHOLE_VIDEO_END).is_ok());
        for (from, to) in [
            (-1.0, 2.0),
            (3.0, 2.0),
            (f64::NAN, 1.0),
            (0.0, f64::INFINITY),
        ] {
            let err = check_window(from, to).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidTime, "{from}..{to}");
        }
    }
}
