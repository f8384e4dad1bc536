//! The routes of the live service. Extract, call, respond.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use rand::Rng;
use serde::{Deserialize, Serialize};
use service_kit::HttpError;
use service_kit::error::{page_params, query_param};
use service_kit::rate::retry_after_secs;
use shared_model::api::Page;
use shared_model::comment::{validate_author, validate_text};
use shared_model::store::{CheckinRecord, RoomRecord};
use shared_model::time::rfc3339;
use shared_model::{ApiError, ChannelId, ErrorCode};

use crate::checkin::{
    DURATION_SECS, INTERVAL_SECS, attend, new_host_token, token_digest, token_matches,
};
use crate::hub::StartCheckin;
use crate::session::LiveSession;
use crate::state::LiveState;

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(service_kit::server::health))
        .route("/ws/live/{room}", web::get().to(watch))
        .route("/api/rooms", web::post().to(create_room))
        .route("/api/rooms/{room}/history", web::get().to(history))
        .route("/api/rooms/{room}/checkins", web::post().to(open_checkin))
        .route("/api/checkins/{id:\\d+}", web::get().to(checkin_json))
        .route("/api/checkins/{id:\\d+}.csv", web::get().to(checkin_csv))
        .route(
            "/api/checkins/{id:\\d+}/attend",
            web::post().to(attend_over_http),
        );
}

fn rate_limit(req: &HttpRequest, state: &LiveState) -> Result<(), HttpError> {
    match req.peer_addr() {
        Some(peer) => state
            .limiter
            .check(peer.ip())
            .map_err(|wait| HttpError::rate_limited(retry_after_secs(wait))),
        None => Ok(()),
    }
}

/// The query of the WebSocket route, as text (see [`query_param`]).
#[derive(Debug, Deserialize)]
struct WatchQuery {
    name: Option<String>,
    since: Option<String>,
    host_token: Option<String>,
}

/// `GET /ws/live/{room}?name=&since=&host_token=`: checks, then the upgrade.
async fn watch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<LiveState>,
    room: web::Path<String>,
    query: web::Query<WatchQuery>,
) -> Result<HttpResponse, actix_web::Error> {
    service_kit::ws::check_origin(&req, &state.ws.allowed_origins)?;
    let room = ChannelId::parse(&room).map_err(HttpError::from)?;
    let name = match query.name.as_deref().filter(|n| !n.trim().is_empty()) {
        Some(name) => validate_author(name).map_err(HttpError::from)?,
        None => format!("guest-{:04}", rand::rng().random_range(0..10_000)),
    };
    let since: Option<i64> = query_param("since", query.since.as_deref(), "a comment id")?;
    if since.is_some_and(|s| s < 0) {
        return Err(HttpError::new(ErrorCode::InvalidQuery, "since must be 0 or more").into());
    }
    let host = match query.host_token.as_deref() {
        None => false,
        Some(token) => {
            host_of(&state, &room, Some(token)).await?;
            true
        }
    };
    let session = LiveSession {
        room,
        name,
        host,
        since,
        comments: state.comments.clone(),
        rooms: state.rooms.clone(),
        hub: state.hub.clone(),
    };
    service_kit::ws::start(&req, payload, &state.ws, session)
}

/// Checks that `token` is the host token of `room`: 401 without one (or for a room nobody
/// created), 403 with a wrong one.
async fn host_of(
    state: &LiveState,
    room: &ChannelId,
    token: Option<&str>,
) -> Result<RoomRecord, HttpError> {
    let Some(token) = token else {
        return Err(HttpError::new(
            ErrorCode::Unauthorized,
            "this needs the room's host token (Authorization: Bearer <host_token>)",
        ));
    };
    let record = state.rooms.room(room).await?.ok_or_else(|| {
        HttpError::new(
            ErrorCode::Unauthorized,
            format!("room {room} has no host: create rooms with POST /api/rooms"),
        )
    })?;
    if token_matches(token, &record.token_digest) {
        Ok(record)
    } else {
        Err(HttpError::new(
            ErrorCode::Forbidden,
            format!("that is not the host token of room {room}"),
        ))
    }
}

/// The bearer token of a request, if it has one.
fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The body of `POST /api/rooms`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRoom {
    title: Option<String>,
}

/// The answer of `POST /api/rooms`.
#[derive(Debug, Serialize)]
struct CreatedRoom {
    room: ChannelId,
    host_token: String,
    title: Option<String>,
}

/// Characters of generated room ids: lowercase letters and digits without look-alikes.
const ROOM_ID_ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// `POST /api/rooms` with `{title?}` (or an empty body): a new room and its host token. The
/// token is shown once; the server keeps only its digest.
async fn create_room(
    req: HttpRequest,
    state: web::Data<LiveState>,
    body: web::Bytes,
) -> Result<HttpResponse, HttpError> {
    let request: CreateRoom = if body.iter().all(u8::is_ascii_whitespace) {
        CreateRoom::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            HttpError::new(
                ErrorCode::InvalidJson,
                format!("the body is not valid: {e}"),
            )
        })?
    };
    let title = request
        .title
        .map(|t| validate_text(&t))
        .transpose()
        .map_err(|e| HttpError::new(e.code, e.message.replacen("text", "title", 1)))?;
    rate_limit(&req, &state)?;
    let token = new_host_token();
    for _ in 0..8 {
        let id: String = {
            let mut rng = rand::rng();
            (0..10)
                .map(|_| ROOM_ID_ALPHABET[rng.random_range(0..ROOM_ID_ALPHABET.len())] as char)
                .collect()
        };
        let room = ChannelId::parse(&id)?;
        if let Some(created) = state
            .rooms
            .create_room(&room, title.clone(), token_digest(&token))
            .await?
        {
            log::info!("room {room} created");
            return Ok(HttpResponse::Created().json(CreatedRoom {
                room: created.room,
                host_token: token,
                title: created.title,
            }));
        }
    }
    Err(ApiError::internal().into())
}

/// The query of the history route, as text.
#[derive(Debug, Deserialize)]
struct HistoryQuery {
    after: Option<String>,
    limit: Option<String>,
}

/// `GET /api/rooms/{room}/history?after=&limit=`: the chat box over HTTP, paged like the cursor
/// poll of the HTTP service (without `after`: the newest `limit`).
async fn history(
    state: web::Data<LiveState>,
    room: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, HttpError> {
    let room = ChannelId::parse(&room)?;
    let (after, limit) = page_params(query.after.as_deref(), query.limit.as_deref())?;
    let items = match after {
        Some(after) => state.comments.after(&room, after, limit).await?,
        None => state.comments.latest(&room, limit).await?,
    };
    let next = items.last().map_or(after.unwrap_or(0), |item| item.id);
    Ok(HttpResponse::Ok().json(Page { items, next }))
}

/// The body of `POST /api/rooms/{room}/checkins`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenCheckin {
    interval_secs: u32,
    duration_secs: u32,
}

/// `POST /api/rooms/{room}/checkins` (host only): opens a check-in; its codes start at once.
async fn open_checkin(
    req: HttpRequest,
    state: web::Data<LiveState>,
    room: web::Path<String>,
    body: web::Json<OpenCheckin>,
) -> Result<HttpResponse, HttpError> {
    let room = ChannelId::parse(&room)?;
    host_of(&state, &room, bearer(&req)).await?;
    let OpenCheckin {
        interval_secs,
        duration_secs,
    } = body.into_inner();
    for (name, value, range) in [
        ("interval_secs", interval_secs, INTERVAL_SECS),
        ("duration_secs", duration_secs, DURATION_SECS),
    ] {
        if !range.contains(&value) {
            return Err(HttpError::new(
                ErrorCode::InvalidValue,
                format!("{name} must be from {} to {}", range.start(), range.end()),
            ));
        }
    }
    let now = Utc::now();
    let open = state.rooms.unclosed_checkins().await?;
    if let Some(running) = open.iter().find(|c| c.room == room && c.closes_at > now) {
        return Err(HttpError::new(
            ErrorCode::Conflict,
            format!(
                "check-in {} is open in this room until {}",
                running.id,
                rfc3339(running.closes_at)
            ),
        ));
    }
    let closes_at = now + chrono::Duration::seconds(duration_secs.into());
    let record = state
        .rooms
        .open_checkin(&room, interval_secs, now, closes_at)
        .await?;
    let id = record.id;
    state.hub.do_send(StartCheckin { record });
    Ok(HttpResponse::Created().json(serde_json::json!({
        "id": id,
        "closes_at": rfc3339(closes_at),
    })))
}

/// The check-in `id` if the request carries its room's host token.
async fn hosted_checkin(
    req: &HttpRequest,
    state: &LiveState,
    id: i64,
) -> Result<CheckinRecord, HttpError> {
    let checkin = state
        .rooms
        .checkin(id)
        .await?
        .ok_or_else(|| HttpError::new(ErrorCode::NotFound, format!("no check-in {id}")))?;
    host_of(state, &checkin.room, bearer(req)).await?;
    Ok(checkin)
}

/// One attendee in the JSON results.
#[derive(Debug, Serialize)]
struct Attendee {
    name: String,
    at: String,
}

/// `GET /api/checkins/{id}` (host only): the check-in and who attended, in order.
async fn checkin_json(
    req: HttpRequest,
    state: web::Data<LiveState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, HttpError> {
    let checkin = hosted_checkin(&req, &state, *id).await?;
    let attendees: Vec<Attendee> = state
        .rooms
        .attendance(checkin.id)
        .await?
        .into_iter()
        .map(|a| Attendee {
            name: a.name,
            at: rfc3339(a.at),
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "id": checkin.id,
        "room": checkin.room,
        "interval_secs": checkin.interval_secs,
        "opened_at": rfc3339(checkin.opened_at),
        "closes_at": rfc3339(checkin.closes_at),
        "closed": checkin.closed || Utc::now() >= checkin.closes_at,
        "attendees": attendees,
    })))
}

/// `GET /api/checkins/{id}.csv` (host only): `name,checked_in_at`, one row per attendee.
async fn checkin_csv(
    req: HttpRequest,
    state: web::Data<LiveState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, HttpError> {
    let checkin = hosted_checkin(&req, &state, *id).await?;
    let attendance = state.rooms.attendance(checkin.id).await?;
    let mut out = csv::Writer::from_writer(Vec::new());
    let rows = std::iter::once(["name".to_owned(), "checked_in_at".to_owned()]).chain(
        attendance
            .into_iter()
            .map(|a| [spreadsheet_safe(&a.name), rfc3339(a.at)]),
    );
    for row in rows {
        out.write_record(&row).map_err(|e| {
            log::error!("writing CSV failed: {e}");
            HttpError::from(ApiError::internal())
        })?;
    }
    let body = out.into_inner().map_err(|e| {
        log::error!("writing CSV failed: {e}");
        HttpError::from(ApiError::internal())
    })?;
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"checkin-{}.csv\"", checkin.id),
        ))
        .body(body))
}

/// A name as a spreadsheet cell: one starting with `=`, `+`, `-` or `@` would be read as a
/// formula, so it gets a leading apostrophe.
fn spreadsheet_safe(name: &str) -> String {
    if name.starts_with(['=', '+', '-', '@']) {
        format!("'{name}")
    } else {
        name.to_owned()
    }
}

/// The body of `POST /api/checkins/{id}/attend`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Attend {
    name: String,
    code: String,
}

/// `POST /api/checkins/{id}/attend` with `{name, code}`: the same check-in as over WebSocket.
async fn attend_over_http(
    req: HttpRequest,
    state: web::Data<LiveState>,
    id: web::Path<i64>,
    body: web::Json<Attend>,
) -> Result<HttpResponse, HttpError> {
    rate_limit(&req, &state)?;
    let Attend { name, code } = body.into_inner();
    let name = validate_author(&name)?;
    attend(&*state.rooms, &state.hub, *id, &name, &code).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"checkin": *id, "name": name})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_like_names_are_defused_for_spreadsheets() {
        assert_eq!(spreadsheet_safe("=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(spreadsheet_safe("@cmd"), "'@cmd");
        assert_eq!(spreadsheet_safe("ann"), "ann");
    }
}
