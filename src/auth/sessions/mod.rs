//! Sessions that last: a login starts a session and answers a short-lived
//! access token (a JWT naming the session in `sid`) and an opaque refresh
//! token. Each refresh retires the presented token and issues the next one
//! of the same family; a retired token presented again means two parties
//! hold the family, so the whole session is revoked (the OAuth 2.0 Security
//! BCP's refresh token rotation). Revoking a session stops its access tokens
//! at once: authentication checks the session, through the credential cache
//! that every revocation invalidates.
//!
//! Only SHA-256 hashes of refresh tokens are stored (256 random bits: there
//! is nothing to guess, so a fast hash is right). This module never signs
//! JWTs and never checks passwords; `auth` does.

pub mod storage;

use crate::config::AuthConfig;
use crate::domain::{Role, Timestamp, UserId};
use crate::error::account::Refusal;
use crate::error::{Error, Result};
use crate::logs::{self, NewLog};
use crate::storage::Conn;
use crate::support::token;
use serde_json::json;

pub const REFRESH_TOKEN_PREFIX: &str = "tgr_";
/// Ended sessions are kept this long (a retired token presented after its
/// session ended is still recognised), then deleted.
pub const ENDED_SESSIONS_KEPT_MS: i64 = 7 * 86_400_000;

/// Why a session ended (stored, and shown in logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Logout,
    LogoutAll,
    PasswordChanged,
    PasswordReset,
    RefreshTokenReused,
    SessionsMax,
    UserDeactivated,
}

impl Ended {
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::Logout => "logout",
            Ended::LogoutAll => "logout_all",
            Ended::PasswordChanged => "password_changed",
            Ended::PasswordReset => "password_reset",
            Ended::RefreshTokenReused => "refresh_token_reused",
            Ended::SessionsMax => "sessions_max",
            Ended::UserDeactivated => "user_deactivated",
        }
    }
}

/// A session's current refresh token, just issued (shown once).
#[derive(Debug)]
pub struct Issued {
    pub session: i64,
    pub user: UserId,
    pub role: Role,
    pub refresh_token: String,
    /// Older sessions this one ended (past `sessions_per_user_max`): the
    /// caller invalidates the credential cache after the commit.
    pub ended_others: usize,
}

fn refresh_ttl_ms(cfg: &AuthConfig) -> i64 {
    i64::try_from(cfg.refresh_token_ttl_s.saturating_mul(1000)).unwrap_or(i64::MAX)
}

fn issue_token(conn: &Conn<'_>, session: i64, cfg: &AuthConfig, now: Timestamp) -> Result<String> {
    let (token, hash) = token::opaque_token(REFRESH_TOKEN_PREFIX)?;
    storage::insert_token(conn, session, &hash, now, now.plus_ms(refresh_ttl_ms(cfg)))?;
    Ok(token)
}

/// Starts a session for `user` inside the caller's transaction (`method`:
/// `password` or `oidc:<provider>`). Past `sessions_per_user_max` live
/// sessions, the oldest end.
pub fn start(conn: &Conn<'_>, user: UserId, role: Role, method: &str, cfg: &AuthConfig) -> Result<Issued> {
    let now = Timestamp::now();
    let session = storage::insert_session(conn, user, method, now, now.plus_ms(refresh_ttl_ms(cfg)))?;
    let refresh_token = issue_token(conn, session, cfg, now)?;
    let mut ended_others = 0;
    for old in storage::sessions_over(conn, user, cfg.sessions_per_user_max, now)? {
        ended_others += storage::revoke_session(conn, old, Ended::SessionsMax.as_str(), now)?;
    }
    Ok(Issued { session, user, role, refresh_token, ended_others })
}

/// What a refresh came to. A refusal is an `Ok` here: a reused token's
/// revocation must commit even though the caller is refused.
#[derive(Debug)]
pub enum Rotation {
    Rotated(Issued),
    Refused(Refusal),
}

fn looks_like_refresh_token(s: &str) -> bool {
    s.strip_prefix(REFRESH_TOKEN_PREFIX)
        .is_some_and(|rest| rest.len() == 64 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Rotates `presented` inside the caller's transaction: retires it and
/// issues its successor, or refuses (revoking the session on reuse).
pub fn rotate(conn: &Conn<'_>, presented: &str, cfg: &AuthConfig) -> Result<Rotation> {
    let now = Timestamp::now();
    if !looks_like_refresh_token(presented) {
        return Ok(Rotation::Refused(Refusal::InvalidRefreshToken));
    }
    let Some(found) = storage::find_token(conn, &token::hash(presented))? else {
        return Ok(Rotation::Refused(Refusal::InvalidRefreshToken));
    };
    if found.session_revoked || found.user_gone {
        return Ok(Rotation::Refused(Refusal::InvalidRefreshToken));
    }
    if found.retired {
        storage::revoke_session(conn, found.session, Ended::RefreshTokenReused.as_str(), now)?;
        logs::write(
            conn,
            &NewLog::business(found.user, "refresh_token_reused", false, json!({ "session_id": found.session })),
        )?;
        return Ok(Rotation::Refused(Refusal::RefreshTokenReused));
    }
    if found.token_expires_at <= now {
        return Ok(Rotation::Refused(Refusal::RefreshTokenExpired));
    }
    if storage::retire_token(conn, found.token_id, now)? != 1 {
        return Err(Error::Internal("a current refresh token was retired under the writer".into()));
    }
    let refresh_token = issue_token(conn, found.session, cfg, now)?;
    let (session, user, role) = (found.session, found.user, found.role);
    logs::write(conn, &NewLog::business(user, "token_refreshed", true, json!({ "session_id": session })))?;
    Ok(Rotation::Rotated(Issued { session, user, role, refresh_token, ended_others: 0 }))
}

/// The user whose session `presented` belongs to (which never changes), if
/// it is one of ours: a refresh locks that user alone.
pub fn owner(conn: &Conn<'_>, presented: &str) -> Result<Option<UserId>> {
    if !looks_like_refresh_token(presented) {
        return Ok(None);
    }
    Ok(storage::find_token(conn, &token::hash(presented))?.map(|f| f.user))
}

/// Ends the session `presented` belongs to (logout); its user, or `None`
/// for a token that is not ours. Ending an ended session is not an error.
pub fn end(conn: &Conn<'_>, presented: &str) -> Result<Option<UserId>> {
    if !looks_like_refresh_token(presented) {
        return Ok(None);
    }
    let Some(found) = storage::find_token(conn, &token::hash(presented))? else {
        return Ok(None);
    };
    if storage::revoke_session(conn, found.session, Ended::Logout.as_str(), Timestamp::now())? == 1 {
        logs::write(conn, &NewLog::business(found.user, "logout", true, json!({ "session_id": found.session })))?;
    }
    Ok(Some(found.user))
}

/// Ends every live session of `user` but `except`; returns how many ended.
pub fn end_all(conn: &Conn<'_>, user: UserId, except: Option<i64>, why: Ended) -> Result<usize> {
    Ok(storage::revoke_user(conn, user, except, why.as_str(), Timestamp::now())?)
}

/// The role of `user` while `session` is theirs and live.
pub fn live_standing(conn: &Conn<'_>, user: UserId, session: i64) -> Result<Option<crate::auth::storage::Standing>> {
    Ok(storage::live_standing(conn, user, session, Timestamp::now())?)
}

/// Deletes sessions that ended more than [`ENDED_SESSIONS_KEPT_MS`] ago.
pub fn prune(conn: &Conn<'_>) -> Result<usize> {
    Ok(storage::prune(conn, Timestamp::now().plus_ms(-ENDED_SESSIONS_KEPT_MS))?)
}
