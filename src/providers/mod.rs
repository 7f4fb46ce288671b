//! The ModelAdapter: the single entry point for every AI call.
//!
//! It resolves a public model name to its ordered routes (provider +
//! upstream model) from config, calls the provider with `ureq` (blocking,
//! with the provider's timeouts), fails over to the next route on connect
//! errors, timeouts, 429 and 5xx, skips routes whose circuit is open, and
//! returns provider-neutral responses with usage. Each failure is a system
//! log with provider, status and latency (never the API key).
//!
//! Nothing outside this module knows a provider's wire format; nothing in it
//! knows about credits, holds or HTTP clients.

pub mod anthropic;
pub mod breaker;
pub mod catalog;
pub mod chat_map;
pub mod dashscope;
pub mod dev;
pub mod error;
pub mod form;
pub mod google;
pub mod http;
pub mod litellm;
pub mod messages;
pub mod openai;
pub mod sse;
pub mod types;

use crate::config::{Config, ProviderConfig};
use crate::logs::{self, Level, NewLog};
use crate::storage::Db;
use breaker::Breakers;
pub use catalog::{Model, ModelKind, Price};
pub use error::ProviderError;
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use types::{ChatEvent, ChatRequest, ChatResponse, ImageRequest, ImageResponse, TaskState, VideoRequest};

/// A streamed chat: events until the provider is done.
pub type ChatStream = Box<dyn Iterator<Item = Result<ChatEvent, ProviderError>> + Send>;

/// Server-sent events passed on as they come: (event name, JSON data).
pub type RawStream = Box<dyn Iterator<Item = Result<(Option<String>, serde_json::Value), ProviderError>> + Send>;

/// How long an image task awaited inline may take.
pub const INLINE_TASK_TIMEOUT: Duration = Duration::from_secs(300);

enum Provider {
    OpenAi(openai::OpenAi),
    Anthropic(anthropic::Anthropic),
    Google(google::Google),
    DashScope { tasks: dashscope::DashScope, chat: openai::OpenAi },
    Dev,
}

impl Provider {
    /// Speaks the OpenAI chat format, so every field a client sends reaches
    /// it unchanged.
    fn passes_through(&self) -> bool {
        matches!(self, Provider::OpenAi(_) | Provider::DashScope { .. })
    }

    /// The first field of `req` this provider would have to drop.
    fn unsupported(&self, req: &ChatRequest) -> Option<String> {
        match self {
            Provider::OpenAi(_) | Provider::DashScope { .. } => None,
            Provider::Anthropic(_) => req.unsupported_by(&anthropic::HONOURS),
            Provider::Google(_) => req.unsupported_by(&google::HONOURS),
            Provider::Dev => req.unsupported_by(&dev::HONOURS),
        }
    }

    /// OpenAI itself (or a server that mirrors all of its API): images as
    /// base64 (`response_format: b64_json`), the Responses API, audio.
    fn full_openai(&self) -> bool {
        self.openai().is_some()
    }

    fn openai(&self) -> Option<&openai::OpenAi> {
        match self {
            Provider::OpenAi(o) => Some(o),
            _ => None,
        }
    }

    fn anthropic(&self) -> Option<&anthropic::Anthropic> {
        match self {
            Provider::Anthropic(a) => Some(a),
            _ => None,
        }
    }

    fn google(&self) -> Option<&google::Google> {
        match self {
            Provider::Google(g) => Some(g),
            _ => None,
        }
    }
}

struct Named {
    name: String,
    kind: String,
    provider: Provider,
    breaker_failures: u32,
    breaker_cool_down: Duration,
}

/// Which route served a call, for logs and the ledger description.
#[derive(Debug, Clone)]
pub struct CallInfo {
    pub provider: String,
    pub upstream_model: String,
    pub latency_ms: u64,
    pub route_index: usize,
}

/// A submitted asynchronous task: the route that took it and its id there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRef {
    pub route_index: usize,
    pub task_id: String,
}

/// A job's provider call: finished at once, or a task to poll.
pub enum Submitted<T> {
    Done(T),
    Task(TaskRef),
}

impl TaskRef {
    /// The form stored in `jobs.provider_task_id`: `route:id`.
    pub fn encode(&self) -> String {
        format!("{}:{}", self.route_index, self.task_id)
    }

    pub fn decode(s: &str) -> Option<TaskRef> {
        let (route, id) = s.split_once(':')?;
        Some(TaskRef { route_index: route.parse().ok()?, task_id: id.to_owned() })
    }
}

pub struct ModelAdapter {
    models: Vec<Model>,
    providers: HashMap<String, Named>,
    breakers: Breakers,
    db: Db,
}

fn build(name: &str, cfg: &ProviderConfig, callers_max: usize) -> Result<Named, String> {
    let key = match &cfg.api_key_env {
        Some(var) => match std::env::var(var) {
            Ok(k) if !k.is_empty() => Some(k),
            _ => {
                return Err(format!(
                    "provider {name}: api_key_env names {var}, which is not set (or empty); set it, or remove api_key_env for a provider that needs no key"
                ));
            }
        },
        None => None,
    };
    let agent = http::agent(cfg, callers_max);
    let base = |default: &str| cfg.base_url.clone().unwrap_or_else(|| default.to_owned());
    let provider = match cfg.kind.as_str() {
        "openai" => Provider::OpenAi(openai::OpenAi { base_url: base("https://api.openai.com/v1"), key, agent }),
        "anthropic" => {
            Provider::Anthropic(anthropic::Anthropic { base_url: base("https://api.anthropic.com"), key, agent })
        }
        "google" => {
            Provider::Google(google::Google { base_url: base("https://generativelanguage.googleapis.com"), key, agent })
        }
        "dashscope" => {
            let b = base("https://dashscope.aliyuncs.com");
            Provider::DashScope {
                chat: openai::OpenAi {
                    base_url: format!("{}/compatible-mode/v1", b.trim_end_matches('/')),
                    key: key.clone(),
                    agent: agent.clone(),
                },
                tasks: dashscope::DashScope { base_url: b, key, agent, task_timeout: INLINE_TASK_TIMEOUT },
            }
        }
        "dev" => Provider::Dev,
        other => return Err(format!("provider {name}: unknown kind {other:?}")),
    };
    Ok(Named {
        name: name.to_owned(),
        kind: cfg.kind.clone(),
        provider,
        breaker_failures: cfg.breaker_failures.max(1),
        breaker_cool_down: Duration::from_millis(cfg.breaker_cool_down_ms),
    })
}

impl ModelAdapter {
    pub fn new(config: &Config, db: Db) -> Result<ModelAdapter, String> {
        let (providers, models) = catalog::resolve(config)?;
        // Every thread that may call a provider at once: upstream and job workers.
        let callers_max = config.server.upstream_workers + config.jobs.workers;
        let providers = providers
            .iter()
            .map(|(name, cfg)| build(name, cfg, callers_max).map(|p| (name.clone(), p)))
            .collect::<Result<HashMap<_, _>, _>>()?;
        Ok(ModelAdapter { models, providers, breakers: Breakers::default(), db })
    }

    pub fn models(&self) -> &[Model] {
        &self.models
    }

    pub fn model(&self, name: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.name == name)
    }

    /// Tries each route in order until one answers. Transient failures fail
    /// over; a request the provider rejects is returned at once.
    fn with_failover<T>(
        &self,
        model: &Model,
        op: &'static str,
        call: impl FnMut(&Provider, &str) -> Result<T, ProviderError>,
    ) -> Result<(T, CallInfo), ProviderError> {
        self.with_failover_among(model, op, |_| true, call)
    }

    /// [`Self::with_failover`] over the routes whose provider `can` serve
    /// the request (the others are skipped, not failed).
    fn with_failover_among<T>(
        &self,
        model: &Model,
        op: &'static str,
        can: impl Fn(&Provider) -> bool,
        mut call: impl FnMut(&Provider, &str) -> Result<T, ProviderError>,
    ) -> Result<(T, CallInfo), ProviderError> {
        let mut last = ProviderError::Unavailable(format!("model {} has no usable route", model.name));
        let mut called = false;
        let mut wait: Option<Duration> = None;
        for (i, route) in model.routes.iter().enumerate() {
            let key = format!("{}/{}", route.provider, route.model);
            let Some(named) = self.providers.get(&route.provider).filter(|n| can(&n.provider)) else { continue };
            if let Err(w) = self.breakers.check(&key, named.breaker_failures) {
                wait = Some(wait.map_or(w, |x| x.min(w)));
                continue;
            }
            called = true;
            let started = Instant::now();
            let result = call(&named.provider, &route.model);
            let latency_ms = started.elapsed().as_millis() as u64;
            let m = crate::metrics::global();
            m.provider_duration.with_label_values(&[named.name.as_str()]).observe(latency_ms as f64 / 1000.0);
            match result {
                Ok(v) => {
                    self.breakers.success(&key);
                    m.provider_calls.with_label_values(&[named.name.as_str(), "ok"]).inc();
                    if i > 0 {
                        logs::record(
                            &self.db,
                            NewLog::system(
                                Level::Info,
                                "provider_failover_succeeded",
                                json!({"model": model.name, "provider": named.name, "route_index": i, "op": op}),
                            ),
                        );
                    }
                    let info = CallInfo {
                        provider: named.name.clone(),
                        upstream_model: route.model.clone(),
                        latency_ms,
                        route_index: i,
                    };
                    return Ok((v, info));
                }
                Err(e) => {
                    m.provider_calls.with_label_values(&[named.name.as_str(), e.status_label().as_str()]).inc();
                    let more = i + 1 < model.routes.len();
                    let transient = e.is_transient();
                    let level = if transient && more { Level::Warn } else { Level::Error };
                    logs::record(
                        &self.db,
                        NewLog::system(
                            level,
                            "provider_call_failed",
                            json!({"model": model.name, "provider": named.name, "kind": named.kind, "upstream_model": route.model,
                                   "op": op, "status": e.status_label(), "error": e.to_string(), "latency_ms": latency_ms,
                                   "failing_over": transient && more}),
                        ),
                    );
                    if !transient {
                        return Err(e);
                    }
                    if self.breakers.failure(&key, named.breaker_failures, named.breaker_cool_down) {
                        logs::record(
                            &self.db,
                            NewLog::system(
                                Level::Error,
                                "provider_circuit_opened",
                                json!({"route": key, "cool_down_ms": named.breaker_cool_down.as_millis() as u64}),
                            ),
                        );
                    }
                    last = e;
                }
            }
        }
        match wait {
            Some(w) if !called => Err(ProviderError::CircuitOpen { retry_in_ms: w.as_millis() as u64 + 1 }),
            _ => Err(last),
        }
    }

    /// `Err(param)` when no route of `model` can honour everything `req`
    /// asks for: checked before anything is held, so a request that would be
    /// served with a field ignored is refused instead.
    pub fn check_chat(&self, model: &Model, req: &ChatRequest) -> Result<(), String> {
        let mut first = None;
        for r in &model.routes {
            let Some(n) = self.providers.get(&r.provider) else { continue };
            match n.provider.unsupported(req) {
                None => return Ok(()),
                Some(param) => first = first.or(Some(param)),
            }
        }
        Err(first.unwrap_or_else(|| "model".into()))
    }

    pub fn chat(&self, model: &Model, req: &ChatRequest) -> Result<(ChatResponse, CallInfo), ProviderError> {
        self.with_failover_among(
            model,
            "chat",
            |p| p.unsupported(req).is_none(),
            |p, upstream| match p {
                Provider::OpenAi(o) => o.chat(upstream, req),
                Provider::DashScope { chat, .. } => chat.chat(upstream, req),
                Provider::Anthropic(a) => a.chat(upstream, req),
                Provider::Google(g) => g.chat(upstream, req),
                Provider::Dev => Ok(dev::chat(req)),
            },
        )
    }

    /// Fails over only until a stream is established; after that, a broken
    /// stream is the caller's to handle.
    pub fn chat_stream(&self, model: &Model, req: &ChatRequest) -> Result<(ChatStream, CallInfo), ProviderError> {
        self.with_failover_among(
            model,
            "chat_stream",
            |p| p.unsupported(req).is_none(),
            |p, upstream| match p {
                Provider::OpenAi(o) => o.chat_stream(upstream, req),
                Provider::DashScope { chat, .. } => chat.chat_stream(upstream, req),
                Provider::Anthropic(a) => a.chat_stream(upstream, req),
                Provider::Google(g) => g.chat_stream(upstream, req),
                Provider::Dev => Ok(dev::chat_stream(req)),
            },
        )
    }

    /// Whether any route of `model` speaks Anthropic's Messages API: such a
    /// model's Messages calls go to those routes with the client's body.
    pub fn has_messages(&self, model: &Model) -> bool {
        self.any_route(model, |p| p.anthropic().is_some())
    }

    /// Whether any route of `model` has a provider that `is`.
    fn any_route(&self, model: &Model, is: impl Fn(&Provider) -> bool) -> bool {
        model.routes.iter().any(|r| self.providers.get(&r.provider).is_some_and(|n| is(&n.provider)))
    }

    /// [`Self::with_failover_among`] the routes whose provider is of the
    /// kind `kind` picks out, calling it as that kind.
    fn with_kind<K, T>(
        &self,
        model: &Model,
        kind: fn(&Provider) -> Option<&K>,
        op: &'static str,
        mut call: impl FnMut(&K, &str) -> Result<T, ProviderError>,
    ) -> Result<(T, CallInfo), ProviderError> {
        self.with_failover_among(
            model,
            op,
            |p| kind(p).is_some(),
            |p, upstream| match kind(p) {
                Some(k) => call(k, upstream),
                None => Err(ProviderError::Unavailable(format!("no route of this provider kind serves {op}"))),
            },
        )
    }

    /// `POST /v1/messages` with the client's body to an `anthropic` route.
    pub fn messages(
        &self,
        model: &Model,
        body: &serde_json::Map<String, serde_json::Value>,
        h: &anthropic::ClientHeaders,
    ) -> Result<(serde_json::Value, CallInfo), ProviderError> {
        self.with_kind(model, Provider::anthropic, "messages", |a, upstream| a.messages(upstream, body, h))
    }

    pub fn messages_stream(
        &self,
        model: &Model,
        body: &serde_json::Map<String, serde_json::Value>,
        h: &anthropic::ClientHeaders,
    ) -> Result<(RawStream, CallInfo), ProviderError> {
        self.with_kind(model, Provider::anthropic, "messages_stream", |a, upstream| {
            a.messages_stream(upstream, body, h)
        })
    }

    pub fn count_tokens(
        &self,
        model: &Model,
        body: &serde_json::Map<String, serde_json::Value>,
        h: &anthropic::ClientHeaders,
    ) -> Result<(serde_json::Value, CallInfo), ProviderError> {
        self.with_kind(model, Provider::anthropic, "count_tokens", |a, upstream| a.count_tokens(upstream, body, h))
    }

    /// Whether any route of `model` speaks Gemini's API: such a model's
    /// `/v1beta` calls go to those routes with the client's body.
    pub fn has_gemini(&self, model: &Model) -> bool {
        self.any_route(model, |p| p.google().is_some())
    }

    /// `:generateContent` with the client's body to a `google` route.
    pub fn gemini(
        &self,
        model: &Model,
        body: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(serde_json::Value, CallInfo), ProviderError> {
        self.with_kind(model, Provider::google, "gemini", |g, upstream| g.generate(upstream, body))
    }

    pub fn gemini_stream(
        &self,
        model: &Model,
        body: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(RawStream, CallInfo), ProviderError> {
        self.with_kind(model, Provider::google, "gemini_stream", |g, upstream| g.generate_stream(upstream, body))
    }

    pub fn gemini_count(
        &self,
        model: &Model,
        body: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(serde_json::Value, CallInfo), ProviderError> {
        self.with_kind(model, Provider::google, "gemini_count", |g, upstream| g.count_tokens(upstream, body))
    }

    /// Text to speech on an `openai` route: the audio as it comes.
    pub fn speech(
        &self,
        model: &Model,
        body: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(types::AudioStream, CallInfo), ProviderError> {
        self.with_kind(model, Provider::openai, "speech", |o, upstream| o.speech(upstream, body))
    }

    /// Speech to text on an `openai` route: the answer's media type and bytes.
    pub fn transcribe(
        &self,
        model: &Model,
        parts: &[types::FormPart],
    ) -> Result<((String, Vec<u8>), CallInfo), ProviderError> {
        self.with_kind(model, Provider::openai, "transcription", |o, upstream| o.transcribe(upstream, parts))
    }

    pub fn moderate(
        &self,
        model: &Model,
        body: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(serde_json::Value, CallInfo), ProviderError> {
        self.with_kind(model, Provider::openai, "moderation", |o, upstream| o.moderate(upstream, body))
    }

    /// Whether any route of `model` speaks OpenAI's Responses API.
    pub fn has_responses(&self, model: &Model) -> bool {
        self.any_route(model, Provider::full_openai)
    }

    /// `POST /v1/responses` to an `openai` route, the answer whole.
    pub fn responses(
        &self,
        model: &Model,
        body: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(serde_json::Value, CallInfo), ProviderError> {
        self.with_kind(model, Provider::openai, "responses", |o, upstream| o.responses(upstream, body))
    }

    pub fn responses_stream(
        &self,
        model: &Model,
        body: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(RawStream, CallInfo), ProviderError> {
        self.with_kind(model, Provider::openai, "responses_stream", |o, upstream| o.responses_stream(upstream, body))
    }

    /// Embeddings: the client's body to an OpenAI-compatible route (or the
    /// dev provider); the answer whole, with `usage.prompt_tokens`.
    pub fn embeddings(
        &self,
        model: &Model,
        body: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(serde_json::Value, CallInfo), ProviderError> {
        self.with_failover_among(
            model,
            "embeddings",
            |p| p.passes_through() || matches!(p, Provider::Dev),
            |p, upstream| match p {
                Provider::OpenAi(o) => o.embeddings(upstream, body),
                Provider::DashScope { chat, .. } => chat.embeddings(upstream, body),
                Provider::Dev => Ok(dev::embeddings(body)),
                Provider::Anthropic(_) | Provider::Google(_) => {
                    Err(ProviderError::Unavailable("this provider kind serves no embeddings here".into()))
                }
            },
        )
    }

    /// `Err` naming the field when no route of `model` can honour `req`.
    pub fn check_image(&self, model: &Model, req: &ImageRequest) -> Result<(), String> {
        let any = self.any_route(model, Provider::full_openai);
        if req.b64_json && !any {
            Err("response_format".into())
        } else if req.quality.is_some() && !any {
            Err("quality".into())
        } else {
            Ok(())
        }
    }

    pub fn image(&self, model: &Model, req: &ImageRequest) -> Result<(ImageResponse, CallInfo), ProviderError> {
        let inline = req.b64_json;
        self.with_failover_among(
            model,
            "image",
            |p| !(inline || req.quality.is_some()) || p.full_openai(),
            |p, upstream| match p {
                Provider::OpenAi(o) => o.image(upstream, req),
                Provider::DashScope { tasks, .. } => tasks.image(upstream, req).map(|urls| ImageResponse { urls }),
                Provider::Anthropic(_) | Provider::Google(_) => {
                    Err(ProviderError::Unavailable("this provider kind has no image generation here".into()))
                }
                Provider::Dev => Ok(dev::image(req)),
            },
        )
    }

    /// Starts an image generation for a job: providers with a task API
    /// (DashScope) return the task to persist and poll; others answer now.
    pub fn image_submit(
        &self,
        model: &Model,
        req: &ImageRequest,
    ) -> Result<(Submitted<ImageResponse>, CallInfo), ProviderError> {
        let (s, info) = self.with_failover(model, "image_submit", |p, upstream| match p {
            Provider::OpenAi(o) => o.image(upstream, req).map(Submitted::Done),
            Provider::DashScope { tasks, .. } => {
                tasks.submit_image(upstream, req).map(|task_id| Submitted::Task(TaskRef { route_index: 0, task_id }))
            }
            Provider::Anthropic(_) | Provider::Google(_) => {
                Err(ProviderError::Unavailable("this provider kind has no image generation here".into()))
            }
            Provider::Dev => Ok(Submitted::Done(dev::image(req))),
        })?;
        let s = match s {
            Submitted::Task(t) => Submitted::Task(TaskRef { route_index: info.route_index, ..t }),
            done => done,
        };
        Ok((s, info))
    }

    /// Submits a video task; the caller persists the `TaskRef` before
    /// anything else, so a restart polls it instead of paying twice.
    pub fn video_submit(&self, model: &Model, req: &VideoRequest) -> Result<(TaskRef, CallInfo), ProviderError> {
        let (task_id, info) = self.with_failover(model, "video_submit", |p, upstream| match p {
            Provider::DashScope { tasks, .. } => tasks.submit_video(upstream, req),
            Provider::Dev => Ok(dev::submit_video(req)),
            _ => Err(ProviderError::Unavailable("this provider has no video generation".into())),
        })?;
        Ok((TaskRef { route_index: info.route_index, task_id }, info))
    }

    fn task_provider(&self, model: &Model, task: &TaskRef) -> Result<&Named, ProviderError> {
        let route = model.routes.get(task.route_index).ok_or_else(|| {
            ProviderError::Unavailable(format!("model {} no longer has route {}", model.name, task.route_index))
        })?;
        self.providers
            .get(&route.provider)
            .ok_or_else(|| ProviderError::Unavailable(format!("provider {} is no longer configured", route.provider)))
    }

    pub fn task_poll(&self, model: &Model, task: &TaskRef) -> Result<TaskState, ProviderError> {
        match &self.task_provider(model, task)?.provider {
            Provider::DashScope { tasks, .. } => tasks.poll(&task.task_id),
            Provider::Dev => Ok(dev::poll(&task.task_id)),
            _ => Err(ProviderError::Unavailable("this provider has no tasks".into())),
        }
    }

    /// Best effort: a task that already finished cannot be cancelled.
    pub fn task_cancel(&self, model: &Model, task: &TaskRef) -> Result<(), ProviderError> {
        match &self.task_provider(model, task)?.provider {
            Provider::DashScope { tasks, .. } => tasks.cancel(&task.task_id),
            _ => Ok(()),
        }
    }
}
