//! Errors as HTTP responses: always the JSON body `{"error": {"code", "message"}}`.
//!
//! Handlers return `Result<_, HttpError>`; client faults carry their [`ErrorCode`], server faults
//! are logged in full and answered with an opaque `internal` error. The extractor configurations
//! here turn actix's own refusals (body too large, wrong content type, malformed JSON, bad query)
//! into the same body, and [`json_error_pages`] does so for actix's bare 404 and 405.

use actix_web::body::{BoxBody, EitherBody};
use actix_web::dev::ServiceResponse;
use actix_web::error::{PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use danmaku_store::StoreError;
use shared_model::limits::{DEFAULT_PAGE_ITEMS, MAX_MESSAGE_BYTES, MAX_PAGE_ITEMS};
use shared_model::{ApiError, ErrorCode};

/// An error on its way to an HTTP client.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct HttpError {
    /// What the client is told.
    pub error: ApiError,
    /// Seconds for a `Retry-After` header (rate limits).
    pub retry_after_secs: Option<u64>,
}

impl HttpError {
    /// A client fault with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::new(code, message).into()
    }
}

impl From<ApiError> for HttpError {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            retry_after_secs: None,
        }
    }
}

/// `503 unavailable` when the database cannot serve now (no answer within
/// `DANMAKU_DB_TIMEOUT_MS`, a failing disk, a writer restarting), `500 internal` otherwise; the
/// cause goes to the log only.
impl From<StoreError> for HttpError {
    fn from(e: StoreError) -> Self {
        log::error!("storage failed: {e}");
        e.client_error().into()
    }
}

impl ResponseError for HttpError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.error.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let Some(secs) = self.retry_after_secs {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        response.json(self.error.body())
    }
}

/// Query strings: errors as JSON naming the parameter.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| {
        let message = match err {
            QueryPayloadError::Deserialize(e) => format!("bad query string: {e}"),
            other => other.to_string(),
        };
        HttpError::new(ErrorCode::InvalidQuery, message).into()
    })
}

/// Parses the query parameter `name` when present, naming it and what it should be (`what`,
/// say "an integer id") when it is malformed. Take parameters as `Option<String>` in the query
/// struct and parse them with this, so the error says which one was wrong.
pub fn query_param<T: std::str::FromStr>(
    name: &str,
    raw: Option<&str>,
    what: &str,
) -> Result<Option<T>, HttpError> {
    raw.map(|raw| {
        raw.parse().map_err(|_| {
            HttpError::new(
                ErrorCode::InvalidQuery,
                format!("{name} must be {what}, not {raw:?}"),
            )
        })
    })
    .transpose()
}

/// The cursor of a paged read (`?after=&limit=`): `after` when given, and `limit` (1 to
/// [`MAX_PAGE_ITEMS`], default [`DEFAULT_PAGE_ITEMS`]), each refused by name when malformed.
pub fn page_params(
    after: Option<&str>,
    limit: Option<&str>,
) -> Result<(Option<i64>, usize), HttpError> {
    let after: Option<i64> = query_param("after", after, "an integer id")?;
    if after.is_some_and(|after| after < 0) {
        // Ids start at 1, so a negative cursor is a client's mistake, not "from the start".
        return Err(HttpError::new(
            ErrorCode::InvalidQuery,
            "after must be 0 or more (0 reads from the first comment)",
        ));
    }
    let limit = query_param("limit", limit, "a whole number")?.unwrap_or(DEFAULT_PAGE_ITEMS);
    if !(1..=MAX_PAGE_ITEMS).contains(&limit) {
        return Err(HttpError::new(
            ErrorCode::InvalidQuery,
            format!("limit must be from 1 to {MAX_PAGE_ITEMS}"),
        ));
    }
    Ok((after, limit))
}

/// Path segments: errors as JSON.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err, _req| {
        let message = match err {
            PathError::Deserialize(e) => format!("bad path: {e}"),
            other => other.to_string(),
        };
        HttpError::new(ErrorCode::NotFound, message).into()
    })
}

/// The handler for requests no route matched.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    HttpError::new(
        ErrorCode::NotFound,
        format!("no route for {} {}", req.method(), req.path()),
    )
    .error_response()
}

/// Whether a media type (its essence, lowercase) is JSON: `application/json` or `…+json`.
pub fn is_json(essence: &str) -> bool {
    essence == "application/json" || essence.ends_with("+json")
}

/// Refuses a request whose `Content-Type` is not one `accepts` takes (`415
/// unsupported_media_type`; `what` says what the body must be). Routes that read their body
/// themselves call it, so a cross-site form (`text/plain`) cannot reach them without a CORS
/// preflight.
pub fn require_content_type(
    req: &HttpRequest,
    accepts: fn(&str) -> bool,
    what: &str,
) -> Result<(), HttpError> {
    match req.mime_type() {
        Ok(Some(mime)) if accepts(&mime.essence_str().to_ascii_lowercase()) => Ok(()),
        _ => Err(HttpError::new(
            ErrorCode::UnsupportedMediaType,
            format!("the body must be {what}"),
        )),
    }
}

/// Bodies read whole (`web::Bytes`, `String`) have the same limit as JSON ones.
pub fn payload_config() -> web::PayloadConfig {
    web::PayloadConfig::new(MAX_MESSAGE_BYTES)
}

/// Middleware that gives actix's own plain-text 404, 405 and 413 answers the JSON error body.
pub fn json_error_pages<B: 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new()
        .handler(StatusCode::PAYLOAD_TOO_LARGE, |res| {
            replace_bare_error(
                res,
                ErrorCode::PayloadTooLarge,
                &format!("the body is larger than the limit of {MAX_MESSAGE_BYTES} bytes"),
            )
        })
        .handler(StatusCode::NOT_FOUND, |res| {
            replace_bare_error(res, ErrorCode::NotFound, "not found")
        })
        .handler(StatusCode::METHOD_NOT_ALLOWED, |res| {
            replace_bare_error(res, ErrorCode::MethodNotAllowed, "method not allowed here")
        })
}

fn replace_bare_error<B>(
    res: ServiceResponse<B>,
    code: ErrorCode,
    message: &str,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let (req, res) = res.into_parts();
    let body = serde_json::to_string(&ApiError::new(code, message).body())
        .map_err(actix_web::error::ErrorInternalServerError)?;
    let mut res = res.set_body(BoxBody::new(body));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let res: ServiceResponse<EitherBody<B, BoxBody>> =
        ServiceResponse::new(req, res).map_into_right_body();
    Ok(ErrorHandlerResponse::Response(res))
}
