//! Anthropic's Messages API, mapped to and from the OpenAI chat shape.
//!
//! - `POST {base}/v1/messages` with `x-api-key` and `anthropic-version`;
//!   OpenAI `system` messages become the top-level `system` string; the
//!   answer's `content[]` text blocks are joined; `stop_reason` maps to
//!   `finish_reason` (`end_turn`/`stop_sequence` -> `stop`, `max_tokens` ->
//!   `length`, `tool_use` -> `tool_calls`); usage from `usage.input_tokens`
//!   and `usage.output_tokens`.
//! - Tools: OpenAI `tools` / `tool_choice` / `parallel_tool_calls` become
//!   Anthropic's `tools` (`input_schema`) and `tool_choice`; assistant
//!   `tool_calls` become `tool_use` blocks and `tool` messages
//!   `tool_result` blocks; `image_url` parts (URL or data URI) become image
//!   blocks. Answers' `tool_use` blocks come back as `tool_calls`.
//! - Streaming events: `message_start` (input tokens), `content_block_delta`
//!   with `text_delta` (or `input_json_delta` for a tool call's arguments,
//!   after a `content_block_start` of type `tool_use`), `message_delta`
//!   (stop reason, cumulative output tokens), `message_stop`; `ping`
//!   ignored; `error` ends the stream.

use super::chat_map::{self, ToolChoice, function_tools, push_turn, text_of, tool_choice};
use super::http;
use super::sse::SseReader;
use super::types::{ChatEvent, ChatRequest, ChatResponse, Honours, Usage};
use super::{ChatStream, ProviderError};
use serde_json::{Value, json};
use std::io::BufReader;
use ureq::Agent;

pub const ANTHROPIC_VERSION: &str = "2023-06-01";

pub struct Anthropic {
    pub base_url: String,
    pub key: Option<String>,
    pub agent: Agent,
}

fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        _ => "stop",
    }
}

/// What Anthropic routes honour: the basic fields, and tools, images and
/// tool calls, which are mapped. Anything else skips the route.
pub const HONOURS: Honours =
    Honours { extra_fields: &["tools", "tool_choice", "parallel_tool_calls"], rich_messages: true };

/// An OpenAI content part as an Anthropic block (text or image).
fn block_of(part: &Value) -> Value {
    if part.get("type").and_then(Value::as_str) != Some("image_url") {
        return json!({"type": "text", "text": part.get("text").and_then(Value::as_str).unwrap_or("")});
    }
    let url = part.pointer("/image_url/url").and_then(Value::as_str).unwrap_or("");
    match url.strip_prefix("data:").and_then(|rest| rest.split_once(";base64,")) {
        Some((media_type, data)) => {
            json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}})
        }
        None => json!({"type": "image", "source": {"type": "url", "url": url}}),
    }
}

/// OpenAI messages as Anthropic's: system text apart, tool calls as
/// `tool_use` blocks, tool results as `tool_result` blocks of a user turn,
/// image parts as image blocks, consecutive turns of one role merged.
fn messages_of(items: &[Value]) -> (Vec<String>, Vec<Value>) {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for m in items {
        let content = m.get("content").unwrap_or(&Value::Null);
        let (role, blocks): (&'static str, Vec<Value>) = match m.get("role").and_then(Value::as_str).unwrap_or("user") {
            "system" | "developer" => {
                system.push(text_of(content));
                continue;
            }
            "tool" => (
                "user",
                vec![
                    json!({"type": "tool_result", "tool_use_id": m.get("tool_call_id").cloned().unwrap_or(json!("")), "content": text_of(content)}),
                ],
            ),
            "assistant" => {
                let mut blocks = Vec::new();
                let text = text_of(content);
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for call in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    let args = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}");
                    let input =
                        serde_json::from_str::<Value>(args).ok().filter(Value::is_object).unwrap_or_else(|| json!({}));
                    blocks.push(json!({"type": "tool_use", "id": call.get("id").cloned().unwrap_or(json!("")),
                                       "name": call.pointer("/function/name").cloned().unwrap_or(json!("")), "input": input}));
                }
                ("assistant", blocks)
            }
            _ => match content {
                Value::Array(parts) => ("user", parts.iter().map(block_of).collect()),
                other => ("user", vec![json!({"type": "text", "text": text_of(other)})]),
            },
        };
        push_turn(&mut turns, role, blocks);
    }
    (system, turns.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect())
}

/// OpenAI `tools` and `tool_choice` as Anthropic's.
fn map_tools(req: &ChatRequest, b: &mut Value) {
    if let Some(tools) = function_tools(req) {
        let mapped: Vec<Value> = tools
            .into_iter()
            .map(|t| {
                let schema = t.parameters.cloned().unwrap_or_else(|| json!({"type": "object"}));
                let mut tool = json!({"name": t.name, "input_schema": schema});
                if let Some(d) = t.description {
                    tool["description"] = d.clone();
                }
                tool
            })
            .collect();
        b["tools"] = json!(mapped);
    }
    let mut choice = tool_choice(req).map(|c| match c {
        ToolChoice::Required => json!({"type": "any"}),
        ToolChoice::Nothing => json!({"type": "none"}),
        ToolChoice::Auto => json!({"type": "auto"}),
        ToolChoice::Function(name) => json!({"type": "tool", "name": name}),
    });
    if req.passthrough.get("parallel_tool_calls") == Some(&json!(false)) {
        choice.get_or_insert_with(|| json!({"type": "auto"}))["disable_parallel_tool_use"] = json!(true);
    }
    if let Some(c) = choice {
        b["tool_choice"] = c;
    }
}

fn body(upstream: &str, req: &ChatRequest, stream: bool) -> Value {
    let (system, messages) = messages_of(&chat_map::messages(req));
    let mut b = json!({"model": upstream, "max_tokens": req.max_tokens, "messages": messages});
    if !system.is_empty() {
        b["system"] = json!(system.join("\n\n"));
    }
    if let Some(t) = req.temperature {
        b["temperature"] = json!(t);
    }
    if let Some(p) = req.top_p {
        b["top_p"] = json!(p);
    }
    if let Some(stop) = &req.stop {
        b["stop_sequences"] = if stop.is_string() { json!([stop]) } else { stop.clone() };
    }
    map_tools(req, &mut b);
    if stream {
        b["stream"] = json!(true);
    }
    b
}

/// Anthropic's answer in OpenAI's chat completion shape.
fn completion_of(v: &Value, upstream: &str) -> (Value, Usage, String, String) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in v.get("content").and_then(Value::as_array).into_iter().flatten() {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => calls.push(json!({"id": b.get("id"), "type": "function",
                "function": {"name": b.get("name"), "arguments": b.get("input").map_or_else(|| "{}".to_owned(), Value::to_string)}})),
            _ => {}
        }
    }
    let finish = finish_reason(v.get("stop_reason").and_then(Value::as_str).unwrap_or("end_turn")).to_owned();
    let mut usage = Usage::default();
    if let Some(u) = v.get("usage") {
        usage.merge_anthropic(u);
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        message["tool_calls"] = json!(calls);
    }
    let id = format!("chatcmpl-{}", v.get("id").and_then(Value::as_str).unwrap_or("anthropic"));
    let raw = json!({"id": id, "object": "chat.completion", "created": unix_now(), "model": upstream,
                     "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                     "usage": usage.openai_json()});
    (raw, usage, text, finish)
}

fn unix_now() -> i64 {
    crate::domain::Timestamp::now().millis() / 1000
}

/// The headers a Messages client sent that go upstream as sent: the API
/// version it speaks and the beta features it asks for (Claude Code sends
/// a long list; prompt caching and tools depend on them).
#[derive(Debug, Clone, Default)]
pub struct ClientHeaders {
    pub version: Option<String>,
    pub beta: Option<String>,
}

impl Anthropic {
    fn post(&self, b: &Value) -> Result<ureq::http::Response<ureq::Body>, ProviderError> {
        self.post_to("/v1/messages", b, &ClientHeaders::default())
    }

    fn post_to(
        &self,
        path: &str,
        b: &Value,
        h: &ClientHeaders,
    ) -> Result<ureq::http::Response<ureq::Body>, ProviderError> {
        let url = format!("{}{path}", self.base_url.trim_end_matches('/'));
        let version = h.version.as_deref().unwrap_or(ANTHROPIC_VERSION);
        let mut rb = self.agent.post(&url).header("anthropic-version", version);
        if let Some(beta) = &h.beta {
            rb = rb.header("anthropic-beta", beta);
        }
        if let Some(k) = &self.key {
            rb = rb.header("x-api-key", k);
        }
        http::check(rb.send_json(b).map_err(ProviderError::from_ureq)?)
    }

    /// A client's Messages body, with only the model replaced (and
    /// `stream` as asked): every other field goes as sent.
    fn native_body(upstream: &str, body: &serde_json::Map<String, Value>, stream: bool) -> Value {
        let mut body = body.clone();
        body.insert("model".into(), json!(upstream));
        if stream {
            body.insert("stream".into(), json!(true));
        } else {
            body.shift_remove("stream");
        }
        Value::Object(body)
    }

    /// `POST /v1/messages` with a client's own body; the answer whole.
    pub fn messages(
        &self,
        upstream: &str,
        body: &serde_json::Map<String, Value>,
        h: &ClientHeaders,
    ) -> Result<Value, ProviderError> {
        http::read_json(self.post_to("/v1/messages", &Self::native_body(upstream, body, false), h)?)
    }

    /// The same, streamed: every event as it comes (name and JSON data).
    pub fn messages_stream(
        &self,
        upstream: &str,
        body: &serde_json::Map<String, Value>,
        h: &ClientHeaders,
    ) -> Result<super::RawStream, ProviderError> {
        let resp = self.post_to("/v1/messages", &Self::native_body(upstream, body, true), h)?;
        Ok(super::sse::raw_events(resp))
    }

    /// `POST /v1/messages/count_tokens` with a client's own body.
    pub fn count_tokens(
        &self,
        upstream: &str,
        body: &serde_json::Map<String, Value>,
        h: &ClientHeaders,
    ) -> Result<Value, ProviderError> {
        let mut body = body.clone();
        body.insert("model".into(), json!(upstream));
        http::read_json(self.post_to("/v1/messages/count_tokens", &Value::Object(body), h)?)
    }

    pub fn chat(&self, upstream: &str, req: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let v = http::read_json(self.post(&body(upstream, req, false))?)?;
        let (raw, usage, text, finish_reason) = completion_of(&v, upstream);
        let id = raw.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
        Ok(ChatResponse { id, text, finish_reason, usage, raw: Some(raw) })
    }

    pub fn chat_stream(&self, upstream: &str, req: &ChatRequest) -> Result<ChatStream, ProviderError> {
        let resp = self.post(&body(upstream, req, true))?;
        let mut sse = SseReader::new(BufReader::new(resp.into_body().into_reader()));
        let mut usage = Usage::default();
        let mut stop: Option<String> = None;
        // Tool calls: Anthropic content block index -> OpenAI tool call index.
        let mut tool_index: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
        let mut message_id = String::from("anthropic");
        let created = unix_now();
        let mut tail: Vec<ChatEvent> = Vec::new();
        let mut done = false;
        Ok(Box::new(std::iter::from_fn(move || {
            loop {
                if let Some(e) = tail.pop() {
                    return Some(Ok(e));
                }
                if done {
                    return None;
                }
                let ev = match sse.next_event() {
                    Ok(Some(ev)) => ev,
                    Ok(None) | Err(_) if stop.is_some() => {
                        // The stream ended after the stop reason: report.
                        done = true;
                        tail = vec![ChatEvent::Usage(usage), ChatEvent::Finish(stop.take().unwrap_or_default())];
                        continue;
                    }
                    Ok(None) => {
                        done = true;
                        return Some(Err(ProviderError::BadResponse("the stream ended before message_stop".into())));
                    }
                    Err(e) => {
                        done = true;
                        return Some(Err(e));
                    }
                };
                let Ok(v) = serde_json::from_str::<Value>(&ev.data) else { continue };
                match v.get("type").and_then(Value::as_str).unwrap_or("") {
                    "content_block_start"
                        if v.pointer("/content_block/type").and_then(Value::as_str) == Some("tool_use") =>
                    {
                        let block = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let i = tool_index.len();
                        tool_index.insert(block, i);
                        let call = json!({"index": i, "id": v.pointer("/content_block/id"), "type": "function",
                                          "function": {"name": v.pointer("/content_block/name"), "arguments": ""}});
                        return Some(Ok(tool_chunk(&message_id, created, call)));
                    }
                    "content_block_delta"
                        if v.pointer("/delta/type").and_then(Value::as_str) == Some("input_json_delta") =>
                    {
                        let block = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let i = tool_index.get(&block).copied().unwrap_or(0);
                        let partial = v.pointer("/delta/partial_json").and_then(Value::as_str).unwrap_or("");
                        let call = json!({"index": i, "function": {"arguments": partial}});
                        return Some(Ok(tool_chunk(&message_id, created, call)));
                    }
                    "message_start" => {
                        if let Some(id) = v.pointer("/message/id").and_then(Value::as_str) {
                            message_id = id.to_owned();
                        }
                        if let Some(u) = v.pointer("/message/usage") {
                            usage.merge_anthropic(u);
                        }
                    }
                    "content_block_delta" => {
                        if let Some(t) = v.pointer("/delta/text").and_then(Value::as_str) {
                            return Some(Ok(ChatEvent::Delta(t.to_owned())));
                        }
                    }
                    "message_delta" => {
                        if let Some(s) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                            stop = Some(finish_reason(s).to_owned());
                        }
                        if let Some(u) = v.get("usage") {
                            usage.merge_anthropic(u);
                        }
                    }
                    "message_stop" => {
                        done = true;
                        tail = vec![
                            ChatEvent::Usage(usage),
                            ChatEvent::Finish(stop.take().unwrap_or_else(|| "stop".into())),
                        ];
                    }
                    "error" => {
                        done = true;
                        let msg = v.pointer("/error/message").and_then(Value::as_str).unwrap_or("stream error");
                        return Some(Err(ProviderError::Status { status: 502, message: msg.to_owned() }));
                    }
                    _ => {}
                }
            }
        })))
    }
}

/// One OpenAI chunk carrying a tool call's start or a piece of its arguments.
fn tool_chunk(message_id: &str, created: i64, call: Value) -> ChatEvent {
    ChatEvent::Chunk(
        json!({"id": format!("chatcmpl-{message_id}"), "object": "chat.completion.chunk", "created": created,
               "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": null}]}),
        None,
    )
}
