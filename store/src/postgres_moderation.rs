//! [`ModerationStore`] for [`PgStore`] (tables of migration step 3, see `postgres::MIGRATIONS`).
//! Each write is one transaction, its log line included; this instance's listeners hear of a
//! delete after its commit (the other instances through the bus, like comments). Times are cut
//! to the millisecond, as SQLite's text keeps them.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;

use super::moderation::{
    ModerationAction, ModerationEntry, ModerationStore, Mute, deleted_detail, word_count,
};
use super::postgres::{COLUMNS, pg_error, row_to_danmaku};
use super::{Committed, PgStore, StoreError};
use shared_model::time;
use shared_model::{ChannelId, Danmaku};

/// Appends a line to `channel`'s log.
async fn log_action(
    tx: &Transaction<'_>,
    channel: &ChannelId,
    actor: &str,
    action: ModerationAction,
    target: &str,
    detail: Option<&str>,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO moderation_log (channel, at, actor, action, target, detail)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &channel.as_str(),
            &time::now(),
            &actor,
            &action.as_str(),
            &target,
            &detail,
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

#[async_trait]
impl ModerationStore for PgStore {
    async fn delete_comment(
        &self,
        channel: &ChannelId,
        id: i64,
        actor: &str,
    ) -> Result<Option<Danmaku>, StoreError> {
        let (owned, actor) = (channel.clone(), actor.to_owned());
        let found = self
            .run("deleting a comment", move |client| {
                Box::pin(async move {
                    let tx = client.transaction().await.map_err(pg_error)?;
                    let row = tx
                        .query_opt(
                            &format!(
                                "UPDATE danmaku SET deleted_at = $3
                                 WHERE channel = $1 AND id = $2 AND deleted_at IS NULL
                                 RETURNING {COLUMNS}"
                            ),
                            &[&owned.as_str(), &id, &time::now()],
                        )
                        .await
                        .map_err(pg_error)?;
                    let item = row.map(|row| row_to_danmaku(&owned, &row)).transpose()?;
                    if let Some(item) = &item {
                        log_action(
                            &tx,
                            &owned,
                            &actor,
                            ModerationAction::Delete,
                            &id.to_string(),
                            Some(&deleted_detail(item)),
                        )
                        .await?;
                    }
                    tx.commit().await.map_err(pg_error)?;
                    Ok(item)
                })
            })
            .await?;
        if found.is_some() {
            self.tell(Committed::Deleted { channel, id });
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
        let until = time::to_millis(until);
        self.run("muting a name", move |client| {
            Box::pin(async move {
                let tx = client.transaction().await.map_err(pg_error)?;
                tx.execute(
                    "INSERT INTO mutes (channel, name, until) VALUES ($1, $2, $3)
                     ON CONFLICT (channel, name) DO UPDATE SET until = excluded.until",
                    &[&channel.as_str(), &name, &until],
                )
                .await
                .map_err(pg_error)?;
                let detail = format!("until {}", time::rfc3339(until));
                log_action(
                    &tx,
                    &channel,
                    &actor,
                    ModerationAction::Mute,
                    &name,
                    Some(&detail),
                )
                .await?;
                tx.commit().await.map_err(pg_error)
            })
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
        self.run("lifting a mute", move |client| {
            Box::pin(async move {
                let tx = client.transaction().await.map_err(pg_error)?;
                let lifted = tx
                    .execute(
                        "DELETE FROM mutes WHERE channel = $1 AND name = $2 AND until > $3",
                        &[&channel.as_str(), &name, &time::now()],
                    )
                    .await
                    .map_err(pg_error)?
                    > 0;
                if lifted {
                    log_action(&tx, &channel, &actor, ModerationAction::Unmute, &name, None)
                        .await?;
                }
                tx.commit().await.map_err(pg_error)?;
                Ok(lifted)
            })
        })
        .await
    }

    async fn mutes(
        &self,
        channel: &ChannelId,
        now: DateTime<Utc>,
    ) -> Result<Vec<Mute>, StoreError> {
        let channel = channel.as_str().to_owned();
        self.run("a read", move |client| {
            Box::pin(async move {
                let rows = client
                    .query(
                        "SELECT name, until FROM mutes WHERE channel = $1 AND until > $2
                         ORDER BY name",
                        &[&channel, &now],
                    )
                    .await
                    .map_err(pg_error)?;
                rows.iter()
                    .map(|row| {
                        Ok(Mute {
                            name: row.try_get(0).map_err(pg_error)?,
                            until: row.try_get(1).map_err(pg_error)?,
                        })
                    })
                    .collect()
            })
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
        self.run("setting banned words", move |client| {
            Box::pin(async move {
                let tx = client.transaction().await.map_err(pg_error)?;
                tx.execute(
                    "DELETE FROM banned_words WHERE channel = $1",
                    &[&channel.as_str()],
                )
                .await
                .map_err(pg_error)?;
                let positions: Vec<i32> = (0..).take(words.len()).collect();
                tx.execute(
                    "INSERT INTO banned_words (channel, position, word)
                     SELECT $1, * FROM unnest($2::INTEGER[], $3::TEXT[])",
                    &[&channel.as_str(), &positions, &words],
                )
                .await
                .map_err(pg_error)?;
                let detail = word_count(words.len());
                log_action(
                    &tx,
                    &channel,
                    &actor,
                    ModerationAction::BannedWords,
                    "list",
                    Some(&detail),
                )
                .await?;
                tx.commit().await.map_err(pg_error)
            })
        })
        .await
    }

    async fn banned_words(&self, channel: &ChannelId) -> Result<Vec<String>, StoreError> {
        let channel = channel.as_str().to_owned();
        self.run("a read", move |client| {
            Box::pin(async move {
                let rows = client
                    .query(
                        "SELECT word FROM banned_words WHERE channel = $1 ORDER BY position",
                        &[&channel],
                    )
                    .await
                    .map_err(pg_error)?;
                rows.iter()
                    .map(|row| row.try_get(0).map_err(pg_error))
                    .collect()
            })
        })
        .await
    }

    async fn deletions(
        &self,
        channel: &ChannelId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let channel = channel.as_str().to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run("a read", move |client| {
            Box::pin(async move {
                let rows = client
                    .query(
                        "SELECT id, target::BIGINT FROM moderation_log
                         WHERE channel = $1 AND id > $2 AND action = 'delete'
                         ORDER BY id LIMIT $3",
                        &[&channel, &after, &limit],
                    )
                    .await
                    .map_err(pg_error)?;
                rows.iter()
                    .map(|row| {
                        Ok((
                            row.try_get(0).map_err(pg_error)?,
                            row.try_get(1).map_err(pg_error)?,
                        ))
                    })
                    .collect()
            })
        })
        .await
    }

    async fn moderation_log(
        &self,
        channel: &ChannelId,
        limit: usize,
    ) -> Result<Vec<ModerationEntry>, StoreError> {
        let channel = channel.as_str().to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run("a read", move |client| {
            Box::pin(async move {
                let rows = client
                    .query(
                        "SELECT id, at, actor, action, target, detail FROM moderation_log
                         WHERE channel = $1 ORDER BY id DESC LIMIT $2",
                        &[&channel, &limit],
                    )
                    .await
                    .map_err(pg_error)?;
                rows.iter()
                    .map(|row| {
                        let action: &str = row.try_get(3).map_err(pg_error)?;
                        Ok(ModerationEntry {
                            id: row.try_get(0).map_err(pg_error)?,
                            at: row.try_get(1).map_err(pg_error)?,
                            actor: row.try_get(2).map_err(pg_error)?,
                            action: action.parse().map_err(|_| {
                                StoreError::Database(format!("a logged action is {action:?}"))
                            })?,
                            target: row.try_get(4).map_err(pg_error)?,
                            detail: row.try_get(5).map_err(pg_error)?,
                        })
                    })
                    .collect()
            })
        })
        .await
    }
}
