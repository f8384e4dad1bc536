//! The limits of the API (docs/api.md and docs/protocol.md), each with its unit.

/// Longest comment text, in characters (Unicode scalar values) after trimming.
pub const MAX_TEXT_CHARS: usize = 100;

/// Longest author name, in characters after trimming.
pub const MAX_AUTHOR_CHARS: usize = 24;

/// Longest channel (room or video) id, in ASCII characters.
pub const MAX_CHANNEL_CHARS: usize = 64;

/// Latest point on a video's timeline a comment may be pinned to, in seconds (24 hours).
pub const MAX_VIDEO_TIME_SECS: f64 = 86_400.0;

/// Largest HTTP body or WebSocket message a client may send, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024;

/// Default number of items a cursor poll returns.
pub const DEFAULT_PAGE_ITEMS: usize = 100;

/// Most items a cursor poll returns.
pub const MAX_PAGE_ITEMS: usize = 500;

/// Longest a long poll may wait, in seconds.
pub const MAX_LONG_POLL_SECS: u64 = 30;

/// Comments the seed's `GET /polling` returns (the assignment's original behaviour).
pub const SEED_POLLING_ITEMS: usize = 5;

/// Colour of a comment that names none.
pub const DEFAULT_COLOR: &str = "#ffffff";

/// Most check-ins of a room in its host's list and in its attendance table: the newest ones.
pub const MAX_ROOM_CHECKINS: usize = 500;

/// Most attendance rows (one name at one check-in) a room's attendance table reads.
pub const MAX_ATTENDANCE_MARKS: usize = 100_000;

/// Most cells (names times check-ins) in a room's attendance table.
pub const MAX_ATTENDANCE_CELLS: usize = 500_000;
