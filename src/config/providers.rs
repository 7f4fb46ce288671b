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
    /// Consecutive failures that open a route's circuit.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open circuit skips the route.
    #[serde(default = "default_breaker_cool_down_ms")]
    pub breaker_cool_down_ms: u64,
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
    #[serde(default)]
    pub price: PriceConfig,
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub provider: String,
    pub model: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PriceConfig {
    pub input_per_1m: i64,
    pub output_per_1m: i64,
    pub per_image: i64,
    pub per_video_second: i64,
}
