//! The OpenAI-compatible endpoints: `/v1/models`, `/v1/chat/completions`
//! (plain and `stream: true`), `/v1/images/generations`.
//!
//! Each charged call: parse, bound the cost, reserve it (cap checks + hold),
//! call through the ModelAdapter, settle from the provider's usage in one
//! transaction with the business log (and the idempotent response), or
//! release on failure. A streamed answer settles when the stream ends; if the
//! client goes away first, it is charged for the usage the provider
//! reported, or the hold bound when the provider reported none.

use super::metered_stream::{Pump, Pumped, StreamCharge, Unreported, call_description, call_log};
use crate::domain::Timestamp;
use crate::error::Error;
use crate::http::error::ApiError;
use crate::http::response::Response;
use crate::http::route::{Access, Ctx, Route, doc, route, upstream};
use crate::ledger::Cost;
use crate::logs::NewLog;
use crate::metered;
use crate::providers::catalog::{IMAGES_PER_REQUEST_MAX, ModelKind};
use crate::providers::types::{ChatEvent, ChatRequest, ImageRequest, MaxTokensField, Usage};
use crate::providers::{CallInfo, ChatStream, Model, ProviderError};
use crate::storage::Conn;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// The ai routes, in the order the router tries them.
pub static ROUTES: &[Route] = &[
    route("GET", "/v1/models", Access::User, models, doc("Models with their pricing", None, 200, "ModelList")),
    route(
        "GET",
        "/v1/models/{id}",
        Access::User,
        model,
        doc("One model with its pricing (404 model_not_found)", None, 200, "Model"),
    ),
    upstream(
        "POST",
        "/v1/chat/completions",
        chat,
        doc("OpenAI-compatible chat completion (stream: true for SSE)", Some("ChatRequest"), 200, "ChatCompletion"),
    ),
    upstream(
        "POST",
        "/v1/embeddings",
        embeddings,
        doc("OpenAI embeddings, charged per input token", Some("EmbeddingsRequest"), 200, "Embeddings"),
    ),
    upstream(
        "POST",
        "/v1/images/generations",
        images,
        doc("OpenAI-compatible image generation", Some("ImageRequest"), 200, "ImagesResponse"),
    ),
];

/// The models the caller may use (an API key with an allow-list sees only
/// those).
pub fn models(ctx: &Ctx) -> Result<Response, ApiError> {
    let caller = ctx.user()?;
    let data: Vec<Value> = ctx
        .app
        .adapter
        .models()
        .iter()
        .filter(|m| caller.check_model(&m.name).is_ok())
        .map(|m| model_json(m))
        .collect();
    Ok(Response::json_value(200, &json!({"object": "list", "data": data, "has_more": false})))
}

/// `GET /v1/models/{id}` (the SDKs' `models.retrieve`). A model the
/// caller's key may not use does not exist for it, as in the list.
pub fn model(ctx: &Ctx) -> Result<Response, ApiError> {
    let name = ctx.param(0);
    let caller = ctx.user()?;
    let m = ctx
        .app
        .adapter
        .model(name)
        .filter(|m| caller.check_model(&m.name).is_ok())
        .ok_or_else(|| not_found_model(name))?;
    Ok(Response::json_value(200, &model_json(&m)))
}

fn not_found_model(name: &str) -> ApiError {
    ApiError::refuse("model_not_found", format!("The model {name:?} does not exist. See GET /v1/models."))
        .with_param("model")
}

fn model_json(m: &Model) -> Value {
    let chat = m.kind == ModelKind::Chat;
    let t = &m.price.tokens;
    let mut pricing = json!({
        "currency": "credits",
        "input_per_1m_tokens": t.input,
        "output_per_1m_tokens": t.output,
        "per_image": m.price.per_image,
        "per_video_second": m.price.per_video_second,
    });
    // The other components only where they are not the plain prices, so a
    // model priced by input and output alone reads as before.
    if *t != crate::providers::catalog::TokenPrices::plain(t.input, t.output) {
        for (k, v) in [
            ("cached_input_per_1m_tokens", t.cached_input),
            ("cache_write_per_1m_tokens", t.cache_write),
            ("cache_write_1h_per_1m_tokens", t.cache_write_1h),
            ("audio_input_per_1m_tokens", t.audio_input),
            ("reasoning_per_1m_tokens", t.reasoning),
            ("audio_output_per_1m_tokens", t.audio_output),
        ] {
            pricing[k] = json!(v);
        }
    }
    // Each unit price where the model has it.
    for (k, v) in [
        ("per_request", m.price.per_request),
        ("per_1m_characters", m.price.per_1m_characters),
        ("per_audio_second", m.price.per_audio_second),
    ] {
        if v > 0 {
            pricing[k] = json!(v);
        }
    }
    if !m.price.tiers.is_empty() {
        pricing["tiers"] = json!(m.price.tiers);
    }
    json!({
        "id": m.name,
        "object": "model",
        "created": 0,
        "owned_by": if m.dev { "tollgate-dev" } else { "tollgate" },
        "kind": m.kind,
        "pricing": pricing,
        "max_output_tokens": chat.then_some(m.max_output_tokens),
        "image_input_tokens_max": chat.then_some(m.image_input_tokens_max),
        "description": if m.dev { "Built-in dev provider: deterministic, offline, for development only." } else { "" },
    })
}

pub(super) fn model_of_kind(ctx: &Ctx, name: &str, kind: ModelKind) -> Result<Arc<Model>, ApiError> {
    let m = ctx.app.adapter.model(name).ok_or_else(|| not_found_model(name))?;
    ctx.user()?.check_model(name)?;
    if m.kind != kind {
        return Err(Error::invalid(
            "model",
            format!("{name} is a {:?} model; this endpoint needs a {kind:?} model", m.kind),
        )
        .into());
    }
    Ok(m)
}

#[derive(Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The chat fields tollgate reads; every field (these included) is also
/// kept as sent, for OpenAI-compatible providers.
#[derive(Deserialize)]
pub(super) struct ChatBody {
    model: String,
    messages: Value,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    stop: Option<Value>,
    #[serde(default)]
    n: Option<u32>,
}

/// Choices one chat request may ask for (`n`).
pub const CHAT_CHOICES_MAX: u32 = 16;

pub(super) fn parse_chat(
    body: &ChatBody,
    mut passthrough: Map<String, Value>,
    model: &Model,
) -> Result<ChatRequest, Error> {
    let n = body.n.unwrap_or(1);
    if n == 0 || n > CHAT_CHOICES_MAX {
        return Err(Error::invalid("n", format!("n must be from 1 to {CHAT_CHOICES_MAX}")));
    }
    if body.max_tokens.is_some() && body.max_completion_tokens.is_some() {
        return Err(Error::invalid("max_completion_tokens", "send max_tokens or max_completion_tokens, not both"));
    }
    let messages = metered::parse_messages(&body.messages, "messages")?;
    let (asked, field) = match (body.max_completion_tokens, body.max_tokens) {
        (Some(n), _) => (Some(n), MaxTokensField::MaxCompletionTokens),
        (None, Some(n)) => (Some(n), MaxTokensField::MaxTokens),
        (None, None) => (None, MaxTokensField::Unsent),
    };
    let max_tokens = metered::max_tokens(model, asked).map_err(|e| match e {
        Error::Invalid { message, .. } => Error::invalid(field.name(), message),
        other => other,
    })?;
    // Everything the client sent but `model` goes on as sent.
    passthrough.shift_remove("model");
    Ok(ChatRequest {
        messages,
        max_tokens,
        max_tokens_field: field,
        n,
        temperature: body.temperature,
        top_p: body.top_p,
        stop: body.stop.clone(),
        passthrough,
    })
}

fn unix_s() -> i64 {
    Timestamp::now().millis() / 1000
}

fn chat_log(model: &Model, info: &CallInfo, usage: &Usage, user: crate::domain::UserId) -> NewLog {
    call_log("ai_chat_completion", model, info, usage, false, user, "completed")
}

pub fn chat(ctx: &Ctx) -> Result<Response, ApiError> {
    let caller = ctx.user()?;
    let user = caller.id;
    let (body, object): (ChatBody, _) = ctx.req.json_and_object()?;
    let model = model_of_kind(ctx, &body.model, ModelKind::Chat)?;
    let model = &*model;
    let req = parse_chat(&body, object, model)?;
    if body.stream && ctx.req.header("idempotency-key").is_some() {
        return Err(Error::invalid(
            "Idempotency-Key",
            "Idempotency-Key is not supported with stream: true (a stream cannot be replayed)",
        )
        .into());
    }
    ctx.app.adapter.check_chat(model, &req).map_err(|param| unsupported(model, &param))?;
    let call = MeteredCall {
        model,
        tokens_bound: (metered::input_tokens_bound(model, &req), u64::from(req.max_tokens)),
        choices: u64::from(req.n.max(1)),
        names: ("ai_chat_completion", "chat"),
    };
    if body.stream {
        let include_usage = body.stream_options.as_ref().is_some_and(|o| o.include_usage);
        let adapter = &ctx.app.adapter;
        return call.stream(
            ctx,
            |lowered| adapter.chat_stream(model, &req.fitted(lowered)),
            |charge, stream| ChatSse::new(charge, stream, include_usage),
        );
    }
    let (resp, info, reservation, lowered) = call.chat(ctx, &req)?;
    let cost = metered::chat_cost(model, &resp.usage, reservation.multiplier_micro);
    // Everything but the settle is prepared here, off the writer thread.
    let mut detail = metered::cost_detail(model, &resp.usage, reservation.multiplier_micro);
    let used = metered::carried(ctx.app, &info, metered::used_tokens(model, &resp.usage, &detail));
    if let Some(n) = lowered {
        detail.insert("max_tokens_lowered_to".into(), n.into());
    }
    let log = chat_log(model, &info, &resp.usage, user);
    let desc = call_description("chat", model, &resp.usage);
    let model_c = model.clone();
    let lock = reservation.lock;
    let settle = move |c: &Conn<'_>| metered::settle_in(c, &reservation, cost, &desc, &log, &used);
    let mut response = ctx.commit_then_for(lock, 200, settle, move |outcome| {
        let u = resp.usage;
        let tollgate = metered::tollgate_json(outcome, detail.clone());
        // An OpenAI-compatible answer goes back whole, under the public name
        // (a copy: an idempotent answer is rendered in the writer, which
        // may run it again).
        if let Some(mut raw) = resp.raw.clone() {
            raw["model"] = json!(model_c.name);
            raw["tollgate"] = tollgate;
            return raw;
        }
        json!({
            "id": chat_id(&resp.id),
            "object": "chat.completion",
            "created": unix_s(),
            "model": model_c.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": resp.text}, "finish_reason": resp.finish_reason}],
            "usage": u.openai_json(),
            "tollgate": tollgate,
        })
    })?;
    if let Some(n) = lowered {
        response.headers.push((LOWERED_HEADER, n.to_string()));
    }
    Ok(response)
}

/// A completion id in OpenAI's form, without prefixing one that has it.
fn chat_id(provider_id: &str) -> String {
    match provider_id {
        "" => "chatcmpl-tollgate".to_owned(),
        id if id.starts_with("chatcmpl-") => id.to_owned(),
        id => format!("chatcmpl-{id}"),
    }
}

/// No route of the model can honour `param`: refused before any hold.
pub(super) fn unsupported(model: &Model, param: &str) -> ApiError {
    ApiError::refuse(
        "unsupported_parameter",
        format!(
            "{param} needs an OpenAI-compatible provider, and no route of {} has one. Remove it, or use another model.",
            model.name
        ),
    )
    .with_param(param)
}

/// The generated output in an OpenAI chunk: each choice's text and tool
/// call arguments.
pub(super) fn generated_bytes(chunk: &Value) -> u64 {
    let choices = chunk.get("choices").and_then(Value::as_array).into_iter().flatten();
    choices
        .filter_map(|c| c.get("delta"))
        .map(|d| {
            let text = d.get("content").and_then(Value::as_str).map_or(0, str::len);
            let calls = d.get("tool_calls").and_then(Value::as_array).into_iter().flatten();
            text + calls
                .filter_map(|t| t.pointer("/function/arguments").and_then(Value::as_str))
                .map(str::len)
                .sum::<usize>()
        })
        .sum::<usize>() as u64
}

/// A streamed chat as OpenAI SSE chunks. Each pump pulls the provider's
/// next event; the end of the stream settles the charge (and so does
/// dropping it early, when the client went away).
struct ChatSse {
    charge: StreamCharge,
    stream: ChatStream,
    include_usage: bool,
    id: String,
    created: i64,
    sent_role: bool,
}

impl ChatSse {
    fn new(charge: StreamCharge, stream: ChatStream, include_usage: bool) -> ChatSse {
        let id = format!(
            "chatcmpl-{}",
            crate::support::token::hex(&crate::support::token::random_bytes::<8>().unwrap_or_default())
        );
        ChatSse { charge, stream, include_usage, id, created: unix_s(), sent_role: false }
    }

    fn push(out: &mut Vec<u8>, v: &Value) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(v.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    /// A chunk of tollgate's own making (providers that are not OpenAI's).
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.charge.model.name,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    }
}

impl Pump for ChatSse {
    fn pump(&mut self, out: &mut Vec<u8>) -> bool {
        match self.stream.next() {
            Some(Ok(ChatEvent::Delta(text))) => {
                self.charge.relayed_bytes += text.len() as u64;
                let delta = if self.sent_role {
                    json!({"content": text})
                } else {
                    json!({"role": "assistant", "content": text})
                };
                self.sent_role = true;
                Self::push(out, &self.chunk(delta, None));
            }
            Some(Ok(ChatEvent::Finish(reason))) => Self::push(out, &self.chunk(json!({}), Some(&reason))),
            Some(Ok(ChatEvent::Chunk(mut v, usage))) => {
                self.charge.relayed_bytes += generated_bytes(&v);
                if let Some(u) = usage {
                    self.charge.usage = usage;
                    // The chunk that carries usage carries the cost too;
                    // tollgate asked for usage itself, so a client that did
                    // not gets the cost without the usage.
                    v["tollgate"] =
                        Value::Object(metered::cost_detail(&self.charge.model, &u, self.charge.multiplier_micro()));
                    if !self.include_usage
                        && let Some(o) = v.as_object_mut()
                    {
                        o.shift_remove("usage");
                    }
                }
                v["model"] = json!(self.charge.model.name);
                Self::push(out, &v);
            }
            Some(Ok(ChatEvent::Usage(u))) => {
                self.charge.usage = Some(u);
                let mut v = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.charge.model.name,
                               "choices": [], "usage": u.openai_json(),
                               "tollgate": metered::cost_detail(&self.charge.model, &u, self.charge.multiplier_micro())});
                if !self.include_usage
                    && let Some(o) = v.as_object_mut()
                {
                    o.shift_remove("usage");
                }
                Self::push(out, &v);
            }
            Some(Err(e)) => {
                self.charge.settle("provider_failed", Unreported::Free);
                Self::push(
                    out,
                    &json!({"error": {"type": "api_error", "code": "upstream_error", "message": format!("The model provider failed mid-stream: {e}"), "param": null}}),
                );
                out.extend_from_slice(b"data: [DONE]\n\n");
                return false;
            }
            None => {
                self.charge.settle("completed", Unreported::Counted);
                out.extend_from_slice(b"data: [DONE]\n\n");
                return false;
            }
        }
        true
    }
}

#[derive(Deserialize)]
struct ImageBody {
    model: String,
    prompt: String,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    size: Option<String>,
    #[serde(default)]
    quality: Option<String>,
    #[serde(default)]
    response_format: Option<String>,
}

pub fn images(ctx: &Ctx) -> Result<Response, ApiError> {
    let caller = ctx.user()?;
    let user = caller.id;
    let (body, mut passthrough): (ImageBody, _) = ctx.req.json_and_object()?;
    passthrough.shift_remove("model");
    let model = model_of_kind(ctx, &body.model, ModelKind::Image)?;
    let model = &*model;
    let n = body.n.unwrap_or(1);
    if n == 0 || n > IMAGES_PER_REQUEST_MAX {
        return Err(Error::invalid("n", format!("n must be from 1 to {IMAGES_PER_REQUEST_MAX}")).into());
    }
    if body.prompt.trim().is_empty() {
        return Err(Error::invalid("prompt", "prompt must not be empty").into());
    }
    let b64_json = match body.response_format.as_deref() {
        None | Some("url") => false,
        Some("b64_json") => true,
        Some(_) => {
            return Err(Error::invalid("response_format", "response_format must be \"url\" or \"b64_json\"").into());
        }
    };
    let req = ImageRequest {
        prompt: body.prompt.clone(),
        n,
        size: body.size.clone(),
        quality: body.quality.clone(),
        b64_json,
        passthrough,
    };
    ctx.app.adapter.check_image(model, &req).map_err(|param| unsupported(model, &param))?;
    let reservation = metered::reserve(ctx.app, &caller, model.price.images_of(&req, n), None)?;
    let (resp, info) =
        ctx.app.adapter.image(model, &req).map_err(metered::release_on(ctx.app, &reservation, &model.name))?;
    let delivered = (resp.urls.len() as u32).min(n);
    let cost = metered::scale_credits(model.price.images_of(&req, delivered), reservation.multiplier_micro);
    let price_per_image = model.price.image_price(&req);
    let provider_cost_micro = model
        .provider_cost
        .as_ref()
        .map_or(0, |p| p.images_of(&req, delivered).0.saturating_mul(crate::ledger::MICRO_PER_CREDIT));
    let multiplier = reservation.multiplier_micro;
    let name = model.name.clone();
    let used = crate::usage::Metered {
        images: u64::from(delivered),
        provider_cost_micro,
        ..crate::usage::Metered::model(&name)
    }
    .via(&info.channel);
    let priced = model.priced_name();
    let lock = reservation.lock;
    let settle = move |c: &Conn<'_>| {
        let log = NewLog::business(
            user,
            "ai_image_generation",
            true,
            json!({"model": name, "provider": info.provider, "upstream_model": info.upstream_model, "images": delivered, "latency_ms": info.latency_ms}),
        );
        metered::settle_in(c, &reservation, Cost::Credits(cost), &format!("images {priced} ({delivered})"), &log, &used)
    };
    ctx.commit_then_for(lock, 200, settle, move |outcome| {
        let detail = metered::unit_detail("image", u64::from(delivered), price_per_image, multiplier);
        let tollgate = metered::tollgate_json(outcome, detail);
        // OpenAI's answer goes back whole: `b64_json` as `b64_json`,
        // `revised_prompt`, `usage`, `output_format`... (a copy: an
        // idempotent answer is rendered in the writer, which may run it
        // again).
        if let Some(mut raw) = resp.raw.clone() {
            if let Some(items) = raw.get_mut("data").and_then(Value::as_array_mut) {
                items.truncate(delivered as usize);
            }
            raw["tollgate"] = tollgate;
            return raw;
        }
        let data: Vec<Value> = resp
            .urls
            .iter()
            .take(delivered as usize)
            .map(|u| match u.split_once(";base64,") {
                Some((_, b64)) if b64_json => json!({"b64_json": b64}),
                _ => json!({"url": u}),
            })
            .collect();
        json!({"created": unix_s(), "data": data, "tollgate": tollgate})
    })
}

/// Inputs in one embeddings request (OpenAI's limit).
pub const EMBEDDING_INPUTS_MAX: usize = 2048;

#[derive(Deserialize)]
struct EmbeddingsBody {
    model: String,
    input: Value,
}

/// An upper bound on an embeddings request's input tokens: a string costs
/// at most its bytes, a pre-tokenized input exactly its token count.
fn embedding_input_bound(input: &Value) -> Result<u64, Error> {
    let bad = || {
        Error::invalid(
            "input",
            format!("input must be a string, or an array of 1 to {EMBEDDING_INPUTS_MAX} strings or token arrays"),
        )
    };
    let one = |v: &Value| -> Option<u64> {
        match v {
            Value::String(s) if !s.is_empty() => Some(s.len() as u64),
            Value::Array(tokens) if !tokens.is_empty() && tokens.iter().all(Value::is_u64) => Some(tokens.len() as u64),
            _ => None,
        }
    };
    match input {
        Value::Array(items) if items.iter().all(Value::is_u64) => one(input).ok_or_else(bad),
        Value::Array(items) if (1..=EMBEDDING_INPUTS_MAX).contains(&items.len()) => {
            items.iter().map(one).sum::<Option<u64>>().ok_or_else(bad)
        }
        Value::String(_) => one(input).ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// `POST /v1/embeddings`: priced per input token, held at the input's size.
pub fn embeddings(ctx: &Ctx) -> Result<Response, ApiError> {
    let caller = ctx.user()?;
    let user = caller.id;
    let (body, mut passthrough): (EmbeddingsBody, _) = ctx.req.json_and_object()?;
    let model = model_of_kind(ctx, &body.model, ModelKind::Embedding)?;
    let model = &*model;
    let bound = model.price.tokens(embedding_input_bound(&body.input)?, 0);
    passthrough.shift_remove("model");
    let reservation = metered::reserve(ctx.app, &caller, bound, None)?;
    let (answer, info) = ctx.app.adapter.embeddings(model, &passthrough).map_err(metered::release_on(
        ctx.app,
        &reservation,
        &model.name,
    ))?;
    let usage = Usage::tokens(answer.pointer("/usage/prompt_tokens").and_then(Value::as_u64).unwrap_or(0), 0);
    let cost = metered::chat_cost(model, &usage, reservation.multiplier_micro);
    let detail = metered::cost_detail(model, &usage, reservation.multiplier_micro);
    let name = model.name.clone();
    let name_out = name.clone();
    let used = metered::carried(
        ctx.app,
        &info,
        crate::usage::Metered { input_tokens: usage.prompt_tokens, ..crate::usage::Metered::model(&name) },
    );
    let priced = model.priced_name();
    let lock = reservation.lock;
    let settle = move |c: &Conn<'_>| {
        let log = NewLog::business(
            user,
            "ai_embeddings",
            true,
            json!({"model": name, "provider": info.provider, "upstream_model": info.upstream_model,
                   "usage": {"prompt_tokens": usage.prompt_tokens}, "latency_ms": info.latency_ms}),
        );
        let desc = format!("embeddings {priced} ({} tokens)", usage.prompt_tokens);
        metered::settle_in(c, &reservation, cost, &desc, &log, &used)
    };
    provider_answer(ctx, lock, settle, answer, name_out, detail)
}

/// A token-metered call: held at its token bounds (a lower output bound
/// when the caller cannot afford the one asked), charged for the usage the
/// provider reports (chat, and the Responses, Messages and Gemini APIs).
pub(super) struct MeteredCall<'a> {
    pub model: &'a Model,
    /// Input tokens, and output tokens per choice, the call can use at
    /// most: what is held.
    pub tokens_bound: (u64, u64),
    /// Choices asked for (`n`): the output bound is per choice.
    pub choices: u64,
    /// The business log's action and the ledger description's word.
    pub names: (&'static str, &'static str),
}

impl MeteredCall<'_> {
    /// Holds the bound, lowered to what the caller can afford when needed
    /// (the call must then send `lowered` upstream as its output bound).
    pub(super) fn hold(&self, ctx: &Ctx) -> Result<metered::Fitted, ApiError> {
        let (input, output) = self.tokens_bound;
        Ok(metered::reserve_fitted(ctx.app, &ctx.user()?, self.model, input, output, self.choices)?)
    }

    /// Holds the bound and makes a chat call (with the lowered bound, if
    /// any); a provider that fails releases the hold.
    pub(super) fn chat(
        &self,
        ctx: &Ctx,
        req: &ChatRequest,
    ) -> Result<(crate::providers::types::ChatResponse, CallInfo, metered::Reservation, Option<u32>), ApiError> {
        let fitted = self.hold(ctx)?;
        let (reservation, lowered) = (fitted.reservation, fitted.lowered);
        let (resp, info) = ctx.app.adapter.chat(self.model, &req.fitted(lowered)).map_err(metered::release_on(
            ctx.app,
            &reservation,
            &self.model.name,
        ))?;
        Ok((resp, info, reservation, lowered))
    }

    /// The bounds held, for a stream's charge when the provider reports no
    /// usage.
    fn held(&self, f: &metered::Fitted) -> (u64, u64) {
        (self.tokens_bound.0, f.output_per_choice.saturating_mul(self.choices.max(1)))
    }

    /// Holds the bound, opens the provider's stream (told the lowered
    /// output bound, if any) and answers with `pump` over it; the charge
    /// settles when the stream ends. A provider that cannot be reached
    /// releases the hold.
    pub(super) fn stream<S, P: Pump + 'static>(
        &self,
        ctx: &Ctx,
        open: impl FnOnce(Option<u32>) -> Result<(S, CallInfo), ProviderError>,
        pump: impl FnOnce(StreamCharge, S) -> P,
    ) -> Result<Response, ApiError> {
        let fitted = self.hold(ctx)?;
        let held = self.held(&fitted);
        let (reservation, lowered) = (fitted.reservation, fitted.lowered);
        let (stream, info) = open(lowered).map_err(metered::release_on(ctx.app, &reservation, &self.model.name))?;
        let (action, what) = self.names;
        let charge = StreamCharge::new(Arc::clone(ctx.app), self.model.clone(), info, reservation, action, what, held);
        let mut response = Response::event_stream(Box::new(Pumped::new(pump(charge, stream))));
        if let Some(n) = lowered {
            response.headers.push((LOWERED_HEADER, n.to_string()));
        }
        Ok(response)
    }

    /// Holds the bound, makes the call (told the lowered output bound, if
    /// any) and answers the provider's JSON, charged for what `usage_of`
    /// reads in it.
    pub(super) fn answer(
        &self,
        ctx: &Ctx,
        call: impl FnOnce(Option<u32>) -> Result<(Value, CallInfo), ProviderError>,
        usage_of: impl FnOnce(&Value) -> Usage,
    ) -> Result<Response, ApiError> {
        let fitted = self.hold(ctx)?;
        let (reservation, lowered) = (fitted.reservation, fitted.lowered);
        let (answer, info) = call(lowered).map_err(metered::release_on(ctx.app, &reservation, &self.model.name))?;
        let usage = usage_of(&answer);
        answer_metered(ctx, self.model, &info, (reservation, lowered), usage, self.names, answer)
    }
}

/// `body` with its output bound at `path` (field names, outermost first)
/// set to `lowered`, or unchanged.
pub(super) fn body_fitted<'b>(
    body: &'b Map<String, Value>,
    path: &[&str],
    lowered: Option<u32>,
) -> std::borrow::Cow<'b, Map<String, Value>> {
    let (Some(n), Some((last, outer))) = (lowered, path.split_last()) else {
        return std::borrow::Cow::Borrowed(body);
    };
    let mut body = body.clone();
    let mut at = &mut body;
    for k in outer {
        let Some(inner) = at.entry(k.to_string()).or_insert_with(|| json!({})).as_object_mut() else {
            return std::borrow::Cow::Owned(body);
        };
        at = inner;
    }
    at.insert((*last).to_owned(), json!(n));
    std::borrow::Cow::Owned(body)
}

/// Says that a call's output bound was lowered to what the caller could
/// afford (also `tollgate.max_tokens_lowered_to` in a JSON answer).
pub const LOWERED_HEADER: &str = "X-Tollgate-Max-Tokens-Lowered";

/// Settles a token-metered call from the usage it reported, and answers
/// `answer` (the provider's JSON, or one made from it) with its cost.
pub(super) fn answer_metered(
    ctx: &Ctx,
    model: &Model,
    info: &CallInfo,
    (reservation, lowered): (metered::Reservation, Option<u32>),
    usage: Usage,
    (action, what): (&'static str, &'static str),
    answer: Value,
) -> Result<Response, ApiError> {
    // Everything but the settle is prepared here, off the writer thread.
    let cost = metered::chat_cost(model, &usage, reservation.multiplier_micro);
    let mut detail = metered::cost_detail(model, &usage, reservation.multiplier_micro);
    if let Some(n) = lowered {
        detail.insert("max_tokens_lowered_to".into(), n.into());
    }
    let used = metered::carried(ctx.app, info, metered::used_tokens(model, &usage, &detail));
    let log = call_log(action, model, info, &usage, false, reservation.user, "completed");
    let desc = call_description(what, model, &usage);
    let lock = reservation.lock;
    let settle = move |c: &Conn<'_>| metered::settle_in(c, &reservation, cost, &desc, &log, &used);
    provider_answer(ctx, lock, settle, answer, model.name.clone(), detail)
}

/// Settles a call whose answer is the provider's JSON, and answers it
/// under the public model name with its `tollgate` object. The answer
/// (embedding vectors, a whole response) is copied and serialized off the
/// writer unless it must be stored with an idempotency key.
pub(super) fn provider_answer(
    ctx: &Ctx,
    lock: Option<crate::domain::UserId>,
    settle: impl Fn(&Conn<'_>) -> crate::error::Result<crate::ledger::HoldOutcome> + Send + 'static,
    answer: Value,
    public_name: String,
    detail: Map<String, Value>,
) -> Result<Response, ApiError> {
    ctx.commit_then_for(lock, 200, settle, move |outcome| {
        let mut answer = answer.clone();
        // Under the public name, where the answer names a model at all.
        if answer.get("model").is_some() {
            answer["model"] = json!(public_name);
        }
        answer["tollgate"] = metered::tollgate_json(outcome, detail.clone());
        answer
    })
}
