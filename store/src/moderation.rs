//! Moderation: what a room's host (or the operator, with the admin token) may do to a channel,
//! and the record of it.
//!
//! - **Delete** a comment: a soft delete. The row stays (for the log, and so an id is never
//!   reused) with the time it was deleted, and every read of the store ([`crate::Store::after`],
//!   [`crate::Store::latest`], [`crate::Store::time_window`], and so every history, recovery,
//!   timeline, DPlayer list and export built on them) leaves it out. The store's listeners hear
//!   [`crate::Committed::Deleted`] once it is committed, so the fan-out can take it off every
//!   screen.
//! - **Mute** a name in a channel until a time: the services refuse its comments (`muted`).
//! - **Banned words** per channel: the services refuse comments containing one (`banned_word`,
//!   matched as `shared_model::moderation` folds them).
//!
//! Every one of these that changes something is recorded in the channel's log in the same
//! transaction: who (the actor the service names: `host` or `admin`), what, when.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::StoreError;
use shared_model::{ChannelId, Danmaku};

/// What a moderator did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::IntoStaticStr, strum::EnumString)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ModerationAction {
    /// Deleted a comment (the target is its id).
    Delete,
    /// Muted a name (the target), until the time in the detail.
    Mute,
    /// Lifted a name's mute.
    Unmute,
    /// Replaced the banned-word list (the detail says how many words it holds).
    BannedWords,
}

impl ModerationAction {
    /// The action as stored and shown.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One line of a channel's moderation log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModerationEntry {
    /// Increasing across all channels, assigned by the store.
    pub id: i64,
    /// When ([`shared_model::time`] text on the wire).
    #[serde(with = "shared_model::time::wire")]
    pub at: DateTime<Utc>,
    /// Who: `host` or `admin`.
    pub actor: String,
    /// What.
    pub action: ModerationAction,
    /// To what: a comment id, a name, or the list.
    pub target: String,
    /// More: the deleted comment's author and text, a mute's end.
    pub detail: Option<String>,
}

/// A muted name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mute {
    /// The name, as it writes comments.
    pub name: String,
    /// Until when ([`shared_model::time`] text on the wire).
    #[serde(with = "shared_model::time::wire")]
    pub until: DateTime<Utc>,
}

/// Moderation of channels. Every write returns once committed, with its log line.
#[async_trait]
pub trait ModerationStore: Send + Sync + 'static {
    /// Soft-deletes comment `id` of `channel` and logs it: `Some(comment)` when it was there
    /// and visible, `None` when there is no such comment or it was deleted already (nothing is
    /// logged then, so deleting twice is harmless).
    async fn delete_comment(
        &self,
        channel: &ChannelId,
        id: i64,
        actor: &str,
    ) -> Result<Option<Danmaku>, StoreError>;

    /// Mutes `name` in `channel` until `until` (replacing an earlier mute of it), and logs it.
    async fn mute(
        &self,
        channel: &ChannelId,
        name: &str,
        until: DateTime<Utc>,
        actor: &str,
    ) -> Result<(), StoreError>;

    /// Lifts `name`'s mute in `channel`; `false` when it had none in force (nothing logged).
    async fn unmute(
        &self,
        channel: &ChannelId,
        name: &str,
        actor: &str,
    ) -> Result<bool, StoreError>;

    /// The names muted in `channel` at `now`, by name.
    async fn mutes(&self, channel: &ChannelId, now: DateTime<Utc>)
    -> Result<Vec<Mute>, StoreError>;

    /// Replaces `channel`'s banned words with `words` (checked by the caller), and logs it.
    async fn set_banned_words(
        &self,
        channel: &ChannelId,
        words: Vec<String>,
        actor: &str,
    ) -> Result<(), StoreError>;

    /// `channel`'s banned words, in the order they were set.
    async fn banned_words(&self, channel: &ChannelId) -> Result<Vec<String>, StoreError>;

    /// The comments of `channel` deleted after log line `after` (a line's id), oldest first, at
    /// most `limit`: for clients that poll, to take deleted comments off their screens. Each is
    /// `(line id, comment id)`; pass the last line id back as the next `after`.
    async fn deletions(
        &self,
        channel: &ChannelId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, i64)>, StoreError>;

    /// The newest `limit` lines of `channel`'s log, newest first.
    async fn moderation_log(
        &self,
        channel: &ChannelId,
        limit: usize,
    ) -> Result<Vec<ModerationEntry>, StoreError>;
}

/// What the log says of a deleted comment.
pub(crate) fn deleted_detail(item: &Danmaku) -> String {
    format!("{}: {}", item.author, item.text)
}

/// What the log says of a banned-word list of `n` words.
pub(crate) fn word_count(n: usize) -> String {
    if n == 1 {
        "1 word".to_owned()
    } else {
        format!("{n} words")
    }
}
