//! The routes that open the service to existing players and archives: the DPlayer v3 danmaku
//! API and Bilibili XML import and export.

use actix_web::web;

/// Registers the DPlayer and Bilibili routes.
pub fn configure(_cfg: &mut web::ServiceConfig) {}
