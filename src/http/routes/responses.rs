//! `POST /v1/responses`: OpenAI's Responses API, for `openai` routes.
//!
//! The client's body goes upstream whole (the model name replaced, the
//! output bound `max_output_tokens` set); the answer, or every server-sent
//! event of a stream, comes back as the provider sent it. Metered like chat:
//! the bound is held first, and the call is charged from the `usage` of the
//! response (for a stream: of `response.completed`, or of the
//! `response.incomplete` / `response.failed` that ends it). Stored context
//! (`previous_response_id`, `conversation`) is the provider's business; as
//! tollgate cannot see it, such a call's input bound is the model's context
//! window.

use super::ai::{MeteredCall, model_of_kind, unsupported};
use super::metered_stream::{Pump, StreamCharge, Unreported};
use crate::error::Error;
use crate::http::error::ApiError;
use crate::http::response::Response;
use crate::http::route::{Ctx, Route, doc, upstream};
use crate::metered;
use crate::providers::catalog::ModelKind;
use crate::providers::types::Usage;
use crate::providers::{Model, RawStream};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The responses routes, in the order the router tries them.
pub static ROUTES: &[Route] = &[upstream(
    "POST",
    "/v1/responses",
    create,
    doc("OpenAI Responses API (openai routes; plain or stream: true)", Some("ResponsesRequest"), 200, "ResponseObject"),
)];

/// Fields of a Responses request that never become prompt tokens.
const NOT_PROMPT_FIELDS: &[&str] = &[
    "model",
    "max_output_tokens",
    "stream",
    "temperature",
    "top_p",
    "user",
    "metadata",
    "store",
    "parallel_tool_calls",
    "previous_response_id",
    "conversation",
    "background",
    "service_tier",
    "truncation",
];
/// Template tokens a provider may add around a Responses input.
const TEMPLATE_TOKENS: u64 = 64;

#[derive(Deserialize)]
struct ResponsesBody {
    model: String,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    max_output_tokens: Option<u32>,
}

/// The most input this call can be charged: the bytes of every prompt
/// field, or the whole context window when it continues stored context.
fn input_bound(model: &Model, body: &Map<String, Value>) -> u64 {
    if body.contains_key("previous_response_id") || body.contains_key("conversation") {
        u64::from(model.context_tokens_max)
    } else {
        metered::body_input_bound(model, body, NOT_PROMPT_FIELDS, (0, 0), TEMPLATE_TOKENS)
    }
}

fn usage_in(response: &Value) -> Option<Usage> {
    let u = response.get("usage").filter(|u| !u.is_null())?;
    Some(Usage::from_openai(u))
}

pub fn create(ctx: &Ctx) -> Result<Response, ApiError> {
    let (parsed, mut body): (ResponsesBody, _) = ctx.req.json_and_object()?;
    let model = model_of_kind(ctx, &parsed.model, ModelKind::Chat)?;
    let model = &*model;
    if !ctx.app.adapter.has_responses(model) {
        return Err(unsupported(model, "model"));
    }
    let max_output = metered::max_tokens(model, parsed.max_output_tokens).map_err(|e| match e {
        Error::Invalid { message, .. } => Error::invalid("max_output_tokens", message),
        other => other,
    })?;
    if parsed.stream && ctx.req.header("idempotency-key").is_some() {
        return Err(Error::invalid("Idempotency-Key", "Idempotency-Key is not supported with stream: true").into());
    }
    body.insert("max_output_tokens".into(), json!(max_output));
    let call = MeteredCall {
        model,
        tokens_bound: (input_bound(model, &body), u64::from(max_output)),
        choices: 1,
        names: ("ai_response", "response"),
    };
    let adapter = &ctx.app.adapter;
    let fitted = |lowered| super::ai::body_fitted(&body, &["max_output_tokens"], lowered);
    if parsed.stream {
        return call.stream(
            ctx,
            |lowered| adapter.responses_stream(model, &fitted(lowered)),
            |charge, stream| ResponseEvents { charge, stream },
        );
    }
    call.answer(
        ctx,
        |lowered| adapter.responses(model, &fitted(lowered)),
        |answer| usage_in(answer).unwrap_or_default(),
    )
}

/// A streamed response: each provider event passed on as it came (the
/// model renamed); the end settles from the last usage seen.
struct ResponseEvents {
    charge: StreamCharge,
    stream: RawStream,
}

impl Pump for ResponseEvents {
    fn pump(&mut self, out: &mut Vec<u8>) -> bool {
        match self.stream.next() {
            Some(Ok((name, mut data))) => {
                // Generated output: text and function call argument deltas.
                if data.get("type").and_then(Value::as_str).is_some_and(|t| t.ends_with(".delta")) {
                    self.charge.relayed_bytes += data.get("delta").and_then(Value::as_str).map_or(0, str::len) as u64;
                }
                if let Some(u) = data.get("response").and_then(usage_in) {
                    self.charge.usage = Some(u);
                    // The event that carries usage carries the cost too.
                    data["response"]["tollgate"] =
                        Value::Object(metered::cost_detail(&self.charge.model, &u, self.charge.multiplier_micro()));
                }
                if let Some(r) = data.get_mut("response").filter(|r| r.get("model").is_some()) {
                    r["model"] = json!(self.charge.model.name);
                }
                if let Some(name) = name {
                    out.extend_from_slice(format!("event: {name}\n").as_bytes());
                }
                out.extend_from_slice(format!("data: {data}\n\n").as_bytes());
                true
            }
            Some(Err(e)) => {
                self.charge.settle("provider_failed", Unreported::Free);
                let v = json!({"type": "error", "code": "upstream_error", "message": format!("The model provider failed mid-stream: {e}")});
                out.extend_from_slice(format!("event: error\ndata: {v}\n\n").as_bytes());
                false
            }
            None => {
                self.charge.settle("completed", Unreported::Counted);
                false
            }
        }
    }
}
