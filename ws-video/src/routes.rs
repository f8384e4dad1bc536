//! The routes of the video service: the WebSocket and its HTTP twin. Extract, call, respond.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use service_kit::HttpError;
use service_kit::body::Json;
use service_kit::error::query_param;
use shared_model::api::VideoWindow;
use shared_model::{ChannelId, DraftDanmaku};

use crate::session::VideoSession;
use crate::state::VideoState;
use crate::timeline::{Timeline, WHOLE_VIDEO_END, check_window};
use service_kit::rate::peer_ip;
use service_kit::ws::Client;

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(service_kit::server::health))
        .route("/ws/videos/{video}", web::get().to(watch))
        .service(
            web::resource("/api/videos/{video}/danmaku")
                .route(web::get().to(list))
                .route(web::post().to(post)),
        );
    // The admin (DANMAKU_ADMIN_TOKEN) deletes comments, mutes names and sets banned words.
    service_kit::moderation::routes(cfg, "/api/videos");
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
        timeline: state.timeline.clone(),
        hub: state.hub.clone(),
        client: Client::of(&req, &state.ws.budget),
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

/// `GET /api/videos/{video}/danmaku?from=&to=`: the comments in a window, ordered by time (at
/// most [`crate::timeline::MAX_RANGE_ITEMS`]). It needs one token of the client's read budget
/// before the database is asked, and costs the rows it returns.
async fn list(
    req: HttpRequest,
    state: web::Data<VideoState>,
    video: web::Path<String>,
    query: web::Query<WindowQuery>,
) -> Result<HttpResponse, HttpError> {
    let video = ChannelId::parse(&video)?;
    let from = query_param("from", query.from.as_deref(), "a number of seconds")?.unwrap_or(0.0);
    let to =
        query_param("to", query.to.as_deref(), "a number of seconds")?.unwrap_or(WHOLE_VIDEO_END);
    check_window(from, to)?;
    let ticket = state.ws.budget.reads.admit(peer_ip(&req), "a window")?;
    let items = state.timeline.window(&video, from, to).await?;
    ticket.pay(items.len());
    Ok(HttpResponse::Ok().json(VideoWindow { from, to, items }))
}

/// `POST /api/videos/{video}/danmaku` with `{author, text, time, color?, mode?}`: store, then
/// push to the viewers.
async fn post(
    req: HttpRequest,
    state: web::Data<VideoState>,
    video: web::Path<String>,
    body: Json<DraftDanmaku>,
) -> Result<HttpResponse, HttpError> {
    let video = ChannelId::parse(&video)?;
    let new = Timeline::pin(body.into_inner())?;
    // Checked after validation, so a typo does not cost the client one of its comments.
    state.ws.budget.writes.take_request(&req, 1).await?;
    let item = state.timeline.append(&video, new).await?;
    Ok(HttpResponse::Created().json(item))
}
