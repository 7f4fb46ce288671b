//! The built-in `dev` provider: deterministic answers with no keys and no
//! network, so everything works offline. Usage numbers are real counts of
//! what it returns (a "token" here is a word of output; input tokens are
//! bytes / 4, rounded up, plus 4 per message), so metering is exercised
//! exactly as with a real provider.

use super::types::{
    ChatEvent, ChatRequest, ChatResponse, Honours, ImageRequest, ImageResponse, TaskState, Usage, VideoRequest,
};
use super::{ChatStream, ProviderError};
use sha2::{Digest, Sha256};

/// The dev provider answers plain text only.
pub const HONOURS: Honours = Honours { extra_fields: &[], rich_messages: false };

fn short_hash(s: &str) -> String {
    crate::support::token::hex(&Sha256::digest(s.as_bytes())[..6])
}

fn answer(req: &ChatRequest) -> (Vec<String>, Usage, String) {
    let last = req.messages.iter().rev().find(|m| m.role == "user").map(|m| m.content.as_str()).unwrap_or("");
    let full = format!("This is the tollgate dev provider. You said: {last}");
    let words: Vec<String> = full.split_whitespace().map(str::to_owned).collect();
    let max = req.max_tokens as usize;
    let finish = if words.len() > max { "length" } else { "stop" };
    let words: Vec<String> = words.into_iter().take(max).collect();
    let prompt: u64 = req.messages.iter().map(|m| (m.content.len() as u64).div_ceil(4) + 4).sum();
    (words.clone(), Usage::tokens(prompt, words.len() as u64), finish.to_owned())
}

pub fn chat(req: &ChatRequest) -> ChatResponse {
    let (words, usage, finish) = answer(req);
    let text = words.join(" ");
    ChatResponse { id: format!("chatcmpl-dev-{}", short_hash(&text)), text, finish_reason: finish, usage, raw: None }
}

pub fn chat_stream(req: &ChatRequest) -> ChatStream {
    let (words, usage, finish) = answer(req);
    let mut events: Vec<ChatEvent> = words
        .iter()
        .enumerate()
        .map(|(i, w)| ChatEvent::Delta(if i == 0 { w.clone() } else { format!(" {w}") }))
        .collect();
    events.push(ChatEvent::Finish(finish));
    events.push(ChatEvent::Usage(usage));
    Box::new(events.into_iter().map(Ok::<_, ProviderError>))
}

pub fn image(req: &ImageRequest) -> ImageResponse {
    let h = short_hash(&req.prompt);
    ImageResponse {
        urls: (0..req.n).map(|i| format!("https://dev.tollgate.invalid/images/{h}-{i}.png")).collect(),
        raw: None,
    }
}

/// Dimensions of a dev embedding when the request names none.
const EMBEDDING_DIMENSIONS_DEFAULT: usize = 8;

/// Deterministic unit-length vectors (from a hash of each input), in
/// OpenAI's embeddings shape, with usage counted like chat input.
pub fn embeddings(body: &serde_json::Map<String, serde_json::Value>) -> serde_json::Value {
    use serde_json::{Value, json};
    let inputs: Vec<String> = match body.get("input") {
        Some(Value::Array(items)) => {
            items.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)).collect()
        }
        Some(Value::String(s)) => vec![s.clone()],
        Some(other) => vec![other.to_string()],
        None => Vec::new(),
    };
    let dims = body.get("dimensions").and_then(Value::as_u64).map_or(EMBEDDING_DIMENSIONS_DEFAULT, |d| d as usize);
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let digest = Sha256::digest(text.as_bytes());
            let raw: Vec<f64> = (0..dims).map(|d| f64::from(digest[d % 32]) - 127.5).collect();
            let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-9);
            json!({"object": "embedding", "index": i, "embedding": raw.iter().map(|x| x / norm).collect::<Vec<_>>()})
        })
        .collect();
    let tokens: u64 = inputs.iter().map(|t| (t.len() as u64).div_ceil(4)).sum();
    json!({"object": "list", "data": data, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
}

/// A dev "task" id encodes its result, so polling needs no state.
pub fn submit_video(req: &VideoRequest) -> String {
    format!("dev-{}-{}", short_hash(&req.prompt), req.duration_s)
}

pub fn poll(task_id: &str) -> TaskState {
    let mut parts = task_id.rsplitn(2, '-');
    let duration = parts.next().and_then(|d| d.parse().ok());
    let h = parts.next().unwrap_or("dev");
    TaskState::Succeeded { urls: vec![format!("https://dev.tollgate.invalid/videos/{h}.mp4")], duration_s: duration }
}
