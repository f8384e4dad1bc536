//! The routes of the video service: the WebSocket and its HTTP twin. Extract, call, respond.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use service_kit::HttpError;
use service_kit::error::query_param;
use service_kit::rate::retry_after_secs;
use shared_model::comment::TimeRule;
use shared_model::limits::MAX_VIDEO_TIME_SECS;
use shared_model::{ChannelId, Danmaku, DraftDanmaku};

use crate::session::{MAX_RANGE_ITEMS, VideoSession, check_window};
use crate::state::VideoState;

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(service_kit::server::health))
        .route("/ws/videos/{video}", web::get().to(watch))
        .service(
            web::resource("/api/videos/{video}/danmaku")
                .route(web::get().to(list))
                .route(web::post().to(post)),
        );
}

/// `GET /ws/videos/{video}`: the Origin check, then the upgrade.
async fn watch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<VideoState>,
    video: web::Path<String>,
) -> Result<HttpResponse, actix_web::Error> {
    service_kit::ws::check_origin(&req, &state.ws.allowed_origins)?;
    let video = ChannelId::parse(&video).map_err(HttpError::from)?;
    let session = VideoSession {
        video,
        store: state.store.clone(),
        hub: state.hub.clone(),
    };
    service_kit::ws::start(&req, payload, &state.ws, session)
}

/// The query of `GET /api/videos/{video}/danmaku`, as text (see [`query_param`]).
#[derive(Debug, Deserialize)]
struct WindowQuery {
    /// Window start in seconds (default 0).
    from: Option<String>,
    /// Window end in seconds, exclusive (default: past the end of any video).
    to: Option<String>,
}

/// The answer of `GET /api/videos/{video}/danmaku`, shaped like the WebSocket `range` frame.
#[derive(Debug, Serialize)]
struct Window {
    from: f64,
    to: f64,
    items: Vec<Danmaku>,
}

/// `GET /api/videos/{video}/danmaku?from=&to=`: the comments in a window, ordered by time.
async fn list(
    state: web::Data<VideoState>,
    video: web::Path<String>,
    query: web::Query<WindowQuery>,
) -> Result<HttpResponse, HttpError> {
    let video = ChannelId::parse(&video)?;
    let from = query_param("from", query.from.as_deref(), "a number of seconds")?.unwrap_or(0.0);
    let to = query_param("to", query.to.as_deref(), "a number of seconds")?
        .unwrap_or(MAX_VIDEO_TIME_SECS + 1.0);
    check_window(from, to)?;
    let items = state
        .store
        .time_window(&video, from, to, MAX_RANGE_ITEMS)
        .await?;
    Ok(HttpResponse::Ok().json(Window { from, to, items }))
}

/// `POST /api/videos/{video}/danmaku` with `{author, text, time, color?, mode?}`: store, then
/// push to the viewers.
async fn post(
    req: HttpRequest,
    state: web::Data<VideoState>,
    video: web::Path<String>,
    body: web::Json<DraftDanmaku>,
) -> Result<HttpResponse, HttpError> {
    let video = ChannelId::parse(&video)?;
    let new = body.into_inner().validate(TimeRule::Required)?;
    if let Some(client) = req.peer_addr().map(|a| a.ip()) {
        state
            .limiter
            .check(client)
            .map_err(|wait| HttpError::rate_limited(retry_after_secs(wait)))?;
    }
    let item = state.store.append(&video, new).await?;
    Ok(HttpResponse::Created().json(item))
}
