//! Metered AI calls: reserve the cost upper bound as a hold, call through
//! the ModelAdapter, then settle the hold from the provider's reported usage
//! (never more than the hold) or release it when the provider failed.
//!
//! Used by the OpenAI-compatible endpoints and by job workers. This module
//! never speaks a provider's wire format and never formats HTTP.

use crate::app::App;
use crate::domain::{Credits, HoldId, JobId, UserId};
use crate::error::{Error, Result};
use crate::ledger::{self, HoldOutcome, HoldStatus};
use crate::logs::{self, NewLog};
use crate::providers::types::{ChatRequest, Message, Usage};
use crate::providers::{Model, ProviderError};
use rusqlite::Connection;

/// Messages in one chat request or text job.
pub const CHAT_MESSAGES_MAX: usize = 1_000;

/// Text of a message's `content`: a string, or the text parts of an array.
fn content_text(v: &serde_json::Value) -> Result<String> {
    use serde_json::Value;
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => Ok(parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("")),
        _ => Err(Error::invalid("messages", "content must be a string or an array of parts")),
    }
}

/// Parses OpenAI-style `messages` (`developer` is read as `system`).
pub fn parse_messages(v: &serde_json::Value, param: &str) -> Result<Vec<Message>> {
    let items = v.as_array().ok_or_else(|| Error::invalid(param, "messages must be an array"))?;
    if items.is_empty() || items.len() > CHAT_MESSAGES_MAX {
        return Err(Error::invalid(param, format!("messages must hold 1 to {CHAT_MESSAGES_MAX} messages")));
    }
    items
        .iter()
        .map(|m| {
            let role = m.get("role").and_then(serde_json::Value::as_str).unwrap_or("");
            if !["system", "developer", "user", "assistant", "tool"].contains(&role) {
                return Err(Error::invalid(param, format!("unknown role {role:?}")));
            }
            let role = if role == "developer" { "system" } else { role };
            Ok(Message {
                role: role.to_owned(),
                content: content_text(m.get("content").unwrap_or(&serde_json::Value::Null))?,
            })
        })
        .collect()
}

/// `max_tokens` for a model: the model's default when absent, and no more.
pub fn max_tokens(model: &Model, asked: Option<u32>) -> Result<u32> {
    let max = model.max_output_tokens;
    let n = asked.unwrap_or(max);
    if n == 0 || n > max {
        return Err(Error::invalid("max_tokens", format!("max_tokens must be from 1 to {max} for {}", model.name)));
    }
    Ok(n)
}

/// Tokens a chat template adds per message, at most (role markers).
const TEMPLATE_TOKENS_PER_MESSAGE: u64 = 8;
const TEMPLATE_TOKENS_FIXED: u64 = 16;

/// An upper bound on a chat's input tokens: no tokenizer makes more tokens
/// than bytes, plus the chat template's overhead.
pub fn input_tokens_bound(messages: &[Message]) -> u64 {
    messages.iter().map(|m| m.content.len() as u64 + m.role.len() as u64 + TEMPLATE_TOKENS_PER_MESSAGE).sum::<u64>()
        + TEMPLATE_TOKENS_FIXED
}

pub fn chat_bound(model: &Model, req: &ChatRequest) -> Credits {
    model.price.tokens(input_tokens_bound(&req.messages), u64::from(req.max_tokens))
}

pub fn chat_cost(model: &Model, usage: &Usage) -> Credits {
    model.price.tokens(usage.prompt_tokens, usage.completion_tokens)
}

/// Credits reserved for one call.
#[derive(Debug, Clone, Copy)]
pub struct Reservation {
    pub user: UserId,
    pub hold: Option<HoldId>,
    pub bound: Credits,
}

/// Checks the per-request cap, then holds the bound (with the daily caps
/// checked and counted in the same transaction). A free call holds nothing.
pub fn reserve(app: &App, user: UserId, bound: Credits, job: Option<JobId>) -> Result<Reservation> {
    app.guard.check_cost(user, bound)?;
    if bound <= Credits::ZERO {
        return Ok(Reservation { user, hold: None, bound: Credits::ZERO });
    }
    let caps = app.guard.spend_caps(user);
    let ttl = app.hold_ttl_ms();
    // Not fsynced on its own: the settle that follows is, and carries it.
    let hold = app.db.write_lazy(move |c| ledger::hold(c, user, bound, job, ttl, &caps))?;
    Ok(Reservation { user, hold: Some(hold), bound })
}

/// Settles inside the caller's transaction and writes the business log
/// beside it, so the log and the charge agree.
pub fn settle_in(
    conn: &Connection,
    r: &Reservation,
    actual: Credits,
    description: &str,
    log: &NewLog,
) -> Result<HoldOutcome> {
    let outcome = match r.hold {
        Some(h) => ledger::settle(conn, h, actual, description)?,
        None => HoldOutcome {
            hold_id: HoldId(0),
            status: HoldStatus::Settled,
            charged: Credits::ZERO,
            transaction_id: None,
        },
    };
    let mut log = log.clone();
    log.details["cost"] = serde_json::json!(outcome.charged);
    log.details["transaction_id"] = serde_json::json!(outcome.transaction_id);
    logs::write(conn, &log)?;
    crate::metrics::global().credits_charged.inc_by(outcome.charged.0.max(0) as u64);
    Ok(outcome)
}

/// Gives the reservation back (the provider failed). Errors are logged: the
/// sweeper releases the hold at its expiry anyway.
pub fn release(app: &App, r: &Reservation) {
    if let Some(h) = r.hold
        && let Err(e) = app.db.write(move |c| ledger::release(c, h))
    {
        log::error!("could not release hold {h}: {e}; it will expire");
    }
}

/// What a client is told about a provider failure.
pub fn provider_error(e: ProviderError) -> Error {
    if e.is_client_error() {
        return Error::UpstreamRejected(e.to_string());
    }
    Error::Upstream { timeout: matches!(e, ProviderError::Timeout), message: e.to_string() }
}
