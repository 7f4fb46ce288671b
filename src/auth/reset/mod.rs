//! Passwords that can be changed and reset.
//!
//! A reset request answers the same (202) whether or not the address has an
//! account, and in the same time: the handler only queues the address, and
//! one background thread ([`Requests`]) looks it up and, for a real account,
//! issues a one-time token (stored as its SHA-256, valid
//! `auth.password_reset_ttl_s`) and emits `user.password_reset_requested`
//! with it, in one transaction, for the product to e-mail. Confirming sets
//! the password, uses up every token of the account and ends every session.
//! This module never sends mail and never decides who may ask (the guard's
//! per-IP rate does).

pub mod storage;

use super::sessions::{self, Ended};
use crate::config::AuthConfig;
use crate::domain::{Email, Timestamp, UserId};
use crate::error::account::Refusal;
use crate::error::{Error, Result};
use crate::events::{self, EventType};
use crate::logs::{self, NewLog};
use crate::storage::Conn;
use crate::storage::Db;
use crate::support::token;
use serde::Serialize;
use serde_json::json;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

pub const RESET_TOKEN_PREFIX: &str = "tgp_";
/// Reset requests waiting for the background thread; past it, 503.
pub const RESET_QUEUE_MAX: usize = 1_024;
const HOUR_MS: i64 = 3_600_000;

/// A reset token just issued (the only time it exists in clear, apart from
/// the event that carries it to the product's mailer).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ResetToken {
    pub object: &'static str,
    pub user_id: UserId,
    pub email: String,
    pub token: String,
    pub expires_at: Timestamp,
}

/// Issues a token for an active user inside the caller's transaction;
/// `None` past `password_resets_per_account_per_hour` when `limited`.
pub fn issue(conn: &Conn<'_>, user: UserId, cfg: &AuthConfig, limited: bool) -> Result<Option<ResetToken>> {
    let now = Timestamp::now();
    let Some((email, _)) = storage::password_hash(conn, user)? else {
        return Err(Error::not_found("user"));
    };
    if limited && storage::issued_since(conn, user, now.plus_ms(-HOUR_MS))? >= cfg.password_resets_per_account_per_hour
    {
        return Ok(None);
    }
    let (token, hash) = token::opaque_token(RESET_TOKEN_PREFIX)?;
    let ttl_ms = i64::try_from(cfg.password_reset_ttl_s.saturating_mul(1000)).unwrap_or(i64::MAX);
    let expires_at = now.plus_ms(ttl_ms);
    storage::insert(conn, user, &hash, now, expires_at)?;
    Ok(Some(ResetToken { object: "password_reset", user_id: user, email, token, expires_at }))
}

/// A reset asked for by e-mail: for a real account, a token and the event.
fn requested(conn: &Conn<'_>, email: &Email, cfg: &AuthConfig) -> Result<()> {
    let Some((user, _)) = crate::users::storage::by_email(conn, email)? else {
        return Ok(());
    };
    match issue(conn, user.id, cfg, true)? {
        Some(token) => {
            events::emit(conn, EventType::PasswordResetRequested, Some(user.id), &token)?;
            logs::write(conn, &NewLog::business(user.id, "password_reset_requested", true, json!({})))?;
        }
        None => {
            let why = json!({ "reason": "too_many_resets" });
            logs::write(conn, &NewLog::business(user.id, "password_reset_requested", false, why))?;
        }
    }
    Ok(())
}

/// The queue in front of the background thread.
pub struct Requests {
    queue: SyncSender<Email>,
}

impl Requests {
    /// Starts the thread; it ends when the `Requests` is dropped.
    pub fn start(db: Db, cfg: AuthConfig) -> Result<Requests> {
        let (queue, rx) = sync_channel(RESET_QUEUE_MAX);
        std::thread::Builder::new()
            .name("password-resets".into())
            .spawn(move || serve(&db, &cfg, &rx))
            .map_err(|e| Error::Internal(format!("cannot start the password reset thread: {e}")))?;
        Ok(Requests { queue })
    }

    /// Queues a request; `Busy` when the queue is full (whatever the address).
    pub fn submit(&self, email: Email) -> Result<()> {
        self.queue.try_send(email).map_err(|e| match e {
            TrySendError::Full(_) | TrySendError::Disconnected(_) => {
                Error::Busy("Too many password resets are being handled. Retry in a moment.")
            }
        })
    }
}

fn serve(db: &Db, cfg: &AuthConfig, rx: &Receiver<Email>) {
    while let Ok(email) = rx.recv() {
        let cfg = cfg.clone();
        if let Err(e) = db.write(move |c| requested(c, &email, &cfg)) {
            log::error!("a password reset request failed: {e}");
        }
    }
}

/// Why `presented` cannot reset a password now, if it cannot.
fn refusal(found: Option<(i64, UserId, Timestamp, bool)>, now: Timestamp) -> Option<Refusal> {
    match found {
        None | Some((_, _, _, true)) => Some(Refusal::InvalidResetToken),
        Some((_, _, expires_at, _)) if expires_at <= now => Some(Refusal::ResetTokenExpired),
        Some(_) => None,
    }
}

/// A cheap look at a token before the new password is hashed (argon2
/// is not spent on a token that cannot work); [`confirm`] checks again.
pub fn precheck(db: &Db, presented: &str) -> Result<std::result::Result<(), Refusal>> {
    let found = db.read(|c| Ok::<_, Error>(storage::find(c, &token::hash(presented))?))?;
    Ok(refusal(found, Timestamp::now()).map_or(Ok(()), Err))
}

/// Sets a new password with `presented` inside the caller's transaction
/// (`new_hash`: the new password's argon2 hash, made before). A refusal
/// changes nothing.
pub fn confirm(conn: &Conn<'_>, presented: &str, new_hash: &str) -> Result<std::result::Result<UserId, Refusal>> {
    let now = Timestamp::now();
    let found = storage::find(conn, &token::hash(presented))?;
    if let Some(r) = refusal(found, now) {
        return Ok(Err(r));
    }
    let Some((_, user, _, _)) = found else {
        return Ok(Err(Refusal::InvalidResetToken));
    };
    storage::set_password(conn, user, new_hash)?;
    storage::use_all(conn, user, now)?;
    let ended = sessions::end_all(conn, user, None, Ended::PasswordReset)?;
    logs::write(conn, &NewLog::business(user, "password_reset", true, json!({ "sessions_ended": ended })))?;
    Ok(Ok(user))
}

/// Changes a password the caller proved they know, ending their other
/// sessions (`keep`: the caller's own, if it came through one).
pub fn change(conn: &Conn<'_>, user: UserId, new_hash: &str, keep: Option<i64>) -> Result<usize> {
    storage::set_password(conn, user, new_hash)?;
    storage::use_all(conn, user, Timestamp::now())?;
    let ended = sessions::end_all(conn, user, keep, Ended::PasswordChanged)?;
    logs::write(conn, &NewLog::business(user, "password_changed", true, json!({ "sessions_ended": ended })))?;
    Ok(ended)
}

/// The email and password hash of an active user (to check a current password).
pub fn current(db: &Db, user: UserId) -> Result<(String, String)> {
    db.read(|c| Ok::<_, Error>(storage::password_hash(c, user)?))?.ok_or_else(|| Error::not_found("user"))
}

pub fn prune(conn: &Conn<'_>) -> Result<usize> {
    Ok(storage::prune(conn, Timestamp::now().plus_ms(-sessions::ENDED_SESSIONS_KEPT_MS))?)
}
