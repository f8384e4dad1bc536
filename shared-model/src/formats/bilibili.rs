//! Bilibili's XML danmaku archives: reading them into comments to import, and writing comments
//! out as one.
//!
//! An archive is `<i>` holding a few header elements (`<chatserver>`, `<chatid>`, ...) and one
//! `<d p="time,mode,size,color,sent,pool,user,id">text</d>` per comment. Reading uses
//! quick-xml's parser (entities, character references and CDATA resolved, every
//! well-formedness fault reported with its line and column); writing uses its writer, which
//! escapes text and attributes. Nothing is cut out of or pasted into XML by hand.
//!
//! Reading ([`parse_limited`], or [`parse`] without a cap):
//! - One pass, entry by entry: each `<d>` becomes a comment (or a count of why not) as soon as
//!   it closes, so memory holds the comments kept and never a second copy of the file's
//!   entries. With a cap ([`parse_limited`]), the `<d>` entries are counted as they open and
//!   the read stops at the first one past the cap ([`ParseError::TooManyEntries`]): a file
//!   over the cap costs the parse of the cap, not of the file.
//! - Modes 1, 2 and 3 are scroll, 4 bottom, 5 top. Modes 6 (reverse), 7 (positioned), 8 (code)
//!   and 9 (BAS) have no equivalent here: such entries are skipped and counted
//!   ([`Archive::unsupported_mode`]).
//! - Every entry goes through the rules of every comment ([`validate_text`], [`validate_time`]);
//!   one that fails, or whose `p` attribute is missing or malformed, is skipped and counted
//!   ([`Archive::invalid`]). A bad entry never fails the whole file; malformed XML does.
//! - The author is the `user` field when it is a valid author name (Bilibili writes a hash of
//!   the sender there; this product's exports write the author's name), else
//!   [`FALLBACK_AUTHOR`].
//! - `sent` (Unix seconds) becomes `sent_at`; when absent or out of range, the store uses the
//!   import time.
//! - Each entry gets an origin key so that importing the same file twice adds nothing:
//!   `bilibili:<chatid>:<id>` from the `<chatid>` and the comment id (`bilibili:<id>` when the
//!   file has no chat id), or, for entries without an id, `bilibili:#` and a 128-bit FNV-1a
//!   hash of the chat id and the entry's time, mode, colour, sent time, user and text. The chat
//!   id is part of the key because this product's ids are per video: without it, the exports
//!   of two videos imported into a third would collide and lose comments. The `<chatid>` counts
//!   when it comes before the entries, where Bilibili and this product write it.
//! - Each comment also keeps its comment id ([`ArchiveItem::source_id`]) and the archive its
//!   `<chatserver>`: an archive this product exported ([`CHAT_SERVER`]) of the very video it is
//!   imported into names rows that video already has, and the import recognises them by id and
//!   content ([`Archive::is_export_of`], [`same_comment`]) instead of adding them again.
//!
//! Writing ([`write_head`], [`write_items`], [`write_tail`], or [`export`] for all at once):
//! time with five decimals as Bilibili writes it, mode 1/5/4 for scroll/top/bottom, size 25,
//! colour in decimal, `sent` the Unix seconds of `sent_at`, pool 0, and our comment id. The
//! `user` field carries the **author name** rather than a hash, so an export read back (here
//! or by any tool) keeps who wrote what; author names are public in every view already. As the
//! field sits in a comma-separated list, `%` and `,` in a name are written `%25` and `%2C`
//! (and read back); a Bilibili hash contains neither, so this changes nothing for real
//! archives.

use std::fmt::Write as _;

use quick_xml::Writer;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::reader::Reader;
use serde::{Deserialize, Serialize};

use crate::comment::{
    ChannelId, Color, Danmaku, Mode, NewDanmaku, validate_author, validate_text, validate_time,
};
use crate::imports::{ImportOutcome, ImportedDanmaku};

/// Bilibili's mode code for scrolling comments (2 and 3 are read as scroll too).
pub const MODE_SCROLL: u8 = 1;
/// Bilibili's mode code for comments held at the bottom.
pub const MODE_BOTTOM: u8 = 4;
/// Bilibili's mode code for comments held at the top.
pub const MODE_TOP: u8 = 5;
/// The font size written for every comment (Bilibili's normal size); ignored when reading.
pub const FONT_SIZE: u8 = 25;
/// The pool written for every comment (Bilibili's normal pool); ignored when reading.
pub const POOL: u8 = 0;
/// The author of an imported comment whose `user` field is not a valid author name.
pub const FALLBACK_AUTHOR: &str = "bilibili";
/// What exports write in `<chatserver>` (Bilibili writes its own host there).
pub const CHAT_SERVER: &str = "danmaku";
/// Longest `<chatid>` used in origin keys, in characters; a longer one is ignored.
pub const MAX_CHAT_ID_CHARS: usize = 64;
/// Longest comment id used in origin keys, in digits; a longer one is hashed instead.
pub const MAX_COMMENT_ID_DIGITS: usize = 20;
/// Latest `sent` time taken from an archive, in Unix seconds (the end of year 9999, the last
/// RFC 3339 can write).
pub const MAX_SENT_SECS: i64 = 253_402_300_799;

/// The mode for a Bilibili mode code, or `None` for one this product cannot show.
pub fn mode_of(code: u32) -> Option<Mode> {
    match code {
        1..=3 => Some(Mode::Scroll),
        4 => Some(Mode::Bottom),
        5 => Some(Mode::Top),
        _ => None,
    }
}

/// The Bilibili mode code written for a mode.
pub fn mode_code(mode: Mode) -> u8 {
    match mode {
        Mode::Scroll => MODE_SCROLL,
        Mode::Top => MODE_TOP,
        Mode::Bottom => MODE_BOTTOM,
    }
}

/// What reading an archive found: the comments to import and what was skipped, by reason.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Archive {
    /// The `<chatserver>` (who wrote the file: Bilibili's host, or [`CHAT_SERVER`] for this
    /// product's exports), when the file has a usable one.
    pub chat_server: Option<String>,
    /// The `<chatid>` (the source video), when the file has a usable one.
    pub chat_id: Option<String>,
    /// Valid comments in a supported mode, in file order, each with its origin key.
    pub items: Vec<ArchiveItem>,
    /// Entries in a mode this product cannot show (6 to 9, or unknown).
    pub unsupported_mode: usize,
    /// Entries with a missing or malformed `p`, or breaking a rule of the comment.
    pub invalid: usize,
}

impl Archive {
    /// Whether this is an export of `video` by this product (its `<chatserver>` is
    /// [`CHAT_SERVER`] and its `<chatid>` is `video`): then its comment ids are row ids of
    /// `video`, and an entry whose row `video` still has, unchanged ([`same_comment`]), is that
    /// row and not a comment to add.
    pub fn is_export_of(&self, video: &ChannelId) -> bool {
        self.chat_server.as_deref() == Some(CHAT_SERVER)
            && self.chat_id.as_deref() == Some(video.as_str())
    }
}

/// One comment read from an archive.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveItem {
    /// The comment, validated, with its origin key.
    pub comment: ImportedDanmaku,
    /// The entry's comment id (the last field of `p`), when it is a number: in this product's
    /// exports, the row id in the exported video.
    pub source_id: Option<i64>,
}

/// Whether an entry read from an export is the stored comment `row`: same text, author,
/// colour, mode, time (to the five decimals an export writes) and send time (to the second).
/// Rows are never edited, so a row with the entry's id and all of these is the comment the
/// entry was written from.
pub fn same_comment(item: &ImportedDanmaku, row: &Danmaku) -> bool {
    let time = |t: Option<f64>| format!("{:.5}", t.unwrap_or(0.0));
    item.new.text == row.text
        && item.new.author == row.author
        && item.new.color == row.color
        && item.new.mode == row.mode
        && time(item.new.time) == time(row.time)
        && item.sent_at.map(|s| s.timestamp()) == Some(row.sent_at.timestamp())
}

/// Why an archive was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The file is not well-formed XML, or not a Bilibili archive.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// The file has more `<d>` entries than the cap; reading stopped at the first one past it.
    #[error("the archive has more than {max} entries (<d> elements), the most one import takes")]
    TooManyEntries {
        /// The cap.
        max: usize,
    },
}

/// The answer to an import: `{"added", "skipped", "details": {...}}`. `skipped` is the sum of
/// the details, so `added + skipped` is the number of `<d>` entries in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImportReport {
    /// Comments stored.
    pub added: usize,
    /// Entries not stored, for any reason.
    pub skipped: usize,
    /// Why they were not stored.
    pub details: SkipCounts,
}

/// Skipped entries by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SkipCounts {
    /// In a mode this product cannot show (6 reverse, 7 positioned, 8 code, 9 BAS, unknown).
    pub unsupported_mode: usize,
    /// With a missing or malformed `p`, or breaking a rule of the comment.
    pub invalid: usize,
    /// Already imported (by an earlier import, or earlier in the same file).
    pub duplicate: usize,
    /// Holding a word banned in the video (see `crate::moderation`).
    pub banned: usize,
}

impl ImportReport {
    /// The report of an import whose reading skipped `unsupported_mode` and `invalid` entries
    /// (see [`Archive`]), which left out `banned` entries holding a banned word, and whose
    /// storing the store answered with `outcome`.
    pub fn new(
        unsupported_mode: usize,
        invalid: usize,
        banned: usize,
        outcome: ImportOutcome,
    ) -> Self {
        let details = SkipCounts {
            unsupported_mode,
            invalid,
            duplicate: outcome.duplicates,
            banned,
        };
        Self {
            added: outcome.added,
            skipped: details.unsupported_mode + details.invalid + details.duplicate + banned,
            details,
        }
    }
}

/// The file is not well-formed XML, or not a Bilibili archive at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed XML at line {line}, column {column}: {reason}")]
pub struct XmlError {
    /// 1-based line of the fault.
    pub line: usize,
    /// 1-based column (in characters) of the fault.
    pub column: usize,
    /// What is wrong there.
    pub reason: String,
}

impl XmlError {
    /// The fault `reason` at byte `offset` of `xml`.
    fn at(xml: &[u8], offset: u64, reason: impl Into<String>) -> Self {
        let end = usize::try_from(offset).map_or(xml.len(), |o| o.min(xml.len()));
        let before = &xml[..end];
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |nl| nl + 1);
        Self {
            line: before.iter().filter(|&&b| b == b'\n').count() + 1,
            column: String::from_utf8_lossy(&before[line_start..])
                .chars()
                .count()
                + 1,
            reason: reason.into(),
        }
    }
}

/// One `<d>` as read, before the rules of the comment are applied.
#[derive(Debug, Default)]
struct Entry {
    /// The `p` attribute, when present.
    p: Option<String>,
    /// The text, entities resolved.
    text: String,
    /// An element inside `<d>`: not a plain comment.
    nested: bool,
}

/// What an open element is, for the reader.
enum Open {
    /// The root `<i>`.
    Root,
    /// A `<d>` at the top level of `<i>`.
    Entry(Entry),
    /// The `<chatid>` at the top level of `<i>`.
    ChatId(String),
    /// The `<chatserver>` at the top level of `<i>`.
    ChatServer(String),
    /// Anything else (other header elements, or elements inside those above).
    Other,
}

/// An open element: its name (for messages) and what it is.
struct Frame {
    /// The element's name.
    name: String,
    /// What it collects.
    open: Open,
}

/// Reads a Bilibili archive, however many entries it has. Fails only when the document is not
/// well-formed XML or its root is not `<i>`; bad entries are skipped and counted (see the module
/// docs). Servers read untrusted files with [`parse_limited`].
pub fn parse(xml: &[u8]) -> Result<Archive, XmlError> {
    parse_limited(xml, usize::MAX).map_err(|e| match e {
        ParseError::Xml(e) => e,
        ParseError::TooManyEntries { .. } => {
            unreachable!("no file has more than usize::MAX entries")
        }
    })
}

/// Reads a Bilibili archive like [`parse`], refusing one with more than `max_entries` `<d>`
/// entries (valid or not) as soon as the reader meets the first entry past the cap.
pub fn parse_limited(xml: &[u8], max_entries: usize) -> Result<Archive, ParseError> {
    let mut reader = Reader::from_reader(xml);
    let decoder = reader.decoder();
    let mut seen_root = false;
    // The open elements, root first. Its length is the depth; no recursion, so nesting depth
    // costs memory in proportion to the (size-limited) input and nothing else.
    let mut stack: Vec<Frame> = Vec::new();
    let mut archive = Archive::default();
    let mut entries_seen = 0_usize;

    loop {
        let at = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| XmlError::at(xml, reader.error_position(), e.to_string()))?;
        let fail = |reason: String| ParseError::Xml(XmlError::at(xml, at, reason));
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                // Every attribute is checked (quoting, duplicates, entities), not only `p`.
                let mut p = None;
                for attr in e.attributes() {
                    let attr = attr.map_err(|err| fail(format!("in <{name}>: {err}")))?;
                    let value = attr
                        .decode_and_unescape_value(decoder)
                        .map_err(|err| fail(format!("in <{name}>: {err}")))?;
                    if attr.key.as_ref() == b"p" {
                        p = Some(value.into_owned());
                    }
                }
                let open = match stack.len() {
                    0 if seen_root => {
                        return Err(fail(format!("a second root element <{name}> after </i>")));
                    }
                    0 if name != "i" => {
                        return Err(fail(format!(
                            "the root element is <{name}>, not <i>: not a Bilibili danmaku file"
                        )));
                    }
                    0 => {
                        seen_root = true;
                        Open::Root
                    }
                    1 if name == "d" => {
                        entries_seen += 1;
                        if entries_seen > max_entries {
                            return Err(ParseError::TooManyEntries { max: max_entries });
                        }
                        Open::Entry(Entry {
                            p,
                            ..Entry::default()
                        })
                    }
                    1 if name == "chatid" => Open::ChatId(String::new()),
                    1 if name == "chatserver" => Open::ChatServer(String::new()),
                    _ => {
                        if let Some(Frame {
                            open: Open::Entry(entry),
                            ..
                        }) = stack.last_mut()
                        {
                            entry.nested = true;
                        }
                        Open::Other
                    }
                };
                let frame = Frame { name, open };
                if matches!(event, Event::Empty(_)) {
                    close(frame, &mut archive);
                } else {
                    stack.push(frame);
                }
            }
            Event::End(_) => {
                // quick-xml has already checked that the name matches the open element.
                if let Some(frame) = stack.pop() {
                    close(frame, &mut archive);
                }
            }
            Event::Text(ref t) => {
                let text = t.decode().map_err(|e| fail(e.to_string()))?;
                if stack.is_empty() {
                    if !text.trim().is_empty() {
                        return Err(fail("text outside the root element <i>".into()));
                    }
                } else {
                    push_text(&mut stack, &text);
                }
            }
            Event::CData(ref t) => {
                if stack.is_empty() {
                    return Err(fail("CDATA outside the root element <i>".into()));
                }
                let text = t.decode().map_err(|e| fail(e.to_string()))?;
                push_text(&mut stack, &text);
            }
            Event::GeneralRef(ref r) => {
                if stack.is_empty() {
                    return Err(fail("a reference outside the root element <i>".into()));
                }
                let resolved = match r.resolve_char_ref().map_err(|e| fail(e.to_string()))? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.decode().map_err(|e| fail(e.to_string()))?;
                        match resolve_predefined_entity(&name) {
                            Some(s) => s.to_owned(),
                            None => {
                                return Err(fail(format!(
                                    "unknown entity &{name}; (only &lt; &gt; &amp; &apos; \
                                     &quot; and character references are defined)"
                                )));
                            }
                        }
                    }
                };
                push_text(&mut stack, &resolved);
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
            Event::Eof => {
                if !seen_root {
                    return Err(fail("the document has no root element <i>".into()));
                }
                if let Some(innermost) = stack.last() {
                    return Err(fail(format!(
                        "the document ends before </{}> ({} element(s) still open)",
                        innermost.name,
                        stack.len()
                    )));
                }
                break;
            }
        }
    }
    Ok(archive)
}

/// A header value (`<chatid>`, `<chatserver>`) trimmed, when it is short, not empty and free of
/// control characters; otherwise it is ignored.
fn header_value(raw: &str) -> Option<String> {
    let value = raw.trim();
    (!value.is_empty()
        && value.chars().count() <= MAX_CHAT_ID_CHARS
        && !value.chars().any(char::is_control))
    .then(|| value.to_owned())
}

/// Keeps what a closing element collected: an entry (read at once into a comment, or counted as
/// skipped), or a header value.
fn close(frame: Frame, archive: &mut Archive) {
    match frame.open {
        Open::Entry(entry) => match read_entry(entry, archive.chat_id.as_deref()) {
            Ok(item) => archive.items.push(item),
            Err(Skip::UnsupportedMode) => archive.unsupported_mode += 1,
            Err(Skip::Invalid) => archive.invalid += 1,
        },
        Open::ChatId(id) => archive.chat_id = header_value(&id),
        Open::ChatServer(server) => archive.chat_server = header_value(&server),
        Open::Root | Open::Other => {}
    }
}

/// Adds text to the innermost open `<d>`, `<chatid>` or `<chatserver>`, if that is what is open.
fn push_text(stack: &mut [Frame], text: &str) {
    match stack.last_mut().map(|frame| &mut frame.open) {
        Some(Open::Entry(entry)) => entry.text.push_str(text),
        Some(Open::ChatId(value) | Open::ChatServer(value)) => value.push_str(text),
        Some(Open::Root | Open::Other) | None => {}
    }
}

/// Why an entry is not imported.
enum Skip {
    /// Its mode has no equivalent here.
    UnsupportedMode,
    /// Its `p` is missing or malformed, or it breaks a rule of the comment.
    Invalid,
}

/// The comment of one entry, or why it is skipped.
fn read_entry(entry: Entry, chat_id: Option<&str>) -> Result<ArchiveItem, Skip> {
    let p = entry.p.ok_or(Skip::Invalid)?;
    let fields: Vec<&str> = p.split(',').map(str::trim).collect();
    let field = |i: usize| fields.get(i).copied().filter(|f| !f.is_empty());
    let time: f64 = field(0).and_then(|f| f.parse().ok()).ok_or(Skip::Invalid)?;
    let raw_mode: u32 = field(1).and_then(|f| f.parse().ok()).ok_or(Skip::Invalid)?;
    let color: u32 = match field(3) {
        None => Color::default().rgb(),
        Some(f) => f
            .parse()
            .ok()
            .filter(|&c| c <= 0xff_ff_ff)
            .ok_or(Skip::Invalid)?,
    };
    let sent: Option<i64> = field(4)
        .and_then(|f| f.parse().ok())
        .filter(|s| (0..=MAX_SENT_SECS).contains(s));
    let user = field(6).map(decode_user);
    let comment_id = field(7)
        .filter(|id| id.len() <= MAX_COMMENT_ID_DIGITS && id.bytes().all(|b| b.is_ascii_digit()));

    let mode = mode_of(raw_mode).ok_or(Skip::UnsupportedMode)?;
    if entry.nested {
        return Err(Skip::Invalid);
    }
    let text = validate_text(&entry.text).map_err(|_| Skip::Invalid)?;
    let time = validate_time(time).map_err(|_| Skip::Invalid)?;
    let author = user
        .as_deref()
        .and_then(|u| validate_author(u).ok())
        .unwrap_or_else(|| FALLBACK_AUTHOR.to_owned());

    let origin = match (comment_id, chat_id) {
        (Some(id), Some(chat)) => format!("bilibili:{chat}:{id}"),
        (Some(id), None) => format!("bilibili:{id}"),
        (None, _) => {
            let mut key = String::new();
            for part in [
                chat_id.unwrap_or(""),
                &time.to_bits().to_string(),
                &raw_mode.to_string(),
                &color.to_string(),
                &sent.map_or_else(String::new, |s| s.to_string()),
                user.as_deref().unwrap_or(""),
                &text,
            ] {
                // Length-prefixed, so no choice of fields can run into the next.
                let _ = write!(key, "{}:{part};", part.len());
            }
            format!("bilibili:#{:032x}", fnv1a_128(key.as_bytes()))
        }
    };
    let sent_at = sent.and_then(|s| chrono::DateTime::from_timestamp(s, 0));
    Ok(ArchiveItem {
        comment: ImportedDanmaku {
            new: NewDanmaku {
                author,
                text,
                color: Color::from_rgb(color),
                mode,
                time: Some(time),
            },
            origin,
            sent_at,
        },
        source_id: comment_id.and_then(|id| id.parse().ok()),
    })
}

/// 128-bit FNV-1a: small, fixed forever (origin keys are stored, so the hash must never change
/// between builds, which rules out `std`'s `DefaultHasher`), and wide enough that two different
/// comments of one video never meet by chance.
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    bytes.iter().fold(OFFSET, |hash, &b| {
        (hash ^ u128::from(b)).wrapping_mul(PRIME)
    })
}

/// The author as written in the `user` field: `%` and `,` escaped, everything else as is.
fn encode_user(author: &str) -> String {
    author.replace('%', "%25").replace(',', "%2C")
}

/// The reverse of [`encode_user`]; other `%` sequences are left alone.
fn decode_user(field: &str) -> String {
    field
        .replace("%2C", ",")
        .replace("%2c", ",")
        .replace("%25", "%")
}

/// Writing to a `Vec` cannot fail, so the writer's I/O errors cannot happen.
const VEC_WRITE: &str = "writing XML into a Vec<u8> cannot fail";

/// Appends the start of an archive for `video`: the XML declaration, `<i>` and the header
/// elements Bilibili writes.
pub fn write_head(out: &mut Vec<u8>, video: &ChannelId) {
    let mut writer = Writer::new(out);
    writer
        .write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
        .expect(VEC_WRITE);
    writer
        .write_event(Event::Text(BytesText::new("\n")))
        .expect(VEC_WRITE);
    writer
        .write_event(Event::Start(BytesStart::new("i")))
        .expect(VEC_WRITE);
    for (name, value) in [
        ("chatserver", CHAT_SERVER),
        ("chatid", video.as_str()),
        ("mission", "0"),
        ("state", "0"),
        ("real_name", "0"),
        ("source", "k-v"),
    ] {
        writer
            .write_event(Event::Text(BytesText::new("\n  ")))
            .expect(VEC_WRITE);
        writer
            .create_element(name)
            .write_text_content(BytesText::new(value))
            .expect(VEC_WRITE);
    }
}

/// Appends one `<d>` per comment, in the order given.
pub fn write_items<'a>(out: &mut Vec<u8>, items: impl IntoIterator<Item = &'a Danmaku>) {
    let mut writer = Writer::new(out);
    for item in items {
        let sent = item.sent_at.timestamp();
        let p = format!(
            "{:.5},{},{FONT_SIZE},{},{sent},{POOL},{},{}",
            item.time.unwrap_or(0.0),
            mode_code(item.mode),
            item.color.rgb(),
            encode_user(&item.author),
            item.id,
        );
        writer
            .write_event(Event::Text(BytesText::new("\n  ")))
            .expect(VEC_WRITE);
        writer
            .create_element("d")
            .with_attribute(("p", p.as_str()))
            .write_text_content(BytesText::new(&item.text))
            .expect(VEC_WRITE);
    }
}

/// Appends the end of an archive: `</i>`.
pub fn write_tail(out: &mut Vec<u8>) {
    let mut writer = Writer::new(out);
    writer
        .write_event(Event::Text(BytesText::new("\n")))
        .expect(VEC_WRITE);
    writer
        .write_event(Event::End(BytesEnd::new("i")))
        .expect(VEC_WRITE);
    writer
        .write_event(Event::Text(BytesText::new("\n")))
        .expect(VEC_WRITE);
}

/// A whole archive of `items` for `video`.
pub fn export<'a>(video: &ChannelId, items: impl IntoIterator<Item = &'a Danmaku>) -> Vec<u8> {
    let mut out = Vec::new();
    write_head(&mut out, video);
    write_items(&mut out, items);
    write_tail(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(xml: &str) -> Result<Archive, XmlError> {
        parse(xml.as_bytes())
    }

    fn one(xml_d: &str) -> Archive {
        parse_str(&format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><i><chatid>42</chatid>{xml_d}</i>"
        ))
        .unwrap()
    }

    fn stored(id: i64, mode: Mode, author: &str, text: &str) -> Danmaku {
        Danmaku {
            id,
            channel: ChannelId::parse("demo").unwrap(),
            author: author.into(),
            text: text.into(),
            color: Color::parse("#00ff80").unwrap(),
            mode,
            time: Some(12.25),
            sent_at: crate::time::parse("2020-09-13T12:26:40.000Z").unwrap(),
        }
    }

    #[test]
    fn a_bilibili_entry_becomes_a_comment_with_its_time_colour_author_and_send_time() {
        let archive =
            one(r#"<d p="12.34500,5,25,16711680,1600000000,0,a1b2c3d4,987654321">顶</d>"#);
        assert_eq!(archive.chat_id.as_deref(), Some("42"));
        let [item] = archive.items.as_slice() else {
            panic!("{archive:?}")
        };
        assert_eq!(item.comment.new.text, "顶");
        assert_eq!(item.comment.new.mode, Mode::Top);
        assert_eq!(item.comment.new.time, Some(12.345));
        assert_eq!(item.comment.new.color.as_str(), "#ff0000");
        assert_eq!(item.comment.new.author, "a1b2c3d4");
        assert_eq!(item.comment.origin, "bilibili:42:987654321");
        assert_eq!(
            item.comment.sent_at.map(crate::time::rfc3339).as_deref(),
            Some("2020-09-13T12:26:40.000Z")
        );
    }

    #[test]
    fn modes_one_to_three_scroll_four_bottom_five_top_and_the_rest_are_counted() {
        let mut xml = String::new();
        for mode in 1..=9 {
            xml.push_str(&format!(r#"<d p="1,{mode},25,0,0,0,u,{mode}">m{mode}</d>"#));
        }
        let archive = one(&xml);
        let modes: Vec<Mode> = archive.items.iter().map(|i| i.comment.new.mode).collect();
        use Mode::*;
        assert_eq!(modes, [Scroll, Scroll, Scroll, Bottom, Top]);
        assert_eq!(archive.unsupported_mode, 4);
        assert_eq!(archive.invalid, 0);
    }

    #[test]
    fn entities_character_references_and_cdata_are_resolved() {
        let archive = one(
            r#"<d p="1,1,25,0,0,0,u,1">a &lt;b&gt; &amp; &quot;c&quot; &#x4E2D;&#25991; &#x1F389;</d><d p="2,1,25,0,0,0,u,2"><![CDATA[<raw> & more]]></d>"#,
        );
        let texts: Vec<&str> = archive
            .items
            .iter()
            .map(|i| i.comment.new.text.as_str())
            .collect();
        assert_eq!(texts, [r#"a <b> & "c" 中文 🎉"#, "<raw> & more"]);
    }

    #[test]
    fn bad_entries_are_counted_not_fatal() {
        let archive = one(concat!(
            r#"<d p="1,1,25,0,0,0,u,1">   </d>"#, // empty after trimming
            r#"<d p="86400.5,1,25,0,0,0,u,2">late</d>"#, // past the end of a video
            r#"<d p="x,1,25,0,0,0,u,3">nan</d>"#, // time not a number
            r#"<d p="1">no mode</d>"#,            // too few fields
            r#"<d>no p</d>"#,                     // no p at all
            r#"<d p="1,1,25,0,0,0,u,4"/>"#,       // no text
            r#"<d p="1,1,25,99999999,0,0,u,5">c</d>"#, // colour beyond 24 bits
            r#"<d p="1,1,25,0,0,0,u,6">a<b>b</b></d>"#, // markup inside
            r#"<d p="1,1,25,0,0,0,u,7">&#x7;bell</d>"#, // control character
            r#"<d p="1,1,25,0,0,0,u,8">ok</d>"#,
        ));
        assert_eq!(archive.invalid, 9);
        assert_eq!(archive.items.len(), 1);
        assert_eq!(archive.items[0].comment.new.text, "ok");
    }

    #[test]
    fn an_unusable_user_field_gives_the_fallback_author() {
        let long = "x".repeat(30);
        let archive = one(&format!(
            r#"<d p="1,1,25,0,0,0,{long},1">a</d><d p="1,1,25,0,0,0,,2">b</d><d p="1,1">c</d>"#
        ));
        let authors: Vec<&str> = archive
            .items
            .iter()
            .map(|i| i.comment.new.author.as_str())
            .collect();
        assert_eq!(authors, [FALLBACK_AUTHOR; 3]);
        assert_eq!(archive.items[2].comment.new.color.as_str(), "#ffffff");
        assert_eq!(archive.items[2].comment.sent_at, None);
    }

    #[test]
    fn entries_without_an_id_get_a_stable_content_hash_as_origin() {
        let xml = r#"<d p="1.5,1,25,255,1600000000,0,u">same</d><d p="1.5,1,25,255,1600000000,0,u">same</d><d p="1.5,1,25,255,1600000000,0,u">other</d>"#;
        let a = one(xml);
        let b = one(xml);
        let origins: Vec<&str> = a.items.iter().map(|i| i.comment.origin.as_str()).collect();
        assert!(origins[0].starts_with("bilibili:#"), "{origins:?}");
        assert_eq!(origins[0], origins[1], "the same entry hashes the same");
        assert_ne!(origins[0], origins[2], "different text, different key");
        assert_eq!(a, b, "parsing is deterministic");
        // Pinned: stored keys must match across builds and versions.
        assert_eq!(fnv1a_128(b""), 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d);
        assert_eq!(fnv1a_128(b"a"), 0xd228_cb69_6f1a_8caf_7891_2b70_4e4a_8964);
    }

    #[test]
    fn without_a_chat_id_the_origin_is_the_comment_id() {
        let archive = parse_str(r#"<i><d p="1,1,25,0,0,0,u,77">x</d></i>"#).unwrap();
        assert_eq!(archive.chat_id, None);
        assert_eq!(archive.items[0].comment.origin, "bilibili:77");
    }

    #[test]
    fn malformed_xml_names_the_problem_and_where() {
        let cases = [
            ("<i><d p=\"1,1\">x</i>", "line 1"),
            ("<i>\n<d p=\"1,1\">x</d>\n", "still open"),
            (
                "<i><d p=\"1,1\">a &nbsp; b</d></i>",
                "unknown entity &nbsp;",
            ),
            ("<i><d p=\"1,1\">a & b</d></i>", "line 1"),
            ("<html><body/></html>", "not <i>"),
            ("", "no root element"),
            ("just text", "outside the root"),
            ("<i/><i/>", "second root"),
            ("<i><d p=\"1\" p=\"2\">x</d></i>", "line 1"),
        ];
        for (xml, expected) in cases {
            let err = parse_str(xml).expect_err(xml);
            let message = err.to_string();
            assert!(message.starts_with("malformed XML at line"), "{message}");
            assert!(message.contains(expected), "{xml:?}: {message}");
        }
        let err = parse_str("<i>\n  <d p=\"1,1\">x</e>\n</i>").unwrap_err();
        assert_eq!((err.line, err.column), (2, 15), "{err}: at the `</e>`");
    }

    #[test]
    fn export_writes_bilibili_fields_and_escapes_text_and_author() {
        let video = ChannelId::parse("demo").unwrap();
        let items = [
            stored(1, Mode::Scroll, "ann", r#"<b>&"x"</b>"#),
            stored(2, Mode::Top, "a,b%c", "弹幕"),
            stored(3, Mode::Bottom, "<z>", "z"),
        ];
        let xml = String::from_utf8(export(&video, &items)).unwrap();
        assert!(
            xml.starts_with(r#"<?xml version="1.0" encoding="UTF-8"?>"#),
            "{xml}"
        );
        assert!(xml.contains("<chatid>demo</chatid>"), "{xml}");
        assert!(
            xml.contains(
                r#"<d p="12.25000,1,25,65408,1600000000,0,ann,1">&lt;b&gt;&amp;&quot;x&quot;&lt;/b&gt;</d>"#
            ),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<d p="12.25000,5,25,65408,1600000000,0,a%2Cb%25c,2">弹幕</d>"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#",4,25,65408,1600000000,0,&lt;z&gt;,3">z</d>"#),
            "{xml}"
        );
        assert!(xml.trim_end().ends_with("</i>"), "{xml}");
    }

    #[test]
    fn an_export_reads_back_as_the_same_comments() {
        let video = ChannelId::parse("demo").unwrap();
        let items = [
            stored(1, Mode::Scroll, "ann", r#"<b>&"x"</b>"#),
            stored(2, Mode::Top, "a,b%c", "弹幕 🎉"),
            stored(3, Mode::Bottom, "bob", "z"),
        ];
        let archive = parse(&export(&video, &items)).unwrap();
        assert_eq!(archive.chat_id.as_deref(), Some("demo"));
        assert_eq!((archive.invalid, archive.unsupported_mode), (0, 0));
        assert_eq!(archive.items.len(), 3);
        for (read, original) in archive.items.iter().zip(&items) {
            assert_eq!(read.comment.new.author, original.author);
            assert_eq!(read.comment.new.text, original.text);
            assert_eq!(read.comment.new.color, original.color);
            assert_eq!(read.comment.new.mode, original.mode);
            assert_eq!(read.comment.new.time, original.time);
            assert_eq!(read.comment.sent_at, Some(original.sent_at));
            assert_eq!(
                read.comment.origin,
                format!("bilibili:demo:{}", original.id)
            );
        }
    }

    #[test]
    fn import_report_wire_format_sums_the_skips() {
        let outcome = ImportOutcome {
            added: 8,
            duplicates: 1,
            ids: Some((1, 8)),
        };
        assert_eq!(
            serde_json::to_value(ImportReport::new(4, 3, 2, outcome)).unwrap(),
            serde_json::json!({
                "added": 8, "skipped": 10,
                "details": {"unsupported_mode": 4, "invalid": 3, "duplicate": 1, "banned": 2}
            })
        );
    }

    #[test]
    fn a_file_over_the_entry_cap_is_refused_at_the_first_entry_past_it() {
        let entries = |n: usize| -> String {
            (1..=n)
                .map(|i| format!(r#"<d p="1,1,25,0,0,0,u,{i}">c{i}</d>"#))
                .collect()
        };
        // Invalid and unsupported entries count too: each is parsed.
        let at_cap = format!("<i>{}<d p=\"1,7\">x</d><d>no p</d></i>", entries(3));
        let archive = parse_limited(at_cap.as_bytes(), 5).unwrap();
        assert_eq!(
            (
                archive.items.len(),
                archive.unsupported_mode,
                archive.invalid
            ),
            (3, 1, 1)
        );
        let over = format!("<i>{}</i>", entries(6));
        assert_eq!(
            parse_limited(over.as_bytes(), 5),
            Err(ParseError::TooManyEntries { max: 5 })
        );
        // Refused where the sixth entry opens: what follows is never read, not even a fault.
        let over_then_broken = format!("<i>{}<broken", entries(6));
        assert_eq!(
            parse_limited(over_then_broken.as_bytes(), 5),
            Err(ParseError::TooManyEntries { max: 5 })
        );
        let message = ParseError::TooManyEntries { max: 5 }.to_string();
        assert!(message.contains("more than 5 entries"), "{message}");
        // Malformed XML before the cap is still a fault with its place.
        let broken = "<i><d p=\"1,1\">x</e></i>";
        assert!(matches!(
            parse_limited(broken.as_bytes(), 5),
            Err(ParseError::Xml(XmlError { line: 1, .. }))
        ));
    }

    #[test]
    fn an_export_is_recognised_as_one_of_its_own_video_and_keeps_its_ids() {
        let demo = ChannelId::parse("demo").unwrap();
        let other = ChannelId::parse("other").unwrap();
        let items = [stored(7, Mode::Scroll, "ann", "hi")];
        let archive = parse(&export(&demo, &items)).unwrap();
        assert_eq!(archive.chat_server.as_deref(), Some(CHAT_SERVER));
        assert!(archive.is_export_of(&demo));
        assert!(!archive.is_export_of(&other));
        assert_eq!(archive.items[0].source_id, Some(7));
        assert!(same_comment(&archive.items[0].comment, &items[0]));

        // A Bilibili file whose chat id happens to be a video's name is not one of our exports.
        let bilibili = parse_str(
            r#"<i><chatserver>chat.bilibili.com</chatserver><chatid>demo</chatid><d p="12.25,1,25,65408,1600000000,0,ann,7">hi</d></i>"#,
        )
        .unwrap();
        assert!(!bilibili.is_export_of(&demo));
        assert_eq!(bilibili.chat_server.as_deref(), Some("chat.bilibili.com"));
    }

    #[test]
    fn same_comment_needs_every_field_the_export_carries() {
        let row = stored(7, Mode::Scroll, "ann", "hi");
        let read = |row: &Danmaku| {
            let video = ChannelId::parse("demo").unwrap();
            parse(&export(&video, [row]))
                .unwrap()
                .items
                .remove(0)
                .comment
        };
        assert!(same_comment(&read(&row), &row));
        let mut changed = Vec::new();
        for change in 0..6 {
            let mut other = row.clone();
            match change {
                0 => other.text = "ho".into(),
                1 => other.author = "bob".into(),
                2 => other.color = Color::parse("#000000").unwrap(),
                3 => other.mode = Mode::Top,
                4 => other.time = Some(12.5),
                _ => other.sent_at += chrono::Duration::seconds(1),
            }
            changed.push(same_comment(&read(&other), &row));
        }
        assert_eq!(changed, [false; 6]);
        // Milliseconds of the send time and digits past the fifth decimal are not in an export.
        let mut finer = row.clone();
        finer.sent_at += chrono::Duration::milliseconds(250);
        finer.time = Some(12.250_001);
        assert!(same_comment(&read(&row), &finer));
    }

    #[test]
    fn a_utf8_byte_order_mark_is_accepted() {
        let archive = parse("\u{feff}<i><d p=\"1,1\">x</d></i>".as_bytes()).unwrap();
        assert_eq!(archive.items.len(), 1);
    }
}
