//! Anthropic's Messages API (`/v1/messages`): passed through whole to an
//! anthropic provider (every field and header arrives, every event returns,
//! cache tokens charged), translated onto an OpenAI-compatible one, errors
//! in Anthropic's shape, and `count_tokens`.

use crate::fake_provider::FakeProvider;
use crate::helpers::*;
use crate::pricing::priced_app;
use serde_json::{Value, json};
use tollgate::config::PriceConfig;

const MESSAGES: &str = "/v1/messages";

fn cache_price() -> PriceConfig {
    PriceConfig {
        input_per_1m: 1000,
        cached_input_per_1m: Some(100),
        cache_write_per_1m: Some(1250),
        output_per_1m: 4000,
        ..PriceConfig::default()
    }
}

/// 200 plain input tokens, 800 read from the cache, 100 written to it, 10 out.
const CACHE_USAGE_MICRO: i64 = 200 * 1000 + 800 * 100 + 100 * 1250 + 10 * 4000;

fn cache_app(kind: &str, name: &str) -> (FakeProvider, TestApp) {
    let extra = json!({"cache_read_input_tokens": 800, "cache_creation_input_tokens": 100});
    priced_app(kind, (200, 10), extra, name, cache_price(), |_, c| {
        c.limits.rpm = 1000;
        c.limits.burst = 1000;
    })
}

/// An API key of `user`, as Anthropic's SDKs send it (`x-api-key`).
fn key_of(app: &TestApp, user: &TestUser, body: Value) -> String {
    let r = app.client.create_key(&user.token, body);
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["key"].as_str().expect("key").to_owned()
}

fn post_key(app: &TestApp, path: &str, key: &str, headers: &[(&str, &str)], body: &Value) -> Resp {
    let mut h = vec![("x-api-key", key)];
    h.extend_from_slice(headers);
    app.client.request("POST", path, None, &h, Some(body.to_string().as_bytes())).expect("POST")
}

/// What Claude Code sends: system blocks with cache markers, metadata,
/// sampling fields tollgate does not read, a long prompt.
fn claude_code_body(model: &str, stream: bool) -> Value {
    json!({
        "model": model, "max_tokens": 100, "stream": stream,
        "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "x".repeat(6000), "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}],
        "metadata": {"user_id": "user_abc"}, "stop_sequences": ["END"], "top_k": 5, "temperature": 0.5,
        "thinking": {"type": "enabled", "budget_tokens": 50}, "service_tier": "auto"
    })
}

/// (event name, data) of every event of an SSE body.
fn events(r: &Resp) -> Vec<(String, Value)> {
    let text = r.text();
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or("").to_owned();
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or("null");
            (name, serde_json::from_str(data).expect("JSON data"))
        })
        .collect()
}

fn last_cost_micro(app: &TestApp) -> i64 {
    app.sql_one("SELECT cost_micro FROM credit_transactions ORDER BY id DESC LIMIT 1", &[])
}

#[test]
fn a_native_call_passes_every_field_and_header_and_charges_the_cache() {
    let (fake, app) = cache_app("anthropic", "claude");
    let ann = app.user("ann");
    app.grant(&ann, 100);
    let key = key_of(&app, &ann, json!({"name": "claude code"}));
    let beta = "prompt-caching-2024-07-31,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14";
    let body = claude_code_body("claude", false);
    let r = post_key(
        &app,
        "/v1/messages?beta=true",
        &key,
        &[("anthropic-version", "2023-06-01"), ("anthropic-beta", beta)],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = fake.requests().pop().expect("the provider was called");
    assert_eq!(sent.path, "/v1/messages");
    let mut expected = body.as_object().unwrap().clone();
    expected.insert("model".into(), json!("upstream"));
    expected.remove("stream");
    assert_eq!(sent.body, Value::Object(expected), "every field arrives as sent, only the model replaced");
    assert_eq!(sent.headers.get("anthropic-beta").map(String::as_str), Some(beta));
    assert_eq!(sent.headers.get("anthropic-version").map(String::as_str), Some("2023-06-01"));
    assert!(!sent.headers.contains_key("authorization") && sent.headers.get("x-api-key") != Some(&key));

    let v = r.json();
    assert_eq!((v["type"].as_str(), v["model"].as_str()), (Some("message"), Some("claude")));
    assert_eq!(v["content"][0]["text"], "fake answer from the provider");
    assert_eq!(v["usage"]["cache_read_input_tokens"], 800, "the provider's usage as sent: {v}");
    assert_eq!(v["tollgate"]["cost_micro"], CACHE_USAGE_MICRO, "{v}");
    assert_eq!(last_cost_micro(&app), CACHE_USAGE_MICRO);

    // Claude Code's other credential: ANTHROPIC_AUTH_TOKEN as a bearer token.
    let r = app.client.request("POST", MESSAGES, Some(&key), &[], Some(body.to_string().as_bytes())).expect("POST");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(app.audit()["valid"], true);
}

#[test]
fn a_native_stream_returns_every_event_in_order_and_charges_the_reported_usage() {
    let (fake, app) = cache_app("anthropic", "claude");
    let ann = app.user("ann");
    app.grant(&ann, 100);
    let key = key_of(&app, &ann, json!({"name": "k"}));
    let r = post_key(&app, MESSAGES, &key, &[], &claude_code_body("claude", true));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(fake.requests().pop().unwrap().body["stream"], true);
    let evs = events(&r);
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    let words = "fake answer from the provider".split(' ').count();
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(std::iter::repeat_n("content_block_delta", words));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    let text: String = evs.iter().filter_map(|(_, d)| d.pointer("/delta/text").and_then(Value::as_str)).collect();
    assert_eq!(text, "fake answer from the provider");
    assert_eq!(evs[0].1["message"]["usage"]["cache_read_input_tokens"], 800, "message_start as sent");
    let delta = &evs[evs.len() - 2].1;
    assert_eq!(delta["tollgate"]["cost_micro"], CACHE_USAGE_MICRO, "{delta}");
    assert_eq!(last_cost_micro(&app), CACHE_USAGE_MICRO);
}

#[test]
fn errors_come_back_in_anthropics_shape_with_the_status_its_sdks_map() {
    let (fake, app) = priced_app("anthropic", (10, 5), json!({}), "claude", cache_price(), |_, c| {
        c.models.push(model_config("other", "chat", &[("p", "upstream")], cache_price()));
    });
    let shape = |r: &Resp, status: u16, kind: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        let v = r.json();
        assert_eq!((v["type"].as_str(), v["error"]["type"].as_str()), (Some("error"), Some(kind)), "{v}");
        assert!(!v["error"]["message"].as_str().unwrap_or("").is_empty());
    };
    let body = json!({"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let anon = app.client.request("POST", MESSAGES, None, &[], Some(body.to_string().as_bytes())).unwrap();
    shape(&anon, 401, "authentication_error");
    shape(&post_key(&app, MESSAGES, "tg_not_a_key", &[], &body), 401, "authentication_error");

    let broke = app.user("broke");
    let broke_key = key_of(&app, &broke, json!({"name": "k"}));
    shape(&post_key(&app, MESSAGES, &broke_key, &[], &body), 402, "billing_error");

    let ann = app.user("ann");
    app.grant(&ann, 100);
    let other = key_of(&app, &ann, json!({"name": "k", "models": ["other"]}));
    shape(&post_key(&app, MESSAGES, &other, &[], &body), 403, "permission_error");

    let bob = app.user("bob");
    app.grant(&bob, 100);
    // Two requests a minute: the third is a 429.
    let key = key_of(&app, &bob, json!({"name": "k", "rpm": 2}));
    let mut no_max = body.clone();
    no_max.as_object_mut().unwrap().remove("max_tokens");
    let r = post_key(&app, MESSAGES, &key, &[], &no_max);
    shape(&r, 400, "invalid_request_error");
    assert_eq!(r.json()["error"]["code"], "invalid_request");
    shape(
        &post_key(&app, MESSAGES, &key, &[], &json!({"model": "nope", "max_tokens": 1, "messages": []})),
        404,
        "not_found_error",
    );
    let r = post_key(&app, MESSAGES, &key, &[], &body);
    shape(&r, 429, "rate_limit_error");
    assert!(r.header("retry-after").is_some(), "the SDKs wait as told");
    assert_eq!(fake.count("/v1/messages"), 0, "no refused call reached the provider");
    assert_eq!(app.balance(&bob)["balance"], 100, "no refusal changed anything");
}

#[test]
fn count_tokens_is_free_passed_through_or_estimated() {
    let (fake, app) = cache_app("anthropic", "claude");
    let ann = app.user("ann");
    app.grant(&ann, 10);
    let key = key_of(&app, &ann, json!({"name": "k"}));
    let body = json!({"model": "claude", "messages": [{"role": "user", "content": "how many tokens?"}], "system": "s"});
    let r = post_key(
        &app,
        "/v1/messages/count_tokens?beta=true",
        &key,
        &[("anthropic-beta", "token-counting-2024-11-01")],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"input_tokens": 200}), "the provider's answer as sent");
    let sent = fake.requests().pop().unwrap();
    assert_eq!(sent.body["system"], "s");
    assert_eq!(sent.headers.get("anthropic-beta").map(String::as_str), Some("token-counting-2024-11-01"));
    assert_eq!(app.balance(&ann)["balance"], 10);
    assert_eq!(app.count("credit_transactions"), 1, "the grant only");

    let (_fake, app) = cache_app("openai", "gpt");
    let ann = app.user("ann");
    let key = key_of(&app, &ann, json!({"name": "k"}));
    let body = json!({"model": "gpt", "messages": [{"role": "user", "content": "y".repeat(400)}]});
    let r = post_key(&app, "/v1/messages/count_tokens", &key, &[], &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let n = r.json()["input_tokens"].as_u64().unwrap();
    assert!((100..=130).contains(&n), "about a token per four bytes: {n}");
    assert_eq!(r.json()["tollgate"]["estimated"], true);
}

/// A weather tool, in each API's shape.
fn tool_anthropic() -> Value {
    json!({"name": "weather", "description": "the weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}})
}

fn tool_openai() -> Value {
    json!({"type": "function", "function": {"name": "weather", "description": "the weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}})
}

/// The text and tool calls (name, input) of a chat answer or a Messages
/// answer, streamed or not, in one comparable form.
fn content_of(r: &Resp, messages: bool, stream: bool) -> (String, Vec<(String, Value)>) {
    assert_eq!(r.status, 200, "{}", r.text());
    let mut text = String::new();
    let mut calls: Vec<(String, String)> = Vec::new();
    if !stream {
        let v = r.json();
        if messages {
            for b in v["content"].as_array().unwrap() {
                match b["type"].as_str() {
                    Some("text") => text.push_str(b["text"].as_str().unwrap()),
                    _ => calls.push((b["name"].as_str().unwrap().into(), b["input"].to_string())),
                }
            }
        } else {
            let m = &v["choices"][0]["message"];
            text.push_str(m["content"].as_str().unwrap_or(""));
            for c in m["tool_calls"].as_array().into_iter().flatten() {
                calls.push((
                    c["function"]["name"].as_str().unwrap().into(),
                    c["function"]["arguments"].as_str().unwrap().into(),
                ));
            }
        }
    } else if messages {
        for (_, d) in events(r) {
            if d["type"] == "content_block_start" && d["content_block"]["type"] == "tool_use" {
                calls.push((d["content_block"]["name"].as_str().unwrap().into(), String::new()));
            }
            if let Some(t) = d.pointer("/delta/text").and_then(Value::as_str) {
                text.push_str(t);
            }
            if let Some(p) = d.pointer("/delta/partial_json").and_then(Value::as_str) {
                calls.last_mut().unwrap().1.push_str(p);
            }
        }
    } else {
        for line in r.text().lines().filter_map(|l| l.strip_prefix("data: ")).filter(|d| *d != "[DONE]") {
            let d: Value = serde_json::from_str(line).unwrap();
            let delta = &d["choices"][0]["delta"];
            text.push_str(delta["content"].as_str().unwrap_or(""));
            for c in delta["tool_calls"].as_array().into_iter().flatten() {
                if let Some(name) = c["function"]["name"].as_str() {
                    calls.push((name.into(), String::new()));
                }
                calls.last_mut().unwrap().1.push_str(c["function"]["arguments"].as_str().unwrap_or(""));
            }
        }
    }
    let calls = calls.into_iter().map(|(n, args)| (n, serde_json::from_str(&args).unwrap_or(Value::Null))).collect();
    (text, calls)
}

#[test]
fn messages_on_an_openai_route_give_the_chat_apis_content_over_three_turns() {
    let (fake, app) = cache_app("openai", "gpt");
    let ann = app.user("ann");
    app.grant(&ann, 1000);
    let key = key_of(&app, &ann, json!({"name": "k"}));
    let call_reply = json!({"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Checking.",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            "finish_reason": "tool_calls"}]});
    let call_chunks = vec![
        json!({"id": "c1", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Checking."}, "finish_reason": null}]}),
        json!({"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":"}}]}, "finish_reason": null}]}),
        json!({"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}, "finish_reason": null}]}),
        json!({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
    ];
    // The same conversation in both shapes, a turn at a time.
    let mut chat_msgs =
        vec![json!({"role": "system", "content": "be brief"}), json!({"role": "user", "content": "Weather in Paris?"})];
    let mut anth_msgs = vec![json!({"role": "user", "content": "Weather in Paris?"})];
    for turn in 0..3 {
        let tool_turn = turn == 0;
        fake.script(|s| {
            s.chat_reply = tool_turn.then(|| call_reply.clone());
            s.chat_chunks = tool_turn.then(|| call_chunks.clone());
            s.text = format!("answer {turn}");
        });
        for stream in [false, true] {
            let chat = app.client.chat(
                &ann.token,
                json!({"model": "gpt", "messages": chat_msgs, "tools": [tool_openai()],
                "max_tokens": 100, "stream": stream}),
            );
            let msgs = post_key(
                &app,
                MESSAGES,
                &key,
                &[],
                &json!({"model": "gpt", "system": "be brief", "messages": anth_msgs,
                "tools": [tool_anthropic()], "max_tokens": 100, "stream": stream}),
            );
            let (a, b) = (content_of(&chat, false, stream), content_of(&msgs, true, stream));
            assert_eq!(a, b, "turn {turn}, stream {stream}");
            if stream {
                let evs = events(&msgs);
                let delta = &evs.iter().find(|(n, _)| n == "message_delta").expect("a message_delta").1;
                assert!(delta["tollgate"]["cost_micro"].is_i64(), "the final delta carries the cost: {delta}");
            }
            if tool_turn {
                assert_eq!(b.1, vec![("weather".to_owned(), json!({"city": "Paris"}))]);
                if !stream {
                    assert_eq!(msgs.json()["stop_reason"], "tool_use");
                }
            } else {
                assert_eq!(b.0, format!("answer {turn}"));
            }
            // What the provider got from the Messages call is the chat call's body.
            let reqs = fake.requests();
            let (from_chat, from_msgs) = (&reqs[reqs.len() - 2].body, &reqs[reqs.len() - 1].body);
            assert_eq!(from_msgs["messages"], from_chat["messages"], "turn {turn}");
            assert_eq!(from_msgs["tools"], from_chat["tools"]);
        }
        match turn {
            0 => {
                chat_msgs.push(json!({"role": "assistant", "content": "Checking.", "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]}));
                chat_msgs.push(json!({"role": "tool", "tool_call_id": "call_1", "content": "21 C"}));
                anth_msgs.push(json!({"role": "assistant", "content": [{"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}}]}));
                anth_msgs.push(json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "21 C"}]}));
            }
            _ => {
                chat_msgs.push(json!({"role": "assistant", "content": format!("answer {turn}")}));
                chat_msgs.push(json!({"role": "user", "content": "and tomorrow?"}));
                anth_msgs.push(json!({"role": "assistant", "content": format!("answer {turn}")}));
                anth_msgs.push(json!({"role": "user", "content": "and tomorrow?"}));
            }
        }
    }
    // A field with no chat counterpart is refused, never dropped.
    let r = post_key(
        &app,
        MESSAGES,
        &key,
        &[],
        &json!({"model": "gpt", "max_tokens": 10, "messages": anth_msgs,
        "thinking": {"type": "enabled", "budget_tokens": 100}}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert_eq!(r.json()["error"]["code"], "unsupported_parameter");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("thinking"));
    assert_eq!(app.audit()["valid"], true);
}

/// The venv `scripts/test` installs the official SDKs into
/// (`scripts/sdk_check/requirements.txt`, pinned).
pub(crate) fn sdk_python() -> Option<std::path::PathBuf> {
    let py = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sdk-check-venv/bin/python");
    py.exists().then_some(py)
}

/// A child process killed when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_official_openai_anthropic_and_google_sdks_run_unchanged_against_tollgate() {
    let Some(python) = sdk_python() else {
        assert!(std::env::var_os("CI").is_none(), "no SDK venv under CI: run scripts/test, which installs it");
        eprintln!("skipped: the official SDKs (scripts/test installs them into target/sdk-check-venv)");
        return;
    };
    let scripts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sdk_check");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _upstream = Child(
        std::process::Command::new(&python)
            .arg(scripts.join("fake_upstream.py"))
            .arg(port.to_string())
            .spawn()
            .expect("start the fake upstream"),
    );
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let million = |cached: Option<i64>| PriceConfig {
        input_per_1m: 1_000_000,
        output_per_1m: 1_000_000,
        cached_input_per_1m: cached,
        ..PriceConfig::default()
    };
    let app = TestApp::spawn_with(|c| {
        c.providers.insert("up".into(), crate::ai::provider("openai", &format!("{base}/v1"), 5_000));
        c.providers.insert("claude".into(), crate::ai::provider("anthropic", &base, 5_000));
        c.providers.insert("gem".into(), crate::ai::provider("google", &base, 5_000));
        for (name, kind, provider, upstream, cached) in [
            ("gpt", "chat", "up", "gpt-up", None),
            ("claude", "chat", "claude", "claude-up", Some(100_000)),
            ("gemini", "chat", "gem", "gemini-up", None),
            ("embed", "embedding", "up", "embed-up", None),
        ] {
            let mut m = model_config(name, kind, &[(provider, upstream)], million(cached));
            m.max_output_tokens = (kind == "chat").then_some(100);
            c.models.push(m);
        }
        let audio = PriceConfig { per_1m_characters: 1_000_000, per_audio_second: 1, ..PriceConfig::default() };
        for (name, kind, upstream) in
            [("tts", "speech", "tts-up"), ("whisper", "transcription", "whisper-up"), ("mod", "moderation", "mod-up")]
        {
            c.models.push(model_config(name, kind, &[("up", upstream)], audio.clone()));
        }
        let image = PriceConfig { per_image: 3, ..PriceConfig::default() };
        c.models.push(model_config("image", "image", &[("up", "gpt-image-1")], image));
    });
    let funded = app.user("sdk");
    app.grant(&funded, 100_000);
    let key = key_of(&app, &funded, json!({"name": "sdk"}));
    let broke = key_of(&app, &app.user("broke"), json!({"name": "sdk"}));
    let slow = app.user("slow");
    app.grant(&slow, 100_000);
    let slow = key_of(&app, &slow, json!({"name": "sdk", "rpm": 2}));
    let capped_py = app.user("capped-py");
    app.grant(&capped_py, 100_000);
    let capped_py = key_of(&app, &capped_py, json!({"name": "sdk", "daily_spend_limit": 1}));
    for (script, args) in [
        ("check.py", vec![key.clone(), broke.clone(), capped_py]),
        ("anthropic_check.py", vec![key.clone(), broke.clone(), slow]),
        ("genai_check.py", vec![key, broke]),
    ] {
        let out = std::process::Command::new(&python)
            .arg(scripts.join(script))
            .arg(&app.client.base)
            .args(args)
            .output()
            .expect("run the SDK check");
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && said.contains(" 0 failed"), "{script}:\n{said}");
    }
    // The official Node SDK, pinned in scripts/sdk_check/node.
    let node_sdk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sdk-check-node");
    if node_sdk.join("node_modules/openai").exists() {
        let capped = app.user("capped");
        app.grant(&capped, 100_000);
        let capped = key_of(&app, &capped, json!({"name": "sdk", "daily_spend_limit": 1}));
        let node_user = app.user("node");
        app.grant(&node_user, 100_000);
        let funded = key_of(&app, &node_user, json!({"name": "sdk"}));
        let broke = key_of(&app, &app.user("broke-node"), json!({"name": "sdk"}));
        // ESM finds `openai` beside the script: it runs from the install.
        std::fs::copy(scripts.join("node/check.mjs"), node_sdk.join("check.mjs")).unwrap();
        let out = std::process::Command::new("node")
            .arg(node_sdk.join("check.mjs"))
            .args([&app.client.base, &funded, &broke, &capped])
            .output()
            .expect("run the Node SDK check");
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && said.contains("4 passed, 0 failed"), "check.mjs:\n{said}");
    } else {
        assert!(std::env::var_os("CI").is_none(), "no Node SDK under CI: run scripts/test, which installs it");
        eprintln!("skipped: the official Node SDK (scripts/test installs it into target/sdk-check-node)");
    }
    assert_eq!(app.audit()["valid"], true);
}

#[test]
fn concurrent_messages_plain_and_streamed_charge_exactly_their_total() {
    let (_fake, app) = cache_app("anthropic", "claude");
    let ann = app.user("ann");
    app.grant(&ann, 1000);
    let key = key_of(&app, &ann, json!({"name": "k"}));
    let calls = 40;
    let handles: Vec<_> = (0..calls)
        .map(|i| {
            let (client, key) = (app.client.clone(), key.clone());
            std::thread::spawn(move || {
                let body = claude_code_body("claude", i % 2 == 0).to_string();
                let r = client.request("POST", MESSAGES, None, &[("x-api-key", &key)], Some(body.as_bytes())).unwrap();
                assert_eq!(r.status, 200, "{}", r.text());
                // A stream is read to its end, so it settles as completed.
                r.text()
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a call thread");
    }
    // 40 calls of 0.445 credits: 17.8 credits, 17 whole charged, 0.8 carried.
    let total: i64 =
        app.sql_one("SELECT CAST(sum(cost_micro) AS BIGINT) FROM credit_transactions WHERE kind = 'consume'", &[]);
    assert_eq!(total, calls * CACHE_USAGE_MICRO);
    assert_eq!(app.balance(&ann)["balance"], 1000 - 17);
    let active: i64 = app.sql_one("SELECT count(*) FROM credit_holds WHERE status = 'active'", &[]);
    assert_eq!(active, 0, "no hold leaked");
    assert_eq!(app.audit()["valid"], true);
}
