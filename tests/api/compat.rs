//! OpenAI compatibility without silent loss: what a client sends reaches an
//! OpenAI-compatible provider unchanged, what the provider answers reaches
//! the client unchanged, and a field no route can honour is refused before
//! anything is held.

use crate::ai::{chat_model, provider, sse_data};
use crate::fake_provider::FakeProvider;
use crate::helpers::*;
use serde_json::{Value, json};

fn app_with_routes(fake: &FakeProvider, kinds: &[&str]) -> TestApp {
    let base = fake.base.clone();
    let kinds: Vec<String> = kinds.iter().map(|k| (*k).to_owned()).collect();
    TestApp::spawn_with(move |c| {
        let mut routes = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            let url = if kind == "openai" { format!("{base}/v1") } else { base.clone() };
            c.providers.insert(format!("p{i}"), provider(kind, &url, 5_000));
            routes.push((format!("p{i}"), format!("upstream-{i}")));
        }
        let routes: Vec<(&str, &str)> = routes.iter().map(|(p, m)| (p.as_str(), m.as_str())).collect();
        c.models.push(chat_model("m", &routes));
    })
}

/// Every field an agent or a structured-output app sends.
fn rich_request() -> Value {
    json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image, and what is the weather in Paris?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp_c\": 21}"}
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
        "tool_choice": "auto",
        "parallel_tool_calls": false,
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "strict": true,
            "schema": {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"], "additionalProperties": false}}},
        "logprobs": true,
        "top_logprobs": 2,
        "seed": 42,
        "user": "end-user-7",
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
        "logit_bias": {"50256": -100},
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["\n\n"],
        "n": 2,
        "max_completion_tokens": 50,
        "metadata": {"trace": "abc"},
        "some_future_field": {"nested": [1, 2, 3]}
    })
}

#[test]
fn every_field_a_client_sends_reaches_an_openai_provider_unchanged() {
    let fake = FakeProvider::start();
    let app = app_with_routes(&fake, &["openai"]);
    let ann = app.user("ann");
    app.grant(&ann, 1_000_000);
    let sent = rich_request();
    let r = app.client.chat(&ann.token, sent.clone());
    assert_eq!(r.status, 200, "{}", r.text());
    let got = &fake.requests()[0].body;
    let mut expected = sent.clone();
    expected["model"] = json!("upstream-0");
    assert_eq!(got, &expected, "only the model name may change");
    assert!(got.get("max_tokens").is_none(), "max_completion_tokens is forwarded under its own name");
    assert_eq!(got["max_completion_tokens"], 50);
}

#[test]
fn tool_calls_come_back_unchanged_and_the_id_is_the_providers() {
    let fake = FakeProvider::start();
    let reply = json!({"id": "chatcmpl-abc123", "object": "chat.completion", "created": 7, "model": "upstream-0",
        "system_fingerprint": "fp_1",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": {"content": []},
            "message": {"role": "assistant", "content": null, "refusal": null, "tool_calls": [{"id": "call_9", "type": "function",
                "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]}}]});
    fake.script(|s| s.chat_reply = Some(reply.clone()));
    let app = app_with_routes(&fake, &["openai"]);
    let ann = app.user("ann");
    app.grant(&ann, 1_000_000);
    let r = app.client.chat(&ann.token, rich_request());
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["id"], "chatcmpl-abc123", "never chatcmpl-chatcmpl-");
    assert_eq!(v["choices"], reply["choices"]);
    assert_eq!(v["system_fingerprint"], "fp_1");
    assert_eq!(v["model"], "m", "the public name");
    assert_eq!(v["usage"]["completion_tokens"], 34);
    let cost = v["tollgate"]["cost"].as_i64().unwrap();
    assert!(cost > 0);
    assert_eq!(app.balance(&ann)["balance"], 1_000_000 - cost);
}

#[test]
fn streamed_tool_call_deltas_arrive_in_order_and_usage_is_charged() {
    let fake = FakeProvider::start();
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-s1", "object": "chat.completion.chunk", "created": 1, "model": "upstream-0",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let chunks = vec![
        chunk(
            json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": ""}}]}),
            Value::Null,
        ),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}), Value::Null),
        chunk(json!({}), json!("tool_calls")),
    ];
    fake.script(|s| s.chat_chunks = Some(chunks.clone()));
    let app = app_with_routes(&fake, &["openai"]);
    let ann = app.user("ann");
    app.grant(&ann, 1_000_000);
    for include_usage in [false, true] {
        let mut body = rich_request();
        body["stream"] = json!(true);
        if include_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        let before = app.balance(&ann)["balance"].as_i64().unwrap();
        let r = app.client.chat(&ann.token, body);
        assert_eq!(r.status, 200, "{}", r.text());
        let data = sse_data(&r.text());
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
        let got: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
        let with_choices: Vec<&Value> =
            got.iter().filter(|c| c["choices"].as_array().is_some_and(|a| !a.is_empty())).collect();
        assert_eq!(with_choices.len(), 4);
        for (g, sent) in with_choices.iter().zip(&chunks) {
            assert_eq!(g["choices"], sent["choices"], "each delta unchanged, in order");
            assert_eq!((g["id"].as_str(), g["model"].as_str()), (Some("chatcmpl-s1"), Some("m")));
        }
        let usage_chunks = got.iter().filter(|c| c.get("usage").is_some_and(|u| !u.is_null())).count();
        assert_eq!(usage_chunks, usize::from(include_usage), "usage only when the client asked for it");
        // The cost in the final chunk either way, as in every answer.
        let last = got.last().unwrap();
        assert!(last["tollgate"]["cost_micro"].is_i64(), "the final chunk carries the cost: {last}");
        let sent_upstream = fake.requests().last().unwrap().body.clone();
        assert_eq!(sent_upstream["stream_options"]["include_usage"], true, "tollgate always meters");
        assert!(app.balance(&ann)["balance"].as_i64().unwrap() < before, "charged from the usage chunk");
    }
    assert_eq!(app.validate(&ann)["valid"], true);
}

#[test]
fn a_field_no_route_can_honour_is_refused_before_anything_is_held() {
    let fake = FakeProvider::start();
    let app = app_with_routes(&fake, &["anthropic"]);
    let ann = app.user("ann");
    app.grant(&ann, 1_000_000);
    let txns = app.count("credit_transactions");
    let holds = app.count("credit_holds");
    for (body, param) in [
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}}),
            "response_format",
        ),
        (json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "logprobs": true}), "logprobs"),
        (json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 2}), "n"),
        (json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "seed": 1}), "seed"),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]}),
            "messages[0]",
        ),
    ] {
        let r = app.client.chat(&ann.token, body);
        assert_eq!((r.status, r.error_code().as_str()), (400, "unsupported_parameter"), "{}", r.text());
        assert_eq!(r.json()["error"]["param"], param);
    }
    assert_eq!((app.count("credit_transactions"), app.count("credit_holds")), (txns, holds), "nothing held or charged");
    assert!(fake.requests().is_empty(), "no provider was called");
    // Plain text still goes to Anthropic.
    let r = app.client.chat(&ann.token, json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_rich_request_skips_a_route_that_cannot_honour_it() {
    let fake = FakeProvider::start();
    let app = app_with_routes(&fake, &["anthropic", "openai"]);
    let ann = app.user("ann");
    app.grant(&ann, 1_000_000);
    let r = app.client.chat(&ann.token, rich_request());
    assert_eq!(r.status, 200, "{}", r.text());
    let paths: Vec<String> = fake.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, vec![CHAT.to_owned()], "only the OpenAI route was called");
}

#[test]
fn n_and_images_raise_the_cost_bound() {
    let fake = FakeProvider::start();
    let app = app_with_routes(&fake, &["openai"]);
    let ann = app.user("ann");
    // chat_model: 0.8 credits per input token, 2 per output token.
    app.grant(&ann, 3_000);
    let one = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000});
    assert_eq!(app.client.chat(&ann.token, one.clone()).status, 200);
    let mut two = one.clone();
    two["n"] = json!(2);
    let r = app.client.chat(&ann.token, two);
    // 2 choices x 1000 tokens x 2 > what is left of 3000: each choice's
    // bound is lowered to what fits.
    assert_eq!(r.status, 200, "{}", r.text());
    let per_choice = r.json()["tollgate"]["max_tokens_lowered_to"].as_u64().expect("lowered");
    assert!(per_choice < 750, "{per_choice}");
    assert_eq!(fake.requests().last().unwrap().body["max_tokens"], per_choice);
    let image = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://x.invalid/a.png"}}]}]});
    let balance = app.balance(&ann)["available"].as_i64().unwrap();
    let r = app.client.chat(&ann.token, image);
    assert_eq!(r.status, 200, "1445 image tokens x 0.8 fit in {balance}: {}", r.text());
}

#[test]
fn models_can_be_retrieved_one_by_one() {
    let app = TestApp::spawn();
    let r = app.client.get("/v1/models/dev-chat", &app.admin);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(
        (v["id"].as_str(), v["object"].as_str(), v["kind"].as_str()),
        (Some("dev-chat"), Some("model"), Some("chat"))
    );
    let r = app.client.get("/v1/models/nope", &app.admin);
    assert_eq!((r.status, r.error_code().as_str()), (404, "model_not_found"));
}

#[test]
fn the_chat_route_takes_large_bodies_and_other_routes_keep_their_limit() {
    let fake = FakeProvider::start();
    let app = app_with_routes(&fake, &["openai"]);
    let ann = app.user("ann");
    app.grant(&ann, 100_000_000);
    let image = "A".repeat(3 << 20);
    let body = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{image}")}}]}]});
    let r = app.client.chat(&ann.token, body);
    assert_eq!(
        r.status,
        200,
        "a 3 MiB inline image fits the 20 MiB chat limit: {}",
        &r.text()[..r.text().len().min(300)]
    );
    assert_eq!(
        fake.requests()[0].body["messages"][0]["content"][0]["image_url"]["url"].as_str().map(str::len),
        Some(image.len() + 22)
    );
    let big = vec![b' '; 2 << 20];
    let r = app.client.post_with(CONSUME, &ann.token, &[], &big);
    assert_eq!((r.status, r.error_code().as_str()), (413, "payload_too_large"));
}

#[test]
fn ten_thousand_calls_with_cached_tokens_of_0_0369_credits_charge_exactly_369() {
    let fake = FakeProvider::start();
    fake.script(|s| {
        s.prompt_tokens = 100;
        s.completion_tokens = 50;
        s.usage_extra = json!({"prompt_tokens_details": {"cached_tokens": 60}});
    });
    let base = format!("{}/v1", fake.base);
    let app = TestApp::spawn_with(move |c| {
        c.providers.insert("p".into(), provider("openai", &base, 5_000));
        let mut m = chat_model("cheap", &[("p", "u")]);
        // 40 uncached x 150 + 60 cached x 15 + 50 x 600 = 36,900
        // millionths: 0.0369 credits a call.
        m.price.get_or_insert_default().input_per_1m = 150;
        m.price.get_or_insert_default().cached_input_per_1m = Some(15);
        m.price.get_or_insert_default().output_per_1m = 600;
        m.max_output_tokens = Some(100);
        c.models.push(m);
    });
    let ann = app.user("ann");
    app.grant(&ann, 1_000);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (client, token) = (app.client.clone(), ann.token.clone());
            std::thread::spawn(move || {
                let body = json!({"model": "cheap", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 60});
                for i in 0..1_250 {
                    let r = client.chat(&token, body.clone());
                    assert_eq!(r.status, 200, "thread {t} call {i}: {}", r.text());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(app.balance(&ann)["balance"], 1_000 - 369, "the exact sum, rounded once");
    let (rows, micro, charged): (i64, i64, i64) = app
        .db()
        .read(|c| {
            c.query_one(
                "SELECT count(*), CAST(SUM(cost_micro) AS BIGINT), CAST(-SUM(amount) AS BIGINT)
                 FROM credit_transactions WHERE kind = 'consume'",
                &[],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
        })
        .unwrap();
    assert_eq!((rows, micro, charged), (10_000, 369_000_000, 369), "every call is on the ledger with its exact cost");
    let carry: i64 = app.sql_one("SELECT carry_micro FROM users WHERE email = ?1", rusqlite::params![ann.email]);
    assert_eq!(carry, 0);
    let last = app.client.get("/v1/credits/transactions?limit=1", &ann.token).json()["data"][0].clone();
    assert_eq!(last["cost_micro"], 36_900, "the ledger shows each call's exact cost and the carry");
    assert!(last["carry_after_micro"].is_i64());
    let usage = app.client.get("/v1/usage?group_by=model", &ann.token).json()["data"][0].clone();
    assert_eq!(
        (usage["input_tokens"].as_i64(), usage["cached_input_tokens"].as_i64()),
        (Some(1_000_000), Some(600_000)),
        "{usage}"
    );
    assert_eq!(usage["cost"], 369);
    assert_eq!(app.audit()["valid"], true);
}

#[test]
fn embeddings_pass_through_and_are_charged_per_input_token() {
    let fake = FakeProvider::start();
    fake.script(|s| s.prompt_tokens = 2_000);
    let base = format!("{}/v1", fake.base);
    let app = TestApp::spawn_with(move |c| {
        c.providers.insert("p".into(), provider("openai", &base, 5_000));
        let mut m = chat_model("embed", &[("p", "text-embedding-3-small")]);
        m.kind = "embedding".into();
        m.price.get_or_insert_default().input_per_1m = 500;
        c.models.push(m);
    });
    let ann = app.user("ann");
    app.grant(&ann, 100);
    let sent = json!({"model": "embed", "input": ["first text", "second"], "encoding_format": "float", "dimensions": 2, "user": "u1"});
    let r = app.client.embeddings(&ann.token, sent.clone());
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (v["object"].as_str(), v["data"].as_array().map(Vec::len), v["model"].as_str()),
        (Some("list"), Some(2), Some("embed"))
    );
    let mut expected = sent;
    expected["model"] = json!("text-embedding-3-small");
    assert_eq!(fake.requests()[0].body, expected, "every field passed through");
    // 2,000 tokens x 500 per 1M = 1 credit exactly.
    assert_eq!(app.balance(&ann)["balance"], 99);
    for bad in [json!(""), json!([]), json!(5), json!([[]]), json!([1, "x"])] {
        let r = app.client.embeddings(&ann.token, json!({"model": "embed", "input": bad}));
        assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some("input")), "{bad}");
    }
    let r = app.client.embeddings(&ann.token, json!({"model": "m-missing", "input": "x"}));
    assert_eq!(r.status, 404);
    // The dev provider embeds offline.
    let dev = TestApp::spawn();
    let bob = dev.user("bob");
    dev.grant(&bob, 10);
    let r = dev.client.embeddings(&bob.token, json!({"model": "dev-embedding", "input": "hello"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"][0]["embedding"].as_array().map(Vec::len), Some(8));
}

#[test]
fn images_can_come_back_as_base64_where_the_provider_can() {
    let fake = FakeProvider::start();
    let base = format!("{}/v1", fake.base);
    let app = TestApp::spawn_with(move |c| {
        c.providers.insert("p".into(), provider("openai", &base, 5_000));
        let mut m = chat_model("img", &[("p", "gpt-image")]);
        m.kind = "image".into();
        m.price.get_or_insert_default().per_image = 3;
        c.models.push(m);
    });
    let ann = app.user("ann");
    app.grant(&ann, 100);
    let r = app
        .client
        .images(&ann.token, json!({"model": "img", "prompt": "a fox", "n": 3, "response_format": "b64_json"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let data = r.json()["data"].clone();
    assert_eq!(data.as_array().map(Vec::len), Some(3));
    assert_eq!(data[2]["b64_json"], "aW1hZ2Ut2");
    assert_eq!(fake.requests()[0].body["response_format"], "b64_json");
    assert_eq!(app.balance(&ann)["balance"], 91);
    // The dev provider has only URLs: refused before anything is held.
    let dev = TestApp::spawn();
    let r =
        dev.client.images(&dev.admin, json!({"model": "dev-image", "prompt": "a fox", "response_format": "b64_json"}));
    assert_eq!((r.status, r.error_code().as_str()), (400, "unsupported_parameter"));
}

#[test]
fn the_responses_api_passes_through_plain_and_streamed_and_is_metered() {
    let fake = FakeProvider::start();
    let app = app_with_routes(&fake, &["openai"]);
    let ann = app.user("ann");
    app.grant(&ann, 10_000);
    let sent = json!({"model": "m", "input": "Say hi", "instructions": "Be brief", "store": false,
                      "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}], "text": {"format": {"type": "text"}}});
    let r = app.client.responses(&ann.token, sent.clone());
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (v["id"].as_str(), v["object"].as_str(), v["model"].as_str()),
        (Some("resp_1"), Some("response"), Some("m"))
    );
    assert_eq!(v["output"][0]["content"][0]["text"], "fake answer from the provider");
    let got = fake.requests()[0].body.clone();
    let mut expected = sent.clone();
    expected["model"] = json!("upstream-0");
    expected["max_output_tokens"] = json!(1000);
    assert_eq!(got, expected, "every field passed through; the output bound set");
    // 12 in x 0.8 + 34 out x 2 = 77.6: 77 charged, 0.6 carried.
    assert_eq!(app.balance(&ann)["balance"], 10_000 - 77);

    let mut streamed = sent;
    streamed["stream"] = json!(true);
    let r = app.client.responses(&ann.token, streamed);
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert_eq!(names.first(), Some(&"response.created"));
    assert_eq!(names.last(), Some(&"response.completed"));
    assert!(names.iter().filter(|n| **n == "response.output_text.delta").count() >= 4);
    assert_eq!(app.balance(&ann)["balance"], 10_000 - 155, "two calls: 155.2 exactly, rounded once");

    // Stored context is invisible to tollgate: the bound is the context window.
    let r =
        app.client.responses(&ann.token, json!({"model": "m", "input": "and then?", "previous_response_id": "resp_1"}));
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (402, "max_cost_exceeded"),
        "128,000 x 0.8 + 1,000 x 2 is over the per-request cap"
    );
    assert_eq!(app.audit()["valid"], true);

    // A model without an openai route cannot serve it.
    let other = app_with_routes(&FakeProvider::start(), &["anthropic"]);
    let r = other.client.responses(&other.admin, json!({"model": "m", "input": "hi"}));
    assert_eq!((r.status, r.error_code().as_str()), (400, "unsupported_parameter"));
}

#[test]
fn a_tool_calling_conversation_through_anthropic_looks_like_openai_to_the_client() {
    let fake = FakeProvider::start();
    let app = app_with_routes(&fake, &["anthropic"]);
    let ann = app.user("ann");
    app.grant(&ann, 1_000_000);
    let tools = json!([{"type": "function", "function": {"name": "weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let mut messages = vec![
        json!({"role": "system", "content": "Be terse."}),
        json!({"role": "user", "content": [{"type": "text", "text": "Weather where this photo was taken?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}),
    ];
    let first = app.client.chat(&ann.token,
        json!({"model": "m", "messages": messages, "tools": tools, "tool_choice": "required", "parallel_tool_calls": false}),
    );
    assert_eq!(first.status, 200, "{}", first.text());
    let v = first.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = v["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!((call["id"].as_str(), call["type"].as_str()), (Some("toolu_1"), Some("function")));
    assert_eq!(call["function"]["name"], "weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Paris"})
    );
    let sent = fake.requests()[0].body.clone();
    assert_eq!(sent["system"], "Be terse.");
    assert_eq!(sent["tools"][0]["input_schema"]["required"], json!(["city"]), "tools mapped to input_schema");
    assert_eq!(sent["tool_choice"], json!({"type": "any", "disable_parallel_tool_use": true}));
    assert_eq!(
        sent["messages"][0]["content"][1],
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}})
    );

    // The tool result goes back; Anthropic gets tool_use and tool_result blocks.
    messages.push(v["choices"][0]["message"].clone());
    messages.push(json!({"role": "tool", "tool_call_id": "toolu_1", "content": "{\"temp_c\": 21}"}));
    let second = app.client.chat(&ann.token, json!({"model": "m", "messages": messages, "tools": tools}));
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(second.json()["choices"][0]["message"]["content"], "fake answer from the provider");
    let sent = fake.requests()[1].body.clone();
    let turns = sent["messages"].as_array().unwrap();
    assert_eq!(turns[1]["role"], "assistant");
    assert!(
        turns[1]["content"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["type"] == "tool_use" && b["id"] == "toolu_1" && b["input"]["city"] == "Paris")
    );
    assert_eq!(
        turns[2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": "toolu_1", "content": "{\"temp_c\": 21}"})
    );

    // Streamed: the tool call arrives as OpenAI tool_call deltas, in order.
    let r = app.client.chat(
        &ann.token,
        json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": tools}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let data = sse_data(&r.text());
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let calls: Vec<&Value> = chunks.iter().filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0")).collect();
    assert_eq!(calls[0]["function"]["name"], "weather");
    let args: String = calls.iter().filter_map(|c| c.pointer("/function/arguments").and_then(Value::as_str)).collect();
    assert_eq!(args, "{\"city\":\"Paris\"}");
    assert!(chunks.iter().any(|c| c.pointer("/choices/0/finish_reason") == Some(&json!("tool_calls"))));
    assert!(chunks.iter().any(|c| c.get("usage").is_some_and(|u| !u.is_null())), "usage charged and shown");
    assert_eq!(app.validate(&ann)["valid"], true);
}

#[test]
fn a_bound_the_client_did_not_send_goes_under_the_name_the_route_takes_and_stream_false_goes_on() {
    let fake = FakeProvider::start();
    let app = app_with_routes(&fake, &["openai"]);
    let ann = app.user("ann");
    app.grant(&ann, 100_000);
    let r = app
        .client
        .chat(&ann.token, json!({"model": "m", "stream": false, "messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = fake.requests().last().unwrap().body.clone();
    // OpenAI's reasoning models refuse `max_tokens`: an OpenAI route gets the other name.
    assert!(sent.get("max_tokens").is_none() && sent["max_completion_tokens"].is_u64(), "{sent}");
    assert_eq!(sent["stream"], false, "the client's own stream: false reaches the provider");
    // A bound the client named goes under that name.
    let r = app
        .client
        .chat(&ann.token, json!({"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(r.status, 200);
    let sent = fake.requests().last().unwrap().body.clone();
    assert_eq!((sent["max_tokens"].as_u64(), sent.get("max_completion_tokens")), (Some(50), None), "{sent}");
    assert!(sent.get("stream").is_none(), "no stream field when the client sent none: {sent}");
    // DashScope's compatible mode mirrors chat only: `max_tokens`.
    let fake = FakeProvider::start();
    let app = app_with_routes(&fake, &["dashscope"]);
    let bob = app.user("bob");
    app.grant(&bob, 100_000);
    assert_eq!(
        app.client.chat(&bob.token, json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})).status,
        200
    );
    let sent = fake.requests().last().unwrap().body.clone();
    assert!(sent["max_tokens"].is_u64() && sent.get("max_completion_tokens").is_none(), "{sent}");
}

#[test]
fn a_json_schema_reaches_the_provider_with_its_fields_in_the_clients_order() {
    let fake = FakeProvider::start();
    let app = app_with_routes(&fake, &["openai"]);
    let ann = app.user("ann");
    app.grant(&ann, 100_000);
    // Strict structured outputs generate fields in schema order: "reasoning"
    // must stay before "answer" (alphabetically it would come after).
    let body = r#"{"model": "m", "temperature": 0.2, "messages": [{"role": "user", "content": "2+2?"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "strict": true, "schema": {
            "type": "object", "properties": {"reasoning": {"type": "string"}, "answer": {"type": "number"}},
            "required": ["reasoning", "answer"], "additionalProperties": false}}}}"#;
    let r = app.client.post_with(
        "/v1/chat/completions",
        &ann.token,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let raw = String::from_utf8(fake.requests().last().unwrap().raw.clone()).unwrap();
    let at = |k: &str| raw.find(k).unwrap_or_else(|| panic!("{k} in {raw}"));
    assert!(at("\"reasoning\"") < at("\"answer\""), "schema properties keep their order: {raw}");
    assert!(at("\"temperature\"") < at("\"messages\"") && at("\"messages\"") < at("\"response_format\""), "{raw}");
}

#[test]
fn an_image_requests_fields_reach_openai_and_its_answer_comes_back_whole() {
    let fake = FakeProvider::start();
    let base = format!("{}/v1", fake.base);
    let app = TestApp::spawn_with(move |c| {
        c.providers.insert("oa".into(), provider("openai", &base, 5_000));
        c.providers.insert("dev".into(), provider("dev", "", 5_000));
        let price = tollgate::config::PriceConfig { per_image: 5, ..Default::default() };
        c.models.push(model_config("gpt-image", "image", &[("oa", "gpt-image-1")], price.clone()));
        c.models.push(model_config("dalle", "image", &[("oa", "dall-e-3")], price.clone()));
        c.models.push(model_config("local", "image", &[("dev", "x")], price));
    });
    let ann = app.user("ann");
    app.grant(&ann, 1_000);
    let r = app.client.post(
        "/v1/images/generations",
        &ann.token,
        json!({"model": "gpt-image", "prompt": "a fox", "quality": "high", "background": "transparent",
               "output_format": "webp", "moderation": "low", "user": "u-1", "size": "1024x1024"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = fake.requests().last().unwrap().body.clone();
    for (k, v) in [
        ("model", "gpt-image-1"),
        ("quality", "high"),
        ("background", "transparent"),
        ("output_format", "webp"),
        ("moderation", "low"),
        ("user", "u-1"),
    ] {
        assert_eq!(sent[k], v, "{k} reaches the provider: {sent}");
    }
    let v = r.json();
    assert_eq!(v["data"][0]["b64_json"], "aW1hZ2Ut0", "{v}");
    assert!(v["data"][0].get("url").is_none(), "b64_json stays b64_json: {v}");
    assert_eq!(v["usage"]["output_tokens"], 4160, "{v}");
    assert_eq!(v["output_format"], "webp");
    assert_eq!(v["tollgate"]["cost"], 5, "{v}");
    // DALL-E 3: the URL and the prompt it used.
    let r = app.client.post(
        "/v1/images/generations",
        &ann.token,
        json!({"model": "dalle", "prompt": "a fox", "style": "vivid"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(fake.requests().last().unwrap().body["style"], "vivid");
    assert_eq!(r.json()["data"][0]["revised_prompt"], "a revised prompt");
    // A field a route cannot honour is a 400 naming it, never dropped.
    let r = app.client.post(
        "/v1/images/generations",
        &ann.token,
        json!({"model": "local", "prompt": "a fox", "style": "vivid"}),
    );
    assert_eq!((r.status, r.error_code().as_str()), (400, "unsupported_parameter"), "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "style");
}
