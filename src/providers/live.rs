//! The catalog in force: channels (a provider kind, a base URL, its keys,
//! the models it serves), models and prices, read from the database and
//! built into one immutable snapshot that requests read without a lock.
//! A change is written, then a new snapshot replaces the old one: calls
//! already running finish on the snapshot they started with.
//!
//! Also the seeding of the database from the config file at start: the
//! file's providers and models become rows marked `config` (the file stays
//! the way to run with no state). It never calls a provider.

use super::catalog::{self, Model, ModelKind, Price, RouteSpec};
use super::store::{self, ChannelRow, ChannelSettings, KeyRow, ModelRow, Serves};
use super::{Provider, build_provider};
use crate::config::{Config, ModelConfig, PriceConfig, ProviderConfig};
use crate::domain::Timestamp;
use crate::error::{Error, Result};
use crate::storage::Conn;
use crate::support::sealed::{SealKey, reseal, reveal};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What a catalog model stores besides its name and kind: its prices and
/// bounds, in the config file's shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    #[serde(default)]
    pub price: PriceConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_cost: Option<PriceConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_input_tokens_max: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_tokens_max: Option<u32>,
    /// One of the built-in dev models (no providers configured).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dev: bool,
}

impl From<&ModelConfig> for ModelSpec {
    fn from(m: &ModelConfig) -> ModelSpec {
        ModelSpec {
            price: m.price.clone().unwrap_or_default(),
            provider_cost: m.provider_cost.clone(),
            max_output_tokens: m.max_output_tokens,
            image_input_tokens_max: m.image_input_tokens_max,
            context_tokens_max: m.context_tokens_max,
            dev: false,
        }
    }
}

/// One upstream key of a channel, ready to call.
pub struct Lane {
    /// The key's id (the channel's id for a channel with no key).
    pub key: String,
    pub enabled: bool,
    pub(super) provider: Provider,
}

/// A channel as requests see it.
pub struct Channel {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub weight: u32,
    pub enabled: bool,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub breaker: super::breaker::Policy,
    pub lanes: Vec<Lane>,
}

/// One immutable snapshot of the catalog.
#[derive(Default)]
pub struct Catalog {
    /// Enabled models, in the order they were added.
    pub models: Vec<Arc<Model>>,
    by_name: HashMap<String, Arc<Model>>,
    pub channels: HashMap<String, Arc<Channel>>,
    /// Which channel holds a key.
    key_channel: HashMap<String, String>,
    pub version: i64,
}

impl Catalog {
    pub fn model(&self, name: &str) -> Option<&Arc<Model>> {
        self.by_name.get(name)
    }

    /// The channel and lane of a key id.
    pub fn lane(&self, key: &str) -> Option<(&Arc<Channel>, &Lane)> {
        let ch = self.channels.get(self.key_channel.get(key)?)?;
        Some((ch, ch.lanes.iter().find(|l| l.key == key)?))
    }
}

/// Which provider kinds can serve a model kind.
pub fn serves_kind(model: ModelKind, provider_kind: &str) -> bool {
    match model {
        ModelKind::Chat => true,
        ModelKind::Embedding | ModelKind::Image => matches!(provider_kind, "openai" | "dashscope" | "dev"),
        ModelKind::Speech | ModelKind::Transcription | ModelKind::Moderation => provider_kind == "openai",
        ModelKind::Video => matches!(provider_kind, "dashscope" | "dev"),
    }
}

pub const PROVIDER_KINDS: [&str; 5] = ["openai", "anthropic", "google", "dashscope", "dev"];

/// The SHA-256 of a key, first 16 hex digits: enough to tell keys apart in
/// a list, nothing to call a provider with.
pub fn fingerprint(key: &str) -> String {
    crate::support::token::hash(key)[..16].to_owned()
}

pub fn last4(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    chars[chars.len().saturating_sub(4)..].iter().collect()
}

/// A fresh id: `prefix` + 16 hex digits.
pub fn new_id(prefix: &str) -> Result<String> {
    let bytes = crate::support::token::random_bytes::<8>().map_err(|e| Error::Internal(e.to_string()))?;
    Ok(format!("{prefix}{}", crate::support::token::hex(&bytes)))
}

fn settings_of(p: &ProviderConfig) -> ChannelSettings {
    ChannelSettings {
        connect_timeout_ms: p.connect_timeout_ms,
        read_timeout_ms: p.read_timeout_ms,
        breaker_failures: p.breaker_failures,
        breaker_cool_down_ms: p.breaker_cool_down_ms,
        breaker_callers: p.breaker_callers,
        breaker_window_ms: p.breaker_window_ms,
    }
}

/// Writes the config file's providers and models into the catalog tables
/// (inside the caller's transaction): new entries added, changed ones
/// updated, entries gone from the file removed. An entry an administrator
/// took over (`source = api`) is left as it is. `env` reads a key's
/// variable.
pub fn seed(conn: &Conn<'_>, config: &Config, env: &dyn Fn(&str) -> Option<String>) -> Result<()> {
    let (providers, models) = catalog::config_entries(config).map_err(Error::Internal)?;
    let now = Timestamp::now();
    // Rows made together keep the file's order (listings sort by creation).
    let made = |i: usize| now.plus_ms(i as i64);
    for (i, (name, p)) in providers.iter().enumerate() {
        let existing = store::channel_by_name(conn, name)?;
        if existing.as_ref().is_some_and(|c| c.source != "config") {
            continue;
        }
        let serves: Vec<Serves> = models
            .iter()
            .flat_map(|m| {
                m.routes.iter().enumerate().filter(|(_, r)| &r.provider == name).map(|(i, r)| Serves {
                    model: m.name.clone(),
                    upstream: Some(r.model.clone()),
                    priority: Some(i as i64),
                })
            })
            .collect();
        let id = match &existing {
            Some(c) => c.id.clone(),
            None => new_id("ch_")?,
        };
        store::put_channel(
            conn,
            &ChannelRow {
                id: id.clone(),
                name: name.clone(),
                kind: p.kind.clone(),
                base_url: p.base_url.clone(),
                models: serves,
                weight: 1,
                priority: 0,
                enabled: true,
                rpm: None,
                tpm: None,
                tags: vec![],
                settings: settings_of(p),
                source: "config".into(),
                created_at: existing.as_ref().map_or(made(i), |c| c.created_at),
                updated_at: now,
            },
        )?;
        let keys: Vec<KeyRow> = store::keys(conn)?.into_iter().filter(|k| k.channel_id == id).collect();
        let wanted = match &p.api_key_env {
            Some(var) => Some((var, env(var).filter(|k| !k.is_empty()).ok_or_else(|| {
                Error::Internal(format!(
                    "provider {name}: api_key_env names {var}, which is not set (or empty); set it, or remove api_key_env for a provider that needs no key"
                ))
            })?)),
            None => None,
        };
        let mut kept = None;
        if let Some((var, key)) = &wanted {
            let fp = fingerprint(key);
            match keys.iter().find(|k| k.env.as_deref() == Some(var.as_str())) {
                // The same key keeps an administrator's "disabled"; a
                // restart is the operator's word that a failed one may be
                // tried again, and a new key starts enabled.
                Some(k) if k.fingerprint == fp && k.status != "failed" => kept = Some(k.id.clone()),
                Some(k) => {
                    let mut row = KeyRow { fingerprint: fp, last4: last4(key), ..k.clone() };
                    row.set_status("enabled", None);
                    store::update_key(conn, &row)?;
                    kept = Some(k.id.clone());
                }
                None => {
                    let id_k = new_id("ck_")?;
                    store::insert_key(
                        conn,
                        &KeyRow {
                            id: id_k.clone(),
                            channel_id: id.clone(),
                            secret: None,
                            env: Some((*var).clone()),
                            fingerprint: fp,
                            last4: last4(key),
                            status: "enabled".into(),
                            disabled_reason: None,
                            disabled_at: None,
                            created_at: now,
                        },
                    )?;
                    kept = Some(id_k);
                }
            }
        }
        for k in keys.iter().filter(|k| Some(&k.id) != kept.as_ref()) {
            store::delete_key(conn, &k.id)?;
        }
    }
    for c in store::channels(conn)? {
        if c.source == "config" && !providers.iter().any(|(n, _)| n == &c.name) {
            store::delete_channel(conn, &c.id)?;
        }
    }
    for (i, m) in models.iter().enumerate() {
        let existing = store::model(conn, &m.name)?;
        if existing.as_ref().is_some_and(|r| r.source != "config") {
            continue;
        }
        let mut spec = ModelSpec::from(m);
        spec.dev = config.providers.is_empty();
        let spec = serde_json::to_string(&spec).map_err(|e| Error::Internal(e.to_string()))?;
        let revision = match &existing {
            Some(r) if r.spec == spec && r.kind == m.kind => r.revision,
            Some(r) => r.revision + 1,
            None => 1,
        };
        store::put_model(
            conn,
            &ModelRow {
                name: m.name.clone(),
                kind: m.kind.clone(),
                spec,
                enabled: true,
                revision,
                source: "config".into(),
                created_at: existing.as_ref().map_or(made(i), |r| r.created_at),
                updated_at: now,
            },
        )?;
    }
    for r in store::models(conn)? {
        if r.source == "config" && !models.iter().any(|m| m.name == r.name) {
            store::delete_model(conn, &r.name)?;
        }
    }
    store::bump_version(conn)?;
    Ok(())
}

/// Everything a snapshot is built from, as read in one transaction.
pub struct Rows {
    pub channels: Vec<ChannelRow>,
    pub keys: Vec<KeyRow>,
    pub models: Vec<ModelRow>,
    pub version: i64,
}

pub fn read(conn: &Conn<'_>) -> Result<Rows> {
    Ok(Rows {
        channels: store::channels(conn)?,
        keys: store::keys(conn)?,
        models: store::models(conn)?,
        version: store::version(conn)?,
    })
}

/// A model from its stored row, with `routes` (already in trying order).
pub fn model_of(row: &ModelRow, routes: Vec<RouteSpec>) -> std::result::Result<Model, String> {
    let kind =
        ModelKind::parse(&row.kind).ok_or_else(|| format!("model {:?}: unknown kind {:?}", row.name, row.kind))?;
    let spec: ModelSpec = serde_json::from_str(&row.spec).map_err(|e| format!("model {:?}: {e}", row.name))?;
    let price = Price::try_from(&spec.price).map_err(|e| format!("model {:?}: {e}", row.name))?;
    let provider_cost = spec
        .provider_cost
        .as_ref()
        .map(Price::try_from)
        .transpose()
        .map_err(|e| format!("model {:?}: provider_cost: {e}", row.name))?;
    Ok(Model {
        name: row.name.clone(),
        kind,
        routes,
        price,
        provider_cost,
        max_output_tokens: spec.max_output_tokens.unwrap_or(catalog::MAX_OUTPUT_TOKENS_DEFAULT),
        image_input_tokens_max: spec.image_input_tokens_max.unwrap_or(catalog::IMAGE_INPUT_TOKENS_DEFAULT),
        context_tokens_max: spec.context_tokens_max.unwrap_or(catalog::CONTEXT_TOKENS_DEFAULT),
        dev: spec.dev,
        revision: row.revision,
    })
}

/// Builds a snapshot. A key that cannot be opened (no sealing key, or the
/// wrong one) or read (its variable unset) is left out, and said in
/// `problems`; so is a model whose row cannot be read.
pub fn build(
    rows: &Rows,
    seal_key: Option<&SealKey>,
    env: &dyn Fn(&str) -> Option<String>,
    callers_max: usize,
    problems: &mut Vec<String>,
) -> Catalog {
    let mut channels = HashMap::new();
    let mut key_channel = HashMap::new();
    for c in &rows.channels {
        let cfg = ProviderConfig {
            kind: c.kind.clone(),
            base_url: c.base_url.clone(),
            api_key_env: None,
            connect_timeout_ms: c.settings.connect_timeout_ms,
            read_timeout_ms: c.settings.read_timeout_ms,
            breaker_failures: c.settings.breaker_failures,
            breaker_cool_down_ms: c.settings.breaker_cool_down_ms,
            breaker_callers: c.settings.breaker_callers,
            breaker_window_ms: c.settings.breaker_window_ms,
        };
        let agent = super::http::agent(&cfg, callers_max);
        let mut lanes = Vec::new();
        let keys: Vec<&KeyRow> = rows.keys.iter().filter(|k| k.channel_id == c.id).collect();
        if keys.is_empty() {
            match build_provider(&cfg, None, agent.clone()) {
                Ok(provider) => {
                    key_channel.insert(c.id.clone(), c.id.clone());
                    lanes.push(Lane { key: c.id.clone(), enabled: true, provider });
                }
                Err(e) => problems.push(format!("channel {}: {e}", c.name)),
            }
        }
        for k in keys {
            let secret = match (&k.secret, &k.env) {
                (Some(stored), _) => {
                    reveal(seal_key, stored).map_err(|e| format!("key {} of channel {}: {e}", k.id, c.name))
                }
                (None, Some(var)) => {
                    env(var).ok_or_else(|| format!("key {} of channel {}: {var} is not set", k.id, c.name))
                }
                (None, None) => Err(format!("key {} of channel {} has no secret", k.id, c.name)),
            };
            let provider = secret.and_then(|s| build_provider(&cfg, Some(s), agent.clone()));
            match provider {
                Ok(provider) => {
                    key_channel.insert(k.id.clone(), c.id.clone());
                    lanes.push(Lane { key: k.id.clone(), enabled: k.status == "enabled", provider });
                }
                Err(e) => problems.push(e),
            }
        }
        channels.insert(
            c.id.clone(),
            Arc::new(Channel {
                id: c.id.clone(),
                name: c.name.clone(),
                kind: c.kind.clone(),
                weight: c.weight,
                enabled: c.enabled,
                rpm: c.rpm,
                tpm: c.tpm,
                breaker: super::breaker::Policy {
                    failures: c.settings.breaker_failures.max(1),
                    callers: c.settings.breaker_callers.max(1),
                    window: Duration::from_millis(c.settings.breaker_window_ms),
                    cool_down: Duration::from_millis(c.settings.breaker_cool_down_ms),
                },
                lanes,
            }),
        );
    }
    let mut models = Vec::new();
    let mut by_name = HashMap::new();
    for row in rows.models.iter().filter(|m| m.enabled) {
        let Some(kind) = ModelKind::parse(&row.kind) else {
            problems.push(format!("model {}: unknown kind {:?}", row.name, row.kind));
            continue;
        };
        // Routes: every channel serving the model, lowest priority first;
        // ties keep the channels' order (the selection weighs them).
        let mut routes: Vec<RouteSpec> = rows
            .channels
            .iter()
            .filter(|c| serves_kind(kind, &c.kind))
            .flat_map(|c| {
                c.models.iter().filter(|s| s.model == row.name).map(|s| RouteSpec {
                    provider: c.name.clone(),
                    channel: c.id.clone(),
                    model: s.upstream().to_owned(),
                    priority: s.priority.unwrap_or(c.priority),
                })
            })
            .collect();
        routes.sort_by_key(|r| r.priority);
        match model_of(row, routes) {
            Ok(m) => {
                let m = Arc::new(m);
                by_name.insert(m.name.clone(), m.clone());
                models.push(m);
            }
            Err(e) => problems.push(e),
        }
    }
    Catalog { models, by_name, channels, key_channel, version: rows.version }
}

/// Rotation: every stored upstream key opened with `old` and sealed again
/// with `new`, ready to write in the caller's one transaction.
pub fn resealed(
    rows: &[(String, String)],
    old: Option<&SealKey>,
    new: &SealKey,
) -> std::result::Result<Vec<(String, String)>, String> {
    rows.iter()
        .map(|(id, stored)| Ok((id.clone(), reseal(old, new, stored).map_err(|e| format!("upstream key {id}: {e}"))?)))
        .collect()
}
