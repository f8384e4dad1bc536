//! A danmaku (bullet comment) and the rules it must follow.
//!
//! A client sends a [`DraftDanmaku`] (raw strings, as typed); [`DraftDanmaku::validate`] turns it
//! into a [`NewDanmaku`] whose every field is known good; the store gives it an id and a time and
//! hands back a [`Danmaku`]. Lengths count characters (Unicode scalar values), never bytes.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use strum::IntoEnumIterator;

use crate::error::{ApiError, ErrorCode};
use crate::limits::{
    DEFAULT_COLOR, MAX_AUTHOR_CHARS, MAX_CHANNEL_CHARS, MAX_TEXT_CHARS, MAX_VIDEO_TIME_SECS,
};

/// A room or video id: `[A-Za-z0-9_-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ChannelId(String);

impl ChannelId {
    /// Checks `raw` against the channel rule.
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let ok = !raw.is_empty()
            && raw.len() <= MAX_CHANNEL_CHARS
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ApiError::new(
                ErrorCode::InvalidChannel,
                format!("a room or video id is 1 to {MAX_CHANNEL_CHARS} of A-Z, a-z, 0-9, _ and -"),
            ))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ChannelId {
    type Error = ApiError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<ChannelId> for String {
    fn from(id: ChannelId) -> Self {
        id.0
    }
}

/// How a comment moves across the screen. Written in lowercase (`scroll`) on the wire and in the
/// database: `strum` derives [`Mode::as_str`] and `Display`, serde the JSON, and a test holds
/// them equal for every variant.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::Display,
    strum::EnumIter,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Mode {
    /// Flies from right to left (the usual danmaku).
    #[default]
    Scroll,
    /// Holds still, centred at the top.
    Top,
    /// Holds still, centred at the bottom.
    Bottom,
}

impl Mode {
    /// The mode as it appears on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Not strum's `EnumString`: a client's bad mode must be an [`ApiError`] that lists the modes.
impl FromStr for Mode {
    type Err = ApiError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::iter()
            .find(|mode| mode.as_str() == raw)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::iter().map(Self::as_str).collect();
                let (last, rest) = names.split_last().expect("Mode has variants");
                ApiError::new(
                    ErrorCode::InvalidMode,
                    format!("mode must be {} or {last}, not {raw:?}", rest.join(", ")),
                )
            })
    }
}

/// A colour `#rrggbb`, kept in lowercase so equal colours compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Color(String);

impl Color {
    /// Checks `raw` is `#` and six hex digits (either case).
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let ok = raw.len() == 7
            && raw.starts_with('#')
            && raw[1..].bytes().all(|b| b.is_ascii_hexdigit());
        if ok {
            Ok(Self(raw.to_ascii_lowercase()))
        } else {
            Err(ApiError::new(
                ErrorCode::InvalidColor,
                format!("color must be #rrggbb, not {raw:?}"),
            ))
        }
    }

    /// The colour from its 24-bit value (`0xrrggbb`), as players such as DPlayer send it.
    pub fn from_rgb(rgb: u32) -> Self {
        Self(format!("#{:06x}", rgb & 0xff_ff_ff))
    }

    /// The 24-bit value `0xrrggbb`.
    pub fn rgb(&self) -> u32 {
        // Holds: `parse` and `from_rgb` only ever build `#` and six hex digits.
        u32::from_str_radix(&self.0[1..], 16).expect("a Color is always six hex digits")
    }

    /// The colour as `#rrggbb`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Color {
    fn default() -> Self {
        Self(DEFAULT_COLOR.to_owned())
    }
}

impl TryFrom<String> for Color {
    type Error = ApiError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<Color> for String {
    fn from(color: Color) -> Self {
        color.0
    }
}

/// A stored comment, as every service sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Danmaku {
    /// Increasing within its channel, assigned by the server at commit; never reused.
    pub id: i64,
    /// The room or video it belongs to.
    pub channel: ChannelId,
    /// Who wrote it (1-24 characters).
    pub author: String,
    /// What it says (1-100 characters, plain text: render it as text, never as HTML).
    pub text: String,
    /// Its colour.
    pub color: Color,
    /// How it moves.
    pub mode: Mode,
    /// Seconds into the video; only video comments have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<f64>,
    /// When the server stored it (to the millisecond); on the wire, [`crate::time`]'s text.
    #[serde(with = "crate::time::wire")]
    pub sent_at: DateTime<Utc>,
}

/// A comment whose every field has passed validation, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDanmaku {
    /// Trimmed author name.
    pub author: String,
    /// Trimmed text.
    pub text: String,
    /// Colour, the default when the client named none.
    pub color: Color,
    /// Mode, the default when the client named none.
    pub mode: Mode,
    /// Seconds into the video, for video comments.
    pub time: Option<f64>,
}

/// Whether a comment must carry a video time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeRule {
    /// A video comment: `time` is required.
    Required,
    /// A room comment: `time` must be absent.
    Absent,
}

/// A comment as a client sent it, before validation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DraftDanmaku {
    /// The author name as typed.
    pub author: String,
    /// The text as typed.
    pub text: String,
    /// `#rrggbb`, or none for white.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    /// `scroll`, `top` or `bottom`, or none for scroll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Seconds into the video, for video comments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<f64>,
}

impl DraftDanmaku {
    /// Applies every rule of a comment (docs/api.md, "The comment object"), reporting the first
    /// that fails.
    pub fn validate(self, time_rule: TimeRule) -> Result<NewDanmaku, ApiError> {
        let author = validate_author(&self.author)?;
        let text = validate_text(&self.text)?;
        let color = match self.color.as_deref() {
            None => Color::default(),
            Some(raw) => Color::parse(raw)?,
        };
        let mode = match self.mode.as_deref() {
            None => Mode::default(),
            Some(raw) => raw.parse()?,
        };
        let time = match (time_rule, self.time) {
            (TimeRule::Required, Some(t)) => Some(validate_time(t)?),
            (TimeRule::Required, None) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidTime,
                    "a video comment needs a time in seconds",
                ));
            }
            (TimeRule::Absent, None) => None,
            (TimeRule::Absent, Some(_)) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidTime,
                    "a room comment has no video time",
                ));
            }
        };
        Ok(NewDanmaku {
            author,
            text,
            color,
            mode,
            time,
        })
    }
}

/// Trims `raw` and checks it is 1-24 characters without control characters.
pub fn validate_author(raw: &str) -> Result<String, ApiError> {
    checked_text(
        raw,
        MAX_AUTHOR_CHARS,
        "author",
        [
            ErrorCode::AuthorEmpty,
            ErrorCode::AuthorTooLong,
            ErrorCode::AuthorInvalidChars,
        ],
    )
}

/// Trims `raw` and checks it is 1-100 characters without control characters.
pub fn validate_text(raw: &str) -> Result<String, ApiError> {
    checked_text(
        raw,
        MAX_TEXT_CHARS,
        "text",
        [
            ErrorCode::TextEmpty,
            ErrorCode::TextTooLong,
            ErrorCode::TextInvalidChars,
        ],
    )
}

/// Trims a live room's title and checks it like a comment's text (1-100 characters without
/// control characters), with the same codes and messages that name the title.
pub fn validate_title(raw: &str) -> Result<String, ApiError> {
    checked_text(
        raw,
        MAX_TEXT_CHARS,
        "title",
        [
            ErrorCode::TextEmpty,
            ErrorCode::TextTooLong,
            ErrorCode::TextInvalidChars,
        ],
    )
}

/// Checks a video time is finite and within `0..=86400` seconds.
pub fn validate_time(time: f64) -> Result<f64, ApiError> {
    if time.is_finite() && (0.0..=MAX_VIDEO_TIME_SECS).contains(&time) {
        Ok(time)
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidTime,
            format!("time must be a finite number of seconds from 0 to {MAX_VIDEO_TIME_SECS}"),
        ))
    }
}

/// The shared rule of author and text; `codes` are the empty, too-long and bad-character codes.
fn checked_text(
    raw: &str,
    max_chars: usize,
    field: &str,
    [empty, too_long, bad_char]: [ErrorCode; 3],
) -> Result<String, ApiError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(ApiError::new(empty, format!("{field} must not be empty")));
    }
    let chars = trimmed.chars().count();
    if chars > max_chars {
        return Err(ApiError::new(
            too_long,
            format!("{field} is {chars} characters; the limit is {max_chars}"),
        ));
    }
    if let Some(c) = trimmed.chars().find(|c| c.is_control()) {
        return Err(ApiError::new(
            bad_char,
            format!(
                "{field} must not contain control characters (found U+{:04X})",
                c as u32
            ),
        ));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(text: &str) -> DraftDanmaku {
        DraftDanmaku {
            author: "ann".into(),
            text: text.into(),
            ..Default::default()
        }
    }

    fn code_of(result: Result<NewDanmaku, ApiError>) -> ErrorCode {
        result.expect_err("validation should fail").code
    }

    #[test]
    fn a_plain_comment_gets_the_defaults() {
        let new = draft("  hello  ").validate(TimeRule::Absent).unwrap();
        assert_eq!(new.text, "hello");
        assert_eq!(new.color.as_str(), "#ffffff");
        assert_eq!(new.mode, Mode::Scroll);
        assert_eq!(new.time, None);
    }

    #[test]
    fn empty_and_blank_text_are_refused() {
        assert_eq!(
            code_of(draft("").validate(TimeRule::Absent)),
            ErrorCode::TextEmpty
        );
        assert_eq!(
            code_of(draft(" \u{3000} ").validate(TimeRule::Absent)),
            ErrorCode::TextEmpty
        );
    }

    #[test]
    fn text_length_counts_characters_not_bytes() {
        // 100 CJK characters are 300 bytes and still allowed.
        let hundred = "弹".repeat(100);
        assert!(draft(&hundred).validate(TimeRule::Absent).is_ok());
        let hundred_and_one = "弹".repeat(101);
        assert_eq!(
            code_of(draft(&hundred_and_one).validate(TimeRule::Absent)),
            ErrorCode::TextTooLong
        );
        assert_eq!(
            code_of(draft(&"a".repeat(101)).validate(TimeRule::Absent)),
            ErrorCode::TextTooLong
        );
    }

    #[test]
    fn emoji_count_as_characters() {
        // Each of these is one scalar value of four bytes.
        assert!(draft(&"🎉".repeat(100)).validate(TimeRule::Absent).is_ok());
    }

    #[test]
    fn control_characters_are_refused_in_text_and_author() {
        for bad in [
            "a\nb",
            "a\u{0007}b",
            "tab\there",
            "nul\u{0}",
            "del\u{7f}",
            "c1\u{85}x",
        ] {
            assert_eq!(
                code_of(draft(bad).validate(TimeRule::Absent)),
                ErrorCode::TextInvalidChars,
                "{bad:?}"
            );
        }
        let mut d = draft("ok");
        d.author = "a\u{1b}[31m".into();
        assert_eq!(
            code_of(d.validate(TimeRule::Absent)),
            ErrorCode::AuthorInvalidChars
        );
    }

    #[test]
    fn author_rules() {
        let mut d = draft("ok");
        d.author = "   ".into();
        assert_eq!(
            code_of(d.clone().validate(TimeRule::Absent)),
            ErrorCode::AuthorEmpty
        );
        d.author = "名".repeat(24);
        assert!(d.clone().validate(TimeRule::Absent).is_ok());
        d.author = "名".repeat(25);
        assert_eq!(
            code_of(d.validate(TimeRule::Absent)),
            ErrorCode::AuthorTooLong
        );
    }

    #[test]
    fn colours_must_be_hash_and_six_hex_digits() {
        for good in ["#000000", "#FFaa00", "#abcdef"] {
            let mut d = draft("ok");
            d.color = Some(good.into());
            let new = d.validate(TimeRule::Absent).unwrap();
            assert_eq!(new.color.as_str(), good.to_ascii_lowercase());
        }
        for bad in [
            "red",
            "#fff",
            "#ggg000",
            "ffffff",
            "#ffffff0",
            "",
            "#ｆｆｆｆｆ",
        ] {
            let mut d = draft("ok");
            d.color = Some(bad.into());
            assert_eq!(
                code_of(d.validate(TimeRule::Absent)),
                ErrorCode::InvalidColor,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn colour_converts_to_and_from_decimal() {
        assert_eq!(Color::from_rgb(16_777_215).as_str(), "#ffffff");
        assert_eq!(Color::from_rgb(0xff0000).as_str(), "#ff0000");
        assert_eq!(Color::parse("#00FF00").unwrap().rgb(), 0x00ff00);
    }

    #[test]
    fn mode_must_be_known() {
        for (raw, mode) in [
            ("scroll", Mode::Scroll),
            ("top", Mode::Top),
            ("bottom", Mode::Bottom),
        ] {
            let mut d = draft("ok");
            d.mode = Some(raw.into());
            assert_eq!(d.validate(TimeRule::Absent).unwrap().mode, mode);
        }
        for bad in ["left", "Scroll", "", "reverse"] {
            let mut d = draft("ok");
            d.mode = Some(bad.into());
            assert_eq!(
                code_of(d.validate(TimeRule::Absent)),
                ErrorCode::InvalidMode,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn mode_text_forms_agree_for_every_mode() {
        for mode in Mode::iter() {
            assert_eq!(
                serde_json::to_value(mode).unwrap(),
                serde_json::Value::from(mode.as_str())
            );
            assert_eq!(mode.to_string(), mode.as_str());
            assert_eq!(mode.as_str().parse::<Mode>().unwrap(), mode);
        }
        assert_eq!(
            "left".parse::<Mode>().unwrap_err().message,
            r#"mode must be scroll, top or bottom, not "left""#
        );
    }

    #[test]
    fn video_time_must_be_finite_and_in_range() {
        for good in [0.0, 12.5, 86_400.0] {
            let mut d = draft("ok");
            d.time = Some(good);
            assert_eq!(d.validate(TimeRule::Required).unwrap().time, Some(good));
        }
        for bad in [-0.1, 86_400.01, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut d = draft("ok");
            d.time = Some(bad);
            assert_eq!(
                code_of(d.validate(TimeRule::Required)),
                ErrorCode::InvalidTime,
                "{bad}"
            );
        }
        assert_eq!(
            code_of(draft("ok").validate(TimeRule::Required)),
            ErrorCode::InvalidTime
        );
        let mut d = draft("ok");
        d.time = Some(1.0);
        assert_eq!(
            code_of(d.validate(TimeRule::Absent)),
            ErrorCode::InvalidTime
        );
    }

    #[test]
    fn channel_ids_follow_the_rule() {
        for good in ["default", "a", "room_1-B", &"x".repeat(64)] {
            assert!(ChannelId::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "../etc", "é", &"x".repeat(65), "a/b", "a.b"] {
            assert_eq!(
                ChannelId::parse(bad).unwrap_err().code,
                ErrorCode::InvalidChannel,
                "{bad}"
            );
        }
    }

    #[test]
    fn draft_refuses_unknown_fields() {
        let err = serde_json::from_str::<DraftDanmaku>(r#"{"author":"a","text":"t","admin":true}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `admin`"), "{err}");
    }

    #[test]
    fn stored_comment_wire_format() {
        let item = Danmaku {
            id: 7,
            channel: ChannelId::parse("default").unwrap(),
            author: "ann".into(),
            text: "hi".into(),
            color: Color::default(),
            mode: Mode::Top,
            time: None,
            sent_at: crate::time::parse("2026-11-22T00:00:00.000Z").unwrap(),
        };
        assert_eq!(
            serde_json::to_value(&item).unwrap(),
            serde_json::json!({
                "id": 7, "channel": "default", "author": "ann", "text": "hi",
                "color": "#ffffff", "mode": "top", "sent_at": "2026-11-22T00:00:00.000Z"
            })
        );
        let video = Danmaku {
            time: Some(2.5),
            ..item
        };
        assert_eq!(serde_json::to_value(&video).unwrap()["time"], 2.5);
    }
}
