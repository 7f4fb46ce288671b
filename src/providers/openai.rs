//! The OpenAI wire format, for any OpenAI-compatible base URL (OpenAI,
//! DeepSeek, vLLM, Ollama, OpenRouter, DashScope's compatible mode).
//!
//! - Chat: `POST {base}/chat/completions` with `Authorization: Bearer`;
//!   usage from `usage` with its details (cached, audio, reasoning tokens).
//! - Requests carry every field the client sent (`tools`,
//!   `response_format`, image parts, ...); tollgate sets only the upstream
//!   model, the output bound (under the client's name for it) and, for
//!   streams, `stream_options.include_usage`. Answers come back whole.
//! - Streaming: SSE `data:` chunks passed on as they come, a final chunk
//!   with `usage`, then `data: [DONE]`.
//! - Images: `POST {base}/images/generations` -> `data[].url` (or `b64_json`).

use super::http;
use super::sse::SseReader;
use super::types::{AudioStream, ChatEvent, ChatRequest, ChatResponse, FormPart, ImageRequest, ImageResponse, Usage};
use super::{ChatStream, ProviderError};
use serde_json::{Value, json};
use std::io::BufReader;
use ureq::Agent;

/// Most audio bytes one speech answer may stream back.
pub const SPEECH_BYTES_MAX: u64 = 256 << 20;

pub struct OpenAi {
    pub base_url: String,
    pub key: Option<String>,
    pub agent: Agent,
    /// The output bound's name when the client sent none:
    /// `max_completion_tokens` for OpenAI (its reasoning models refuse
    /// `max_tokens`), `max_tokens` for servers that only mirror chat.
    pub unsent_bound: &'static str,
}

/// The request body: everything the client sent, with only what tollgate
/// must set changed: the upstream model name, the output bound (under the
/// name the client used), and, for streams, usage reporting.
pub fn chat_body(upstream: &str, req: &ChatRequest, stream: bool, unsent_bound: &'static str) -> Value {
    let mut body = req.passthrough.clone();
    if !body.contains_key("messages") {
        body.insert("messages".into(), json!(req.messages));
        if let Some(t) = req.temperature {
            body.insert("temperature".into(), json!(t));
        }
        if let Some(p) = req.top_p {
            body.insert("top_p".into(), json!(p));
        }
        if let Some(s) = &req.stop {
            body.insert("stop".into(), s.clone());
        }
    }
    body.insert("model".into(), json!(upstream));
    body.shift_remove("max_tokens");
    body.shift_remove("max_completion_tokens");
    body.insert(req.max_tokens_field.name_or(unsent_bound).into(), json!(req.max_tokens));
    if req.n > 1 {
        body.insert("n".into(), json!(req.n));
    }
    if stream {
        body.insert("stream".into(), json!(true));
        let options = body.entry("stream_options").or_insert_with(|| json!({}));
        if !options.is_object() {
            *options = json!({});
        }
        options["include_usage"] = json!(true);
    } else {
        // A client's own `"stream": false` goes on as sent; options for a
        // stream mean nothing without one (and OpenAI refuses them).
        if body.contains_key("stream") {
            body.insert("stream".into(), json!(false));
        }
        body.shift_remove("stream_options");
    }
    Value::Object(body)
}

fn usage_of(v: &Value) -> Option<Usage> {
    v.get("usage").filter(|u| !u.is_null()).map(Usage::from_openai)
}

impl OpenAi {
    fn post(&self, path: &str, body: &Value) -> Result<ureq::http::Response<ureq::Body>, ProviderError> {
        let url = format!("{}{path}", self.base_url.trim_end_matches('/'));
        let mut rb = self.agent.post(&url);
        if let Some(k) = &self.key {
            rb = rb.header("Authorization", &format!("Bearer {k}"));
        }
        http::check(rb.send_json(body).map_err(ProviderError::from_ureq)?)
    }

    pub fn chat(&self, upstream: &str, req: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let v = http::read_json(self.post("/chat/completions", &chat_body(upstream, req, false, self.unsent_bound))?)?;
        let choice = v.pointer("/choices/0").ok_or_else(|| ProviderError::BadResponse("no choices".into()))?;
        Ok(ChatResponse {
            id: v.get("id").and_then(Value::as_str).unwrap_or("").to_owned(),
            text: choice.pointer("/message/content").and_then(Value::as_str).unwrap_or("").to_owned(),
            finish_reason: choice.get("finish_reason").and_then(Value::as_str).unwrap_or("stop").to_owned(),
            usage: usage_of(&v).unwrap_or_default(),
            raw: Some(v),
        })
    }

    /// Each chunk comes back whole (`ChatEvent::Chunk`), its usage read.
    pub fn chat_stream(&self, upstream: &str, req: &ChatRequest) -> Result<ChatStream, ProviderError> {
        let resp = self.post("/chat/completions", &chat_body(upstream, req, true, self.unsent_bound))?;
        let mut sse = SseReader::new(BufReader::new(resp.into_body().into_reader()));
        let mut done = false;
        Ok(Box::new(std::iter::from_fn(move || {
            loop {
                if done {
                    return None;
                }
                let ev = match sse.next_event() {
                    Ok(Some(ev)) => ev,
                    Ok(None) => {
                        done = true;
                        continue;
                    }
                    Err(e) => {
                        done = true;
                        return Some(Err(e));
                    }
                };
                if ev.data.trim() == "[DONE]" {
                    done = true;
                    continue;
                }
                let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
                    done = true;
                    return Some(Err(ProviderError::BadResponse("a stream chunk is not JSON".into())));
                };
                if let Some(msg) = v.pointer("/error/message").and_then(Value::as_str) {
                    done = true;
                    return Some(Err(ProviderError::Status { status: 502, message: msg.to_owned() }));
                }
                let usage = usage_of(&v);
                return Some(Ok(ChatEvent::Chunk(v, usage)));
            }
        })))
    }

    /// `POST {base}/responses` with the client's body (model replaced, the
    /// output bound set); the answer whole.
    pub fn responses(&self, upstream: &str, body: &serde_json::Map<String, Value>) -> Result<Value, ProviderError> {
        let mut body = body.clone();
        body.insert("model".into(), json!(upstream));
        body.shift_remove("stream");
        http::read_json(self.post("/responses", &Value::Object(body))?)
    }

    /// The same, streamed: every server-sent event as it comes (its name and
    /// its JSON data), until the stream ends.
    pub fn responses_stream(
        &self,
        upstream: &str,
        body: &serde_json::Map<String, Value>,
    ) -> Result<super::RawStream, ProviderError> {
        let mut body = body.clone();
        body.insert("model".into(), json!(upstream));
        body.insert("stream".into(), json!(true));
        let resp = self.post("/responses", &Value::Object(body))?;
        Ok(super::sse::raw_events(resp))
    }

    /// `POST {base}/embeddings` with the client's body (model replaced);
    /// the answer comes back whole.
    pub fn embeddings(&self, upstream: &str, body: &serde_json::Map<String, Value>) -> Result<Value, ProviderError> {
        let mut body = body.clone();
        body.insert("model".into(), json!(upstream));
        http::read_json(self.post("/embeddings", &Value::Object(body))?)
    }

    /// `POST {base}/audio/speech` with the client's body (model
    /// replaced); the audio as it comes, at most [`SPEECH_BYTES_MAX`].
    pub fn speech(&self, upstream: &str, body: &serde_json::Map<String, Value>) -> Result<AudioStream, ProviderError> {
        let mut body = body.clone();
        body.insert("model".into(), json!(upstream));
        let resp = self.post("/audio/speech", &Value::Object(body))?;
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let body = std::io::Read::take(resp.into_body().into_reader(), SPEECH_BYTES_MAX);
        Ok(AudioStream { content_type, body: Box::new(body) })
    }

    /// `POST {base}/audio/transcriptions`: the client's form, in order,
    /// with the model's value replaced; the answer's media type and bytes
    /// (JSON, or text for `text`, `srt`, `vtt`).
    pub fn transcribe(&self, upstream: &str, parts: &[FormPart]) -> Result<(String, Vec<u8>), ProviderError> {
        let boundary = format!(
            "tollgate-{}",
            crate::support::token::hex(
                &crate::support::token::random_bytes::<12>()
                    .map_err(|e| ProviderError::Unavailable(format!("no randomness for a form boundary: {e}")))?
            )
        );
        let url = format!("{}/audio/transcriptions", self.base_url.trim_end_matches('/'));
        let mut rb = self.agent.post(&url).header("Content-Type", &format!("multipart/form-data; boundary={boundary}"));
        if let Some(k) = &self.key {
            rb = rb.header("Authorization", &format!("Bearer {k}"));
        }
        let form = super::form::encode(parts, &boundary, |p| (p.name == "model").then_some(upstream.as_bytes()));
        let mut resp = http::check(rb.send(&form[..]).map_err(ProviderError::from_ureq)?)?;
        let content_type =
            resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("application/json").to_owned();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(http::PROVIDER_BODY_BYTES_MAX)
            .read_to_vec()
            .map_err(ProviderError::from_ureq)?;
        Ok((content_type, bytes))
    }

    /// `POST {base}/moderations` with the client's body (model replaced).
    pub fn moderate(&self, upstream: &str, body: &serde_json::Map<String, Value>) -> Result<Value, ProviderError> {
        let mut body = body.clone();
        body.insert("model".into(), json!(upstream));
        http::read_json(self.post("/moderations", &Value::Object(body))?)
    }

    pub fn image(&self, upstream: &str, req: &ImageRequest) -> Result<ImageResponse, ProviderError> {
        let body = if req.passthrough.is_empty() {
            let mut body = json!({"model": upstream, "prompt": req.prompt, "n": req.n});
            if let Some(s) = &req.size {
                body["size"] = json!(s);
            }
            if let Some(q) = &req.quality {
                body["quality"] = json!(q);
            }
            if req.b64_json {
                body["response_format"] = json!("b64_json");
            }
            body
        } else {
            // The client's body, in its order, with only the model replaced.
            let mut body = req.passthrough.clone();
            body.insert("model".into(), json!(upstream));
            Value::Object(body)
        };
        let v = http::read_json(self.post("/images/generations", &body)?)?;
        let urls: Vec<String> = v
            .get("data")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| {
                        i.get("url").and_then(Value::as_str).map(str::to_owned).or_else(|| {
                            i.get("b64_json").and_then(Value::as_str).map(|b| format!("data:image/png;base64,{b}"))
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        if urls.is_empty() {
            return Err(ProviderError::BadResponse("no images in the answer".into()));
        }
        let raw = (!req.passthrough.is_empty()).then_some(v);
        Ok(ImageResponse { urls, raw })
    }
}
