//! `POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent`
//! and `:countTokens`: Gemini's own API, for Google's `google-genai` SDKs
//! and the Gemini CLI (credential in `x-goog-api-key` or `?key=`; errors in
//! Google's shape).
//!
//! For a model with a `google` route only: the client's body goes upstream
//! whole (the output bound `generationConfig.maxOutputTokens` set to the
//! client's or the model's), and the answer or every streamed chunk comes
//! back as sent, the cost added as `tollgate` (streamed: on the chunk that
//! carries the finish reason). Metered like chat, from `usageMetadata`
//! (cached content and thinking included). `countTokens` is free.

use super::ai::{MeteredCall, model_of_kind, unsupported};
use super::metered_stream::{Pump, StreamCharge, Unreported};
use crate::error::Error;
use crate::http::error::ApiError;
use crate::http::response::Response;
use crate::http::route::{Ctx, Dialect, Route, doc, in_dialect, upstream, with_query};
use crate::metered;
use crate::providers::catalog::ModelKind;
use crate::providers::google::usage_of;
use crate::providers::{Model, RawStream};
use serde_json::{Map, Value, json};

/// The gemini routes, in the order the router tries them. The path's last
/// segment is `{model}:{method}`; the SDKs call `v1beta` or `v1` (newer
/// google-genai releases default to `v1`).
pub static ROUTES: &[Route] =
    &[gemini_route("/v1beta/models/{model_method}"), gemini_route("/v1/models/{model_method}")];

const fn gemini_route(path: &'static str) -> Route {
    in_dialect(
        with_query(
            upstream(
                "POST",
                path,
                call,
                doc(
                    "Gemini API on google routes: {model}:generateContent, :streamGenerateContent?alt=sse, :countTokens (free)",
                    Some("GenerateContentRequest"),
                    200,
                    "GenerateContentResponse",
                ),
            ),
            &["alt", "key"],
        ),
        Dialect::Google,
    )
}

/// Request fields that never become prompt tokens.
const NOT_PROMPT_FIELDS: &[&str] = &["generationConfig", "safetySettings", "toolConfig", "labels", "model"];
/// Template tokens a provider adds around a Gemini input, at most.
const TEMPLATE_TOKENS: u64 = 64;

pub fn call(ctx: &Ctx) -> Result<Response, ApiError> {
    let segment = ctx.param(0);
    let (name, method) = segment.split_once(':').ok_or_else(|| {
        ApiError::refuse("not_found", format!("No method in {segment:?}: use {{model}}:generateContent."))
    })?;
    let model = model_of_kind(ctx, name, ModelKind::Chat)?;
    let model = &*model;
    if !ctx.app.adapter.has_gemini(model) {
        return Err(unsupported(model, "model"));
    }
    let body: Map<String, Value> = ctx.req.json()?;
    if !body
        .get("contents")
        .and_then(Value::as_array)
        .is_some_and(|c| !c.is_empty() && c.len() <= metered::CHAT_MESSAGES_MAX)
    {
        return Err(Error::invalid(
            "contents",
            format!("contents must be an array of 1 to {} turns", metered::CHAT_MESSAGES_MAX),
        )
        .into());
    }
    match method {
        "generateContent" => generate(ctx, model, body, false),
        "streamGenerateContent" if ctx.req.query("alt") == Some("sse") => generate(ctx, model, body, true),
        "streamGenerateContent" => {
            Err(Error::invalid("alt", "streamGenerateContent is served as server-sent events: add ?alt=sse").into())
        }
        "countTokens" => {
            let (answer, _) = ctx.app.adapter.gemini_count(model, &body).map_err(metered::provider_error)?;
            Ok(Response::json_value(200, &answer))
        }
        other => Err(ApiError::refuse(
            "not_found",
            format!("Unknown method {other:?}: use generateContent, streamGenerateContent or countTokens."),
        )),
    }
}

/// The output bound (per candidate) and the number of candidates, the
/// bound written into `generationConfig`.
fn output_bound(model: &Model, body: &mut Map<String, Value>) -> Result<(u32, u32), Error> {
    let config = body.entry("generationConfig").or_insert_with(|| json!({}));
    let Some(config) = config.as_object_mut() else {
        return Err(Error::invalid("generationConfig", "generationConfig must be an object"));
    };
    let asked = config.get("maxOutputTokens").and_then(Value::as_u64).map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    let max = metered::max_tokens(model, asked).map_err(|e| match e {
        Error::Invalid { message, .. } => Error::invalid("generationConfig.maxOutputTokens", message),
        other => other,
    })?;
    let n = config.get("candidateCount").and_then(Value::as_u64).unwrap_or(1);
    if n == 0 || n > u64::from(super::ai::CHAT_CHOICES_MAX) {
        return Err(Error::invalid(
            "generationConfig.candidateCount",
            format!("candidateCount must be from 1 to {}", super::ai::CHAT_CHOICES_MAX),
        ));
    }
    config.insert("maxOutputTokens".into(), json!(max));
    Ok((max, n as u32))
}

/// The most input a call can be charged: the bytes of every prompt field,
/// an inline image at the model's image bound; cached content is the
/// provider's, so its call holds the whole context window.
fn input_bound(model: &Model, body: &Map<String, Value>) -> u64 {
    if body.contains_key("cachedContent") {
        return u64::from(model.context_tokens_max);
    }
    let images = inline_data(body.get("contents").unwrap_or(&Value::Null));
    metered::body_input_bound(model, body, NOT_PROMPT_FIELDS, images, TEMPLATE_TOKENS)
}

/// `inlineData` parts anywhere in `v`: how many, and their bytes.
fn inline_data(v: &Value) -> (u64, u64) {
    metered::inline_media(v, |o| o.get("inlineData").or_else(|| o.get("inline_data")).map(Some))
}

fn generate(ctx: &Ctx, model: &Model, mut body: Map<String, Value>, stream: bool) -> Result<Response, ApiError> {
    if stream && ctx.req.header("idempotency-key").is_some() {
        return Err(Error::invalid("Idempotency-Key", "Idempotency-Key is not supported with a stream").into());
    }
    let (max, n) = output_bound(model, &mut body)?;
    let call = MeteredCall {
        model,
        tokens_bound: (input_bound(model, &body), u64::from(max)),
        choices: u64::from(n),
        names: ("ai_gemini", "gemini"),
    };
    let adapter = &ctx.app.adapter;
    let fitted = |lowered| super::ai::body_fitted(&body, &["generationConfig", "maxOutputTokens"], lowered);
    if stream {
        return call.stream(
            ctx,
            |lowered| adapter.gemini_stream(model, &fitted(lowered)),
            |charge, stream| Chunks { charge, stream },
        );
    }
    call.answer(
        ctx,
        |lowered| adapter.gemini(model, &fitted(lowered)),
        |answer| answer.get("usageMetadata").map(usage_of).unwrap_or_default(),
    )
}

/// A stream: every chunk passed on as it came; usage from the last
/// `usageMetadata` (Gemini's counts are running totals).
struct Chunks {
    charge: StreamCharge,
    stream: RawStream,
}

impl Pump for Chunks {
    fn pump(&mut self, out: &mut Vec<u8>) -> bool {
        match self.stream.next() {
            Some(Ok((_, mut data))) => {
                let parts = data.pointer("/candidates/0/content/parts").and_then(Value::as_array);
                let text: usize = parts
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .map(str::len)
                    .sum();
                self.charge.relayed_bytes += text as u64;
                if let Some(u) = data.get("usageMetadata").map(usage_of) {
                    self.charge.usage = Some(u);
                    if data.pointer("/candidates/0/finishReason").is_some() {
                        data["tollgate"] =
                            Value::Object(metered::cost_detail(&self.charge.model, &u, self.charge.multiplier_micro()));
                    }
                }
                out.extend_from_slice(format!("data: {data}\r\n\r\n").as_bytes());
                true
            }
            Some(Err(e)) => {
                self.charge.settle("provider_failed", Unreported::Free);
                let v = json!({"error": {"code": 502, "message": format!("The model provider failed mid-stream: {e}"), "status": "INTERNAL"}});
                out.extend_from_slice(format!("data: {v}\r\n\r\n").as_bytes());
                false
            }
            None => {
                self.charge.settle("completed", Unreported::Counted);
                false
            }
        }
    }
}
