//! The ModelAdapter: the single entry point for every AI call.
//!
//! It resolves a public model name in the live catalog (`live`: channels,
//! their keys, models and prices, from the database) to the upstream keys
//! that can serve it, tries them in the order `select` gives (priority,
//! then weight; a conversation's key first), calls the provider with `ureq`
//! (blocking, with the channel's timeouts), fails over on connect errors,
//! timeouts, 429, 5xx and refused keys, never twice to one key, and returns
//! provider-neutral responses with usage. A key the provider refuses (401,
//! 403, quota) is disabled at once (`health`); one that keeps failing cools
//! down (its breaker). Each failure is a system log with channel, status
//! and latency (never the key).
//!
//! Nothing outside this module knows a provider's wire format; nothing in it
//! knows about credits, holds or HTTP clients.

pub mod admin;
pub mod anthropic;
pub mod breaker;
pub mod catalog;
pub mod chat_map;
pub mod dashscope;
pub mod dev;
pub mod error;
pub mod form;
pub mod google;
pub mod health;
pub mod http;
pub mod litellm;
pub mod live;
pub mod messages;
pub mod openai;
pub mod select;
pub mod sse;
pub mod store;
pub mod types;

use crate::config::{ChannelsConfig, Config, ProviderConfig};
use crate::logs::{self, Level, NewLog};
use crate::storage::Db;
use crate::support::sealed::SealKey;
use arc_swap::ArcSwap;
use breaker::Breakers;
pub use catalog::{Model, ModelKind, Price};
pub use error::ProviderError;
use live::{Catalog, Channel, Lane};
use serde_json::json;
use std::sync::Arc;
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

/// Which route served a call, for logs and the ledger description.
#[derive(Debug, Clone)]
pub struct CallInfo {
    /// The channel's name.
    pub provider: String,
    pub upstream_model: String,
    pub latency_ms: u64,
    /// The channel's id.
    pub channel: String,
    /// The upstream key's id (the channel's, for a channel with no key).
    pub key: String,
}

/// A submitted asynchronous task: the key that took it and its id there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRef {
    pub lane: TaskLane,
    pub task_id: String,
}

/// Which upstream key holds a task: its id, or (tasks submitted before
/// channels) the index of the model's route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskLane {
    Key(String),
    Route(usize),
}

/// A job's provider call: finished at once, or a task to poll.
pub enum Submitted<T> {
    Done(T),
    Task(TaskRef),
}

impl TaskRef {
    /// The form stored in `jobs.provider_task_id`: `key:id` (`route:id`
    /// before channels, still read).
    pub fn encode(&self) -> String {
        match &self.lane {
            TaskLane::Key(k) => format!("{k}:{}", self.task_id),
            TaskLane::Route(i) => format!("{i}:{}", self.task_id),
        }
    }

    pub fn decode(s: &str) -> Option<TaskRef> {
        let (lane, id) = s.split_once(':')?;
        let lane = match lane.parse() {
            Ok(i) => TaskLane::Route(i),
            Err(_) if !lane.is_empty() => TaskLane::Key(lane.to_owned()),
            Err(_) => return None,
        };
        Some(TaskRef { lane, task_id: id.to_owned() })
    }
}

pub struct ModelAdapter {
    live: ArcSwap<Catalog>,
    breakers: Breakers,
    affinity: select::Affinity,
    limits: select::KeyLimits,
    health: health::Health,
    db: Db,
    seal_key: Option<SealKey>,
    /// Threads that may call a provider at once (each channel's agent keeps
    /// that many connections).
    callers_max: usize,
    /// The config file's keys, read from their variables at start.
    env_keys: std::collections::HashMap<String, String>,
    /// Serializes rebuilds, so an older snapshot never replaces a newer one
    /// (requests never take it).
    reloading: std::sync::Mutex<()>,
}

/// A provider of `cfg`'s kind calling with `key`.
fn build_provider(cfg: &ProviderConfig, key: Option<String>, agent: ureq::Agent) -> Result<Provider, String> {
    let base = |default: &str| cfg.base_url.clone().unwrap_or_else(|| default.to_owned());
    Ok(match cfg.kind.as_str() {
        "openai" => Provider::OpenAi(openai::OpenAi {
            base_url: base("https://api.openai.com/v1"),
            key,
            agent,
            unsent_bound: "max_completion_tokens",
        }),
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
                    unsent_bound: "max_tokens",
                },
                tasks: dashscope::DashScope { base_url: b, key, agent, task_timeout: INLINE_TASK_TIMEOUT },
            }
        }
        "dev" => Provider::Dev,
        other => return Err(format!("unknown provider kind {other:?}")),
    })
}

/// One attempt a call may make: a route of the model and a key of its
/// channel.
struct Attempt<'a> {
    route: &'a catalog::RouteSpec,
    channel: &'a Arc<Channel>,
    lane: &'a Lane,
}

impl ModelAdapter {
    /// Seeds the catalog tables from `config` and builds the first
    /// snapshot; refuses to start when a stored key cannot be opened.
    pub fn new(
        config: &Config,
        db: Db,
        seal_key: Option<SealKey>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ModelAdapter, String> {
        let env_keys: std::collections::HashMap<String, String> = config
            .providers
            .values()
            .filter_map(|p| p.api_key_env.as_ref())
            .filter_map(|var| env(var).filter(|v| !v.is_empty()).map(|v| (var.clone(), v)))
            .collect();
        let (cfg, keys) = (config.clone(), env_keys.clone());
        db.write_once(move |conn| live::seed(conn, &cfg, &|var| keys.get(var).cloned())).map_err(|e| match e {
            crate::error::Error::Internal(m) => m,
            other => other.to_string(),
        })?;
        // Every thread that may call a provider at once: upstream and job workers.
        let callers_max = config.server.upstream_workers + config.jobs.workers;
        let c: &ChannelsConfig = &config.channels;
        let adapter = ModelAdapter {
            live: ArcSwap::from_pointee(Catalog::default()),
            breakers: Breakers::default(),
            affinity: select::Affinity::new(c.affinity_entries_max, Duration::from_secs(c.affinity_ttl_s)),
            limits: select::KeyLimits::default(),
            health: health::Health::default(),
            db,
            seal_key,
            callers_max,
            env_keys,
            reloading: std::sync::Mutex::new(()),
        };
        let problems = adapter.reload().map_err(|e| e.to_string())?;
        if !problems.is_empty() {
            return Err(format!("the catalog cannot be loaded: {}", problems.join("; ")));
        }
        Ok(adapter)
    }

    /// Reads the catalog tables and swaps in a new snapshot; what could not
    /// be built is returned (and left out).
    pub fn reload(&self) -> crate::error::Result<Vec<String>> {
        let _one = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let rows = self.db.read(live::read)?;
        let mut problems = Vec::new();
        let env = |var: &str| self.env_keys.get(var).cloned();
        let catalog = live::build(&rows, self.seal_key.as_ref(), &env, self.callers_max, &mut problems);
        self.live.store(Arc::new(catalog));
        Ok(problems)
    }

    /// Reloads when another instance changed the catalog.
    pub fn reload_if_changed(&self) -> crate::error::Result<()> {
        let stored = self.db.read(store::version)?;
        if stored != self.live.load().version {
            for p in self.reload()? {
                logs::record(&self.db, NewLog::system(Level::Error, "catalog_entry_unusable", json!({"problem": p})));
            }
        }
        Ok(())
    }

    pub fn seal_key(&self) -> Option<&SealKey> {
        self.seal_key.as_ref()
    }

    pub fn models(&self) -> Vec<Arc<Model>> {
        self.live.load().models.clone()
    }

    pub fn model(&self, name: &str) -> Option<Arc<Model>> {
        self.live.load().model(name).cloned()
    }

    /// Counts tokens a call of `key` used against its `tpm`.
    pub fn used_tokens(&self, key: &str, tokens: u64) {
        self.limits.add_tokens(key, tokens);
    }

    /// What each key has done lately (latency, last error), by key id.
    pub fn key_stats(&self, key: &str) -> health::KeyStats {
        self.health.stats(key)
    }

    /// Tries the model's keys in selection order until one answers.
    /// Transient failures and refused keys fail over; a request the
    /// provider rejects is returned at once.
    fn with_failover<T>(
        &self,
        model: &Model,
        op: &'static str,
        call: impl FnMut(&Provider, &str) -> Result<T, ProviderError>,
    ) -> Result<(T, CallInfo), ProviderError> {
        self.with_failover_among(model, op, &|| None, |_| true, call)
    }

    /// The attempts a call of `model` may make, in order: routes by
    /// priority, channels of one priority in weighted random order, the
    /// enabled keys of a channel from a random one on. The key that served
    /// `conversation` goes first when it is among the first priority's.
    fn attempts<'c>(
        &self,
        cat: &'c Catalog,
        model: &'c Model,
        can: &dyn Fn(&Provider) -> bool,
        conversation: &dyn Fn() -> Option<String>,
    ) -> (Vec<Attempt<'c>>, Option<String>) {
        let routes: Vec<(&catalog::RouteSpec, &Arc<Channel>)> = model
            .routes
            .iter()
            .filter_map(|r| {
                let ch = cat.channels.get(&r.channel)?;
                (ch.enabled && ch.lanes.first().is_some_and(|l| can(&l.provider))).then_some((r, ch))
            })
            .collect();
        let mut out: Vec<Attempt<'c>> = Vec::new();
        let mut first_group = 0;
        for (g, group) in routes.chunk_by(|a, b| a.0.priority == b.0.priority).enumerate() {
            let order = if group.len() == 1 {
                vec![0]
            } else {
                select::weighted_order(&group.iter().map(|(_, c)| c.weight).collect::<Vec<_>>())
            };
            for i in order {
                let (route, channel) = group[i];
                let lanes: Vec<&Lane> = channel.lanes.iter().filter(|l| l.enabled).collect();
                let start = if lanes.len() > 1 { select::below(lanes.len() as u64) as usize } else { 0 };
                for j in 0..lanes.len() {
                    let lane = lanes[(start + j) % lanes.len()];
                    // Never twice to one key for one upstream model.
                    if !out.iter().any(|a| a.lane.key == lane.key && a.route.model == route.model) {
                        out.push(Attempt { route, channel, lane });
                    }
                }
            }
            if g == 0 {
                first_group = out.len();
            }
        }
        // Affinity matters only where there is a choice: a model with one
        // key (most config files) never names its conversation.
        let conversation = if first_group > 1 { conversation() } else { None };
        if let Some(key) = conversation.as_deref().and_then(|c| self.affinity.get(c))
            && let Some(pos) = out[..first_group].iter().position(|a| a.lane.key == key)
        {
            let a = out.remove(pos);
            out.insert(0, a);
        }
        (out, conversation)
    }

    /// [`Self::with_failover`] over the keys whose provider `can` serve
    /// the request (the others are skipped, not failed), the key that served
    /// `conversation` first.
    fn with_failover_among<T>(
        &self,
        model: &Model,
        op: &'static str,
        conversation: &dyn Fn() -> Option<String>,
        can: impl Fn(&Provider) -> bool,
        mut call: impl FnMut(&Provider, &str) -> Result<T, ProviderError>,
    ) -> Result<(T, CallInfo), ProviderError> {
        let cat = self.live.load();
        let (attempts, conversation) = self.attempts(&cat, model, &can, conversation);
        let mut last = ProviderError::Unavailable(format!("model {} has no usable route", model.name));
        let (mut called, mut limited) = (false, false);
        let mut wait: Option<Duration> = None;
        for (i, a) in attempts.iter().enumerate() {
            let breaker_key = format!("{}/{}", a.lane.key, a.route.model);
            if let Err(w) = self.breakers.check(&breaker_key) {
                wait = Some(wait.map_or(w, |x| x.min(w)));
                continue;
            }
            // Its own per-minute limits: pass it over before the provider
            // refuses it.
            if !self.limits.take(&a.lane.key, a.channel.rpm, a.channel.tpm) {
                limited = true;
                continue;
            }
            called = true;
            let started = Instant::now();
            let result = call(&a.lane.provider, &a.route.model);
            let latency_ms = started.elapsed().as_millis() as u64;
            let m = crate::metrics::global();
            let name = a.channel.name.as_str();
            m.provider_duration.with_label_values(&[name]).observe(latency_ms as f64 / 1000.0);
            match result {
                Ok(v) => {
                    self.breakers.success(&breaker_key);
                    self.health.succeeded(&a.lane.key, latency_ms);
                    m.provider_calls.with_label_values(&[name, "ok"]).inc();
                    if i > 0 {
                        logs::record(
                            &self.db,
                            NewLog::system(
                                Level::Info,
                                "provider_failover_succeeded",
                                json!({"model": model.name, "provider": name, "channel": a.channel.id, "key": a.lane.key,
                                       "attempt": i, "op": op}),
                            ),
                        );
                    }
                    if let Some(c) = &conversation {
                        self.affinity.remember(c, &a.lane.key);
                    }
                    let info = CallInfo {
                        provider: a.channel.name.clone(),
                        upstream_model: a.route.model.clone(),
                        latency_ms,
                        channel: a.channel.id.clone(),
                        key: a.lane.key.clone(),
                    };
                    return Ok((v, info));
                }
                Err(e) => {
                    m.provider_calls.with_label_values(&[name, e.status_label().as_str()]).inc();
                    self.health.failed(&a.lane.key, latency_ms, &e);
                    let more = i + 1 < attempts.len();
                    let transient = e.is_transient();
                    let level = if transient && more { Level::Warn } else { Level::Error };
                    logs::record(
                        &self.db,
                        NewLog::system(
                            level,
                            "provider_call_failed",
                            json!({"model": model.name, "provider": name, "channel": a.channel.id, "key": a.lane.key,
                                   "kind": a.channel.kind, "upstream_model": a.route.model, "op": op,
                                   "status": e.status_label(), "error": e.to_string(), "latency_ms": latency_ms,
                                   "failing_over": transient && more}),
                        ),
                    );
                    if let ProviderError::KeyRefused { .. } = &e {
                        self.disable_key(a.channel, &a.lane.key, &e);
                    } else if !transient {
                        return Err(e);
                    } else if self.breakers.failure(&breaker_key, &a.channel.breaker) {
                        logs::record(
                            &self.db,
                            NewLog::system(
                                Level::Error,
                                "provider_circuit_opened",
                                json!({"route": format!("{}/{}", a.channel.name, a.route.model), "channel": a.channel.id,
                                       "key": a.lane.key, "cool_down_ms": a.channel.breaker.cool_down.as_millis() as u64}),
                            ),
                        );
                    }
                    last = e;
                }
            }
        }
        match (called, wait, limited) {
            (false, _, true) => Err(ProviderError::CircuitOpen { retry_in_ms: select::ms_to_next_minute() }),
            (false, Some(w), _) => Err(ProviderError::CircuitOpen { retry_in_ms: w.as_millis() as u64 + 1 }),
            _ => Err(last),
        }
    }

    /// Takes a key the provider refused out of service: stored as failed
    /// with the reason, announced (log, event, metric), the snapshot
    /// rebuilt so no later call reaches it. The probe may enable it again.
    fn disable_key(&self, channel: &Channel, key: &str, why: &ProviderError) {
        self.affinity.forget_key(key);
        match health::disable(&self.db, &channel.id, &channel.name, key, why) {
            Ok(true) => {
                crate::metrics::global().channel_keys_disabled.with_label_values(&[channel.name.as_str()]).inc();
                if let Err(e) = self.reload() {
                    log::error!("catalog reload after disabling key {key}: {e}");
                }
            }
            Ok(false) => {}
            Err(e) => log::error!("disabling key {key} of channel {}: {e}", channel.name),
        }
    }

    /// One real call through one key of a channel (`key`, else its first
    /// enabled one) to one model it serves (`model`, else its first chat or
    /// embedding model): how long it took and what came back. Health is
    /// not changed by it (its latency and error are recorded); the breaker
    /// and the per-key limits are bypassed.
    pub fn test_channel(&self, channel: &str, model: Option<&str>, key: Option<&str>) -> Result<TestCall, String> {
        let cat = self.live.load();
        let ch = cat.channels.get(channel).ok_or("no such channel")?;
        let lane = match key {
            Some(k) => ch.lanes.iter().find(|l| l.key == k).ok_or("no such key in this channel")?,
            None => ch.lanes.iter().find(|l| l.enabled).or(ch.lanes.first()).ok_or("the channel has no usable key")?,
        };
        let route = cat
            .models
            .iter()
            .filter(|m| model.is_none_or(|n| m.name == n))
            .filter(|m| matches!(m.kind, ModelKind::Chat | ModelKind::Embedding))
            .find_map(|m| m.routes.iter().find(|r| r.channel == ch.id).map(|r| (m.clone(), r.model.clone())));
        let Some((m, upstream)) = route else {
            return Err("the channel serves no chat or embedding model to test (name one with `model`)".into());
        };
        let t = probe_call(&lane.provider, &m, &upstream, &lane.key);
        match &t.error {
            None => self.health.succeeded(&lane.key, t.latency_ms),
            Some(e) => self.health.failed_with(&lane.key, t.latency_ms, e),
        }
        Ok(t)
    }

    /// Calls every key health disabled once; a key that answers is enabled
    /// again. How many came back.
    pub fn probe(&self) -> usize {
        let cat = self.live.load_full();
        let failed: Vec<(String, String)> = match self.db.read(store::keys) {
            Ok(keys) => keys.into_iter().filter(|k| k.status == "failed").map(|k| (k.channel_id, k.id)).collect(),
            Err(e) => {
                log::error!("probe: cannot read keys: {e}");
                return 0;
            }
        };
        let mut back = 0;
        for (channel, key) in failed {
            let Some(ch) = cat.channels.get(&channel) else { continue };
            let Ok(t) = self.test_channel(&channel, None, Some(&key)) else { continue };
            if t.ok && health::recovered(&self.db, &ch.name, &key).unwrap_or(false) {
                back += 1;
            }
        }
        if back > 0
            && let Err(e) = self.reload()
        {
            log::error!("catalog reload after the probe: {e}");
        }
        back
    }

    /// `Err(param)` when no route of `model` can honour everything `req`
    /// asks for: checked before anything is held, so a request that would be
    /// served with a field ignored is refused instead.
    pub fn check_chat(&self, model: &Model, req: &ChatRequest) -> Result<(), String> {
        let cat = self.live.load();
        let mut first = None;
        for p in route_providers(&cat, model) {
            match p.unsupported(req) {
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
            &|| conversation_of_chat(model, req),
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
            &|| conversation_of_chat(model, req),
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
        let cat = self.live.load();
        route_providers(&cat, model).any(is)
    }

    /// [`Self::with_failover_among`] the routes whose provider is of the
    /// kind `kind` picks out, calling it as that kind.
    fn with_kind<K, T>(
        &self,
        model: &Model,
        kind: fn(&Provider) -> Option<&K>,
        op: &'static str,
        body: Option<&serde_json::Map<String, serde_json::Value>>,
        mut call: impl FnMut(&K, &str) -> Result<T, ProviderError>,
    ) -> Result<(T, CallInfo), ProviderError> {
        self.with_failover_among(
            model,
            op,
            &|| body.and_then(|b| select::conversation_of(&model.name, b)),
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
        self.with_kind(model, Provider::anthropic, "messages", Some(body), |a, upstream| a.messages(upstream, body, h))
    }

    pub fn messages_stream(
        &self,
        model: &Model,
        body: &serde_json::Map<String, serde_json::Value>,
        h: &anthropic::ClientHeaders,
    ) -> Result<(RawStream, CallInfo), ProviderError> {
        self.with_kind(model, Provider::anthropic, "messages_stream", Some(body), |a, upstream| {
            a.messages_stream(upstream, body, h)
        })
    }

    pub fn count_tokens(
        &self,
        model: &Model,
        body: &serde_json::Map<String, serde_json::Value>,
        h: &anthropic::ClientHeaders,
    ) -> Result<(serde_json::Value, CallInfo), ProviderError> {
        self.with_kind(model, Provider::anthropic, "count_tokens", None, |a, upstream| {
            a.count_tokens(upstream, body, h)
        })
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
        self.with_kind(model, Provider::google, "gemini", Some(body), |g, upstream| g.generate(upstream, body))
    }

    pub fn gemini_stream(
        &self,
        model: &Model,
        body: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(RawStream, CallInfo), ProviderError> {
        self.with_kind(model, Provider::google, "gemini_stream", Some(body), |g, upstream| {
            g.generate_stream(upstream, body)
        })
    }

    pub fn gemini_count(
        &self,
        model: &Model,
        body: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(serde_json::Value, CallInfo), ProviderError> {
        self.with_kind(model, Provider::google, "gemini_count", None, |g, upstream| g.count_tokens(upstream, body))
    }

    /// Text to speech on an `openai` route: the audio as it comes.
    pub fn speech(
        &self,
        model: &Model,
        body: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(types::AudioStream, CallInfo), ProviderError> {
        self.with_kind(model, Provider::openai, "speech", None, |o, upstream| o.speech(upstream, body))
    }

    /// Speech to text on an `openai` route: the answer's media type and bytes.
    pub fn transcribe(
        &self,
        model: &Model,
        parts: &[types::FormPart],
    ) -> Result<((String, Vec<u8>), CallInfo), ProviderError> {
        self.with_kind(model, Provider::openai, "transcription", None, |o, upstream| o.transcribe(upstream, parts))
    }

    pub fn moderate(
        &self,
        model: &Model,
        body: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(serde_json::Value, CallInfo), ProviderError> {
        self.with_kind(model, Provider::openai, "moderation", None, |o, upstream| o.moderate(upstream, body))
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
        self.with_kind(model, Provider::openai, "responses", Some(body), |o, upstream| o.responses(upstream, body))
    }

    pub fn responses_stream(
        &self,
        model: &Model,
        body: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(RawStream, CallInfo), ProviderError> {
        self.with_kind(model, Provider::openai, "responses_stream", Some(body), |o, upstream| {
            o.responses_stream(upstream, body)
        })
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
            &|| None,
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
        match req.openai_only().or(req.quality.as_ref().map(|_| "quality")) {
            Some(field) if !any => Err(field.to_owned()),
            _ => Ok(()),
        }
    }

    pub fn image(&self, model: &Model, req: &ImageRequest) -> Result<(ImageResponse, CallInfo), ProviderError> {
        let openai_only = req.openai_only().is_some() || req.quality.is_some();
        self.with_failover_among(
            model,
            "image",
            &|| None,
            |p| !openai_only || p.full_openai(),
            |p, upstream| match p {
                Provider::OpenAi(o) => o.image(upstream, req),
                Provider::DashScope { tasks, .. } => {
                    tasks.image(upstream, req).map(|urls| ImageResponse { urls, raw: None })
                }
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
            Provider::DashScope { tasks, .. } => tasks
                .submit_image(upstream, req)
                .map(|task_id| Submitted::Task(TaskRef { lane: TaskLane::Route(0), task_id })),
            Provider::Anthropic(_) | Provider::Google(_) => {
                Err(ProviderError::Unavailable("this provider kind has no image generation here".into()))
            }
            Provider::Dev => Ok(Submitted::Done(dev::image(req))),
        })?;
        let s = match s {
            Submitted::Task(t) => Submitted::Task(TaskRef { lane: TaskLane::Key(info.key.clone()), ..t }),
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
        Ok((TaskRef { lane: TaskLane::Key(info.key.clone()), task_id }, info))
    }

    /// The provider holding `task`: its key's, even when the key has been
    /// disabled since (the task is still there to poll).
    fn task_provider(
        &self,
        model: &Model,
        task: &TaskRef,
        act: &mut dyn FnMut(&Provider) -> Result<TaskState, ProviderError>,
    ) -> Result<TaskState, ProviderError> {
        let cat = self.live.load();
        let lane = match &task.lane {
            TaskLane::Key(k) => cat.lane(k).map(|(_, l)| l),
            TaskLane::Route(i) => {
                model.routes.get(*i).and_then(|r| cat.channels.get(&r.channel)).and_then(|c| c.lanes.first())
            }
        };
        match lane {
            Some(l) => act(&l.provider),
            None => Err(ProviderError::Unavailable(format!(
                "the key that took task {} is no longer configured",
                task.task_id
            ))),
        }
    }

    /// Which channel and key hold `task` (a job resumed after a restart
    /// has no `CallInfo` of its submission).
    pub fn task_info(&self, model: &Model, task: &TaskRef) -> CallInfo {
        let cat = self.live.load();
        let (channel, key) = match &task.lane {
            TaskLane::Key(k) => (cat.lane(k).map(|(c, _)| c.id.clone()).unwrap_or_default(), k.clone()),
            TaskLane::Route(i) => {
                let c = model.routes.get(*i).map(|r| r.channel.clone()).unwrap_or_default();
                (c.clone(), c)
            }
        };
        let route = model.routes.iter().find(|r| r.channel == channel);
        CallInfo {
            provider: route.map(|r| r.provider.clone()).unwrap_or_default(),
            upstream_model: route.map(|r| r.model.clone()).unwrap_or_default(),
            latency_ms: 0,
            channel,
            key,
        }
    }

    pub fn task_poll(&self, model: &Model, task: &TaskRef) -> Result<TaskState, ProviderError> {
        self.task_provider(model, task, &mut |p| match p {
            Provider::DashScope { tasks, .. } => tasks.poll(&task.task_id),
            Provider::Dev => Ok(dev::poll(&task.task_id)),
            _ => Err(ProviderError::Unavailable("this provider has no tasks".into())),
        })
    }

    /// Best effort: a task that already finished cannot be cancelled.
    pub fn task_cancel(&self, model: &Model, task: &TaskRef) -> Result<(), ProviderError> {
        self.task_provider(model, task, &mut |p| match p {
            Provider::DashScope { tasks, .. } => tasks.cancel(&task.task_id).map(|()| TaskState::Running),
            _ => Ok(TaskState::Running),
        })
        .map(|_| ())
    }
}

/// The provider of each route of `model` whose channel is enabled (its
/// first key's: every key of a channel is of its kind).
fn route_providers<'c>(cat: &'c Catalog, model: &'c Model) -> impl Iterator<Item = &'c Provider> {
    model
        .routes
        .iter()
        .filter_map(|r| cat.channels.get(&r.channel))
        .filter(|c| c.enabled)
        .filter_map(|c| c.lanes.iter().find(|l| l.enabled))
        .map(|l| &l.provider)
}

/// The conversation of a chat request, for affinity: from the client's
/// body, or the messages of a request tollgate built (a text job).
fn conversation_of_chat(model: &Model, req: &ChatRequest) -> Option<String> {
    if !req.passthrough.is_empty() {
        return select::conversation_of(&model.name, &req.passthrough);
    }
    let first: Vec<serde_json::Value> =
        req.messages.iter().take(1).map(|m| json!({"role": m.role, "content": m.content})).collect();
    let mut body = serde_json::Map::new();
    body.insert("messages".into(), serde_json::Value::Array(first));
    select::conversation_of(&model.name, &body)
}

/// What one test call did.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct TestCall {
    pub ok: bool,
    pub key_id: String,
    pub model: String,
    pub upstream_model: String,
    pub latency_ms: u64,
    /// The provider's status when it refused (`connect_error`, `timeout`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The start of the answer's text (chat) or its vector's length.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Test-call output bound: enough for a word.
const TEST_MAX_TOKENS: u32 = 8;

fn probe_call(p: &Provider, model: &Model, upstream: &str, key: &str) -> TestCall {
    let started = Instant::now();
    let result: Result<String, ProviderError> = if model.kind == ModelKind::Embedding {
        let mut body = serde_json::Map::new();
        body.insert("model".into(), json!(upstream));
        body.insert("input".into(), json!("ping"));
        match p {
            Provider::OpenAi(o) => o.embeddings(upstream, &body),
            Provider::DashScope { chat, .. } => chat.embeddings(upstream, &body),
            Provider::Dev => Ok(dev::embeddings(&body)),
            _ => Err(ProviderError::Unavailable("this provider kind serves no embeddings".into())),
        }
        .map(|v| {
            format!("{} dimensions", v.pointer("/data/0/embedding").and_then(|e| e.as_array()).map_or(0, Vec::len))
        })
    } else {
        let req = ChatRequest {
            messages: vec![types::Message { role: "user".into(), content: "Say OK.".into() }],
            max_tokens: TEST_MAX_TOKENS,
            n: 1,
            ..ChatRequest::default()
        };
        match p {
            Provider::OpenAi(o) => o.chat(upstream, &req),
            Provider::DashScope { chat, .. } => chat.chat(upstream, &req),
            Provider::Anthropic(a) => a.chat(upstream, &req),
            Provider::Google(g) => g.chat(upstream, &req),
            Provider::Dev => Ok(dev::chat(&req)),
        }
        .map(|r| r.text.chars().take(200).collect())
    };
    let latency_ms = started.elapsed().as_millis() as u64;
    let (ok, status, answer, error) = match result {
        Ok(a) => (true, None, Some(a), None),
        Err(e) => (false, Some(e.status_label()), None, Some(e.to_string())),
    };
    TestCall {
        ok,
        key_id: key.to_owned(),
        model: model.name.clone(),
        upstream_model: upstream.to_owned(),
        latency_ms,
        status,
        answer,
        error,
    }
}
