//! The web console: three static files embedded in the binary (`console/`
//! in the repository), served with strict security headers. The console is
//! a client of the public `/v1` API like any other; this module never reads
//! a credential and never touches the database.

use crate::http::error::ApiError;
use crate::http::response::Response;
use crate::http::route::{Access, Ctx, Route, doc, route};

/// The console routes, in the order the router tries them.
pub static ROUTES: &[Route] = &[
    route("GET", "/", Access::Public, root, doc("302 to the web console", None, 302, "Redirect")),
    route("GET", "/console/", Access::Public, index, doc("The web console", None, 200, "Html")),
    route("GET", "/console/app.js", Access::Public, script, doc("The console's script", None, 200, "Asset")),
    route("GET", "/console/app.css", Access::Public, style, doc("The console's styles", None, 200, "Asset")),
];

const INDEX: &[u8] = include_bytes!("../../../console/index.html");
const APP_JS: &[u8] = include_bytes!("../../../console/app.js");
const APP_CSS: &[u8] = include_bytes!("../../../console/app.css");

/// No inline script or style, no eval, nothing from another origin, never
/// in a frame. Kept files are images and video from this origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static [u8]) -> Response {
    let mut r = Response::text(200, content_type, body);
    r.headers.extend([
        ("Content-Security-Policy", CONTENT_SECURITY_POLICY.to_owned()),
        ("X-Frame-Options", "DENY".to_owned()),
        ("Referrer-Policy", "no-referrer".to_owned()),
        ("X-Content-Type-Options", "nosniff".to_owned()),
        // Small files: revalidated each time, so an upgrade is seen at once.
        ("Cache-Control", "no-cache".to_owned()),
    ]);
    r
}

/// `GET /`: to the console.
pub fn root(_: &Ctx) -> Result<Response, ApiError> {
    Ok(Response::redirect("/console/"))
}

pub fn index(_: &Ctx) -> Result<Response, ApiError> {
    Ok(asset("text/html; charset=utf-8", INDEX))
}

pub fn script(_: &Ctx) -> Result<Response, ApiError> {
    Ok(asset("text/javascript; charset=utf-8", APP_JS))
}

pub fn style(_: &Ctx) -> Result<Response, ApiError> {
    Ok(asset("text/css; charset=utf-8", APP_CSS))
}
