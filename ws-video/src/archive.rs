//! The routes that open the service to existing players and archives: the DPlayer v3 danmaku
//! API and Bilibili XML import and export. What the formats mean lives in
//! `shared_model::formats`; this module extracts, calls the store and responds.
//!
//! DPlayer (`/dplayer/v3/`, with or without the trailing slash; CORS open to any origin):
//! - `GET ?id={video}&max={n}` answers the **newest** `n` comments of the video (all of them
//!   when `max` is absent or empty, and never more than [`DPLAYER_MAX_ITEMS`]; a larger `max`
//!   is lowered to it, since DPlayer's `maximum` is a wish and refusing it would leave the
//!   player empty), ordered by time as DPlayer wants. It needs one token of the client's read
//!   budget before it is read (`429` with `Retry-After` without one) and costs the rows it
//!   returns, from the cache or not. The newest rather than the first by
//!   time: a cap should drop the oldest comments, not the end of the video. Author and text
//!   are HTML-escaped for DPlayer, which inserts them with `innerHTML` (see
//!   `shared_model::formats::dplayer`).
//! - `POST` with DPlayer's JSON goes through the same rules, rate limit, store and live push
//!   as every comment, and answers `{"code": 0, "data": <the stored comment>}` (our shape, with
//!   its id and `sent_at`; DPlayer only reads `code`). Unknown fields (`token`, `referer`) are
//!   ignored.
//! - Every failure, including malformed JSON, a body over 4 KiB and the rate limit, is
//!   DPlayer's `{"code": 1, "msg": ...}` with the fitting status (400, 413, 415, 422, 429 with
//!   `Retry-After`, 500). The body is therefore read and parsed here, not by the app-wide JSON
//!   extractor, whose errors have the product's `{"error": ...}` shape.
//!
//! Bilibili XML (`/api/videos/{video}/danmaku.xml`):
//! - `GET` streams every comment of the video as an archive, in id (sending) order, page by
//!   page ([`EXPORT_PAGE_ITEMS`]) so that a huge video never sits in memory whole. Each page
//!   is a read of the client's read budget, admitted with one token and costing the rows it
//!   returns: the first before the answer starts (a client without a token gets `429`), the
//!   others as the body streams, each waiting for its admission rather than breaking the
//!   archive off, so a big export goes at the client's read rate.
//! - `POST` (`Content-Type: application/xml` or `text/xml`, at most [`MAX_IMPORT_BYTES`])
//!   imports one and answers `{"added", "skipped", "details": {"unsupported_mode", "invalid",
//!   "duplicate"}}`. Imports are idempotent (see `shared_model::formats::bilibili` for the
//!   origin keys), stored in transactions of [`IMPORT_BATCH_ITEMS`] so live comments are not
//!   held up behind a big archive; an import cut short by a failure can simply be sent again.
//!   An export of the very video imported into is recognised: its entries whose rows the
//!   video still has count as duplicates, so export then import adds nothing.
//! - What an import may cost, in this order, each before the next is spent: one of
//!   `--max-concurrent-imports` permits (else `503 unavailable`, `Retry-After: 1`), one token
//!   of the client's comment budget and a look at its import budget (else `429`), all before
//!   a byte of the body is read; then the body (413 past [`MAX_IMPORT_BYTES`], 400 when it
//!   takes longer than `--import-body-timeout-secs` to arrive) and a parse that
//!   stops at the first entry past `--import-max-entries` (`413 payload_too_large`, nothing
//!   stored); then the valid comments it holds, from the client's import budget
//!   (`--import-rows-per-sec`/`--import-rows-burst`; else `429`, nothing stored). See
//!   [`crate::budget`].
//! - Imported comments are **not** pushed live to viewers: an archive is history, and
//!   thousands of comments at once would flood every open player. Viewers get them with the
//!   next time-window load or DPlayer list.
//! - Malformed XML is `400 invalid_xml` naming the fault with its line and column; a wrong
//!   content type `415`, a body over the limit `413`, both with the product's JSON error.
//!
//! The DPlayer list and the first page of an export are kept briefly ([`crate::cache`]), so a
//! flood of the same read costs the database one read per key and `--read-cache-ms`.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_cors::Cors;
use actix_web::body::{BodySize, MessageBody};
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use danmaku_store::{Store, StoreError};
use serde::Deserialize;
use service_kit::error::{is_json, require_content_type};
use service_kit::moderation::bearer;
use service_kit::{ClientRateLimiter, HttpError};
use shared_model::formats::{bilibili, dplayer};
use shared_model::json::from_json;
use shared_model::limits::MAX_MESSAGE_BYTES;
use shared_model::{ApiError, ChannelId, Danmaku, ErrorCode, ImportOutcome, ImportedDanmaku};

use crate::budget::rows;
use crate::cache::DPlayerAnswer;
use crate::state::VideoState;
use crate::timeline::Timeline;
use service_kit::rate::peer_ip;

/// Most comments one DPlayer list returns.
pub const DPLAYER_MAX_ITEMS: usize = 10_000;

/// Largest Bilibili archive an import takes, in bytes (8 MiB: tens of thousands of comments).
pub const MAX_IMPORT_BYTES: usize = 8 * 1024 * 1024;

/// Comments stored per transaction of an import.
pub const IMPORT_BATCH_ITEMS: usize = 2_000;

/// Comments read from the store per page of an export.
pub const EXPORT_PAGE_ITEMS: usize = 1_000;

/// How long a browser may cache the answer to a DPlayer preflight, in seconds.
pub const CORS_MAX_AGE_SECS: usize = 3_600;

/// The content type of an export.
const XML_CONTENT_TYPE: &str = "application/xml; charset=utf-8";

/// Registers the DPlayer and Bilibili routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/dplayer").wrap(dplayer_cors()).service(
            web::resource(["/v3/", "/v3"])
                .route(web::get().to(dplayer_list))
                .route(web::post().to(dplayer_post)),
        ),
    )
    .service(
        web::resource("/api/videos/{video}/danmaku.xml")
            .route(web::get().to(export_xml))
            .route(web::post().to(import_xml)),
    );
}

/// CORS for the DPlayer routes: any origin (the player is usually on another site), the two
/// methods and the `Content-Type` header DPlayer sends. No credentials: there are no accounts.
fn dplayer_cors() -> Cors {
    Cors::default()
        .allow_any_origin()
        .send_wildcard()
        .allowed_methods(["GET", "POST", "OPTIONS"])
        .allowed_header(header::CONTENT_TYPE)
        .max_age(CORS_MAX_AGE_SECS)
}

/// A failure of a DPlayer route: the status and `Retry-After` of the underlying error, with
/// DPlayer's body `{"code": 1, "msg": ...}`.
#[derive(Debug)]
struct DPlayerError(HttpError);

impl std::fmt::Display for DPlayerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<HttpError> for DPlayerError {
    fn from(error: HttpError) -> Self {
        Self(error)
    }
}

impl From<ApiError> for DPlayerError {
    fn from(error: ApiError) -> Self {
        Self(error.into())
    }
}

impl From<StoreError> for DPlayerError {
    fn from(error: StoreError) -> Self {
        Self(error.into())
    }
}

impl ResponseError for DPlayerError {
    fn status_code(&self) -> StatusCode {
        self.0.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let Some(secs) = self.0.retry_after_secs {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        response.json(dplayer::Failure::from(&self.0.error))
    }
}

/// The query of a DPlayer list, as text, so a bad value gets DPlayer's error body.
#[derive(Debug, Deserialize)]
struct DPlayerQuery {
    /// The video.
    id: Option<String>,
    /// At most this many comments.
    max: Option<String>,
}

/// `GET /dplayer/v3/?id=&max=`: the video's comments as DPlayer rows, ordered by time.
async fn dplayer_list(
    req: HttpRequest,
    state: web::Data<VideoState>,
) -> Result<HttpResponse, DPlayerError> {
    let query = web::Query::<DPlayerQuery>::from_query(req.query_string())
        .map_err(|e| HttpError::new(ErrorCode::InvalidQuery, format!("bad query string: {e}")))?;
    let id = query
        .id
        .as_deref()
        .ok_or_else(|| HttpError::new(ErrorCode::InvalidQuery, "id (the video) is required"))?;
    let video = ChannelId::parse(id)?;
    let limit = match query.max.as_deref().map(str::trim) {
        None | Some("") => DPLAYER_MAX_ITEMS,
        Some(raw) => match raw.parse::<usize>() {
            Ok(max) if max >= 1 => max.min(DPLAYER_MAX_ITEMS),
            _ => {
                return Err(HttpError::new(
                    ErrorCode::InvalidQuery,
                    format!("max must be a whole number from 1, not {raw:?}"),
                )
                .into());
            }
        },
    };
    let ticket = state
        .ws
        .budget
        .reads
        .admit(peer_ip(&req), "a DPlayer list")?;
    let store = Arc::clone(state.timeline.store());
    let key = (video.clone(), limit);
    let answer = state
        .cache
        .dplayer
        .get_or_read(key, "a DPlayer list", async move {
            let items = store.latest(&video, limit).await?;
            let reply = dplayer::Reply::new(dplayer::rows_by_time(&items));
            Ok(DPlayerAnswer {
                // Rows of numbers and strings always serialize.
                body: Bytes::from(serde_json::to_vec(&reply).expect("a DPlayer reply serializes")),
                rows: items.len(),
            })
        })
        .await?;
    ticket.pay(answer.rows);
    Ok(HttpResponse::Ok()
        .content_type(header::ContentType::json())
        .body(answer.body))
}

/// `POST /dplayer/v3/`: validate, rate-limit, store, push to viewers, answer in DPlayer's shape.
async fn dplayer_post(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<VideoState>,
) -> Result<HttpResponse, DPlayerError> {
    require_content_type(
        &req,
        is_json,
        "JSON, sent with Content-Type: application/json",
    )?;
    let bytes = read_body(&req, body, MAX_MESSAGE_BYTES, ErrorCode::InvalidJson).await?;
    let post: dplayer::Post = from_json(&bytes).map_err(|problem| {
        HttpError::new(
            ErrorCode::InvalidJson,
            format!("the body is not valid: {problem}"),
        )
    })?;
    let (video, draft) = post.into_draft()?;
    let new = Timeline::pin(draft)?;
    // Checked after validation, so a typo does not cost the client one of its comments.
    state.ws.budget.writes.take_request(&req, 1).await?;
    let item = state.timeline.append(&video, new).await?;
    log::debug!("video {video}: stored DPlayer comment {}", item.id);
    Ok(HttpResponse::Ok().json(dplayer::Reply::new(item)))
}

/// `GET /api/videos/{video}/danmaku.xml`: every comment of the video as a Bilibili archive.
async fn export_xml(
    req: HttpRequest,
    video: web::Path<String>,
    state: web::Data<VideoState>,
) -> Result<HttpResponse, HttpError> {
    let video = ChannelId::parse(&video)?;
    let client = peer_ip(&req);
    let reads = &state.ws.budget.reads;
    let ticket = reads.admit(client, "an export")?;
    // The first page is read before answering, so a failing store is still a clean 500.
    let store = Arc::clone(state.timeline.store());
    let first = state
        .cache
        .export_heads
        .get_or_read(video.clone(), "an export page", {
            let video = video.clone();
            async move {
                let page = store.after(&video, 0, EXPORT_PAGE_ITEMS).await?;
                Ok(Arc::from(page))
            }
        })
        .await?;
    ticket.pay(first.len());
    let disposition = format!("attachment; filename=\"{video}.xml\"");
    let body = ExportBody::new(
        Arc::clone(state.timeline.store()),
        video,
        &first,
        (reads.clone(), client),
    );
    Ok(HttpResponse::Ok()
        .content_type(XML_CONTENT_TYPE)
        // The video id is `[A-Za-z0-9_-]`, so it needs no quoting in the file name.
        .insert_header((header::CONTENT_DISPOSITION, disposition))
        .body(body))
}

/// `POST /api/videos/{video}/danmaku.xml`: imports a Bilibili archive. Everything that can be
/// refused without the body is refused before a byte of it is read (see the module docs).
async fn import_xml(
    req: HttpRequest,
    video: web::Path<String>,
    body: web::Payload,
    state: web::Data<VideoState>,
) -> Result<HttpResponse, HttpError> {
    let video = ChannelId::parse(&video)?;
    require_content_type(
        &req,
        is_xml,
        "a Bilibili XML archive, sent with Content-Type: application/xml",
    )?;
    check_declared_length(&req, MAX_IMPORT_BYTES)?;
    let imports = &state.imports;
    // Held until the last row is stored; a refusal below gives it back at once.
    let _permit = imports.permit()?;
    let client = peer_ip(&req);
    // The operator (the admin token: a live service attaching a recording, say) imports
    // without a client's budgets; everyone else pays.
    let admin = state.moderation.is_admin(bearer(&req));
    if !admin {
        state
            .ws
            .budget
            .writes
            .take_for(client, 1, Some("an import costs one comment token"))
            .await?;
        imports
            .rows
            .spend_for(client, 1, Some("an import of at least one comment"))?;
    }

    let bytes = tokio::time::timeout(
        imports.body_timeout,
        read_body(&req, body, MAX_IMPORT_BYTES, ErrorCode::InvalidXml),
    )
    .await
    .map_err(|_| {
        HttpError::new(
            ErrorCode::InvalidXml,
            format!(
                "the body did not arrive within {} s",
                imports.body_timeout.as_secs()
            ),
        )
    })??;
    let max_entries = imports.max_entries;
    // Parsing megabytes is CPU work: keep it off the worker that serves other requests.
    let archive = web::block(move || bilibili::parse_limited(&bytes, max_entries))
        .await
        .map_err(|e| {
            log::error!("the XML parser thread failed: {e}");
            HttpError::from(ApiError::internal())
        })?
        .map_err(|e| match e {
            bilibili::ParseError::Xml(e) => HttpError::new(ErrorCode::InvalidXml, e.to_string()),
            too_many @ bilibili::ParseError::TooManyEntries { .. } => {
                log::info!("video {video}: refused an import: {too_many}");
                HttpError::new(ErrorCode::PayloadTooLarge, too_many.to_string())
            }
        })?;
    // Paid for what it may store, before the database is asked anything.
    if !admin {
        imports.rows.spend_for(
            client,
            rows(archive.items.len()),
            Some(&format!(
                "this import would store {} comments",
                archive.items.len()
            )),
        )?;
    }
    let own_export = archive.is_export_of(&video);
    // An archive is no way around the video's banned words.
    let rules = state.moderation.rules(&video).await?;
    let before = archive.items.len();
    let allowed: Vec<_> = archive
        .items
        .into_iter()
        .filter(|item| !rules.has_banned_word(&item.comment.new.text))
        .collect();
    let banned = before - allowed.len();
    let (items, recognised) =
        leave_out_own_rows(&state.timeline, &video, allowed, own_export).await?;

    let mut outcome = ImportOutcome {
        duplicates: recognised,
        ..ImportOutcome::default()
    };
    let mut items = items.into_iter();
    loop {
        let batch: Vec<_> = items.by_ref().take(IMPORT_BATCH_ITEMS).collect();
        if batch.is_empty() {
            break;
        }
        let done = state.timeline.store().import(&video, batch).await?;
        outcome.added += done.added;
        outcome.duplicates += done.duplicates;
        outcome.ids = match (outcome.ids, done.ids) {
            (Some((first, _)), Some((_, last))) => Some((first, last)),
            (earlier, later) => later.or(earlier),
        };
    }
    let report =
        bilibili::ImportReport::new(archive.unsupported_mode, archive.invalid, banned, outcome);
    log::info!(
        "video {video}: imported {} comments, skipped {} ({} unsupported mode, {} invalid, {} duplicate, {} banned)",
        report.added,
        report.skipped,
        report.details.unsupported_mode,
        report.details.invalid,
        report.details.duplicate,
        report.details.banned
    );
    Ok(HttpResponse::Ok().json(report))
}

/// The comments of an archive to store, and how many were left out because `video` already
/// has them: when the archive is this product's export of `video` itself (`own_export`), an
/// entry whose row the video still has, unchanged, is that row (see
/// `bilibili::same_comment`). Other archives are stored whole; their origin keys make them
/// idempotent.
async fn leave_out_own_rows(
    timeline: &Timeline,
    video: &ChannelId,
    items: Vec<bilibili::ArchiveItem>,
    own_export: bool,
) -> Result<(Vec<ImportedDanmaku>, usize), ApiError> {
    if !own_export {
        return Ok((items.into_iter().map(|item| item.comment).collect(), 0));
    }
    let ids: Vec<i64> = items.iter().filter_map(|item| item.source_id).collect();
    let rows = timeline.rows_by_id(video, &ids).await?;
    let mut recognised = 0;
    let mut keep = Vec::with_capacity(items.len());
    for item in items {
        let known = item
            .source_id
            .and_then(|id| rows.get(&id))
            .is_some_and(|row| bilibili::same_comment(&item.comment, row));
        if known {
            recognised += 1;
        } else {
            keep.push(item.comment);
        }
    }
    Ok((keep, recognised))
}

/// Whether a media type is XML as Bilibili archives are sent.
fn is_xml(essence: &str) -> bool {
    essence == "application/xml" || essence == "text/xml"
}

/// The `413` of a body over `limit` bytes.
fn too_large(limit: usize) -> HttpError {
    HttpError::new(
        ErrorCode::PayloadTooLarge,
        format!("the body is larger than the limit of {limit} bytes"),
    )
}

/// Refuses a request whose declared length (`Content-Length`) is over `limit` bytes with `413`,
/// before its body is read.
fn check_declared_length(req: &HttpRequest, limit: usize) -> Result<(), HttpError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large(limit));
    }
    Ok(())
}

/// Reads the whole body, refusing one over `limit` bytes with `413` (at once when its declared
/// length says so); a body that breaks off is `broken` (400).
async fn read_body(
    req: &HttpRequest,
    body: web::Payload,
    limit: usize,
    broken: ErrorCode,
) -> Result<Bytes, HttpError> {
    check_declared_length(req, limit)?;
    match body.to_bytes_limited(limit).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(HttpError::new(
            broken,
            format!("the body could not be read: {e}"),
        )),
        Err(_) => Err(too_large(limit)),
    }
}

/// A page read from the store, in flight.
type PageRead = Pin<Box<dyn Future<Output = Result<Vec<Danmaku>, StoreError>>>>;

/// A client's read budget and the client, whom each page of an export is charged to.
type Payer = (ClientRateLimiter, Option<IpAddr>);

/// An export as a streamed body: the head and first page at once, then one page per store read,
/// each admitted by the client's read budget first and paid its rows after, then the tail. At
/// most one page is in memory at a time.
struct ExportBody {
    /// Where the pages come from.
    store: Arc<dyn Store>,
    /// The video exported.
    video: ChannelId,
    /// Who pays for the pages after the first.
    payer: Payer,
    /// XML written and not yet sent.
    ready: Option<Bytes>,
    /// The next page being paid for and read; `None` once the tail is written.
    next: Option<PageRead>,
}

impl ExportBody {
    /// The body, starting with the archive's head and `first` page.
    fn new(store: Arc<dyn Store>, video: ChannelId, first: &[Danmaku], payer: Payer) -> Self {
        let mut head = Vec::new();
        bilibili::write_head(&mut head, &video);
        let mut body = Self {
            store,
            video,
            payer,
            ready: None,
            next: None,
        };
        body.take_page(first, head);
        body
    }

    /// Appends `page` to `out` and makes it ready to send; then starts paying for and reading
    /// the next page, or, when this one was short (the last), closes the archive.
    fn take_page(&mut self, page: &[Danmaku], mut out: Vec<u8>) {
        bilibili::write_items(&mut out, page);
        match page.last() {
            Some(last) if page.len() == EXPORT_PAGE_ITEMS => {
                let (store, video, after) = (Arc::clone(&self.store), self.video.clone(), last.id);
                let (reads, client) = self.payer.clone();
                self.next = Some(Box::pin(async move {
                    let ticket = reads.admit_or_wait(client).await;
                    let page = store.after(&video, after, EXPORT_PAGE_ITEMS).await?;
                    ticket.pay(page.len());
                    Ok(page)
                }));
            }
            _ => {
                bilibili::write_tail(&mut out);
                self.next = None;
            }
        }
        self.ready = Some(Bytes::from(out));
    }
}

impl MessageBody for ExportBody {
    type Error = StoreError;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        if let Some(bytes) = this.ready.take() {
            return Poll::Ready(Some(Ok(bytes)));
        }
        let Some(read) = this.next.as_mut() else {
            return Poll::Ready(None);
        };
        match read.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(page)) => {
                this.take_page(&page, Vec::new());
                Poll::Ready(this.ready.take().map(Ok))
            }
            Poll::Ready(Err(e)) => {
                // The status line has gone out; breaking the body off is all that is left, and
                // the client sees an archive without its closing `</i>`.
                log::error!("export of video {} failed midway: {e}", this.video);
                this.next = None;
                Poll::Ready(Some(Err(e)))
            }
        }
    }
}
