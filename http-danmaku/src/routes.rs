//! The HTTP routes: extract, call the store, respond. No SQL and no rules of the comment here.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use service_kit::HttpError;
use service_kit::body::Json;
use service_kit::error::{page_params, query_param};
use service_kit::rate::peer_ip;
use shared_model::api::PollStats;
use shared_model::comment::TimeRule;
use shared_model::limits::{MAX_LONG_POLL_SECS, SEED_POLLING_ITEMS};
use shared_model::{ChannelId, DraftDanmaku, ErrorCode};

use crate::state::AppState;

/// The room the seed's `GET /polling` reads.
pub const SEED_ROOM: &str = "default";

/// Registers the API routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(service_kit::server::health))
        .route("/polling", web::get().to(seed_polling))
        .route("/api/stats", web::get().to(stats))
        .service(
            web::resource("/api/rooms/{room}/danmaku")
                .route(web::post().to(post_danmaku))
                .route(web::get().to(poll_danmaku)),
        );
    // The admin (DANMAKU_ADMIN_TOKEN) deletes comments, mutes names and sets banned words.
    service_kit::moderation::routes(cfg, "/api/rooms");
}

/// `POST /api/rooms/{room}/danmaku`: validate, rate-limit, store (durably). Waiting long polls
/// hear of the comment from the store (see [`crate::feed`]), not from here.
async fn post_danmaku(
    req: HttpRequest,
    state: web::Data<AppState>,
    room: web::Path<String>,
    body: Json<DraftDanmaku>,
) -> Result<HttpResponse, HttpError> {
    let room = ChannelId::parse(&room)?;
    let new = body.into_inner().validate(TimeRule::Absent)?;
    // Checked after validation, so a typo does not cost the client one of its comments.
    state.budget.writes.take_request(&req, 1).await?;
    state
        .moderation
        .check(&room, &new.author, &new.text)
        .await?;
    let item = state.store.append(&room, new).await?;
    log::debug!("room {room}: stored comment {}", item.id);
    Ok(HttpResponse::Created().json(item))
}

/// The query of a cursor poll, as text: each parameter is parsed by [`query_param`] so an error can
/// name it. Unknown parameters (cache busters such as `_=123`) are ignored.
#[derive(Debug, Deserialize)]
struct PollQuery {
    /// Return items with a greater id; absent means "the newest `limit` items".
    after: Option<String>,
    /// At most this many items (1-500, default 100).
    limit: Option<String>,
    /// Long poll: wait up to this many seconds (0-30) for something newer.
    wait: Option<String>,
    /// Also answer the comments deleted after this moderation log line (0 for all), and wake a
    /// long poll for a delete: how a page takes deleted comments off its screen.
    deleted_after: Option<String>,
}

/// Most deletions one poll answers; a client passes `deleted_next` back for the rest.
const MAX_DELETIONS_PER_POLL: usize = 500;

/// The answer of a cursor poll: [`shared_model::api::Page`], and with `deleted_after` the
/// deleted comments' ids and the cursor after them.
#[derive(Debug, Serialize)]
struct PollAnswer {
    items: Vec<shared_model::Danmaku>,
    next: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    deleted: Option<Vec<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deleted_next: Option<i64>,
}

/// `GET /api/rooms/{room}/danmaku?after=&limit=&wait=`: the short and the long poll. It needs
/// one token of the client's read budget before the database is asked, and then costs the rows
/// it returns (a long poll that wakes reads again but pays once, for what it answers).
async fn poll_danmaku(
    req: HttpRequest,
    state: web::Data<AppState>,
    room: web::Path<String>,
    query: web::Query<PollQuery>,
) -> Result<HttpResponse, HttpError> {
    let room = ChannelId::parse(&room)?;
    let (after, limit) = page_params(query.after.as_deref(), query.limit.as_deref())?;
    let wait: u64 =
        query_param("wait", query.wait.as_deref(), "a whole number of seconds")?.unwrap_or(0);
    if wait > MAX_LONG_POLL_SECS {
        return Err(HttpError::new(
            ErrorCode::InvalidQuery,
            format!("wait must be from 0 to {MAX_LONG_POLL_SECS} seconds"),
        ));
    }
    let deleted_after: Option<i64> = query_param(
        "deleted_after",
        query.deleted_after.as_deref(),
        "a moderation log line (0 or more)",
    )?;
    if deleted_after.is_some_and(|d| d < 0) {
        return Err(HttpError::new(
            ErrorCode::InvalidQuery,
            "deleted_after must be 0 or more",
        ));
    }
    let ticket = state.budget.reads.admit(peer_ip(&req), "a poll")?;

    // Subscribe before the first query: a comment committed (or deleted) after it still wakes us.
    let mut subscription = match wait {
        0 => None,
        _ => state.feeds.subscribe(&room),
    };
    // A first poll (no cursor) reads the newest comments, deleted ones already left out: its
    // deletes start at the log's newest line, so a page does not read the room's whole past.
    let deleted_after = match (deleted_after, after) {
        (Some(_), None) => Some(state.moderation.newest_line(&room).await?),
        (deleted_after, _) => deleted_after,
    };
    let deletions = async |state: &AppState| match deleted_after {
        Some(after) => state
            .moderation
            .deletions(&room, after, MAX_DELETIONS_PER_POLL)
            .await
            .map(Some),
        None => Ok(None),
    };
    let (mut items, after) = match after {
        Some(after) => (state.store.after(&room, after, limit).await?, after),
        None => (state.store.latest(&room, limit).await?, 0),
    };
    let mut deleted = deletions(&state).await?;
    if items.is_empty()
        && deleted.as_ref().is_none_or(Vec::is_empty)
        && let Some(subscription) = subscription.as_mut()
    {
        let woke = tokio::time::timeout(
            Duration::from_secs(wait),
            subscription.changed(after, deleted_after.is_some()),
        )
        .await;
        if let Ok(true) = woke {
            items = state.store.after(&room, after, limit).await?;
            deleted = deletions(&state).await?;
        }
    }
    drop(subscription);
    ticket.pay(items.len() + deleted.as_ref().map_or(0, Vec::len));
    let next = items.last().map_or(after, |item| item.id);
    let deleted_next = deleted_after.map(|after| {
        deleted
            .as_ref()
            .and_then(|d| d.last())
            .map_or(after, |(line, _)| *line)
    });
    Ok(HttpResponse::Ok().json(PollAnswer {
        items,
        next,
        deleted: deleted.map(|d| d.into_iter().map(|(_, id)| id).collect()),
        deleted_next,
    }))
}

/// `GET /polling`: the assignment's original call, kept for comparison. It answers the last 5
/// comments of room `default` (oldest first) and nothing else, and costs the rows it returns, so a client polling it misses
/// whatever arrived beyond 5 between two polls and sees the same comments again when none did.
async fn seed_polling(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let ticket = state.budget.reads.admit(peer_ip(&req), "a poll")?;
    let room = ChannelId::parse(SEED_ROOM)?;
    let items = state.store.latest(&room, SEED_POLLING_ITEMS).await?;
    ticket.pay(items.len());
    Ok(HttpResponse::Ok().json(items))
}

/// `GET /api/stats`: how many long polls wait now, for operators (and for tests, which wait on it
/// instead of sleeping until a poll is surely waiting).
async fn stats(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(PollStats {
        long_polls_waiting: state.feeds.waiters(),
        rooms_waited_on: state.feeds.rooms_waited_on(),
    })
}
