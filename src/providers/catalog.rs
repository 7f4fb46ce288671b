//! The model catalog: public model names, their kind, ordered routes
//! (provider + upstream model) and integer prices, from `[[models]]`. With no
//! `[providers.*]` configured, the built-in `dev` provider and its models.
//! Prices and every cost computed from them are integers; cost = ceil of the
//! exact sum, computed in u128 so nothing overflows or rounds early.

use crate::config::{Config, ModelConfig, PriceConfig, ProviderConfig};
use crate::domain::Credits;
use serde::Serialize;

/// Output tokens allowed when a request names no `max_tokens`.
pub const MAX_OUTPUT_TOKENS_DEFAULT: u32 = 4096;
/// Input tokens an image part may cost when the model names no bound:
/// OpenAI's high-detail tile formula for its largest image (85 + 170 x 8).
pub const IMAGE_INPUT_TOKENS_DEFAULT: u32 = 1445;
/// A model's context window when its config names none.
pub const CONTEXT_TOKENS_DEFAULT: u32 = 128_000;
/// Longest video a request may ask for.
pub const VIDEO_SECONDS_MAX: u32 = 60;
/// Images per request.
pub const IMAGES_PER_REQUEST_MAX: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Chat,
    Image,
    Video,
    Embedding,
}

impl ModelKind {
    pub fn parse(s: &str) -> Option<ModelKind> {
        match s {
            "chat" => Some(ModelKind::Chat),
            "image" => Some(ModelKind::Image),
            "video" => Some(ModelKind::Video),
            "embedding" => Some(ModelKind::Embedding),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Price {
    pub input_per_1m: i64,
    pub output_per_1m: i64,
    pub per_image: i64,
    pub per_video_second: i64,
}

impl From<&PriceConfig> for Price {
    fn from(p: &PriceConfig) -> Price {
        Price {
            input_per_1m: p.input_per_1m,
            output_per_1m: p.output_per_1m,
            per_image: p.per_image,
            per_video_second: p.per_video_second,
        }
    }
}

impl Price {
    /// ceil((input * input_per_1m + output * output_per_1m) / 1,000,000):
    /// the whole credits a bound must hold.
    pub fn tokens(&self, input: u64, output: u64) -> Credits {
        Credits(self.tokens_micro_wide(input, output).div_ceil(1_000_000).min(i64::MAX as u128) as i64)
    }

    /// The exact cost in millionths of a credit (prices are per 1M tokens).
    pub fn tokens_micro(&self, input: u64, output: u64) -> i64 {
        self.tokens_micro_wide(input, output).min(i64::MAX as u128) as i64
    }

    fn tokens_micro_wide(&self, input: u64, output: u64) -> u128 {
        u128::from(input) * self.input_per_1m.max(0) as u128 + u128::from(output) * self.output_per_1m.max(0) as u128
    }

    pub fn images(&self, n: u32) -> Credits {
        Credits(self.per_image.max(0).saturating_mul(i64::from(n)))
    }

    pub fn video(&self, seconds: u32) -> Credits {
        Credits(self.per_video_second.max(0).saturating_mul(i64::from(seconds)))
    }
}

#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub provider: String,
    pub model: String,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub kind: ModelKind,
    pub routes: Vec<RouteSpec>,
    pub price: Price,
    pub max_output_tokens: u32,
    /// Input tokens one image part may cost, at most.
    pub image_input_tokens_max: u32,
    /// The context window: the most input tokens a call can be charged.
    pub context_tokens_max: u32,
    /// Served by the built-in dev provider.
    pub dev: bool,
}

/// Configured providers by name.
pub type Providers = Vec<(String, ProviderConfig)>;

/// The providers and models in force: from config, or the dev defaults.
pub fn resolve(config: &Config) -> Result<(Providers, Vec<Model>), String> {
    if config.providers.is_empty() {
        if !config.models.is_empty() {
            return Err("[[models]] are configured but no [providers.*]: add the providers they route to".into());
        }
        return Ok((vec![("dev".into(), dev_provider())], dev_models()));
    }
    let providers: Providers = config.providers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for (name, p) in &providers {
        if !["openai", "anthropic", "dashscope", "dev"].contains(&p.kind.as_str()) {
            return Err(format!("[providers.{name}] kind = {:?}: must be openai, anthropic, dashscope or dev", p.kind));
        }
    }
    let mut models = Vec::new();
    for m in &config.models {
        models.push(model_from(m, &providers)?);
    }
    let mut names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("model {:?} is configured twice", w[0]));
    }
    Ok((providers, models))
}

fn model_from(m: &ModelConfig, providers: &[(String, ProviderConfig)]) -> Result<Model, String> {
    let kind = ModelKind::parse(&m.kind)
        .ok_or_else(|| format!("model {:?}: kind = {:?} must be chat, image, video or embedding", m.name, m.kind))?;
    if m.routes.is_empty() {
        return Err(format!("model {:?} has no routes", m.name));
    }
    let mut routes = Vec::new();
    for r in &m.routes {
        let p = providers.iter().find(|(n, _)| n == &r.provider).ok_or_else(|| {
            format!(
                "model {:?} routes to provider {:?}, which is not configured under [providers.*]",
                m.name, r.provider
            )
        })?;
        if kind == ModelKind::Embedding && !matches!(p.1.kind.as_str(), "openai" | "dashscope" | "dev") {
            return Err(format!(
                "model {:?}: embeddings need an openai, dashscope or dev provider, not {:?}",
                m.name, p.1.kind
            ));
        }
        if kind == ModelKind::Video && !matches!(p.1.kind.as_str(), "dashscope" | "dev") {
            return Err(format!("model {:?}: video needs a dashscope or dev provider, not {:?}", m.name, p.1.kind));
        }
        routes.push(RouteSpec { provider: r.provider.clone(), model: r.model.clone() });
    }
    let price = Price::from(&m.price);
    if [price.input_per_1m, price.output_per_1m, price.per_image, price.per_video_second].iter().any(|p| *p < 0) {
        return Err(format!("model {:?}: prices must not be negative", m.name));
    }
    Ok(Model {
        name: m.name.clone(),
        kind,
        routes,
        price,
        max_output_tokens: m.max_output_tokens.unwrap_or(MAX_OUTPUT_TOKENS_DEFAULT),
        image_input_tokens_max: m.image_input_tokens_max.unwrap_or(IMAGE_INPUT_TOKENS_DEFAULT),
        context_tokens_max: m.context_tokens_max.unwrap_or(CONTEXT_TOKENS_DEFAULT),
        dev: false,
    })
}

fn dev_provider() -> ProviderConfig {
    ProviderConfig {
        kind: "dev".into(),
        base_url: None,
        api_key_env: None,
        connect_timeout_ms: 1000,
        read_timeout_ms: 10_000,
        breaker_failures: 3,
        breaker_cool_down_ms: 30_000,
    }
}

fn dev_models() -> Vec<Model> {
    let route = |m: &str| vec![RouteSpec { provider: "dev".into(), model: m.into() }];
    vec![
        Model {
            name: "dev-chat".into(),
            kind: ModelKind::Chat,
            routes: route("dev-chat"),
            price: Price { input_per_1m: 1_000, output_per_1m: 2_000, ..Price::default() },
            max_output_tokens: 1024,
            image_input_tokens_max: IMAGE_INPUT_TOKENS_DEFAULT,
            context_tokens_max: CONTEXT_TOKENS_DEFAULT,
            dev: true,
        },
        Model {
            name: "dev-image".into(),
            kind: ModelKind::Image,
            routes: route("dev-image"),
            price: Price { per_image: 10, ..Price::default() },
            max_output_tokens: 0,
            image_input_tokens_max: IMAGE_INPUT_TOKENS_DEFAULT,
            context_tokens_max: CONTEXT_TOKENS_DEFAULT,
            dev: true,
        },
        Model {
            name: "dev-embedding".into(),
            kind: ModelKind::Embedding,
            routes: route("dev-embedding"),
            price: Price { input_per_1m: 100, ..Price::default() },
            max_output_tokens: 0,
            image_input_tokens_max: IMAGE_INPUT_TOKENS_DEFAULT,
            context_tokens_max: CONTEXT_TOKENS_DEFAULT,
            dev: true,
        },
        Model {
            name: "dev-video".into(),
            kind: ModelKind::Video,
            routes: route("dev-video"),
            price: Price { per_video_second: 5, ..Price::default() },
            max_output_tokens: 0,
            image_input_tokens_max: IMAGE_INPUT_TOKENS_DEFAULT,
            context_tokens_max: CONTEXT_TOKENS_DEFAULT,
            dev: true,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_cost_is_the_ceiling_of_the_exact_sum() {
        let p = Price { input_per_1m: 800, output_per_1m: 2000, ..Price::default() };
        assert_eq!(p.tokens(0, 0), Credits(0));
        assert_eq!(p.tokens(1, 0), Credits(1), "any use costs at least one credit");
        assert_eq!(p.tokens(1250, 0), Credits(1), "1250 * 800 = exactly 1,000,000");
        assert_eq!(p.tokens(1251, 0), Credits(2));
        assert_eq!(p.tokens(1_000_000, 500_000), Credits(800 + 1000));
        // u64::MAX x 2800 needs 76 bits: exact in u128, no overflow.
        assert_eq!(p.tokens(u64::MAX, u64::MAX).0, 51_650_883_406_386_745);
    }
}
