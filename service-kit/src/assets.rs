//! The pages of `web/`: built into the binary so it stands alone, or served from a folder
//! (`--web-dir`) so the pages can be edited without a rebuild.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use actix_web::http::header::{self, ContentType, EntityTag, IfNoneMatch};
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

    /// The file at `path` (relative to `web/`) and its entity tag, if it exists.
    fn load(&self, path: &str) -> Option<(Vec<u8>, Option<String>)> {
        let relative = safe_relative(path)?;
        match &self.dir {
            Some(dir) => std::fs::read(dir.join(relative)).ok().map(|b| (b, None)),
            None => EmbeddedWeb::get(path).map(|f| {
                let etag = f
                    .metadata
                    .sha256_hash()
                    .iter()
                    .take(12)
                    .map(|b| format!("{b:02x}"))
                    .collect();
                (f.data.into_owned(), Some(etag))
            }),
        }
    }
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
    serve(&req, &pages, pages.index)
}

async fn file(
    req: HttpRequest,
    pages: web::Data<Pages>,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    serve(&req, &pages, &path)
}

fn serve(req: &HttpRequest, pages: &Pages, path: &str) -> Result<HttpResponse, HttpError> {
    let (body, etag) = pages.load(path).ok_or_else(|| {
        HttpError::new(ErrorCode::NotFound, format!("no page or route at /{path}"))
    })?;
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let mut response = HttpResponse::Ok();
    response
        .content_type(ContentType(mime))
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    if let Some(tag) = etag {
        let tag = EntityTag::new_strong(tag);
        if let Some(header::IfNoneMatch::Items(seen)) = req_if_none_match(req)
            && seen.iter().any(|t| t.strong_eq(&tag))
        {
            return Ok(HttpResponse::NotModified().finish());
        }
        response.insert_header(header::ETag(tag));
    }
    Ok(response.body(body))
}

fn req_if_none_match(req: &HttpRequest) -> Option<IfNoneMatch> {
    use actix_web::http::header::Header;
    IfNoneMatch::parse(req).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_served() {
        assert!(safe_relative("js/app.js").is_some());
        assert!(safe_relative("index.html").is_some());
        for bad in ["../secret", "/etc/passwd", "js/../../x", "", "./x/../.."] {
            assert!(safe_relative(bad).is_none(), "{bad}");
        }
    }
}
