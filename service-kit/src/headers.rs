//! Headers every response carries.

use actix_web::middleware::DefaultHeaders;

/// The Content-Security-Policy of every page: scripts, styles and connections only from the
/// service's own origin, no inline script, no plugins, no framing. User text can therefore never
/// run as script, even if a page bug let it into the DOM as HTML.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; media-src 'self' blob:; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Middleware adding the security headers to every response.
pub fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("Referrer-Policy", "no-referrer"))
}
