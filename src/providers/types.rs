//! Provider-neutral requests and responses. Handlers and jobs speak only
//! these; each provider module maps them to and from its wire format.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone, Default)]
pub struct ChatRequest {
    /// The messages' text, for providers that are not OpenAI-compatible and
    /// for the cost bound.
    pub messages: Vec<Message>,
    /// Always set: the adapter's callers fill in the model's default, so the
    /// provider can never produce more than the hold covers (per choice).
    pub max_tokens: u32,
    /// The name the client gave that bound; it is forwarded under the same
    /// name (OpenAI's reasoning models refuse `max_tokens`).
    pub max_tokens_field: MaxTokensField,
    /// Choices asked for (`n`); the output bound is per choice.
    pub n: u32,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Option<Value>,
    /// Every other field the client sent, exactly as sent, `messages`
    /// included (tool calls, image parts): OpenAI-compatible providers get
    /// all of it. Empty for requests tollgate builds itself (text jobs).
    pub passthrough: serde_json::Map<String, Value>,
}

/// Which name carries a chat's output bound on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MaxTokensField {
    #[default]
    MaxTokens,
    MaxCompletionTokens,
}

impl MaxTokensField {
    pub fn name(self) -> &'static str {
        match self {
            MaxTokensField::MaxTokens => "max_tokens",
            MaxTokensField::MaxCompletionTokens => "max_completion_tokens",
        }
    }
}

/// Chat fields that say how a completion is sampled and sent, never what
/// it says: every provider honours them, and they are never prompt tokens.
pub const CHAT_SAMPLING_FIELDS: &[&str] =
    &["max_tokens", "max_completion_tokens", "stream", "stream_options", "temperature", "top_p", "stop", "n"];

/// Chat fields every provider honours: the model, the messages and the
/// sampling fields. Anything else a client sends needs a provider that
/// passes it through or maps it.
pub fn is_basic_chat_field(name: &str) -> bool {
    name == "model" || name == "messages" || CHAT_SAMPLING_FIELDS.contains(&name)
}

/// What a provider that is not OpenAI-compatible can honour.
pub struct Honours {
    /// Request fields it takes (or maps) beyond the basic ones
    /// ([`is_basic_chat_field`]).
    pub extra_fields: &'static [&'static str],
    /// Image parts, tool calls and tool results in `messages`.
    pub rich_messages: bool,
}

impl ChatRequest {
    /// The first thing in this request that a provider honouring `h` would
    /// have to drop, as the `param` to name in a refusal: a field it does
    /// not take, `n` > 1, or a message it cannot express.
    pub fn unsupported_by(&self, h: &Honours) -> Option<String> {
        let known = |k: &str| is_basic_chat_field(k) || h.extra_fields.contains(&k);
        if let Some(k) = self.passthrough.keys().find(|k| !known(k)) {
            return Some(k.clone());
        }
        if self.n > 1 {
            return Some("n".into());
        }
        let messages = self.passthrough.get("messages").and_then(Value::as_array)?;
        messages.iter().enumerate().find_map(|(i, m)| {
            let parts_ok = m.get("content").and_then(Value::as_array).is_none_or(|parts| {
                parts.iter().all(|p| match p.get("type").and_then(Value::as_str) {
                    Some("text") => true,
                    Some("image_url") => h.rich_messages,
                    _ => false,
                })
            });
            let tools = m.get("role").and_then(Value::as_str) == Some("tool") || m.get("tool_calls").is_some();
            let ok = parts_ok && (!tools || h.rich_messages) && m.get("function_call").is_none();
            (!ok).then(|| format!("messages[{i}]"))
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

#[derive(Debug, Clone)]
pub struct ChatResponse {
    pub id: String,
    pub text: String,
    pub finish_reason: String,
    pub usage: Usage,
    /// An OpenAI-compatible provider's whole answer, returned to the client
    /// with every field it has (`tool_calls`, `logprobs`, ...).
    pub raw: Option<Value>,
}

/// One event of a streamed chat.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    Delta(String),
    Finish(String),
    Usage(Usage),
    /// An OpenAI-compatible provider's chunk, passed on as it came (its
    /// usage, if any, has been read from it).
    Chunk(Value, Option<Usage>),
}

#[derive(Debug, Clone)]
pub struct ImageRequest {
    pub prompt: String,
    pub n: u32,
    pub size: Option<String>,
    /// Base64 images (`b64_json`) instead of URLs: OpenAI-compatible routes only.
    pub b64_json: bool,
}

#[derive(Debug, Clone)]
pub struct ImageResponse {
    pub urls: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct VideoRequest {
    pub prompt: String,
    pub duration_s: u32,
}

/// A submitted asynchronous task (video, DashScope images).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    Running,
    Succeeded { urls: Vec<String>, duration_s: Option<u32> },
    Failed { code: String, message: String },
}
