//! A live room's comments become a recording's timeline (as Bilibili keeps live danmaku with
//! replays): the comments sent between the stream's start and its end are given each its
//! offset from the start as its video time, and imported into a video of the video service.
//!
//! The two services keep separate databases, so the live service sends them the way any archive
//! reaches the video service: as a Bilibili XML archive (`<chatid>` the room, each entry its
//! comment's id) to `POST /api/videos/{video}/danmaku.xml`, in files of at most
//! [`ENTRIES_PER_FILE`] entries. The video service keys every entry by chat id and comment id,
//! so attaching the same session again adds nothing, and a file that failed half-way is simply
//! sent again. With the operator's admin token set on both services, the live service sends it
//! along and the import spends no client budget there.

use chrono::{DateTime, Utc};
use danmaku_store::Store;
use serde::Serialize;
use service_kit::moderation::AdminToken;
use shared_model::formats::bilibili;
use shared_model::limits::MAX_VIDEO_TIME_SECS;
use shared_model::{ApiError, ChannelId, Danmaku, ErrorCode};

/// Entries per archive sent (well under the video service's default cap of 20,000).
pub const ENTRIES_PER_FILE: usize = 5_000;

/// Comments read from the store at once.
const READ_PAGE: usize = 1_000;

/// How long the video service may take to answer one file.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// What attaching a session did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recording {
    /// The video the comments went to.
    pub video: ChannelId,
    /// The stream's start: offset 0 of the video.
    #[serde(with = "shared_model::time::wire")]
    pub started_at: DateTime<Utc>,
    /// Its end: comments sent from then on are not part of it.
    #[serde(with = "shared_model::time::wire")]
    pub ended_at: DateTime<Utc>,
    /// The room's comments sent in between (deleted ones left out).
    pub comments: usize,
    /// How many the video did not have yet.
    pub added: usize,
    /// How many it skipped (attached before, or holding one of the video's banned words).
    pub skipped: usize,
}

/// Sends sessions to the video service. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    client: reqwest::Client,
    video_url: url::Url,
    admin: Option<AdminToken>,
}

impl Recorder {
    /// A recorder sending to the video service at `video_url`, with the operator's `admin` token
    /// when set.
    pub fn new(video_url: url::Url, admin: Option<AdminToken>) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(SEND_TIMEOUT)
                .build()
                // Fails only for a TLS backend this build does not ask for.
                .expect("an HTTP client"),
            video_url,
            admin,
        }
    }

    /// Attaches `room`'s comments sent from `started_at` up to `ended_at` to `video`.
    pub async fn attach(
        &self,
        comments: &dyn Store,
        room: &ChannelId,
        video: &ChannelId,
        started_at: DateTime<Utc>,
        ended_at: DateTime<Utc>,
    ) -> Result<Recording, ApiError> {
        check_span(started_at, ended_at)?;
        let session = read_session(comments, room, started_at, ended_at).await?;
        let mut recording = Recording {
            video: video.clone(),
            started_at,
            ended_at,
            comments: session.len(),
            added: 0,
            skipped: 0,
        };
        for file in session.chunks(ENTRIES_PER_FILE) {
            let (added, skipped) = self.send(room, video, file).await?;
            recording.added += added;
            recording.skipped += skipped;
        }
        log::info!(
            "room {room}: attached {} comments to video {video} ({} new)",
            recording.comments,
            recording.added
        );
        Ok(recording)
    }

    /// Sends one archive; the video service's `(added, skipped)`.
    async fn send(
        &self,
        room: &ChannelId,
        video: &ChannelId,
        items: &[Danmaku],
    ) -> Result<(usize, usize), ApiError> {
        let unavailable = |why: String| {
            log::warn!("attaching room {room} to video {video}: {why}");
            ApiError::new(
                ErrorCode::Unavailable,
                format!("the video service did not take the recording: {why}"),
            )
        };
        let url = self
            .video_url
            .join(&format!("api/videos/{video}/danmaku.xml"))
            .map_err(|e| unavailable(e.to_string()))?;
        let mut request = self
            .client
            .post(url)
            .header("content-type", "application/xml")
            .body(bilibili::export(room, items));
        if let Some(admin) = &self.admin {
            request = request.bearer_auth(admin.expose());
        }
        let response = request
            .send()
            .await
            .map_err(|e| unavailable(format!("{} did not answer ({e})", self.video_url)))?;
        let status = response.status();
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|e| unavailable(format!("its answer ({status}) was not JSON ({e})")))?;
        if !status.is_success() {
            let said = body["error"]["message"]
                .as_str()
                .unwrap_or("no reason given");
            return Err(unavailable(format!("it answered {status}: {said}")));
        }
        let count = |key: &str| {
            body[key]
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(0)
        };
        Ok((count("added"), count("skipped")))
    }
}

/// Seconds from `from` to `to`, to the millisecond.
fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    // Millisecond counts of a day or so are far inside f64's exact integers.
    #[allow(clippy::cast_precision_loss)]
    let ms = (to - from).num_milliseconds() as f64;
    ms / 1000.0
}

/// A session ends after it starts and is at most as long as a video may be.
fn check_span(started_at: DateTime<Utc>, ended_at: DateTime<Utc>) -> Result<(), ApiError> {
    let secs = seconds_between(started_at, ended_at);
    if secs <= 0.0 || secs > MAX_VIDEO_TIME_SECS {
        return Err(ApiError::new(
            ErrorCode::InvalidValue,
            format!(
                "a recording ends after it starts and lasts at most {MAX_VIDEO_TIME_SECS} s \
                 (started_at {}, ended_at {})",
                shared_model::time::rfc3339(started_at),
                shared_model::time::rfc3339(ended_at)
            ),
        ));
    }
    Ok(())
}

/// The room's comments sent in `[started_at, ended_at)`, each with its offset from
/// `started_at` as its time. Ids follow commit order and send times are taken at commit, so
/// the read stops at the first comment sent at or after the end.
async fn read_session(
    comments: &dyn Store,
    room: &ChannelId,
    started_at: DateTime<Utc>,
    ended_at: DateTime<Utc>,
) -> Result<Vec<Danmaku>, ApiError> {
    let mut session = Vec::new();
    let mut after = 0;
    loop {
        let page = comments.after(room, after, READ_PAGE).await.map_err(|e| {
            log::error!("room {room}: reading a session failed: {e}");
            e.client_error()
        })?;
        let Some(last) = page.last() else {
            return Ok(session);
        };
        after = last.id;
        let full = page.len() == READ_PAGE;
        for mut item in page {
            if item.sent_at >= ended_at {
                return Ok(session);
            }
            if item.sent_at >= started_at {
                item.time = Some(seconds_between(started_at, item.sent_at));
                session.push(item);
            }
        }
        if !full {
            return Ok(session);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_ends_after_it_starts_and_lasts_at_most_a_day() {
        let start = shared_model::time::parse("2026-11-30T10:00:00.000Z").unwrap();
        let code = |end: &str| {
            check_span(start, shared_model::time::parse(end).unwrap())
                .err()
                .map(|e| e.code)
        };
        assert_eq!(code("2026-11-30T11:30:00.500Z"), None);
        assert_eq!(code("2026-12-01T10:00:00.000Z"), None, "exactly a day");
        assert_eq!(
            code("2026-12-01T10:00:00.001Z"),
            Some(ErrorCode::InvalidValue)
        );
        assert_eq!(
            code("2026-11-30T10:00:00.000Z"),
            Some(ErrorCode::InvalidValue)
        );
        assert_eq!(
            code("2026-11-30T09:00:00.000Z"),
            Some(ErrorCode::InvalidValue)
        );
        assert_eq!(
            seconds_between(
                start,
                shared_model::time::parse("2026-11-30T10:01:02.345Z").unwrap()
            ),
            62.345
        );
    }
}
