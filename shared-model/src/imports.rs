//! What an import brings in and what it did: the types the archive formats produce and the store
//! consumes.

use chrono::{DateTime, Utc};

use crate::comment::NewDanmaku;

/// A comment brought in from an archive (a Bilibili XML file, say).
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedDanmaku {
    /// The validated comment.
    pub new: NewDanmaku,
    /// What identifies it in its source, unique within the channel (for example
    /// `bilibili:<dmid>`). Importing the same origin again adds nothing: imports are idempotent.
    pub origin: String,
    /// When it was originally sent (stored to the millisecond); the import time when unknown.
    pub sent_at: Option<DateTime<Utc>>,
}

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportOutcome {
    /// Comments stored.
    pub added: usize,
    /// Comments whose origin was already stored, left alone.
    pub duplicates: usize,
    /// The ids the added comments took, `(first, last)`, dense; `None` when nothing was added.
    pub ids: Option<(i64, i64)>,
}
