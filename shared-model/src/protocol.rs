//! The WebSocket protocol: JSON text frames tagged by their `type` field.
//!
//! [`ClientMessage`] is what a client may send, [`ServerMessage`] what a server sends. Both are
//! shared by the video and the live service; a service answers a frame it has no use for (say,
//! `range` on a live room) with an `unknown_type` error. Decoding refuses unknown types and unknown
//! fields with an [`ApiError`] that names the problem, so a client learns what it did wrong.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::comment::{ChannelId, Danmaku, DraftDanmaku};
use crate::error::{ApiError, ErrorCode};

/// A client's tag for a request, echoed in the answer (`ack`, `range`, `error`) so it can match
/// them up. A string or an integer, as the client chose.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ref {
    /// An integer tag.
    Number(i64),
    /// A string tag.
    Text(String),
}

/// A frame from a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Post a comment. Video comments carry `time` and `author`; in a live room the author is
    /// the connection's name.
    Send {
        /// The text as typed.
        text: String,
        /// `#rrggbb`, or none for white.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        color: Option<String>,
        /// `scroll`, `top` or `bottom`, or none for scroll.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<String>,
        /// Seconds into the video (video service only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time: Option<f64>,
        /// Author name (video service only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        author: Option<String>,
        /// Echoed in the `ack` or `error`.
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<Ref>,
    },
    /// Ask for every comment with `from <= time < to` (video service).
    Range {
        /// Window start, seconds.
        from: f64,
        /// Window end (exclusive), seconds.
        to: f64,
        /// Echoed in the `range` answer.
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<Ref>,
    },
    /// An application-level keep-alive; answered with `pong`.
    Ping,
    /// Check in to an open check-in with the code shown on the host's screen (live service).
    Checkin {
        /// The check-in id.
        checkin: i64,
        /// The 6-digit code.
        code: String,
        /// Echoed in the answer.
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<Ref>,
    },
}

/// The `type` values [`ClientMessage`] knows, for the `unknown_type` error message.
const CLIENT_TYPES: &[&str] = &["send", "range", "ping", "checkin"];

/// Just the tag of a frame, read first so an unknown type gets its own error code.
#[derive(Deserialize)]
struct TagOnly {
    #[serde(rename = "type")]
    kind: String,
}

/// The bodies of the frames, decoded once the tag is known. An internally tagged enum is read
/// from a buffered copy of the object, which loses the path to a bad field; these structs are
/// read straight from the text through [`crate::json::from_json`], so an error names the field
/// (`field text: invalid type: integer 5, expected a string`), as over HTTP. Each mirrors its
/// [`ClientMessage`] variant; a test holds the two equal.
mod body {
    use serde::Deserialize;
    use serde::de::IgnoredAny;

    use super::{ClientMessage, Ref};

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Send {
        #[serde(rename = "type")]
        _kind: IgnoredAny,
        text: String,
        #[serde(default)]
        color: Option<String>,
        #[serde(default)]
        mode: Option<String>,
        #[serde(default)]
        time: Option<f64>,
        #[serde(default)]
        author: Option<String>,
        #[serde(default, rename = "ref")]
        reference: Option<Ref>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Range {
        #[serde(rename = "type")]
        _kind: IgnoredAny,
        from: f64,
        to: f64,
        #[serde(default, rename = "ref")]
        reference: Option<Ref>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Ping {
        #[serde(rename = "type")]
        _kind: IgnoredAny,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Checkin {
        #[serde(rename = "type")]
        _kind: IgnoredAny,
        checkin: i64,
        code: String,
        #[serde(default, rename = "ref")]
        reference: Option<Ref>,
    }

    impl From<Send> for ClientMessage {
        fn from(b: Send) -> Self {
            Self::Send {
                text: b.text,
                color: b.color,
                mode: b.mode,
                time: b.time,
                author: b.author,
                reference: b.reference,
            }
        }
    }

    impl From<Range> for ClientMessage {
        fn from(b: Range) -> Self {
            Self::Range {
                from: b.from,
                to: b.to,
                reference: b.reference,
            }
        }
    }

    impl From<Ping> for ClientMessage {
        fn from(_: Ping) -> Self {
            Self::Ping
        }
    }

    impl From<Checkin> for ClientMessage {
        fn from(b: Checkin) -> Self {
            Self::Checkin {
                checkin: b.checkin,
                code: b.code,
                reference: b.reference,
            }
        }
    }
}

/// Reads the body of a frame of type `kind` as `B`, naming the field at fault when it cannot.
fn decode_body<B>(text: &str, kind: &str) -> Result<ClientMessage, ApiError>
where
    B: serde::de::DeserializeOwned + Into<ClientMessage>,
{
    crate::json::from_json::<B>(text.as_bytes())
        .map(Into::into)
        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("bad {kind:?} frame: {e}")))
}

impl ClientMessage {
    /// Decodes a text frame, naming what is wrong when it cannot: the field at fault when a
    /// field is (`bad "send" frame: field text: invalid type: ...`).
    pub fn decode(text: &str) -> Result<Self, ApiError> {
        let tag: TagOnly = serde_json::from_str(text).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidJson,
                format!("a frame is a JSON object with a string field \"type\": {e}"),
            )
        })?;
        let kind = tag.kind.as_str();
        match kind {
            "send" => decode_body::<body::Send>(text, kind),
            "range" => decode_body::<body::Range>(text, kind),
            "ping" => decode_body::<body::Ping>(text, kind),
            "checkin" => decode_body::<body::Checkin>(text, kind),
            _ => Err(ApiError::new(
                ErrorCode::UnknownType,
                format!(
                    "unknown frame type {kind:?}; expected one of {}",
                    CLIENT_TYPES.join(", ")
                ),
            )),
        }
    }

    /// The client's ref, if the frame carries one, for echoing in an error.
    pub fn reference(&self) -> Option<&Ref> {
        match self {
            Self::Send { reference, .. }
            | Self::Range { reference, .. }
            | Self::Checkin { reference, .. } => reference.as_ref(),
            Self::Ping => None,
        }
    }
}

/// The comment a `send` frame describes, ready for [`DraftDanmaku::validate`]; `author` fills in
/// the author when the frame has none (a live room uses the connection's name).
pub fn send_to_draft(
    text: String,
    color: Option<String>,
    mode: Option<String>,
    time: Option<f64>,
    author: Option<String>,
    default_author: &str,
) -> DraftDanmaku {
    DraftDanmaku {
        author: author.unwrap_or_else(|| default_author.to_owned()),
        text,
        color,
        mode,
        time,
    }
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First frame on a video connection.
    Hello {
        /// The video this connection watches.
        video: ChannelId,
        /// Viewers of that video now, this one included.
        viewers: usize,
    },
    /// First frame on a live-room connection: the chat box, or what was missed.
    Welcome {
        /// The room.
        room: ChannelId,
        /// Viewers in the room now, this one included.
        viewers: usize,
        /// The last 50 comments, or with `since` every comment after it, oldest first.
        history: Vec<Danmaku>,
        /// Present when the client gave `since`: `true` when `history` holds everything it
        /// missed, `false` when too much was missed and it should reload.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        /// The connection's name (the author of its comments): the one asked for, or generated.
        name: String,
        /// Whether this connection is the room's host (it gets the check-in codes).
        host: bool,
    },
    /// The sender's comment is stored (on disk) under this id.
    Ack {
        /// The `ref` of the `send`.
        #[serde(rename = "ref")]
        reference: Option<Ref>,
        /// The stored comment.
        item: Danmaku,
    },
    /// New comments for everyone watching, oldest first.
    Danmaku {
        /// One or more comments.
        items: Vec<Danmaku>,
    },
    /// Comments a moderator deleted: pages take them off the screen, mid-flight too, and out
    /// of their lists. Sent to everyone watching the channel.
    Deleted {
        /// The ids of the deleted comments.
        ids: Vec<i64>,
    },
    /// The answer to a `range` request.
    Range {
        /// Window start, seconds.
        from: f64,
        /// Window end (exclusive), seconds.
        to: f64,
        /// Every comment in the window, ordered by time.
        items: Vec<Danmaku>,
        /// The `ref` of the request.
        #[serde(rename = "ref")]
        reference: Option<Ref>,
    },
    /// The number of viewers changed.
    Viewers {
        /// Viewers now.
        count: usize,
    },
    /// The answer to `ping`.
    Pong,
    /// A request failed; the connection stays open.
    Error {
        /// Stable code.
        code: ErrorCode,
        /// A sentence for people.
        message: String,
        /// The `ref` of the failed request, when it had one.
        #[serde(rename = "ref")]
        reference: Option<Ref>,
    },
    /// A check-in opened (sent to viewers; never carries the code).
    CheckinOpen {
        /// The check-in id.
        checkin: i64,
        /// When it closes ([`crate::time`] text on the wire).
        #[serde(with = "crate::time::wire")]
        closes_at: DateTime<Utc>,
    },
    /// A fresh check-in code (sent to the host's connections only).
    CheckinCode {
        /// The check-in id.
        checkin: i64,
        /// The 6-digit code to show.
        code: String,
        /// When the next code replaces it ([`crate::time`] text on the wire).
        #[serde(with = "crate::time::wire")]
        valid_until: DateTime<Utc>,
    },
    /// A check-in closed (sent to everyone in the room, so pages can hide the box).
    CheckinClosed {
        /// The check-in id.
        checkin: i64,
        /// How many checked in.
        attended: usize,
    },
    /// The answer to a viewer's `checkin`: it is recorded.
    CheckedIn {
        /// The check-in id.
        checkin: i64,
        /// The name recorded.
        name: String,
    },
    /// Someone checked in (sent to the host's connections, for the live attendance list).
    Attendee {
        /// The check-in id.
        checkin: i64,
        /// Who.
        name: String,
        /// When ([`crate::time`] text on the wire).
        #[serde(with = "crate::time::wire")]
        at: DateTime<Utc>,
    },
}

impl ServerMessage {
    /// The error frame for `error`, echoing `reference`.
    pub fn error(error: ApiError, reference: Option<Ref>) -> Self {
        Self::Error {
            code: error.code,
            message: error.message,
            reference,
        }
    }

    /// The frame as JSON text. Serialize once per fan-out and share the text.
    pub fn to_json(&self) -> String {
        // Holds: every field is a string, number, bool or list of such; nothing can fail.
        serde_json::to_string(self).expect("server frames always serialize")
    }
}

/// The WebSocket close codes the services send, named once: the server code and the tests use
/// these names, not the numbers. The standard ones are from RFC 6455, section 7.4.1.
pub mod close {
    /// 1001, going away: the service is shutting down (SIGTERM); it sends what is queued, then
    /// closes every connection with this code. Clients may reconnect to the next instance.
    pub const GOING_AWAY: u16 = 1001;

    /// 1002, protocol error: the client broke the WebSocket framing (a continuation frame
    /// without a first frame, a new fragmented message before the last ended, a text frame
    /// inside a fragmented message, or a frame the codec refuses).
    pub const PROTOCOL_ERROR: u16 = 1002;

    /// 1007, invalid payload: a text message that is not UTF-8, sent whole or in fragments.
    pub const INVALID_PAYLOAD: u16 = 1007;

    /// 1008, policy violation: the connection read too slowly and its outgoing queue
    /// (`--max-queued-frames`) filled, so it is cut off rather than hold up the others.
    pub const POLICY_VIOLATION: u16 = 1008;

    /// 1009, message too big: a message, fragments reassembled, is larger than
    /// [`crate::limits::MAX_MESSAGE_BYTES`] (the `message_too_big` error code, as a close).
    pub const MESSAGE_TOO_BIG: u16 = 1009;

    /// 4408, heartbeat timeout (private range 4000-4999, after HTTP 408): nothing was heard
    /// from the client, not even a pong, for the client timeout (`--client-timeout-secs`).
    pub const HEARTBEAT_TIMEOUT: u16 = 4408;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comment::{Color, Mode};
    use serde_json::json;

    fn item() -> Danmaku {
        Danmaku {
            id: 1,
            channel: ChannelId::parse("v1").unwrap(),
            author: "ann".into(),
            text: "hi".into(),
            color: Color::default(),
            mode: Mode::Scroll,
            time: Some(3.0),
            sent_at: crate::time::parse("2026-11-22T00:00:00.000Z").unwrap(),
        }
    }

    #[test]
    fn send_frame_decodes_with_optional_fields() {
        let msg = ClientMessage::decode(
            r##"{"type":"send","text":"hi","time":3,"author":"ann","color":"#ff0000","ref":"a1"}"##,
        )
        .unwrap();
        assert_eq!(
            msg,
            ClientMessage::Send {
                text: "hi".into(),
                color: Some("#ff0000".into()),
                mode: None,
                time: Some(3.0),
                author: Some("ann".into()),
                reference: Some(Ref::Text("a1".into())),
            }
        );
        let minimal = ClientMessage::decode(r#"{"type":"send","text":"hi","ref":7}"#).unwrap();
        assert_eq!(minimal.reference(), Some(&Ref::Number(7)));
    }

    #[test]
    fn range_and_ping_and_checkin_decode() {
        assert_eq!(
            ClientMessage::decode(r#"{"type":"range","from":0,"to":30.5}"#).unwrap(),
            ClientMessage::Range {
                from: 0.0,
                to: 30.5,
                reference: None
            }
        );
        assert_eq!(
            ClientMessage::decode(r#"{"type":"ping"}"#).unwrap(),
            ClientMessage::Ping
        );
        assert_eq!(
            ClientMessage::decode(r#"{"type":"checkin","checkin":3,"code":"042117"}"#).unwrap(),
            ClientMessage::Checkin {
                checkin: 3,
                code: "042117".into(),
                reference: None
            }
        );
    }

    #[test]
    fn unknown_type_has_its_own_code() {
        let err = ClientMessage::decode(r#"{"type":"dance"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownType);
        assert!(err.message.contains("dance"));
    }

    #[test]
    fn unknown_field_is_refused_by_name() {
        let err = ClientMessage::decode(r#"{"type":"send","text":"hi","admin":true}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidJson);
        assert!(err.message.contains("admin"), "{}", err.message);
    }

    #[test]
    fn malformed_json_and_missing_type_are_invalid_json() {
        for bad in [
            "{",
            "[]",
            "42",
            r#"{"text":"no type"}"#,
            r#"{"type":7}"#,
            "",
        ] {
            assert_eq!(
                ClientMessage::decode(bad).unwrap_err().code,
                ErrorCode::InvalidJson,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn wrong_field_type_names_the_problem_and_the_field() {
        let err = ClientMessage::decode(r#"{"type":"range","from":"zero","to":1}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidJson);
        assert!(err.message.contains("invalid type"), "{}", err.message);
        assert!(err.message.contains("field from"), "{}", err.message);
        let err = ClientMessage::decode(r#"{"type":"send","text":5}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidJson);
        assert!(err.message.contains("field text:"), "{}", err.message);
        let err = ClientMessage::decode(r#"{"type":"checkin","checkin":1}"#).unwrap_err();
        assert!(err.message.contains("code"), "{}", err.message);
        let err = ClientMessage::decode(r#"{"type":"ping","extra":1}"#).unwrap_err();
        assert!(err.message.contains("extra"), "{}", err.message);
    }

    #[test]
    fn every_frame_decodes_to_what_it_was_encoded_from() {
        // The bodies `decode` reads mirror the variants; this holds them equal, optional
        // fields present and absent.
        let frames = [
            ClientMessage::Send {
                text: "hi".into(),
                color: Some("#00ff00".into()),
                mode: Some("top".into()),
                time: Some(1.5),
                author: Some("ann".into()),
                reference: Some(Ref::Text("a".into())),
            },
            ClientMessage::Send {
                text: "hi".into(),
                color: None,
                mode: None,
                time: None,
                author: None,
                reference: None,
            },
            ClientMessage::Range {
                from: 1.0,
                to: 2.0,
                reference: Some(Ref::Number(3)),
            },
            ClientMessage::Ping,
            ClientMessage::Checkin {
                checkin: 4,
                code: "123456".into(),
                reference: None,
            },
        ];
        for frame in frames {
            let text = serde_json::to_string(&frame).unwrap();
            assert_eq!(ClientMessage::decode(&text).unwrap(), frame, "{text}");
        }
    }

    #[test]
    fn server_frames_wire_format() {
        assert_eq!(
            serde_json::to_value(ServerMessage::Hello {
                video: ChannelId::parse("v1").unwrap(),
                viewers: 2
            })
            .unwrap(),
            json!({"type": "hello", "video": "v1", "viewers": 2})
        );
        assert_eq!(
            serde_json::to_value(ServerMessage::Ack {
                reference: Some(Ref::Text("a1".into())),
                item: item()
            })
            .unwrap()["ref"],
            "a1"
        );
        assert_eq!(
            serde_json::to_value(ServerMessage::Danmaku {
                items: vec![item()]
            })
            .unwrap()["items"][0]["time"],
            3.0
        );
        assert_eq!(
            serde_json::to_value(ServerMessage::Deleted { ids: vec![7] }).unwrap(),
            json!({"type": "deleted", "ids": [7]})
        );
        assert_eq!(
            serde_json::to_value(ServerMessage::Viewers { count: 3 }).unwrap(),
            json!({"type": "viewers", "count": 3})
        );
        assert_eq!(
            serde_json::to_value(ServerMessage::error(
                ApiError::new(ErrorCode::RateLimited, "slow down"),
                Some(Ref::Number(4))
            ))
            .unwrap(),
            json!({"type": "error", "code": "rate_limited", "message": "slow down", "ref": 4})
        );
        assert_eq!(
            serde_json::to_value(ServerMessage::Range {
                from: 0.0,
                to: 10.0,
                items: vec![],
                reference: None
            })
            .unwrap(),
            json!({"type": "range", "from": 0.0, "to": 10.0, "items": [], "ref": null})
        );
    }

    #[test]
    fn welcome_carries_recovered_only_when_resuming() {
        let fresh = ServerMessage::Welcome {
            room: ChannelId::parse("r").unwrap(),
            viewers: 1,
            history: vec![],
            recovered: None,
            name: "ann".into(),
            host: false,
        };
        assert_eq!(
            serde_json::to_value(&fresh).unwrap(),
            json!({"type": "welcome", "room": "r", "viewers": 1, "history": [],
                   "name": "ann", "host": false})
        );
        let resumed = ServerMessage::Welcome {
            room: ChannelId::parse("r").unwrap(),
            viewers: 1,
            history: vec![],
            recovered: Some(true),
            name: "ann".into(),
            host: false,
        };
        assert_eq!(serde_json::to_value(&resumed).unwrap()["recovered"], true);
    }

    #[test]
    fn checkin_frames_wire_format() {
        assert_eq!(
            serde_json::to_value(ServerMessage::CheckinCode {
                checkin: 1,
                code: "004213".into(),
                valid_until: crate::time::parse("2026-11-22T00:00:05.000Z").unwrap()
            })
            .unwrap(),
            json!({"type": "checkin_code", "checkin": 1, "code": "004213",
                   "valid_until": "2026-11-22T00:00:05.000Z"})
        );
        let open = ServerMessage::CheckinOpen {
            checkin: 1,
            closes_at: crate::time::parse("2026-11-22T00:10:00.000Z").unwrap(),
        };
        assert_eq!(serde_json::to_value(&open).unwrap()["type"], "checkin_open");
        let closed = ServerMessage::CheckinClosed {
            checkin: 1,
            attended: 12,
        };
        assert_eq!(serde_json::to_value(&closed).unwrap()["attended"], 12);
        assert_eq!(
            serde_json::to_value(ServerMessage::CheckedIn {
                checkin: 1,
                name: "ann".into()
            })
            .unwrap(),
            json!({"type": "checked_in", "checkin": 1, "name": "ann"})
        );
        assert_eq!(
            serde_json::to_value(ServerMessage::Attendee {
                checkin: 1,
                name: "ann".into(),
                at: crate::time::parse("2026-11-22T00:00:01.000Z").unwrap()
            })
            .unwrap()["type"],
            "attendee"
        );
    }

    #[test]
    fn server_frames_round_trip() {
        let frame = ServerMessage::Danmaku {
            items: vec![item()],
        };
        let back: ServerMessage = serde_json::from_str(&frame.to_json()).unwrap();
        assert_eq!(back, frame);
    }
}
