//! Who is calling: login, access tokens, API keys, and the one function that
//! turns an `Authorization` header into a [`CurrentUser`].
//!
//! Identity comes only from a verified credential. Nothing in this module (or
//! anywhere else) reads a user id from a header, a body or a query string.

pub mod api_key;
pub mod cache;
pub mod jwt;
pub mod password;
pub mod storage;

use crate::domain::{ApiKeyId, Email, Role, Timestamp, UserId};
use crate::error::{Error, Result};
use crate::logs::{self, NewLog};
use crate::paging::{List, Page};
use crate::storage::Db;
use crate::users::{self, User};
use cache::{CacheKey, Caller, CredentialCache};
use jwt::JwtKeys;
use serde::Serialize;
use serde_json::json;

pub use storage::ApiKeyView;

const JWT_SECRET_SETTING: &str = "jwt_secret";
/// An API key's name is a label for humans; this keeps it one.
pub const API_KEY_NAME_CHARS_MAX: usize = 100;

/// The caller of a request, established from a verified credential.
#[derive(Debug, Clone, Copy)]
pub struct CurrentUser {
    pub id: UserId,
    pub role: Role,
    pub via: Credential,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Jwt,
    ApiKey(ApiKeyId),
}

impl CurrentUser {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// Loads the signing secret, generating and storing it on first start.
pub fn load_keys(db: &Db) -> Result<JwtKeys> {
    let fresh = api_key::hex(&api_key::random_bytes::<32>()?);
    let secret = db.write(move |c| Ok::<_, Error>(storage::setting_init(c, JWT_SECRET_SETTING, &fresh)?))?;
    Ok(JwtKeys::new(secret.as_bytes()))
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
        CacheKey::KeyHash(api_key::hash(token))
    } else {
        CacheKey::User(keys.verify(token)?)
    };
    let caller = match cache.get(&key) {
        Some(c) => c,
        None => {
            // The role is read (at most CREDENTIAL_CACHE_TTL_MS old, and
            // never from before a deactivation or revocation made here), so
            // a deactivated user's tokens and a revoked key stop at once.
            let generation = cache.generation();
            let c = lookup(db, &key)?;
            cache.put(key, c, generation);
            c
        }
    };
    let via = caller.key.map_or(Credential::Jwt, Credential::ApiKey);
    Ok(CurrentUser { id: caller.user, role: caller.role, via })
}

fn lookup(db: &Db, key: &CacheKey) -> Result<Caller> {
    match key {
        CacheKey::KeyHash(hash) => {
            let found = db.read(|c| Ok::<_, Error>(storage::user_by_key_hash(c, hash)?))?;
            let (user, role, key) =
                found.ok_or_else(|| Error::Unauthorized("This API key is unknown or has been revoked.".into()))?;
            Ok(Caller { user, role, key: Some(key) })
        }
        CacheKey::User(id) => {
            let role = db
                .read(|c| Ok::<_, Error>(storage::active_role(c, *id)?))?
                .ok_or_else(|| Error::Unauthorized("This account no longer exists or has been deactivated.".into()))?;
            Ok(Caller { user: *id, role, key: None })
        }
    }
}

#[derive(Debug, Serialize)]
pub struct LoginResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub user: User,
}

/// One message for an unknown email and a wrong password, so that login
/// does not reveal which addresses have accounts.
pub const LOGIN_FAILED_MESSAGE: &str = "Invalid email or password.";

pub fn login(db: &Db, keys: &JwtKeys, ttl_s: u64, email: &str, password: &str) -> Result<LoginResponse> {
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
    let access_token = keys.issue(user.id, user.role, ttl_s)?;
    logs::record(db, NewLog::business(user.id, "login", true, json!({})));
    Ok(LoginResponse { access_token, token_type: "Bearer", expires_in: ttl_s, user })
}

#[derive(Debug, Serialize)]
pub struct CreatedApiKey {
    pub id: ApiKeyId,
    pub object: &'static str,
    pub name: String,
    /// Shown only in this response; only its hash is stored.
    pub key: String,
    pub created_at: Timestamp,
}

pub fn parse_key_name(raw: &str) -> Result<String> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > API_KEY_NAME_CHARS_MAX || name.chars().any(char::is_control) {
        return Err(Error::invalid("name", format!("name must be 1 to {API_KEY_NAME_CHARS_MAX} printable characters")));
    }
    Ok(name.to_owned())
}

/// Creates a key inside the caller's transaction.
pub fn create_api_key(conn: &rusqlite::Connection, user: UserId, name: &str) -> Result<CreatedApiKey> {
    let new = api_key::generate()?;
    let now = Timestamp::now();
    let id = storage::insert_key(conn, user, name, &new.hash, &new.display_prefix, now)?;
    logs::write(conn, &NewLog::business(user, "api_key_created", true, json!({ "api_key_id": id, "name": name })))?;
    Ok(CreatedApiKey { id, object: "api_key", name: name.to_owned(), key: new.plaintext, created_at: now })
}

pub fn list_api_keys(db: &Db, user: UserId, page: &Page) -> Result<List<ApiKeyView>> {
    db.read(|c| Ok::<_, Error>(storage::list_keys(c, user, page)?))
}

pub fn revoke_api_key(db: &Db, user: UserId, id: ApiKeyId) -> Result<()> {
    let n = db.write(move |c| {
        let n = storage::revoke_key(c, user, id, Timestamp::now())?;
        if n == 1 {
            logs::write(c, &NewLog::business(user, "api_key_revoked", true, json!({ "api_key_id": id })))?;
        }
        Ok::<_, Error>(n)
    })?;
    if n == 0 {
        return Err(Error::not_found("API key"));
    }
    Ok(())
}
