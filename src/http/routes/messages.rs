//! `POST /v1/messages` and `POST /v1/messages/count_tokens`: Anthropic's
//! Messages API, for Claude Code and the Anthropic SDKs (credential in
//! `x-api-key` or `Authorization: Bearer`; errors in Anthropic's shape).
//!
//! A model with an `anthropic` route gets the client's body whole (only the
//! model replaced), its `anthropic-version` and `anthropic-beta` headers,
//! and answers with the provider's answer or every event of its stream as
//! sent (the model under its public name, the cost added as `tollgate`).
//! Any other chat model gets the request translated to chat completions and
//! the answer translated back (`providers::messages`). Both are metered like
//! chat: the bound held first, the reported usage (cache reads and writes
//! included) charged. `count_tokens` is free: passed through to an
//! `anthropic` route, or estimated for any other.

use super::ai::{MeteredCall, answer_metered, model_of_kind, parse_chat};
use super::metered_stream::{Pump, StreamCharge, Unreported};
use crate::error::Error;
use crate::http::error::ApiError;
use crate::http::response::Response;
use crate::http::route::{Ctx, Dialect, Route, doc, in_dialect, upstream, with_query};
use crate::metered;
use crate::providers::anthropic::ClientHeaders;
use crate::providers::catalog::ModelKind;
use crate::providers::messages::{self as dialect, EventsFromChat};
use crate::providers::types::{ChatEvent, Usage};
use crate::providers::{ChatStream, Model, RawStream};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// The messages routes, in the order the router tries them. Claude Code
/// adds `?beta=true`.
pub static ROUTES: &[Route] = &[
    in_dialect(
        with_query(
            upstream(
                "POST",
                "/v1/messages",
                create,
                doc(
                    "Anthropic Messages API (any chat model; stream: true for SSE)",
                    Some("MessagesRequest"),
                    200,
                    "Message",
                ),
            ),
            &["beta"],
        ),
        Dialect::Anthropic,
    ),
    in_dialect(
        with_query(
            upstream(
                "POST",
                "/v1/messages/count_tokens",
                count_tokens,
                doc("Anthropic token count (free)", Some("MessagesRequest"), 200, "TokenCount"),
            ),
            &["beta"],
        ),
        Dialect::Anthropic,
    ),
];

/// Request fields that never become prompt tokens.
const NOT_PROMPT_FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "metadata",
    "service_tier",
    "thinking",
    "tool_choice",
];
/// Template tokens a provider adds around a Messages input, at most.
const TEMPLATE_TOKENS: u64 = 64;

#[derive(Deserialize)]
struct MessagesBody {
    model: String,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    messages: Option<Value>,
}

fn headers(ctx: &Ctx) -> ClientHeaders {
    ClientHeaders {
        version: ctx.req.header("anthropic-version").map(str::to_owned),
        beta: ctx.req.header("anthropic-beta").map(str::to_owned),
    }
}

/// The parsed body, its model, and the messages checked (a non-empty
/// array within the chat limit).
/// A parsed Messages request: its typed fields, its whole body, its model.
type Parsed = (MessagesBody, Map<String, Value>, Arc<Model>);

fn parse(ctx: &Ctx) -> Result<Parsed, ApiError> {
    let (body, object): (MessagesBody, _) = ctx.req.json_and_object()?;
    let model = model_of_kind(ctx, &body.model, ModelKind::Chat)?;
    match body.messages.as_ref().and_then(Value::as_array) {
        Some(m) if !m.is_empty() && m.len() <= metered::CHAT_MESSAGES_MAX => {}
        _ => {
            return Err(Error::invalid(
                "messages",
                format!("messages must be an array of 1 to {} messages", metered::CHAT_MESSAGES_MAX),
            )
            .into());
        }
    }
    Ok((body, object, model))
}

/// The most input a native call can be charged: the bytes of every prompt
/// field, an image at the model's image bound instead of its bytes.
fn input_bound(model: &Model, body: &Map<String, Value>) -> u64 {
    let images = images(body.get("messages").unwrap_or(&Value::Null));
    metered::body_input_bound(model, body, NOT_PROMPT_FIELDS, images, TEMPLATE_TOKENS)
}

/// Image blocks anywhere in `v`: how many, and the bytes of their sources.
fn images(v: &Value) -> (u64, u64) {
    metered::inline_media(v, |o| (o.get("type").and_then(Value::as_str) == Some("image")).then(|| o.get("source")))
}

pub fn create(ctx: &Ctx) -> Result<Response, ApiError> {
    let (body, mut object, model) = parse(ctx)?;
    let model = &*model;
    let asked = body.max_tokens.ok_or_else(|| Error::invalid("max_tokens", "max_tokens is required"))?;
    let max_tokens = metered::max_tokens(model, Some(asked))?;
    if body.stream && ctx.req.header("idempotency-key").is_some() {
        return Err(Error::invalid(
            "Idempotency-Key",
            "Idempotency-Key is not supported with stream: true (a stream cannot be replayed)",
        )
        .into());
    }
    object.insert("max_tokens".into(), json!(max_tokens));
    if ctx.app.adapter.has_messages(model) {
        native(ctx, model, object, body.stream)
    } else {
        translated(ctx, model, object, body.stream)
    }
}

/// The client's body to an `anthropic` route; the answer as sent.
fn native(ctx: &Ctx, model: &Model, body: Map<String, Value>, stream: bool) -> Result<Response, ApiError> {
    let output = body.get("max_tokens").and_then(Value::as_u64).unwrap_or(0);
    let call = MeteredCall {
        model,
        tokens_bound: (input_bound(model, &body), output),
        choices: 1,
        names: ("ai_message", "message"),
    };
    let (adapter, h) = (&ctx.app.adapter, headers(ctx));
    let fitted = |lowered| super::ai::body_fitted(&body, &["max_tokens"], lowered);
    if stream {
        return call.stream(
            ctx,
            |lowered| adapter.messages_stream(model, &fitted(lowered), &h),
            |charge, stream| NativeEvents { charge, stream },
        );
    }
    call.answer(
        ctx,
        |lowered| adapter.messages(model, &fitted(lowered), &h),
        |answer| {
            let mut usage = Usage::default();
            if let Some(u) = answer.get("usage") {
                usage.merge_anthropic(u);
            }
            usage
        },
    )
}

/// A native stream: each event passed on as it came (the model renamed);
/// usage read from `message_start` and every `message_delta`.
struct NativeEvents {
    charge: StreamCharge,
    stream: RawStream,
}

impl Pump for NativeEvents {
    fn pump(&mut self, out: &mut Vec<u8>) -> bool {
        match self.stream.next() {
            Some(Ok((name, mut data))) => {
                let usage = match data.get("type").and_then(Value::as_str) {
                    Some("message_start") => data.pointer("/message/usage"),
                    Some("message_delta") => data.get("usage"),
                    Some("content_block_delta") => {
                        let d = data.get("delta").unwrap_or(&Value::Null);
                        let text = ["text", "partial_json", "thinking"]
                            .iter()
                            .filter_map(|k| d.get(*k).and_then(Value::as_str))
                            .map(str::len)
                            .sum::<usize>();
                        self.charge.relayed_bytes += text as u64;
                        None
                    }
                    _ => None,
                };
                if let Some(u) = usage.cloned() {
                    let mut merged = self.charge.usage.unwrap_or_default();
                    merged.merge_anthropic(&u);
                    self.charge.usage = Some(merged);
                    if data.get("type").and_then(Value::as_str) == Some("message_delta") {
                        // The last delta carries the final usage: its cost too.
                        data["tollgate"] = Value::Object(metered::cost_detail(
                            &self.charge.model,
                            &merged,
                            self.charge.multiplier_micro(),
                        ));
                    }
                }
                if let Some(m) = data.get_mut("message").filter(|m| m.get("model").is_some()) {
                    m["model"] = json!(self.charge.model.name);
                }
                let name =
                    name.unwrap_or_else(|| data.get("type").and_then(Value::as_str).unwrap_or("message").to_owned());
                out.extend_from_slice(format!("event: {name}\ndata: {data}\n\n").as_bytes());
                true
            }
            Some(Err(e)) => {
                self.charge.settle("provider_failed", Unreported::Free);
                push_error(out, &e.to_string());
                false
            }
            None => {
                self.charge.settle("completed", Unreported::Counted);
                false
            }
        }
    }
}

/// An `error` event, as Anthropic ends a broken stream.
fn push_error(out: &mut Vec<u8>, message: &str) {
    let v = json!({"type": "error", "error": {"type": "api_error", "message": format!("The model provider failed mid-stream: {message}")}});
    out.extend_from_slice(format!("event: error\ndata: {v}\n\n").as_bytes());
}

/// Any other chat model: the request as chat completions, the answer back
/// as Messages.
fn translated(ctx: &Ctx, model: &Model, body: Map<String, Value>, stream: bool) -> Result<Response, ApiError> {
    let chat = dialect::chat_body(&body)
        .map_err(|u| ApiError::refuse("unsupported_parameter", u.message).with_param(u.param))?;
    let parsed =
        serde_json::from_value(Value::Object(chat.clone())).map_err(|e| ApiError::invalid_json(&e.to_string()))?;
    let req = parse_chat(&parsed, chat, model)?;
    ctx.app.adapter.check_chat(model, &req).map_err(|param| super::ai::unsupported(model, &param))?;
    // A Messages request has no `n`: one choice.
    let call = MeteredCall {
        model,
        tokens_bound: (metered::input_tokens_bound(model, &req), u64::from(req.max_tokens)),
        choices: 1,
        names: ("ai_message", "message"),
    };
    let adapter = &ctx.app.adapter;
    if stream {
        let events = EventsFromChat::new("chatcmpl-tollgate", &model.name);
        return call.stream(
            ctx,
            |lowered| adapter.chat_stream(model, &req.fitted(lowered)),
            |charge, stream| TranslatedEvents { charge, stream, events, ended: false },
        );
    }
    let (resp, info, reservation, lowered) = call.chat(ctx, &req)?;
    let answer = dialect::message_of(&resp, &model.name);
    answer_metered(ctx, model, &info, (reservation, lowered), resp.usage, ("ai_message", "message"), answer)
}

/// A translated stream: chat events in, Messages events out.
struct TranslatedEvents {
    charge: StreamCharge,
    stream: ChatStream,
    events: EventsFromChat,
    ended: bool,
}

impl Pump for TranslatedEvents {
    fn pump(&mut self, out: &mut Vec<u8>) -> bool {
        if self.ended {
            return false;
        }
        let mut events = Vec::new();
        match self.stream.next() {
            Some(Ok(ev)) => {
                match &ev {
                    ChatEvent::Usage(u) | ChatEvent::Chunk(_, Some(u)) => self.charge.usage = Some(*u),
                    ChatEvent::Delta(t) => self.charge.relayed_bytes += t.len() as u64,
                    _ => {}
                }
                if let ChatEvent::Chunk(v, _) = &ev {
                    self.charge.relayed_bytes += super::ai::generated_bytes(v);
                }
                self.events.on(&ev, &mut events);
            }
            Some(Err(e)) => {
                self.ended = true;
                self.charge.settle("provider_failed", Unreported::Free);
                push_error(out, &e.to_string());
                return false;
            }
            None => {
                self.ended = true;
                let usage = self.charge.usage.unwrap_or_default();
                let cost = metered::cost_detail(&self.charge.model, &usage, self.charge.multiplier_micro());
                self.events.end(&usage, Some(("tollgate", Value::Object(cost))), &mut events);
                self.charge.settle("completed", Unreported::Counted);
            }
        }
        for (name, data) in events {
            out.extend_from_slice(format!("event: {name}\ndata: {data}\n\n").as_bytes());
        }
        true
    }
}

/// Free: the provider's count for an `anthropic` route; for any other, an
/// estimate (a token per four bytes of the prompt fields).
pub fn count_tokens(ctx: &Ctx) -> Result<Response, ApiError> {
    let (_, object, model) = parse(ctx)?;
    let model = &*model;
    if ctx.app.adapter.has_messages(model) {
        let (answer, _) =
            ctx.app.adapter.count_tokens(model, &object, &headers(ctx)).map_err(metered::provider_error)?;
        return Ok(Response::json_value(200, &answer));
    }
    let estimate = input_bound(model, &object).saturating_sub(TEMPLATE_TOKENS).div_ceil(4);
    Ok(Response::json_value(200, &json!({"input_tokens": estimate, "tollgate": {"estimated": true}})))
}
