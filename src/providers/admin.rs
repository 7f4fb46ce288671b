//! What administrators do to the catalog: channels and their keys, models
//! and their prices. Each change is checked, written with a business log
//! (who, before, after) and a bump of the catalog's version in one
//! transaction; the caller then reloads the snapshot. Keys arrive here
//! already sealed and leave only as a fingerprint and their last four
//! characters. Config-file entries an administrator changes become theirs
//! (`source: api`); they cannot be deleted here (the file would bring them
//! back).

use super::health::KeyStats;
use super::live::{self, ModelSpec, PROVIDER_KINDS, serves_kind};
use super::store::{self, ChannelRow, ChannelSettings, KeyRow, ModelRow, Serves};
use super::{ModelKind, Price};
use crate::config::PriceConfig;
use crate::domain::{Timestamp, UserId};
use crate::error::{Error, Result};
use crate::logs::{self, NewLog};
use crate::storage::Conn;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Channels one catalog may hold.
pub const CHANNELS_MAX: usize = 1_000;
/// Keys one channel may hold.
pub const CHANNEL_KEYS_MAX: usize = 64;
/// Models one channel may serve.
pub const CHANNEL_MODELS_MAX: usize = 256;
/// Models one catalog may hold.
pub const MODELS_MAX: usize = 2_000;
/// Tags one channel may carry.
pub const CHANNEL_TAGS_MAX: usize = 16;
/// A key's length, in bytes.
pub const KEY_BYTES_MAX: usize = 1_024;
/// The largest channel weight.
pub const WEIGHT_MAX: u32 = 10_000;

/// An upstream key as an administrator sees it: never the key itself.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct KeyView {
    pub id: String,
    /// Always `channel_key`.
    pub object: &'static str,
    /// The first 16 hex digits of the key's SHA-256.
    pub fingerprint: String,
    pub last4: String,
    /// `enabled`, `disabled` (by an administrator) or `failed` (the provider
    /// refused it; the probe may enable it again).
    pub status: String,
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<Timestamp>,
    /// The environment variable a config file's key is read from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    pub created_at: Timestamp,
    /// What this instance saw of it since it started.
    pub stats: KeyStats,
}

/// A channel as an administrator sees it.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ChannelView {
    pub id: String,
    /// Always `channel`.
    pub object: &'static str,
    pub name: String,
    /// `openai`, `anthropic`, `google`, `dashscope` or `dev`.
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
    /// `config` (from the config file) or `api`.
    pub source: String,
    pub keys: Vec<KeyView>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A catalog model as an administrator sees it.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ModelView {
    pub name: String,
    /// Always `catalog_model`.
    pub object: &'static str,
    pub kind: String,
    #[serde(flatten)]
    pub spec: ModelSpec,
    pub enabled: bool,
    /// Bumped by every change of its prices or bounds.
    pub revision: i64,
    pub source: String,
    /// The channels that serve it.
    pub channels: Vec<ServedBy>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ServedBy {
    pub channel_id: String,
    pub channel: String,
    pub upstream: String,
    pub priority: i64,
    pub enabled: bool,
}

/// `POST /v1/admin/channels`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewChannel {
    pub name: String,
    pub kind: String,
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub models: Vec<Serves>,
    /// Default 1.
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub priority: i64,
    /// Default true.
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub rpm: Option<u32>,
    #[serde(default)]
    pub tpm: Option<u32>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub settings: Option<ChannelSettings>,
    /// The upstream keys (stored sealed; never shown again).
    #[serde(default)]
    pub keys: Vec<String>,
}

/// `PATCH /v1/admin/channels/{id}`: the fields to change. `rpm` or `tpm`
/// of 0 removes the limit; `base_url` of `""` returns to the kind's default.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelPatch {
    pub name: Option<String>,
    pub base_url: Option<String>,
    pub models: Option<Vec<Serves>>,
    pub weight: Option<u32>,
    pub priority: Option<i64>,
    pub enabled: Option<bool>,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub tags: Option<Vec<String>>,
    pub settings: Option<ChannelSettings>,
}

/// `PATCH /v1/admin/channels/{id}/keys/{key_id}`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyPatch {
    /// A new secret for the same key id (rotation; stored sealed).
    pub key: Option<String>,
    pub enabled: Option<bool>,
}

/// `POST /v1/admin/models`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewModel {
    pub name: String,
    pub kind: String,
    #[serde(default)]
    pub price: PriceConfig,
    #[serde(default)]
    pub provider_cost: Option<PriceConfig>,
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    #[serde(default)]
    pub image_input_tokens_max: Option<u32>,
    #[serde(default)]
    pub context_tokens_max: Option<u32>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// `PATCH /v1/admin/models/{name}`: a new price replaces the whole price.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelPatch {
    pub price: Option<PriceConfig>,
    pub provider_cost: Option<PriceConfig>,
    pub max_output_tokens: Option<u32>,
    pub image_input_tokens_max: Option<u32>,
    pub context_tokens_max: Option<u32>,
    pub enabled: Option<bool>,
}

fn key_view(k: KeyRow, stats: &dyn Fn(&str) -> KeyStats) -> KeyView {
    KeyView {
        stats: stats(&k.id),
        id: k.id,
        object: "channel_key",
        fingerprint: k.fingerprint,
        last4: k.last4,
        status: k.status,
        disabled_reason: k.disabled_reason,
        disabled_at: k.disabled_at,
        env: k.env,
        created_at: k.created_at,
    }
}

fn channel_view(c: ChannelRow, keys: &[KeyRow], stats: &dyn Fn(&str) -> KeyStats) -> ChannelView {
    ChannelView {
        keys: keys.iter().filter(|k| k.channel_id == c.id).map(|k| key_view(k.clone(), stats)).collect(),
        id: c.id,
        object: "channel",
        name: c.name,
        kind: c.kind,
        base_url: c.base_url,
        models: c.models,
        weight: c.weight,
        priority: c.priority,
        enabled: c.enabled,
        rpm: c.rpm,
        tpm: c.tpm,
        tags: c.tags,
        settings: c.settings,
        source: c.source,
        created_at: c.created_at,
        updated_at: c.updated_at,
    }
}

pub fn list_channels(conn: &Conn<'_>, stats: &dyn Fn(&str) -> KeyStats) -> Result<Vec<ChannelView>> {
    let keys = store::keys(conn)?;
    Ok(store::channels(conn)?.into_iter().map(|c| channel_view(c, &keys, stats)).collect())
}

pub fn get_channel(conn: &Conn<'_>, id: &str, stats: &dyn Fn(&str) -> KeyStats) -> Result<ChannelView> {
    let c = store::channel(conn, id)?.ok_or_else(|| Error::not_found("channel"))?;
    Ok(channel_view(c, &store::keys(conn)?, stats))
}

fn no_stats(_: &str) -> KeyStats {
    KeyStats::default()
}

/// The channel as the business log records it (no secrets: keys by
/// fingerprint).
fn logged(conn: &Conn<'_>, id: &str) -> Result<Value> {
    match store::channel(conn, id)? {
        Some(c) => Ok(serde_json::to_value(channel_view(c, &store::keys(conn)?, &no_stats)).unwrap_or(Value::Null)),
        None => Ok(Value::Null),
    }
}

fn business(
    conn: &Conn<'_>,
    who: UserId,
    action: &'static str,
    subject: Value,
    before: Value,
    after: Value,
) -> Result<()> {
    logs::write(
        conn,
        &NewLog::business(who, action, true, json!({"subject": subject, "before": before, "after": after})),
    )?;
    store::bump_version(conn)?;
    Ok(())
}

fn check_name(name: &str, what: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid("name", format!("a {what} name is 1 to 64 of A-Z, a-z, 0-9, -, _, . and :")))
    }
}

fn check_base_url(url: &str) -> Result<()> {
    let parsed = url::Url::parse(url).map_err(|e| Error::invalid("base_url", format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || url.len() > 2048 {
        return Err(Error::invalid("base_url", "base_url must be an http or https URL of at most 2048 bytes"));
    }
    Ok(())
}

/// Checks what a channel would become, against the models it names.
fn check_channel(conn: &Conn<'_>, c: &ChannelRow) -> Result<()> {
    check_name(&c.name, "channel")?;
    if !PROVIDER_KINDS.contains(&c.kind.as_str()) {
        return Err(Error::invalid("kind", format!("kind must be one of {}", PROVIDER_KINDS.join(", "))));
    }
    if let Some(u) = &c.base_url {
        check_base_url(u)?;
    }
    if c.weight > WEIGHT_MAX {
        return Err(Error::invalid("weight", format!("weight is 0 to {WEIGHT_MAX}")));
    }
    if !(-1000..=1000).contains(&c.priority) {
        return Err(Error::invalid("priority", "priority is -1000 to 1000 (lower is tried first)"));
    }
    if c.tags.len() > CHANNEL_TAGS_MAX || c.tags.iter().any(|t| t.is_empty() || t.chars().count() > 32) {
        return Err(Error::invalid("tags", format!("at most {CHANNEL_TAGS_MAX} tags of 1 to 32 characters")));
    }
    if c.models.len() > CHANNEL_MODELS_MAX {
        return Err(Error::invalid("models", format!("a channel serves at most {CHANNEL_MODELS_MAX} models")));
    }
    let s = &c.settings;
    if s.connect_timeout_ms == 0
        || s.connect_timeout_ms > 60_000
        || s.read_timeout_ms == 0
        || s.read_timeout_ms > 3_600_000
    {
        return Err(Error::invalid("settings", "connect_timeout_ms is 1 to 60000, read_timeout_ms 1 to 3600000"));
    }
    for serves in &c.models {
        if serves.upstream().is_empty() || serves.upstream().len() > 256 {
            return Err(Error::invalid("models", "an upstream model name is 1 to 256 bytes"));
        }
        if serves.priority.is_some_and(|p| !(-1000..=1000).contains(&p)) {
            return Err(Error::invalid("models", "a priority is -1000 to 1000"));
        }
        let row = store::model(conn, &serves.model)?.ok_or_else(|| {
            Error::invalid("models", format!("no model {:?}: add it with POST /v1/admin/models first", serves.model))
        })?;
        let kind = ModelKind::parse(&row.kind).unwrap_or(ModelKind::Chat);
        if !serves_kind(kind, &c.kind) {
            return Err(Error::invalid("models", super::catalog::kind_mismatch(&serves.model, kind, &c.kind)));
        }
    }
    Ok(())
}

/// A key's secret, sealed by the caller (off the writer).
#[derive(Debug, Clone)]
pub struct SealedKey {
    pub sealed: String,
    pub fingerprint: String,
    pub last4: String,
}

fn new_key_row(channel: &str, k: &SealedKey, now: Timestamp) -> Result<KeyRow> {
    Ok(KeyRow {
        id: live::new_id("ck_")?,
        channel_id: channel.to_owned(),
        secret: Some(k.sealed.clone()),
        env: None,
        fingerprint: k.fingerprint.clone(),
        last4: k.last4.clone(),
        status: "enabled".into(),
        disabled_reason: None,
        disabled_at: None,
        created_at: now,
    })
}

fn name_taken(name: &str) -> Error {
    Error::Conflict { code: "name_taken", message: format!("{name:?} is already taken: choose another name.") }
}

pub fn create_channel(conn: &Conn<'_>, who: UserId, body: &NewChannel, keys: &[SealedKey]) -> Result<ChannelView> {
    if keys.len() > CHANNEL_KEYS_MAX {
        return Err(Error::invalid("keys", format!("a channel holds at most {CHANNEL_KEYS_MAX} keys")));
    }
    if store::channels(conn)?.len() >= CHANNELS_MAX {
        return Err(Error::invalid("name", format!("at most {CHANNELS_MAX} channels")));
    }
    if store::channel_by_name(conn, &body.name)?.is_some() {
        return Err(name_taken(&body.name));
    }
    let now = Timestamp::now();
    let row = ChannelRow {
        id: live::new_id("ch_")?,
        name: body.name.clone(),
        kind: body.kind.clone(),
        base_url: body.base_url.clone().filter(|u| !u.is_empty()),
        models: body.models.clone(),
        weight: body.weight.unwrap_or(1),
        priority: body.priority,
        enabled: body.enabled.unwrap_or(true),
        rpm: body.rpm.filter(|n| *n > 0),
        tpm: body.tpm.filter(|n| *n > 0),
        tags: body.tags.clone(),
        settings: body.settings.clone().unwrap_or_default(),
        source: "api".into(),
        created_at: now,
        updated_at: now,
    };
    check_channel(conn, &row)?;
    store::put_channel(conn, &row)?;
    for k in keys {
        store::insert_key(conn, &new_key_row(&row.id, k, now)?)?;
    }
    business(conn, who, "channel_created", json!(row.id), Value::Null, logged(conn, &row.id)?)?;
    get_channel(conn, &row.id, &no_stats)
}

pub fn update_channel(conn: &Conn<'_>, who: UserId, id: &str, p: &ChannelPatch) -> Result<ChannelView> {
    let old = store::channel(conn, id)?.ok_or_else(|| Error::not_found("channel"))?;
    let before = logged(conn, id)?;
    let mut c = old.clone();
    if let Some(n) = &p.name {
        if n != &old.name && store::channel_by_name(conn, n)?.is_some() {
            return Err(name_taken(n));
        }
        c.name = n.clone();
    }
    if let Some(u) = &p.base_url {
        c.base_url = Some(u.clone()).filter(|u| !u.is_empty());
    }
    if let Some(m) = &p.models {
        c.models = m.clone();
    }
    c.weight = p.weight.unwrap_or(c.weight);
    c.priority = p.priority.unwrap_or(c.priority);
    c.enabled = p.enabled.unwrap_or(c.enabled);
    if let Some(n) = p.rpm {
        c.rpm = Some(n).filter(|n| *n > 0);
    }
    if let Some(n) = p.tpm {
        c.tpm = Some(n).filter(|n| *n > 0);
    }
    if let Some(t) = &p.tags {
        c.tags = t.clone();
    }
    if let Some(s) = &p.settings {
        c.settings = s.clone();
    }
    c.source = "api".into();
    c.updated_at = Timestamp::now();
    check_channel(conn, &c)?;
    store::put_channel(conn, &c)?;
    business(conn, who, "channel_updated", json!(id), before, logged(conn, id)?)?;
    get_channel(conn, id, &no_stats)
}

fn config_managed(what: &str) -> Error {
    Error::Conflict {
        code: "config_managed",
        message: format!("This {what} comes from the config file: remove it there (or disable it here)."),
    }
}

pub fn delete_channel(conn: &Conn<'_>, who: UserId, id: &str) -> Result<ChannelView> {
    let old = store::channel(conn, id)?.ok_or_else(|| Error::not_found("channel"))?;
    if old.source == "config" {
        return Err(config_managed("channel"));
    }
    let view = get_channel(conn, id, &no_stats)?;
    let before = logged(conn, id)?;
    store::delete_channel(conn, id)?;
    business(conn, who, "channel_deleted", json!(id), before, Value::Null)?;
    Ok(view)
}

pub fn add_key(conn: &Conn<'_>, who: UserId, channel: &str, key: &SealedKey) -> Result<KeyView> {
    let c = store::channel(conn, channel)?.ok_or_else(|| Error::not_found("channel"))?;
    let keys: Vec<KeyRow> = store::keys(conn)?.into_iter().filter(|k| k.channel_id == c.id).collect();
    if keys.len() >= CHANNEL_KEYS_MAX {
        return Err(Error::invalid("key", format!("a channel holds at most {CHANNEL_KEYS_MAX} keys")));
    }
    let before = logged(conn, channel)?;
    let row = new_key_row(channel, key, Timestamp::now())?;
    store::insert_key(conn, &row)?;
    business(
        conn,
        who,
        "channel_key_added",
        json!({"channel": channel, "key": row.id}),
        before,
        logged(conn, channel)?,
    )?;
    Ok(key_view(row, &no_stats))
}

pub fn update_key(
    conn: &Conn<'_>,
    who: UserId,
    channel: &str,
    key: &str,
    enabled: Option<bool>,
    secret: Option<&SealedKey>,
) -> Result<KeyView> {
    let mut row =
        store::key(conn, key)?.filter(|k| k.channel_id == channel).ok_or_else(|| Error::not_found("channel key"))?;
    let before = logged(conn, channel)?;
    if let Some(s) = secret {
        if row.env.is_some() {
            return Err(config_managed("key"));
        }
        row.secret = Some(s.sealed.clone());
        row.fingerprint = s.fingerprint.clone();
        row.last4 = s.last4.clone();
        // A new secret starts healthy.
        if row.status == "failed" {
            row.set_status("enabled", None);
        }
    }
    match enabled {
        Some(true) => row.set_status("enabled", None),
        Some(false) => row.set_status("disabled", Some("disabled by an administrator".into())),
        None => {}
    }
    store::update_key(conn, &row)?;
    business(
        conn,
        who,
        "channel_key_updated",
        json!({"channel": channel, "key": key}),
        before,
        logged(conn, channel)?,
    )?;
    Ok(key_view(row, &no_stats))
}

pub fn delete_key(conn: &Conn<'_>, who: UserId, channel: &str, key: &str) -> Result<KeyView> {
    let row =
        store::key(conn, key)?.filter(|k| k.channel_id == channel).ok_or_else(|| Error::not_found("channel key"))?;
    if row.env.is_some() {
        return Err(config_managed("key"));
    }
    let before = logged(conn, channel)?;
    store::delete_key(conn, key)?;
    business(
        conn,
        who,
        "channel_key_deleted",
        json!({"channel": channel, "key": key}),
        before,
        logged(conn, channel)?,
    )?;
    Ok(key_view(row, &no_stats))
}

// --- models ---

fn spec_of(row: &ModelRow) -> ModelSpec {
    serde_json::from_str(&row.spec).unwrap_or_default()
}

fn model_view(row: ModelRow, channels: &[ChannelRow]) -> ModelView {
    let served = channels
        .iter()
        .flat_map(|c| {
            c.models.iter().filter(|s| s.model == row.name).map(|s| ServedBy {
                channel_id: c.id.clone(),
                channel: c.name.clone(),
                upstream: s.upstream().to_owned(),
                priority: s.priority.unwrap_or(c.priority),
                enabled: c.enabled,
            })
        })
        .collect();
    ModelView {
        spec: spec_of(&row),
        name: row.name,
        object: "catalog_model",
        kind: row.kind,
        enabled: row.enabled,
        revision: row.revision,
        source: row.source,
        channels: served,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

pub fn list_models(conn: &Conn<'_>) -> Result<Vec<ModelView>> {
    let channels = store::channels(conn)?;
    Ok(store::models(conn)?.into_iter().map(|m| model_view(m, &channels)).collect())
}

pub fn get_model(conn: &Conn<'_>, name: &str) -> Result<ModelView> {
    let row = store::model(conn, name)?.ok_or_else(|| Error::not_found("model"))?;
    Ok(model_view(row, &store::channels(conn)?))
}

fn logged_model(conn: &Conn<'_>, name: &str) -> Result<Value> {
    match store::model(conn, name)? {
        Some(r) => Ok(serde_json::to_value(model_view(r, &[])).unwrap_or(Value::Null)),
        None => Ok(Value::Null),
    }
}

fn check_spec(spec: &ModelSpec) -> Result<()> {
    Price::try_from(&spec.price).map_err(|e| Error::invalid("price", e))?;
    if let Some(c) = &spec.provider_cost {
        Price::try_from(c).map_err(|e| Error::invalid("provider_cost", e))?;
    }
    let negative = |p: &PriceConfig| {
        [
            p.input_per_1m,
            p.output_per_1m,
            p.per_request,
            p.per_image,
            p.per_video_second,
            p.per_1m_characters,
            p.per_audio_second,
        ]
        .iter()
        .any(|n| *n < 0)
    };
    if negative(&spec.price) {
        return Err(Error::invalid("price", "a price is never negative"));
    }
    Ok(())
}

fn spec_json(spec: &ModelSpec) -> Result<String> {
    serde_json::to_string(spec).map_err(|e| Error::Internal(e.to_string()))
}

pub fn create_model(conn: &Conn<'_>, who: UserId, body: &NewModel) -> Result<ModelView> {
    check_name(&body.name, "model")?;
    if ModelKind::parse(&body.kind).is_none() {
        return Err(Error::invalid(
            "kind",
            "kind must be chat, image, video, embedding, speech, transcription or moderation",
        ));
    }
    if store::model(conn, &body.name)?.is_some() {
        return Err(name_taken(&body.name));
    }
    if store::models(conn)?.len() >= MODELS_MAX {
        return Err(Error::invalid("name", format!("at most {MODELS_MAX} models")));
    }
    let spec = ModelSpec {
        price: body.price.clone(),
        provider_cost: body.provider_cost.clone(),
        max_output_tokens: body.max_output_tokens,
        image_input_tokens_max: body.image_input_tokens_max,
        context_tokens_max: body.context_tokens_max,
        dev: false,
    };
    check_spec(&spec)?;
    let now = Timestamp::now();
    store::put_model(
        conn,
        &ModelRow {
            name: body.name.clone(),
            kind: body.kind.clone(),
            spec: spec_json(&spec)?,
            enabled: body.enabled.unwrap_or(true),
            revision: 1,
            source: "api".into(),
            created_at: now,
            updated_at: now,
        },
    )?;
    business(conn, who, "model_created", json!(body.name), Value::Null, logged_model(conn, &body.name)?)?;
    get_model(conn, &body.name)
}

pub fn update_model(conn: &Conn<'_>, who: UserId, name: &str, p: &ModelPatch) -> Result<ModelView> {
    let mut row = store::model(conn, name)?.ok_or_else(|| Error::not_found("model"))?;
    let before = logged_model(conn, name)?;
    let mut spec = spec_of(&row);
    if let Some(price) = &p.price {
        spec.price = price.clone();
    }
    if let Some(c) = &p.provider_cost {
        spec.provider_cost = Some(c.clone());
    }
    spec.max_output_tokens = p.max_output_tokens.or(spec.max_output_tokens);
    spec.image_input_tokens_max = p.image_input_tokens_max.or(spec.image_input_tokens_max);
    spec.context_tokens_max = p.context_tokens_max.or(spec.context_tokens_max);
    check_spec(&spec)?;
    let text = spec_json(&spec)?;
    if text != row.spec {
        row.revision += 1;
        row.spec = text;
    }
    row.enabled = p.enabled.unwrap_or(row.enabled);
    row.source = "api".into();
    row.updated_at = Timestamp::now();
    store::put_model(conn, &row)?;
    business(conn, who, "model_updated", json!(name), before, logged_model(conn, name)?)?;
    get_model(conn, name)
}

pub fn delete_model(conn: &Conn<'_>, who: UserId, name: &str) -> Result<ModelView> {
    let row = store::model(conn, name)?.ok_or_else(|| Error::not_found("model"))?;
    if row.source == "config" {
        return Err(config_managed("model"));
    }
    let view = get_model(conn, name)?;
    let before = logged_model(conn, name)?;
    store::delete_model(conn, name)?;
    business(conn, who, "model_deleted", json!(name), before, Value::Null)?;
    Ok(view)
}
