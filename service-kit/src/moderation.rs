//! Moderation as every service does it: who may moderate a channel, the rules a comment must
//! pass before it is stored (not muted, no banned word), and the routes of a moderator.
//!
//! The store keeps the facts (see `danmaku_store::moderation`); this module adds:
//!
//! - [`AdminToken`]: the operator's token, `DANMAKU_ADMIN_TOKEN`, which moderates every channel
//!   of the service (videos have no host; a live room's host moderates their own room).
//! - [`Moderation`]: the check every append passes first ([`Moderation::check`]), with each
//!   channel's rules (banned words, compiled once; mutes) cached for [`RULES_TTL`], so a send
//!   costs no database read beyond one per channel and second. A change made through this
//!   instance applies to its next comment; one made through another instance of a cluster
//!   within [`RULES_TTL`]. Rules past half their life are read again in the background by the
//!   comment that finds them so, which goes on with them: a room that talks at least every half
//!   [`RULES_TTL`] never has a comment wait for that read.
//! - [`routes`]: the moderator's HTTP routes under a channel's path, with the service deciding
//!   who is a moderator ([`Authorize`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use danmaku_store::{ModerationEntry, ModerationStore, Mute, StoreError};
use futures_util::future::LocalBoxFuture;
use serde::{Deserialize, Serialize};
use shared_model::comment::validate_author;
use shared_model::moderation::BannedWords;
use shared_model::{ApiError, ChannelId, Danmaku, ErrorCode};

use crate::HttpError;
use crate::body::Json;

/// How long a channel's rules are used before they are read again (a change made through
/// another instance applies within this).
pub const RULES_TTL: Duration = Duration::from_secs(1);

/// Channels whose rules are cached at once.
const RULES_CACHE_CHANNELS: u64 = 10_000;

/// The longest mute, in minutes (a week).
pub const MAX_MUTE_MINUTES: u32 = 7 * 24 * 60;

/// Lines of the log a moderator is shown.
pub const LOG_LINES: usize = 200;

/// Shortest admin token accepted, in characters: it guards every channel of the service.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// The operator's token (`DANMAKU_ADMIN_TOKEN`): whoever sends it as `Authorization: Bearer`
/// moderates every channel of the service. Kept out of `Debug` output and compared in constant
/// time.
#[derive(Clone)]
pub struct AdminToken(Arc<str>);

impl std::str::FromStr for AdminToken {
    type Err = String;

    /// An empty value is accepted and means no token (see [`crate::ServerArgs::admin`]), so a
    /// compose file can pass `DANMAKU_ADMIN_TOKEN` through when it is unset.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.is_empty() {
            return Ok(Self("".into()));
        }
        if value.contains("${") {
            return Err(
                "the admin token looks like a variable that was never filled in (a \
                        compose file or script passed `${...}` on as it is)"
                    .into(),
            );
        }
        if value.chars().count() < MIN_ADMIN_TOKEN_CHARS || value.chars().any(char::is_whitespace) {
            return Err(format!(
                "the admin token must be at least {MIN_ADMIN_TOKEN_CHARS} characters with no \
                 spaces (make one with: openssl rand -hex 32)"
            ));
        }
        Ok(Self(value.into()))
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// Whether this is a token (not the empty value that means none).
    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }

    /// The token itself, to send to another service of the deployment (never to log).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this token (constant time).
    pub fn matches(&self, given: &str) -> bool {
        constant_time_eq::constant_time_eq(given.as_bytes(), self.0.as_bytes())
    }
}

/// Who moderates: recorded in the log as `host` or `admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moderator {
    /// The live room's host (its host token).
    Host,
    /// The operator (the admin token).
    Admin,
}

impl Moderator {
    /// As the log records it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Admin => "admin",
        }
    }
}

/// One channel's rules, as cached.
#[derive(Debug, Default)]
pub struct Rules {
    banned: BannedWords,
    mutes: Vec<Mute>,
}

/// A channel's rules in the cache, with when they were read.
struct Cached {
    rules: Arc<Rules>,
    read_at: Instant,
    /// A read to replace these has started (at most one at a time).
    refreshing: AtomicBool,
}

impl Cached {
    fn new(rules: Rules) -> Arc<Self> {
        Arc::new(Self {
            rules: Arc::new(rules),
            read_at: Instant::now(),
            refreshing: AtomicBool::new(false),
        })
    }
}

/// Reads `channel`'s rules from `store`.
async fn read_rules(store: &dyn ModerationStore, channel: &ChannelId) -> Result<Rules, StoreError> {
    let words = store.banned_words(channel).await?;
    let mutes = store.mutes(channel, Utc::now()).await?;
    Ok(Rules {
        banned: BannedWords::from_stored(words),
        mutes,
    })
}

impl Rules {
    /// Whether `text` holds one of the channel's banned words.
    pub fn has_banned_word(&self, text: &str) -> bool {
        self.banned.find(text).is_some()
    }
}

/// The moderation of a service's channels. Cheap to clone.
#[derive(Clone)]
pub struct Moderation {
    store: Arc<dyn ModerationStore>,
    admin: Option<AdminToken>,
    /// Each channel's rules for [`RULES_TTL`]; callers that miss together share one read.
    rules: moka::future::Cache<ChannelId, Arc<Cached>>,
    /// Changes made through this instance so far: a read in the background that started before
    /// one is not cached (it may have missed the change).
    changes: Arc<AtomicU64>,
    /// How long rules are used ([`RULES_TTL`]; longer in a test).
    ttl: Duration,
}

impl std::fmt::Debug for Moderation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Moderation")
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

/// A store failure, told to the client as `unavailable` or `internal` (the cause is logged).
fn store_failed(doing: &'static str) -> impl FnOnce(StoreError) -> ApiError {
    move |e| {
        log::error!("{doing}: {e}");
        e.client_error()
    }
}

impl Moderation {
    /// Moderation of the channels in `store`, with the operator's `admin` token if set.
    pub fn new(store: Arc<dyn ModerationStore>, admin: Option<AdminToken>) -> Self {
        Self::with_ttl(store, admin, RULES_TTL)
    }

    /// [`Self::new`], with rules used for `ttl` instead of [`RULES_TTL`].
    fn with_ttl(store: Arc<dyn ModerationStore>, admin: Option<AdminToken>, ttl: Duration) -> Self {
        Self {
            store,
            admin,
            rules: moka::future::Cache::builder()
                .max_capacity(RULES_CACHE_CHANNELS)
                .time_to_live(ttl)
                .build(),
            changes: Arc::default(),
            ttl,
        }
    }

    /// `Ok(Admin)` when `bearer` is the admin token; `unauthorized` without a token (or when
    /// the service has none configured), `forbidden` with a wrong one.
    pub fn admin(&self, bearer: Option<&str>) -> Result<Moderator, ApiError> {
        let Some(admin) = &self.admin else {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "this needs the operator's admin token, and this service has none \
                 (DANMAKU_ADMIN_TOKEN)",
            ));
        };
        match bearer {
            None => Err(ApiError::new(
                ErrorCode::Unauthorized,
                "this needs the admin token (Authorization: Bearer <token>)",
            )),
            Some(token) if admin.matches(token) => Ok(Moderator::Admin),
            Some(_) => Err(ApiError::new(
                ErrorCode::Forbidden,
                "that is not the admin token",
            )),
        }
    }

    /// Whether `bearer` is the admin token.
    pub fn is_admin(&self, bearer: Option<&str>) -> bool {
        matches!((&self.admin, bearer), (Some(admin), Some(token)) if admin.matches(token))
    }

    /// `channel`'s rules now (cached for [`RULES_TTL`]; past half of it, read again in the
    /// background while these are used).
    pub async fn rules(&self, channel: &ChannelId) -> Result<Arc<Rules>, ApiError> {
        let store = self.store.clone();
        let key = channel.clone();
        let cached = self
            .rules
            .try_get_with(channel.clone(), async move {
                read_rules(&*store, &key).await.map(Cached::new)
            })
            .await
            .map_err(|e| store_failed("reading a channel's moderation rules")((*e).clone()))?;
        if cached.read_at.elapsed() >= self.ttl / 2
            && !cached.refreshing.swap(true, Ordering::AcqRel)
        {
            self.refresh(channel.clone(), cached.clone());
        }
        Ok(cached.rules.clone())
    }

    /// Reads `channel`'s rules again in the background and caches them in place of `stale`,
    /// unless a change was made through this instance meanwhile (its own invalidation then
    /// stands, and the next comment reads them).
    fn refresh(&self, channel: ChannelId, stale: Arc<Cached>) {
        let (store, cache, changes) =
            (self.store.clone(), self.rules.clone(), self.changes.clone());
        let before = changes.load(Ordering::Acquire);
        tokio::spawn(async move {
            match read_rules(&*store, &channel).await {
                Ok(rules) if changes.load(Ordering::Acquire) == before => {
                    cache.insert(channel, Cached::new(rules)).await;
                }
                // A change came meanwhile and its invalidation stands; should these rules
                // still be cached (another channel's change), the next comment reads again.
                Ok(_) => stale.refreshing.store(false, Ordering::Release),
                Err(e) => {
                    log::warn!("reading {channel}'s moderation rules again: {e}");
                    // The next comment tries again, until the rules expire.
                    stale.refreshing.store(false, Ordering::Release);
                }
            }
        });
    }

    /// A change to `channel`'s rules was committed through this instance: its next comment
    /// reads them.
    async fn changed(&self, channel: &ChannelId) {
        self.changes.fetch_add(1, Ordering::AcqRel);
        self.rules.invalidate(channel).await;
    }

    /// Whether `author` may post `text` in `channel` now: `muted` while the name is muted there,
    /// `banned_word` when the text holds one of the channel's banned words. Call it after the
    /// comment's own rules passed and before it is stored.
    pub async fn check(
        &self,
        channel: &ChannelId,
        author: &str,
        text: &str,
    ) -> Result<(), ApiError> {
        let rules = self.rules(channel).await?;
        let now = Utc::now();
        if let Some(mute) = rules
            .mutes
            .iter()
            .find(|m| m.name == author && m.until > now)
        {
            return Err(ApiError::new(
                ErrorCode::Muted,
                format!(
                    "the host has muted {author} here until {} UTC",
                    mute.until.format("%H:%M:%S")
                ),
            ));
        }
        rules.banned.check(text)
    }

    /// Deletes comment `id` of `channel` (see `danmaku_store::moderation`); `not_found` when
    /// there is no such comment or it was deleted already.
    pub async fn delete(
        &self,
        channel: &ChannelId,
        id: i64,
        by: Moderator,
    ) -> Result<Danmaku, ApiError> {
        let deleted = self
            .store
            .delete_comment(channel, id, by.as_str())
            .await
            .map_err(store_failed("deleting a comment"))?;
        match deleted {
            Some(item) => {
                log::info!("{channel}: comment {id} deleted by the {}", by.as_str());
                Ok(item)
            }
            None => Err(ApiError::new(
                ErrorCode::NotFound,
                format!("{channel} has no comment {id} (or it was deleted already)"),
            )),
        }
    }

    /// Mutes `name` in `channel` for `minutes` (0 lifts the mute); the mute's end, or `None`
    /// when lifted.
    pub async fn mute(
        &self,
        channel: &ChannelId,
        name: &str,
        minutes: u32,
        by: Moderator,
    ) -> Result<Option<DateTime<Utc>>, ApiError> {
        let name = validate_author(name)?;
        if minutes > MAX_MUTE_MINUTES {
            return Err(ApiError::new(
                ErrorCode::InvalidValue,
                format!("a mute lasts 0 to {MAX_MUTE_MINUTES} minutes (0 lifts it)"),
            ));
        }
        let until = if minutes == 0 {
            let lifted = self
                .store
                .unmute(channel, &name, by.as_str())
                .await
                .map_err(store_failed("lifting a mute"))?;
            if !lifted {
                return Err(ApiError::new(
                    ErrorCode::NotFound,
                    format!("{name} is not muted in {channel}"),
                ));
            }
            None
        } else {
            let until = shared_model::time::to_millis(
                Utc::now() + chrono::Duration::minutes(i64::from(minutes)),
            );
            self.store
                .mute(channel, &name, until, by.as_str())
                .await
                .map_err(store_failed("muting a name"))?;
            Some(until)
        };
        self.changed(channel).await;
        Ok(until)
    }

    /// Replaces `channel`'s banned words (checked: see [`BannedWords::parse`]); the list as
    /// kept.
    pub async fn set_banned_words(
        &self,
        channel: &ChannelId,
        words: &[String],
        by: Moderator,
    ) -> Result<Vec<String>, ApiError> {
        let words = BannedWords::parse(words)?.words().to_vec();
        self.store
            .set_banned_words(channel, words.clone(), by.as_str())
            .await
            .map_err(store_failed("setting banned words"))?;
        self.changed(channel).await;
        Ok(words)
    }

    /// The comments of `channel` deleted after log line `after`, oldest first, at most `limit`:
    /// `(line id, comment id)` each (see `ModerationStore::deletions`).
    pub async fn deletions(
        &self,
        channel: &ChannelId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, i64)>, ApiError> {
        self.store
            .deletions(channel, after, limit)
            .await
            .map_err(store_failed("reading deletions"))
    }

    /// The id of `channel`'s newest log line (0 for none): where a client whose history was
    /// just read (deleted comments already left out) starts asking for deletes.
    pub async fn newest_line(&self, channel: &ChannelId) -> Result<i64, ApiError> {
        let newest = self
            .store
            .moderation_log(channel, 1)
            .await
            .map_err(store_failed("reading the moderation log"))?;
        Ok(newest.first().map_or(0, |line| line.id))
    }

    /// What a moderator sees of `channel`: its banned words, the names muted now, and the
    /// newest [`LOG_LINES`] lines of its log.
    pub async fn overview(&self, channel: &ChannelId) -> Result<Overview, ApiError> {
        let failed = || store_failed("reading a channel's moderation");
        Ok(Overview {
            banned_words: self.store.banned_words(channel).await.map_err(failed())?,
            mutes: self
                .store
                .mutes(channel, Utc::now())
                .await
                .map_err(failed())?,
            log: self
                .store
                .moderation_log(channel, LOG_LINES)
                .await
                .map_err(failed())?,
        })
    }
}

/// The answer of `GET .../moderation`.
#[derive(Debug, Serialize)]
pub struct Overview {
    /// The banned words, in the order set.
    pub banned_words: Vec<String>,
    /// The names muted now, by name.
    pub mutes: Vec<Mute>,
    /// The newest lines of the log, newest first.
    pub log: Vec<ModerationEntry>,
}

/// Who may moderate a channel: the service's own rule (the live service: the room's host or
/// the admin; the others: the admin).
pub trait Authorize: Send + Sync + 'static {
    /// The moderator `bearer` (the request's bearer token) proves to be for `channel`, or the
    /// error to answer (`unauthorized`, `forbidden`).
    fn moderator<'a>(
        &'a self,
        channel: &'a ChannelId,
        bearer: Option<&'a str>,
    ) -> LocalBoxFuture<'a, Result<Moderator, ApiError>>;
}

/// Only the admin token moderates.
impl Authorize for Moderation {
    fn moderator<'a>(
        &'a self,
        _channel: &'a ChannelId,
        bearer: Option<&'a str>,
    ) -> LocalBoxFuture<'a, Result<Moderator, ApiError>> {
        Box::pin(std::future::ready(self.admin(bearer)))
    }
}

/// What the moderator's routes need: the moderation and the service's [`Authorize`].
pub struct ModerationRoutes {
    /// The moderation.
    pub moderation: Moderation,
    /// Who may moderate.
    pub authorize: Box<dyn Authorize>,
}

/// The bearer token of a request (`Authorization: Bearer <token>`), if it has one.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Registers the moderator's routes under `prefix` (`/api/rooms` or `/api/videos`), for the
/// channels `{prefix}/{channel}`; they need `web::Data<ModerationRoutes>`:
///
/// - `DELETE {prefix}/{channel}/danmaku/{id}`: deletes a comment; `200 {"deleted": comment}`.
/// - `GET {prefix}/{channel}/moderation`: [`Overview`].
/// - `PUT {prefix}/{channel}/banned-words` with `{"words": [...]}`: `200 {"words": [...]}`.
/// - `POST {prefix}/{channel}/mutes` with `{"name", "minutes"}`: `200 {"name", "until"}`
///   (`until` null when `minutes` is 0, which lifts the mute).
pub fn routes(cfg: &mut web::ServiceConfig, prefix: &str) {
    cfg.route(
        &format!("{prefix}/{{channel}}/danmaku/{{id:\\d+}}"),
        web::delete().to(delete),
    )
    .route(
        &format!("{prefix}/{{channel}}/moderation"),
        web::get().to(overview),
    )
    .route(
        &format!("{prefix}/{{channel}}/banned-words"),
        web::put().to(set_banned_words),
    )
    .route(&format!("{prefix}/{{channel}}/mutes"), web::post().to(mute));
}

/// The channel of the path and the moderator the request proves to be.
async fn moderator_of(
    req: &HttpRequest,
    routes: &ModerationRoutes,
    channel: &str,
) -> Result<(ChannelId, Moderator), HttpError> {
    let channel = ChannelId::parse(channel)?;
    let by = routes.authorize.moderator(&channel, bearer(req)).await?;
    Ok((channel, by))
}

async fn delete(
    req: HttpRequest,
    routes: web::Data<ModerationRoutes>,
    path: web::Path<(String, i64)>,
) -> Result<HttpResponse, HttpError> {
    let (channel, id) = path.into_inner();
    let (channel, by) = moderator_of(&req, &routes, &channel).await?;
    let deleted = routes.moderation.delete(&channel, id, by).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "deleted": deleted })))
}

async fn overview(
    req: HttpRequest,
    routes: web::Data<ModerationRoutes>,
    channel: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let (channel, _) = moderator_of(&req, &routes, &channel).await?;
    Ok(HttpResponse::Ok().json(routes.moderation.overview(&channel).await?))
}

/// The body of `PUT .../banned-words`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WordList {
    words: Vec<String>,
}

async fn set_banned_words(
    req: HttpRequest,
    routes: web::Data<ModerationRoutes>,
    channel: web::Path<String>,
    body: Json<WordList>,
) -> Result<HttpResponse, HttpError> {
    let (channel, by) = moderator_of(&req, &routes, &channel).await?;
    let words = routes
        .moderation
        .set_banned_words(&channel, &body.into_inner().words, by)
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "words": words })))
}

/// The body of `POST .../mutes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MuteRequest {
    name: String,
    minutes: u32,
}

async fn mute(
    req: HttpRequest,
    routes: web::Data<ModerationRoutes>,
    channel: web::Path<String>,
    body: Json<MuteRequest>,
) -> Result<HttpResponse, HttpError> {
    let (channel, by) = moderator_of(&req, &routes, &channel).await?;
    let MuteRequest { name, minutes } = body.into_inner();
    let until = routes.moderation.mute(&channel, &name, minutes, by).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "name": name.trim(),
        "until": until.map(shared_model::time::rfc3339),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_tokens_are_long_and_never_shown() {
        assert!("short".parse::<AdminToken>().is_err());
        assert!("sixteen chars ok".parse::<AdminToken>().is_err(), "spaces");
        let token: AdminToken = "0123456789abcdef".parse().unwrap();
        assert!(token.matches("0123456789abcdef"));
        assert!(!token.matches("0123456789abcdeF"));
        assert!(!format!("{token:?}").contains("0123"));
        // podman-compose 1.0.3 passes `${VAR:-}` on as it is: that must not become a token.
        assert!("${DANMAKU_ADMIN_TOKEN:-}".parse::<AdminToken>().is_err());
        let empty: AdminToken = "".parse().unwrap();
        assert!(!empty.is_set() && token.is_set());
    }

    /// A room that talks has its rules read again in the background, and no comment waits for
    /// that read: past half the rules' life, a comment is checked against the rules it finds
    /// and starts a read, which brings a change made elsewhere (here straight in the store, as
    /// another instance makes it) before the rules expire; and once the first rules have
    /// expired, with the store's reads stalled, a comment is still checked at once, against the
    /// rules read in the background. Before, every comment after the rules expired waited for a
    /// read, and a change made elsewhere applied only then.
    #[tokio::test]
    async fn rules_are_read_again_in_the_background_and_no_comment_waits_for_it() {
        let ttl = Duration::from_secs(2);
        let dir = tempfile::tempdir().unwrap();
        let store = danmaku_store::SqliteStore::open(dir.path().join("rules.db")).unwrap();
        let moderation = Moderation::with_ttl(Arc::new(store.clone()), None, ttl);
        let room = ChannelId::parse("room").unwrap();
        let first_read = Instant::now();
        moderation.check(&room, "ann", "no spam").await.unwrap();
        store
            .set_banned_words(&room, vec!["spam".into()], "admin")
            .await
            .unwrap();

        tokio::time::sleep(ttl / 2 + Duration::from_millis(100)).await;
        // Checked against the rules found, which are older than the ban; a read starts.
        moderation.check(&room, "ann", "no spam").await.unwrap();
        // The read brings the ban before the first rules expire.
        loop {
            match moderation.check(&room, "ann", "no spam").await {
                Err(e) if e.code == ErrorCode::BannedWord => break,
                Err(e) => panic!("{e:?}"),
                Ok(()) => assert!(
                    first_read.elapsed() < ttl - Duration::from_millis(100),
                    "the ban applied only when the first rules expired: not read in the background"
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Past the first rules' life, with the store answering no read, a comment is checked at
        // once against the rules read in the background.
        store.faults().stall(true);
        tokio::time::sleep(
            (first_read + ttl + Duration::from_millis(200)).duration_since(Instant::now()),
        )
        .await;
        let checked = tokio::time::timeout(
            Duration::from_secs(5),
            moderation.check(&room, "ann", "fine"),
        )
        .await;
        store.faults().stall(false);
        checked
            .expect("the comment waited for a read of the rules")
            .unwrap();
    }
}
