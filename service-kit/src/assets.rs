//! The pages of `web/`: built into the binary so it stands alone, or served from a folder
//! (`--web-dir`, by `actix-files`) so the pages can be edited without a rebuild.

use std::borrow::Cow;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use actix_web::http::header::{self, ContentType, EntityTag, IfNoneMatch};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use shared_model::ErrorCode;

use crate::error::HttpError;

/// `web/` as it was when the binary was built.
#[derive(rust_embed::Embed)]
#[folder = "../web/"]
struct EmbeddedWeb;

/// Where the pages come from, and which one this service serves at `/`.
#[derive(Debug, Clone)]
pub struct Pages {
    /// A folder to serve instead of the embedded copy.
    dir: Option<Arc<PathBuf>>,
    /// The page served at `/`, relative to `web/` (say `http.html`).
    index: &'static str,
}

impl Pages {
    /// Pages from `dir` when given, else the embedded copy; `index` is served at `/`.
    pub fn new(dir: Option<PathBuf>, index: &'static str) -> Self {
        Self {
            dir: dir.map(Arc::new),
            index,
        }
    }

    /// Registers `GET /` and `GET /{file}`. Register it after the API routes: it matches every
    /// GET path the API did not claim.
    pub fn configure(self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(web::Data::new(self))
            .route("/", web::get().to(index))
            .route("/{path:.*}", web::get().to(file));
    }

    /// The page at `path` (relative to `web/`), or `not_found`.
    async fn respond(&self, req: &HttpRequest, path: &str) -> Result<HttpResponse, HttpError> {
        let not_found =
            || HttpError::new(ErrorCode::NotFound, format!("no page or route at /{path}"));
        let relative = safe_relative(path).ok_or_else(not_found)?;
        match &self.dir {
            Some(dir) => from_folder(req, &dir.join(relative))
                .await
                .ok_or_else(not_found),
            None => {
                let file = EmbeddedWeb::get(path).ok_or_else(not_found)?;
                Ok(embedded(req, path, file))
            }
        }
    }
}

/// A file of the `--web-dir` folder, by `actix-files`: read in chunks off the worker threads,
/// with its type, byte ranges, `ETag` and `Last-Modified`. `None` if it is not a file.
async fn from_folder(req: &HttpRequest, path: &Path) -> Option<HttpResponse> {
    let file = actix_files::NamedFile::open_async(path).await.ok()?;
    if !file.metadata().is_file() {
        return None;
    }
    let file = file.disable_content_disposition();
    let mut response = if file.metadata().len() == 0 && req.headers().contains_key(header::RANGE) {
        // An empty file has no byte a range could name, and actix-files 0.6.10 computes the
        // last byte of `bytes=-N` as `0 + 0 - 1` (a panic, or a bogus Content-Range). HTTP lets
        // a server ignore Range: send the whole, empty, file.
        HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, file.content_type().to_string()))
            .insert_header((header::ACCEPT_RANGES, "bytes"))
            .finish()
    } else {
        file.into_response(req)
    };
    // Edited pages show up on the next load.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    Some(response)
}

/// `path` as a relative path of plain names only: no `..`, no root, no drive. Anything else
/// could escape the folder.
fn safe_relative(path: &str) -> Option<PathBuf> {
    let candidate = Path::new(path);
    let plain = candidate
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    (plain && !path.is_empty()).then(|| candidate.to_path_buf())
}

async fn index(req: HttpRequest, pages: web::Data<Pages>) -> Result<HttpResponse, HttpError> {
    pages.respond(&req, pages.index).await
}

async fn file(
    req: HttpRequest,
    pages: web::Data<Pages>,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    pages.respond(&req, &path).await
}

/// A page built into the binary, with an entity tag from its hash, so an unchanged page is not
/// sent again.
fn embedded(req: &HttpRequest, path: &str, file: rust_embed::EmbeddedFile) -> HttpResponse {
    let etag: String = file
        .metadata
        .sha256_hash()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect();
    // Release builds embed the bytes in the binary: serve them without a copy.
    let body = match file.data {
        Cow::Borrowed(bytes) => Bytes::from_static(bytes),
        Cow::Owned(bytes) => Bytes::from(bytes),
    };
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let mut response = HttpResponse::Ok();
    response
        .content_type(ContentType(mime))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::ACCEPT_RANGES, "bytes"));
    let tag = EntityTag::new_strong(etag);
    if let Some(header::IfNoneMatch::Items(seen)) = req_if_none_match(req)
        && seen.iter().any(|t| t.strong_eq(&tag))
    {
        return HttpResponse::NotModified().finish();
    }
    response.insert_header(header::ETag(tag));
    // One byte range (what a <video> asks for to seek); several ranges get the whole file,
    // which HTTP allows.
    let size = body.len() as u64;
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| http_range::HttpRange::parse(v, size));
    match range {
        // An empty range (`bytes=-N` of an empty file) has no last byte: send the whole file.
        Some(Ok(ranges)) if ranges.len() == 1 && ranges[0].length > 0 => {
            let http_range::HttpRange { start, length } = ranges[0];
            let end = start + length - 1;
            response
                .status(actix_web::http::StatusCode::PARTIAL_CONTENT)
                .insert_header((header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}")));
            // Both fit in usize: they lie within a body that is in memory.
            response.body(body.slice(start as usize..=end as usize))
        }
        Some(Err(http_range::HttpRangeParseError::NoOverlap)) => {
            HttpResponse::RangeNotSatisfiable()
                .insert_header((header::CONTENT_RANGE, format!("bytes */{size}")))
                .finish()
        }
        _ => response.body(body),
    }
}

fn req_if_none_match(req: &HttpRequest) -> Option<IfNoneMatch> {
    use actix_web::http::header::Header;
    IfNoneMatch::parse(req).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::App;
    use actix_web::test as actix_test;

    async fn get(path: &str, headers: &[(&str, &str)]) -> actix_web::dev::ServiceResponse {
        let app = actix_test::init_service(
            App::new().configure(|cfg| Pages::new(None, "http.html").configure(cfg)),
        )
        .await;
        let mut req = actix_test::TestRequest::get().uri(path);
        for header in headers {
            req = req.insert_header(*header);
        }
        actix_test::call_service(&app, req.to_request()).await
    }

    #[actix_web::test]
    async fn the_index_page_and_files_are_served_with_their_types() {
        let index = get("/", &[]).await;
        assert_eq!(index.status(), 200);
        assert!(
            index
                .headers()
                .get("content-type")
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let script = get("/js/stage.js", &[]).await;
        assert!(
            script
                .headers()
                .get("content-type")
                .unwrap()
                .to_str()
                .unwrap()
                .contains("javascript")
        );
        assert_eq!(get("/no-such-file.js", &[]).await.status(), 404);
    }

    #[actix_web::test]
    async fn a_byte_range_gets_206_so_videos_can_seek() {
        let whole = get("/media/demo.webm", &[]).await;
        assert_eq!(whole.status(), 200);
        assert_eq!(whole.headers().get("accept-ranges").unwrap(), "bytes");
        let size = actix_test::read_body(whole).await.len();
        let part = get("/media/demo.webm", &[("range", "bytes=100-199")]).await;
        assert_eq!(part.status(), 206);
        assert_eq!(
            part.headers()
                .get("content-range")
                .unwrap()
                .to_str()
                .unwrap(),
            format!("bytes 100-199/{size}")
        );
        assert_eq!(actix_test::read_body(part).await.len(), 100);
        let tail = get("/media/demo.webm", &[("range", "bytes=-10")]).await;
        assert_eq!(actix_test::read_body(tail).await.len(), 10);
        let beyond = get("/media/demo.webm", &[("range", &format!("bytes={size}-"))]).await;
        assert_eq!(beyond.status(), 416);
    }

    #[actix_web::test]
    async fn an_unchanged_file_is_not_sent_again() {
        let first = get("/http.html", &[]).await;
        let etag = first
            .headers()
            .get("etag")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let again = get("/http.html", &[("if-none-match", &etag)]).await;
        assert_eq!(again.status(), 304);
    }

    #[test]
    fn only_plain_relative_paths_are_served() {
        assert!(safe_relative("js/app.js").is_some());
        assert!(safe_relative("index.html").is_some());
        for bad in ["../secret", "/etc/passwd", "js/../../x", "", "./x/../.."] {
            assert!(safe_relative(bad).is_none(), "{bad}");
        }
    }
}
