//! Who is calling: login, access tokens, API keys, and the one function that
//! turns an `Authorization` header into a [`CurrentUser`].
//!
//! Identity comes only from a verified credential. Nothing in this module (or
//! anywhere else) reads a user id from a header, a body or a query string.

use crate::storage::Conn;
pub mod accounts;
pub mod api_key;
pub mod cache;
pub mod jwt;
pub mod key_limits;
pub mod password;
pub mod reset;
pub mod sessions;
pub mod storage;

use crate::config::AuthConfig;
use crate::domain::{ApiKeyId, Email, Role, Timestamp, UserId};
use crate::error::{Error, Result};
use crate::logs::{self, NewLog};
use crate::paging::{List, Page};
use crate::storage::Db;
use crate::support::token;
use crate::users::{self, User};
use cache::{CacheKey, Caller, CredentialCache};
use jwt::JwtKeys;
use key_limits::{KeyLimits, KeyTerms};
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;

pub use storage::ApiKeyView;

const JWT_SECRET_SETTING: &str = "jwt_secret";
/// An API key's name is a label for humans; this keeps it one.
pub const API_KEY_NAME_CHARS_MAX: usize = 100;

/// The caller of a request, established from a verified credential.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub id: UserId,
    pub role: Role,
    pub via: Credential,
    /// The user's price group: every price of their calls is multiplied
    /// by the group's factor (`[pricing] groups`).
    pub price_group: Option<Arc<str>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An access token, and the session it belongs to (none for tokens
    /// issued before sessions existed).
    Jwt(Option<i64>),
    /// An API key, with the terms authentication enforces for it.
    ApiKey(Arc<KeyTerms>),
}

impl CurrentUser {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The API key the call came through, if any (its spend is counted).
    pub fn key(&self) -> Option<ApiKeyId> {
        match &self.via {
            Credential::ApiKey(t) => Some(t.id),
            Credential::Jwt(_) => None,
        }
    }

    /// 403 `model_not_allowed` when the caller's key may not use `model`.
    pub fn check_model(&self, model: &str) -> Result<()> {
        match &self.via {
            Credential::ApiKey(t) => t.check_model(model),
            Credential::Jwt(_) => Ok(()),
        }
    }

    /// The session the call came through, if it came with an access token.
    pub fn session(&self) -> Option<i64> {
        match &self.via {
            Credential::Jwt(s) => *s,
            Credential::ApiKey(_) => None,
        }
    }
}

/// Loads the signing secret, generating and storing it on first start.
pub fn load_keys(db: &Db) -> Result<JwtKeys> {
    Ok(JwtKeys::new(secret_setting(db, JWT_SECRET_SETTING)?.as_bytes()))
}

/// A 256-bit secret kept in `settings` under `key`, made at first use
/// (random, hex) and the same ever after.
pub fn secret_setting(db: &Db, key: &'static str) -> Result<String> {
    let fresh = token::hex(&token::random_bytes::<32>()?);
    db.write(move |c| Ok::<_, Error>(storage::setting_init(c, key, &fresh)?))
}

fn unauthorized() -> Error {
    Error::Unauthorized(
        "Missing or malformed credential: send `Authorization: Bearer <token>` with a token from /v1/auth/login or an API key."
            .into(),
    )
}

/// The only way a request gets an identity.
pub fn authenticate(
    db: &Db,
    keys: &JwtKeys,
    cache: &CredentialCache,
    authorization: Option<&str>,
) -> Result<CurrentUser> {
    let header = authorization.ok_or_else(unauthorized)?;
    let (scheme, token) = header.trim().split_once(' ').ok_or_else(unauthorized)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthorized());
    }
    let token = token.trim();
    let key = if token.starts_with(api_key::API_KEY_PREFIX) {
        if !api_key::looks_like_key(token) {
            return Err(unauthorized());
        }
        CacheKey::KeyHash(token::hash(token))
    } else {
        match keys.verify(token)? {
            jwt::Verified { user, session: Some(s) } => CacheKey::Session(user, s),
            jwt::Verified { user, session: None } => CacheKey::User(user),
        }
    };
    let session = match &key {
        CacheKey::Session(_, s) => Some(*s),
        _ => None,
    };
    let caller = match cache.get(&key) {
        Some(c) => c,
        None => {
            // The role is read (at most CREDENTIAL_CACHE_TTL_MS old, and
            // never from before a deactivation or revocation made here), so
            // a deactivated user's tokens and a revoked key stop at once.
            let generation = cache.generation();
            let c = lookup(db, &key)?;
            cache.put(key, c.clone(), generation);
            c
        }
    };
    let via = match caller.key {
        Some(terms) => {
            if terms.expires_at.is_some_and(|at| at <= Timestamp::now()) {
                return Err(Error::Unauthorized("This API key has expired.".into()));
            }
            Credential::ApiKey(terms)
        }
        None => Credential::Jwt(session),
    };
    Ok(CurrentUser { id: caller.user, role: caller.role, via, price_group: caller.price_group })
}

/// The caller behind a credential: one read, of their role and price
/// group with whatever makes the credential valid.
fn lookup(db: &Db, key: &CacheKey) -> Result<Caller> {
    let caller =
        |user, s: storage::Standing, key| Caller { user, role: s.role, key, price_group: s.price_group.map(Arc::from) };
    match key {
        CacheKey::KeyHash(hash) => {
            let found = db.read(|c| Ok::<_, Error>(storage::user_by_key_hash(c, hash)?))?;
            let (user, standing, terms) =
                found.ok_or_else(|| Error::Unauthorized("This API key is unknown or has been revoked.".into()))?;
            Ok(caller(user, standing, Some(Arc::new(terms))))
        }
        CacheKey::User(id) => {
            let standing = db
                .read(|c| Ok::<_, Error>(storage::active_standing(c, *id)?))?
                .ok_or_else(|| Error::Unauthorized("This account no longer exists or has been deactivated.".into()))?;
            Ok(caller(*id, standing, None))
        }
        CacheKey::Session(id, session) => {
            let standing = db.read(|c| sessions::live_standing(c, *id, *session))?.ok_or_else(|| {
                Error::Unauthorized(
                    "This session has ended (logged out, or the password changed) or the account was deactivated; log in again."
                        .into(),
                )
            })?;
            Ok(caller(*id, standing, None))
        }
    }
}

/// A new access token and refresh token (login, refresh, sign-in).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Tokens {
    pub access_token: String,
    pub token_type: &'static str,
    /// Seconds the access token lives.
    pub expires_in: u64,
    /// Opaque; exchange it at `POST /v1/auth/refresh` for the next pair.
    pub refresh_token: String,
    /// Seconds the refresh token lives unless used.
    pub refresh_expires_in: u64,
}

/// A login's answer: the tokens and who signed in.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct LoginResponse {
    #[serde(flatten)]
    pub tokens: Tokens,
    pub user: User,
}

/// Signs the access token for a session just started or rotated.
pub fn tokens(keys: &JwtKeys, cfg: &AuthConfig, issued: sessions::Issued) -> Result<Tokens> {
    Ok(Tokens {
        access_token: keys.issue(issued.user, issued.role, issued.session, cfg.token_ttl_s)?,
        token_type: "Bearer",
        expires_in: cfg.token_ttl_s,
        refresh_token: issued.refresh_token,
        refresh_expires_in: cfg.refresh_token_ttl_s,
    })
}

/// Starts a session for `user` (after their credential was checked) and
/// answers its tokens; logs `action` for the user in the same transaction.
/// Sessions it ends (past the per-user maximum) stop at once.
pub fn sign_in(
    db: &Db,
    keys: &JwtKeys,
    cache: &CredentialCache,
    cfg: &AuthConfig,
    user: User,
    method: String,
    action: &'static str,
) -> Result<LoginResponse> {
    let session_cfg = cfg.clone();
    let (id, role) = (user.id, user.role);
    // Only this user's sessions: beside other users' writes, under the
    // user's row lock (which also makes the sessions-per-user cap exact).
    let issued = db.write_for_user(Some(id), move |c| {
        let issued = sessions::start(c, id, role, &method, &session_cfg)?;
        logs::write(c, &NewLog::business(id, action, true, json!({ "session_id": issued.session, "method": method })))?;
        Ok::<_, Error>(issued)
    })?;
    if issued.ended_others > 0 {
        cache.invalidate();
    }
    Ok(LoginResponse { tokens: tokens(keys, cfg, issued)?, user })
}

/// One message for an unknown email and a wrong password, so that login
/// does not reveal which addresses have accounts.
pub const LOGIN_FAILED_MESSAGE: &str = "Invalid email or password.";

pub fn login(
    db: &Db,
    keys: &JwtKeys,
    cache: &CredentialCache,
    cfg: &AuthConfig,
    email: &str,
    password: &str,
) -> Result<LoginResponse> {
    let found = match Email::parse(email) {
        Ok(e) => db.read(|c| users::storage::by_email(c, &e))?,
        Err(_) => None,
    };
    let Some((user, hash)) = found else {
        password::burn_time(password)?;
        logs::record(db, NewLog::system(logs::Level::Info, "login_unknown_email", json!({})));
        return Err(Error::Unauthorized(LOGIN_FAILED_MESSAGE.into()));
    };
    if !password::verify(password, &hash)? {
        logs::record(db, NewLog::business(user.id, "login", false, json!({ "reason": "wrong_password" })));
        return Err(Error::Unauthorized(LOGIN_FAILED_MESSAGE.into()));
    }
    sign_in(db, keys, cache, cfg, user, "password".into(), "login")
}

/// A new key: the key itself, shown only in this response (only its hash
/// is stored), and the key as lists show it.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct CreatedApiKey {
    pub key: String,
    #[serde(flatten)]
    pub view: ApiKeyView,
}

pub fn parse_key_name(raw: &str) -> Result<String> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > API_KEY_NAME_CHARS_MAX || name.chars().any(char::is_control) {
        return Err(Error::invalid("name", format!("name must be 1 to {API_KEY_NAME_CHARS_MAX} printable characters")));
    }
    Ok(name.to_owned())
}

/// Creates a key inside the caller's transaction (`day`: today, for the
/// view's `spent_today`).
pub fn create_api_key(
    conn: &Conn<'_>,
    user: UserId,
    name: &str,
    limits: &KeyLimits,
    day: i64,
) -> Result<CreatedApiKey> {
    let new = api_key::generate()?;
    let now = Timestamp::now();
    let id = storage::insert_key(conn, user, name, &new.hash, &new.display_prefix, limits, now)?;
    logs::write(conn, &NewLog::business(user, "api_key_created", true, json!({ "api_key_id": id, "name": name })))?;
    let view = storage::get_key(conn, user, id, day)?.ok_or_else(|| Error::Internal("a new key vanished".into()))?;
    Ok(CreatedApiKey { key: new.plaintext, view })
}

pub fn list_api_keys(db: &Db, user: UserId, page: &Page, day: i64) -> Result<List<ApiKeyView>> {
    db.read(|c| Ok::<_, Error>(storage::list_keys(c, user, page, day)?))
}

pub fn get_api_key(conn: &Conn<'_>, user: UserId, id: ApiKeyId, day: i64) -> Result<ApiKeyView> {
    storage::get_key(conn, user, id, day)?.ok_or_else(|| Error::not_found("API key"))
}

/// A change to one of `user`'s keys, made by `by` (the user, or an admin).
#[derive(Debug, Clone, Copy)]
pub struct KeyOf {
    pub user: UserId,
    pub id: ApiKeyId,
    pub by: UserId,
}

/// Changes a key's name and limits inside the caller's transaction; the
/// caller invalidates the credential cache after the commit.
pub fn update_api_key(conn: &Conn<'_>, key: KeyOf, name: &str, limits: &KeyLimits, day: i64) -> Result<ApiKeyView> {
    let KeyOf { user, id, by } = key;
    if storage::update_key(conn, user, id, name, limits)? == 0 {
        return Err(Error::not_found("API key"));
    }
    let detail = json!({ "api_key_id": id, "name": name, "limits": limits, "by": by });
    logs::write(conn, &NewLog::business(user, "api_key_updated", true, detail))?;
    get_api_key(conn, user, id, day)
}

pub fn revoke_api_key(db: &Db, key: KeyOf) -> Result<()> {
    let KeyOf { user, id, by } = key;
    let n = db.write(move |c| {
        let n = storage::revoke_key(c, user, id, Timestamp::now())?;
        if n == 1 {
            logs::write(c, &NewLog::business(user, "api_key_revoked", true, json!({ "api_key_id": id, "by": by })))?;
        }
        Ok::<_, Error>(n)
    })?;
    if n == 0 {
        return Err(Error::not_found("API key"));
    }
    Ok(())
}
