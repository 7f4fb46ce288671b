//! A job's input, parsed per type, and its cost bound.
//!
//! text `{prompt}` or `{messages}` (+ `max_tokens`); image `{prompt, n?,
//! size?}`; video `{prompt, duration_s?}`.

use super::state::JobType;
use crate::domain::Credits;
use crate::error::{Error, Result};
use crate::metered;
use crate::providers::catalog::{IMAGES_PER_REQUEST_MAX, VIDEO_SECONDS_MAX};
use crate::providers::types::{ChatRequest, ImageRequest, Message, VideoRequest};
use crate::providers::{Model, ModelKind};
use serde_json::Value;

/// Seconds of video when the input names none.
pub const VIDEO_SECONDS_DEFAULT: u32 = 5;
/// A prompt is text for a model; this keeps a job row small.
pub const PROMPT_BYTES_MAX: usize = 100_000;

pub enum JobInput {
    Text(ChatRequest),
    Image(ImageRequest),
    Video(VideoRequest),
}

pub fn model_kind(t: JobType) -> ModelKind {
    match t {
        JobType::Text => ModelKind::Chat,
        JobType::Image => ModelKind::Image,
        JobType::Video => ModelKind::Video,
    }
}

fn prompt(input: &Value, required: bool) -> Result<Option<String>> {
    match input.get("prompt") {
        None | Some(Value::Null) if !required => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= PROMPT_BYTES_MAX => Ok(Some(s.clone())),
        _ => Err(Error::invalid(
            "input.prompt",
            format!("input.prompt must be non-empty text of at most {PROMPT_BYTES_MAX} bytes"),
        )),
    }
}

fn small_int(input: &Value, field: &str, default: u32, max: u32) -> Result<u32> {
    match input.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_u64().filter(|n| (1..=u64::from(max)).contains(n)).map(|n| n as u32).ok_or_else(|| {
            Error::invalid(&format!("input.{field}"), format!("input.{field} must be a whole number from 1 to {max}"))
        }),
    }
}

pub fn parse(t: JobType, model: &Model, input: &Value) -> Result<JobInput> {
    if !input.is_object() {
        return Err(Error::invalid("input", "input must be an object"));
    }
    Ok(match t {
        JobType::Text => {
            let messages = match (prompt(input, false)?, input.get("messages")) {
                (Some(p), None) => vec![Message { role: "user".into(), content: p }],
                (None, Some(m)) => metered::parse_messages(m, "input.messages")?,
                _ => return Err(Error::invalid("input", "text_generation input needs either prompt or messages")),
            };
            let asked =
                match input.get("max_tokens") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(v.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| {
                        Error::invalid("input.max_tokens", "input.max_tokens must be a whole number")
                    })?),
                };
            let max_tokens = metered::max_tokens(model, asked).map_err(|_| {
                Error::invalid(
                    "input.max_tokens",
                    format!("input.max_tokens must be from 1 to {}", model.max_output_tokens),
                )
            })?;
            JobInput::Text(ChatRequest { messages, max_tokens, n: 1, ..ChatRequest::default() })
        }
        JobType::Image => JobInput::Image(ImageRequest {
            b64_json: false,
            prompt: prompt(input, true)?.unwrap_or_default(),
            n: small_int(input, "n", 1, IMAGES_PER_REQUEST_MAX)?,
            size: input.get("size").and_then(Value::as_str).map(str::to_owned),
            quality: input.get("quality").and_then(Value::as_str).map(str::to_owned),
            passthrough: serde_json::Map::new(),
        }),
        JobType::Video => JobInput::Video(VideoRequest {
            prompt: prompt(input, true)?.unwrap_or_default(),
            duration_s: small_int(input, "duration_s", VIDEO_SECONDS_DEFAULT, VIDEO_SECONDS_MAX)?,
            resolution: input.get("resolution").and_then(Value::as_str).map(str::to_owned),
        }),
    })
}

/// The most this input can cost.
pub fn bound(model: &Model, input: &JobInput) -> Credits {
    match input {
        JobInput::Text(req) => metered::chat_bound(model, req),
        JobInput::Image(req) => model.price.images_of(req, req.n),
        JobInput::Video(req) => model.price.video_of(req, req.duration_s),
    }
}

/// Fits a text job under the client's `max_cost` by lowering `max_tokens`;
/// image and video bounds are exact, so there `max_cost` must cover them.
pub fn fit_max_cost(model: &Model, input: &mut JobInput, max_cost: Credits) -> Result<()> {
    if bound(model, input) <= max_cost {
        return Ok(());
    }
    if let JobInput::Text(req) = input {
        let (mut lo, mut hi) = (1u32, req.max_tokens);
        // The largest max_tokens whose bound fits.
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            req.max_tokens = mid;
            if metered::chat_bound(model, req) <= max_cost { lo = mid } else { hi = mid - 1 }
        }
        req.max_tokens = lo;
        if metered::chat_bound(model, req) <= max_cost {
            return Ok(());
        }
    }
    Err(Error::MaxCostExceeded { bound: bound(model, input), cap: max_cost })
}
