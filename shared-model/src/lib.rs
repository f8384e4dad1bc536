//! The types, validation, wire protocol and formats that the danmaku services share (storage is
//! the `danmaku-store` crate's).
//!
//! Nothing here knows about actix: the services translate these types to and from HTTP and
//! WebSocket at their edges, so the rules for what a comment may be live in one place.
//!
//! - [`limits`]: every limit a comment, a message or a request has, with its unit.
//! - [`comment`]: a stored [`Danmaku`], the validated [`NewDanmaku`] and the raw [`DraftDanmaku`]
//!   a client sends, with the validation that turns one into the other.
//! - [`error`]: [`ApiError`] and its stable [`ErrorCode`]s, the JSON error body of HTTP and the
//!   error frame of WebSocket alike.
//! - [`api`]: HTTP request and response bodies.
//! - [`json`]: reading client JSON so that an error names the field at fault.
//! - [`formats`]: other players' and archives' formats (DPlayer v3, Bilibili XML).
//! - [`protocol`]: the WebSocket frames, [`ClientMessage`] (client to server) and
//!   [`ServerMessage`] (server to client).
//! - [`moderation`]: a room's banned words and the folding (NFKC, case folding, no spaces or
//!   invisible characters) that keeps them from being dodged.
//! - [`imports`]: what an archive import brings in ([`ImportedDanmaku`]) and what it did.
//! - [`time`]: the one text form of a time (RFC 3339, UTC, milliseconds) on the wire and on disk.

pub mod api;
pub mod comment;
pub mod error;
pub mod formats;
pub mod imports;
pub mod json;
pub mod limits;
pub mod moderation;
pub mod protocol;
pub mod time;

pub use comment::{ChannelId, Color, Danmaku, DraftDanmaku, Mode, NewDanmaku};
pub use error::{ApiError, ErrorBody, ErrorCode};
pub use imports::{ImportOutcome, ImportedDanmaku};
pub use protocol::{ClientMessage, Ref, ServerMessage};
