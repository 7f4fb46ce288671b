//! What a route is and what its handler sees: [`Route`] (method, path,
//! [`Access`], handler, and its line in `/openapi.json`), the constructors
//! each `routes/<area>.rs` declares its routes with, and [`Ctx`]. Never
//! matches a request nor runs a handler; `router` does.

use super::error::ApiError;
use super::request::Req;
use super::response::Response;
use super::state::HttpState;
use crate::app::App;
use crate::auth::CurrentUser;
use crate::guard::bucket::Decision;
use crate::idempotency::{self, StoredResponse, Token};
use crate::storage::Conn;
use serde::Serialize;
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

/// The wire format a route's clients speak: where they put their
/// credential and the shape their SDKs parse errors in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `Authorization: Bearer`; errors `{"error":{type,code,message,param}}`.
    OpenAi,
    /// Anthropic's SDKs and Claude Code: `x-api-key` or `Authorization:
    /// Bearer`; errors `{"type":"error","error":{type,message}}`, overload
    /// as 529.
    Anthropic,
    /// Google's `google-genai` SDK and the Gemini CLI: `x-goog-api-key` or
    /// `?key=`; errors `{"error":{code,message,status,details}}`.
    Google,
}

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
    pub dialect: Dialect,
}

/// Query parameters of a paged list.
pub const PAGED: &[&str] = &["limit", "starting_after"];
/// ... of a list filtered by status.
pub const PAGED_STATUS: &[&str] = &["status", "limit", "starting_after"];

/// `r`, reading the query parameters `names`.
pub const fn with_query(r: Route, names: &'static [&'static str]) -> Route {
    Route { query: Some(names), ..r }
}

pub struct Doc {
    pub summary: &'static str,
    pub body: Option<&'static str>,
    pub ok: u16,
    pub schema: &'static str,
}

pub const fn doc(summary: &'static str, body: Option<&'static str>, ok: u16, schema: &'static str) -> Doc {
    Doc { summary, body, ok, schema }
}

pub const fn route(method: &'static str, path: &'static str, access: Access, handler: Handler, doc: Doc) -> Route {
    Route {
        method,
        path,
        access,
        handler,
        upstream: false,
        replayable: true,
        doc,
        query: Some(&[]),
        dialect: Dialect::OpenAi,
    }
}

/// A route whose response is never stored for `Idempotency-Key` replay.
pub const fn not_replayable(r: Route) -> Route {
    Route { replayable: false, ..r }
}

pub const fn upstream(method: &'static str, path: &'static str, handler: Handler, doc: Doc) -> Route {
    Route {
        method,
        path,
        access: Access::User,
        handler,
        upstream: true,
        replayable: true,
        doc,
        query: Some(&[]),
        dialect: Dialect::OpenAi,
    }
}

/// `r`, for clients that speak `dialect`.
pub const fn in_dialect(r: Route, dialect: Dialect) -> Route {
    Route { dialect, ..r }
}

/// What a handler sees: the app, the parsed request, path parameters, and
/// the verified caller.
pub struct Ctx<'a> {
    pub app: &'a Arc<App>,
    /// The server's own state (CORS, open streams).
    pub http: &'a Arc<HttpState>,
    pub req: &'a Req,
    pub params: Vec<&'a str>,
    /// This request's rate-limit decision (authenticated routes only).
    pub rate: Option<Decision>,
    pub(super) user: Option<CurrentUser>,
    pub(super) idem: Option<Token>,
    pub(super) idem_stored: Cell<bool>,
}

impl Ctx<'_> {
    /// The caller. Only routes with `Access::User`/`Admin` reach handlers
    /// that call this, so the error is a routing bug, reported as 401.
    pub fn user(&self) -> Result<CurrentUser, ApiError> {
        self.user.clone().ok_or_else(|| ApiError::refuse("unauthorized", "Authentication required."))
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
        T: Serialize + Send + 'static,
        F: Fn(&Conn<'_>) -> crate::error::Result<T> + Send + 'static,
    {
        self.commit_for(None, status, f)
    }

    /// [`Ctx::commit`] for a write of one user's money that locks `lock`'s
    /// row alone (`Db::write_for_user`); `None` runs alone.
    pub fn commit_for<T, F>(&self, lock: Option<crate::domain::UserId>, status: u16, f: F) -> Result<Response, ApiError>
    where
        T: Serialize + Send + 'static,
        F: Fn(&Conn<'_>) -> crate::error::Result<T> + Send + 'static,
    {
        self.commit_status_for(lock, move |c| Ok((status, f(c)?)))
    }

    /// [`Ctx::commit`] in two steps: `write` runs in the writer, `render`
    /// makes the answer from what it returned. Without an
    /// `Idempotency-Key` the answer is rendered on this thread, so a large
    /// answer (a provider's whole completion) is never copied and
    /// serialized on the one writer thread every write waits for.
    pub fn commit_then<W, T, F, R>(&self, status: u16, write: F, render: R) -> Result<Response, ApiError>
    where
        W: Send + 'static,
        T: Serialize + Send + 'static,
        F: Fn(&Conn<'_>) -> crate::error::Result<W> + Send + 'static,
        R: Fn(&W) -> T + Send + 'static,
    {
        self.commit_then_for(None, status, write, render)
    }

    /// [`Ctx::commit_then`] for a write of one user's money that locks
    /// `lock`'s row alone.
    pub fn commit_then_for<W, T, F, R>(
        &self,
        lock: Option<crate::domain::UserId>,
        status: u16,
        write: F,
        render: R,
    ) -> Result<Response, ApiError>
    where
        W: Send + 'static,
        T: Serialize + Send + 'static,
        F: Fn(&Conn<'_>) -> crate::error::Result<W> + Send + 'static,
        R: Fn(&W) -> T + Send + 'static,
    {
        if self.idem.is_some() {
            return self.commit_for(lock, status, move |c| Ok(render(&write(c)?)));
        }
        let written = self.app.db.write_for_user(lock, write)?;
        Ok(Response::json(status, &render(&written)))
    }

    /// [`Ctx::commit`] where the write decides the status (201 for a new
    /// resource, 200 for one that already existed).
    pub fn commit_status<T, F>(&self, f: F) -> Result<Response, ApiError>
    where
        T: Serialize + Send + 'static,
        F: Fn(&Conn<'_>) -> crate::error::Result<(u16, T)> + Send + 'static,
    {
        self.commit_status_for(None, f)
    }

    /// [`Ctx::commit_status`] for a write that locks `lock`'s row alone.
    pub fn commit_status_for<T, F>(&self, lock: Option<crate::domain::UserId>, f: F) -> Result<Response, ApiError>
    where
        T: Serialize + Send + 'static,
        F: Fn(&Conn<'_>) -> crate::error::Result<(u16, T)> + Send + 'static,
    {
        let Some(token) = self.idem.clone() else {
            // Nothing to store with the write: the answer is rendered here,
            // off the one writer thread every write waits for.
            let (status, value) = self.app.db.write_for_user(lock, f)?;
            return Ok(Response::json(status, &value));
        };
        let response = self.app.db.write_for_user(lock, move |c| {
            let (status, value) = f(c)?;
            let response = Response::json(status, &value);
            idempotency::complete(c, &token, &stored(&response))?;
            Ok::<_, crate::error::Error>(response)
        })?;
        self.idem_stored.set(true);
        Ok(response)
    }
}

pub(super) fn stored(r: &Response) -> StoredResponse {
    StoredResponse { status: r.status, content_type: r.content_type.to_owned(), body: r.body.clone() }
}
