//! SQL for `oidc_logins`, `oidc_codes` and `oidc_identities`.

use crate::domain::{Timestamp, UserId};
use crate::storage::{Conn, StorageError};
use rusqlite::params;

type Result<T> = std::result::Result<T, StorageError>;

/// A sign-in under way, as `/start` stored it.
pub struct Pending {
    pub provider: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub redirect_uri: String,
    pub client_state: Option<String>,
}

pub fn insert_login(
    conn: &Conn<'_>,
    state_hash: &str,
    p: &Pending,
    now: Timestamp,
    expires_at: Timestamp,
) -> Result<()> {
    conn.execute("INSERT INTO oidc_logins (state_hash, provider, nonce, pkce_verifier, redirect_uri, client_state, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)", params![state_hash, p.provider, p.nonce, p.pkce_verifier, p.redirect_uri, p.client_state, now, expires_at])?;
    Ok(())
}

/// Takes a pending sign-in: marks it used and returns it, once; `None` when
/// unknown, used, expired, or of another provider.
pub fn take_login(conn: &Conn<'_>, state_hash: &str, provider: &str, now: Timestamp) -> Result<Option<Pending>> {
    let found = conn.query_opt(
        "UPDATE oidc_logins SET used_at = ?3
             WHERE state_hash = ?1 AND provider = ?2 AND used_at IS NULL AND expires_at > ?3
             RETURNING provider, nonce, pkce_verifier, redirect_uri, client_state",
        params![state_hash, provider, now],
        |r| {
            Ok(Pending {
                provider: r.get(0)?,
                nonce: r.get(1)?,
                pkce_verifier: r.get(2)?,
                redirect_uri: r.get(3)?,
                client_state: r.get(4)?,
            })
        },
    )?;
    Ok(found)
}

pub fn insert_code(
    conn: &Conn<'_>,
    hash: &str,
    user: UserId,
    provider: &str,
    now: Timestamp,
    expires_at: Timestamp,
) -> Result<()> {
    conn.execute(
        "INSERT INTO oidc_codes (code_hash, user_id, provider, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![hash, user, provider, now, expires_at],
    )?;
    Ok(())
}

/// Uses a sign-in code once: its user and provider, if unused and unexpired.
pub fn take_code(conn: &Conn<'_>, hash: &str, now: Timestamp) -> Result<Option<(UserId, String)>> {
    conn.query_opt(
        "UPDATE oidc_codes SET used_at = ?2 WHERE code_hash = ?1 AND used_at IS NULL AND expires_at > ?2
         RETURNING user_id, provider",
        params![hash, now],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// The user linked to (issuer, subject), if any.
pub fn linked_user(conn: &Conn<'_>, issuer: &str, subject: &str) -> Result<Option<UserId>> {
    conn.query_opt(
        "SELECT user_id FROM oidc_identities WHERE issuer = ?1 AND subject = ?2",
        params![issuer, subject],
        |r| r.get(0),
    )
}

/// Whether the user already has an identity at any provider.
pub fn has_identity(conn: &Conn<'_>, user: UserId) -> Result<bool> {
    conn.query_one("SELECT EXISTS (SELECT 1 FROM oidc_identities WHERE user_id = ?1)", params![user], |r| r.get(0))
}

pub fn link(
    conn: &Conn<'_>,
    issuer: &str,
    subject: &str,
    user: UserId,
    email: Option<&str>,
    now: Timestamp,
) -> Result<()> {
    conn.execute(
        "INSERT INTO oidc_identities (issuer, subject, user_id, email, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![issuer, subject, user, email, now],
    )?;
    Ok(())
}

/// Deletes finished or expired sign-ins and codes.
pub fn prune(conn: &Conn<'_>, now: Timestamp) -> Result<usize> {
    let a = conn.execute("DELETE FROM oidc_logins WHERE expires_at < ?1", params![now])?;
    let b = conn.execute("DELETE FROM oidc_codes WHERE expires_at < ?1", params![now])?;
    Ok(a + b)
}
