//! Anthropic's Messages API as a client dialect over any chat route: a
//! Messages request as an OpenAI chat request, and the chat answer (whole or
//! streamed) as a Messages answer, so Claude Code and the Anthropic SDKs can
//! run on any chat model an operator configures.
//!
//! - Request: `system` (string or text blocks) becomes a system message;
//!   text and image blocks become content parts; `tool_use` blocks become
//!   an assistant's `tool_calls`, `tool_result` blocks `tool` messages (an
//!   `is_error` result says so in its text); `tools`, `tool_choice`
//!   (`disable_parallel_tool_use` as `parallel_tool_calls: false`),
//!   `stop_sequences`, `temperature`, `top_p`, `metadata.user_id` (as
//!   `user`) are mapped. `cache_control` markers are accepted and have no
//!   counterpart: OpenAI-compatible providers cache prompts by themselves.
//! - Anything else that would change the answer (`thinking`, `top_k`,
//!   `service_tier`, server tools, document blocks, ...) is refused with the
//!   field named: never dropped.
//! - Answer: content as text and `tool_use` blocks, `finish_reason` as
//!   `stop_reason`, usage in Anthropic's shape (input without the cache).
//!
//! Never calls a provider nor knows about credits: the `messages` route does.

use super::types::{ChatEvent, ChatResponse, Usage};
use serde_json::{Map, Value, json};

/// A Messages field or block a chat route cannot carry: the 400's param
/// and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncarried {
    pub param: String,
    pub message: String,
}

fn uncarried(param: impl Into<String>, why: &str) -> Uncarried {
    let param = param.into();
    Uncarried {
        message: format!(
            "{param} cannot be carried to this model's provider (an OpenAI-compatible chat API): {why}. Remove it, or use a model served by an anthropic provider."
        ),
        param,
    }
}

/// Top-level fields mapped (or, for `model`, `max_tokens` and `stream`,
/// set by the route).
const MAPPED: &[&str] = &[
    "model",
    "messages",
    "system",
    "max_tokens",
    "stream",
    "temperature",
    "top_p",
    "stop_sequences",
    "tools",
    "tool_choice",
    "metadata",
    "thinking",
];

/// The text of a string or of text blocks (cache markers aside).
fn text_blocks(v: &Value, param: &str) -> Result<String, Uncarried> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => blocks
            .iter()
            .enumerate()
            .map(|(i, b)| match b.get("type").and_then(Value::as_str) {
                Some("text") => Ok(b.get("text").and_then(Value::as_str).unwrap_or("").to_owned()),
                _ => Err(uncarried(format!("{param}[{i}]"), "only text blocks can be carried here")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|parts| parts.join("\n")),
        Value::Null => Ok(String::new()),
        _ => Err(uncarried(param, "it must be a string or an array of text blocks")),
    }
}

/// An image block as an OpenAI `image_url` part.
fn image_part(b: &Value, param: &str) -> Result<Value, Uncarried> {
    let src = b.get("source").unwrap_or(&Value::Null);
    let url = match src.get("type").and_then(Value::as_str) {
        Some("base64") => format!(
            "data:{};base64,{}",
            src.get("media_type").and_then(Value::as_str).unwrap_or("image/png"),
            src.get("data").and_then(Value::as_str).unwrap_or("")
        ),
        Some("url") => src.get("url").and_then(Value::as_str).unwrap_or("").to_owned(),
        _ => return Err(uncarried(format!("{param}.source"), "only base64 and url images can be carried")),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// One Messages turn as chat messages: a user turn's tool results become
/// `tool` messages (first, as OpenAI wants them right after the calls),
/// the rest one user message; an assistant turn one assistant message.
fn turn(m: &Value, i: usize, out: &mut Vec<Value>) -> Result<(), Uncarried> {
    let param = format!("messages[{i}]");
    let role = m.get("role").and_then(Value::as_str).unwrap_or("");
    if role != "user" && role != "assistant" {
        return Err(uncarried(format!("{param}.role"), "a role must be user or assistant"));
    }
    let blocks = match m.get("content") {
        Some(Value::String(s)) => {
            out.push(json!({"role": role, "content": s}));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => return Err(uncarried(format!("{param}.content"), "content must be a string or an array of blocks")),
    };
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let at = format!("{param}.content[{j}]");
        match (role, b.get("type").and_then(Value::as_str).unwrap_or("")) {
            (_, "text") => {
                parts.push(json!({"type": "text", "text": b.get("text").and_then(Value::as_str).unwrap_or("")}))
            }
            ("user", "image") => parts.push(image_part(b, &at)?),
            ("user", "tool_result") => {
                let mut text = text_blocks(b.get("content").unwrap_or(&Value::Null), &format!("{at}.content"))?;
                if b.get("is_error").and_then(Value::as_bool) == Some(true) {
                    text = format!("[tool error] {text}");
                }
                out.push(json!({"role": "tool", "tool_call_id": b.get("tool_use_id").cloned().unwrap_or(json!("")), "content": text}));
            }
            ("assistant", "tool_use") => calls.push(json!({
                "id": b.get("id").cloned().unwrap_or(json!("")),
                "type": "function",
                "function": {"name": b.get("name").cloned().unwrap_or(json!("")),
                             "arguments": b.get("input").unwrap_or(&json!({})).to_string()},
            })),
            (_, kind) => return Err(uncarried(at, &format!("a {kind:?} block has no chat counterpart"))),
        }
    }
    if role == "assistant" {
        let text: String = parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect();
        let mut msg = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
        if !calls.is_empty() {
            msg["tool_calls"] = json!(calls);
        }
        out.push(msg);
    } else if !parts.is_empty() {
        out.push(json!({"role": "user", "content": parts}));
    }
    Ok(())
}

/// Anthropic tools as OpenAI functions; a server tool (one with a `type`
/// other than `custom`) runs at Anthropic and cannot be carried.
fn tools(v: &Value) -> Result<Value, Uncarried> {
    let items = v.as_array().ok_or_else(|| uncarried("tools", "tools must be an array"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if t.get("type").and_then(Value::as_str).is_some_and(|k| k != "custom") {
                return Err(uncarried(format!("tools[{i}]"), "a server tool runs only at Anthropic"));
            }
            let mut f = json!({"name": t.get("name").cloned().unwrap_or(json!("")),
                               "parameters": t.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"}))});
            if let Some(d) = t.get("description") {
                f["description"] = d.clone();
            }
            Ok(json!({"type": "function", "function": f}))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// `tool_choice` and whether parallel calls are off.
fn tool_choice(v: &Value) -> Result<(Value, bool), Uncarried> {
    let no_parallel = v.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true);
    let choice = match v.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => json!({"type": "function", "function": {"name": v.get("name").cloned().unwrap_or(json!(""))}}),
        _ => return Err(uncarried("tool_choice", "its type must be auto, any, tool or none")),
    };
    Ok((choice, no_parallel))
}

/// A Messages request body as an OpenAI chat request body (`model`,
/// `max_tokens` and `stream` as given).
pub fn chat_body(body: &Map<String, Value>) -> Result<Map<String, Value>, Uncarried> {
    if let Some(k) = body.keys().find(|k| !MAPPED.contains(&k.as_str())) {
        return Err(uncarried(k.clone(), "the field has no chat counterpart"));
    }
    if body.get("thinking").is_some_and(|t| t.get("type").and_then(Value::as_str) != Some("disabled")) {
        return Err(uncarried("thinking", "extended thinking budgets are Anthropic's"));
    }
    let mut out = Map::new();
    let mut messages = Vec::new();
    if let Some(system) = body.get("system") {
        let text = text_blocks(system, "system")?;
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    let turns = body.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    for (i, m) in turns.iter().enumerate() {
        turn(m, i, &mut messages)?;
    }
    out.insert("model".into(), body.get("model").cloned().unwrap_or(Value::Null));
    out.insert("messages".into(), Value::Array(messages));
    for k in ["max_tokens", "stream", "temperature", "top_p"] {
        if let Some(v) = body.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    if let Some(stop) = body.get("stop_sequences") {
        out.insert("stop".into(), stop.clone());
    }
    if let Some(t) = body.get("tools") {
        out.insert("tools".into(), tools(t)?);
    }
    if let Some(c) = body.get("tool_choice") {
        let (choice, no_parallel) = tool_choice(c)?;
        out.insert("tool_choice".into(), choice);
        if no_parallel {
            out.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    if let Some(meta) = body.get("metadata") {
        if let Some(k) = meta.as_object().and_then(|m| m.keys().find(|k| *k != "user_id")) {
            return Err(uncarried(format!("metadata.{k}"), "only metadata.user_id has a chat counterpart"));
        }
        if let Some(user) = meta.get("user_id").filter(|u| !u.is_null()) {
            out.insert("user".into(), user.clone());
        }
    }
    Ok(out)
}

/// A chat `finish_reason` as a Messages `stop_reason`.
pub fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Usage in Anthropic's shape: `input_tokens` leaves the cache out.
pub fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens.saturating_sub(u.cached_tokens + u.cache_write_tokens + u.cache_write_1h_tokens),
        "output_tokens": u.completion_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "cache_creation_input_tokens": u.cache_write_tokens + u.cache_write_1h_tokens,
    })
}

/// A tool call's arguments as a `tool_use` input (an object; arguments
/// that are not a JSON object are kept under `arguments`, never lost).
fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ if arguments.trim().is_empty() => json!({}),
        _ => json!({"arguments": arguments}),
    }
}

/// A chat answer as a Messages answer under the public model name.
pub fn message_of(resp: &ChatResponse, model: &str) -> Value {
    let mut content = Vec::new();
    let mut finish = resp.finish_reason.clone();
    match resp.raw.as_ref().and_then(|r| r.pointer("/choices/0")) {
        Some(choice) => {
            let m = choice.get("message").unwrap_or(&Value::Null);
            if let Some(t) = m.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                content.push(json!({"type": "text", "text": t}));
            }
            for c in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                let args = c.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("");
                content.push(json!({"type": "tool_use", "id": c.get("id").cloned().unwrap_or(json!("")),
                                    "name": c.pointer("/function/name").cloned().unwrap_or(json!("")), "input": tool_input(args)}));
            }
            if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
                finish = f.to_owned();
            }
        }
        None if !resp.text.is_empty() => content.push(json!({"type": "text", "text": resp.text})),
        None => {}
    }
    json!({
        "id": message_id(&resp.id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(&finish),
        "stop_sequence": null,
        "usage": usage_json(&resp.usage),
    })
}

fn message_id(chat_id: &str) -> String {
    format!("msg_{}", chat_id.strip_prefix("chatcmpl-").unwrap_or(chat_id))
}

/// The content block a stream has open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    /// A tool call: its index in the chat chunks.
    Tool(u64),
}

/// A streamed chat as Messages events: `message_start`, content blocks
/// (text, `tool_use` with `input_json_delta`), then, once the chat stream
/// ends, `message_delta` (stop reason, usage) and `message_stop`.
#[derive(Debug)]
pub struct EventsFromChat {
    id: String,
    model: String,
    started: bool,
    open: Option<Open>,
    /// Index of the next content block.
    next_block: u64,
    finish: Option<String>,
}

/// One Messages event: its name and data.
pub type Event = (&'static str, Value);

impl EventsFromChat {
    pub fn new(id: &str, model: &str) -> EventsFromChat {
        EventsFromChat {
            id: message_id(id),
            model: model.to_owned(),
            started: false,
            open: None,
            next_block: 0,
            finish: None,
        }
    }

    /// The events `ev` makes (none for usage: it goes in the final delta).
    pub fn on(&mut self, ev: &ChatEvent, out: &mut Vec<Event>) {
        self.start(out);
        match ev {
            ChatEvent::Delta(text) => self.text(text, out),
            ChatEvent::Finish(reason) => self.finish = Some(reason.clone()),
            ChatEvent::Usage(_) => {}
            ChatEvent::Chunk(v, _) => {
                let Some(choice) = v.pointer("/choices/0") else { return };
                let delta = choice.get("delta").unwrap_or(&Value::Null);
                if let Some(t) = delta.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    self.text(t, out);
                }
                for call in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    self.tool(call, out);
                }
                if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
                    self.finish = Some(f.to_owned());
                }
            }
        }
    }

    /// The closing events, with the call's usage (and `extra` fields, the
    /// cost, on the `message_delta`).
    pub fn end(&mut self, usage: &Usage, extra: Option<(&str, Value)>, out: &mut Vec<Event>) {
        self.start(out);
        self.close(out);
        let mut delta = json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason(self.finish.as_deref().unwrap_or("stop")), "stop_sequence": null},
            "usage": usage_json(usage)});
        if let Some((k, v)) = extra {
            delta[k] = v;
        }
        out.push(("message_delta", delta));
        out.push(("message_stop", json!({"type": "message_stop"})));
    }

    fn start(&mut self, out: &mut Vec<Event>) {
        if self.started {
            return;
        }
        self.started = true;
        out.push((
            "message_start",
            json!({"type": "message_start", "message": {"id": self.id, "type": "message", "role": "assistant",
                   "model": self.model, "content": [], "stop_reason": null, "stop_sequence": null,
                   "usage": {"input_tokens": 0, "output_tokens": 0}}}),
        ));
    }

    fn close(&mut self, out: &mut Vec<Event>) {
        if self.open.take().is_some() {
            out.push(("content_block_stop", json!({"type": "content_block_stop", "index": self.next_block - 1})));
        }
    }

    fn open(&mut self, kind: Open, block: Value, out: &mut Vec<Event>) {
        self.close(out);
        self.open = Some(kind);
        out.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": self.next_block, "content_block": block}),
        ));
        self.next_block += 1;
    }

    fn text(&mut self, text: &str, out: &mut Vec<Event>) {
        if self.open != Some(Open::Text) {
            self.open(Open::Text, json!({"type": "text", "text": ""}), out);
        }
        out.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": self.next_block - 1, "delta": {"type": "text_delta", "text": text}}),
        ));
    }

    fn tool(&mut self, call: &Value, out: &mut Vec<Event>) {
        let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        if self.open != Some(Open::Tool(index)) {
            let block = json!({"type": "tool_use", "id": call.get("id").cloned().unwrap_or(json!("")),
                               "name": call.pointer("/function/name").cloned().unwrap_or(json!("")), "input": {}});
            self.open(Open::Tool(index), block, out);
        }
        if let Some(args) = call.pointer("/function/arguments").and_then(Value::as_str).filter(|a| !a.is_empty()) {
            out.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": self.next_block - 1,
                       "delta": {"type": "input_json_delta", "partial_json": args}}),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn a_claude_code_request_maps_to_chat_and_refuses_what_it_cannot_carry() {
        let body = obj(json!({
            "model": "m", "max_tokens": 100, "stream": true,
            "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
            "metadata": {"user_id": "u1"},
            "tools": [{"name": "Read", "description": "read a file", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "read a.txt", "cache_control": {"type": "ephemeral"}}]},
                {"role": "assistant", "content": [{"type": "text", "text": "ok"}, {"type": "tool_use", "id": "t1", "name": "Read", "input": {"path": "a.txt"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "hello", "is_error": true}, {"type": "text", "text": "go on"}]}
            ]
        }));
        let chat = chat_body(&body).unwrap();
        assert_eq!(chat["user"], "u1");
        assert_eq!(chat["tool_choice"], "required");
        assert_eq!(chat["parallel_tool_calls"], false);
        assert_eq!(chat["tools"][0]["function"]["name"], "Read");
        let m = chat["messages"].as_array().unwrap();
        assert_eq!(m[0], json!({"role": "system", "content": "You are Claude Code."}));
        assert_eq!(m[2]["tool_calls"][0]["function"]["arguments"], "{\"path\":\"a.txt\"}");
        assert_eq!(m[3], json!({"role": "tool", "tool_call_id": "t1", "content": "[tool error] hello"}));
        assert_eq!(m[4]["content"][0]["text"], "go on");

        for (field, value) in [
            ("thinking", json!({"type": "enabled", "budget_tokens": 1000})),
            ("top_k", json!(5)),
            ("service_tier", json!("auto")),
            ("tools", json!([{"type": "web_search_20250305", "name": "web_search"}])),
        ] {
            let mut b = body.clone();
            b.insert(field.into(), value);
            let e = chat_body(&b).unwrap_err();
            assert!(e.param.starts_with(field), "{field}: {e:?}");
        }
        let mut b = body.clone();
        b.insert("messages".into(), json!([{"role": "user", "content": [{"type": "document", "source": {}}]}]));
        assert_eq!(chat_body(&b).unwrap_err().param, "messages[0].content[0]");
        b.insert("thinking".into(), json!({"type": "disabled"}));
        b.insert("messages".into(), json!([{"role": "user", "content": "hi"}]));
        assert!(chat_body(&b).is_ok(), "thinking disabled changes nothing");
    }

    #[test]
    fn a_streamed_tool_call_becomes_blocks_in_order() {
        let mut t = EventsFromChat::new("chatcmpl-1", "pub");
        let mut out = Vec::new();
        let chunk = |delta: Value, finish: Value| {
            ChatEvent::Chunk(json!({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}), None)
        };
        t.on(&chunk(json!({"content": "Let me"}), Value::Null), &mut out);
        t.on(&chunk(json!({"content": " look."}), Value::Null), &mut out);
        t.on(
            &chunk(
                json!({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "Read", "arguments": ""}}]}),
                Value::Null,
            ),
            &mut out,
        );
        t.on(
            &chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"p\":1}"}}]}), Value::Null),
            &mut out,
        );
        t.on(&chunk(json!({}), json!("tool_calls")), &mut out);
        t.end(&Usage { prompt_tokens: 10, completion_tokens: 3, cached_tokens: 4, ..Usage::default() }, None, &mut out);
        let names: Vec<&str> = out.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(out[5].1["content_block"]["name"], "Read");
        assert_eq!(out[6].1["delta"]["partial_json"], "{\"p\":1}");
        assert_eq!(out[6].1["index"], 1);
        assert_eq!(out[8].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(out[8].1["usage"]["input_tokens"], 6);
        assert_eq!(out[8].1["usage"]["cache_read_input_tokens"], 4);
    }
}
