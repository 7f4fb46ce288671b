//! `POST /v1/audio/speech`, `POST /v1/audio/transcriptions` and
//! `POST /v1/moderations`, on `openai` routes, each metered.
//!
//! - Speech: the client's JSON body goes upstream (the model replaced); the
//!   audio streams back as the provider sends it. Priced per character of
//!   `input` (`per_1m_characters`), known before the call: the hold is the
//!   cost, charged once the provider answered.
//! - Transcriptions: the client's multipart form is read (`http::multipart`,
//!   every part bounded) and sent upstream in order, the model's value
//!   replaced. Priced per second of audio (`per_audio_second`: the
//!   answer's `usage.seconds`, else a WAV file's duration, else a subtitle
//!   answer's last timestamp, else the bound) and per token when the
//!   provider reports token usage (`gpt-4o-transcribe`). The bound is a WAV
//!   file's duration, or the file's bytes at [`AUDIO_BYTES_PER_SECOND_MIN`].
//! - Moderations: the client's body passes through; free unless the model
//!   has a `per_request` price.

use super::ai::{MeteredCall, model_of_kind};
use super::metered_stream::call_log;
use crate::domain::Credits;
use crate::error::Error;
use crate::http::error::ApiError;
use crate::http::response::Response;
use crate::http::route::{Ctx, Route, doc, upstream};
use crate::ledger::{Cost, HoldOutcome};
use crate::metered::{self, Reservation};
use crate::providers::catalog::ModelKind;
use crate::providers::types::{FormPart, Usage};
use crate::providers::{CallInfo, Model};
use crate::usage::Metered;
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The audio routes, in the order the router tries them.
pub static ROUTES: &[Route] = &[
    upstream(
        "POST",
        "/v1/audio/speech",
        speech,
        doc(
            "Text to speech on openai routes: the audio bytes, priced per character",
            Some("SpeechRequest"),
            200,
            "Binary",
        ),
    ),
    upstream(
        "POST",
        "/v1/audio/transcriptions",
        transcriptions,
        doc(
            "Speech to text on openai routes (multipart/form-data with a file part), priced per second or token",
            None,
            200,
            "Transcription",
        ),
    ),
    upstream(
        "POST",
        "/v1/moderations",
        moderations,
        doc(
            "OpenAI moderations (free unless the model has a per_request price)",
            Some("ModerationRequest"),
            200,
            "Moderation",
        ),
    ),
];

/// Characters one speech request may have (OpenAI's limit).
pub const SPEECH_INPUT_CHARS_MAX: usize = 4096;
/// The lowest bitrate a transcription file is bounded at, when its
/// duration cannot be read (it is not a WAV file): 1,000 bytes a second
/// (8 kbit/s, below common speech encodings).
pub const AUDIO_BYTES_PER_SECOND_MIN: u64 = 1_000;
/// Token bounds per second of audio, for models that bill transcription by
/// the token: audio input, and text output.
const AUDIO_TOKENS_PER_SECOND_MAX: u64 = 64;
const TEXT_TOKENS_PER_SECOND_MAX: u64 = 16;

#[derive(Deserialize)]
struct SpeechBody {
    model: String,
    input: String,
    #[serde(default)]
    stream_format: Option<String>,
}

fn no_idempotency(ctx: &Ctx, what: &str) -> Result<(), ApiError> {
    match ctx.req.header("idempotency-key") {
        Some(_) => Err(Error::invalid(
            "Idempotency-Key",
            format!("Idempotency-Key is not supported on {what}: the answer is streamed and not stored"),
        )
        .into()),
        None => Ok(()),
    }
}

/// A media type the answer may carry, as a static string.
fn media_type(t: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "audio/mpeg",
        "audio/wav",
        "audio/x-wav",
        "audio/opus",
        "audio/ogg",
        "audio/aac",
        "audio/flac",
        "audio/pcm",
        "audio/webm",
        "text/vtt",
        "application/x-subrip",
        "application/json",
    ];
    let base = t.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match KNOWN.iter().find(|k| **k == base) {
        Some(k) => k,
        None if base.starts_with("text/") => "text/plain; charset=utf-8",
        None => "application/octet-stream",
    }
}

/// The cost of `units` at `per_1m` credits per million units, in
/// millionths of a credit at a price group's factor, and its breakdown part.
fn unit_part(component: &str, units: u64, per_1m: i64, multiplier_micro: i64) -> (i64, Value) {
    let list = i64::try_from(units).unwrap_or(i64::MAX).saturating_mul(per_1m.max(0));
    let micro = crate::domain::scale_up(list, multiplier_micro);
    (micro, json!({"component": component, "units": units, "per_1m": per_1m, "micro": micro}))
}

/// Settles `r` for `cost_micro` and returns the outcome; the call's log,
/// ledger description and usage record from `what` it was.
#[allow(clippy::too_many_arguments)]
fn settle(
    ctx: &Ctx,
    model: &Model,
    info: &CallInfo,
    r: Reservation,
    cost_micro: i64,
    usage: Usage,
    detail: Map<String, Value>,
    (action, what): (&'static str, &str),
) -> Result<HoldOutcome, ApiError> {
    let log = call_log(action, model, info, &usage, false, r.user, "completed");
    let desc = format!("{what} {}", model.priced_name());
    let used = Metered {
        input_tokens: usage.prompt_tokens,
        output_tokens: usage.completion_tokens,
        audio_tokens: usage.audio_input_tokens,
        components: serde_json::to_string(&detail).ok(),
        ..Metered::model(&model.name)
    };
    let used = crate::metered::carried(ctx.app, info, used);
    Ok(ctx
        .app
        .db
        .write_for_user(r.lock, move |c| metered::settle_in(c, &r, Cost::Micro(cost_micro), &desc, &log, &used))?)
}

/// The cost detail of a call from its parts.
fn detail(cost_micro: i64, parts: Vec<Value>, multiplier_micro: i64) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("cost_micro".into(), cost_micro.into());
    m.insert("breakdown".into(), parts.into());
    if multiplier_micro != crate::domain::MULTIPLIER_ONE_MICRO {
        m.insert("multiplier_micro".into(), multiplier_micro.into());
    }
    m
}

/// The whole credits a cost in millionths needs held.
fn credits_for(micro: i64) -> Credits {
    let micro = micro.max(0).unsigned_abs();
    Credits(i64::try_from(micro.div_ceil(crate::ledger::MICRO_PER_CREDIT.unsigned_abs())).unwrap_or(i64::MAX))
}

pub fn speech(ctx: &Ctx) -> Result<Response, ApiError> {
    no_idempotency(ctx, "speech")?;
    let caller = ctx.user()?;
    let (body, object): (SpeechBody, Map<String, Value>) = ctx.req.json_and_object()?;
    let model = model_of_kind(ctx, &body.model, ModelKind::Speech)?;
    let model = &*model;
    let chars = body.input.chars().count();
    if chars == 0 || chars > SPEECH_INPUT_CHARS_MAX {
        return Err(Error::invalid("input", format!("input must have 1 to {SPEECH_INPUT_CHARS_MAX} characters")).into());
    }
    if body.stream_format.as_deref().is_some_and(|f| f != "audio") {
        return Err(ApiError::refuse(
            "unsupported_parameter",
            "stream_format must be \"audio\": speech is streamed back as audio bytes, and its cost is known before the call.",
        )
        .with_param("stream_format"));
    }
    let price = &model.price;
    let list_micro = unit_part("character", chars as u64, price.per_1m_characters, crate::domain::MULTIPLIER_ONE_MICRO)
        .0
        + price.per_request.saturating_mul(crate::ledger::MICRO_PER_CREDIT);
    let reservation = metered::reserve(ctx.app, &caller, credits_for(list_micro), None)?;
    let m = reservation.multiplier_micro;
    let (audio, info) =
        ctx.app.adapter.speech(model, &object).map_err(metered::release_on(ctx.app, &reservation, &model.name))?;
    let (chars_micro, chars_part) = unit_part("character", chars as u64, price.per_1m_characters, m);
    let request_micro = crate::domain::scale_up(price.per_request.saturating_mul(crate::ledger::MICRO_PER_CREDIT), m);
    let mut parts = vec![chars_part];
    if request_micro > 0 {
        parts.push(json!({"component": "request", "units": 1, "micro": request_micro}));
    }
    let cost = chars_micro + request_micro;
    let outcome = settle(
        ctx,
        model,
        &info,
        reservation,
        cost,
        Usage::default(),
        detail(cost, parts, m),
        ("ai_speech", &format!("speech ({chars} characters)")),
    )?;
    let mut r = Response::text(200, media_type(&audio.content_type), Vec::new());
    r.stream = Some(audio.body);
    cost_headers(&mut r, &outcome, cost);
    Ok(r)
}

/// The charge of an answer that has no JSON to carry it.
fn cost_headers(r: &mut Response, outcome: &HoldOutcome, cost_micro: i64) {
    r.headers.push(("X-Tollgate-Cost", outcome.charged.0.to_string()));
    r.headers.push(("X-Tollgate-Cost-Micro", cost_micro.to_string()));
    if let Some(t) = &outcome.transaction_id {
        r.headers.push(("X-Tollgate-Transaction-Id", t.to_string()));
    }
}

/// A WAV file's duration in whole seconds, rounded up.
fn wav_seconds(data: &[u8]) -> Option<u64> {
    let r = hound::WavReader::new(std::io::Cursor::new(data)).ok()?;
    let rate = u64::from(r.spec().sample_rate);
    (rate > 0).then(|| u64::from(r.duration()).div_ceil(rate))
}

/// The end of the last cue of an SRT or WebVTT answer, in whole seconds
/// rounded up (`00:01:02,345 --> 00:01:04,000`).
fn subtitle_seconds(text: &str) -> Option<u64> {
    let last = text.lines().rev().find_map(|l| l.split_once("-->").map(|(_, end)| end.trim()))?;
    let stamp = last.split_whitespace().next()?.replace(',', ".");
    let mut secs = 0f64;
    for field in stamp.split(':') {
        secs = secs * 60.0 + field.parse::<f64>().ok()?;
    }
    Some(secs.ceil() as u64)
}

/// What a transcription answer reports: token usage, or seconds.
fn reported(answer: Option<&Value>) -> (Option<Usage>, Option<u64>) {
    let Some(u) = answer.and_then(|a| a.get("usage")) else { return (None, None) };
    match u.get("type").and_then(Value::as_str) {
        Some("tokens") => {
            let n = |p: &str| u.pointer(p).and_then(Value::as_u64).unwrap_or(0);
            let usage = Usage {
                prompt_tokens: n("/input_tokens"),
                completion_tokens: n("/output_tokens"),
                audio_input_tokens: n("/input_token_details/audio_tokens"),
                ..Usage::default()
            };
            (Some(usage), None)
        }
        _ => (None, u.get("seconds").and_then(Value::as_f64).map(|s| s.max(0.0).ceil() as u64)),
    }
}

pub fn transcriptions(ctx: &Ctx) -> Result<Response, ApiError> {
    let caller = ctx.user()?;
    let total = ctx.app.config.server.chat_body_bytes_max as u64;
    let parts = crate::http::multipart::parse(ctx.req.header("content-type"), &ctx.req.body, total, total)?;
    let text = |name: &str| {
        parts
            .iter()
            .find(|p| p.name == name && p.filename.is_none())
            .map(|p| String::from_utf8_lossy(&p.data).into_owned())
    };
    let name = text("model").ok_or_else(|| Error::invalid("model", "the form needs a model part"))?;
    let model = model_of_kind(ctx, &name, ModelKind::Transcription)?;
    let model = &*model;
    let file: &FormPart = parts
        .iter()
        .find(|p| p.name == "file" && !p.data.is_empty())
        .ok_or_else(|| Error::invalid("file", "the form needs a file part with the audio"))?;
    if text("stream").is_some_and(|s| s.trim() == "true") {
        return Err(ApiError::refuse(
            "unsupported_parameter",
            "stream is not carried for transcriptions: send the form without it for one answer.",
        )
        .with_param("stream"));
    }
    let wav = wav_seconds(&file.data);
    let seconds_bound = wav.unwrap_or_else(|| (file.data.len() as u64).div_ceil(AUDIO_BYTES_PER_SECOND_MIN));
    let price = &model.price;
    let bound = Credits(price.per_audio_second.saturating_mul(i64::try_from(seconds_bound).unwrap_or(i64::MAX)))
        + price.tokens(seconds_bound * AUDIO_TOKENS_PER_SECOND_MAX, seconds_bound * TEXT_TOKENS_PER_SECOND_MAX);
    let reservation = metered::reserve(ctx.app, &caller, bound, None)?;
    let m = reservation.multiplier_micro;
    let ((content_type, bytes), info) =
        ctx.app.adapter.transcribe(model, &parts).map_err(metered::release_on(ctx.app, &reservation, &model.name))?;
    let json_answer = media_type(&content_type) == crate::http::response::JSON;
    let answer: Option<Value> = json_answer.then(|| serde_json::from_slice(&bytes).ok()).flatten();
    let (tokens, seconds) = reported(answer.as_ref());
    let seconds =
        seconds.or(wav).or_else(|| subtitle_seconds(&String::from_utf8_lossy(&bytes))).unwrap_or(seconds_bound);
    let usage = tokens.unwrap_or_default();
    let mut breakdown = Vec::new();
    let mut cost = 0i64;
    if tokens.is_some() {
        let d = metered::cost_detail(model, &usage, m);
        cost += d.get("cost_micro").and_then(Value::as_i64).unwrap_or(0);
        breakdown.extend(d.get("breakdown").and_then(Value::as_array).cloned().unwrap_or_default());
    }
    if price.per_audio_second > 0 {
        let per_1m = price.per_audio_second.saturating_mul(crate::ledger::MICRO_PER_CREDIT);
        let (micro, mut part) = unit_part("audio_second", seconds, per_1m, m);
        // Priced per second: shown as such.
        if let Some(p) = part.as_object_mut() {
            p.shift_remove("per_1m");
            p.insert("per_second".into(), price.per_audio_second.into());
        }
        cost += micro;
        breakdown.push(part);
    }
    let detail = detail(cost, breakdown, m);
    let what = format!("transcription ({seconds} s)");
    let outcome = settle(ctx, model, &info, reservation, cost, usage, detail.clone(), ("ai_transcription", &what))?;
    match answer {
        Some(mut a) if a.is_object() => {
            a["tollgate"] = metered::tollgate_json(&outcome, detail);
            Ok(Response::json_value(200, &a))
        }
        _ => {
            let mut r = Response::text(200, media_type(&content_type), bytes);
            cost_headers(&mut r, &outcome, cost);
            Ok(r)
        }
    }
}

#[derive(Deserialize)]
struct ModerationBody {
    model: String,
}

pub fn moderations(ctx: &Ctx) -> Result<Response, ApiError> {
    let (body, object): (ModerationBody, Map<String, Value>) = ctx.req.json_and_object()?;
    let model = model_of_kind(ctx, &body.model, ModelKind::Moderation)?;
    let model = &*model;
    let call = MeteredCall { model, tokens_bound: (0, 0), choices: 1, names: ("ai_moderation", "moderation") };
    let adapter = &ctx.app.adapter;
    call.answer(ctx, |_| adapter.moderate(model, &object), |_| Usage::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subtitle_answer_ends_at_its_last_cue() {
        let srt = "1\n00:00:00,000 --> 00:00:02,500\nhello\n\n2\n00:01:02,345 --> 00:01:04,100\nworld\n";
        assert_eq!(subtitle_seconds(srt), Some(65));
        let vtt = "WEBVTT\n\n00:00.000 --> 00:03.200 align:start\nhi\n";
        assert_eq!(subtitle_seconds(vtt), Some(4));
        assert_eq!(subtitle_seconds("plain text"), None);
    }

    #[test]
    fn a_wav_files_duration_is_read_from_its_header() {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut buf = std::io::Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut buf, spec).unwrap();
        for _ in 0..8000 * 2 + 1 {
            w.write_sample(0i16).unwrap();
        }
        w.finalize().unwrap();
        assert_eq!(wav_seconds(buf.get_ref()), Some(3), "2 s and one sample: a started second counts");
        assert_eq!(wav_seconds(b"not a wav"), None);
    }
}
