//! The routes of the video service: the WebSocket, its HTTP twin and the density of a video.
//! Extract, call, respond.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use service_kit::HttpError;
use service_kit::body::Json;
use service_kit::error::query_param;
use shared_model::api::VideoWindow;
use shared_model::{ChannelId, DraftDanmaku};

use crate::session::VideoSession;
use crate::state::VideoState;
use crate::timeline::{
    DEFAULT_DENSITY_BUCKETS, Timeline, WHOLE_VIDEO_END, check_density, check_window, density_price,
};
use service_kit::rate::peer_ip;
use service_kit::ws::Client;

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(service_kit::server::health))
        .route("/ws/videos/{video}", web::get().to(watch))
        .route("/api/videos/{video}/density", web::get().to(density))
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

/// The query of `GET /api/videos/{video}/density`, as text (see [`query_param`]).
#[derive(Debug, Deserialize)]
struct DensityQuery {
    /// How many equal slices of the timeline to count (default
    /// [`DEFAULT_DENSITY_BUCKETS`]).
    buckets: Option<String>,
    /// The video's length in seconds, which the page knows and the server does not (default:
    /// the latest comment's time).
    duration: Option<String>,
}

/// `GET /api/videos/{video}/density?buckets=&duration=`: how many comments fall in each equal
/// slice of the video, counted by the database, for the bar over the page's progress bar.
/// Answers are kept in the brief read cache, so a flood of the same request costs the database
/// one count per time to live; the client pays [`density_price`] rows either way.
async fn density(
    req: HttpRequest,
    state: web::Data<VideoState>,
    video: web::Path<String>,
    query: web::Query<DensityQuery>,
) -> Result<HttpResponse, HttpError> {
    let video = ChannelId::parse(&video)?;
    let buckets = query_param("buckets", query.buckets.as_deref(), "a whole number")?
        .unwrap_or(DEFAULT_DENSITY_BUCKETS);
    let duration: Option<f64> =
        query_param("duration", query.duration.as_deref(), "a number of seconds")?;
    check_density(buckets, duration)?;
    let ticket = state.ws.budget.reads.admit(peer_ip(&req), "a density")?;
    let timeline = state.timeline.clone();
    let key = (video.clone(), buckets, duration.map(f64::to_bits));
    let answer = state
        .cache
        .density
        .get_or_read(key, "a density", async move {
            timeline
                .density(&video, duration, buckets)
                .await
                .map(Arc::new)
        })
        .await?;
    ticket.pay(density_price(buckets));
    Ok(HttpResponse::Ok().json(answer.as_ref()))
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
