//! Provider-neutral requests and responses. Handlers and jobs speak only
//! these; each provider module maps them to and from its wire format.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    /// Always set: the adapter's callers fill in the model's default, so the
    /// provider can never produce more than the hold covers.
    pub max_tokens: u32,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Option<Value>,
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
}

/// One event of a streamed chat.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    Delta(String),
    Finish(String),
    Usage(Usage),
}

#[derive(Debug, Clone)]
pub struct ImageRequest {
    pub prompt: String,
    pub n: u32,
    pub size: Option<String>,
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
