//! Audio and moderation on `openai` routes: speech bytes streamed back and
//! charged per character; transcription forms forwarded part by part and
//! charged per second (reported, read from a WAV header, or from subtitle
//! timestamps) or per token; forms bounded part by part; moderations free
//! unless priced.

use crate::ai::provider;
use crate::fake_provider::{FakeProvider, SPEECH_BYTES, form_text};
use crate::helpers::*;
use serde_json::{Value, json};
use tollgate::config::PriceConfig;

fn audio_app() -> (FakeProvider, TestApp) {
    let fake = FakeProvider::start();
    let base = format!("{}/v1", fake.base);
    let app = TestApp::spawn_with(|c| {
        c.providers.insert("p".into(), provider("openai", &base, 5_000));
        let price = |p: PriceConfig| p;
        c.models.push(model_config(
            "tts",
            "speech",
            &[("p", "tts-up")],
            price(PriceConfig { per_1m_characters: 15_000, ..PriceConfig::default() }),
        ));
        c.models.push(model_config(
            "whisper",
            "transcription",
            &[("p", "whisper-up")],
            PriceConfig { per_audio_second: 2, ..PriceConfig::default() },
        ));
        c.models.push(model_config(
            "transcribe-4o",
            "transcription",
            &[("p", "gpt-4o-transcribe")],
            PriceConfig {
                input_per_1m: 6000,
                audio_input_per_1m: Some(6000),
                output_per_1m: 10_000,
                ..PriceConfig::default()
            },
        ));
        c.models.push(model_config("mod", "moderation", &[("p", "omni-moderation-latest")], PriceConfig::default()));
        c.models.push(model_config(
            "mod-paid",
            "moderation",
            &[("p", "omni-moderation-latest")],
            PriceConfig { per_request: 1, ..PriceConfig::default() },
        ));
    });
    (fake, app)
}

fn last_cost_micro(app: &TestApp) -> i64 {
    app.sql_one("SELECT cost_micro FROM credit_transactions ORDER BY id DESC LIMIT 1", &[])
}

/// A multipart form, framed by hand as any client frames it: (name,
/// filename, bytes).
fn form(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, filename, data) in parts {
        out.extend_from_slice(format!("--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes());
        if let Some(f) = filename {
            out.extend_from_slice(format!("; filename=\"{f}\"\r\nContent-Type: application/octet-stream").as_bytes());
        }
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--XyZ--\r\n");
    out
}

fn post_form(app: &TestApp, token: &str, body: &[u8]) -> Resp {
    let url = format!("{}/v1/audio/transcriptions", app.client.base);
    let req = ureq::http::Request::builder()
        .method("POST")
        .uri(&url)
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "multipart/form-data; boundary=XyZ")
        .body(body.to_vec())
        .unwrap();
    let mut resp = app.client.agent.run(req).unwrap();
    let status = resp.status().as_u16();
    let headers =
        resp.headers().iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())).collect();
    let body = resp.body_mut().read_to_vec().unwrap();
    Resp { status, headers, body }
}

/// A silent 16-bit mono WAV file of `secs` seconds at 8 kHz.
fn wav(secs: f64) -> Vec<u8> {
    let spec =
        hound::WavSpec { channels: 1, sample_rate: 8000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut buf, spec).unwrap();
    for _ in 0..(secs * 8000.0) as usize {
        w.write_sample(0i16).unwrap();
    }
    w.finalize().unwrap();
    buf.into_inner()
}

#[test]
fn speech_streams_the_providers_bytes_and_charges_per_character() {
    let (fake, app) = audio_app();
    let ann = app.user("ann");
    app.grant(&ann, 10);
    let input = "Hello from tollgate! ".repeat(10);
    let body = json!({"model": "tts", "input": input, "voice": "alloy", "speed": 1.25, "instructions": "cheerful", "response_format": "mp3"});
    let r = app.client.post("/v1/audio/speech", &ann.token, body.clone());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, SPEECH_BYTES, "the audio as the provider sent it");
    assert_eq!(r.header("content-type"), Some("audio/mpeg"));
    let sent = fake.requests().pop().unwrap();
    let mut expected = body.clone();
    expected["model"] = json!("tts-up");
    assert_eq!(sent.body, expected, "every field as sent");
    // 210 characters at 15,000 credits per 1M characters.
    let micro = 210 * 15_000;
    assert_eq!(last_cost_micro(&app), micro);
    assert_eq!(r.header("x-tollgate-cost-micro"), Some(micro.to_string().as_str()));
    assert_eq!(app.balance(&ann)["balance"], 10 - 3, "3.15 credits: 3 whole charged, 0.15 carried");

    let refused = [
        (json!({"model": "tts", "input": "x".repeat(4097), "voice": "alloy"}), "input"),
        (json!({"model": "tts", "input": "", "voice": "alloy"}), "input"),
        (json!({"model": "tts", "input": "hi", "voice": "alloy", "stream_format": "sse"}), "stream_format"),
        (json!({"model": "whisper", "input": "hi", "voice": "alloy"}), "model"),
    ];
    for (body, param) in refused {
        let r = app.client.post("/v1/audio/speech", &ann.token, body);
        assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some(param)), "{}", r.text());
    }
    let r = app
        .client
        .request(
            "POST",
            "/v1/audio/speech",
            Some(&ann.token),
            &[("Idempotency-Key", "k1")],
            Some(json!({"model": "tts", "input": "hi", "voice": "alloy"}).to_string().as_bytes()),
        )
        .unwrap();
    assert_eq!((r.status, r.error_code().as_str()), (400, "invalid_request"));
    assert_eq!(fake.count("/audio/speech"), 1, "no refused call reached the provider");
    assert_eq!(app.audit()["valid"], true);
}

#[test]
fn transcriptions_forward_the_form_and_charge_the_seconds_or_tokens_the_call_used() {
    let (fake, app) = audio_app();
    let ann = app.user("ann");
    app.grant(&ann, 1000);
    let audio = wav(2.5);

    // JSON with usage in seconds: 2.4 s reported -> 3 started seconds at 2.
    let body = form(&[
        ("file", Some("a.wav"), &audio),
        ("model", None, b"whisper"),
        ("language", None, b"en"),
        ("timestamp_granularities[]", None, b"word"),
        ("timestamp_granularities[]", None, b"segment"),
    ]);
    let r = post_form(&app, &ann.token, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["text"], "fake transcription");
    assert_eq!(v["usage"]["seconds"], 2.4, "the provider's answer as sent");
    assert_eq!(v["tollgate"]["cost_micro"], 3 * 2_000_000);
    assert_eq!(last_cost_micro(&app), 3 * 2_000_000);
    let sent = fake.requests().pop().unwrap();
    assert_eq!(form_text(&sent.raw, "model").as_deref(), Some("whisper-up"));
    assert_eq!(form_text(&sent.raw, "language").as_deref(), Some("en"));
    assert!(sent.raw.windows(audio.len()).any(|w| w == &audio[..]), "the file's bytes arrive unchanged");
    assert_eq!(
        String::from_utf8_lossy(&sent.raw).matches("timestamp_granularities[]").count(),
        2,
        "repeated parts kept"
    );

    // Text: no usage, so the WAV header's 2.5 s -> 3 seconds; the cost in headers.
    let rows = app.count("credit_transactions");
    let body =
        form(&[("file", Some("a.wav"), &audio), ("model", None, b"whisper"), ("response_format", None, b"text")]);
    let r = post_form(&app, &ann.token, &body);
    assert_eq!((r.status, r.text().as_str()), (200, "fake transcription"));
    assert_eq!(r.header("x-tollgate-cost-micro"), Some("6000000"));
    assert_eq!((last_cost_micro(&app), app.count("credit_transactions")), (6_000_000, rows + 1));

    // SRT of a compressed file: the last cue ends at 12.4 s -> 13 seconds.
    let mp3 = vec![0x49u8; 40_000];
    let body = form(&[("file", Some("a.mp3"), &mp3), ("model", None, b"whisper"), ("response_format", None, b"srt")]);
    let r = post_form(&app, &ann.token, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("--> 00:00:12,400"));
    assert_eq!(last_cost_micro(&app), 13 * 2_000_000);

    // A model that bills tokens: 12 audio tokens in, 34 out.
    fake.script(|s| s.transcription_seconds = None);
    let body = form(&[("file", Some("a.wav"), &audio), ("model", None, b"transcribe-4o")]);
    let r = post_form(&app, &ann.token, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(last_cost_micro(&app), 12 * 6000 + 34 * 10_000);
    assert_eq!(r.json()["tollgate"]["cost_micro"], 12 * 6000 + 34 * 10_000);
    assert_eq!(app.audit()["valid"], true);
}

#[test]
fn a_bad_form_is_refused_before_anything_is_held() {
    let (fake, app) = audio_app();
    let ann = app.user("ann");
    app.grant(&ann, 100);
    let audio = wav(1.0);
    let big = vec![b'x'; 64 * 1024 + 1];
    let at_limit = vec![b'x'; 64 * 1024];
    let ok = form(&[("file", Some("a.wav"), &audio), ("model", None, b"whisper"), ("prompt", None, &at_limit)]);
    assert_eq!(post_form(&app, &ann.token, &ok).status, 200, "a text part at the limit");
    let parts: Vec<(&str, Option<&str>, &[u8])> =
        std::iter::repeat_n(("language", None, &b"en"[..]), 31).chain([("file", Some("a.wav"), &audio[..])]).collect();
    let mut with_model = parts.clone();
    with_model[0] = ("model", None, b"whisper");
    assert_eq!(post_form(&app, &ann.token, &form(&with_model)).status, 200, "32 parts");
    with_model.push(("language", None, b"en"));
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            form(&[("file", Some("a.wav"), &audio), ("model", None, b"whisper"), ("prompt", None, &big)]),
            413,
            "payload_too_large",
        ),
        (form(&with_model), 400, "invalid_request"),
        (form(&[("model", None, b"whisper")]), 400, "invalid_request"),
        (form(&[("file", Some("a.wav"), &audio)]), 400, "invalid_request"),
        (form(&[("file", Some("a.wav"), &audio), ("model", None, b"tts")]), 400, "invalid_request"),
        (
            form(&[("file", Some("a.wav"), &audio), ("model", None, b"whisper"), ("stream", None, b"true")]),
            400,
            "unsupported_parameter",
        ),
        (b"--XyZ\r\nbroken".to_vec(), 400, "invalid_request"),
    ];
    let before = fake.count("/audio/transcriptions");
    let balance = app.balance(&ann);
    for (body, status, code) in cases {
        let r = post_form(&app, &ann.token, &body);
        assert_eq!((r.status, r.error_code().as_str()), (status, code), "{}", r.text());
    }
    let r = app.client.post("/v1/audio/transcriptions", &ann.token, json!({"model": "whisper"}));
    assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some("Content-Type")));
    assert_eq!(fake.count("/audio/transcriptions"), before, "nothing refused reached the provider");
    assert_eq!(app.balance(&ann), balance, "and nothing changed");
}

#[test]
fn moderations_are_free_unless_priced_and_pass_through() {
    let (fake, app) = audio_app();
    let ann = app.user("ann");
    app.grant(&ann, 5);
    let rows = app.count("credit_transactions");
    let body = json!({"model": "mod", "input": ["a", "b"]});
    let r = app.client.post("/v1/moderations", &ann.token, body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["results"][0]["flagged"], false);
    assert_eq!(fake.requests().pop().unwrap().body, json!({"model": "omni-moderation-latest", "input": ["a", "b"]}));
    assert_eq!(app.count("credit_transactions"), rows, "free: no ledger row");
    let r = app.client.post("/v1/moderations", &ann.token, json!({"model": "mod-paid", "input": "a"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["tollgate"]["cost"], 1);
    assert_eq!(app.balance(&ann)["balance"], 4);
    let models = app.client.get("/v1/models", &ann.token).json();
    let by_id = |id: &str| -> Value {
        models["data"].as_array().unwrap().iter().find(|m| m["id"] == id).cloned().unwrap_or(Value::Null)
    };
    for (id, kind, key, price) in [
        ("tts", "speech", "per_1m_characters", 15_000),
        ("whisper", "transcription", "per_audio_second", 2),
        ("mod-paid", "moderation", "per_request", 1),
    ] {
        let m = by_id(id);
        assert_eq!((m["kind"].as_str(), m["pricing"][key].as_i64()), (Some(kind), Some(price)), "{m}");
    }
}
