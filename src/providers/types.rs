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
    /// The client sent no bound (or tollgate built the request): the
    /// provider's own name for it (OpenAI's reasoning models refuse
    /// `max_tokens`, so OpenAI routes get `max_completion_tokens`).
    #[default]
    Unsent,
    MaxTokens,
    MaxCompletionTokens,
}

impl MaxTokensField {
    /// The name the client used; `unsent` when it used none.
    pub fn name_or(self, unsent: &'static str) -> &'static str {
        match self {
            MaxTokensField::Unsent => unsent,
            MaxTokensField::MaxTokens => "max_tokens",
            MaxTokensField::MaxCompletionTokens => "max_completion_tokens",
        }
    }

    /// The name to refuse a bad value under (`max_tokens` when none was sent).
    pub fn name(self) -> &'static str {
        self.name_or("max_tokens")
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
    /// This request with its output bound lowered to `lowered` (what the
    /// caller could afford), or unchanged.
    pub fn fitted(&self, lowered: Option<u32>) -> std::borrow::Cow<'_, ChatRequest> {
        match lowered {
            Some(n) if n < self.max_tokens => std::borrow::Cow::Owned(ChatRequest { max_tokens: n, ..self.clone() }),
            _ => std::borrow::Cow::Borrowed(self),
        }
    }

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

/// What one call used, in the components providers bill separately. The
/// two totals have OpenAI's meaning whatever the provider: `prompt_tokens`
/// counts every input token (cache reads and writes and audio included),
/// `completion_tokens` every output token (reasoning and audio included);
/// the other fields say how many of those were of each kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Input read from the provider's prompt cache.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached_tokens: u64,
    /// Input written to the prompt cache for 5 minutes (Anthropic).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
    /// Input written to the prompt cache for 1 hour (Anthropic).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_1h_tokens: u64,
    /// Audio input.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub audio_input_tokens: u64,
    /// Output spent reasoning before the answer.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reasoning_tokens: u64,
    /// Audio output.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub audio_output_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Usage {
    /// Usage in OpenAI's shape, for answers tollgate assembles (providers
    /// that are not OpenAI-compatible): the totals, and the cache's part of
    /// the input when there is one, so a client sees what it paid for.
    pub fn openai_json(&self) -> serde_json::Value {
        let mut out = serde_json::json!({"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                                         "total_tokens": self.prompt_tokens + self.completion_tokens});
        if self.cached_tokens + self.cache_write_tokens + self.cache_write_1h_tokens > 0 {
            out["prompt_tokens_details"] = serde_json::json!({"cached_tokens": self.cached_tokens,
                "cache_write_tokens": self.cache_write_tokens + self.cache_write_1h_tokens});
        }
        if self.reasoning_tokens > 0 {
            out["completion_tokens_details"] = serde_json::json!({"reasoning_tokens": self.reasoning_tokens});
        }
        out
    }

    /// Plain input and output, with no parts of any other kind.
    pub fn tokens(prompt_tokens: u64, completion_tokens: u64) -> Usage {
        Usage { prompt_tokens, completion_tokens, ..Usage::default() }
    }

    /// Input at the plain input price: the total less every other kind
    /// (never below zero, whatever a provider reports).
    pub fn plain_input(&self) -> u64 {
        self.prompt_tokens
            .saturating_sub(self.cached_tokens)
            .saturating_sub(self.cache_write_tokens)
            .saturating_sub(self.cache_write_1h_tokens)
            .saturating_sub(self.audio_input_tokens)
    }

    /// Output at the plain output price.
    pub fn plain_output(&self) -> u64 {
        self.completion_tokens.saturating_sub(self.reasoning_tokens).saturating_sub(self.audio_output_tokens)
    }

    /// OpenAI's shape (chat and Responses): `prompt_tokens_details` and
    /// `completion_tokens_details`, or `input_tokens_details` and
    /// `output_tokens_details`, each optional.
    pub fn from_openai(u: &serde_json::Value) -> Usage {
        let n = |p: &str| u.pointer(p).and_then(serde_json::Value::as_u64).unwrap_or(0);
        let either = |a: &str, b: &str| n(a).max(n(b));
        Usage {
            prompt_tokens: either("/prompt_tokens", "/input_tokens"),
            completion_tokens: either("/completion_tokens", "/output_tokens"),
            cached_tokens: either("/prompt_tokens_details/cached_tokens", "/input_tokens_details/cached_tokens"),
            audio_input_tokens: either("/prompt_tokens_details/audio_tokens", "/input_tokens_details/audio_tokens"),
            reasoning_tokens: either(
                "/completion_tokens_details/reasoning_tokens",
                "/output_tokens_details/reasoning_tokens",
            ),
            audio_output_tokens: either(
                "/completion_tokens_details/audio_tokens",
                "/output_tokens_details/audio_tokens",
            ),
            ..Usage::default()
        }
    }

    /// Anthropic's shape: `input_tokens` leaves the cache out, so the total
    /// adds cache reads and writes; a write split by duration
    /// (`cache_creation.ephemeral_1h_input_tokens`) is priced by it. Fields
    /// a stream's later event leaves out keep what `self` had.
    pub fn merge_anthropic(&mut self, u: &serde_json::Value) {
        let n = |p: &str| u.pointer(p).and_then(serde_json::Value::as_u64);
        let input = n("/input_tokens");
        let read = n("/cache_read_input_tokens");
        let write = n("/cache_creation_input_tokens");
        let write_1h = n("/cache_creation/ephemeral_1h_input_tokens");
        if let Some(r) = read {
            self.cached_tokens = r;
        }
        if let Some(w) = write {
            let one_hour = write_1h.unwrap_or(0).min(w);
            self.cache_write_1h_tokens = one_hour;
            self.cache_write_tokens = w - one_hour;
        }
        if input.is_some() || read.is_some() || write.is_some() {
            let plain = input.unwrap_or(self.plain_input());
            self.prompt_tokens = plain + self.cached_tokens + self.cache_write_tokens + self.cache_write_1h_tokens;
        }
        if let Some(o) = n("/output_tokens") {
            self.completion_tokens = o;
        }
    }
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
    /// OpenAI's `quality` (`standard`, `hd`, `low`, `medium`, `high`):
    /// OpenAI-compatible routes only; with `size`, what `per_image_by` prices.
    pub quality: Option<String>,
    /// Base64 images (`b64_json`) instead of URLs: OpenAI-compatible routes only.
    pub b64_json: bool,
    /// The client's whole body (its `model` aside), for a route that takes
    /// OpenAI's images API: `style`, `background`, `output_format`, `user`
    /// and every other field go on as sent. Empty for jobs.
    pub passthrough: serde_json::Map<String, Value>,
}

/// Image request fields every image route honours; any other field needs a
/// route that passes the client's body through (OpenAI's API).
pub const IMAGE_BASIC_FIELDS: &[&str] = &["model", "prompt", "n", "size", "response_format"];

impl ImageRequest {
    /// The first field only OpenAI's images API can take.
    pub fn openai_only(&self) -> Option<&str> {
        if self.b64_json {
            return Some("response_format");
        }
        self.passthrough.keys().map(String::as_str).find(|k| !IMAGE_BASIC_FIELDS.contains(k))
    }
}

#[derive(Debug, Clone, Default)]
pub struct ImageResponse {
    pub urls: Vec<String>,
    /// The provider's whole answer, when it speaks OpenAI's images API
    /// (`b64_json`, `revised_prompt`, `usage` come back as sent).
    pub raw: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct VideoRequest {
    pub prompt: String,
    pub duration_s: u32,
    /// `480P`, `720P`, `1080P`...: sent to the provider, and what
    /// `per_video_second_by` prices.
    pub resolution: Option<String>,
}

/// A submitted asynchronous task (video, DashScope images).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    Running,
    Succeeded { urls: Vec<String>, duration_s: Option<u32> },
    Failed { code: String, message: String },
}

/// One part of a multipart form (`/v1/audio/transcriptions`), as the
/// client sent it; forwarded in order, only the model's value replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormPart {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: Vec<u8>,
}

/// Audio the provider answered: its media type and its bytes as they come.
pub struct AudioStream {
    pub content_type: String,
    pub body: Box<dyn std::io::Read + Send>,
}
