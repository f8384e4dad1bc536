//! The error every client sees: a stable machine-readable code and a human message.
//!
//! Over HTTP it is the body `{"error": {"code": ..., "message": ...}}` with the code's status;
//! over WebSocket it is an `error` frame (see [`crate::protocol::ServerMessage::Error`]).
//! Codes are part of the contract: add new ones, never rename or reuse one.

use serde::{Deserialize, Serialize};

/// A stable error code, written in `snake_case` (`text_too_long`); [`ErrorCode::status`] gives
/// its HTTP status.
///
/// The text form is derived, not written out: `strum` gives [`ErrorCode::as_str`], `Display` and
/// `FromStr`, serde gives the JSON, and a test holds the two equal for every variant.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::Display,
    strum::EnumString,
    strum::EnumIter,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ErrorCode {
    /// The body or frame is not valid JSON, has a field of the wrong type, misses a required
    /// field, names an unknown field, or nests too deeply.
    InvalidJson,
    /// A query-string parameter is missing, malformed or out of range.
    InvalidQuery,
    /// An XML body (a Bilibili archive) is not well-formed.
    InvalidXml,
    /// The room or video id in the path is not `[A-Za-z0-9_-]{1,64}`.
    InvalidChannel,
    /// The comment text is empty after trimming.
    TextEmpty,
    /// The comment text is longer than [`crate::limits::MAX_TEXT_CHARS`] characters.
    TextTooLong,
    /// The comment text holds a control character.
    TextInvalidChars,
    /// The author name is empty after trimming.
    AuthorEmpty,
    /// The author name is longer than [`crate::limits::MAX_AUTHOR_CHARS`] characters.
    AuthorTooLong,
    /// The author name holds a control character.
    AuthorInvalidChars,
    /// The colour is not `#rrggbb`.
    InvalidColor,
    /// The mode is not `scroll`, `top` or `bottom`.
    InvalidMode,
    /// The video time is missing, not finite, or outside `0..=86400` seconds.
    InvalidTime,
    /// A field's value is outside its allowed range (say, a check-in interval of 1 s).
    InvalidValue,
    /// The body or frame is larger than [`crate::limits::MAX_MESSAGE_BYTES`].
    PayloadTooLarge,
    /// The body is not `application/json` (or the type the route takes).
    UnsupportedMediaType,
    /// The client sent more comments than its rate allows; nothing was stored.
    RateLimited,
    /// No such route or resource.
    NotFound,
    /// The route exists but not for this method.
    MethodNotAllowed,
    /// The request conflicts with the current state.
    Conflict,
    /// The request needs credentials (a host token) and has none, or a wrong one.
    Unauthorized,
    /// The credentials are valid but do not allow this.
    Forbidden,
    /// A browser page from an origin that is not allowed tried to open a WebSocket.
    OriginNotAllowed,
    /// The request's `Host` is not a name the service answers to (see `DANMAKU_ALLOWED_HOSTS`):
    /// a page that reached it through DNS rebinding, or a name the operator has not listed.
    HostNotAllowed,
    /// A message exceeded the size limit; over WebSocket it is the close code
    /// [`crate::protocol::close::MESSAGE_TOO_BIG`].
    MessageTooBig,
    /// A check-in code that is neither the current one nor the one before it.
    WrongCode,
    /// This name gave too many wrong codes for this check-in and is refused.
    TooManyAttempts,
    /// The check-in is over.
    CheckinClosed,
    /// A WebSocket frame names a `type` the server does not know.
    UnknownType,
    /// A WebSocket binary frame; the protocol is JSON text.
    UnsupportedFrame,
    /// The comment contains a word the room's host has banned (see [`crate::moderation`]);
    /// nothing was stored.
    BannedWord,
    /// The room's host has muted this name for a while; nothing was stored.
    Muted,
    /// The server failed; the log has the cause.
    Internal,
    /// The server is shutting down or overloaded, or its database did not answer in time or
    /// cannot take writes now; try again.
    Unavailable,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The HTTP status that carries this code. Malformed requests are 400; well-formed requests
    /// whose values break a rule of the comment are 422.
    pub fn status(self) -> u16 {
        match self {
            Self::InvalidJson
            | Self::InvalidQuery
            | Self::InvalidXml
            | Self::InvalidChannel
            | Self::UnknownType
            | Self::UnsupportedFrame => 400,
            Self::TextEmpty
            | Self::TextTooLong
            | Self::TextInvalidChars
            | Self::AuthorEmpty
            | Self::AuthorTooLong
            | Self::AuthorInvalidChars
            | Self::InvalidColor
            | Self::InvalidMode
            | Self::InvalidTime
            | Self::InvalidValue
            | Self::WrongCode
            | Self::BannedWord => 422,
            Self::Unauthorized => 401,
            Self::Forbidden | Self::OriginNotAllowed | Self::Muted => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Conflict | Self::CheckinClosed => 409,
            Self::PayloadTooLarge | Self::MessageTooBig => 413,
            Self::UnsupportedMediaType => 415,
            Self::HostNotAllowed => 421,
            Self::RateLimited | Self::TooManyAttempts => 429,
            Self::Internal => 500,
            Self::Unavailable => 503,
        }
    }
}

/// An error to show a client: what went wrong, in a stable code and a sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// The stable code clients branch on.
    pub code: ErrorCode,
    /// A sentence for people; may change between versions.
    pub message: String,
}

impl ApiError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A server fault. The message stays generic: the cause belongs in the log, not the client.
    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "internal server error")
    }

    /// The HTTP body that carries this error.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.clone(),
        }
    }
}

/// The JSON body of every HTTP error: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ApiError,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_the_documented_shape() {
        let body = ApiError::new(ErrorCode::TextTooLong, "too long").body();
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"error": {"code": "text_too_long", "message": "too long"}})
        );
    }

    #[test]
    fn as_str_matches_serde_for_every_code() {
        use strum::IntoEnumIterator;
        for code in ErrorCode::iter() {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::from(code.as_str())
            );
            assert_eq!(code.to_string(), code.as_str());
            assert_eq!(code.as_str().parse::<ErrorCode>(), Ok(code));
            assert_eq!(
                serde_json::from_value::<ErrorCode>(code.as_str().into()).unwrap(),
                code
            );
            assert!((400..600).contains(&code.status()));
        }
    }

    /// The text forms are derived from the variant names, so renaming a variant would rename a
    /// published code. These are the codes clients may already branch on; a new code needs no
    /// entry here (the test above covers every variant), a renamed or removed one fails.
    #[test]
    fn published_codes_keep_their_names() {
        for published in [
            "invalid_json",
            "invalid_query",
            "invalid_xml",
            "invalid_channel",
            "text_empty",
            "text_too_long",
            "text_invalid_chars",
            "author_empty",
            "author_too_long",
            "author_invalid_chars",
            "invalid_color",
            "invalid_mode",
            "invalid_time",
            "invalid_value",
            "payload_too_large",
            "unsupported_media_type",
            "rate_limited",
            "not_found",
            "method_not_allowed",
            "conflict",
            "unauthorized",
            "forbidden",
            "origin_not_allowed",
            "message_too_big",
            "wrong_code",
            "too_many_attempts",
            "checkin_closed",
            "unknown_type",
            "unsupported_frame",
            "internal",
            "unavailable",
        ] {
            let code: ErrorCode = published.parse().expect(published);
            assert_eq!(code.as_str(), published);
        }
    }
}
