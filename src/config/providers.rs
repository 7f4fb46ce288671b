//! `[providers.<name>]` and `[[models]]`: who tollgate calls, the models it
//! offers, their routes and prices. Reads settings only; `providers` acts on
//! them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: String,
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_read_timeout_ms")]
    pub read_timeout_ms: u64,
    /// Failures within `breaker_window_ms` that open a route's circuit
    /// (when they are at least half of its calls and come from
    /// `breaker_callers` distinct callers).
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open circuit skips the route.
    #[serde(default = "default_breaker_cool_down_ms")]
    pub breaker_cool_down_ms: u64,
    /// Distinct callers whose calls must have failed: one user's retries
    /// never cool a model down for everyone.
    #[serde(default = "default_breaker_callers")]
    pub breaker_callers: u32,
    /// The window failures are counted in.
    #[serde(default = "default_breaker_window_ms")]
    pub breaker_window_ms: u64,
}

fn default_breaker_callers() -> u32 {
    2
}

fn default_breaker_window_ms() -> u64 {
    60_000
}

fn default_breaker_failures() -> u32 {
    3
}

fn default_breaker_cool_down_ms() -> u64 {
    30_000
}

fn default_connect_timeout_ms() -> u64 {
    5_000
}

fn default_read_timeout_ms() -> u64 {
    120_000
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub name: String,
    pub kind: String,
    pub routes: Vec<RouteConfig>,
    /// Required: a price table, or `"free"` to say a model costs nothing
    /// (a model with no price is refused at start, never silently free).
    #[serde(default, deserialize_with = "price_or_free", serialize_with = "price_out")]
    pub price: Option<PriceConfig>,
    /// What the provider bills the operator for the same call, in credits,
    /// in `price`'s shape: recorded per call, so `/v1/admin/usage` shows
    /// provider cost and margin. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_cost: Option<PriceConfig>,
    /// Chat: output tokens when a request names no `max_tokens`, and the most
    /// it may name (default 4096).
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    /// Chat: input tokens one image part may cost, at most (the cost bound
    /// counts this per image). Default 1445: OpenAI's tile formula at high
    /// detail, 85 + 170 x 8 tiles for the largest image it accepts.
    #[serde(default)]
    pub image_input_tokens_max: Option<u32>,
    /// Input tokens the model can take at most (its context window): the
    /// input bound of a Responses call that continues stored context
    /// (`previous_response_id`, `conversation`), which tollgate cannot see.
    #[serde(default)]
    pub context_tokens_max: Option<u32>,
}

/// `price = "free"` or `price = { ... }`.
fn price_or_free<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PriceConfig>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Word(String),
        Table(PriceConfig),
    }
    match Given::deserialize(d)? {
        Given::Table(p) => Ok(Some(p)),
        Given::Word(w) if w == "free" => Ok(Some(PriceConfig::default())),
        Given::Word(w) => Err(serde::de::Error::custom(format!(
            "price = {w:?}: a price is a table ({{ input_per_1m = 800, ... }}) or \"free\""
        ))),
    }
}

fn price_out<S: serde::Serializer>(p: &Option<PriceConfig>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => p.serialize(s),
        None => s.serialize_none(),
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub provider: String,
    pub model: String,
}

/// What a model costs, in integer credits, component by component as the
/// provider bills it. Token prices are per 1M tokens; an unset component
/// price defaults as its comment says.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PriceConfig {
    pub input_per_1m: i64,
    pub output_per_1m: i64,
    /// Input read from the prompt cache (default: `input_per_1m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_input_per_1m: Option<i64>,
    /// Input written to the cache for 5 minutes (default: `input_per_1m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_write_per_1m: Option<i64>,
    /// Input written to the cache for 1 hour (default: `cache_write_per_1m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_write_1h_per_1m: Option<i64>,
    /// Reasoning output (default: `output_per_1m`); charged once, as the
    /// part of the output it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_per_1m: Option<i64>,
    /// Audio input (default: `input_per_1m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_input_per_1m: Option<i64>,
    /// Audio output (default: `output_per_1m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_output_per_1m: Option<i64>,
    /// Whole credits per call, on top of its tokens.
    pub per_request: i64,
    pub per_image: i64,
    pub per_video_second: i64,
    /// Per image by size or size/quality (`{ "1024x1024" = 4,
    /// "1024x1536/high" = 25 }`): size/quality first, then size, then
    /// `per_image`.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub per_image_by: std::collections::BTreeMap<String, i64>,
    /// Per video second by resolution (`{ "720P" = 10, "1080P" = 30 }`),
    /// else `per_video_second`.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub per_video_second_by: std::collections::BTreeMap<String, i64>,
    /// Speech: credits per 1M characters of the input text (exact to the
    /// millionth, like tokens).
    pub per_1m_characters: i64,
    /// Transcription: whole credits per second of audio (the provider's
    /// `usage.seconds`, else the file's duration; a started second counts).
    pub per_audio_second: i64,
    /// Long-context prices: when a request's whole prompt is above a tier's
    /// `above_input_tokens`, that tier's prices apply to the whole request.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<PriceTierConfig>,
}

/// One long-context tier: its token prices, each defaulting to the base
/// price of the same component.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceTierConfig {
    pub above_input_tokens: u64,
    pub input_per_1m: Option<i64>,
    pub output_per_1m: Option<i64>,
    pub cached_input_per_1m: Option<i64>,
    pub cache_write_per_1m: Option<i64>,
    pub cache_write_1h_per_1m: Option<i64>,
    pub reasoning_per_1m: Option<i64>,
    pub audio_input_per_1m: Option<i64>,
    pub audio_output_per_1m: Option<i64>,
}

/// Price groups one config may define.
pub const PRICE_GROUPS_MAX: usize = 64;

/// `[pricing]`: price groups (one-api's group ratios). A user in a group
/// pays every price times its factor (`vip = 0.8`), exactly to the
/// millionth of a credit.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PricingConfig {
    pub groups: std::collections::BTreeMap<String, f64>,
}

impl PricingConfig {
    /// The factor of `group` in millionths; list price for none, or for a
    /// group no longer configured.
    pub fn multiplier_micro(&self, group: Option<&str>) -> i64 {
        group.and_then(|g| self.groups.get(g)).map_or(crate::domain::MULTIPLIER_ONE_MICRO, |m| (m * 1e6).round() as i64)
    }

    pub(super) fn check(&self) -> Result<(), super::ConfigError> {
        if self.groups.len() > PRICE_GROUPS_MAX {
            return super::bad("pricing.groups", &format!("at most {PRICE_GROUPS_MAX} groups"));
        }
        for (name, m) in &self.groups {
            if name.is_empty()
                || name.len() > 32
                || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            {
                return super::bad("pricing.groups", &format!("{name:?}: a name is 1 to 32 of a-z, 0-9, - and _"));
            }
            let micro = m * 1e6;
            if !(*m > 0.0 && *m <= 100.0) || (micro - micro.round()).abs() > 1e-6 {
                return super::bad(
                    &format!("pricing.groups.{name}"),
                    "must be above 0 and at most 100, in millionths at most (0.8, 1.25, 0.333333)",
                );
            }
        }
        Ok(())
    }
}
