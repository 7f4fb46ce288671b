//! The request path through the route table:
//! match -> authenticate -> rate -> access (admin role; API keys only on
//! routes that allow them) -> idempotency claim -> handler
//! -> store or drop the claim. Each step is a function below.
//!
//! Identity is established here, once, by `auth::authenticate`; handlers get
//! it from [`Ctx::user`] and never look at headers for it. Each area's routes
//! are declared in its `routes/<area>.rs`; this file only chains them.

use super::error::ApiError;
use super::request::Req;
use super::response::Response;
use super::route::{Access, Ctx, Dialect, Route, stored};
use super::routes;
use super::state::HttpState;
use crate::app::App;
use crate::auth::{self, CurrentUser};
use crate::guard::bucket::Decision;
use crate::idempotency::{self, Claim, Token};
use sha2::{Digest, Sha256};
use std::cell::Cell;
use std::sync::Arc;

/// Every area's routes, in the order they are tried. `/openapi.json` is
/// checked against these.
static AREAS: &[&[Route]] = &[
    routes::console::ROUTES,
    routes::ops::ROUTES,
    routes::auth::ROUTES,
    routes::sessions::ROUTES,
    routes::oidc::ROUTES,
    routes::credits::ROUTES,
    routes::grants::ROUTES,
    routes::codes::ROUTES,
    routes::payments::ROUTES,
    routes::usage::ROUTES,
    routes::logs::ROUTES,
    routes::limits::ROUTES,
    routes::ai::ROUTES,
    routes::jobs::ROUTES,
    routes::job_events::ROUTES,
    routes::files::ROUTES,
    routes::responses::ROUTES,
    routes::messages::ROUTES,
    routes::gemini::ROUTES,
    routes::audio::ROUTES,
    routes::admin::ROUTES,
    routes::webhooks::ROUTES,
    routes::channels::ROUTES,
];

/// Every route the binary serves.
pub fn routes() -> impl Iterator<Item = &'static Route> {
    AREAS.iter().flat_map(|area| area.iter())
}

/// The path parameters of `path` under `r`'s pattern, when it matches.
fn matched<'r>(r: &Route, segments: &[&'r str]) -> Option<Vec<&'r str>> {
    // A trailing slash never matters (`/console/` is `/console`).
    let pattern: Vec<&str> = r.path.trim_end_matches('/').split('/').collect();
    if pattern.len() != segments.len() {
        return None;
    }
    let mut params = Vec::new();
    let ok = pattern.iter().zip(segments).all(|(p, s)| {
        if p.starts_with('{') {
            params.push(*s);
            !s.is_empty()
        } else {
            p == s
        }
    });
    ok.then_some(params)
}

/// Finds the route for a method and path; `Err` tells 404 from 405.
pub fn find<'r>(method: &str, path: &'r str) -> Result<(&'static Route, Vec<&'r str>), ApiError> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let mut path_matched = false;
    for r in routes() {
        let Some(params) = matched(r, &segments) else { continue };
        if r.method == method {
            return Ok((r, params));
        }
        path_matched = true;
    }
    if path_matched {
        return Err(ApiError::refuse("method_not_allowed", format!("{method} is not supported on {path}.")));
    }
    Err(ApiError::refuse("not_found", format!("No route for {method} {path}. See /openapi.json.")))
}

/// The methods `path` answers (for a plain `OPTIONS`), none for an
/// unknown path.
pub fn methods_of(path: &str) -> Vec<&'static str> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let mut out: Vec<&'static str> = Vec::new();
    for r in routes().filter(|r| matched(r, &segments).is_some()) {
        if !out.contains(&r.method) {
            out.push(r.method);
        }
    }
    out
}

/// Runs a request through the route table; returns the response and the
/// route's path pattern (the metrics label; `unmatched` for 404/405).
pub fn dispatch(http: &Arc<HttpState>, req: &Req) -> (Response, &'static str) {
    let mut seen = Seen { route_path: "unmatched", dialect: Dialect::OpenAi, rate: None, user: None };
    let result = run(http, req, &mut seen);
    let mut response = result.unwrap_or_else(|e| {
        note_refusal(&http.app, &e, seen.user, seen.rate.as_ref());
        e.into_response_in(seen.dialect)
    });
    if let Some(d) = seen.rate {
        response.headers.push(("X-RateLimit-Limit", d.limit.to_string()));
        response.headers.push(("X-RateLimit-Remaining", d.remaining.to_string()));
        // A refusal's own reset (a daily cap's, hours away) wins over the
        // rate bucket's.
        if !response.headers.iter().any(|(k, _)| *k == "X-RateLimit-Reset") {
            response.headers.push(("X-RateLimit-Reset", d.reset_s.to_string()));
        }
    }
    (response, seen.route_path)
}

/// What the steps learned, for the answer's headers, the metrics and the
/// refusal log, whether or not the request got through.
struct Seen {
    route_path: &'static str,
    /// The matched route's: errors go back in its clients' shape.
    dialect: Dialect,
    rate: Option<Decision>,
    user: Option<crate::domain::UserId>,
}

fn run(http: &Arc<HttpState>, req: &Req, seen: &mut Seen) -> Result<Response, ApiError> {
    let app = &http.app;
    let (route, params) = find(&req.method, &req.path)?;
    seen.route_path = route.path;
    seen.dialect = route.dialect;
    check_query(route, req)?;
    let user = authenticate(app, route, req)?;
    seen.user = user.as_ref().map(|u| u.id);
    if let Some(u) = &user {
        let d = app.guard.check_rate(u);
        seen.rate = Some(d);
        rate(&d)?;
    }
    access(route, user.as_ref())?;
    let caller = user.as_ref().map(|u| u.id);
    let mut ctx = Ctx { app, http, req, params, rate: seen.rate, user, idem: None, idem_stored: Cell::new(false) };
    if let Some(caller) = caller {
        match claim(app, route, req, caller)? {
            Claimed::None => {}
            Claimed::Fresh(token) => ctx.idem = Some(token),
            Claimed::Replay(response) => return Ok(response),
        }
    }
    // Provider calls made for this request count as this caller's (a
    // circuit opens on failures of several callers, not one's retries).
    let result = crate::providers::breaker::as_caller(caller.map(|u| u.0), || (route.handler)(&ctx));
    if let Some(token) = ctx.idem.take() {
        settle(app, token, &result, ctx.idem_stored.get());
    }
    result
}

/// The verified caller, on every route but public ones.
fn authenticate(app: &App, route: &Route, req: &Req) -> Result<Option<CurrentUser>, ApiError> {
    match route.access {
        Access::Public => Ok(None),
        Access::User | Access::Session | Access::Admin => {
            let authorization = credential(route, req);
            Ok(Some(auth::authenticate(&app.db, &app.keys, &app.credentials, authorization.as_deref())?))
        }
    }
}

/// The caller's credential as an `Authorization` value: Anthropic's
/// clients may send theirs in `x-api-key` instead (the SDKs' default;
/// Claude Code with `ANTHROPIC_AUTH_TOKEN` sends a bearer token), Google's
/// in `x-goog-api-key` or `?key=`.
fn credential<'r>(route: &Route, req: &'r Req) -> Option<std::borrow::Cow<'r, str>> {
    match (req.header("authorization"), route.dialect) {
        (Some(a), _) => Some(a.into()),
        (None, Dialect::Anthropic) => req.header("x-api-key").map(|k| format!("Bearer {}", k.trim()).into()),
        (None, Dialect::Google) => {
            req.header("x-goog-api-key").or_else(|| req.query("key")).map(|k| format!("Bearer {}", k.trim()).into())
        }
        (None, Dialect::OpenAi) => None,
    }
}

/// 429 when the caller's bucket is empty.
fn rate(d: &Decision) -> Result<(), ApiError> {
    if d.allowed {
        return Ok(());
    }
    let mut e = ApiError::refuse(
        "rate_limited",
        format!("Rate limit of {} requests per minute reached. Retry in {} s.", d.limit, d.retry_after_s),
    );
    e.retry_after_s = Some(d.retry_after_s);
    Err(e)
}

/// The route's access class against the caller: the admin role, then
/// whether an API key may call it.
fn access(route: &Route, user: Option<&CurrentUser>) -> Result<(), ApiError> {
    if route.access == Access::Admin && !user.is_some_and(|u| u.is_admin()) {
        return Err(ApiError::refuse("forbidden", "This route is for administrators only."));
    }
    if !route.access.allows_api_keys() && user.is_some_and(|u| u.key().is_some()) {
        return Err(ApiError::refuse(
            "key_not_allowed",
            format!(
                "An API key cannot call {} {}: it manages credentials, the account or other users. Use an access token from /v1/auth/login.",
                route.method, route.path
            ),
        ));
    }
    Ok(())
}

enum Claimed {
    /// No `Idempotency-Key` (or not a POST).
    None,
    Fresh(Token),
    Replay(Response),
}

/// Claims the request's `Idempotency-Key`, or answers with what a first
/// request with it stored.
fn claim(app: &App, route: &Route, req: &Req, caller: crate::domain::UserId) -> Result<Claimed, ApiError> {
    let Some(raw) = req.header("idempotency-key").filter(|_| req.method == "POST") else {
        return Ok(Claimed::None);
    };
    if !route.replayable {
        return Err(ApiError::refuse(
            "idempotency_not_supported",
            "This route does not take an Idempotency-Key: its response holds a secret that is never stored. Retry without the header; list what exists to see whether the first try succeeded.",
        )
        .with_param("Idempotency-Key"));
    }
    let key = idempotency::parse_key(raw)?;
    match idempotency::begin(&app.db, caller, key, fingerprint(req))? {
        Claim::Fresh(token) => Ok(Claimed::Fresh(token)),
        Claim::Replay(s) => {
            let content_type = if s.content_type == super::response::JSON {
                super::response::JSON
            } else {
                "application/octet-stream"
            };
            Ok(Claimed::Replay(Response {
                status: s.status,
                content_type,
                headers: vec![("Idempotent-Replayed", "true".into())],
                body: s.body,
                stream: None,
                stream_len: None,
            }))
        }
        Claim::InProgress => Err(ApiError::refuse(
            "request_in_progress",
            "A request with this Idempotency-Key is still running. Retry after it finishes.",
        )),
        Claim::Reused => Err(ApiError::refuse(
            "idempotency_key_reused",
            "This Idempotency-Key was used with a different request. Use a new key for a new request.",
        )),
    }
}

/// Stores a success for replay (unless the handler stored it with its
/// effect, or it streams), or drops the claim so a retry may run.
fn settle(app: &App, token: Token, result: &Result<Response, ApiError>, stored_with_effect: bool) {
    match result {
        Ok(r) if r.is_success() && !stored_with_effect && r.stream.is_none() => {
            let s = stored(r);
            let stored_ok = app.db.write_for_user(Some(token.user), move |c| idempotency::complete(c, &token, &s));
            if let Err(e) = stored_ok {
                log::error!("could not store an idempotent response: {e}");
            }
        }
        Ok(r) if r.is_success() => {}
        _ => idempotency::abandon(&app.db, token),
    }
}

/// Every guard refusal is counted, and logged: for a user, as a business
/// log (a rate-limit refusal only the first time its bucket runs dry, so a
/// flood cannot turn into a flood of writes); for anonymous callers only
/// when a lockout starts (see `guard`).
fn note_refusal(app: &App, e: &ApiError, user: Option<crate::domain::UserId>, rate: Option<&Decision>) {
    let guard = match e.code {
        "rate_limited" => "rate_limit",
        "max_cost_exceeded" => "max_cost",
        "daily_cap_exceeded" => "daily_cap",
        "budget_exhausted" => "global_budget",
        _ => return,
    };
    if guard == "rate_limit" && !(user.is_some() && rate.is_some_and(|d| d.first_refusal)) {
        crate::metrics::global().guard_refusals.with_label_values(&[guard]).inc();
        return;
    }
    if guard == "global_budget" {
        crate::logs::record(
            &app.db,
            crate::logs::NewLog::system(crate::logs::Level::Error, "global_budget_exhausted", serde_json::json!({})),
        );
    }
    crate::guard::log_refusal(&app.db, user, guard, serde_json::json!({ "message": e.message }));
}

/// 400 `unknown_parameter` for a query parameter the route does not read.
fn check_query(route: &Route, req: &Req) -> Result<(), ApiError> {
    let Some(known) = route.query else { return Ok(()) };
    match req.query.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some((name, _)) => {
            let takes = if known.is_empty() { "no query parameters".to_owned() } else { known.join(", ") };
            Err(ApiError::refuse(
                "unknown_parameter",
                format!("Unknown query parameter `{name}`: {} {} takes {takes}.", route.method, route.path),
            )
            .with_param(name.clone()))
        }
    }
}

/// What makes two requests "the same" for an idempotency key.
fn fingerprint(req: &Req) -> String {
    let mut h = Sha256::new();
    h.update(req.method.as_bytes());
    h.update(b" ");
    h.update(req.path.as_bytes());
    h.update(b"\n");
    h.update(&req.body);
    crate::support::token::hex(&h.finalize())
}
