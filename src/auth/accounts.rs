//! Accounts as a whole: creating one from a password (hashed here, before
//! anything reaches the writer thread: argon2 takes tens of milliseconds and
//! must never run inside a transaction) and deactivating one (its sessions
//! end in the same transaction). Never reads a credential; `auth` does.

use super::{password, sessions};
use crate::domain::{Email, Password, Role, Timestamp, UserId};
use crate::error::{Error, Result};
use crate::logs::{self, NewLog};
use crate::storage::Db;
use crate::users::{self, User};
use serde_json::json;

/// Hashes the password, then creates the user in its own transaction.
pub fn create(db: &Db, email: Email, password: &Password, role: Role) -> Result<User> {
    let hash = password::hash(password)?;
    db.write(move |c| users::insert(c, &email, &hash, role))
}

/// Deactivates a user: their tokens and API keys stop working at once, and
/// their sessions end (a reactivation does not bring them back). Their
/// ledger rows stay (the ledger is append-only).
pub fn deactivate(db: &Db, id: UserId) -> Result<()> {
    let done = db.write(move |c| {
        let n = users::storage::deactivate(c, id, Timestamp::now())?;
        if n == 1 {
            sessions::end_all(c, id, None, sessions::Ended::UserDeactivated)?;
            logs::write(c, &NewLog::business(id, "user_deactivated", true, json!({})))?;
        }
        Ok::<_, Error>(n)
    })?;
    if done == 0 {
        return Err(Error::not_found("user"));
    }
    Ok(())
}
