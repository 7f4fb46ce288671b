//! A fake model provider: a real HTTP server on 127.0.0.1 speaking the
//! OpenAI, Anthropic and DashScope wire formats, with scriptable failures,
//! latency, usage, streaming (including a stream that stalls) and async task
//! progress. It records every request it receives.

#![allow(dead_code)]

use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Value,
    /// The body's bytes (a multipart form is not JSON).
    pub raw: Vec<u8>,
}

/// What the fake's text to speech answers, whatever the text.
pub const SPEECH_BYTES: &[u8] = b"ID3\x04fake mp3 bytes \x00\xff\x10";

/// A text part of a multipart form, found by name (the fake reads forms
/// crudely, by their framing, which is enough to answer).
pub fn form_text(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let start = text.find(&format!("name=\"{name}\"\r\n\r\n"))? + name.len() + 11;
    Some(text[start..].split("\r\n").next()?.to_owned())
}

#[derive(Debug, Clone)]
pub struct Script {
    /// Every call answers this status and error message.
    pub fail: Option<(u16, String)>,
    /// Only the next N calls fail (then `fail` applies, if set).
    pub fail_next: Vec<(u16, String)>,
    pub latency_ms: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub text: String,
    /// Streams leave out the usage chunk.
    pub stream_without_usage: bool,
    /// Streams send this many content chunks, then hang.
    pub stream_stall_after: Option<usize>,
    /// Pause before each streamed event.
    pub stream_event_delay_ms: u64,
    /// Polls a task takes before it succeeds.
    pub task_polls: u32,
    /// Tasks end FAILED instead.
    pub task_fails: bool,
    pub video_seconds: u32,
    /// Output media URLs answer 404 (the provider's URL expired).
    pub media_gone: bool,
    /// The next N media downloads answer 503.
    pub media_fail_next: u32,
    /// Bytes of a served video (an MP4 header, then filler).
    pub video_bytes: usize,
    /// Chat answers this whole body instead (usage from the script's counts).
    pub chat_reply: Option<Value>,
    /// Streams send these chunks instead of the text (then usage, [DONE]).
    pub chat_chunks: Option<Vec<Value>>,
    /// A transcription's usage: `Some(seconds)` as `{type: duration}`;
    /// `None` as token usage from the prompt and completion counts.
    pub transcription_seconds: Option<f64>,
    /// More usage fields, merged into every usage object the fake sends
    /// (OpenAI's `prompt_tokens_details`, Anthropic's cache counts, ...).
    pub usage_extra: Value,
    /// Calls made with one of these keys (`Authorization: Bearer <key>`)
    /// fail with the status and this whole error body.
    pub fail_keys: Vec<(String, u16, Value)>,
}

/// `usage` with the script's extra fields merged in.
fn with_extra(mut usage: Value, script: &Script) -> Value {
    if let (Some(u), Some(extra)) = (usage.as_object_mut(), script.usage_extra.as_object()) {
        u.extend(extra.clone());
    }
    usage
}

impl Default for Script {
    fn default() -> Self {
        Script {
            fail: None,
            fail_next: Vec::new(),
            latency_ms: 0,
            prompt_tokens: 12,
            completion_tokens: 34,
            text: "fake answer from the provider".into(),
            stream_without_usage: false,
            stream_stall_after: None,
            stream_event_delay_ms: 0,
            task_polls: 3,
            task_fails: false,
            video_seconds: 5,
            chat_reply: None,
            chat_chunks: None,
            usage_extra: Value::Null,
            transcription_seconds: Some(2.4),
            media_gone: false,
            media_fail_next: 0,
            video_bytes: 256 * 1024,
            fail_keys: Vec::new(),
        }
    }
}

#[derive(Default)]
struct State {
    script: Script,
    requests: Vec<Recorded>,
    tasks: HashMap<String, (u32, String)>,
    next_task: u64,
}

pub struct FakeProvider {
    pub base: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl FakeProvider {
    pub fn start() -> FakeProvider {
        // Requests with inline images are large: take what the chat route may.
        let limits = tiny_http::Limits { body_bytes_max: Arc::new(|_, _| 64 << 20), ..tiny_http::Limits::default() };
        let config = tiny_http::ServerConfig {
            addr: tiny_http::ConfigListenAddr::from_socket_addrs("127.0.0.1:0").expect("address"),
            limits,
        };
        let server = Arc::new(tiny_http::Server::new(config).expect("fake provider listens"));
        let addr = server.server_addr().to_ip().expect("ip");
        let base = format!("http://{addr}");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        for _ in 0..16 {
            let (server, state, stop, base) =
                (Arc::clone(&server), Arc::clone(&state), Arc::clone(&stop), base.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(Some(rq)) = server.recv_timeout(Duration::from_millis(50)) {
                        handle(rq, &state, &stop, &base);
                    }
                }
            });
        }
        FakeProvider { base, state, stop }
    }

    pub fn script(&self, f: impl FnOnce(&mut Script)) {
        f(&mut self.state.lock().unwrap().script);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn count(&self, path_contains: &str) -> usize {
        self.requests().iter().filter(|r| r.path.contains(path_contains)).count()
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn json_response(status: u16, v: &Value) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    tiny_http::Response::from_data(v.to_string().into_bytes())
        .with_status_code(status)
        .with_header(tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]).unwrap())
}

fn sse_response(events: Vec<String>, script: &Script, stop: Arc<AtomicBool>) -> tiny_http::Response<SseReader> {
    let reader = SseReader {
        events,
        pos: 0,
        buf: Vec::new(),
        stall_after: script.stream_stall_after,
        delay_ms: script.stream_event_delay_ms,
        stop,
    };
    tiny_http::Response::new(
        200.into(),
        vec![tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"text/event-stream"[..]).unwrap()],
        reader,
        None,
        None,
    )
}

/// Serves SSE events one read at a time; can hang after N events.
pub struct SseReader {
    events: Vec<String>,
    pos: usize,
    buf: Vec<u8>,
    stall_after: Option<usize>,
    delay_ms: u64,
    stop: Arc<AtomicBool>,
}

impl Read for SseReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.buf.is_empty() {
            if self.stall_after.is_some_and(|n| self.pos >= n) {
                for _ in 0..600 {
                    if self.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                return Ok(0);
            }
            let Some(e) = self.events.get(self.pos) else { return Ok(0) };
            if self.delay_ms > 0 {
                std::thread::sleep(Duration::from_millis(self.delay_ms));
            }
            self.buf = e.clone().into_bytes();
            self.pos += 1;
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf.drain(..n);
        Ok(n)
    }
}

/// The bytes the fake serves at a media URL: a real PNG (48 x 48) or an MP4
/// header (so the store's content check passes), then filler that differs
/// per path (decoders stop at the PNG's end).
pub fn media_bytes(path: &str, video_bytes: usize) -> Vec<u8> {
    let mut b: Vec<u8> = if path.ends_with(".mp4") {
        b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom".to_vec()
    } else {
        // A real picture (a browser shows it), then the filler.
        include_bytes!("fixtures/gradient.png").to_vec()
    };
    let len = if path.ends_with(".mp4") { video_bytes } else { b.len() + 512 };
    let seed = path.bytes().fold(7u32, |h, c| h.wrapping_mul(31).wrapping_add(u32::from(c)));
    b.extend(
        (0..len.saturating_sub(b.len()) as u32).map(|i| (seed.wrapping_add(i).wrapping_mul(2_654_435_761) >> 24) as u8),
    );
    b
}

fn handle(mut rq: tiny_http::Request, state: &Arc<Mutex<State>>, stop: &Arc<AtomicBool>, base: &str) {
    let mut raw = Vec::new();
    let _ = rq.as_reader().read_to_end(&mut raw);
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let path = rq.url().to_owned();
    let headers: HashMap<String, String> = rq
        .headers()
        .iter()
        .map(|h| (h.field.as_str().as_str().to_ascii_lowercase(), h.value.as_str().to_owned()))
        .collect();
    let method = rq.method().as_str().to_owned();
    let (script, failure) = {
        let mut s = state.lock().unwrap();
        s.requests.push(Recorded {
            method: method.clone(),
            path: path.clone(),
            headers: headers.clone(),
            body: body.clone(),
            raw: raw.clone(),
        });
        let failure =
            if s.script.fail_next.is_empty() { s.script.fail.clone() } else { Some(s.script.fail_next.remove(0)) };
        (s.script.clone(), failure)
    };
    let bearer = headers.get("authorization").and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("").to_owned();
    if let Some((_, status, body)) = script.fail_keys.iter().find(|(k, _, _)| *k == bearer) {
        let _ = rq.respond(json_response(*status, body));
        return;
    }
    if script.latency_ms > 0 {
        std::thread::sleep(Duration::from_millis(script.latency_ms));
    }
    if let Some((status, message)) = failure {
        let _ = rq.respond(json_response(status, &json!({"error": {"message": message, "type": "fake_error"}})));
        return;
    }
    if let Some(media) = path.strip_prefix("/media/") {
        let fail = {
            let mut s = state.lock().unwrap();
            let f = s.script.media_fail_next > 0;
            s.script.media_fail_next = s.script.media_fail_next.saturating_sub(1);
            f
        };
        if script.media_gone || fail {
            let status = if fail { 503 } else { 404 };
            let _ = rq.respond(tiny_http::Response::from_string("<html>expired</html>").with_status_code(status));
            return;
        }
        let ctype = if media.ends_with(".mp4") { &b"video/mp4"[..] } else { &b"image/png"[..] };
        let _ = rq.respond(
            tiny_http::Response::from_data(media_bytes(&path, script.video_bytes))
                .with_header(tiny_http::Header::from_bytes(&b"Content-Type"[..], ctype).unwrap()),
        );
        return;
    }
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let words: Vec<String> =
        script.text.split(' ').enumerate().map(|(i, w)| if i == 0 { w.to_owned() } else { format!(" {w}") }).collect();
    let (p, c) = (script.prompt_tokens, script.completion_tokens);
    if path.ends_with("/chat/completions") {
        if !stream {
            let mut v = json!({"id": "fake-1", "object": "chat.completion", "created": 1, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": script.text}, "finish_reason": "stop"}],
                "usage": with_extra(json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}), &script)});
            if let Some(reply) = &script.chat_reply {
                v = reply.clone();
                v["usage"] = json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c});
            }
            let _ = rq.respond(json_response(200, &v));
            return;
        }
        let chunk = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"id": "fake-1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            )
        };
        let mut events: Vec<String> = match &script.chat_chunks {
            Some(chunks) => chunks.iter().map(|c| format!("data: {c}\n\n")).collect(),
            None => {
                let mut e: Vec<String> = words.iter().map(|w| chunk(json!({"content": w}), Value::Null)).collect();
                e.push(chunk(json!({}), json!("stop")));
                e
            }
        };
        if !script.stream_without_usage && body.pointer("/stream_options/include_usage") == Some(&json!(true)) {
            let usage = with_extra(json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}), &script);
            events.push(format!(
                "data: {}\n\n",
                json!({"id": "fake-1", "object": "chat.completion.chunk", "choices": [], "usage": usage})
            ));
        }
        events.push("data: [DONE]\n\n".into());
        let _ = rq.respond(sse_response(events, &script, Arc::clone(stop)));
    } else if path.ends_with("/responses") {
        let response = |status: &str| {
            json!({"id": "resp_1", "object": "response", "status": status, "model": body["model"],
                   "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": script.text}]}],
                   "usage": with_extra(json!({"input_tokens": p, "output_tokens": c, "total_tokens": p + c}), &script)})
        };
        if !stream {
            let _ = rq.respond(json_response(200, &response("completed")));
            return;
        }
        let ev = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
        let mut events = vec![ev(
            "response.created",
            json!({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}}),
        )];
        for w in &words {
            events.push(ev("response.output_text.delta", json!({"type": "response.output_text.delta", "delta": w})));
        }
        events.push(ev("response.completed", json!({"type": "response.completed", "response": response("completed")})));
        let _ = rq.respond(sse_response(events, &script, Arc::clone(stop)));
    } else if path.ends_with("/embeddings") {
        let inputs = match &body["input"] {
            Value::Array(items) => items.len(),
            _ => 1,
        };
        let data: Vec<Value> =
            (0..inputs).map(|i| json!({"object": "embedding", "index": i, "embedding": [0.6, 0.8]})).collect();
        let _ = rq.respond(json_response(
            200,
            &json!({"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": p, "total_tokens": p}}),
        ));
    } else if path.ends_with("/images/generations") {
        let n = body.get("n").and_then(Value::as_u64).unwrap_or(1);
        // gpt-image-1 answers base64 always, with token usage; DALL-E 3
        // URLs with the prompt it actually used.
        let gpt_image = body.get("model").and_then(Value::as_str).is_some_and(|m| m.starts_with("gpt-image"));
        let b64 = gpt_image || body.get("response_format").and_then(Value::as_str) == Some("b64_json");
        let data: Vec<Value> = (0..n)
            .map(|i| {
                if b64 {
                    json!({"b64_json": format!("aW1hZ2Ut{i}")})
                } else {
                    json!({"url": format!("{base}/media/img/{i}.png"), "revised_prompt": "a revised prompt"})
                }
            })
            .collect();
        let mut answer = json!({"created": 1, "data": data});
        if gpt_image {
            answer["usage"] = json!({"input_tokens": 10, "output_tokens": 4160, "total_tokens": 4170});
            answer["output_format"] = body.get("output_format").cloned().unwrap_or(json!("png"));
        }
        let _ = rq.respond(json_response(200, &answer));
    } else if path.ends_with("/audio/speech") {
        let _ = rq.respond(
            tiny_http::Response::from_data(SPEECH_BYTES.to_vec())
                .with_header(tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"audio/mpeg"[..]).unwrap()),
        );
    } else if path.ends_with("/audio/transcriptions") {
        transcription(rq, &raw, &script);
    } else if path.ends_with("/moderations") {
        let _ = rq.respond(json_response(
            200,
            &json!({"id": "modr-1", "model": body["model"], "results": [{"flagged": false, "categories": {"violence": false}}]}),
        ));
    } else if let Some(rest) = path.strip_prefix("/v1beta/models/") {
        gemini(rq, rest, &body, &script, &words, stop);
    } else if path.ends_with("/v1/messages/count_tokens") {
        let _ = rq.respond(json_response(200, &json!({"input_tokens": p})));
    } else if path.ends_with("/v1/messages") {
        // Offered tools and no tool result yet: call the first tool.
        let has_result =
            body["messages"].as_array().into_iter().flatten().any(|m| {
                m["content"].as_array().is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"))
            });
        let tool = body["tools"].as_array().and_then(|t| t.first()).filter(|_| !has_result).cloned();
        if let Some(tool) = tool {
            if !stream {
                let v = json!({"id": "msg_tool", "type": "message", "role": "assistant", "model": body["model"],
                    "content": [{"type": "text", "text": "Let me check."},
                                {"type": "tool_use", "id": "toolu_1", "name": tool["name"], "input": {"city": "Paris"}}],
                    "stop_reason": "tool_use", "usage": {"input_tokens": p, "output_tokens": c}});
                let _ = rq.respond(json_response(200, &v));
                return;
            }
            let ev = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
            let events = vec![
                ev(
                    "message_start",
                    json!({"type": "message_start", "message": {"id": "msg_tool", "usage": {"input_tokens": p, "output_tokens": 1}}}),
                ),
                ev(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": tool["name"], "input": {}}}),
                ),
                ev(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}}),
                ),
                ev(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
                ),
                ev("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
                ev(
                    "message_delta",
                    json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": c}}),
                ),
                ev("message_stop", json!({"type": "message_stop"})),
            ];
            let _ = rq.respond(sse_response(events, &script, Arc::clone(stop)));
            return;
        }
        if !stream {
            let v = json!({"id": "msg_fake", "type": "message", "role": "assistant", "model": body["model"],
                "content": [{"type": "text", "text": script.text}], "stop_reason": "end_turn",
                "usage": with_extra(json!({"input_tokens": p, "output_tokens": c}), &script)});
            let _ = rq.respond(json_response(200, &v));
            return;
        }
        let ev = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
        let mut events = vec![
            ev(
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_fake", "usage": with_extra(json!({"input_tokens": p, "output_tokens": 1}), &script)}}),
            ),
            ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            ev("ping", json!({"type": "ping"})),
        ];
        for w in &words {
            events.push(ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}),
            ));
        }
        events.push(ev("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
        events.push(ev(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": c}}),
        ));
        events.push(ev("message_stop", json!({"type": "message_stop"})));
        let _ = rq.respond(sse_response(events, &script, Arc::clone(stop)));
    } else if path.contains("/services/aigc/") {
        if !rq.headers().iter().any(|h| h.field.equiv("X-DashScope-Async") && h.value.as_str() == "enable") {
            let _ = rq
                .respond(json_response(400, &json!({"code": "InvalidParameter", "message": "async header required"})));
            return;
        }
        let id = {
            let mut s = state.lock().unwrap();
            s.next_task += 1;
            let id = format!("task-{}", s.next_task);
            let kind = if path.contains("video") { "video" } else { "image" };
            s.tasks.insert(id.clone(), (0, kind.to_owned()));
            id
        };
        let _ = rq.respond(json_response(
            200,
            &json!({"request_id": "r", "output": {"task_id": id, "task_status": "PENDING"}}),
        ));
    } else if let Some(rest) = path.strip_prefix("/api/v1/tasks/") {
        let (id, cancel) = match rest.strip_suffix("/cancel") {
            Some(id) => (id.to_owned(), true),
            None => (rest.to_owned(), false),
        };
        let mut s = state.lock().unwrap();
        let Some(task) = s.tasks.get_mut(&id) else {
            let _ = rq.respond(json_response(200, &json!({"output": {"task_id": id, "task_status": "UNKNOWN"}})));
            return;
        };
        if cancel {
            task.0 = u32::MAX;
            drop(s);
            let _ = rq.respond(json_response(200, &json!({"request_id": "r"})));
            return;
        }
        task.0 = task.0.saturating_add(1);
        let (polls, kind) = task.clone();
        drop(s);
        let v = if polls == u32::MAX {
            json!({"output": {"task_id": id, "task_status": "CANCELED"}})
        } else if polls < script.task_polls {
            json!({"output": {"task_id": id, "task_status": if polls == 1 { "PENDING" } else { "RUNNING" }}})
        } else if script.task_fails {
            json!({"output": {"task_id": id, "task_status": "FAILED", "code": "DataInspectionFailed", "message": "the prompt was refused"}})
        } else if kind == "video" {
            json!({"output": {"task_id": id, "task_status": "SUCCEEDED", "video_url": format!("{base}/media/video/{id}.mp4")},
                   "usage": {"video_duration": script.video_seconds, "video_count": 1}})
        } else {
            json!({"output": {"task_id": id, "task_status": "SUCCEEDED", "results": [{"url": format!("{base}/media/img/{id}.png")}]},
                   "usage": {"image_count": 1}})
        };
        let _ = rq.respond(json_response(200, &v));
    } else {
        let _ = rq.respond(json_response(404, &json!({"error": {"message": format!("no fake route {path}")}})));
    }
}

/// Gemini's API: `{model}:generateContent`, `:streamGenerateContent?alt=sse`
/// (a chunk per word, running usage, the finish reason on the last) and
/// `:countTokens`; a function call when tools are offered and no function
/// response came back yet.
fn gemini(rq: tiny_http::Request, rest: &str, body: &Value, script: &Script, words: &[String], stop: &Arc<AtomicBool>) {
    let (p, c) = (script.prompt_tokens, script.completion_tokens);
    let usage = |out: u64| {
        with_extra(json!({"promptTokenCount": p, "candidatesTokenCount": out, "totalTokenCount": p + out}), script)
    };
    if rest.ends_with(":countTokens") {
        let _ = rq.respond(json_response(200, &json!({"totalTokens": p})));
        return;
    }
    let answered =
        body["contents"].as_array().into_iter().flatten().any(|t| {
            t["parts"].as_array().is_some_and(|parts| parts.iter().any(|x| x.get("functionResponse").is_some()))
        });
    let tool = body.pointer("/tools/0/functionDeclarations/0/name").filter(|_| !answered).cloned();
    let candidate = |parts: Value, finish: Option<&str>| {
        let mut c = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        if let Some(f) = finish {
            c["finishReason"] = json!(f);
        }
        c
    };
    if rest.contains(":streamGenerateContent") {
        let mut events: Vec<String> = Vec::new();
        let mut chunk = |parts: Value, finish: Option<&str>, out: u64| {
            let v = json!({"candidates": [candidate(parts, finish)], "usageMetadata": usage(out), "modelVersion": "fake-gemini", "responseId": "r1"});
            events.push(format!("data: {v}\r\n\r\n"));
        };
        match &tool {
            Some(name) => chunk(json!([{"functionCall": {"name": name, "args": {"city": "Paris"}}}]), Some("STOP"), c),
            None => {
                for (i, w) in words.iter().enumerate() {
                    let last = i + 1 == words.len();
                    chunk(json!([{"text": w}]), last.then_some("STOP"), if last { c } else { i as u64 + 1 });
                }
            }
        }
        let _ = rq.respond(sse_response(events, script, Arc::clone(stop)));
        return;
    }
    let parts = match &tool {
        Some(name) => json!([{"functionCall": {"name": name, "args": {"city": "Paris"}}}]),
        None => json!([{"text": script.text}]),
    };
    let v = json!({"candidates": [candidate(parts, Some("STOP"))], "usageMetadata": usage(c), "modelVersion": "fake-gemini", "responseId": "r1"});
    let _ = rq.respond(json_response(200, &v));
}

/// A transcription in the format the form asks for: JSON with usage (by
/// duration or by tokens), text, or SRT with two cues ending at 12.4 s.
fn transcription(rq: tiny_http::Request, raw: &[u8], script: &Script) {
    let text = "fake transcription";
    let (status, ctype, body) = match form_text(raw, "response_format").as_deref() {
        Some("text") => (200, "text/plain; charset=utf-8", text.to_owned()),
        Some("srt") => (
            200,
            "application/x-subrip",
            format!("1\n00:00:00,000 --> 00:00:05,000\n{text}\n\n2\n00:00:05,000 --> 00:00:12,400\nmore\n"),
        ),
        _ => {
            let usage = match script.transcription_seconds {
                Some(s) => json!({"type": "duration", "seconds": s}),
                None => {
                    json!({"type": "tokens", "input_tokens": script.prompt_tokens, "output_tokens": script.completion_tokens,
                               "input_token_details": {"audio_tokens": script.prompt_tokens, "text_tokens": 0}})
                }
            };
            (200, "application/json", json!({"text": text, "usage": usage}).to_string())
        }
    };
    let _ = rq.respond(
        tiny_http::Response::from_string(body)
            .with_status_code(status)
            .with_header(tiny_http::Header::from_bytes(&b"Content-Type"[..], ctype.as_bytes()).unwrap()),
    );
}
