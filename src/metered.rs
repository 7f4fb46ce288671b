//! Metered AI calls: reserve the cost upper bound as a hold, call through
//! the ModelAdapter, then settle the hold from the provider's reported usage
//! (never more than the hold) or release it when the provider failed.
//!
//! Used by the OpenAI-compatible endpoints and by job workers. This module
//! never speaks a provider's wire format and never formats HTTP.

use crate::app::App;
use crate::auth::CurrentUser;
use crate::domain::{ApiKeyId, Credits, HoldId, JobId, Timestamp, UserId};
use crate::error::{Error, Result};
use crate::ledger::{self, Cost, HoldOutcome, HoldStatus};
use crate::logs::{self, NewLog};
use crate::providers::types::{ChatRequest, Message, Usage};
use crate::providers::{Model, ProviderError};
use crate::storage::Conn;
use crate::usage::Metered;

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

/// Request fields beyond the sampling ones (`CHAT_SAMPLING_FIELDS`) that
/// never become prompt tokens (bookkeeping). Every other field, known or
/// not, counts at its size.
const NOT_PROMPT_FIELDS: &[&str] = &[
    "seed",
    "user",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "parallel_tool_calls",
    "metadata",
    "store",
    "service_tier",
];

/// Template tokens a provider may add per tool definition.
const TEMPLATE_TOKENS_PER_TOOL: u64 = 16;

/// An upper bound on a chat's input tokens. No tokenizer makes more tokens
/// than bytes, so the request's own bytes bound its text (with everything
/// forwarded: tool definitions, schemas, tool results), plus the template's
/// overhead; an image part costs at most the model's `image_input_tokens_max`
/// instead of its URL's or data's bytes.
pub fn input_tokens_bound(model: &Model, req: &ChatRequest) -> u64 {
    let template = req.messages.len() as u64 * TEMPLATE_TOKENS_PER_MESSAGE + TEMPLATE_TOKENS_FIXED;
    if req.passthrough.is_empty() {
        let text: u64 = req.messages.iter().map(|m| m.content.len() as u64 + m.role.len() as u64).sum();
        return text + template;
    }
    let bytes: u64 = req
        .passthrough
        .iter()
        .filter(|(k, _)| {
            !(crate::providers::types::CHAT_SAMPLING_FIELDS.contains(&k.as_str())
                || NOT_PROMPT_FIELDS.contains(&k.as_str()))
        })
        .map(|(_, v)| serde_json::to_vec(v).map_or(0, |b| b.len() as u64))
        .sum();
    let (images, image_bytes) = image_parts(&req.passthrough);
    let tools = req.passthrough.get("tools").and_then(serde_json::Value::as_array).map_or(0, Vec::len) as u64;
    bytes.saturating_sub(image_bytes)
        + images * u64::from(model.image_input_tokens_max)
        + tools * TEMPLATE_TOKENS_PER_TOOL
        + template
}

/// Image parts in the messages: how many, and the bytes of their URLs.
fn image_parts(body: &serde_json::Map<String, serde_json::Value>) -> (u64, u64) {
    use serde_json::Value;
    let parts = body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("content").and_then(Value::as_array))
        .flatten()
        .filter(|p| p.get("type").and_then(Value::as_str) == Some("image_url"));
    parts.fold((0, 0), |(n, bytes), p| {
        let url = p.pointer("/image_url/url").and_then(Value::as_str).map_or(0, str::len) as u64;
        (n + 1, bytes + url)
    })
}

/// The most a chat can cost: its input bound and its output bound for
/// every choice asked for.
/// The input bound of a body that goes upstream whole (the Responses,
/// Messages and Gemini APIs): the bytes of every field but `not_prompt`
/// (no tokenizer makes more tokens than bytes), with `images` (how many,
/// their bytes) each at the model's image bound instead of its bytes, plus
/// `template` tokens the provider may add.
pub fn body_input_bound(
    model: &Model,
    body: &serde_json::Map<String, serde_json::Value>,
    not_prompt: &[&str],
    (images, image_bytes): (u64, u64),
    template: u64,
) -> u64 {
    let bytes: u64 = body
        .iter()
        .filter(|(k, _)| !not_prompt.contains(&k.as_str()))
        .map(|(_, v)| serde_json::to_vec(v).map_or(0, |b| b.len() as u64))
        .sum();
    bytes.saturating_sub(image_bytes) + images * u64::from(model.image_input_tokens_max) + template
}

/// Inline media anywhere in `v` (a request body's part): how many objects
/// `media` recognizes, and the bytes of the data it names in each (none
/// when it names no data).
pub fn inline_media(
    v: &serde_json::Value,
    media: fn(&serde_json::Map<String, serde_json::Value>) -> Option<Option<&serde_json::Value>>,
) -> (u64, u64) {
    let add = |a: (u64, u64), b: (u64, u64)| (a.0 + b.0, a.1 + b.1);
    match v {
        serde_json::Value::Array(items) => items.iter().map(|i| inline_media(i, media)).fold((0, 0), add),
        serde_json::Value::Object(o) => match media(o) {
            Some(data) => (1, data.map_or(0, |d| serde_json::to_vec(d).map_or(0, |b| b.len() as u64))),
            None => o.values().map(|i| inline_media(i, media)).fold((0, 0), add),
        },
        _ => (0, 0),
    }
}

pub fn chat_bound(model: &Model, req: &ChatRequest) -> Credits {
    let output = u64::from(req.max_tokens) * u64::from(req.n.max(1));
    model.price.tokens(input_tokens_bound(model, req), output)
}

/// A chat's exact cost, in millionths of a credit (charged through the
/// user's carry: see `ledger::settle`).
pub fn chat_cost(model: &Model, usage: &Usage, multiplier_micro: i64) -> Cost {
    Cost::Micro(model.price.usage_micro_at(usage, multiplier_micro))
}

/// What a token-metered answer says of its cost beside the credits charged:
/// the exact cost in millionths, and each component that had tokens or cost
/// something (`request` is the per-call price).
pub fn cost_detail(model: &Model, usage: &Usage, multiplier_micro: i64) -> serde_json::Map<String, serde_json::Value> {
    // Priced once, for the parts and their sum.
    let components = model.price.components_at(usage, multiplier_micro);
    let cost_micro = crate::providers::catalog::Component::total(&components);
    let parts: Vec<serde_json::Value> = components
        .iter()
        .filter(|c| c.tokens > 0 || c.micro > 0)
        .map(|c| serde_json::json!({"component": c.name, "tokens": c.tokens, "per_1m": c.per_1m, "micro": c.micro}))
        .collect();
    let mut m = serde_json::Map::new();
    m.insert("cost_micro".into(), cost_micro.into());
    m.insert("breakdown".into(), parts.into());
    // A price group's factor: each part is its list cost (tokens x per_1m)
    // times it, rounded up to the millionth.
    if multiplier_micro != crate::domain::MULTIPLIER_ONE_MICRO {
        m.insert("multiplier_micro".into(), multiplier_micro.into());
    }
    m
}

/// The `tollgate` object of an answer: the whole credits charged, the
/// ledger row, and `detail` ([`cost_detail`], or the units of a call priced
/// per unit).
pub fn tollgate_json(
    outcome: &crate::ledger::HoldOutcome,
    detail: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("cost".into(), serde_json::json!(outcome.charged));
    m.insert("transaction_id".into(), serde_json::json!(outcome.transaction_id));
    m.extend(detail);
    serde_json::Value::Object(m)
}

/// [`cost_detail`] of a call priced per unit (images, video seconds).
pub fn unit_detail(
    component: &'static str,
    units: u64,
    price: i64,
    multiplier_micro: i64,
) -> serde_json::Map<String, serde_json::Value> {
    let list = price.max(0).saturating_mul(units as i64);
    let micro = scale_credits(Credits(list), multiplier_micro).0.saturating_mul(1_000_000);
    let mut m = serde_json::Map::new();
    m.insert("cost_micro".into(), micro.into());
    m.insert(
        "breakdown".into(),
        serde_json::json!([{"component": component, "units": units, "price": price, "micro": micro}]),
    );
    if multiplier_micro != crate::domain::MULTIPLIER_ONE_MICRO {
        m.insert("multiplier_micro".into(), multiplier_micro.into());
    }
    m
}

/// `used`, carried by the channel of `info`: its tokens counted against
/// the key's per-minute limit (`tpm`), its channel in the usage aggregate.
pub fn carried(app: &App, info: &crate::providers::CallInfo, used: Metered) -> Metered {
    app.adapter.used_tokens(&info.key, used.input_tokens.saturating_add(used.output_tokens));
    used.via(&info.channel)
}

/// What a token-metered call used, for the usage aggregate.
/// `detail` is the call's [`cost_detail`]: the ledger row keeps it.
pub fn used_tokens(model: &Model, u: &Usage, detail: &serde_json::Map<String, serde_json::Value>) -> Metered {
    Metered {
        model: model.name.clone(),
        input_tokens: u.prompt_tokens,
        output_tokens: u.completion_tokens,
        cached_input_tokens: u.cached_tokens,
        cache_write_tokens: u.cache_write_tokens + u.cache_write_1h_tokens,
        reasoning_tokens: u.reasoning_tokens,
        audio_tokens: u.audio_input_tokens + u.audio_output_tokens,
        provider_cost_micro: model.provider_cost.as_ref().map_or(0, |p| p.usage_micro(u)),
        components: serde_json::to_string(detail).ok(),
        ..Metered::default()
    }
}

/// Credits reserved for one call.
#[derive(Debug, Clone, Copy)]
pub struct Reservation {
    pub user: UserId,
    pub hold: Option<HoldId>,
    pub bound: Credits,
    /// The API key the call came through (usage is counted per key).
    pub key: Option<ApiKeyId>,
    /// The spend day the call counts toward.
    pub day: i64,
    /// The caller's price group factor (millionths), fixed when the call
    /// is reserved: its bound and its cost both carry it.
    pub multiplier_micro: i64,
    /// The user whose row its writes lock, beside other users' charges
    /// (`SpendCaps::lock_user`); `None`: they run alone.
    pub lock: Option<UserId>,
}

/// The price group factor of `user` now (the jobs worker's: a job is
/// charged at its owner's group when it completes).
pub fn multiplier_for(app: &App, user: UserId) -> i64 {
    let group = app.db.read(|c| crate::auth::storage::price_group(c, user)).ok().flatten();
    app.config.pricing.multiplier_micro(group.as_deref())
}

/// Whole credits at a price group's factor, rounded up.
pub fn scale_credits(c: Credits, multiplier_micro: i64) -> Credits {
    Credits(crate::domain::scale_up(c.0, multiplier_micro))
}

/// Checks the per-request cap, then holds the bound (with the daily caps
/// checked and counted in the same transaction). A free call holds nothing.
pub fn reserve(app: &App, caller: &CurrentUser, bound: Credits, job: Option<JobId>) -> Result<Reservation> {
    let user = caller.id;
    let multiplier_micro = app.config.pricing.multiplier_micro(caller.price_group.as_deref());
    let bound = scale_credits(bound, multiplier_micro);
    app.guard.check_cost(user, bound)?;
    let (key, day) = (caller.key(), app.guard.today());
    let caps = app.guard.spend_caps(caller);
    let lock = caps.lock_user(user);
    if bound <= Credits::ZERO {
        return Ok(Reservation { user, hold: None, bound: Credits::ZERO, key, day, multiplier_micro, lock });
    }
    let ttl = app.hold_ttl_ms();
    // Not fsynced on its own: the settle that follows is, and carries it.
    let hold = app.db.write_lazy_for_user(lock, move |c| ledger::hold(c, user, bound, job, ttl, &caps))?;
    Ok(Reservation { user, hold: Some(hold), bound, key, day, multiplier_micro, lock })
}

/// Refusals a lower bound can answer, with how many credits are left
/// under the limit that refused.
fn headroom(e: &Error) -> Option<Credits> {
    let left = |cap: Credits, spent: Credits| Credits((cap.0 - spent.0).max(0));
    match e {
        Error::InsufficientCredits { available, .. } => Some(Credits(available.0.max(0))),
        Error::KeySpendLimitExceeded { limit, spent } => Some(left(*limit, *spent)),
        Error::KeyDailyLimitExceeded { limit, spent, .. } => Some(left(*limit, *spent)),
        Error::DailyCapExceeded { cap, spent, .. } => Some(left(*cap, *spent)),
        Error::BudgetExhausted { cap, spent, .. } => Some(left(*cap, *spent)),
        Error::MaxCostExceeded { cap, .. } => Some(*cap),
        _ => None,
    }
}

/// Times a hold is tried with a lower bound: each refusal names one limit,
/// and a call can meet the balance, a key's two budgets and the daily caps.
const FIT_ATTEMPTS_MAX: usize = 4;

/// The most output tokens per choice, below `asked` and at least `min`,
/// whose bound (`input` tokens and `choices` x output, at the caller's
/// price group) costs at most `room`; `None` when not even `min` fits.
pub fn output_that_fits(
    model: &Model,
    input: u64,
    choices: u64,
    asked: u64,
    room: Credits,
    multiplier: i64,
    min: u64,
) -> Option<u64> {
    let cost = |out: u64| scale_credits(model.price.tokens(input, out.saturating_mul(choices)), multiplier);
    if min >= asked || cost(min) > room {
        return None;
    }
    // The bound grows with the output: the largest that fits, by halving.
    let (mut lo, mut hi) = (min, asked - 1);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if cost(mid) <= room { lo = mid } else { hi = mid - 1 }
    }
    Some(lo)
}

/// A token-metered call held: the reservation, and the output bound per
/// choice when the caller could not afford the one asked for.
pub struct Fitted {
    pub reservation: Reservation,
    pub output_per_choice: u64,
    pub lowered: Option<u32>,
}

/// Holds a token-metered call's bound (`input` tokens, `choices` x
/// `output` per choice). When a limit refuses it (the balance, a key's
/// budgets, the daily caps, the per-request cap), holds instead the
/// largest output bound that fits, down to `limits.min_output_tokens`,
/// and says so: the caller sends that bound upstream. Exact as ever: the
/// provider can never produce more than is held.
pub fn reserve_fitted(
    app: &App,
    caller: &CurrentUser,
    model: &Model,
    input: u64,
    output: u64,
    choices: u64,
) -> Result<Fitted> {
    let choices = choices.max(1);
    let multiplier = app.config.pricing.multiplier_micro(caller.price_group.as_deref());
    let min = u64::from(app.config.limits.min_output_tokens);
    let (mut out, mut lowered) = (output, None);
    let mut refused = Error::Internal("no hold was tried".into());
    for _ in 0..FIT_ATTEMPTS_MAX {
        let e = match reserve(app, caller, model.price.tokens(input, out.saturating_mul(choices)), None) {
            Ok(reservation) => return Ok(Fitted { reservation, output_per_choice: out, lowered }),
            Err(e) => e,
        };
        match headroom(&e).and_then(|room| output_that_fits(model, input, choices, out, room, multiplier, min)) {
            Some(n) => {
                out = n;
                lowered = Some(u32::try_from(n).unwrap_or(u32::MAX));
                refused = e;
            }
            None => return Err(e),
        }
    }
    Err(refused)
}

/// Settles inside the caller's transaction and writes the business log
/// beside it, so the log and the charge agree; the usage aggregate counts
/// the call (`used`) in the same transaction.
pub fn settle_in(
    conn: &Conn<'_>,
    r: &Reservation,
    cost: Cost,
    description: &str,
    log: &NewLog,
    used: &Metered,
) -> Result<HoldOutcome> {
    let outcome = match r.hold {
        Some(h) => ledger::settle_metered(conn, h, cost, description, used, Timestamp::now())?,
        None => {
            // A free call: no ledger row, but it is a request.
            crate::usage::count(conn, r.user, r.day, &used.request(r.key, Credits::ZERO))?;
            HoldOutcome {
                hold_id: HoldId(0),
                status: HoldStatus::Settled,
                charged: Credits::ZERO,
                transaction_id: None,
            }
        }
    };
    let mut log = log.clone();
    log.details["cost"] = serde_json::json!(outcome.charged);
    log.details["transaction_id"] = serde_json::json!(outcome.transaction_id);
    logs::write(conn, &log)?;
    crate::metrics::global().credits_charged.inc_by(outcome.charged.0.max(0) as u64);
    Ok(outcome)
}

/// Gives the reservation back (the provider failed) and counts the failure
/// of `model` in the usage aggregate. Errors are logged: the sweeper
/// releases the hold at its expiry anyway.
pub fn release(app: &App, r: &Reservation, model: &str) {
    let (r, failed) = (*r, Metered::model(model).failure(r.key));
    let done = app.db.write_for_user(r.lock, move |c| {
        if let Some(h) = r.hold {
            ledger::release(c, h)?;
        }
        crate::usage::count(c, r.user, r.day, &failed)
    });
    if let Err(e) = done {
        log::error!("could not release the hold of a failed call ({:?}): {e}; it will expire", r.hold);
    }
}

/// The `map_err` of a provider call made under `r`: the hold is released
/// (an upstream failure is free) and the client told what failed.
pub fn release_on<'a>(app: &'a App, r: &'a Reservation, model: &'a str) -> impl FnOnce(ProviderError) -> Error + 'a {
    move |e| {
        release(app, r, model);
        provider_error(e)
    }
}

/// What a client is told about a provider failure.
pub fn provider_error(e: ProviderError) -> Error {
    if e.is_client_error() {
        return Error::UpstreamRejected(e.to_string());
    }
    Error::Upstream { timeout: matches!(e, ProviderError::Timeout), message: e.to_string() }
}
