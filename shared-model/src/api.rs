//! HTTP bodies shared by the services and their clients.
//!
//! Requests that create a comment use [`crate::DraftDanmaku`]; this module holds the rest: the
//! cursor page, the video window, and the live service's rooms and check-ins.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::comment::{ChannelId, Danmaku};

/// One page of a cursor poll: the items after the cursor, oldest first, and the cursor to pass
/// back next time. A client that always passes back `next` never misses and never repeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// Comments with an id above the cursor, oldest first.
    pub items: Vec<Danmaku>,
    /// The id to poll after next: the last item's id, or the cursor itself when there were none.
    pub next: i64,
}

/// The answer of `GET /api/videos/{video}/danmaku?from=&to=`, shaped like the WebSocket `range`
/// frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoWindow {
    /// Window start, seconds.
    pub from: f64,
    /// Window end (exclusive), seconds.
    pub to: f64,
    /// The comments with `from <= time < to`, ordered by time.
    pub items: Vec<Danmaku>,
}

/// The answer of `GET /api/videos/{video}/density?buckets=&duration=`: how many comments fall
/// in each equal slice of the video's timeline, for the bar over a player's progress bar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoDensity {
    /// The video.
    pub video: ChannelId,
    /// The timeline counted, `[0, duration]` seconds: as asked, or the latest comment's time.
    pub duration: f64,
    /// Each bucket's length in seconds (`duration / counts.len()`).
    pub bucket_secs: f64,
    /// Comments per bucket, from the start of the video; bucket `i` holds the times
    /// `i * bucket_secs <= time < (i + 1) * bucket_secs`, and the last one `duration` too.
    pub counts: Vec<u64>,
}

/// The body of `POST /api/rooms` (live service); an empty body means no title.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoom {
    /// Shown to viewers; checked like a comment's text.
    #[serde(default)]
    pub title: Option<String>,
}

/// The answer of `POST /api/rooms`: the new room and its host token, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedRoom {
    /// The room's id, random.
    pub room: ChannelId,
    /// Proves the host: `Authorization: Bearer <host_token>`, or on the WebSocket from a browser
    /// the subprotocol `danmaku.bearer.<host_token>`; never in a URL.
    pub host_token: String,
    /// The title, as checked.
    pub title: Option<String>,
}

/// The body of `POST /api/rooms/{room}/checkins`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenCheckin {
    /// Seconds between two codes.
    pub interval_secs: u32,
    /// Seconds the check-in stays open.
    pub duration_secs: u32,
}

/// The answer of `POST /api/rooms/{room}/checkins`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckinOpened {
    /// The check-in's id.
    pub id: i64,
    /// When it closes, RFC 3339.
    #[serde(with = "crate::time::wire")]
    pub closes_at: DateTime<Utc>,
}

/// One name that checked in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attendee {
    /// The name, checked like an author.
    pub name: String,
    /// When it first checked in, RFC 3339.
    #[serde(with = "crate::time::wire")]
    pub at: DateTime<Utc>,
}

/// The answer of `GET /api/checkins/{id}` (host only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckinReport {
    /// The check-in's id.
    pub id: i64,
    /// Its room.
    pub room: ChannelId,
    /// Seconds between two codes.
    pub interval_secs: u32,
    /// When it opened, RFC 3339.
    #[serde(with = "crate::time::wire")]
    pub opened_at: DateTime<Utc>,
    /// When it closes or closed, RFC 3339.
    #[serde(with = "crate::time::wire")]
    pub closes_at: DateTime<Utc>,
    /// Whether it is over.
    pub closed: bool,
    /// Everyone who checked in, in order.
    pub attendees: Vec<Attendee>,
}

/// A check-in of a room in its host's list (`GET /api/rooms/{room}/checkins`) and as a column
/// of its attendance table (`GET /api/rooms/{room}/attendance`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastCheckin {
    /// The check-in's id.
    pub id: i64,
    /// When it opened, RFC 3339.
    #[serde(with = "crate::time::wire")]
    pub opened_at: DateTime<Utc>,
    /// When it closes or closed, RFC 3339.
    #[serde(with = "crate::time::wire")]
    pub closes_at: DateTime<Utc>,
    /// Seconds between two codes.
    pub interval_secs: u32,
    /// Whether it is over.
    pub closed: bool,
    /// How many names checked in (so far, while it is open).
    pub attended: usize,
}

/// The answer of `GET /api/rooms/{room}/checkins` (host only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomCheckins {
    /// The room.
    pub room: ChannelId,
    /// Its check-ins, oldest first: the newest `MAX_ROOM_CHECKINS`.
    pub checkins: Vec<PastCheckin>,
    /// Whether older check-ins were left out.
    pub truncated: bool,
}

/// One name's row of a room's attendance table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttendanceRow {
    /// The name, as it checked in.
    pub name: String,
    /// Whether it checked in, one entry per column of the table.
    pub present: Vec<bool>,
    /// At how many of the table's check-ins it checked in.
    pub total: usize,
}

/// The answer of `GET /api/rooms/{room}/attendance` (host only): names by check-ins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttendanceTable {
    /// The room.
    pub room: ChannelId,
    /// The columns, oldest first; each one's `attended` is the count of its column.
    pub checkins: Vec<PastCheckin>,
    /// One row per name that checked in to any column, sorted by code point.
    pub rows: Vec<AttendanceRow>,
    /// Whether older check-ins were left out (past the limits on the table's size).
    pub truncated: bool,
}

/// The body of `POST /api/checkins/{id}/attend`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attend {
    /// Who checks in.
    pub name: String,
    /// The code on the host's screen.
    pub code: String,
}

/// The answer of `POST /api/checkins/{id}/attend`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckedIn {
    /// The check-in.
    pub checkin: i64,
    /// The name, as checked.
    pub name: String,
}

/// The answer of `GET /api/stats` on the HTTP service: what it is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollStats {
    /// Long polls waiting for a comment, in every room.
    pub long_polls_waiting: usize,
    /// Rooms with at least one long poll waiting.
    pub rooms_waited_on: usize,
}

/// The body of `GET /healthz`: `{"status":"ok"}` (200); `{"status":"degraded","bus":...}` (200)
/// while a clustered instance cannot reach its bus (it serves its own viewers and stores
/// comments; the others hear of them once the bus is back); or `{"status":"unavailable","error":
/// {"code":"unavailable","message":...}}` (503) while the service's database cannot serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `"ok"`, `"degraded"` or `"unavailable"`.
    pub status: String,
    /// Why not, when `"unavailable"` (the usual error object, code `unavailable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::error::ApiError>,
    /// A clustered instance's bus: `{"connected":bool,"error":"..."}`; absent when alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus: Option<serde_json::Value>,
}

impl Health {
    /// A healthy answer.
    pub fn ok() -> Self {
        Self {
            status: "ok".into(),
            error: None,
            bus: None,
        }
    }

    /// The answer while the service cannot serve, because of `error`.
    pub fn unavailable(error: crate::error::ApiError) -> Self {
        Self {
            status: "unavailable".into(),
            error: Some(error),
            bus: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_page_wire_format() {
        let page = Page {
            items: vec![],
            next: 42,
        };
        assert_eq!(
            serde_json::to_value(&page).unwrap(),
            serde_json::json!({"items": [], "next": 42})
        );
    }

    #[test]
    fn density_wire_format() {
        let density = VideoDensity {
            video: ChannelId::parse("demo").unwrap(),
            duration: 60.0,
            bucket_secs: 10.0,
            counts: vec![3, 1, 0, 1, 0, 2],
        };
        let wire = serde_json::json!({
            "video": "demo", "duration": 60.0, "bucket_secs": 10.0, "counts": [3, 1, 0, 1, 0, 2]
        });
        assert_eq!(serde_json::to_value(&density).unwrap(), wire);
        assert_eq!(
            serde_json::from_value::<VideoDensity>(wire).unwrap(),
            density
        );
    }

    #[test]
    fn health_wire_format() {
        assert_eq!(
            serde_json::to_value(Health::ok()).unwrap(),
            serde_json::json!({"status": "ok"})
        );
        let down = crate::ApiError::new(
            crate::ErrorCode::Unavailable,
            "the database is not answering; try again shortly",
        );
        assert_eq!(
            serde_json::to_value(Health::unavailable(down)).unwrap(),
            serde_json::json!({"status": "unavailable", "error": {
                "code": "unavailable",
                "message": "the database is not answering; try again shortly"
            }})
        );
    }

    #[test]
    fn attendance_table_wire_format_round_trips() {
        let opened_at = chrono::DateTime::UNIX_EPOCH + chrono::Duration::milliseconds(1_500);
        let table = AttendanceTable {
            room: ChannelId::parse("physics").unwrap(),
            checkins: vec![PastCheckin {
                id: 7,
                opened_at,
                closes_at: opened_at + chrono::Duration::seconds(60),
                interval_secs: 5,
                closed: true,
                attended: 1,
            }],
            rows: vec![AttendanceRow {
                name: "ann".into(),
                present: vec![true],
                total: 1,
            }],
            truncated: false,
        };
        let wire = serde_json::json!({
            "room": "physics",
            "checkins": [{
                "id": 7,
                "opened_at": "1970-01-01T00:00:01.500Z",
                "closes_at": "1970-01-01T00:01:01.500Z",
                "interval_secs": 5,
                "closed": true,
                "attended": 1
            }],
            "rows": [{"name": "ann", "present": [true], "total": 1}],
            "truncated": false
        });
        assert_eq!(serde_json::to_value(&table).unwrap(), wire);
        assert_eq!(
            serde_json::from_value::<AttendanceTable>(wire).unwrap(),
            table
        );
    }
}
