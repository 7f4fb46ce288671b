//! The OpenAI-compatible endpoints through the ModelAdapter, against fake
//! providers that are real HTTP servers: exact metering, failover, errors,
//! timeouts, streaming, disconnects, the upstream pool.

use crate::fake_provider::FakeProvider;
use crate::helpers::*;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tollgate::config::{Config, ModelConfig, PriceConfig, ProviderConfig};

pub fn provider(kind: &str, base: &str, read_timeout_ms: u64) -> ProviderConfig {
    ProviderConfig {
        kind: kind.into(),
        base_url: Some(base.into()),
        api_key_env: None,
        connect_timeout_ms: 1000,
        read_timeout_ms,
        breaker_failures: 3,
        breaker_cool_down_ms: 30_000,
        breaker_callers: 2,
        breaker_window_ms: 60_000,
    }
}

pub fn chat_model(name: &str, routes: &[(&str, &str)]) -> ModelConfig {
    ModelConfig {
        max_output_tokens: Some(1000),
        ..model_config(
            name,
            "chat",
            routes,
            PriceConfig { input_per_1m: 800_000, output_per_1m: 2_000_000, ..PriceConfig::default() },
        )
    }
}

/// One OpenAI-compatible provider serving `qwen-plus` (0.8 credits per input
/// token, 2 per output token, so usage maps to visible sums).
fn app_with(fake: &FakeProvider, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let base = format!("{}/v1", fake.base);
    TestApp::spawn_with(move |c| {
        c.providers.insert("fake".into(), provider("openai", &base, 5_000));
        c.models.push(chat_model("qwen-plus", &[("fake", "Qwen/Qwen2.5-7B-Instruct")]));
        adjust(c);
    })
}

fn chat(app: &TestApp, token: &str, body: Value) -> Resp {
    app.client.chat(token, body)
}

fn hi(stream: bool) -> Value {
    json!({"model": "qwen-plus", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 100, "stream": stream,
           "stream_options": {"include_usage": true}})
}

fn active_holds(app: &TestApp) -> i64 {
    app.sql_one("SELECT count(*) FROM credit_holds WHERE status = 'active'", &[])
}

/// 12 prompt tokens x 0.8 + 34 completion x 2 = 9.6 + 68 = 77.6 credits
/// exactly; a first call charges 77 and carries 0.6 (`ledger::settle`).
const FAKE_COST: i64 = 77;
const FAKE_COST_MICRO: i64 = 77_600_000;

/// What `calls` such calls charge together: their exact sum, rounded once.
fn charged(calls: i64) -> i64 {
    calls * FAKE_COST_MICRO / 1_000_000
}

#[test]
fn a_chat_is_charged_exactly_its_reported_usage_and_logged() {
    let fake = FakeProvider::start();
    let app = app_with(&fake, |_| {});
    let ann = app.user("ann");
    app.grant(&ann, 10_000);
    let r = chat(&app, &ann.token, hi(false));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "qwen-plus");
    assert_eq!(v["choices"][0]["message"]["content"], "fake answer from the provider");
    assert_eq!(v["usage"], json!({"prompt_tokens": 12, "completion_tokens": 34, "total_tokens": 46}));
    assert_eq!(v["tollgate"]["cost"], FAKE_COST);
    let sent = &fake.requests()[0];
    assert_eq!(sent.body["model"], "Qwen/Qwen2.5-7B-Instruct", "the upstream name is sent, not the public one");
    assert_eq!(sent.body["max_tokens"], 100);
    assert_eq!(
        app.balance(&ann),
        json!({"object": "balance", "balance": 10_000 - FAKE_COST, "held": 0, "available": 10_000 - FAKE_COST, "next_expiry": null})
    );
    let tx = app.client.transactions(&ann.token).json();
    assert_eq!(tx["data"][0]["amount"], -FAKE_COST);
    assert_eq!(tx["data"][0]["id"], v["tollgate"]["transaction_id"]);
    let log = app.client.get("/v1/logs", &ann.token).json()["data"][0].clone();
    assert_eq!(log["action"], "ai_chat_completion");
    assert_eq!(log["details"]["cost"], FAKE_COST);
    assert_eq!(log["details"]["usage"]["completion_tokens"], 34);
    assert!(log["details"]["latency_ms"].is_u64());
    assert_eq!(active_holds(&app), 0);
}

pub fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).map(str::to_owned).collect()
}

#[test]
fn a_stream_is_charged_exactly_the_usage_in_its_final_chunk() {
    let fake = FakeProvider::start();
    let app = app_with(&fake, |_| {});
    let ann = app.user("ann");
    app.grant(&ann, 10_000);
    let r = chat(&app, &ann.token, hi(true));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("text/event-stream"));
    let data = sse_data(&r.text());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let text: String =
        chunks.iter().filter_map(|c| c.pointer("/choices/0/delta/content").and_then(Value::as_str)).collect();
    assert_eq!(text, "fake answer from the provider");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    let usage = chunks.iter().find_map(|c| c.get("usage")).expect("usage chunk, as include_usage asked");
    assert_eq!(usage["completion_tokens"], 34);
    assert_eq!(fake.requests()[0].body["stream_options"]["include_usage"], true);
    assert_eq!(app.balance(&ann)["balance"], 10_000 - FAKE_COST);
    let log = app.client.get("/v1/logs", &ann.token).json()["data"][0].clone();
    assert_eq!((log["details"]["cost"].as_i64(), log["details"]["stream"].as_bool()), (Some(FAKE_COST), Some(true)));
    assert_eq!(app.validate(&ann)["valid"], true);
}

#[test]
fn when_route_one_fails_route_two_answers_billed_once_and_the_failover_is_logged() {
    let down = FakeProvider::start();
    let up = FakeProvider::start();
    down.script(|s| s.fail = Some((503, "overloaded".into())));
    let (down_base, up_base) = (format!("{}/v1", down.base), format!("{}/v1", up.base));
    let app = TestApp::spawn_with(move |c| {
        c.providers.insert("primary".into(), provider("openai", &down_base, 5_000));
        c.providers.insert("backup".into(), provider("openai", &up_base, 5_000));
        c.models.push(chat_model("qwen-plus", &[("primary", "m1"), ("backup", "m2")]));
    });
    let ann = app.user("ann");
    app.grant(&ann, 10_000);
    let r = chat(&app, &ann.token, hi(false));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["message"]["content"], "fake answer from the provider");
    assert_eq!((down.count("/chat/completions"), up.count("/chat/completions")), (1, 1));
    assert_eq!(up.requests()[0].body["model"], "m2");
    let tx = app.client.transactions(&ann.token).json();
    let consumes = tx["data"].as_array().unwrap().iter().filter(|t| t["kind"] == "consume").count();
    assert_eq!(consumes, 1, "billed once");
    let logs = app.client.get("/v1/admin/logs?log_type=system", &app.admin).json().to_string();
    assert!(
        logs.contains("provider_call_failed") && logs.contains("primary") && logs.contains("\"status\":\"503\""),
        "{logs}"
    );
    assert!(logs.contains("provider_failover_succeeded"), "{logs}");
}

#[test]
fn a_bad_request_is_returned_not_retried_and_nothing_is_charged() {
    let first = FakeProvider::start();
    let second = FakeProvider::start();
    first.script(|s| s.fail = Some((400, "temperature must be at most 2".into())));
    let (a, b) = (format!("{}/v1", first.base), format!("{}/v1", second.base));
    let app = TestApp::spawn_with(move |c| {
        c.providers.insert("a".into(), provider("openai", &a, 5_000));
        c.providers.insert("b".into(), provider("openai", &b, 5_000));
        c.models.push(chat_model("qwen-plus", &[("a", "m"), ("b", "m")]));
    });
    let ann = app.user("ann");
    app.grant(&ann, 1_000);
    let r = chat(&app, &ann.token, hi(false));
    assert_eq!((r.status, r.error_code().as_str()), (400, "invalid_request"));
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("temperature"));
    assert_eq!(second.count("/chat"), 0, "a rejected request is not retried elsewhere");
    assert_eq!(app.balance(&ann)["balance"], 1_000);
    assert_eq!(active_holds(&app), 0);
}

#[test]
fn an_upstream_timeout_is_a_504_with_the_balance_unchanged_and_the_hold_released() {
    let fake = FakeProvider::start();
    fake.script(|s| s.latency_ms = 1_500);
    let base = format!("{}/v1", fake.base);
    let app = TestApp::spawn_with(move |c| {
        c.providers.insert("slow".into(), provider("openai", &base, 300));
        c.models.push(chat_model("qwen-plus", &[("slow", "m")]));
    });
    let ann = app.user("ann");
    app.grant(&ann, 1_000);
    let r = chat(&app, &ann.token, hi(false));
    assert_eq!((r.status, r.error_code().as_str()), (504, "upstream_timeout"), "{}", r.text());
    assert_eq!(
        app.balance(&ann),
        json!({"object": "balance", "balance": 1_000, "held": 0, "available": 1_000, "next_expiry": null})
    );
    let released: i64 = app.sql_one("SELECT count(*) FROM credit_holds WHERE status = 'released'", &[]);
    assert_eq!(released, 1);
}

#[test]
fn switching_a_models_provider_in_config_changes_nothing_for_the_client() {
    let fake = FakeProvider::start();
    let base = fake.base.clone();
    let openai_base = format!("{}/v1", fake.base);
    let via_openai = TestApp::spawn_with(move |c| {
        c.providers.insert("p".into(), provider("openai", &openai_base, 5_000));
        c.models.push(chat_model("qwen-plus", &[("p", "m")]));
    });
    let via_anthropic = TestApp::spawn_with(move |c| {
        c.providers.insert("p".into(), provider("anthropic", &base, 5_000));
        c.models.push(chat_model("qwen-plus", &[("p", "m")]));
    });
    let mut shapes = Vec::new();
    for app in [&via_openai, &via_anthropic] {
        let ann = app.user("ann");
        app.grant(&ann, 1_000);
        let body = json!({"model": "qwen-plus", "max_tokens": 100, "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]});
        let v = chat(app, &ann.token, body).json();
        shapes.push((
            v["choices"][0]["message"]["content"].clone(),
            v["usage"].clone(),
            v["tollgate"]["cost"].clone(),
            v["object"].clone(),
        ));
        let streamed = sse_data(&chat(app, &ann.token, hi(true)).text());
        assert_eq!(streamed.last().map(String::as_str), Some("[DONE]"));
        assert_eq!(app.balance(&ann)["balance"], 1_000 - charged(2), "both calls metered the same");
    }
    assert_eq!(shapes[0], shapes[1]);
    let anthropic_call =
        fake.requests().into_iter().find(|r| r.path == "/v1/messages").expect("anthropic wire format used");
    assert_eq!(anthropic_call.body["system"], "be brief");
    assert_eq!(anthropic_call.headers.get("anthropic-version").map(String::as_str), Some("2023-06-01"));
}

#[test]
fn a_request_over_the_cap_is_sent_with_a_bound_under_it_or_never_reaches_the_provider() {
    let fake = FakeProvider::start();
    let app = app_with(&fake, |c| c.limits.max_cost_per_request = 100);
    let ann = app.user("ann");
    app.grant(&ann, 10_000);
    // 1000 output tokens x 2 credits = 2000 > 100: the bound that fits is sent.
    let r = chat(
        &app,
        &ann.token,
        json!({"model": "qwen-plus", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = fake.requests()[0].body["max_tokens"].as_u64().unwrap();
    assert!((16..50).contains(&sent), "{sent} output tokens x 2 credits and the input fit in 100");
    // Not even 16 output tokens fit under a cap of 20: refused, nothing held or sent.
    let app = app_with(&fake, |c| c.limits.max_cost_per_request = 20);
    let ann = app.user("ann");
    app.grant(&ann, 10_000);
    let r = chat(
        &app,
        &ann.token,
        json!({"model": "qwen-plus", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!((r.status, r.error_code().as_str()), (402, "max_cost_exceeded"));
    assert_eq!(fake.requests().len(), 1);
    assert_eq!(app.count("credit_holds"), 0);
}

#[test]
fn bad_chat_requests_get_400s_naming_the_field_and_unknown_models_404() {
    let fake = FakeProvider::start();
    let app = app_with(&fake, |_| {});
    let ann = app.user("ann");
    app.grant(&ann, 1_000);
    for (body, param) in [
        (json!({"model": "qwen-plus", "messages": []}), "messages"),
        (json!({"model": "qwen-plus", "messages": [{"role": "wizard", "content": "x"}]}), "messages"),
        (
            json!({"model": "qwen-plus", "messages": [{"role": "user", "content": "x"}], "max_tokens": 5000}),
            "max_tokens",
        ),
        (json!({"model": "qwen-plus", "messages": [{"role": "user", "content": "x"}], "n": 0}), "n"),
        (json!({"model": "qwen-plus", "messages": [{"role": "user", "content": "x"}], "n": 17}), "n"),
        (
            json!({"model": "qwen-plus", "messages": [{"role": "user", "content": "x"}], "max_tokens": 5, "max_completion_tokens": 5}),
            "max_completion_tokens",
        ),
        (json!({"messages": [{"role": "user", "content": "x"}]}), "model"),
    ] {
        let r = chat(&app, &ann.token, body.clone());
        assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some(param)), "{body}: {}", r.text());
    }
    let r = chat(&app, &ann.token, json!({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}));
    assert_eq!((r.status, r.error_code().as_str()), (404, "model_not_found"));
    assert_eq!(fake.requests().len(), 0);
    assert_eq!(app.balance(&ann)["balance"], 1_000);
}

#[test]
fn a_client_that_disconnects_mid_stream_pays_its_input_bound_and_the_output_it_received() {
    let fake = FakeProvider::start();
    fake.script(|s| {
        s.text = "word ".repeat(60).trim().to_owned();
        s.stream_event_delay_ms = 20;
    });
    let app = app_with(&fake, |_| {});
    let ann = app.user("ann");
    app.grant(&ann, 10_000);
    let addr = app.client.base.trim_start_matches("http://").to_owned();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    let body = hi(true).to_string();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        ann.token,
        body.len()
    )
    .unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    drop(s);
    // The server notices at its next write and settles.
    let mut settled = false;
    for _ in 0..200 {
        if active_holds(&app) == 0 && app.count("credit_transactions") == 2 {
            settled = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(settled, "the stream's hold was settled after the disconnect");
    // The provider reported nothing: the input bound (the messages' bytes,
    // `[{"content":"hello","role":"user"}]`, 35, + template 8 per message +
    // 16 = 59 tokens x 0.8) and the output relayed, a token per byte x 2:
    // never nothing for output received, never the whole bound (248).
    let log = app.client.get("/v1/logs", &ann.token).json()["data"][0].clone();
    assert_eq!(log["details"]["outcome"], "client_disconnected");
    assert_eq!(log["details"]["usage"]["prompt_tokens"], 59);
    let relayed = log["details"]["usage"]["completion_tokens"].as_i64().unwrap();
    assert!(relayed > 0 && relayed < 100, "{relayed} bytes relayed");
    let cost_micro: i64 = app.sql_one("SELECT cost_micro FROM credit_transactions ORDER BY id DESC LIMIT 1", &[]);
    assert_eq!(cost_micro, 59 * 800_000 + relayed * 2_000_000);
    let charged = 10_000 - app.balance(&ann)["balance"].as_i64().unwrap();
    assert!(charged > 47 && charged < 248, "charged {charged}");
    assert_eq!(app.validate(&ann)["valid"], true);
}

#[test]
fn a_provider_that_breaks_mid_stream_charges_only_what_it_reported() {
    let fake = FakeProvider::start();
    fake.script(|s| s.stream_stall_after = Some(2));
    let base = format!("{}/v1", fake.base);
    let app = TestApp::spawn_with(move |c| {
        c.providers.insert("p".into(), provider("openai", &base, 500));
        c.models.push(chat_model("qwen-plus", &[("p", "m")]));
    });
    let ann = app.user("ann");
    app.grant(&ann, 1_000);
    let r = chat(&app, &ann.token, hi(true));
    assert_eq!(r.status, 200);
    let data = sse_data(&r.text());
    assert!(data.iter().any(|d| d.contains("upstream_error")), "{data:?}");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(app.balance(&ann)["balance"], 1_000, "nothing reported, nothing charged");
    assert_eq!(active_holds(&app), 0);
}

#[test]
fn images_are_charged_per_image_through_openai_and_dashscope_tasks() {
    let fake = FakeProvider::start();
    fake.script(|s| s.task_polls = 2);
    let (openai_base, ds_base) = (format!("{}/v1", fake.base), fake.base.clone());
    let app = TestApp::spawn_with(move |c| {
        c.providers.insert("oa".into(), provider("openai", &openai_base, 5_000));
        c.providers.insert("ds".into(), provider("dashscope", &ds_base, 5_000));
        for (name, p) in [("img-oa", "oa"), ("img-ds", "ds")] {
            c.models.push(model_config(
                name,
                "image",
                &[(p, "wanx")],
                PriceConfig { per_image: 25, ..PriceConfig::default() },
            ));
        }
    });
    let ann = app.user("ann");
    app.grant(&ann, 1_000);
    let r = app.client.images(&ann.token, json!({"model": "img-oa", "prompt": "a cat", "n": 3}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 3);
    assert_eq!(app.balance(&ann)["balance"], 1_000 - 75);
    let r = app.client.images(&ann.token, json!({"model": "img-ds", "prompt": "a dog"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["data"][0]["url"].as_str().unwrap().contains("task-"));
    assert!(fake.count("/api/v1/tasks/") >= 2, "polled the task");
    assert_eq!(app.balance(&ann)["balance"], 1_000 - 100);
    let r = app.client.images(&ann.token, json!({"model": "img-oa", "prompt": "x", "n": 11}));
    assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some("n")));
    let r = app.client.images(&ann.token, json!({"model": "qwen-nope", "prompt": "x"}));
    assert_eq!(r.status, 404);
}

#[test]
fn slow_provider_calls_past_the_upstream_pool_get_503_while_ledger_requests_still_answer() {
    let fake = FakeProvider::start();
    fake.script(|s| s.latency_ms = 1_000);
    let app = Arc::new(app_with(&fake, |c| c.server.upstream_workers = 1));
    let ann = app.user("ann");
    app.grant(&ann, 10_000);
    let done = Arc::new(AtomicBool::new(false));
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let (app, token, done) = (Arc::clone(&app), ann.token.clone(), Arc::clone(&done));
            std::thread::spawn(move || {
                let r = chat(&app, &token, hi(false));
                if r.status == 200 {
                    done.store(true, Ordering::SeqCst);
                }
                r
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let b = app.balance(&ann);
    // The provider takes 1 s per call; the balance came back long before.
    assert!(!done.load(Ordering::SeqCst), "a ledger request waited behind provider calls");
    assert!(b["held"].as_i64().unwrap() > 0, "a chat's hold is in place while it runs: {b}");
    let results: Vec<Resp> = calls.into_iter().map(|h| h.join().unwrap()).collect();
    let busy = results.iter().filter(|r| r.status == 503).count();
    let ok = results.iter().filter(|r| r.status == 200).count();
    assert!(busy >= 1 && ok >= 1, "statuses: {:?}", results.iter().map(|r| r.status).collect::<Vec<_>>());
    for r in results.iter().filter(|r| r.status == 503) {
        assert_eq!(r.error_code(), "server_busy");
    }
    assert_eq!(app.balance(&ann)["balance"], 10_000 - charged(ok as i64), "refused calls charged nothing");
}

#[test]
fn models_lists_each_model_with_its_pricing_and_the_dev_models_by_default() {
    let app = TestApp::spawn();
    let v = app.client.get("/v1/models", &app.admin).json();
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["dev-chat", "dev-image", "dev-embedding", "dev-video"]);
    assert_eq!(v["data"][0]["owned_by"], "tollgate-dev");
    assert_eq!(v["data"][0]["pricing"]["output_per_1m_tokens"], 2000);
    // And the dev provider is metered like any other.
    let r = chat(&app, &app.admin, json!({"model": "dev-chat", "messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(r.status, 402, "no credits yet: {}", r.text());
}

#[test]
fn one_users_retries_do_not_open_the_circuit_for_everyone_failures_of_several_do() {
    let fake = FakeProvider::start();
    fake.script(|s| s.fail = Some((500, "upstream down".into())));
    let app = app_with(&fake, |_| {});
    let (ann, bob, cat) = (app.user("ann"), app.user("bob"), app.user("cat"));
    for u in [&ann, &bob, &cat] {
        app.grant(u, 10_000);
    }
    // An SDK's three attempts of one call: three failures, one caller.
    for _ in 0..3 {
        assert_eq!(chat(&app, &ann.token, hi(false)).status, 502);
    }
    let n = fake.count("/chat/completions");
    assert_eq!(chat(&app, &bob.token, hi(false)).status, 502, "bob still reaches the provider");
    assert_eq!(fake.count("/chat/completions"), n + 1);
    // Failures now from two callers, most of the calls: the circuit opens.
    let r = chat(&app, &cat.token, hi(false));
    assert!(r.status == 502 && r.text().contains("cooling down"), "{}", r.text());
    assert_eq!(fake.count("/chat/completions"), n + 1, "cat's call waited out the cool-down instead");
    // A request the provider refuses as invalid never counts.
    let fake = FakeProvider::start();
    fake.script(|s| s.fail = Some((400, "bad request".into())));
    let app = app_with(&fake, |_| {});
    let users: Vec<TestUser> = (0..4).map(|i| app.user(&format!("u{i}"))).collect();
    for u in &users {
        app.grant(u, 10_000);
        assert_eq!(chat(&app, &u.token, hi(false)).status, 400);
    }
    assert_eq!(fake.count("/chat/completions"), 4, "every one reached the provider");
}
