//! Google's Gemini API (`generativelanguage.googleapis.com`).
//!
//! - `POST {base}/v1beta/models/{model}:generateContent` with
//!   `x-goog-api-key`; streamed: `:streamGenerateContent?alt=sse`, each
//!   `data:` a partial `GenerateContentResponse`.
//! - From OpenAI chat: `system` messages become `systemInstruction`; turns
//!   become `contents` (`assistant` -> `model`), text and image parts (a
//!   data URI as `inlineData`, a URL as `fileData`), `tool_calls` become
//!   `functionCall` parts and `tool` messages `functionResponse` parts (named
//!   from the call they answer); `tools` become `functionDeclarations`,
//!   `tool_choice` `toolConfig`; `max_tokens`, `temperature`, `top_p`,
//!   `stop` go in `generationConfig`. Answers' `functionCall` parts come back
//!   as `tool_calls`; `finishReason` maps to `finish_reason`.
//! - Usage from `usageMetadata`: `promptTokenCount` (cached content
//!   included, `cachedContentTokenCount` of it; audio from
//!   `promptTokensDetails`), `candidatesTokenCount` + `thoughtsTokenCount`
//!   (thinking is billed as output and reported apart).
//! - A client's own Gemini body (`/v1beta` routes) goes upstream whole;
//!   the answer or every streamed chunk comes back as sent.

use super::chat_map::{self, ToolChoice, function_tools, push_turn, text_of, tool_choice};
use super::http;
use super::types::{ChatEvent, ChatRequest, ChatResponse, Honours, Usage};
use super::{ChatStream, ProviderError};
use serde_json::{Map, Value, json};
use ureq::Agent;

pub struct Google {
    pub base_url: String,
    pub key: Option<String>,
    pub agent: Agent,
}

/// What Google routes honour of an OpenAI chat request: the basic fields,
/// and tools, images and tool calls, which are mapped.
pub const HONOURS: Honours = Honours { extra_fields: &["tools", "tool_choice"], rich_messages: true };

/// Usage from a Gemini `usageMetadata`.
pub fn usage_of(u: &Value) -> Usage {
    let n = |p: &str| u.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    let thoughts = n("/thoughtsTokenCount");
    let audio = u
        .get("promptTokensDetails")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|d| d.get("modality").and_then(Value::as_str) == Some("AUDIO"))
        .filter_map(|d| d.get("tokenCount").and_then(Value::as_u64))
        .sum();
    Usage {
        prompt_tokens: n("/promptTokenCount") + n("/toolUsePromptTokenCount"),
        completion_tokens: n("/candidatesTokenCount") + thoughts,
        cached_tokens: n("/cachedContentTokenCount"),
        reasoning_tokens: thoughts,
        audio_input_tokens: audio,
        ..Usage::default()
    }
}

fn finish_reason(r: &str) -> &'static str {
    match r {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" => "content_filter",
        _ => "stop",
    }
}

/// An OpenAI content part as a Gemini part.
fn part_of(p: &Value) -> Value {
    if p.get("type").and_then(Value::as_str) != Some("image_url") {
        return json!({"text": p.get("text").and_then(Value::as_str).unwrap_or("")});
    }
    let url = p.pointer("/image_url/url").and_then(Value::as_str).unwrap_or("");
    match url.strip_prefix("data:").and_then(|rest| rest.split_once(";base64,")) {
        Some((mime, data)) => json!({"inlineData": {"mimeType": mime, "data": data}}),
        None => json!({"fileData": {"fileUri": url}}),
    }
}

/// OpenAI messages as Gemini's `systemInstruction` and `contents`.
fn contents_of(items: &[Value]) -> (Vec<String>, Vec<Value>) {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    // A tool result names its function; OpenAI's names only the call.
    let mut call_names: std::collections::HashMap<String, Value> = std::collections::HashMap::new();
    for m in items {
        let content = m.get("content").unwrap_or(&Value::Null);
        let (role, parts): (&'static str, Vec<Value>) = match m.get("role").and_then(Value::as_str).unwrap_or("user") {
            "system" | "developer" => {
                system.push(text_of(content));
                continue;
            }
            "assistant" => {
                let mut parts = Vec::new();
                let text = text_of(content);
                if !text.is_empty() {
                    parts.push(json!({"text": text}));
                }
                for call in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    let name = call.pointer("/function/name").cloned().unwrap_or(json!(""));
                    if let Some(id) = call.get("id").and_then(Value::as_str) {
                        call_names.insert(id.to_owned(), name.clone());
                    }
                    let args = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}");
                    let args = serde_json::from_str::<Value>(args).ok().filter(Value::is_object).unwrap_or(json!({}));
                    parts.push(json!({"functionCall": {"name": name, "args": args}}));
                }
                ("model", parts)
            }
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or("");
                let name = call_names.get(id).cloned().unwrap_or(json!(id));
                let text = text_of(content);
                let response = serde_json::from_str::<Value>(&text)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({"result": text}));
                ("user", vec![json!({"functionResponse": {"name": name, "response": response}})])
            }
            _ => match content {
                Value::Array(parts) => ("user", parts.iter().map(part_of).collect()),
                other => ("user", vec![json!({"text": text_of(other)})]),
            },
        };
        push_turn(&mut turns, role, parts);
    }
    (system, turns.into_iter().map(|(role, parts)| json!({"role": role, "parts": parts})).collect())
}

/// OpenAI `tools` and `tool_choice` as Gemini's.
fn tools_of(req: &ChatRequest, b: &mut Value) {
    if let Some(tools) = function_tools(req) {
        let decls: Vec<Value> = tools
            .into_iter()
            .map(|t| {
                let mut d = json!({"name": t.name});
                if let Some(p) = t.parameters {
                    d["parameters"] = p.clone();
                }
                if let Some(desc) = t.description {
                    d["description"] = desc.clone();
                }
                d
            })
            .collect();
        b["tools"] = json!([{"functionDeclarations": decls}]);
    }
    let config = tool_choice(req).map(|c| match c {
        ToolChoice::Required => json!({"mode": "ANY"}),
        ToolChoice::Nothing => json!({"mode": "NONE"}),
        ToolChoice::Auto => json!({"mode": "AUTO"}),
        ToolChoice::Function(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
    });
    if let Some(c) = config {
        b["toolConfig"] = json!({"functionCallingConfig": c});
    }
}

fn body(req: &ChatRequest) -> Value {
    let (system, contents) = contents_of(&chat_map::messages(req));
    let mut config = json!({"maxOutputTokens": req.max_tokens});
    if let Some(t) = req.temperature {
        config["temperature"] = json!(t);
    }
    if let Some(p) = req.top_p {
        config["topP"] = json!(p);
    }
    if let Some(stop) = &req.stop {
        config["stopSequences"] = if stop.is_string() { json!([stop]) } else { stop.clone() };
    }
    let mut b = json!({"contents": contents, "generationConfig": config});
    if !system.is_empty() {
        b["systemInstruction"] = json!({"parts": [{"text": system.join("\n\n")}]});
    }
    tools_of(req, &mut b);
    b
}

/// A Gemini answer's text, tool calls (OpenAI's shape) and finish reason.
fn answer_of(v: &Value) -> (String, Vec<Value>, Option<&'static str>) {
    let candidate = v.pointer("/candidates/0");
    let mut text = String::new();
    let mut calls = Vec::new();
    for p in candidate.and_then(|c| c.pointer("/content/parts")).and_then(Value::as_array).into_iter().flatten() {
        // Thought summaries are not the answer.
        if p.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(t) = p.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(f) = p.get("functionCall") {
            let args = f.get("args").map_or_else(|| "{}".to_owned(), Value::to_string);
            let id = f.get("id").and_then(Value::as_str).map_or_else(|| format!("call_{}", calls.len()), str::to_owned);
            calls.push(json!({"id": id, "type": "function", "function": {"name": f.get("name"), "arguments": args}}));
        }
    }
    let finish = candidate.and_then(|c| c.get("finishReason")).and_then(Value::as_str).map(finish_reason);
    (text, calls, finish)
}

fn unix_now() -> i64 {
    crate::domain::Timestamp::now().millis() / 1000
}

impl Google {
    fn post(&self, upstream: &str, action: &str, b: &Value) -> Result<ureq::http::Response<ureq::Body>, ProviderError> {
        let url = format!("{}/v1beta/models/{upstream}:{action}", self.base_url.trim_end_matches('/'));
        let mut rb = self.agent.post(&url);
        if let Some(k) = &self.key {
            rb = rb.header("x-goog-api-key", k);
        }
        http::check(rb.send_json(b).map_err(ProviderError::from_ureq)?)
    }

    pub fn chat(&self, upstream: &str, req: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let v = http::read_json(self.post(upstream, "generateContent", &body(req))?)?;
        let (text, calls, finish) = answer_of(&v);
        let finish = if calls.is_empty() { finish.unwrap_or("stop") } else { "tool_calls" }.to_owned();
        let usage = v.get("usageMetadata").map(usage_of).unwrap_or_default();
        let id = format!("chatcmpl-{}", v.get("responseId").and_then(Value::as_str).unwrap_or("gemini"));
        let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
        if !calls.is_empty() {
            message["tool_calls"] = json!(calls);
        }
        let raw = json!({"id": id, "object": "chat.completion", "created": unix_now(), "model": upstream,
                         "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                         "usage": usage.openai_json()});
        Ok(ChatResponse { id, text, finish_reason: finish, usage, raw: Some(raw) })
    }

    pub fn chat_stream(&self, upstream: &str, req: &ChatRequest) -> Result<ChatStream, ProviderError> {
        let resp = self.post(upstream, "streamGenerateContent?alt=sse", &body(req))?;
        let mut events = super::sse::raw_events(resp);
        let mut usage: Option<Usage> = None;
        let mut finish: Option<&'static str> = None;
        let mut called = 0usize;
        let mut tail: Vec<ChatEvent> = Vec::new();
        let mut done = false;
        let created = unix_now();
        Ok(Box::new(std::iter::from_fn(move || {
            loop {
                if let Some(e) = tail.pop() {
                    return Some(Ok(e));
                }
                if done {
                    return None;
                }
                match events.next() {
                    None => {
                        done = true;
                        let reason = if called > 0 { "tool_calls" } else { finish.unwrap_or("stop") };
                        tail.push(ChatEvent::Finish(reason.to_owned()));
                        if let Some(u) = usage {
                            tail.push(ChatEvent::Usage(u));
                        }
                    }
                    Some(Err(e)) => {
                        done = true;
                        return Some(Err(e));
                    }
                    Some(Ok((_, v))) => {
                        if let Some(msg) = v.pointer("/error/message").and_then(Value::as_str) {
                            done = true;
                            return Some(Err(ProviderError::Status { status: 502, message: msg.to_owned() }));
                        }
                        if let Some(u) = v.get("usageMetadata") {
                            usage = Some(usage_of(u));
                        }
                        let (text, calls, f) = answer_of(&v);
                        finish = f.or(finish);
                        for call in calls {
                            let delta = json!({"tool_calls": [{"index": called, "id": call["id"], "type": "function", "function": call["function"]}]});
                            called += 1;
                            tail.insert(0, ChatEvent::Chunk(
                                json!({"id": "chatcmpl-gemini", "object": "chat.completion.chunk", "created": created,
                                       "choices": [{"index": 0, "delta": delta, "finish_reason": null}]}),
                                None,
                            ));
                        }
                        if !text.is_empty() {
                            tail.push(ChatEvent::Delta(text));
                        }
                    }
                }
            }
        })))
    }

    /// A client's own Gemini body to `:generateContent`; the answer whole.
    pub fn generate(&self, upstream: &str, body: &Map<String, Value>) -> Result<Value, ProviderError> {
        http::read_json(self.post(upstream, "generateContent", &Value::Object(body.clone()))?)
    }

    /// A client's own body to `:countTokens`; the answer whole.
    pub fn count_tokens(&self, upstream: &str, body: &Map<String, Value>) -> Result<Value, ProviderError> {
        http::read_json(self.post(upstream, "countTokens", &Value::Object(body.clone()))?)
    }

    /// The same to `:streamGenerateContent?alt=sse`: every chunk as sent.
    pub fn generate_stream(
        &self,
        upstream: &str,
        body: &Map<String, Value>,
    ) -> Result<super::RawStream, ProviderError> {
        let resp = self.post(upstream, "streamGenerateContent?alt=sse", &Value::Object(body.clone()))?;
        Ok(super::sse::raw_events(resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_metadata_counts_thoughts_as_output_and_the_cache_inside_the_prompt() {
        let u = usage_of(&json!({"promptTokenCount": 1000, "cachedContentTokenCount": 600, "candidatesTokenCount": 50,
                                 "thoughtsTokenCount": 200, "totalTokenCount": 1250,
                                 "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 900}, {"modality": "AUDIO", "tokenCount": 100}]}));
        assert_eq!((u.prompt_tokens, u.completion_tokens), (1000, 250));
        assert_eq!((u.cached_tokens, u.reasoning_tokens, u.audio_input_tokens), (600, 200, 100));
        assert_eq!((u.plain_input(), u.plain_output()), (300, 50));
    }

    #[test]
    fn a_tool_conversation_maps_to_contents_with_named_function_responses() {
        let items = vec![
            json!({"role": "system", "content": "be brief"}),
            json!({"role": "user", "content": [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}}]}),
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]}),
            json!({"role": "tool", "tool_call_id": "c1", "content": "21 C"}),
        ];
        let (system, contents) = contents_of(&items);
        assert_eq!(system, ["be brief"]);
        assert_eq!(contents[0]["parts"][1], json!({"inlineData": {"mimeType": "image/png", "data": "AAA"}}));
        assert_eq!(
            contents[1],
            json!({"role": "model", "parts": [{"functionCall": {"name": "weather", "args": {"city": "Paris"}}}]})
        );
        assert_eq!(
            contents[2],
            json!({"role": "user", "parts": [{"functionResponse": {"name": "weather", "response": {"result": "21 C"}}}]})
        );
    }
}
