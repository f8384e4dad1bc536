//! The DPlayer v3 danmaku API, as DPlayer (1.x) speaks it.
//!
//! DPlayer reads `GET {api}v3/?id={video}&max={n}` and expects `{"code": 0, "data": [row, ...]}`
//! where a [`Row`] is `[time, type, color, author, text]`; it posts a [`Post`] to `{api}v3/` and
//! expects `{"code": 0, "data": ...}`. Anything else, including `{"code": 1, "msg": ...}`
//! ([`Failure`]), is a failure whose `msg` it shows. Types are `0` scroll, `1` top, `2` bottom;
//! colours are the 24-bit value as a decimal integer (`16777215` is white).
//!
//! One thing differs from every other route of the product on purpose: DPlayer puts a
//! comment's text into the page with `innerHTML` (its `danmaku.js`), so [`Row`] carries the
//! author and text **HTML-escaped**, as DPlayer's own reference back end does. A comment stored
//! as `<b>hi</b>` reaches DPlayer as `&lt;b&gt;hi&lt;/b&gt;` and shows as typed; storage and the
//! other routes keep plain text.

use serde::{Deserialize, Serialize};

use crate::comment::{ChannelId, Color, Danmaku, DraftDanmaku, Mode};
use crate::error::{ApiError, ErrorCode};

/// The `code` of a success.
pub const CODE_OK: u8 = 0;

/// The `code` of a failure.
pub const CODE_FAILURE: u8 = 1;

/// The largest colour DPlayer can send: `0xffffff`.
pub const MAX_COLOR: i64 = 0xff_ff_ff;

/// DPlayer's type code for a mode: `0` scroll, `1` top, `2` bottom.
pub fn type_code(mode: Mode) -> u8 {
    match mode {
        Mode::Scroll => 0,
        Mode::Top => 1,
        Mode::Bottom => 2,
    }
}

/// The mode for DPlayer's type code, refusing codes DPlayer does not have.
pub fn mode_of(code: i64) -> Result<Mode, ApiError> {
    match code {
        0 => Ok(Mode::Scroll),
        1 => Ok(Mode::Top),
        2 => Ok(Mode::Bottom),
        other => Err(ApiError::new(
            ErrorCode::InvalidMode,
            format!("type must be 0 (scroll), 1 (top) or 2 (bottom), not {other}"),
        )),
    }
}

/// One comment as DPlayer reads it; serialized as the array `[time, type, color, author, text]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row(
    /// Seconds into the video.
    pub f64,
    /// [`type_code`] of the mode.
    pub u8,
    /// The colour as `0xrrggbb`, written in decimal.
    pub u32,
    /// The author, HTML-escaped (see the module docs).
    pub String,
    /// The text, HTML-escaped (see the module docs).
    pub String,
);

impl Row {
    /// The row for a stored comment. A comment without a video time (none exists in the video
    /// service, which requires one) sits at 0.
    pub fn from_danmaku(item: &Danmaku) -> Self {
        Self(
            item.time.unwrap_or(0.0),
            type_code(item.mode),
            item.color.rgb(),
            escape_html(&item.author),
            escape_html(&item.text),
        )
    }
}

/// DPlayer's list: the rows of `items`, ordered by time (comments at the same time keep the
/// order they came in, so pass them oldest first).
pub fn rows_by_time<'a>(items: impl IntoIterator<Item = &'a Danmaku>) -> Vec<Row> {
    let mut rows: Vec<Row> = items.into_iter().map(Row::from_danmaku).collect();
    // A stable sort: equal times keep their id order.
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    rows
}

/// The comment DPlayer posts: `{"id", "author", "time", "text", "color", "type", "token"?}`.
///
/// Unknown fields are ignored rather than refused (unlike the product's own JSON routes):
/// DPlayer versions and forks add fields such as `token` and `referer`, and this product has no
/// accounts, so a token has nothing to check and is ignored whatever its type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Post {
    /// The video (DPlayer's `danmaku.id`).
    pub id: String,
    /// The author (DPlayer's `danmaku.user`, `DIYgod` unless the page set one).
    pub author: String,
    /// Seconds into the video when the viewer sent it.
    pub time: f64,
    /// The text as typed.
    pub text: String,
    /// The colour as `0xrrggbb` in decimal; white when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<i64>,
    /// The type code (`0`, `1` or `2`); scroll when absent.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<i64>,
}

impl Post {
    /// The video it is for and the comment in our terms, ready for
    /// [`DraftDanmaku::validate`] (which applies every rule of the comment). Refuses a bad video
    /// id, type code or colour here, since those have no equivalent in the draft.
    pub fn into_draft(self) -> Result<(ChannelId, DraftDanmaku), ApiError> {
        let video = ChannelId::parse(&self.id)?;
        let mode = self.kind.map(mode_of).transpose()?;
        let color = match self.color {
            None => None,
            Some(rgb) if (0..=MAX_COLOR).contains(&rgb) => {
                // Holds: the range check above keeps it within 24 bits.
                let rgb = u32::try_from(rgb).expect("0..=0xffffff fits a u32");
                Some(Color::from_rgb(rgb))
            }
            Some(other) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidColor,
                    format!("color must be a 24-bit value from 0 to {MAX_COLOR}, not {other}"),
                ));
            }
        };
        let draft = DraftDanmaku {
            author: self.author,
            text: self.text,
            color: color.map(String::from),
            mode: mode.map(|m| m.as_str().to_owned()),
            time: Some(self.time),
        };
        Ok((video, draft))
    }
}

/// A success: `{"code": 0, "data": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply<T> {
    /// Always [`CODE_OK`].
    pub code: u8,
    /// The list of rows, or the stored comment.
    pub data: T,
}

impl<T> Reply<T> {
    /// A success carrying `data`.
    pub fn new(data: T) -> Self {
        Self {
            code: CODE_OK,
            data,
        }
    }
}

/// A failure: `{"code": 1, "msg": ...}`; DPlayer shows `msg` to the viewer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Always [`CODE_FAILURE`].
    pub code: u8,
    /// What went wrong, for people.
    pub msg: String,
}

impl Failure {
    /// A failure saying `msg`.
    pub fn new(msg: impl Into<String>) -> Self {
        Self {
            code: CODE_FAILURE,
            msg: msg.into(),
        }
    }
}

impl From<&ApiError> for Failure {
    fn from(error: &ApiError) -> Self {
        Self::new(error.message.clone())
    }
}

/// `raw` with the five characters that mean something in HTML replaced by their references, so
/// it shows as typed when a player inserts it with `innerHTML`.
pub fn escape_html(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::comment::TimeRule;

    fn stored(id: i64, time: f64, mode: Mode, text: &str) -> Danmaku {
        Danmaku {
            id,
            channel: ChannelId::parse("demo").unwrap(),
            author: "ann".into(),
            text: text.into(),
            color: Color::parse("#ff8000").unwrap(),
            mode,
            time: Some(time),
            sent_at: crate::time::parse("2026-01-01T00:00:00.000Z").unwrap(),
        }
    }

    #[test]
    fn rows_are_arrays_of_time_type_decimal_colour_author_text() {
        let rows = rows_by_time(&[stored(1, 2.5, Mode::Bottom, "hi")]);
        assert_eq!(
            serde_json::to_value(Reply::new(rows)).unwrap(),
            json!({"code": 0, "data": [[2.5, 2, 0xff8000, "ann", "hi"]]})
        );
    }

    #[test]
    fn type_codes_map_both_ways() {
        for (mode, code) in [(Mode::Scroll, 0), (Mode::Top, 1), (Mode::Bottom, 2)] {
            assert_eq!(type_code(mode), code);
            assert_eq!(mode_of(i64::from(code)).unwrap(), mode);
        }
        for bad in [-1, 3, 7] {
            assert_eq!(mode_of(bad).unwrap_err().code, ErrorCode::InvalidMode);
        }
    }

    #[test]
    fn rows_are_ordered_by_time_and_stable_for_equal_times() {
        let items = [
            stored(1, 9.0, Mode::Scroll, "late"),
            stored(2, 1.0, Mode::Scroll, "first"),
            stored(3, 1.0, Mode::Scroll, "second"),
        ];
        let texts: Vec<String> = rows_by_time(&items).into_iter().map(|r| r.4).collect();
        assert_eq!(texts, ["first", "second", "late"]);
    }

    #[test]
    fn author_and_text_are_html_escaped_for_dplayer() {
        let mut item = stored(
            1,
            0.0,
            Mode::Scroll,
            r#"<img src=x onerror="alert('x')"> & co"#,
        );
        item.author = "<b>".into();
        let row = Row::from_danmaku(&item);
        assert_eq!(
            row.4,
            "&lt;img src=x onerror=&quot;alert(&#39;x&#39;)&quot;&gt; &amp; co"
        );
        assert_eq!(row.3, "&lt;b&gt;");
        assert_eq!(escape_html("弹幕 🎉"), "弹幕 🎉");
    }

    #[test]
    fn the_body_dplayer_posts_becomes_a_valid_draft() {
        let post: Post = serde_json::from_value(json!({
            "token": "tokendemo", "id": "demo", "author": "DIYgod", "time": 12.3,
            "text": "hello", "color": 16777215, "type": 1, "referer": "http://x/"
        }))
        .unwrap();
        let (video, draft) = post.into_draft().unwrap();
        assert_eq!(video.as_str(), "demo");
        let new = draft.validate(TimeRule::Required).unwrap();
        assert_eq!(new.author, "DIYgod");
        assert_eq!(new.text, "hello");
        assert_eq!(new.color.as_str(), "#ffffff");
        assert_eq!(new.mode, Mode::Top);
        assert_eq!(new.time, Some(12.3));
    }

    #[test]
    fn colour_and_type_default_when_absent() {
        let post: Post =
            serde_json::from_value(json!({"id": "v", "author": "a", "time": 0, "text": "t"}))
                .unwrap();
        let new = post
            .into_draft()
            .unwrap()
            .1
            .validate(TimeRule::Required)
            .unwrap();
        assert_eq!(new.color.as_str(), "#ffffff");
        assert_eq!(new.mode, Mode::Scroll);
    }

    #[test]
    fn bad_video_type_and_colour_are_refused_with_their_codes() {
        let post = |id: &str, kind: i64, color: i64| Post {
            id: id.into(),
            author: "a".into(),
            time: 1.0,
            text: "t".into(),
            color: Some(color),
            kind: Some(kind),
        };
        assert_eq!(
            post("a b", 0, 0).into_draft().unwrap_err().code,
            ErrorCode::InvalidChannel
        );
        assert_eq!(
            post("v", 7, 0).into_draft().unwrap_err().code,
            ErrorCode::InvalidMode
        );
        for color in [-1, 0x100_0000] {
            assert_eq!(
                post("v", 0, color).into_draft().unwrap_err().code,
                ErrorCode::InvalidColor
            );
        }
    }

    #[test]
    fn missing_fields_and_wrong_types_are_named_by_serde() {
        let err = serde_json::from_value::<Post>(json!({"author": "a", "time": 1, "text": "t"}))
            .unwrap_err();
        assert!(err.to_string().contains("missing field `id`"), "{err}");
        let err = serde_json::from_value::<Post>(
            json!({"id": "v", "author": "a", "time": "soon", "text": "t"}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
    }

    #[test]
    fn failure_wire_format() {
        assert_eq!(
            serde_json::to_value(Failure::new("no")).unwrap(),
            json!({"code": 1, "msg": "no"})
        );
    }
}
