//! SQL for `channels`, `channel_keys`, `catalog_models` and the catalog's
//! version: rows in, rows out. It never decides what a row means (the
//! catalog does) and never sees a key in clear (secrets arrive sealed).

use crate::domain::Timestamp;
use crate::error::Result;
use crate::storage::{Conn, Row, StorageError};
use rusqlite::params;
use serde::{Deserialize, Serialize};

const VERSION_KEY: &str = "catalog_version";

/// A model a channel serves, under the name its provider knows it by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Serves {
    /// The public model name.
    pub model: String,
    /// The provider's name for it (default: the public name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Overrides the channel's priority for this model (a config file's
    /// routes are tried in order: their priorities are 0, 1, 2...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
}

impl Serves {
    pub fn upstream(&self) -> &str {
        self.upstream.as_deref().unwrap_or(&self.model)
    }
}

/// A channel's timeouts and breaker thresholds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelSettings {
    pub connect_timeout_ms: u64,
    pub read_timeout_ms: u64,
    /// Failures of one key (for one model) within `breaker_window_ms`, at
    /// least half of its calls, from `breaker_callers` distinct callers,
    /// that cool it down.
    pub breaker_failures: u32,
    /// How long a cooled-down key is passed over.
    pub breaker_cool_down_ms: u64,
    pub breaker_callers: u32,
    pub breaker_window_ms: u64,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        ChannelSettings {
            connect_timeout_ms: 5_000,
            read_timeout_ms: 120_000,
            breaker_failures: 3,
            breaker_cool_down_ms: 30_000,
            breaker_callers: 2,
            breaker_window_ms: 60_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ChannelRow {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub base_url: Option<String>,
    pub models: Vec<Serves>,
    pub weight: u32,
    pub priority: i64,
    pub enabled: bool,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub tags: Vec<String>,
    pub settings: ChannelSettings,
    /// `config` or `api`.
    pub source: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone)]
pub struct KeyRow {
    pub id: String,
    pub channel_id: String,
    /// Sealed (`sealed:v1:...`); none for a key read from the environment.
    pub secret: Option<String>,
    /// The environment variable a config file's key is read from.
    pub env: Option<String>,
    pub fingerprint: String,
    pub last4: String,
    /// `enabled`, `disabled` (by an administrator) or `failed` (by health).
    pub status: String,
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

impl KeyRow {
    /// A new status: `enabled` clears the reason and time; any other
    /// keeps `reason`, stamped now.
    pub fn set_status(&mut self, status: &str, reason: Option<String>) {
        self.status = status.to_owned();
        let enabled = status == "enabled";
        self.disabled_reason = if enabled { None } else { reason };
        self.disabled_at = if enabled { None } else { Some(Timestamp::now()) };
    }
}

#[derive(Debug, Clone)]
pub struct ModelRow {
    pub name: String,
    pub kind: String,
    /// JSON of `ModelSpec`.
    pub spec: String,
    pub enabled: bool,
    pub revision: i64,
    pub source: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

fn json<T: serde::de::DeserializeOwned + Default>(text: &str) -> T {
    serde_json::from_str(text).unwrap_or_default()
}

fn to_json(v: &impl Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

const CHANNEL_COLUMNS: &str = "id, name, kind, base_url, models, weight, priority, enabled, rpm, tpm, tags, settings, source, created_at, updated_at";

fn channel_row(r: &Row<'_>) -> std::result::Result<ChannelRow, StorageError> {
    let (models, tags, settings): (String, String, String) = (r.get(4)?, r.get(10)?, r.get(11)?);
    let opt_u32 = |v: Option<i64>| v.map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    Ok(ChannelRow {
        id: r.get(0)?,
        name: r.get(1)?,
        kind: r.get(2)?,
        base_url: r.get(3)?,
        models: json(&models),
        weight: u32::try_from(r.get::<i64>(5)?).unwrap_or(0),
        priority: r.get(6)?,
        enabled: r.get::<i64>(7)? != 0,
        rpm: opt_u32(r.get(8)?),
        tpm: opt_u32(r.get(9)?),
        tags: json(&tags),
        settings: json(&settings),
        source: r.get(12)?,
        created_at: r.get(13)?,
        updated_at: r.get(14)?,
    })
}

const KEY_COLUMNS: &str =
    "id, channel_id, secret, env, fingerprint, last4, status, disabled_reason, disabled_at, created_at";

fn key_row(r: &Row<'_>) -> std::result::Result<KeyRow, StorageError> {
    Ok(KeyRow {
        id: r.get(0)?,
        channel_id: r.get(1)?,
        secret: r.get(2)?,
        env: r.get(3)?,
        fingerprint: r.get(4)?,
        last4: r.get(5)?,
        status: r.get(6)?,
        disabled_reason: r.get(7)?,
        disabled_at: r.get(8)?,
        created_at: r.get(9)?,
    })
}

const MODEL_COLUMNS: &str = "name, kind, spec, enabled, revision, source, created_at, updated_at";

fn model_row(r: &Row<'_>) -> std::result::Result<ModelRow, StorageError> {
    Ok(ModelRow {
        name: r.get(0)?,
        kind: r.get(1)?,
        spec: r.get(2)?,
        enabled: r.get::<i64>(3)? != 0,
        revision: r.get(4)?,
        source: r.get(5)?,
        created_at: r.get(6)?,
        updated_at: r.get(7)?,
    })
}

pub fn channels(conn: &Conn<'_>) -> Result<Vec<ChannelRow>> {
    Ok(conn.query_all(&format!("SELECT {CHANNEL_COLUMNS} FROM channels ORDER BY created_at, id"), &[], channel_row)?)
}

pub fn channel(conn: &Conn<'_>, id: &str) -> Result<Option<ChannelRow>> {
    Ok(conn.query_opt(&format!("SELECT {CHANNEL_COLUMNS} FROM channels WHERE id = ?1"), params![id], channel_row)?)
}

pub fn channel_by_name(conn: &Conn<'_>, name: &str) -> Result<Option<ChannelRow>> {
    Ok(conn.query_opt(
        &format!("SELECT {CHANNEL_COLUMNS} FROM channels WHERE name = ?1"),
        params![name],
        channel_row,
    )?)
}

/// Inserts `c`, or replaces every field of the row with its id.
pub fn put_channel(conn: &Conn<'_>, c: &ChannelRow) -> Result<()> {
    conn.execute(
        "INSERT INTO channels (id, name, kind, base_url, models, weight, priority, enabled, rpm, tpm, tags, settings, source,
                               created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind, base_url = excluded.base_url,
             models = excluded.models, weight = excluded.weight, priority = excluded.priority, enabled = excluded.enabled,
             rpm = excluded.rpm, tpm = excluded.tpm, tags = excluded.tags, settings = excluded.settings,
             source = excluded.source, updated_at = excluded.updated_at",
        params![
            c.id,
            c.name,
            c.kind,
            c.base_url,
            to_json(&c.models),
            i64::from(c.weight),
            c.priority,
            i64::from(c.enabled),
            c.rpm.map(i64::from),
            c.tpm.map(i64::from),
            to_json(&c.tags),
            to_json(&c.settings),
            c.source,
            c.created_at,
            c.updated_at
        ],
    )?;
    Ok(())
}

pub fn delete_channel(conn: &Conn<'_>, id: &str) -> Result<bool> {
    conn.execute("DELETE FROM channel_keys WHERE channel_id = ?1", params![id])?;
    Ok(conn.execute("DELETE FROM channels WHERE id = ?1", params![id])? > 0)
}

pub fn keys(conn: &Conn<'_>) -> Result<Vec<KeyRow>> {
    Ok(conn.query_all(&format!("SELECT {KEY_COLUMNS} FROM channel_keys ORDER BY created_at, id"), &[], key_row)?)
}

pub fn key(conn: &Conn<'_>, id: &str) -> Result<Option<KeyRow>> {
    Ok(conn.query_opt(&format!("SELECT {KEY_COLUMNS} FROM channel_keys WHERE id = ?1"), params![id], key_row)?)
}

pub fn insert_key(conn: &Conn<'_>, k: &KeyRow) -> Result<()> {
    conn.execute(
        &format!("INSERT INTO channel_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
        params![
            k.id,
            k.channel_id,
            k.secret,
            k.env,
            k.fingerprint,
            k.last4,
            k.status,
            k.disabled_reason,
            k.disabled_at,
            k.created_at
        ],
    )?;
    Ok(())
}

/// A key's new secret (rotated: same id, new fingerprint) or new status.
pub fn update_key(conn: &Conn<'_>, k: &KeyRow) -> Result<bool> {
    Ok(conn.execute(
        "UPDATE channel_keys SET secret = ?2, env = ?3, fingerprint = ?4, last4 = ?5, status = ?6, disabled_reason = ?7,
                                 disabled_at = ?8 WHERE id = ?1",
        params![k.id, k.secret, k.env, k.fingerprint, k.last4, k.status, k.disabled_reason, k.disabled_at],
    )? > 0)
}

pub fn delete_key(conn: &Conn<'_>, id: &str) -> Result<bool> {
    Ok(conn.execute("DELETE FROM channel_keys WHERE id = ?1", params![id])? > 0)
}

/// Every sealed key secret, by key id (for the start's check and rotation).
pub fn stored_secrets(conn: &Conn<'_>) -> Result<Vec<(String, String)>> {
    Ok(conn.query_all("SELECT id, secret FROM channel_keys WHERE secret IS NOT NULL ORDER BY id", &[], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?)
}

pub fn set_secret(conn: &Conn<'_>, id: &str, stored: &str) -> Result<()> {
    conn.execute("UPDATE channel_keys SET secret = ?2 WHERE id = ?1", params![id, stored])?;
    Ok(())
}

pub fn models(conn: &Conn<'_>) -> Result<Vec<ModelRow>> {
    Ok(conn.query_all(
        &format!("SELECT {MODEL_COLUMNS} FROM catalog_models ORDER BY created_at, name"),
        &[],
        model_row,
    )?)
}

pub fn model(conn: &Conn<'_>, name: &str) -> Result<Option<ModelRow>> {
    Ok(conn.query_opt(
        &format!("SELECT {MODEL_COLUMNS} FROM catalog_models WHERE name = ?1"),
        params![name],
        model_row,
    )?)
}

pub fn put_model(conn: &Conn<'_>, m: &ModelRow) -> Result<()> {
    conn.execute(
        &format!(
            "INSERT INTO catalog_models ({MODEL_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, spec = excluded.spec, enabled = excluded.enabled,
                 revision = excluded.revision, source = excluded.source, updated_at = excluded.updated_at"
        ),
        params![m.name, m.kind, m.spec, i64::from(m.enabled), m.revision, m.source, m.created_at, m.updated_at],
    )?;
    Ok(())
}

pub fn delete_model(conn: &Conn<'_>, name: &str) -> Result<bool> {
    Ok(conn.execute("DELETE FROM catalog_models WHERE name = ?1", params![name])? > 0)
}

/// The catalog's version: bumped in the transaction of every change, read
/// by every instance to notice another's changes.
pub fn version(conn: &Conn<'_>) -> Result<i64> {
    let v: Option<String> =
        conn.query_opt("SELECT value FROM settings WHERE key = ?1", params![VERSION_KEY], |r| r.get(0))?;
    Ok(v.and_then(|s| s.parse().ok()).unwrap_or(0))
}

pub fn bump_version(conn: &Conn<'_>) -> Result<i64> {
    let next = version(conn)? + 1;
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![VERSION_KEY, next.to_string()],
    )?;
    Ok(next)
}
