//! Anthropic's Messages API, mapped to and from the OpenAI chat shape.
//!
//! - `POST {base}/v1/messages` with `x-api-key` and `anthropic-version`;
//!   OpenAI `system` messages become the top-level `system` string; the
//!   answer's `content[]` text blocks are joined; `stop_reason` maps to
//!   `finish_reason` (`end_turn`/`stop_sequence` -> `stop`, `max_tokens` ->
//!   `length`, `tool_use` -> `tool_calls`); usage from `usage.input_tokens`
//!   and `usage.output_tokens`.
//! - Streaming events: `message_start` (input tokens), `content_block_delta`
//!   with `text_delta`, `message_delta` (stop reason, cumulative output
//!   tokens), `message_stop`; `ping` ignored; `error` ends the stream.

use super::http::{self, u64_at};
use super::sse::SseReader;
use super::types::{ChatEvent, ChatRequest, ChatResponse, Usage};
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

fn body(upstream: &str, req: &ChatRequest, stream: bool) -> Value {
    let system: Vec<&str> = req.messages.iter().filter(|m| m.role == "system").map(|m| m.content.as_str()).collect();
    let messages: Vec<Value> = req
        .messages
        .iter()
        .filter(|m| m.role != "system")
        .map(|m| json!({"role": if m.role == "assistant" { "assistant" } else { "user" }, "content": m.content}))
        .collect();
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
    if stream {
        b["stream"] = json!(true);
    }
    b
}

impl Anthropic {
    fn post(&self, b: &Value) -> Result<ureq::http::Response<ureq::Body>, ProviderError> {
        let url = format!("{}/v1/messages", self.base_url.trim_end_matches('/'));
        let mut rb = self.agent.post(&url).header("anthropic-version", ANTHROPIC_VERSION);
        if let Some(k) = &self.key {
            rb = rb.header("x-api-key", k);
        }
        http::check(rb.send_json(b).map_err(ProviderError::from_ureq)?)
    }

    pub fn chat(&self, upstream: &str, req: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let v = http::read_json(self.post(&body(upstream, req, false))?)?;
        let text: String = v
            .get("content")
            .and_then(Value::as_array)
            .map(|blocks| {
                blocks
                    .iter()
                    .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                    .filter_map(|b| b.get("text").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        Ok(ChatResponse {
            id: v.get("id").and_then(Value::as_str).unwrap_or("").to_owned(),
            text,
            finish_reason: finish_reason(v.get("stop_reason").and_then(Value::as_str).unwrap_or("end_turn")).to_owned(),
            usage: Usage {
                prompt_tokens: u64_at(&v, "/usage/input_tokens"),
                completion_tokens: u64_at(&v, "/usage/output_tokens"),
            },
            raw: None,
        })
    }

    pub fn chat_stream(&self, upstream: &str, req: &ChatRequest) -> Result<ChatStream, ProviderError> {
        let resp = self.post(&body(upstream, req, true))?;
        let mut sse = SseReader::new(BufReader::new(resp.into_body().into_reader()));
        let mut usage = Usage::default();
        let mut stop: Option<String> = None;
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
                    "message_start" => {
                        usage.prompt_tokens = u64_at(&v, "/message/usage/input_tokens");
                        usage.completion_tokens = u64_at(&v, "/message/usage/output_tokens");
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
                        if let Some(n) = v.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                            usage.completion_tokens = n;
                        }
                        if let Some(n) = v.pointer("/usage/input_tokens").and_then(Value::as_u64) {
                            usage.prompt_tokens = n;
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
