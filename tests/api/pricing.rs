//! Charges that match the provider's bill: each usage shape a provider
//! sends (OpenAI's cached and reasoning details, Anthropic's cache reads and
//! writes), plain and streamed, is charged to the millionth at its
//! component's price, and the upstream usage reaches the client.

use crate::ai::provider;
use crate::fake_provider::FakeProvider;
use crate::helpers::*;
use serde_json::{Value, json};
use tollgate::config::{Config, ModelConfig, PriceConfig};

/// A fake provider of `kind` reporting `tokens` (prompt, completion) and the
/// usage fields `extra`, and an app whose one chat model `name` costs
/// `price` there; `more` adjusts the model and the config.
pub(crate) fn priced_app(
    kind: &str,
    tokens: (u64, u64),
    extra: Value,
    name: &str,
    price: PriceConfig,
    more: impl FnOnce(&mut ModelConfig, &mut Config),
) -> (FakeProvider, TestApp) {
    let fake = FakeProvider::start();
    fake.script(|s| {
        (s.prompt_tokens, s.completion_tokens) = tokens;
        s.usage_extra = extra;
    });
    // Anthropic's base URL has no `/v1` (the adapter adds `/v1/messages`).
    let base = if kind == "anthropic" { fake.base.clone() } else { format!("{}/v1", fake.base) };
    let app = TestApp::spawn_with(|c| {
        c.providers.insert("p".into(), provider(kind, &base, 5_000));
        let mut m = model_config(name, "chat", &[("p", "upstream")], price);
        more(&mut m, c);
        c.models.push(m);
    });
    (fake, app)
}

/// The last ledger row's exact cost, in millionths of a credit.
fn last_cost_micro(app: &TestApp) -> i64 {
    app.sql_one("SELECT cost_micro FROM credit_transactions ORDER BY id DESC LIMIT 1", &[])
}

fn capped_logs(app: &TestApp) -> i64 {
    app.count_where("logs", "action = 'settle_capped'")
}

/// A prompt large enough that the hold covers the usage the fake reports
/// (the bound counts the request's bytes), as a real prompt would.
fn long_chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "x".repeat(6000)}], "max_tokens": 100,
           "stream": stream, "stream_options": {"include_usage": true}})
}

/// The part of a chat answer that carries `usage` (and `tollgate`): the
/// answer, or the streamed chunk that carries it.
fn usage_of(r: &Resp, stream: bool) -> Value {
    if !stream {
        return r.json();
    }
    r.text()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| v.get("usage").is_some_and(|u| !u.is_null()))
        .expect("a chunk with usage")
}

/// `tollgate.cost_micro` is the expected cost and the breakdown adds up to it.
fn assert_cost(answer: &Value, expected: i64) {
    let t = &answer["tollgate"];
    assert_eq!(t["cost_micro"], expected, "{t}");
    let parts: i64 = t["breakdown"].as_array().unwrap().iter().map(|c| c["micro"].as_i64().unwrap()).sum();
    assert_eq!(parts, expected, "{t}");
}

#[test]
fn openai_cached_and_reasoning_tokens_are_charged_at_their_prices() {
    let extra = json!({"prompt_tokens_details": {"cached_tokens": 800, "audio_tokens": 0},
                       "completion_tokens_details": {"reasoning_tokens": 4}});
    let price = PriceConfig {
        input_per_1m: 1000,
        cached_input_per_1m: Some(100),
        output_per_1m: 4000,
        reasoning_per_1m: Some(8000),
        ..PriceConfig::default()
    };
    let (_fake, app) = priced_app("openai", (1000, 10), extra, "cached-chat", price, |m, _| {
        // What the provider bills the operator: half the list input price.
        m.provider_cost = Some(PriceConfig {
            input_per_1m: 500,
            cached_input_per_1m: Some(50),
            output_per_1m: 2000,
            ..PriceConfig::default()
        });
    });
    let ann = app.user("ann");
    app.grant(&ann, 100);
    // 200 uncached at 1000, 800 cached at 100, 6 output at 4000, 4 reasoning at 8000.
    let expected = 200 * 1000 + 800 * 100 + 6 * 4000 + 4 * 8000;
    let mut last_detail = Value::Null;
    for stream in [false, true] {
        let r = app.client.chat(&ann.token, long_chat("cached-chat", stream));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(last_cost_micro(&app), expected, "stream: {stream}");
        let answer = usage_of(&r, stream);
        assert_cost(&answer, expected);
        last_detail = answer["tollgate"].clone();
        let usage = &answer["usage"];
        assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 800, "the upstream usage as sent: {usage}");
        assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 4);
    }
    assert_eq!(capped_logs(&app), 0, "the hold covered every call");
    assert_eq!(app.audit()["valid"], true);

    // The ledger row keeps the components; the aggregate counts them.
    let rows = app.client.transactions(&ann.token).json();
    let row = &rows["data"][0];
    assert_eq!(row["components"]["cost_micro"], expected, "{row}");
    assert_eq!(row["components"], last_detail, "the row keeps what the streamed answer showed");
    let mine = app.client.get("/v1/usage?group_by=model", &ann.token).json();
    let m = &mine["data"][0];
    assert_eq!(
        (m["input_tokens"].as_i64(), m["cached_input_tokens"].as_i64(), m["reasoning_tokens"].as_i64()),
        (Some(2000), Some(1600), Some(8)),
        "{m}"
    );
    assert!(m.get("provider_cost_micro").is_none(), "a user never sees the operator's cost: {m}");
    let admin = app.client.get("/v1/admin/usage?group_by=model", &app.admin).json();
    let a = &admin["data"][0];
    // 200 at 500 + 800 at 50 + 10 output at 2000 (reasoning at output), twice.
    let provider = 2 * (200 * 500 + 800 * 50 + 10 * 2000);
    assert_eq!(a["provider_cost_micro"], provider, "{a}");
    assert_eq!(a["margin_micro"], a["cost"].as_i64().unwrap() * 1_000_000 - provider);
}

#[test]
fn anthropic_cache_reads_and_writes_are_charged_plain_and_streamed() {
    let extra = json!({"cache_read_input_tokens": 1000, "cache_creation_input_tokens": 300,
                       "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 100}});
    let price = PriceConfig {
        input_per_1m: 3000,
        output_per_1m: 15000,
        cached_input_per_1m: Some(300),
        cache_write_per_1m: Some(3750),
        cache_write_1h_per_1m: Some(6000),
        ..PriceConfig::default()
    };
    let (_fake, app) = priced_app("anthropic", (50, 20), extra, "claude", price, |_, _| {});
    let ann = app.user("ann");
    app.grant(&ann, 100);
    let expected = 50 * 3000 + 1000 * 300 + 200 * 3750 + 100 * 6000 + 20 * 15000;
    for stream in [false, true] {
        let r = app.client.chat(&ann.token, long_chat("claude", stream));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(last_cost_micro(&app), expected, "stream: {stream}");
        let answer = usage_of(&r, stream);
        assert_cost(&answer, expected);
        let usage = &answer["usage"];
        assert_eq!(usage["prompt_tokens"], 1350, "OpenAI's meaning: every input token, the cache's too: {usage}");
        assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 1000);
        assert_eq!(usage["prompt_tokens_details"]["cache_write_tokens"], 300);
    }
    assert_eq!(capped_logs(&app), 0);
    assert_eq!(app.audit()["valid"], true);
}

/// A provider reporting more than the bound allowed: the settle charges the
/// hold, says so in a warn log with both figures, and counts what went
/// uncharged.
#[test]
fn a_cost_past_its_hold_is_capped_logged_and_counted() {
    let price = PriceConfig { input_per_1m: 1_000_000, output_per_1m: 1_000_000, ..PriceConfig::default() };
    let (_fake, app) = priced_app("openai", (5_000_000, 1), Value::Null, "dear", price, |_, c| {
        c.limits.max_cost_per_request = 0;
    });
    let ann = app.user("ann");
    app.grant(&ann, 10_000);
    let r = app
        .client
        .chat(&ann.token, json!({"model": "dear", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}));
    assert_eq!(r.status, 200, "{}", r.text());
    let charged = r.json()["tollgate"]["cost"].as_i64().unwrap();
    assert!(charged < 5_000_001, "capped at the hold: {charged}");
    let details: String =
        app.sql_one("SELECT details FROM logs WHERE action = 'settle_capped' AND level = 'warn'", &[]);
    let d: Value = serde_json::from_str(&details).unwrap();
    assert_eq!(d["cost_micro"], 5_000_001_000_000_i64, "{d}");
    assert_eq!(d["held"], charged);
    assert_eq!(d["uncharged_micro"], 5_000_001_000_000_i64 - charged * 1_000_000);
    let metrics = app.client.request("GET", "/metrics", None, &[], None).unwrap().text();
    let line = metrics.lines().find(|l| l.starts_with("tollgate_settle_capped_credits_total")).expect("the metric");
    let uncharged: f64 = line.split_whitespace().last().unwrap().parse().unwrap();
    assert!(uncharged >= (5_000_001 - charged) as f64, "{line}");
    assert_eq!(app.audit()["valid"], true);
}

/// A price group multiplies every price of its users' calls, exactly: each
/// component at its list cost times the factor (rounded up to the
/// millionth), the factor on the ledger row, the audit recomputing it.
#[test]
fn a_price_group_multiplies_every_component_and_the_row_says_by_what() {
    let price = PriceConfig {
        input_per_1m: 1001,
        cached_input_per_1m: Some(101),
        output_per_1m: 4000,
        ..PriceConfig::default()
    };
    let extra = json!({"prompt_tokens_details": {"cached_tokens": 800}});
    let (_fake, app) = priced_app("openai", (1000, 10), extra, "cached-chat", price, |_, c| {
        c.pricing.groups.insert("vip".into(), 0.8);
    });
    let ann = app.user("ann");
    app.grant(&ann, 100);
    let patch = |body: Value| {
        app.client
            .request(
                "PATCH",
                &format!("/v1/admin/users/{}", ann.id),
                Some(&app.admin),
                &[],
                Some(body.to_string().as_bytes()),
            )
            .unwrap()
    };
    let r = patch(json!({"price_group": "gold"}));
    assert_eq!((r.status, r.error_code()), (400, "invalid_request".to_owned()), "{}", r.text());
    assert!(r.text().contains("vip"), "the refusal names the groups: {}", r.text());
    let r = patch(json!({"price_group": "vip"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["price_group"], "vip", "{}", r.text());
    assert_eq!(app.client.me(&ann.token).json()["price_group"], "vip");

    let r = app.client.chat(&ann.token, long_chat("cached-chat", false));
    assert_eq!(r.status, 200, "{}", r.text());
    // 200 x 1001 x 0.8 = 160,160; 800 x 101 x 0.8 = 64,640; 10 x 4000 x 0.8 = 32,000.
    let expected = 160_160 + 64_640 + 32_000;
    assert_cost(&r.json(), expected);
    assert_eq!(r.json()["tollgate"]["multiplier_micro"], 800_000);
    assert_eq!(last_cost_micro(&app), expected);
    let row = &app.client.transactions(&ann.token).json()["data"][0];
    assert_eq!(row["components"]["multiplier_micro"], 800_000, "{row}");
    assert_eq!(app.audit()["valid"], true);

    // Back to list prices.
    assert_eq!(patch(json!({"price_group": null})).status, 200);
    assert!(app.client.me(&ann.token).json().get("price_group").is_none());
    let r = app.client.chat(&ann.token, long_chat("cached-chat", false));
    assert_cost(&r.json(), 200 * 1001 + 800 * 101 + 10 * 4000);
    assert!(r.json()["tollgate"].get("multiplier_micro").is_none());
}

/// Images are priced by size and quality (`size/quality`, then `size`,
/// then `per_image`), and the answer says at what.
#[test]
fn images_are_priced_by_size_and_quality() {
    let fake = FakeProvider::start();
    let base = format!("{}/v1", fake.base);
    let app = TestApp::spawn_with(move |c| {
        c.providers.insert("oa".into(), provider("openai", &base, 5_000));
        let mut price = PriceConfig { per_image: 10, ..PriceConfig::default() };
        price.per_image_by.insert("1024x1024".into(), 4);
        price.per_image_by.insert("1024x1536/high".into(), 25);
        c.models.push(model_config("img", "image", &[("oa", "gpt-image-1")], price));
    });
    let ann = app.user("ann");
    app.grant(&ann, 1_000);
    for (size, quality, n, each) in [
        ("1024x1536", Some("high"), 2, 25),
        ("1024x1536", Some("low"), 1, 10),
        ("1024x1024", None, 3, 4),
        ("512x512", None, 1, 10),
    ] {
        let mut body = json!({"model": "img", "prompt": "a cat", "n": n, "size": size});
        if let Some(q) = quality {
            body["quality"] = json!(q);
        }
        let r = app.client.images(&ann.token, body);
        assert_eq!(r.status, 200, "{}", r.text());
        let t = &r.json()["tollgate"];
        assert_eq!(t["cost"], n * each, "{size} {quality:?}: {t}");
        assert_eq!(t["breakdown"][0]["price"], each);
    }
    assert_eq!(app.audit()["valid"], true);
}

/// The Responses API's shape (`input_tokens_details`,
/// `output_tokens_details`), plain and streamed.
#[test]
fn responses_cached_and_reasoning_tokens_are_charged_plain_and_streamed() {
    let extra = json!({"input_tokens_details": {"cached_tokens": 800},
                       "output_tokens_details": {"reasoning_tokens": 4}});
    let price = PriceConfig {
        input_per_1m: 1000,
        cached_input_per_1m: Some(100),
        output_per_1m: 4000,
        reasoning_per_1m: Some(8000),
        ..PriceConfig::default()
    };
    let (_fake, app) = priced_app("openai", (1000, 10), extra, "resp", price, |_, _| {});
    let ann = app.user("ann");
    app.grant(&ann, 100);
    let expected = 200 * 1000 + 800 * 100 + 6 * 4000 + 4 * 8000;
    for stream in [false, true] {
        let r = app.client.responses(
            &ann.token,
            json!({"model": "resp", "input": "x".repeat(6000), "max_output_tokens": 100, "stream": stream}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(last_cost_micro(&app), expected, "stream: {stream}");
        let response = if stream {
            r.text()
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .find(|v| v["type"] == "response.completed")
                .expect("the completed event")["response"]
                .clone()
        } else {
            r.json()
        };
        assert_cost(&response, expected);
        assert_eq!(response["usage"]["input_tokens_details"]["cached_tokens"], 800, "the upstream usage as sent");
    }
    assert_eq!(capped_logs(&app), 0);
    assert_eq!(app.audit()["valid"], true);
}

/// 1 credit a token, in and out; 4,096 output tokens by default.
fn affordable_app() -> (FakeProvider, TestApp) {
    let price = PriceConfig { input_per_1m: 1_000_000, output_per_1m: 1_000_000, ..PriceConfig::default() };
    priced_app("openai", (12, 34), Value::Null, "fit", price, |m, _| m.max_output_tokens = Some(4096))
}

fn hi_to(app: &TestApp, token: &str) -> Resp {
    app.client.chat(token, json!({"model": "fit", "messages": [{"role": "user", "content": "hi"}]}))
}

#[test]
fn a_call_the_caller_cannot_afford_whole_is_sent_with_the_output_bound_that_fits() {
    let (fake, app) = affordable_app();
    let user = app.user("ann");
    app.grant(&user, 525);
    let ann = user.token.clone();
    let r = hi_to(&app, &ann);
    assert_eq!(r.status, 200, "{}", r.text());
    let lowered = r.json()["tollgate"]["max_tokens_lowered_to"].as_u64().expect("said in the answer");
    assert!((16..525).contains(&lowered), "{lowered}");
    assert_eq!(r.header("x-tollgate-max-tokens-lowered"), Some(lowered.to_string().as_str()));
    assert_eq!(
        fake.requests().last().unwrap().body["max_completion_tokens"],
        lowered,
        "the provider is told the bound held"
    );
    assert_eq!(app.client.get("/v1/credits/balance", &ann).json()["balance"], 525 - 46);
    // Streamed: the same, said in a header.
    let r =
        app.client.chat(&ann, json!({"model": "fit", "stream": true, "messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("x-tollgate-max-tokens-lowered").is_some());
    // Enough for the whole bound: nothing lowered.
    app.grant(&user, 10_000);
    let r = hi_to(&app, &ann);
    assert!(r.json()["tollgate"].get("max_tokens_lowered_to").is_none(), "{}", r.text());
    assert_eq!(fake.requests().last().unwrap().body["max_completion_tokens"], 4096);

    // Not even the input and 16 output tokens: 402, nothing held or sent.
    let bob = app.client.funded_user(&app.admin, "bob@example.com", 30);
    let n = fake.count("/chat/completions");
    let r = hi_to(&app, &bob);
    assert_eq!((r.status, r.error_code().as_str()), (402, "insufficient_credits"), "{}", r.text());
    assert_eq!(fake.count("/chat/completions"), n);

    // A key with a spend limit of 120 can still chat: the bound fits it.
    let cheap = app.client.create_key(&ann, json!({"name": "capped", "spend_limit": 120}));
    let key = cheap.json()["key"].as_str().unwrap().to_owned();
    let r = hi_to(&app, &key);
    assert_eq!(r.status, 200, "{}", r.text());
    let lowered = r.json()["tollgate"]["max_tokens_lowered_to"].as_u64().unwrap();
    assert!(lowered <= 120 - 16, "{lowered}");
}

#[test]
fn thirty_two_calls_at_once_that_each_lower_their_bound_never_overdraw() {
    let (_fake, app) = affordable_app();
    let ann = app.client.funded_user(&app.admin, "ann@example.com", 2_000);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..32).map(|_| s.spawn(|| hi_to(&app, &ann).status)).collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert!(statuses.iter().all(|s| *s == 200 || *s == 402), "{statuses:?}");
    let ok = statuses.iter().filter(|s| **s == 200).count() as i64;
    assert!(ok >= 1, "{statuses:?}");
    let b = app.client.get("/v1/credits/balance", &ann).json();
    assert_eq!(b["balance"], 2_000 - 46 * ok, "each call charged its usage: {b}");
    assert_eq!(b["held"], 0);
    assert!(b["balance"].as_i64().unwrap() >= 0);
    assert_eq!(app.audit()["valid"], true);
}
