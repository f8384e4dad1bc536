//! The rules of a video's timeline, the same whichever way a client comes in (the WebSocket
//! session, the HTTP routes, DPlayer): a comment is pinned to a time in the video, and the
//! timeline is read in windows.

use std::collections::HashMap;
use std::sync::Arc;

use danmaku_store::{Store, StoreError};
use service_kit::moderation::Moderation;
use shared_model::api::VideoDensity;
use shared_model::comment::TimeRule;
use shared_model::limits::MAX_VIDEO_TIME_SECS;
use shared_model::{ApiError, ChannelId, Danmaku, DraftDanmaku, ErrorCode, NewDanmaku};

/// Most comments one window holds; a page asks for windows of a minute or so.
pub const MAX_RANGE_ITEMS: usize = 5_000;

/// Buckets of a density bar when the client names none.
pub const DEFAULT_DENSITY_BUCKETS: usize = 100;

/// Most buckets of a density bar: more than a screen has pixels to show them in.
pub const MAX_DENSITY_BUCKETS: usize = 1_000;

/// Buckets of a density answer a client pays one row of its read budget for: a row of a
/// window is about 150 bytes of JSON, as many as 50 counts.
pub const DENSITY_BUCKETS_PER_ROW: usize = 50;

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

    /// How many comments fall in each of `buckets` slices of `[0, duration]` (`None`: up to the
    /// latest comment), counted by the store. The arguments are checked by
    /// [`check_density`].
    pub async fn density(
        &self,
        video: &ChannelId,
        duration: Option<f64>,
        buckets: usize,
    ) -> Result<VideoDensity, StoreError> {
        let density = self.store.density(video, duration, buckets).await?;
        let bucket_secs = density.duration / density.counts.len().max(1) as f64;
        Ok(VideoDensity {
            video: video.clone(),
            duration: density.duration,
            bucket_secs,
            counts: density.counts,
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

/// The density bar's parameters: `buckets` from 1 to [`MAX_DENSITY_BUCKETS`], a `duration`
/// (when given) finite, above 0 and at most a day, the longest time a comment may have.
pub fn check_density(buckets: usize, duration: Option<f64>) -> Result<(), ApiError> {
    if !(1..=MAX_DENSITY_BUCKETS).contains(&buckets) {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            format!("buckets must be a whole number from 1 to {MAX_DENSITY_BUCKETS}"),
        ));
    }
    match duration {
        Some(d) if !(d.is_finite() && d > 0.0 && d <= MAX_VIDEO_TIME_SECS) => Err(ApiError::new(
            ErrorCode::InvalidQuery,
            format!(
                "duration must be seconds above 0 and at most {MAX_VIDEO_TIME_SECS} (or left out: up to the latest comment)"
            ),
        )),
        _ => Ok(()),
    }
}

/// What a density answer of `buckets` counts costs a client's read budget, in rows: one per
/// [`DENSITY_BUCKETS_PER_ROW`] buckets, rounded up (the default 100-bucket bar costs 2).
pub fn density_price(buckets: usize) -> usize {
    buckets.div_ceil(DENSITY_BUCKETS_PER_ROW).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn density_parameters_are_bounded_and_priced_by_buckets() {
        assert!(check_density(1, None).is_ok());
        assert!(check_density(MAX_DENSITY_BUCKETS, Some(MAX_VIDEO_TIME_SECS)).is_ok());
        for (buckets, duration) in [
            (0, None),
            (MAX_DENSITY_BUCKETS + 1, None),
            (10, Some(0.0)),
            (10, Some(-1.0)),
            (10, Some(f64::NAN)),
            (10, Some(f64::INFINITY)),
            (10, Some(MAX_VIDEO_TIME_SECS + 1.0)),
        ] {
            let err = check_density(buckets, duration).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidQuery, "{buckets} {duration:?}");
        }
        assert_eq!(density_price(1), 1);
        assert_eq!(density_price(50), 1);
        assert_eq!(density_price(51), 2);
        assert_eq!(density_price(DEFAULT_DENSITY_BUCKETS), 2);
        assert_eq!(density_price(MAX_DENSITY_BUCKETS), 20);
    }

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
