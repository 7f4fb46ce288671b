//! The model catalog: public model names, their kind, ordered routes
//! (provider + upstream model) and integer prices, from `[[models]]`. With no
//! `[providers.*]` configured, the built-in `dev` provider and its models.
//! Prices and every cost computed from them are integers; cost = ceil of the
//! exact sum, computed in u128 so nothing overflows or rounds early.

use super::types::{ImageRequest, Usage, VideoRequest};
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
    /// Text to speech (`/v1/audio/speech`), priced per input character.
    Speech,
    /// Speech to text (`/v1/audio/transcriptions`), priced per second of
    /// audio or per token.
    Transcription,
    /// `/v1/moderations`: free unless priced per request.
    Moderation,
}

impl ModelKind {
    pub fn parse(s: &str) -> Option<ModelKind> {
        match s {
            "chat" => Some(ModelKind::Chat),
            "image" => Some(ModelKind::Image),
            "video" => Some(ModelKind::Video),
            "embedding" => Some(ModelKind::Embedding),
            "speech" => Some(ModelKind::Speech),
            "transcription" => Some(ModelKind::Transcription),
            "moderation" => Some(ModelKind::Moderation),
            _ => None,
        }
    }
}

/// Long-context tiers one model may have.
pub const PRICE_TIERS_MAX: usize = 8;

/// Token prices per 1M tokens, component by component, defaults resolved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TokenPrices {
    pub input: i64,
    pub cached_input: i64,
    pub cache_write: i64,
    pub cache_write_1h: i64,
    pub audio_input: i64,
    pub output: i64,
    pub reasoning: i64,
    pub audio_output: i64,
}

impl TokenPrices {
    /// Plain input and output, every other component at their price.
    pub fn plain(input: i64, output: i64) -> TokenPrices {
        TokenPrices {
            input,
            cached_input: input,
            cache_write: input,
            cache_write_1h: input,
            audio_input: input,
            output,
            reasoning: output,
            audio_output: output,
        }
    }

    /// The dearest input component and the dearest output component: what
    /// a bound must assume of tokens it cannot see yet.
    fn dearest(&self) -> (i64, i64) {
        let input = [self.input, self.cached_input, self.cache_write, self.cache_write_1h, self.audio_input];
        let output = [self.output, self.reasoning, self.audio_output];
        (input.into_iter().max().unwrap_or(0), output.into_iter().max().unwrap_or(0))
    }

    fn all(&self) -> [i64; 8] {
        [
            self.input,
            self.cached_input,
            self.cache_write,
            self.cache_write_1h,
            self.audio_input,
            self.output,
            self.reasoning,
            self.audio_output,
        ]
    }
}

/// A long-context tier: its prices apply to a whole request whose prompt
/// is above `above_input_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tier {
    pub above_input_tokens: u64,
    pub prices: TokenPrices,
}

/// One priced component of a call: what it is, how many tokens, at what
/// price per 1M, and what it cost in millionths of a credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Component {
    pub name: &'static str,
    pub tokens: u64,
    pub per_1m: i64,
    pub micro: i64,
}

impl Component {
    /// What `parts` cost together, in millionths of a credit.
    pub fn total(parts: &[Component]) -> i64 {
        parts.iter().fold(0i64, |sum, c| sum.saturating_add(c.micro))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Price {
    /// Below every tier.
    pub tokens: TokenPrices,
    /// Ascending by threshold.
    pub tiers: Vec<Tier>,
    /// Whole credits per call.
    pub per_request: i64,
    pub per_image: i64,
    pub per_video_second: i64,
    /// By size or size/quality.
    pub per_image_by: std::collections::BTreeMap<String, i64>,
    /// By resolution.
    pub per_video_second_by: std::collections::BTreeMap<String, i64>,
    /// Speech: credits per 1M characters of input text.
    pub per_1m_characters: i64,
    /// Transcription: whole credits per second of audio.
    pub per_audio_second: i64,
}

/// Entries one `per_image_by` or `per_video_second_by` may have.
pub const PRICES_BY_MAX: usize = 64;

impl TryFrom<&PriceConfig> for Price {
    type Error = String;

    /// Resolves the defaults, and refuses a table that cannot be right: a
    /// negative price, tiers not strictly ascending, too many tiers.
    fn try_from(p: &PriceConfig) -> Result<Price, String> {
        let cache_write = p.cache_write_per_1m.unwrap_or(p.input_per_1m);
        let base = TokenPrices {
            input: p.input_per_1m,
            cached_input: p.cached_input_per_1m.unwrap_or(p.input_per_1m),
            cache_write,
            cache_write_1h: p.cache_write_1h_per_1m.unwrap_or(cache_write),
            audio_input: p.audio_input_per_1m.unwrap_or(p.input_per_1m),
            output: p.output_per_1m,
            reasoning: p.reasoning_per_1m.unwrap_or(p.output_per_1m),
            audio_output: p.audio_output_per_1m.unwrap_or(p.output_per_1m),
        };
        if p.tiers.len() > PRICE_TIERS_MAX {
            return Err(format!("at most {PRICE_TIERS_MAX} price tiers"));
        }
        let mut tiers: Vec<Tier> = Vec::with_capacity(p.tiers.len());
        for t in &p.tiers {
            if tiers.last().is_some_and(|last| last.above_input_tokens >= t.above_input_tokens) {
                return Err(format!(
                    "price tiers must be in ascending above_input_tokens ({} is not above the tier before it)",
                    t.above_input_tokens
                ));
            }
            let cache_write = t.cache_write_per_1m.unwrap_or(base.cache_write);
            let prices = TokenPrices {
                input: t.input_per_1m.unwrap_or(base.input),
                cached_input: t.cached_input_per_1m.unwrap_or(base.cached_input),
                cache_write,
                cache_write_1h: t.cache_write_1h_per_1m.unwrap_or(base.cache_write_1h.max(cache_write)),
                audio_input: t.audio_input_per_1m.unwrap_or(base.audio_input),
                output: t.output_per_1m.unwrap_or(base.output),
                reasoning: t.reasoning_per_1m.unwrap_or(base.reasoning),
                audio_output: t.audio_output_per_1m.unwrap_or(base.audio_output),
            };
            tiers.push(Tier { above_input_tokens: t.above_input_tokens, prices });
        }
        if p.per_image_by.len() > PRICES_BY_MAX || p.per_video_second_by.len() > PRICES_BY_MAX {
            return Err(format!("at most {PRICES_BY_MAX} entries in per_image_by and per_video_second_by"));
        }
        if p.per_image_by.keys().chain(p.per_video_second_by.keys()).any(|k| k.is_empty() || k.len() > 64) {
            return Err("per_image_by and per_video_second_by keys are 1 to 64 characters".into());
        }
        let price = Price {
            tokens: base,
            tiers,
            per_request: p.per_request,
            per_image: p.per_image,
            per_video_second: p.per_video_second,
            per_image_by: p.per_image_by.clone(),
            per_video_second_by: p.per_video_second_by.clone(),
            per_1m_characters: p.per_1m_characters,
            per_audio_second: p.per_audio_second,
        };
        if price.per_image_by.values().chain(price.per_video_second_by.values()).any(|p| *p < 0) {
            return Err("prices must not be negative".into());
        }
        let every = price.tiers.iter().flat_map(|t| t.prices.all()).chain(price.tokens.all());
        let units = [
            price.per_request,
            price.per_image,
            price.per_video_second,
            price.per_1m_characters,
            price.per_audio_second,
        ];
        if every.chain(units).any(|p| p < 0) {
            return Err("prices must not be negative".into());
        }
        Ok(price)
    }
}

impl Price {
    /// Plain token prices (tests and the dev models).
    pub fn per_token(input_per_1m: i64, output_per_1m: i64) -> Price {
        Price { tokens: TokenPrices::plain(input_per_1m, output_per_1m), ..Price::default() }
    }

    /// The prices a request with `prompt_tokens` of input pays: the highest
    /// tier it is above, else the base.
    pub fn prices_for(&self, prompt_tokens: u64) -> &TokenPrices {
        self.tiers.iter().rev().find(|t| prompt_tokens > t.above_input_tokens).map_or(&self.tokens, |t| &t.prices)
    }

    /// The whole credits a call's hold must hold: up to `input` tokens of
    /// input and `output` of output, each at the dearest component of every
    /// tier such an input could reach, plus the per-call price.
    pub fn tokens(&self, input: u64, output: u64) -> Credits {
        let reachable = std::iter::once(&self.tokens)
            .chain(self.tiers.iter().filter(|t| input > t.above_input_tokens).map(|t| &t.prices));
        let (dear_in, dear_out) =
            reachable.map(TokenPrices::dearest).fold((0, 0), |(i, o), (a, b)| (i.max(a), o.max(b)));
        let micro = u128::from(input) * dear_in as u128
            + u128::from(output) * dear_out as u128
            + self.per_request as u128 * 1_000_000;
        Credits(micro.div_ceil(1_000_000).min(i64::MAX as u128) as i64)
    }

    /// A call's components at a price group's factor (millionths; 1,000,000
    /// = list price): each part its list cost times the factor, rounded up
    /// to the millionth.
    pub fn components_at(&self, u: &Usage, multiplier_micro: i64) -> [Component; 9] {
        self.components(u).map(|c| Component { micro: crate::domain::scale_up(c.micro, multiplier_micro), ..c })
    }

    /// [`Price::usage_micro`] at a price group's factor.
    pub fn usage_micro_at(&self, u: &Usage, multiplier_micro: i64) -> i64 {
        Component::total(&self.components_at(u, multiplier_micro))
    }

    /// A call's components, each priced, in millionths of a credit.
    pub fn components(&self, u: &Usage) -> [Component; 9] {
        let p = self.prices_for(u.prompt_tokens);
        let c = |name, tokens: u64, per_1m: i64| Component {
            name,
            tokens,
            per_1m,
            micro: (u128::from(tokens) * per_1m.max(0) as u128).min(i64::MAX as u128) as i64,
        };
        [
            c("input", u.plain_input(), p.input),
            c("cached_input", u.cached_tokens, p.cached_input),
            c("cache_write", u.cache_write_tokens, p.cache_write),
            c("cache_write_1h", u.cache_write_1h_tokens, p.cache_write_1h),
            c("audio_input", u.audio_input_tokens, p.audio_input),
            c("output", u.plain_output(), p.output),
            c("reasoning", u.reasoning_tokens, p.reasoning),
            c("audio_output", u.audio_output_tokens, p.audio_output),
            Component { name: "request", tokens: 0, per_1m: 0, micro: self.per_request.saturating_mul(1_000_000) },
        ]
    }

    /// A call's exact cost in millionths of a credit: its components' sum.
    pub fn usage_micro(&self, u: &Usage) -> i64 {
        Component::total(&self.components(u))
    }

    /// The price of one image of `req`'s size and quality: `size/quality`,
    /// then `size`, in `per_image_by`, else `per_image`.
    pub fn image_price(&self, req: &ImageRequest) -> i64 {
        let size = req.size.as_deref().unwrap_or("");
        let exact = req.quality.as_deref().and_then(|q| self.per_image_by.get(&format!("{size}/{q}")));
        exact.or_else(|| self.per_image_by.get(size)).copied().unwrap_or(self.per_image)
    }

    /// `n` images of `req`'s size and quality.
    pub fn images_of(&self, req: &ImageRequest, n: u32) -> Credits {
        Credits(self.image_price(req).max(0).saturating_mul(i64::from(n)))
    }

    /// The price of one second of video at `req`'s resolution.
    pub fn video_second_price(&self, req: &VideoRequest) -> i64 {
        req.resolution
            .as_deref()
            .and_then(|r| self.per_video_second_by.get(r))
            .copied()
            .unwrap_or(self.per_video_second)
    }

    /// `seconds` of video at `req`'s resolution.
    pub fn video_of(&self, req: &VideoRequest, seconds: u32) -> Credits {
        Credits(self.video_second_price(req).max(0).saturating_mul(i64::from(seconds)))
    }
}

/// One way to serve a model: a channel and the provider's name for the
/// model there.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// The channel's name (a config file's provider name).
    pub provider: String,
    /// The channel's id.
    pub channel: String,
    /// The upstream model name.
    pub model: String,
    /// Lower is tried first.
    pub priority: i64,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub kind: ModelKind,
    pub routes: Vec<RouteSpec>,
    pub price: Price,
    /// What the provider bills the operator, when configured.
    pub provider_cost: Option<Price>,
    pub max_output_tokens: u32,
    /// Input tokens one image part may cost, at most.
    pub image_input_tokens_max: u32,
    /// The context window: the most input tokens a call can be charged.
    pub context_tokens_max: u32,
    /// Served by the built-in dev provider.
    pub dev: bool,
    /// Bumped by every change of the model's prices or bounds: the ledger
    /// row of a call names the price it was charged at.
    pub revision: i64,
}

impl Model {
    /// The model and the revision of its price, for a ledger row's
    /// description: the row names the price it was charged at.
    pub fn priced_name(&self) -> String {
        format!("{} at price r{}", self.name, self.revision)
    }
}

/// Configured providers by name.
pub type Providers = Vec<(String, ProviderConfig)>;

/// The providers and models the config file names (the dev defaults when
/// it names no provider), checked: a route to an unknown provider or a
/// provider kind that cannot serve the model kind is a startup error.
pub fn config_entries(config: &Config) -> Result<(Providers, Vec<ModelConfig>), String> {
    if config.providers.is_empty() {
        if !config.models.is_empty() {
            return Err("[[models]] are configured but no [providers.*]: add the providers they route to".into());
        }
        return Ok((vec![("dev".into(), dev_provider())], dev_models()));
    }
    let providers: Providers = config.providers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for (name, p) in &providers {
        if !super::live::PROVIDER_KINDS.contains(&p.kind.as_str()) {
            return Err(format!(
                "[providers.{name}] kind = {:?}: must be openai, anthropic, google, dashscope or dev",
                p.kind
            ));
        }
    }
    for m in &config.models {
        check_model(m, &providers)?;
    }
    let mut names: Vec<&str> = config.models.iter().map(|m| m.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("model {:?} is configured twice", w[0]));
    }
    Ok((providers, config.models.clone()))
}

fn check_model(m: &ModelConfig, providers: &[(String, ProviderConfig)]) -> Result<(), String> {
    let kind = ModelKind::parse(&m.kind).ok_or_else(|| {
        format!(
            "model {:?}: kind = {:?} must be chat, image, video, embedding, speech, transcription or moderation",
            m.name, m.kind
        )
    })?;
    if m.routes.is_empty() {
        return Err(format!("model {:?} has no routes", m.name));
    }
    for r in &m.routes {
        let p = providers.iter().find(|(n, _)| n == &r.provider).ok_or_else(|| {
            format!(
                "model {:?} routes to provider {:?}, which is not configured under [providers.*]",
                m.name, r.provider
            )
        })?;
        if !super::live::serves_kind(kind, &p.1.kind) {
            return Err(kind_mismatch(&m.name, kind, &p.1.kind));
        }
    }
    let price = m.price.as_ref().ok_or_else(|| {
        format!(
            "model {:?} has no price: set price = {{ input_per_1m = ..., output_per_1m = ... }} (or per_image, ...), or price = \"free\" if it costs nothing",
            m.name
        )
    })?;
    Price::try_from(price).map_err(|e| format!("model {:?}: {e}", m.name))?;
    if let Some(c) = &m.provider_cost {
        Price::try_from(c).map_err(|e| format!("model {:?}: provider_cost: {e}", m.name))?;
    }
    Ok(())
}

/// Why a provider kind cannot serve a model kind.
pub fn kind_mismatch(model: &str, kind: ModelKind, provider_kind: &str) -> String {
    let needs = match kind {
        ModelKind::Embedding => "embeddings need an openai, dashscope or dev provider",
        ModelKind::Image => "images need an openai, dashscope or dev provider",
        ModelKind::Video => "video needs a dashscope or dev provider",
        ModelKind::Speech => "speech needs an openai provider",
        ModelKind::Transcription => "transcription needs an openai provider",
        ModelKind::Moderation => "moderation needs an openai provider",
        ModelKind::Chat => "chat is served by every provider kind",
    };
    format!("model {model:?}: {needs}, not {provider_kind:?}")
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
        breaker_callers: 2,
        breaker_window_ms: 60_000,
    }
}

fn dev_models() -> Vec<ModelConfig> {
    let model = |name: &str, kind: &str, price: PriceConfig, max_output_tokens: Option<u32>| ModelConfig {
        name: name.into(),
        kind: kind.into(),
        routes: vec![crate::config::RouteConfig { provider: "dev".into(), model: name.into() }],
        price: Some(price),
        provider_cost: None,
        max_output_tokens,
        image_input_tokens_max: None,
        context_tokens_max: None,
    };
    vec![
        model(
            "dev-chat",
            "chat",
            PriceConfig { input_per_1m: 1_000, output_per_1m: 2_000, ..PriceConfig::default() },
            Some(1024),
        ),
        model("dev-image", "image", PriceConfig { per_image: 10, ..PriceConfig::default() }, Some(0)),
        model("dev-embedding", "embedding", PriceConfig { input_per_1m: 100, ..PriceConfig::default() }, Some(0)),
        model("dev-video", "video", PriceConfig { per_video_second: 5, ..PriceConfig::default() }, Some(0)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_cost_is_the_ceiling_of_the_exact_sum() {
        let p = Price::per_token(800, 2000);
        assert_eq!(p.tokens(0, 0), Credits(0));
        assert_eq!(p.tokens(1, 0), Credits(1), "any use costs at least one credit");
        assert_eq!(p.tokens(1250, 0), Credits(1), "1250 * 800 = exactly 1,000,000");
        assert_eq!(p.tokens(1251, 0), Credits(2));
        assert_eq!(p.tokens(1_000_000, 500_000), Credits(800 + 1000));
        // u64::MAX x 2800 needs 76 bits: exact in u128, no overflow.
        assert_eq!(p.tokens(u64::MAX, u64::MAX).0, 51_650_883_406_386_745);
    }

    #[test]
    fn a_model_with_no_price_is_refused_at_start_unless_it_says_free() {
        let config = |price: &str| -> Result<Config, String> {
            let text = format!(
                "[providers.p]\nkind = \"openai\"\n[[models]]\nname = \"m\"\nkind = \"chat\"\nroutes = [{{ provider = \"p\", model = \"u\" }}]\n{price}"
            );
            toml::from_str::<Config>(&text).map_err(|e| e.to_string())
        };
        let unpriced = config("").unwrap();
        let e = config_entries(&unpriced).unwrap_err();
        assert!(e.contains("has no price") && e.contains("\"free\""), "{e}");
        let free = config("price = \"free\"").unwrap();
        assert_eq!(config_entries(&free).unwrap().1[0].price, Some(PriceConfig::default()));
        let e = config("price = \"cheap\"").unwrap_err();
        assert!(e.contains("price"), "{e}");
        assert!(config_entries(&config("price = { input_per_1m = 5 }").unwrap()).is_ok());
    }

    fn priced(text: &str) -> Result<Price, String> {
        let cfg: PriceConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        Price::try_from(&cfg)
    }

    #[test]
    fn prices_by_size_and_resolution_are_bounded_at_their_limit() {
        let by = |n: usize| PriceConfig {
            per_image_by: (0..n).map(|i| (format!("{i}x{i}"), 1)).collect(),
            per_video_second_by: (0..n).map(|i| (format!("{i}P"), 1)).collect(),
            ..PriceConfig::default()
        };
        assert!(Price::try_from(&by(PRICES_BY_MAX)).is_ok());
        let e = Price::try_from(&by(PRICES_BY_MAX + 1)).unwrap_err();
        assert!(e.contains("at most 64"), "{e}");
    }

    /// OpenAI counts cached tokens inside `prompt_tokens`: they are charged
    /// once, at the cached price, and the rest at the input price.
    #[test]
    fn cached_input_is_charged_once_at_its_own_price() {
        let p = priced("input_per_1m = 1000\ncached_input_per_1m = 100\noutput_per_1m = 4000").unwrap();
        let u = Usage::from_openai(&serde_json::json!({
            "prompt_tokens": 1000, "completion_tokens": 10,
            "prompt_tokens_details": {"cached_tokens": 800},
            "completion_tokens_details": {"reasoning_tokens": 4}
        }));
        assert_eq!((u.cached_tokens, u.plain_input(), u.reasoning_tokens, u.plain_output()), (800, 200, 4, 6));
        assert_eq!(p.usage_micro(&u), 200 * 1000 + 800 * 100 + 10 * 4000);
    }

    /// Anthropic leaves the cache out of `input_tokens`: reads and writes
    /// (5 minutes and 1 hour) are each added and priced.
    #[test]
    fn anthropic_cache_reads_and_writes_are_charged() {
        let p = priced(
            "input_per_1m = 3000\noutput_per_1m = 15000\ncached_input_per_1m = 300\ncache_write_per_1m = 3750\ncache_write_1h_per_1m = 6000",
        )
        .unwrap();
        let mut u = Usage::default();
        u.merge_anthropic(&serde_json::json!({
            "input_tokens": 50, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 300,
            "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 100},
            "output_tokens": 1
        }));
        assert_eq!(
            (u.prompt_tokens, u.cached_tokens, u.cache_write_tokens, u.cache_write_1h_tokens),
            (1350, 1000, 200, 100)
        );
        // A stream's final message_delta repeats only the output.
        u.merge_anthropic(&serde_json::json!({"output_tokens": 20}));
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.plain_input()), (1350, 20, 50));
        assert_eq!(p.usage_micro(&u), 50 * 3000 + 1000 * 300 + 200 * 3750 + 100 * 6000 + 20 * 15000);
    }

    /// A tier's prices apply to the whole request only above its threshold.
    #[test]
    fn a_tier_applies_above_its_threshold_not_at_it() {
        let p = priced(
            "input_per_1m = 1250\noutput_per_1m = 10000\n[[tiers]]\nabove_input_tokens = 200000\ninput_per_1m = 2500\noutput_per_1m = 15000",
        )
        .unwrap();
        assert_eq!(p.usage_micro(&Usage::tokens(200_000, 10)), 200_000 * 1250 + 10 * 10000);
        assert_eq!(p.usage_micro(&Usage::tokens(200_001, 10)), 200_001 * 2500 + 10 * 15000);
        assert_eq!(p.tokens(200_000, 10), Credits((200_000 * 1250 + 10 * 10000_i64).div_euclid(1_000_000) + 1));
        assert_eq!(p.tokens(200_001, 10).0, (200_001 * 2500 + 10 * 15000_i64 + 999_999) / 1_000_000);
    }

    #[test]
    fn video_is_priced_by_resolution_and_falls_back_to_per_second() {
        let p = priced("per_video_second = 7\nper_video_second_by = { \"720P\" = 10, \"1080P\" = 30 }").unwrap();
        let at = |r: Option<&str>| VideoRequest { prompt: "x".into(), duration_s: 5, resolution: r.map(str::to_owned) };
        assert_eq!(p.video_of(&at(Some("1080P")), 5), Credits(150));
        assert_eq!(p.video_of(&at(Some("720P")), 5), Credits(50));
        assert_eq!(p.video_of(&at(Some("4K")), 5), Credits(35));
        assert_eq!(p.video_of(&at(None), 5), Credits(35));
        assert!(priced("per_image_by = { \"1024x1024\" = -1 }").unwrap_err().contains("negative"));
    }

    #[test]
    fn a_price_table_that_cannot_be_right_is_refused() {
        assert!(priced("input_per_1m = -1").unwrap_err().contains("negative"));
        assert!(priced("input_per_1m = 1\ncache_write_per_1m = -5").unwrap_err().contains("negative"));
        let descending = "[[tiers]]\nabove_input_tokens = 200\n[[tiers]]\nabove_input_tokens = 100";
        assert!(priced(descending).unwrap_err().contains("ascending"));
        assert!(priced("[[tiers]]\nabove_input_tokens = 100\n[[tiers]]\nabove_input_tokens = 100").is_err());
        assert!(priced("input_per_1m = 1\ncache_read_per_1m = 1").unwrap_err().contains("unknown field"));
        let many: String =
            (1..=PRICE_TIERS_MAX + 1).map(|i| format!("[[tiers]]\nabove_input_tokens = {i}\n")).collect();
        assert!(priced(&many).unwrap_err().contains("at most"));
    }

    proptest::proptest! {
        /// For any usage within a bound and any prices, the hold bound
        /// covers the cost and the components add up to it.
        #[test]
        fn the_bound_covers_the_cost_and_the_breakdown_sums_to_it(
            prices in proptest::collection::vec(0i64..50_000, 8),
            tier in proptest::option::of((0u64..300_000, proptest::collection::vec(0i64..50_000, 8))),
            per_request in 0i64..5,
            input_bound in 0u64..400_000,
            output_bound in 0u64..100_000,
            split in proptest::collection::vec(0u64..1000, 6),
        ) {
            let tp = |v: &[i64]| TokenPrices {
                input: v[0], cached_input: v[1], cache_write: v[2], cache_write_1h: v[3],
                audio_input: v[4], output: v[5], reasoning: v[6], audio_output: v[7],
            };
            let price = Price {
                tokens: tp(&prices),
                tiers: tier.iter().map(|(above, v)| Tier { above_input_tokens: *above, prices: tp(v) }).collect(),
                per_request,
                ..Price::default()
            };
            // A usage inside the bound: the parts are shares of the totals.
            let share = |total: u64, k: u64| total * k / 4000;
            let u = Usage {
                prompt_tokens: input_bound,
                completion_tokens: output_bound,
                cached_tokens: share(input_bound, split[0]),
                cache_write_tokens: share(input_bound, split[1]),
                cache_write_1h_tokens: share(input_bound, split[2]),
                audio_input_tokens: share(input_bound, split[3]),
                reasoning_tokens: share(output_bound, split[4]),
                audio_output_tokens: share(output_bound, split[5]),
            };
            let cost = price.usage_micro(&u);
            proptest::prop_assert!(price.tokens(input_bound, output_bound).0 * 1_000_000 >= cost);
            let parts: i64 = price.components(&u).iter().map(|c| c.micro).sum();
            proptest::prop_assert_eq!(parts, cost);
        }
    }
}
