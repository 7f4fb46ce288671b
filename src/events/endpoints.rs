//! Webhook endpoints: from the config file (`[[webhooks]]`, secret in an
//! environment variable, synced into the table at start) or added by an
//! admin through the API (secret generated, shown once, stored so the
//! sender can sign). URLs are checked by `url_guard` before they get here:
//! nothing in this module resolves a name inside the writer.

use super::signing::Secret;
use super::storage::{self, EndpointRow, NewEndpoint};
use crate::config::WebhookConfig;
use crate::domain::{EndpointId, Timestamp};
use crate::error::{Error, Result};
use crate::paging::{List, Page};
use crate::storage::Conn;
use crate::storage::Db;
use crate::support::sealed::{self, SealKey, is_sealed, reveal};
use serde::Serialize;
use std::collections::HashMap;

/// A description's length, in characters.
pub const DESCRIPTION_CHARS_MAX: usize = 200;

/// An endpoint on the wire (never its secret).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Endpoint {
    pub id: EndpointId,
    /// Always `webhook_endpoint`.
    pub object: &'static str,
    pub url: String,
    /// Event types sent to it; empty = every type.
    pub events: Vec<String>,
    pub description: String,
    /// `config` (from the config file; change it there) or `api`.
    pub source: &'static str,
    pub created_at: Timestamp,
}

impl From<EndpointRow> for Endpoint {
    fn from(r: EndpointRow) -> Endpoint {
        Endpoint {
            id: r.id,
            object: "webhook_endpoint",
            url: r.url,
            events: r.events,
            description: r.description,
            source: if r.config_key.is_some() { "config" } else { "api" },
            created_at: r.created_at,
        }
    }
}

/// A new endpoint with its signing secret, shown only in this answer.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct CreatedEndpoint {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// `whsec_...`: verify signatures with it. Shown only once.
    pub secret: String,
}

/// Whether `row` wants events of `etype`.
pub fn wants(row: &EndpointRow, etype: &str) -> bool {
    row.events.is_empty() || row.events.iter().any(|t| t == etype)
}

/// Adds an endpoint (URL already checked) with a fresh secret, stored
/// sealed when there is a sealing key.
pub fn create(
    conn: &Conn<'_>,
    url: &str,
    events: &[String],
    description: &str,
    key: Option<&SealKey>,
) -> Result<CreatedEndpoint> {
    crate::domain::check_event_types(events).map_err(|m| Error::invalid("events", m))?;
    if description.chars().count() > DESCRIPTION_CHARS_MAX {
        return Err(Error::invalid("description", format!("at most {DESCRIPTION_CHARS_MAX} characters")));
    }
    let (text, _) = Secret::generate()?;
    let stored = match key {
        Some(k) => k.seal(&text).map_err(Error::Internal)?,
        None => text.clone(),
    };
    let new = NewEndpoint { url, secret: Some(&stored), events, description, config_key: None };
    let id = storage::insert_endpoint(conn, &new, Timestamp::now())?;
    let row = storage::endpoint(conn, id)?.ok_or_else(|| Error::Internal("endpoint vanished".into()))?;
    Ok(CreatedEndpoint { endpoint: row.into(), secret: text })
}

pub fn list(db: &Db, page: &Page) -> Result<List<Endpoint>> {
    db.read(|c| {
        let rows = storage::list_endpoints(c, page)?;
        Ok(List { object: "list", data: rows.data.into_iter().map(Endpoint::from).collect(), has_more: rows.has_more })
    })
}

/// Deletes an API endpoint; its pending deliveries end as failed.
pub fn delete(conn: &Conn<'_>, id: EndpointId) -> Result<Endpoint> {
    let row = storage::endpoint(conn, id)?
        .filter(|r| r.deleted_at.is_none())
        .ok_or_else(|| Error::not_found("webhook endpoint"))?;
    if row.config_key.is_some() {
        return Err(Error::Conflict {
            code: "webhook_from_config",
            message: "This endpoint comes from the config file; remove it there and restart.".into(),
        });
    }
    storage::delete_endpoint(conn, id, Timestamp::now())?;
    Ok(row.into())
}

/// Brings the config file's endpoints into the table (the URL is each one's
/// key) and deletes the ones no longer there. Returns their secrets, read
/// from the environment: a missing or malformed one stops the start.
pub fn sync_config(
    db: &Db,
    hooks: &[WebhookConfig],
    allow_private: bool,
    env: impl Fn(&str) -> Option<String>,
) -> std::result::Result<HashMap<EndpointId, Secret>, String> {
    let mut secrets = Vec::new();
    for h in hooks {
        let raw = env(&h.secret_env)
            .ok_or_else(|| format!("webhook {}: the environment variable {} is not set", h.url, h.secret_env))?;
        let secret = Secret::parse(raw.trim()).map_err(|e| format!("webhook {}: {}: {e}", h.url, h.secret_env))?;
        super::url_guard::check(&h.url, allow_private).map_err(|e| format!("webhook {}: {e}", h.url))?;
        secrets.push(secret);
    }
    let hooks: Vec<(WebhookConfig, Vec<String>)> = hooks.iter().map(|h| (h.clone(), h.event_names())).collect();
    let ids = db
        .write(move |c| {
            let now = Timestamp::now();
            let mut ids = Vec::new();
            for (h, events) in &hooks {
                let new = NewEndpoint {
                    url: &h.url,
                    secret: None,
                    events,
                    description: &h.description,
                    config_key: Some(&h.url),
                };
                ids.push(storage::upsert_config_endpoint(c, &new, now)?);
            }
            storage::delete_config_endpoints_except(c, &ids, now)?;
            Ok::<_, Error>(ids)
        })
        .map_err(|e| format!("cannot record the configured webhooks: {e}"))?;
    Ok(ids.into_iter().zip(secrets).collect())
}

fn read_secrets(db: &Db) -> std::result::Result<Vec<(EndpointId, String)>, String> {
    db.read(storage::stored_secrets).map_err(|e: Error| e.to_string())
}

/// At start: every stored secret must open with `key` (a sealed one with
/// no key, or the wrong key, refuses the start), and with a key, secrets
/// stored in clear (before it was set) are sealed. Returns how many were.
pub fn seal_stored(db: &Db, key: Option<&SealKey>) -> std::result::Result<usize, String> {
    let stored = read_secrets(db)?;
    for (id, value) in &stored {
        reveal(key, value).map_err(|e| {
            format!("webhook endpoint {id}: its stored signing secret cannot be read: {e}. Start with the TOLLGATE_SECRET_KEY that sealed it.")
        })?;
    }
    let Some(key) = key else { return Ok(0) };
    reseal(db, &stored, None, key)
}

/// Rotation: every stored secret opened with `old` (or read in clear) and
/// sealed again with `new`, ready for [`write_sealed`] in the caller's one
/// transaction (with the other secrets rotated beside them).
pub fn resealed(
    db: &Db,
    old: Option<&SealKey>,
    new: &SealKey,
) -> std::result::Result<Vec<(EndpointId, String)>, String> {
    sealed_again(&read_secrets(db)?, old, new)
}

/// `stored` sealed with `new`: those in clear, and, given `old`, the
/// sealed ones too.
fn sealed_again(
    stored: &[(EndpointId, String)],
    old: Option<&SealKey>,
    new: &SealKey,
) -> std::result::Result<Vec<(EndpointId, String)>, String> {
    let mut sealed = Vec::new();
    for (id, value) in stored {
        if is_sealed(value) && old.is_none() {
            continue;
        }
        sealed.push((*id, sealed::reseal(old, new, value).map_err(|e| format!("webhook endpoint {id}: {e}"))?));
    }
    Ok(sealed)
}

pub fn write_sealed(c: &Conn<'_>, sealed: &[(EndpointId, String)]) -> Result<()> {
    for (id, value) in sealed {
        storage::set_secret(c, *id, value)?;
    }
    Ok(())
}

/// Seals `stored` with `new` in one write.
fn reseal(
    db: &Db,
    stored: &[(EndpointId, String)],
    old: Option<&SealKey>,
    new: &SealKey,
) -> std::result::Result<usize, String> {
    let sealed = sealed_again(stored, old, new)?;
    let n = sealed.len();
    if n > 0 {
        db.write(move |c| write_sealed(c, &sealed)).map_err(|e| e.to_string())?;
    }
    Ok(n)
}
