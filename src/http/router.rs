//! The route table and the request path through it:
//! match -> authenticate -> rate -> access (admin role; API keys only on
//! routes that allow them) -> idempotency claim -> handler
//! -> store or drop the claim.
//!
//! Identity is established here, once, by `auth::authenticate`; handlers get
//! it from [`Ctx::user`] and never look at headers for it.

use super::error::ApiError;
use super::request::Req;
use super::response::Response;
use super::routes;
use crate::app::App;
use crate::auth::{self, CurrentUser};
use crate::guard::bucket::Decision;
use crate::idempotency::{self, Claim, StoredResponse, Token};
use crate::storage::Conn;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::cell::Cell;
use std::sync::Arc;

/// Who may call a route. A credential has a kind (a session's access token
/// or an API key), and a key is not a session: it may spend and read what
/// it spends, never manage credentials or the account, so a scoped key
/// cannot mint an unscoped one or loosen its own limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credential.
    Public,
    /// Any verified credential: a session's access token or an API key.
    User,
    /// A session's access token only: routes that manage credentials or the
    /// account (keys, sessions, passwords). An API key gets 403
    /// `key_not_allowed`.
    Session,
    /// An administrator's session (never an API key, admin's included).
    Admin,
}

impl Access {
    /// Whether an API key may call a route of this class.
    pub fn allows_api_keys(self) -> bool {
        matches!(self, Access::User)
    }
}

pub type Handler = fn(&Ctx) -> Result<Response, ApiError>;

pub struct Route {
    pub method: &'static str,
    /// Segments in braces (`{id}`) match any one segment.
    pub path: &'static str,
    pub access: Access,
    pub handler: Handler,
    /// Waits on a model provider: runs on the bounded upstream pool.
    pub upstream: bool,
    /// Whether an `Idempotency-Key` may store this route's response for
    /// replay. False where the response holds a secret shown only once (an
    /// API key): a stored copy would be that secret at rest, in clear.
    pub replayable: bool,
    /// For `/openapi.json`: a one-line summary, the request body schema and
    /// the success status and schema (names in `openapi::components`).
    pub doc: Doc,
    /// The query parameters the route reads; any other is a 400
    /// `unknown_parameter` (a filter the route does not know must not be
    /// silently ignored). `None`: anything (an identity provider's redirect).
    pub query: Option<&'static [&'static str]>,
}

/// Query parameters of a paged list.
const PAGED: &[&str] = &["limit", "starting_after"];
/// ... of a list filtered by status.
const PAGED_STATUS: &[&str] = &["status", "limit", "starting_after"];

/// `r`, reading the query parameters `names`.
const fn with_query(r: Route, names: &'static [&'static str]) -> Route {
    Route { query: Some(names), ..r }
}

pub struct Doc {
    pub summary: &'static str,
    pub body: Option<&'static str>,
    pub ok: u16,
    pub schema: &'static str,
}

const fn doc(summary: &'static str, body: Option<&'static str>, ok: u16, schema: &'static str) -> Doc {
    Doc { summary, body, ok, schema }
}

const fn route(method: &'static str, path: &'static str, access: Access, handler: Handler, doc: Doc) -> Route {
    Route { method, path, access, handler, upstream: false, replayable: true, doc, query: Some(&[]) }
}

/// A route whose response is never stored for `Idempotency-Key` replay.
const fn not_replayable(r: Route) -> Route {
    Route { replayable: false, ..r }
}

const fn upstream(method: &'static str, path: &'static str, handler: Handler, doc: Doc) -> Route {
    Route { method, path, access: Access::User, handler, upstream: true, replayable: true, doc, query: Some(&[]) }
}

/// Every route the binary serves. `/openapi.json` is checked against this.
pub static ROUTES: &[Route] = &[
    route("GET", "/", Access::Public, routes::console::root, doc("302 to the web console", None, 302, "Redirect")),
    route("GET", "/console/", Access::Public, routes::console::index, doc("The web console", None, 200, "Html")),
    route(
        "GET",
        "/console/app.js",
        Access::Public,
        routes::console::script,
        doc("The console's script", None, 200, "Asset"),
    ),
    route(
        "GET",
        "/console/app.css",
        Access::Public,
        routes::console::style,
        doc("The console's styles", None, 200, "Asset"),
    ),
    route("GET", "/healthz", Access::Public, routes::ops::healthz, doc("Process is up", None, 200, "Status")),
    route("GET", "/readyz", Access::Public, routes::ops::readyz, doc("Database is writable", None, 200, "Status")),
    route("GET", "/metrics", Access::Public, routes::ops::metrics, doc("Prometheus metrics", None, 200, "Metrics")),
    route(
        "GET",
        "/openapi.json",
        Access::Public,
        routes::ops::openapi,
        doc("This OpenAPI 3.1 document", None, 200, "OpenApi"),
    ),
    route(
        "POST",
        "/v1/auth/login",
        Access::Public,
        routes::auth::login,
        doc("Log in; returns an access token", Some("LoginRequest"), 200, "LoginResponse"),
    ),
    route(
        "POST",
        "/v1/auth/signup",
        Access::Public,
        routes::auth::signup,
        doc("Create an account (when enabled)", Some("LoginRequest"), 201, "User"),
    ),
    not_replayable(route(
        "POST",
        "/v1/auth/refresh",
        Access::Public,
        routes::sessions::refresh,
        doc(
            "Exchange a refresh token for a new pair (the old one is retired; reusing it ends the session)",
            Some("RefreshBody"),
            200,
            "Tokens",
        ),
    )),
    route(
        "POST",
        "/v1/auth/logout",
        Access::Public,
        routes::sessions::logout,
        doc(
            "End the refresh token's session (its access tokens stop at once)",
            Some("RefreshBody"),
            200,
            "SessionsEnded",
        ),
    ),
    route(
        "POST",
        "/v1/auth/logout-all",
        Access::Session,
        routes::sessions::logout_all,
        doc("End every session of the caller", None, 200, "SessionsEnded"),
    ),
    route(
        "POST",
        "/v1/auth/password-reset",
        Access::Public,
        routes::sessions::request_reset,
        doc(
            "Ask for a reset token (always 202; a real account gets a user.password_reset_requested event)",
            Some("ResetRequestBody"),
            202,
            "ResetAccepted",
        ),
    ),
    route(
        "POST",
        "/v1/auth/password-reset/confirm",
        Access::Public,
        routes::sessions::confirm_reset,
        doc(
            "Set a new password with a reset token; ends every session",
            Some("ResetConfirmBody"),
            200,
            "PasswordReset",
        ),
    ),
    Route {
        upstream: true,
        ..with_query(
            route(
                "GET",
                "/v1/auth/oidc/{name}/start",
                Access::Public,
                routes::oidc::start,
                doc(
                    "Sign in through an identity provider: 302 to it (?redirect_uri=, optional state)",
                    None,
                    302,
                    "Redirect",
                ),
            ),
            &["redirect_uri", "state"],
        )
    },
    Route {
        upstream: true,
        // The provider adds what it likes (code, state, iss, scope, ...).
        query: None,
        ..route(
            "GET",
            "/v1/auth/oidc/{name}/callback",
            Access::Public,
            routes::oidc::callback,
            doc("The provider returns here: 302 to redirect_uri with ?code= (or ?error=)", None, 302, "Redirect"),
        )
    },
    not_replayable(route(
        "POST",
        "/v1/auth/oidc/exchange",
        Access::Public,
        routes::oidc::exchange,
        doc("Exchange a sign-in's one-time code for tokens", Some("ExchangeBody"), 200, "LoginResponse"),
    )),
    route("GET", "/v1/me", Access::User, routes::auth::me, doc("The calling user", None, 200, "User")),
    route(
        "POST",
        "/v1/me/password",
        Access::Session,
        routes::sessions::change_password,
        doc(
            "Change your password (current_password required); ends your other sessions",
            Some("PasswordChangeBody"),
            200,
            "SessionsEnded",
        ),
    ),
    not_replayable(route(
        "POST",
        "/v1/api-keys",
        Access::Session,
        routes::auth::create_key,
        doc(
            "Create an API key with optional limits (shown once; no Idempotency-Key)",
            Some("KeyLimitsBody"),
            201,
            "CreatedApiKey",
        ),
    )),
    with_query(
        route(
            "GET",
            "/v1/api-keys",
            Access::Session,
            routes::auth::list_keys,
            doc("List your API keys", None, 200, "ApiKeyList"),
        ),
        PAGED,
    ),
    route(
        "PATCH",
        "/v1/api-keys/{id}",
        Access::Session,
        routes::auth::update_key,
        doc("Change a key's name or limits (null clears a limit)", Some("KeyLimitsBody"), 200, "ApiKey"),
    ),
    route(
        "DELETE",
        "/v1/api-keys/{id}",
        Access::Session,
        routes::auth::revoke_key,
        doc("Revoke an API key", None, 200, "Deleted"),
    ),
    route(
        "GET",
        "/v1/credits/balance",
        Access::User,
        routes::credits::balance,
        doc("Your balance, held and available credits", None, 200, "Balance"),
    ),
    with_query(
        route(
            "GET",
            "/v1/credits/transactions",
            Access::User,
            routes::credits::transactions,
            doc("Your ledger rows", None, 200, "TransactionList"),
        ),
        PAGED,
    ),
    with_query(
        route(
            "GET",
            "/v1/credits/grants",
            Access::User,
            routes::grants::mine,
            doc("Your credit grants (?status=active|expired|voided|depleted)", None, 200, "GrantList"),
        ),
        PAGED_STATUS,
    ),
    route(
        "POST",
        "/v1/credits/redeem",
        Access::User,
        routes::codes::redeem,
        doc("Redeem a code into a credit grant", Some("RedeemBody"), 201, "Grant"),
    ),
    route(
        "POST",
        "/v1/credits/consume",
        Access::User,
        routes::credits::consume,
        doc("Spend credits", Some("ConsumeRequest"), 201, "Consumed"),
    ),
    route(
        "GET",
        "/v1/credits/validate",
        Access::User,
        routes::credits::validate,
        doc("Check your cached balance against the ledger", None, 200, "Validation"),
    ),
    with_query(
        route(
            "GET",
            "/v1/usage",
            Access::User,
            routes::usage::mine,
            doc(
                "Your usage from the daily aggregate (?start=&end=YYYY-MM-DD, group_by=day|model|key, format=csv)",
                None,
                200,
                "UsageReport",
            ),
        ),
        &["start", "end", "group_by", "format"],
    ),
    with_query(
        route(
            "GET",
            "/v1/admin/usage",
            Access::Admin,
            routes::usage::admin,
            doc(
                "Everyone's usage (?start=&end=&user_id=, group_by=day|model|user|key, format=csv)",
                None,
                200,
                "UsageReport",
            ),
        ),
        &["start", "end", "user_id", "group_by", "format"],
    ),
    with_query(
        route("GET", "/v1/logs", Access::User, routes::logs::mine, doc("Your business logs", None, 200, "LogList")),
        PAGED,
    ),
    route(
        "GET",
        "/v1/limits",
        Access::User,
        routes::limits::mine,
        doc("Your limits and what is left of them", None, 200, "Limits"),
    ),
    route(
        "GET",
        "/v1/models",
        Access::User,
        routes::ai::models,
        doc("Models with their pricing", None, 200, "ModelList"),
    ),
    route(
        "GET",
        "/v1/models/{id}",
        Access::User,
        routes::ai::model,
        doc("One model with its pricing (404 model_not_found)", None, 200, "Model"),
    ),
    route(
        "POST",
        "/v1/jobs",
        Access::User,
        routes::jobs::create,
        doc("Queue a generation job (holds its cost bound)", Some("JobCreate"), 202, "Job"),
    ),
    with_query(
        route("GET", "/v1/jobs", Access::User, routes::jobs::list, doc("Your jobs (?status=)", None, 200, "JobList")),
        PAGED_STATUS,
    ),
    route(
        "GET",
        "/v1/jobs/{id}",
        Access::User,
        routes::jobs::get,
        doc("One of your jobs, with its events", None, 200, "Job"),
    ),
    route(
        "GET",
        "/v1/jobs/{id}/events",
        Access::User,
        routes::job_events::stream,
        doc(
            "The job's transitions as server-sent events, then the final job (Last-Event-ID resumes)",
            None,
            200,
            "EventStream",
        ),
    ),
    route(
        "GET",
        "/v1/files/{id}",
        Access::User,
        routes::files::get,
        doc("A kept output file, with a fresh signed URL", None, 200, "FileView"),
    ),
    with_query(
        route(
            "GET",
            "/v1/files/{id}/content",
            Access::Public,
            routes::files::content,
            doc("A kept file's bytes (credential, or ?expires=&signature=); Range gives 206", None, 200, "Binary"),
        ),
        &["expires", "signature"],
    ),
    route(
        "POST",
        "/v1/jobs/{id}/cancel",
        Access::User,
        routes::jobs::cancel,
        doc("Cancel a queued or processing job", None, 200, "Job"),
    ),
    route(
        "POST",
        "/v1/jobs/{id}/retry",
        Access::User,
        routes::jobs::retry,
        doc("Retry a failed or canceled job", None, 202, "Job"),
    ),
    upstream(
        "POST",
        "/v1/chat/completions",
        routes::ai::chat,
        doc("OpenAI-compatible chat completion (stream: true for SSE)", Some("ChatRequest"), 200, "ChatCompletion"),
    ),
    upstream(
        "POST",
        "/v1/responses",
        routes::responses::create,
        doc(
            "OpenAI Responses API (openai routes; plain or stream: true)",
            Some("ResponsesRequest"),
            200,
            "ResponseObject",
        ),
    ),
    upstream(
        "POST",
        "/v1/embeddings",
        routes::ai::embeddings,
        doc("OpenAI embeddings, charged per input token", Some("EmbeddingsRequest"), 200, "Embeddings"),
    ),
    upstream(
        "POST",
        "/v1/images/generations",
        routes::ai::images,
        doc("OpenAI-compatible image generation", Some("ImageRequest"), 200, "ImagesResponse"),
    ),
    route(
        "POST",
        "/v1/admin/users",
        Access::Admin,
        routes::admin::create_user,
        doc("Create a user", Some("CreateUser"), 201, "User"),
    ),
    with_query(
        route(
            "GET",
            "/v1/admin/users",
            Access::Admin,
            routes::admin::list_users,
            doc("List users (?email= finds addresses containing it)", None, 200, "UserList"),
        ),
        &["email", "limit", "starting_after"],
    ),
    route(
        "GET",
        "/v1/admin/users/{id}",
        Access::Admin,
        routes::admin::get_user,
        doc("One user with balance, limits and active grants", None, 200, "UserDetail"),
    ),
    route(
        "POST",
        "/v1/admin/users/{id}/reactivate",
        Access::Admin,
        routes::admin::reactivate_user,
        doc("Let a deactivated user sign in again", None, 200, "UserDetail"),
    ),
    with_query(
        route(
            "GET",
            "/v1/admin/users/{id}/transactions",
            Access::Admin,
            routes::admin::user_transactions,
            doc("A user's ledger rows", None, 200, "TransactionList"),
        ),
        PAGED,
    ),
    with_query(
        route(
            "GET",
            "/v1/admin/users/{id}/jobs",
            Access::Admin,
            routes::jobs::of_user,
            doc("A user's jobs (?status=)", None, 200, "JobList"),
        ),
        PAGED_STATUS,
    ),
    route(
        "DELETE",
        "/v1/admin/users/{id}",
        Access::Admin,
        routes::admin::deactivate_user,
        doc("Deactivate a user", None, 200, "Deleted"),
    ),
    route(
        "POST",
        "/v1/admin/users/{id}/credits",
        Access::Admin,
        routes::admin::adjust_credits,
        doc("Grant or adjust a user's credits", Some("AdjustCredits"), 201, "Transaction"),
    ),
    route(
        "POST",
        "/v1/admin/users/{id}/grants",
        Access::Admin,
        routes::grants::create,
        doc(
            "Grant credits (201; 200 with the first grant for a repeated external_id)",
            Some("NewGrantBody"),
            201,
            "Grant",
        ),
    ),
    with_query(
        route(
            "GET",
            "/v1/admin/users/{id}/grants",
            Access::Admin,
            routes::grants::of_user,
            doc("A user's credit grants (?status=)", None, 200, "GrantList"),
        ),
        PAGED_STATUS,
    ),
    route(
        "POST",
        "/v1/admin/grants/{id}/void",
        Access::Admin,
        routes::grants::void,
        doc("End a grant early; its unheld remainder leaves in a void row", None, 200, "Grant"),
    ),
    route(
        "POST",
        "/v1/admin/codes",
        Access::Admin,
        routes::codes::mint,
        doc("Mint redemption codes (each code shown only here)", Some("NewCodesBody"), 201, "RedemptionCodeList"),
    ),
    with_query(
        route(
            "GET",
            "/v1/admin/codes",
            Access::Admin,
            routes::codes::list,
            doc("Redemption codes (no secrets)", None, 200, "RedemptionCodeList"),
        ),
        PAGED,
    ),
    route(
        "POST",
        "/v1/admin/codes/{id}/disable",
        Access::Admin,
        routes::codes::disable,
        doc("Disable a redemption code", None, 200, "RedemptionCode"),
    ),
    not_replayable(route(
        "POST",
        "/v1/admin/users/{id}/api-keys",
        Access::Admin,
        routes::auth::admin_create_key,
        doc("Mint an API key for a user (shown once; no Idempotency-Key)", Some("KeyLimitsBody"), 201, "CreatedApiKey"),
    )),
    not_replayable(route(
        "POST",
        "/v1/admin/users/{id}/password-reset",
        Access::Admin,
        routes::sessions::admin_reset,
        doc("Issue a password reset token for a user (shown once; no Idempotency-Key)", None, 201, "ResetToken"),
    )),
    with_query(
        route(
            "GET",
            "/v1/admin/users/{id}/api-keys",
            Access::Admin,
            routes::auth::admin_list_keys,
            doc("A user's API keys", None, 200, "ApiKeyList"),
        ),
        PAGED,
    ),
    route(
        "PUT",
        "/v1/admin/users/{id}/limits",
        Access::Admin,
        routes::limits::set,
        doc("Set a user's limit overrides", Some("LimitsUpdate"), 200, "LimitsSet"),
    ),
    with_query(
        route(
            "GET",
            "/v1/admin/logs",
            Access::Admin,
            routes::admin::logs,
            doc("All logs, filtered", None, 200, "LogList"),
        ),
        &["log_type", "level", "user_id", "limit", "starting_after"],
    ),
    with_query(
        route(
            "GET",
            "/v1/admin/jobs",
            Access::Admin,
            routes::jobs::admin_list,
            doc("All jobs (?status=&user_id=)", None, 200, "JobList"),
        ),
        &["status", "user_id", "limit", "starting_after"],
    ),
    not_replayable(route(
        "POST",
        "/v1/admin/webhooks",
        Access::Admin,
        routes::webhooks::create,
        doc(
            "Add a webhook endpoint (its signing secret is shown once; no Idempotency-Key)",
            Some("NewWebhookBody"),
            201,
            "CreatedEndpoint",
        ),
    )),
    with_query(
        route(
            "GET",
            "/v1/admin/webhooks",
            Access::Admin,
            routes::webhooks::list,
            doc("Webhook endpoints, from the config file and the API", None, 200, "EndpointList"),
        ),
        PAGED,
    ),
    route(
        "DELETE",
        "/v1/admin/webhooks/{id}",
        Access::Admin,
        routes::webhooks::delete,
        doc("Delete an API webhook endpoint (its pending deliveries fail)", None, 200, "Endpoint"),
    ),
    with_query(
        route(
            "GET",
            "/v1/admin/webhook-deliveries",
            Access::Admin,
            routes::webhooks::deliveries,
            doc("Webhook deliveries (?status=pending|delivered|failed&endpoint_id=)", None, 200, "DeliveryList"),
        ),
        &["status", "endpoint_id", "limit", "starting_after"],
    ),
    route(
        "POST",
        "/v1/admin/webhook-deliveries/{id}/redeliver",
        Access::Admin,
        routes::webhooks::redeliver,
        doc("Send a delivery again from its first attempt", None, 202, "Delivery"),
    ),
    route(
        "GET",
        "/v1/admin/audit",
        Access::Admin,
        routes::admin::audit,
        doc("Audit every balance, hold and the hash chain", None, 200, "AuditReport"),
    ),
];

/// What a handler sees: the app, the parsed request, path parameters, and
/// the verified caller.
pub struct Ctx<'a> {
    pub app: &'a Arc<App>,
    pub req: &'a Req,
    pub params: Vec<&'a str>,
    /// This request's rate-limit decision (authenticated routes only).
    pub rate: Option<Decision>,
    user: Option<CurrentUser>,
    idem: Option<Token>,
    idem_stored: Cell<bool>,
}

impl Ctx<'_> {
    /// The caller. Only routes with `Access::User`/`Admin` reach handlers
    /// that call this, so the error is a routing bug, reported as 401.
    pub fn user(&self) -> Result<CurrentUser, ApiError> {
        self.user.clone().ok_or_else(|| ApiError::new(401, "unauthorized", "Authentication required."))
    }

    pub fn client_ip(&self) -> Option<std::net::IpAddr> {
        self.req.client_ip(&self.app.config.server.trusted_proxies)
    }

    pub fn param(&self, i: usize) -> &str {
        self.params.get(i).copied().unwrap_or("")
    }

    /// Runs `f` in the writer and answers `status` with its result as JSON.
    /// When the request carries an `Idempotency-Key`, the response is stored
    /// in the same transaction as the effect, so a replay can never miss an
    /// effect that happened nor repeat one.
    pub fn commit<T, F>(&self, status: u16, f: F) -> Result<Response, ApiError>
    where
        T: Serialize + 'static,
        F: Fn(&Conn<'_>) -> crate::error::Result<T> + Send + 'static,
    {
        self.commit_status(move |c| Ok((status, f(c)?)))
    }

    /// [`Ctx::commit`] where the write decides the status (201 for a new
    /// resource, 200 for one that already existed).
    pub fn commit_status<T, F>(&self, f: F) -> Result<Response, ApiError>
    where
        T: Serialize + 'static,
        F: Fn(&Conn<'_>) -> crate::error::Result<(u16, T)> + Send + 'static,
    {
        let token = self.idem.clone();
        let response = self.app.db.write(move |c| {
            let (status, value) = f(c)?;
            let response = Response::json(status, &value);
            if let Some(t) = &token {
                idempotency::complete(c, t, &stored(&response))?;
            }
            Ok::<_, crate::error::Error>(response)
        })?;
        self.idem_stored.set(self.idem.is_some());
        Ok(response)
    }
}

fn stored(r: &Response) -> StoredResponse {
    StoredResponse { status: r.status, content_type: r.content_type.to_owned(), body: r.body.clone() }
}

/// Finds the route for a method and path; `Err` tells 404 from 405.
pub fn find<'r>(method: &str, path: &'r str) -> Result<(&'static Route, Vec<&'r str>), ApiError> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let mut path_matched = false;
    for r in ROUTES {
        // A trailing slash never matters (`/console/` is `/console`).
        let pattern: Vec<&str> = r.path.trim_end_matches('/').split('/').collect();
        if pattern.len() != segments.len() {
            continue;
        }
        let mut params = Vec::new();
        let ok = pattern.iter().zip(&segments).all(|(p, s)| {
            if p.starts_with('{') {
                params.push(*s);
                !s.is_empty()
            } else {
                p == s
            }
        });
        if !ok {
            continue;
        }
        if r.method == method {
            return Ok((r, params));
        }
        path_matched = true;
    }
    if path_matched {
        return Err(ApiError::new(405, "method_not_allowed", format!("{method} is not supported on {path}.")));
    }
    Err(ApiError::new(404, "not_found", format!("No route for {method} {path}. See /openapi.json.")))
}

/// Runs a request through the route table; returns the response and the
/// route's path pattern (the metrics label; `unmatched` for 404/405).
pub fn dispatch(app: &Arc<App>, req: &Req) -> (Response, &'static str) {
    let mut route_path = "unmatched";
    let mut rate = None;
    let mut user_id = None;
    let result = dispatch_inner(app, req, &mut route_path, &mut rate, &mut user_id);
    let mut response = result.unwrap_or_else(|e| {
        note_refusal(app, &e, user_id, rate.as_ref());
        e.into_response()
    });
    if let Some(d) = rate {
        response.headers.push(("X-RateLimit-Limit", d.limit.to_string()));
        response.headers.push(("X-RateLimit-Remaining", d.remaining.to_string()));
        response.headers.push(("X-RateLimit-Reset", d.reset_s.to_string()));
    }
    (response, route_path)
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

fn dispatch_inner(
    app: &Arc<App>,
    req: &Req,
    route_path: &mut &'static str,
    rate: &mut Option<Decision>,
    user_id: &mut Option<crate::domain::UserId>,
) -> Result<Response, ApiError> {
    let (route, params) = find(&req.method, &req.path)?;
    *route_path = route.path;
    check_query(route, req)?;
    let user = match route.access {
        Access::Public => None,
        Access::User | Access::Session | Access::Admin => {
            Some(auth::authenticate(&app.db, &app.keys, &app.credentials, req.header("authorization"))?)
        }
    };
    *user_id = user.as_ref().map(|u| u.id);
    if let Some(u) = &user {
        let d = app.guard.check_rate(u);
        *rate = Some(d);
        if !d.allowed {
            let mut e = ApiError::new(
                429,
                "rate_limited",
                format!("Rate limit of {} requests per minute reached. Retry in {} s.", d.limit, d.retry_after_s),
            );
            e.retry_after_s = Some(d.retry_after_s);
            return Err(e);
        }
    }
    if route.access == Access::Admin && !user.as_ref().is_some_and(|u| u.is_admin()) {
        return Err(ApiError::new(403, "forbidden", "This route is for administrators only."));
    }
    if !route.access.allows_api_keys() && user.as_ref().is_some_and(|u| u.key().is_some()) {
        return Err(ApiError::new(
            403,
            "key_not_allowed",
            format!(
                "An API key cannot call {} {}: it manages credentials, the account or other users. Use an access token from /v1/auth/login.",
                route.method, route.path
            ),
        ));
    }
    let caller = user.as_ref().map(|u| u.id);
    let mut ctx = Ctx { app, req, params, rate: *rate, user, idem: None, idem_stored: Cell::new(false) };
    if req.method == "POST"
        && let (Some(caller), Some(raw)) = (caller, req.header("idempotency-key"))
    {
        if !route.replayable {
            return Err(ApiError::new(
                400,
                "idempotency_not_supported",
                "This route does not take an Idempotency-Key: its response holds a secret that is never stored. Retry without the header; list what exists to see whether the first try succeeded.",
            )
            .with_param("Idempotency-Key"));
        }
        let key = idempotency::parse_key(raw)?;
        match idempotency::begin(&app.db, caller, key, fingerprint(req))? {
            Claim::Fresh(token) => ctx.idem = Some(token),
            Claim::Replay(s) => {
                let content_type = if s.content_type == super::response::JSON {
                    super::response::JSON
                } else {
                    "application/octet-stream"
                };
                return Ok(Response {
                    status: s.status,
                    content_type,
                    headers: vec![("Idempotent-Replayed", "true".into())],
                    body: s.body,
                    stream: None,
                    stream_len: None,
                });
            }
            Claim::InProgress => {
                return Err(ApiError::new(
                    409,
                    "request_in_progress",
                    "A request with this Idempotency-Key is still running. Retry after it finishes.",
                ));
            }
            Claim::Reused => {
                return Err(ApiError::new(
                    422,
                    "idempotency_key_reused",
                    "This Idempotency-Key was used with a different request. Use a new key for a new request.",
                ));
            }
        }
    }
    let result = (route.handler)(&ctx);
    if let Some(token) = ctx.idem.take() {
        match &result {
            Ok(r) if r.is_success() && !ctx.idem_stored.get() && r.stream.is_none() => {
                let s = stored(r);
                let stored_ok = app.db.write(move |c| idempotency::complete(c, &token, &s));
                if let Err(e) = stored_ok {
                    log::error!("could not store an idempotent response: {e}");
                }
            }
            Ok(r) if r.is_success() => {}
            _ => idempotency::abandon(&app.db, token),
        }
    }
    result
}

/// 400 `unknown_parameter` for a query parameter the route does not read.
fn check_query(route: &Route, req: &Req) -> Result<(), ApiError> {
    let Some(known) = route.query else { return Ok(()) };
    match req.query.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some((name, _)) => {
            let takes = if known.is_empty() { "no query parameters".to_owned() } else { known.join(", ") };
            Err(ApiError::new(
                400,
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
    crate::auth::api_key::hex(&h.finalize())
}
