//! The routes of the live service: extract, call the room rules ([`crate::rooms`]), respond.

use std::net::{IpAddr, Ipv4Addr};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use rand::Rng;
use serde::Deserialize;
use service_kit::HttpError;
use service_kit::body::Json;
use service_kit::error::{is_json, page_params, query_param, require_content_type};
use service_kit::rate::{peer_ip, retry_after_secs};
use shared_model::api::{
    Attend, Attendee, CheckedIn, CheckinOpened, CheckinReport, CreateRoom, CreatedRoom,
    OpenCheckin, Page,
};
use shared_model::comment::{validate_author, validate_title};
use shared_model::json::from_json;
use shared_model::{ChannelId, ErrorCode};

use crate::rooms::{attendance_csv, attendance_table_csv};
use crate::session::LiveSession;
use crate::state::LiveState;

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(service_kit::server::health))
        .route("/ws/live/{room}", web::get().to(watch))
        .route("/api/rooms", web::post().to(create_room))
        .route("/api/rooms/{room}/history", web::get().to(history))
        .route("/api/rooms/{room}/checkins", web::post().to(open_checkin))
        .route("/api/rooms/{room}/checkins", web::get().to(room_checkins))
        .route(
            "/api/rooms/{room}/attendance",
            web::get().to(attendance_json),
        )
        .route(
            "/api/rooms/{room}/attendance.csv",
            web::get().to(attendance_csv_route),
        )
        .route("/api/checkins/{id:\\d+}", web::get().to(checkin_json))
        .route("/api/checkins/{id:\\d+}.csv", web::get().to(checkin_csv))
        .route(
            "/api/checkins/{id:\\d+}/attend",
            web::post().to(attend_over_http),
        );
    cfg.service(
        web::resource("/api/rooms/{room}/recording")
            .route(web::post().to(attach_recording))
            .route(web::get().to(recording_start)),
    )
    .route(
        "/api/rooms/{room}/recording/start",
        web::post().to(mark_stream_start),
    );
    // A room's host (or the admin) deletes comments, mutes names and sets banned words.
    service_kit::moderation::routes(cfg, "/api/rooms");
}

/// The query of the WebSocket route, as text (see [`query_param`]).
#[derive(Debug, Deserialize)]
struct WatchQuery {
    name: Option<String>,
    since: Option<String>,
    /// Refused: a secret in a URL ends up in logs and browser history.
    host_token: Option<String>,
}

/// The WebSocket subprotocol a page offers, and the server answers with.
pub const SUBPROTOCOL: &str = "danmaku";

/// A subprotocol starting with this carries a host token after it (browsers cannot set an
/// `Authorization` header on a WebSocket; they can offer subprotocols).
pub const BEARER_SUBPROTOCOL_PREFIX: &str = "danmaku.bearer.";

/// The subprotocols `req` offers (`Sec-WebSocket-Protocol`, comma-separated, maybe repeated).
fn offered_subprotocols(req: &HttpRequest) -> impl Iterator<Item = &str> {
    req.headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
}

/// The host token of a WebSocket upgrade: `Authorization: Bearer`, else a subprotocol
/// `danmaku.bearer.<token>`.
fn host_token(req: &HttpRequest) -> Option<&str> {
    bearer(req).or_else(|| {
        offered_subprotocols(req).find_map(|p| p.strip_prefix(BEARER_SUBPROTOCOL_PREFIX))
    })
}

/// `GET /ws/live/{room}?name=&since=`: checks, then the upgrade. Without a name, a connection
/// is `guest-NNNN`. A host proves the room's host token with `Authorization: Bearer <token>` or,
/// from a browser, by offering the subprotocols `danmaku` and `danmaku.bearer.<token>` (the
/// answer selects `danmaku`); a `host_token` in the query is refused. Joining is a read of the
/// client's `reads` budget: admitted here with one token (else `429`, before the upgrade), and
/// charged the rows of its welcome (chat box or recovery) once the session has read them.
async fn watch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<LiveState>,
    room: web::Path<String>,
    query: web::Query<WatchQuery>,
) -> Result<HttpResponse, actix_web::Error> {
    service_kit::ws::check_origin(&req, &state.ws.allowed_origins)?;
    let room = ChannelId::parse(&room).map_err(HttpError::from)?;
    if query.host_token.is_some() {
        return Err(HttpError::new(
            ErrorCode::InvalidQuery,
            "host_token is not taken in the URL (URLs end up in logs): send the host token as \
             Authorization: Bearer <token>, or offer the WebSocket subprotocols danmaku and \
             danmaku.bearer.<token>",
        )
        .into());
    }
    let name = match query.name.as_deref().filter(|n| !n.trim().is_empty()) {
        Some(name) => validate_author(name).map_err(HttpError::from)?,
        None => format!("guest-{:04}", rand::rng().random_range(0..10_000)),
    };
    let since: Option<i64> = query_param("since", query.since.as_deref(), "a comment id")?;
    if since.is_some_and(|s| s < 0) {
        return Err(HttpError::new(ErrorCode::InvalidQuery, "since must be 0 or more").into());
    }
    let reads = state
        .ws
        .budget
        .reads
        .admit(peer_ip(&req), "joining with the room's recent comments")?;
    let host = match host_token(&req) {
        None => false,
        Some(token) => {
            state
                .live
                .host_of(&room, Some(token))
                .await
                .map_err(HttpError::from)?;
            true
        }
    };
    let session = LiveSession {
        room,
        name,
        host,
        since,
        reads: Some(reads),
        client: client_ip(&req),
        live: state.live.clone(),
    };
    let mut response = service_kit::ws::start(&req, payload, &state.ws, session)?;
    // A browser that offered subprotocols fails the handshake unless one is selected; never
    // the one carrying the token.
    if offered_subprotocols(&req).any(|p| p == SUBPROTOCOL) {
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            header::HeaderValue::from_static(SUBPROTOCOL),
        );
    }
    Ok(response)
}

/// The client's address (see [`peer_ip`]: the TCP peer, or the client a trusted proxy forwarded
/// for); unspecified for a test request that has none.
fn client_ip(req: &HttpRequest) -> IpAddr {
    peer_ip(req).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
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

/// `POST /api/rooms` with `{title?}` (or an empty body), always as `application/json`: a new room
/// and its host token. The token is shown once; the server keeps only its digest.
async fn create_room(
    req: HttpRequest,
    state: web::Data<LiveState>,
    body: web::Bytes,
) -> Result<HttpResponse, HttpError> {
    require_content_type(
        &req,
        is_json,
        "JSON, sent with Content-Type: application/json",
    )?;
    let request: CreateRoom = if body.iter().all(u8::is_ascii_whitespace) {
        CreateRoom::default()
    } else {
        from_json(&body).map_err(|problem| {
            HttpError::new(
                ErrorCode::InvalidJson,
                format!("the body is not valid: {problem}"),
            )
        })?
    };
    let title = request.title.as_deref().map(validate_title).transpose()?;
    state.ws.budget.writes.take_request(&req, 1).await?;
    let (created, host_token) = state.live.create_room(title).await?;
    Ok(HttpResponse::Created().json(CreatedRoom {
        room: created.room,
        host_token,
        title: created.title,
    }))
}

/// The query of the history route, as text.
#[derive(Debug, Deserialize)]
struct HistoryQuery {
    after: Option<String>,
    limit: Option<String>,
}

/// `GET /api/rooms/{room}/history?after=&limit=`: the chat box over HTTP, paged like the cursor
/// poll of the HTTP service (without `after`: the newest `limit`). It needs one token of the
/// client's `reads` budget before it is read and costs the rows it returns, whether it is
/// answered from memory (when the room's newest comments hold it) or from the database.
async fn history(
    req: HttpRequest,
    state: web::Data<LiveState>,
    room: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, HttpError> {
    let room = ChannelId::parse(&room)?;
    let (after, limit) = page_params(query.after.as_deref(), query.limit.as_deref())?;
    let ticket = state
        .ws
        .budget
        .reads
        .admit(peer_ip(&req), "a history page")?;
    let live = &state.live;
    let items = match after {
        Some(after) => live.after(&room, after, limit).await?,
        None => live.latest(&room, limit).await?,
    };
    ticket.pay(items.len());
    let next = items.last().map_or(after.unwrap_or(0), |item| item.id);
    Ok(HttpResponse::Ok().json(Page { items, next }))
}

/// `POST /api/rooms/{room}/checkins` (host only): opens a check-in; its codes start at once.
async fn open_checkin(
    req: HttpRequest,
    state: web::Data<LiveState>,
    room: web::Path<String>,
    body: Json<OpenCheckin>,
) -> Result<HttpResponse, HttpError> {
    let room = ChannelId::parse(&room)?;
    let OpenCheckin {
        interval_secs,
        duration_secs,
    } = body.into_inner();
    let record = state
        .live
        .open_checkin(&room, bearer(&req), interval_secs, duration_secs)
        .await?;
    Ok(HttpResponse::Created().json(CheckinOpened {
        id: record.id,
        closes_at: record.closes_at,
    }))
}

/// `GET /api/checkins/{id}` (host only): the check-in and who attended, in order.
async fn checkin_json(
    req: HttpRequest,
    state: web::Data<LiveState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, HttpError> {
    let (checkin, attendance) = state.live.report(*id, bearer(&req)).await?;
    Ok(HttpResponse::Ok().json(CheckinReport {
        id: checkin.id,
        room: checkin.room,
        interval_secs: checkin.interval_secs,
        opened_at: checkin.opened_at,
        closes_at: checkin.closes_at,
        closed: checkin.closed || Utc::now() >= checkin.closes_at,
        attendees: attendance
            .into_iter()
            .map(|a| Attendee {
                name: a.name,
                at: a.at,
            })
            .collect(),
    }))
}

/// `GET /api/checkins/{id}.csv` (host only): `name,checked_in_at`, one row per attendee.
async fn checkin_csv(
    req: HttpRequest,
    state: web::Data<LiveState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, HttpError> {
    let (checkin, attendance) = state.live.report(*id, bearer(&req)).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"checkin-{}.csv\"", checkin.id),
        ))
        .body(attendance_csv(&attendance)?))
}

/// `GET /api/rooms/{room}/checkins` (host only): the room's check-ins with their counts, oldest
/// first (the newest `MAX_ROOM_CHECKINS`). A read of the client's `reads` budget: admitted with
/// one token before the host is checked, charged the check-ins it returns.
async fn room_checkins(
    req: HttpRequest,
    state: web::Data<LiveState>,
    room: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let room = ChannelId::parse(&room)?;
    let ticket = state
        .ws
        .budget
        .reads
        .admit(peer_ip(&req), "a room's check-ins")?;
    let (list, rows) = state.live.room_checkins(&room, bearer(&req)).await?;
    ticket.pay(rows);
    Ok(HttpResponse::Ok().json(list))
}

/// `GET /api/rooms/{room}/attendance` (host only): names by check-ins (see
/// [`crate::rooms::attendance_table`]). A read of the client's `reads` budget, charged the
/// check-ins and attendance rows it read.
async fn attendance_json(
    req: HttpRequest,
    state: web::Data<LiveState>,
    room: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let room = ChannelId::parse(&room)?;
    let ticket = state
        .ws
        .budget
        .reads
        .admit(peer_ip(&req), "a room's attendance")?;
    let (table, rows) = state.live.attendance_table(&room, bearer(&req)).await?;
    ticket.pay(rows);
    Ok(HttpResponse::Ok().json(table))
}

/// `GET /api/rooms/{room}/attendance.csv` (host only): the same table as CSV, as a download
/// named after the room.
async fn attendance_csv_route(
    req: HttpRequest,
    state: web::Data<LiveState>,
    room: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let room = ChannelId::parse(&room)?;
    let ticket = state
        .ws
        .budget
        .reads
        .admit(peer_ip(&req), "a room's attendance")?;
    let (table, rows) = state.live.attendance_table(&room, bearer(&req)).await?;
    ticket.pay(rows);
    // Room ids are letters, digits, `-` and `_`: safe inside the quoted filename.
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"attendance-{room}.csv\""),
        ))
        .body(attendance_table_csv(&table)?))
}

/// `POST /api/checkins/{id}/attend` with `{name, code}`: the same check-in as over WebSocket,
/// with the same limits (see [`LiveRooms::attend`]).
///
/// [`LiveRooms::attend`]: crate::rooms::LiveRooms::attend
async fn attend_over_http(
    req: HttpRequest,
    state: web::Data<LiveState>,
    id: web::Path<i64>,
    body: Json<Attend>,
) -> Result<HttpResponse, HttpError> {
    let Attend { name, code } = body.into_inner();
    let name = state
        .live
        .attend(*id, &name, &code, None, client_ip(&req))
        .await
        .map_err(|refused| HttpError {
            error: refused.error,
            retry_after_secs: refused.retry_after.map(retry_after_secs),
        })?;
    Ok(HttpResponse::Ok().json(CheckedIn { checkin: *id, name }))
}

/// The body of `POST /api/rooms/{room}/recording`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachRecording {
    /// The video whose timeline gets the comments.
    video: String,
    /// Offset 0 of the video; by default when the room was created.
    started_at: Option<String>,
    /// Comments sent from then on are left out; by default now.
    ended_at: Option<String>,
}

/// A time of the body, or `invalid_value` naming the field.
fn body_time(field: &str, raw: Option<&str>) -> Result<Option<chrono::DateTime<Utc>>, HttpError> {
    raw.map(|text| {
        shared_model::time::parse(text).map_err(|e| {
            HttpError::new(
                ErrorCode::InvalidValue,
                format!("{field} is not an RFC 3339 time such as 2026-11-30T18:00:00Z: {e}"),
            )
        })
    })
    .transpose()
}

/// `POST /api/rooms/{room}/recording` (host or admin) with `{"video", "started_at"?,
/// "ended_at"?}`: the room's comments sent in between become `video`'s timeline, each at its
/// offset from `started_at` (by default the start the host marked, else the room's creation;
/// see [`crate::recording`]). Doing it again adds nothing.
async fn attach_recording(
    req: HttpRequest,
    state: web::Data<LiveState>,
    room: web::Path<String>,
    body: Json<AttachRecording>,
) -> Result<HttpResponse, HttpError> {
    let room = ChannelId::parse(&room)?;
    let token = bearer(&req);
    let record = if state.live.moderation.is_admin(token) {
        state
            .live
            .rooms
            .room(&room)
            .await
            .map_err(HttpError::from)?
    } else {
        Some(state.live.host_of(&room, token).await?)
    };
    let AttachRecording {
        video,
        started_at,
        ended_at,
    } = body.into_inner();
    let video = ChannelId::parse(&video)?;
    let started_at = match body_time("started_at", started_at.as_deref())? {
        Some(at) => at,
        None => match state.live.rooms.stream_start(&room).await? {
            Some(marked) => marked,
            None => record.map(|r| r.created_at).ok_or_else(|| {
                HttpError::new(
                    ErrorCode::InvalidValue,
                    format!("room {room} was not created through the API: give started_at"),
                )
            })?,
        },
    };
    let ended_at = body_time("ended_at", ended_at.as_deref())?.unwrap_or_else(Utc::now);
    let recording = state
        .recorder
        .attach(
            state.live.comments.as_ref(),
            &room,
            &video,
            started_at,
            ended_at,
        )
        .await?;
    Ok(HttpResponse::Ok().json(recording))
}

/// The host (or admin) of a room created through the API.
async fn hosted_room(
    req: &HttpRequest,
    state: &LiveState,
    room: &str,
) -> Result<danmaku_store::RoomRecord, HttpError> {
    let room = ChannelId::parse(room)?;
    let token = bearer(req);
    if state.live.moderation.is_admin(token) {
        return state.live.rooms.room(&room).await?.ok_or_else(|| {
            HttpError::new(ErrorCode::NotFound, format!("room {room} was not created"))
        });
    }
    Ok(state.live.host_of(&room, token).await?)
}

/// `POST /api/rooms/{room}/recording/start` (host or admin): the stream starts now, by the
/// server's clock (replacing an earlier mark); `{"started_at"}`.
async fn mark_stream_start(
    req: HttpRequest,
    state: web::Data<LiveState>,
    room: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let record = hosted_room(&req, &state, &room).await?;
    let now = shared_model::time::now();
    state
        .live
        .rooms
        .mark_stream_start(&record.room, now)
        .await?;
    log::info!("room {}: the stream started", record.room);
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "started_at": shared_model::time::rfc3339(now),
    })))
}

/// `GET /api/rooms/{room}/recording` (host or admin): `{"started_at", "created_at"}`, the
/// marked start (null when none) and the room's creation, which counts when none is marked.
async fn recording_start(
    req: HttpRequest,
    state: web::Data<LiveState>,
    room: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let record = hosted_room(&req, &state, &room).await?;
    let marked = state.live.rooms.stream_start(&record.room).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "started_at": marked.map(shared_model::time::rfc3339),
        "created_at": shared_model::time::rfc3339(record.created_at),
    })))
}
