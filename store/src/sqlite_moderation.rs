//! [`ModerationStore`] for [`SqliteStore`] (tables from schema version 6, see
//! `sqlite::MIGRATIONS`). Each write is one transaction on the writer thread, its log line
//! included; the listeners hear of a delete after its commit.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Transaction, params};

use super::moderation::{
    ModerationAction, ModerationEntry, ModerationStore, Mute, deleted_detail, word_count,
};
use super::sqlite::{COLUMNS, row_to_danmaku, time_at};
use super::{Committed, SqliteStore, StoreError};
use shared_model::time;
use shared_model::{ChannelId, Danmaku};

/// Appends a line to `channel`'s log.
fn log_action(
    tx: &Transaction<'_>,
    channel: &ChannelId,
    actor: &str,
    action: ModerationAction,
    target: &str,
    detail: Option<&str>,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO moderation_log (channel, at, actor, action, target, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            channel.as_str(),
            time::rfc3339(Utc::now()),
            actor,
            action.as_str(),
            target,
            detail
        ],
    )?;
    Ok(())
}

#[async_trait]
impl ModerationStore for SqliteStore {
    async fn delete_comment(
        &self,
        channel: &ChannelId,
        id: i64,
        actor: &str,
    ) -> Result<Option<Danmaku>, StoreError> {
        let (channel, actor) = (channel.clone(), actor.to_owned());
        let deleted_at = time::rfc3339(Utc::now());
        let found = {
            let channel = channel.clone();
            self.write(move |tx| {
                let item = tx
                    .query_row(
                        &format!(
                            "UPDATE danmaku SET deleted_at = ?3
                             WHERE channel = ?1 AND id = ?2 AND deleted_at IS NULL
                             RETURNING {COLUMNS}"
                        ),
                        params![channel.as_str(), id, deleted_at],
                        |row| row_to_danmaku(&channel, row),
                    )
                    .optional()?;
                if let Some(item) = &item {
                    log_action(
                        tx,
                        &channel,
                        &actor,
                        ModerationAction::Delete,
                        &id.to_string(),
                        Some(&deleted_detail(item)),
                    )?;
                }
                Ok(item)
            })
            .await?
        };
        if found.is_some() {
            self.tell(Committed::Deleted {
                channel: &channel,
                id,
            });
        }
        Ok(found)
    }

    async fn mute(
        &self,
        channel: &ChannelId,
        name: &str,
        until: DateTime<Utc>,
        actor: &str,
    ) -> Result<(), StoreError> {
        let (channel, name, actor) = (channel.clone(), name.to_owned(), actor.to_owned());
        let until = time::rfc3339(until);
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO mutes (channel, name, until) VALUES (?1, ?2, ?3)
                 ON CONFLICT (channel, name) DO UPDATE SET until = excluded.until",
                params![channel.as_str(), name, until],
            )?;
            log_action(
                tx,
                &channel,
                &actor,
                ModerationAction::Mute,
                &name,
                Some(&format!("until {until}")),
            )
        })
        .await
    }

    async fn unmute(
        &self,
        channel: &ChannelId,
        name: &str,
        actor: &str,
    ) -> Result<bool, StoreError> {
        let (channel, name, actor) = (channel.clone(), name.to_owned(), actor.to_owned());
        let now = time::rfc3339(Utc::now());
        self.write(move |tx| {
            // RFC 3339 UTC text with milliseconds sorts as the times do.
            let lifted = tx.execute(
                "DELETE FROM mutes WHERE channel = ?1 AND name = ?2 AND until > ?3",
                params![channel.as_str(), name, now],
            )? > 0;
            if lifted {
                log_action(tx, &channel, &actor, ModerationAction::Unmute, &name, None)?;
            }
            Ok(lifted)
        })
        .await
    }

    async fn mutes(
        &self,
        channel: &ChannelId,
        now: DateTime<Utc>,
    ) -> Result<Vec<Mute>, StoreError> {
        let channel = channel.clone();
        let now = time::rfc3339(now);
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT name, until FROM mutes WHERE channel = ?1 AND until > ?2 ORDER BY name",
            )?
            .query_map(params![channel.as_str(), now], |row| {
                Ok(Mute {
                    name: row.get(0)?,
                    until: time_at(row, 1)?,
                })
            })?
            .collect()
        })
        .await
    }

    async fn set_banned_words(
        &self,
        channel: &ChannelId,
        words: Vec<String>,
        actor: &str,
    ) -> Result<(), StoreError> {
        let (channel, actor) = (channel.clone(), actor.to_owned());
        self.write(move |tx| {
            tx.execute(
                "DELETE FROM banned_words WHERE channel = ?1",
                [channel.as_str()],
            )?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO banned_words (channel, position, word) VALUES (?1, ?2, ?3)",
            )?;
            for (position, word) in (0_i64..).zip(&words) {
                insert.execute(params![channel.as_str(), position, word])?;
            }
            log_action(
                tx,
                &channel,
                &actor,
                ModerationAction::BannedWords,
                "list",
                Some(&word_count(words.len())),
            )
        })
        .await
    }

    async fn banned_words(&self, channel: &ChannelId) -> Result<Vec<String>, StoreError> {
        let channel = channel.clone();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT word FROM banned_words WHERE channel = ?1 ORDER BY position",
            )?
            .query_map([channel.as_str()], |row| row.get(0))?
            .collect()
        })
        .await
    }

    async fn deletions(
        &self,
        channel: &ChannelId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let channel = channel.clone();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT id, CAST(target AS INTEGER) FROM moderation_log
                 WHERE channel = ?1 AND id > ?2 AND action = 'delete' ORDER BY id LIMIT ?3",
            )?
            .query_map(params![channel.as_str(), after, limit], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?
            .collect()
        })
        .await
    }

    async fn moderation_log(
        &self,
        channel: &ChannelId,
        limit: usize,
    ) -> Result<Vec<ModerationEntry>, StoreError> {
        let channel = channel.clone();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT id, at, actor, action, target, detail FROM moderation_log
                 WHERE channel = ?1 ORDER BY id DESC LIMIT ?2",
            )?
            .query_map(params![channel.as_str(), limit], |row| {
                let action: String = row.get(3)?;
                Ok(ModerationEntry {
                    id: row.get(0)?,
                    at: time_at(row, 1)?,
                    actor: row.get(2)?,
                    action: action.parse().map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(
                            3,
                            rusqlite::types::Type::Text,
                            Box::new(e),
                        )
                    })?,
                    target: row.get(4)?,
                    detail: row.get(5)?,
                })
            })?
            .collect()
        })
        .await
    }
}
