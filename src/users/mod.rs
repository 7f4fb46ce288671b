//! Users: their rows, creation from a password hash, lookup and listing.
//!
//! This module never hashes a password nor ends a session (`auth::accounts`
//! creates and deactivates accounts with both) and never decides who the
//! caller is; `auth` does.

pub mod storage;

use crate::domain::{Email, Role, Timestamp, UserId};
use crate::error::{Error, Result};
use crate::ledger::grants::{NewGrant, Source};
use crate::logs::{self, NewLog};
use crate::paging::{List, Page};
use crate::storage::Conn;
use crate::storage::Db;
use serde::Serialize;
use serde_json::json;

/// A user as the API shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct User {
    pub id: UserId,
    pub object: &'static str,
    pub email: String,
    pub role: Role,
    pub created_at: Timestamp,
    /// The price group the user's calls are charged at (`[pricing] groups`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_group: Option<String>,
}

/// Creates a user inside the caller's transaction from an already computed
/// password hash. Fails with `email_taken` if the address is in use.
pub fn insert(conn: &Conn<'_>, email: &Email, password_hash: &str, role: Role) -> Result<User> {
    let now = Timestamp::now();
    let id = storage::insert(conn, email, password_hash, role, now)?.ok_or_else(|| Error::Conflict {
        code: "email_taken",
        message: format!("A user with email {email} already exists."),
    })?;
    logs::write(conn, &NewLog::business(id, "user_created", true, json!({ "role": role.as_str() })))?;
    let user = User { id, object: "user", email: email.to_string(), role, created_at: now, price_group: None };
    crate::events::emit(conn, crate::events::EventType::UserCreated, Some(id), &user)?;
    Ok(user)
}

/// Creates a user who signed themselves up (the signup route, or a first
/// sign-in through an identity provider), with the signup bonus grant, in
/// the caller's transaction.
pub fn sign_up(conn: &Conn<'_>, email: &Email, password_hash: &str, cfg: &crate::config::AuthConfig) -> Result<User> {
    let user = insert(conn, email, password_hash, Role::User)?;
    if let Some(amount) = crate::domain::Credits::positive(cfg.signup_bonus_credits) {
        let mut g = NewGrant::promotional(user.id, amount, Source::Signup, "signup bonus");
        let expiry_ms = i64::from(cfg.signup_bonus_expires_days) * 86_400_000;
        g.expires_at = (expiry_ms > 0).then(|| Timestamp::now().plus_ms(expiry_ms));
        crate::ledger::grants::create(conn, &g)?;
    }
    Ok(user)
}

/// An active (not deleted) user.
pub fn get(db: &Db, id: UserId) -> Result<User> {
    db.read(|c| storage::get_active(c, id))?.ok_or_else(|| Error::not_found("user"))
}

pub fn find_by_email(db: &Db, email: &Email) -> Result<Option<User>> {
    Ok(db.read(|c| storage::by_email(c, email).map(|o| o.map(|(u, _)| u)))?)
}

pub fn list(db: &Db, email: Option<&str>, page: &Page) -> Result<List<User>> {
    Ok(db.read(|c| storage::list(c, email, page))?)
}

/// Any user (an admin's view), and when they were deactivated.
pub fn get_any(conn: &Conn<'_>, id: UserId) -> Result<(User, Option<Timestamp>)> {
    storage::get_any(conn, id)?.ok_or_else(|| Error::not_found("user"))
}

/// Lets a deactivated user sign in again (their keys and balance were
/// kept). Reactivating an active user changes nothing.
pub fn reactivate(db: &Db, id: UserId) -> Result<()> {
    db.write(move |c| {
        get_any(c, id)?;
        if storage::reactivate(c, id)? == 1 {
            logs::write(c, &NewLog::business(id, "user_reactivated", true, json!({})))?;
        }
        Ok::<_, Error>(())
    })
}

#[cfg(test)]
mod tests {
    use super::storage;
    use crate::domain::{Email, Role, Timestamp};
    use crate::paging::Page;
    use crate::storage::StorageError;

    #[test]
    fn the_users_table_reads_and_writes_alike_on_both_engines() {
        for (_dir, db) in crate::storage::test_engines() {
            let engine = db.engine();
            let email = |s: &str| Email::parse(s).expect("email");
            let (a, dup) = db
                .write(move |c| {
                    let a = storage::insert(c, &email("Ann_1@example.com"), "h1", Role::Admin, Timestamp(5))?;
                    let dup = storage::insert(c, &email("ann_1@example.com"), "h2", Role::User, Timestamp(6))?;
                    storage::insert(c, &email("annx1@example.com"), "h3", Role::User, Timestamp(7))?;
                    Ok::<_, StorageError>((a.expect("a new user"), dup))
                })
                .expect("insert");
            assert_eq!(dup, None, "{engine:?}: the address is taken");
            let (user, hash) =
                db.read(|c| storage::by_email(c, &email("ann_1@example.com"))).expect("by email").expect("found");
            assert_eq!((user.id, user.role, user.created_at, hash.as_str()), (a, Role::Admin, Timestamp(5), "h1"));
            // `_` is a literal in the filter, not a wildcard.
            let page = Page { limit: 10, starting_after: None };
            let found = db.read(|c| storage::list(c, Some("N_1"), &page)).expect("list");
            assert_eq!(found.data.iter().map(|u| u.id).collect::<Vec<_>>(), vec![a], "{engine:?}");
            assert_eq!(db.read(|c| storage::list(c, None, &page)).expect("list all").data.len(), 2);
            db.write(move |c| storage::deactivate(c, a, Timestamp(9))).expect("deactivate");
            assert!(db.read(|c| storage::get_active(c, a)).expect("get").is_none());
            let (_, deleted) = db.read(|c| storage::get_any(c, a)).expect("get any").expect("still there");
            assert_eq!(deleted, Some(Timestamp(9)));
            assert_eq!(db.write(move |c| storage::reactivate(c, a)).expect("reactivate"), 1);
            assert!(db.read(|c| storage::get_active(c, a)).expect("get").is_some());
        }
    }
}
