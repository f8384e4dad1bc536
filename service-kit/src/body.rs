//! The JSON body extractor of every route: [`Json`].
//!
//! It stands in for `actix_web::web::Json` because that one's errors cannot name the field at
//! fault. The checks and their order are those of every JSON route: `Content-Type` first
//! (`415 unsupported_media_type`), then the size (`413 payload_too_large`, at most
//! [`MAX_MESSAGE_BYTES`]), then the JSON itself (`400 invalid_json`, naming the field).

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, web};
use serde::de::DeserializeOwned;
use shared_model::ErrorCode;
use shared_model::json::from_json;
use shared_model::limits::MAX_MESSAGE_BYTES;

use crate::error::{HttpError, is_json, require_content_type};

/// A JSON request body, parsed into `T`.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T> Json<T> {
    /// The parsed body.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, HttpError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let checked = require_content_type(
            req,
            is_json,
            "JSON, sent with Content-Type: application/json",
        );
        // The body is read under the app's `PayloadConfig` (the same limit as here).
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            checked?;
            let bytes = body.await.map_err(|e| {
                if e.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE {
                    HttpError::new(
                        ErrorCode::PayloadTooLarge,
                        format!("the body is larger than the limit of {MAX_MESSAGE_BYTES} bytes"),
                    )
                } else {
                    HttpError::new(ErrorCode::InvalidJson, format!("the body broke off: {e}"))
                }
            })?;
            from_json(&bytes).map(Json).map_err(|problem| {
                HttpError::new(
                    ErrorCode::InvalidJson,
                    format!("the body is not valid: {problem}"),
                )
            })
        })
    }
}
