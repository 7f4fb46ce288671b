//! The built-in `dev` provider: deterministic answers with no keys and no
//! network, so everything works offline. Usage numbers are real counts of
//! what it returns (a "token" here is a word of output; input tokens are
//! bytes / 4, rounded up, plus 4 per message), so metering is exercised
//! exactly as with a real provider.

use super::types::{ChatEvent, ChatRequest, ChatResponse, ImageRequest, ImageResponse, TaskState, Usage, VideoRequest};
use super::{ChatStream, ProviderError};
use sha2::{Digest, Sha256};

fn short_hash(s: &str) -> String {
    crate::auth::api_key::hex(&Sha256::digest(s.as_bytes())[..6])
}

fn answer(req: &ChatRequest) -> (Vec<String>, Usage, String) {
    let last = req.messages.iter().rev().find(|m| m.role == "user").map(|m| m.content.as_str()).unwrap_or("");
    let full = format!("This is the tollgate dev provider. You said: {last}");
    let words: Vec<String> = full.split_whitespace().map(str::to_owned).collect();
    let max = req.max_tokens as usize;
    let finish = if words.len() > max { "length" } else { "stop" };
    let words: Vec<String> = words.into_iter().take(max).collect();
    let prompt: u64 = req.messages.iter().map(|m| (m.content.len() as u64).div_ceil(4) + 4).sum();
    (words.clone(), Usage { prompt_tokens: prompt, completion_tokens: words.len() as u64 }, finish.to_owned())
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
    ImageResponse { urls: (0..req.n).map(|i| format!("https://dev.tollgate.invalid/images/{h}-{i}.png")).collect() }
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
