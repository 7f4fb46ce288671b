//! Google's Gemini API: a `google` provider behind `/v1/chat/completions`
//! (mapped both ways, thinking and cached content charged at their prices),
//! and Gemini's own `/v1beta/models/{model}:generateContent` passed through
//! whole for the google-genai SDK, with errors in Google's shape.

use crate::fake_provider::FakeProvider;
use crate::helpers::*;
use crate::pricing::priced_app;
use serde_json::{Value, json};
use tollgate::config::PriceConfig;

fn price() -> PriceConfig {
    PriceConfig { input_per_1m: 1000, cached_input_per_1m: Some(250), output_per_1m: 4000, ..PriceConfig::default() }
}

/// 1000 prompt tokens of which 300 cached; 10 answer and 20 thinking tokens.
const USAGE_MICRO: i64 = 700 * 1000 + 300 * 250 + 10 * 4000 + 20 * 4000;

fn gemini_app() -> (FakeProvider, TestApp) {
    let extra = json!({"cachedContentTokenCount": 300, "thoughtsTokenCount": 20});
    priced_app("google", (1000, 10), extra, "gemini", price(), |_, c| {
        // Gemini's base URL has no version (the adapter adds `/v1beta/...`).
        if let Some(p) = c.providers.get_mut("p") {
            p.base_url = p.base_url.as_ref().map(|b| b.trim_end_matches("/v1").to_owned());
        }
    })
}

fn last_cost_micro(app: &TestApp) -> i64 {
    app.sql_one("SELECT cost_micro FROM credit_transactions ORDER BY id DESC LIMIT 1", &[])
}

fn key_of(app: &TestApp, user: &TestUser) -> String {
    let r = app.client.create_key(&user.token, json!({"name": "genai"}));
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["key"].as_str().unwrap().to_owned()
}

fn post_goog(app: &TestApp, path: &str, key: &str, body: &Value) -> Resp {
    app.client.request("POST", path, None, &[("x-goog-api-key", key)], Some(body.to_string().as_bytes())).expect("POST")
}

#[test]
fn chat_completions_on_a_google_route_map_both_ways_and_charge_thinking_and_the_cache() {
    let (fake, app) = gemini_app();
    let ann = app.user("ann");
    app.grant(&ann, 100);
    let tools = json!([{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]);
    let mut messages = vec![
        json!({"role": "system", "content": "be brief"}),
        json!({"role": "user", "content": format!("Weather in Paris? {}", "x".repeat(6000))}),
    ];
    let r = app
        .client
        .chat(&ann.token, json!({"model": "gemini", "messages": messages, "tools": tools, "max_tokens": 100}));
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = fake.requests().pop().unwrap();
    assert_eq!(sent.path, "/v1beta/models/upstream:generateContent");
    assert_eq!(sent.body["systemInstruction"], json!({"parts": [{"text": "be brief"}]}));
    assert_eq!(sent.body["generationConfig"]["maxOutputTokens"], 100);
    assert_eq!(sent.body["tools"][0]["functionDeclarations"][0]["name"], "weather");
    let v = r.json();
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(
        (call["function"]["name"].as_str(), v["choices"][0]["finish_reason"].as_str()),
        (Some("weather"), Some("tool_calls"))
    );
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(v["usage"]["completion_tokens_details"]["reasoning_tokens"], 20, "{v}");
    assert_eq!(v["tollgate"]["cost_micro"], USAGE_MICRO);
    assert_eq!(last_cost_micro(&app), USAGE_MICRO);

    // The result goes back as a functionResponse named after the call.
    messages.push(v["choices"][0]["message"].clone());
    messages.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "21 C"}));
    for stream in [false, true] {
        let r = app.client.chat(
            &ann.token,
            json!({"model": "gemini", "messages": messages, "tools": tools, "max_tokens": 100,
            "stream": stream, "stream_options": {"include_usage": true}}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let sent = fake.requests().pop().unwrap();
        assert_eq!(
            sent.body["contents"][2]["parts"][0]["functionResponse"],
            json!({"name": "weather", "response": {"result": "21 C"}})
        );
        let text = if stream {
            r.text()
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .filter_map(|c| c.pointer("/choices/0/delta/content").and_then(Value::as_str).map(str::to_owned))
                .collect::<String>()
        } else {
            r.json()["choices"][0]["message"]["content"].as_str().unwrap().to_owned()
        };
        assert_eq!(text, "fake answer from the provider", "stream {stream}");
        assert_eq!(last_cost_micro(&app), USAGE_MICRO, "stream {stream}");
    }
    assert_eq!(app.audit()["valid"], true);
}

#[test]
fn generate_content_passes_the_clients_body_through_and_charges_its_usage() {
    let (fake, app) = gemini_app();
    let ann = app.user("ann");
    app.grant(&ann, 100);
    let key = key_of(&app, &ann);
    let body = json!({
        "contents": [{"role": "user", "parts": [{"text": "x".repeat(6000)}]}],
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "generationConfig": {"temperature": 0.2, "thinkingConfig": {"thinkingBudget": 64}, "responseMimeType": "text/plain"},
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]
    });
    let r = post_goog(&app, "/v1beta/models/gemini:generateContent", &key, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = fake.requests().pop().unwrap();
    assert_eq!(sent.path, "/v1beta/models/upstream:generateContent");
    let mut expected = body.clone();
    expected["generationConfig"]["maxOutputTokens"] = json!(4096);
    assert!(sent.body == expected, "every field as sent, the output bound added: {}", sent.body["generationConfig"]);
    assert!(sent.headers.get("x-goog-api-key").is_none_or(|k| k != &key), "the client's key stays here");
    let v = r.json();
    assert_eq!(v["candidates"][0]["content"]["parts"][0]["text"], "fake answer from the provider");
    assert!(v.get("model").is_none(), "nothing added but the cost: {v}");
    assert_eq!(v["usageMetadata"]["thoughtsTokenCount"], 20, "the usage as sent");
    assert_eq!(v["tollgate"]["cost_micro"], USAGE_MICRO);
    assert_eq!(last_cost_micro(&app), USAGE_MICRO);

    // The credential in ?key= works too (the SDK's REST fallback).
    let r = app
        .client
        .request(
            "POST",
            &format!("/v1beta/models/gemini:generateContent?key={key}"),
            None,
            &[],
            Some(body.to_string().as_bytes()),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    // Streamed: every chunk as sent, the cost on the one that finishes.
    let r = post_goog(&app, "/v1beta/models/gemini:streamGenerateContent?alt=sse", &key, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(fake.requests().pop().unwrap().path, "/v1beta/models/upstream:streamGenerateContent?alt=sse");
    let chunks: Vec<Value> =
        r.text().lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
    assert_eq!(chunks.len(), "fake answer from the provider".split(' ').count());
    let text: String =
        chunks.iter().filter_map(|c| c.pointer("/candidates/0/content/parts/0/text").and_then(Value::as_str)).collect();
    assert_eq!(text, "fake answer from the provider");
    assert_eq!(chunks.last().unwrap()["tollgate"]["cost_micro"], USAGE_MICRO);
    assert!(chunks[0].get("tollgate").is_none());
    assert_eq!(last_cost_micro(&app), USAGE_MICRO);

    // countTokens is free.
    let before = app.count("credit_transactions");
    let r = post_goog(&app, "/v1beta/models/gemini:countTokens", &key, &body);
    assert_eq!((r.status, r.json()), (200, json!({"totalTokens": 1000})));
    assert_eq!(app.count("credit_transactions"), before);
    assert_eq!(app.audit()["valid"], true);
}

#[test]
fn gemini_errors_come_back_in_googles_shape_and_change_nothing() {
    let (fake, app) = gemini_app();
    let shape = |r: &Resp, status: u16, name: &str, reason: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        let e = &r.json()["error"];
        assert_eq!((e["code"].as_u64(), e["status"].as_str()), (Some(u64::from(status)), Some(name)), "{e}");
        assert_eq!(e["details"][0]["reason"], reason, "{e}");
    };
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
    let url = "/v1beta/models/gemini:generateContent";
    let anon = app.client.request("POST", url, None, &[], Some(body.to_string().as_bytes())).unwrap();
    shape(&anon, 401, "UNAUTHENTICATED", "unauthorized");
    let broke = app.user("broke");
    let broke_key = key_of(&app, &broke);
    shape(&post_goog(&app, url, &broke_key, &body), 402, "FAILED_PRECONDITION", "insufficient_credits");
    let ann = app.user("ann");
    app.grant(&ann, 100);
    let key = key_of(&app, &ann);
    shape(&post_goog(&app, "/v1beta/models/nope:generateContent", &key, &body), 404, "NOT_FOUND", "model_not_found");
    shape(
        &post_goog(&app, "/v1beta/models/gemini:streamGenerateContent", &key, &body),
        400,
        "INVALID_ARGUMENT",
        "invalid_request",
    );
    shape(&post_goog(&app, url, &key, &json!({"contents": []})), 400, "INVALID_ARGUMENT", "invalid_request");
    let too_long = json!({"contents": body["contents"], "generationConfig": {"maxOutputTokens": 4097}});
    shape(&post_goog(&app, url, &key, &too_long), 400, "INVALID_ARGUMENT", "invalid_request");
    shape(&post_goog(&app, "/v1beta/models/gemini:embedContent", &key, &body), 404, "NOT_FOUND", "not_found");
    assert_eq!(fake.count("/v1beta"), 0, "no refused call reached the provider");
    assert_eq!(app.balance(&ann)["balance"], 100);
}
