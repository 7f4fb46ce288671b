//! Usage analytics from the daily aggregate: exact against the ledger under
//! concurrency and across a kill -9, grouped, as CSV, bounded; and no list
//! route ignores a query parameter it does not know.

use crate::fake_provider::FakeProvider;
use crate::helpers::*;
use serde_json::{Value, json};
use std::sync::Arc;

fn usage(app: &TestApp, token: &str, query: &str) -> Value {
    let r = app.client.get(&format!("/v1/usage{query}"), token);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn total(report: &Value, field: &str) -> i64 {
    report["data"].as_array().unwrap().iter().map(|r| r[field].as_i64().unwrap()).sum()
}

#[test]
fn racing_consumes_and_calls_are_counted_exactly_and_the_audit_checks_it() {
    let fake = FakeProvider::start();
    let base = format!("{}/v1", fake.base);
    let app = TestApp::spawn_with(move |c| {
        c.providers.insert("fake".into(), crate::ai::provider("openai", &base, 5_000));
        c.models.push(crate::ai::chat_model("fake-chat", &[("fake", "m")]));
    });
    let ann = app.user("ann");
    app.grant(&ann, 100_000);
    let key = app.client.create_key(&ann.token, json!({"name": "k"})).json()["key"].as_str().unwrap().to_owned();
    let key = Arc::new(key);
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let (client, key, token) = (app.client.clone(), Arc::clone(&key), ann.token.clone());
            std::thread::spawn(move || {
                let credential = if i % 2 == 0 { token } else { (*key).clone() };
                for _ in 0..10 {
                    let r = client.consume(&credential, 7);
                    assert_eq!(r.status, 201, "{}", r.text());
                }
                for _ in 0..2 {
                    let body = json!({"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]});
                    let r = client.chat(&credential, body);
                    assert_eq!(r.status, 200, "{}", r.text());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let by_model = usage(&app, &ann.token, "?group_by=model");
    let rows = by_model["data"].as_array().unwrap();
    let plain = rows.iter().find(|r| r["model"] == "").expect("plain consumes");
    assert_eq!((plain["requests"].as_i64(), plain["cost"].as_i64()), (Some(160), Some(160 * 7)));
    let chat = rows.iter().find(|r| r["model"] == "fake-chat").expect("chat calls");
    assert_eq!(chat["requests"], 32);
    assert_eq!((chat["input_tokens"].as_i64(), chat["output_tokens"].as_i64()), (Some(32 * 12), Some(32 * 34)));
    let spent = 100_000 - app.balance(&ann)["balance"].as_i64().unwrap();
    assert_eq!(total(&by_model, "cost"), spent, "the aggregate equals the ledger");
    let by_key = usage(&app, &ann.token, "?group_by=key");
    let keyed: i64 = by_key["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["api_key_id"].is_null())
        .map(|r| r["requests"].as_i64().unwrap())
        .sum();
    assert_eq!(keyed, 8 * 12, "the calls made through the key");
    assert_eq!(app.audit()["valid"], true, "{}", app.audit());

    // The audit catches an aggregate that drifted from the ledger.
    app.sql_exec("UPDATE usage_daily SET cost = cost + 1 WHERE model = ''");
    let audit = app.audit();
    assert_eq!(audit["valid"], false);
    assert!(audit["mismatches"].as_array().unwrap().iter().any(|m| m["kind"] == "usage"), "{audit}");
}

#[test]
fn reports_group_bound_their_range_and_download_as_csv() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    let bob = app.user("bob");
    app.grant(&ann, 1_000);
    app.grant(&bob, 1_000);
    for _ in 0..3 {
        assert_eq!(app.consume(&ann, 5).status, 201);
    }
    assert_eq!(app.consume(&bob, 11).status, 201);

    let mine = usage(&app, &ann.token, "");
    assert_eq!(mine["group_by"], json!(["day"]));
    assert_eq!(mine["data"].as_array().unwrap().len(), 1, "{mine}");
    assert_eq!((mine["data"][0]["requests"].as_i64(), mine["data"][0]["cost"].as_i64()), (Some(3), Some(15)));
    assert!(mine["data"][0]["day"].as_str().is_some_and(|d| d.len() == 10));

    let all = app.client.get("/v1/admin/usage?group_by=user", &app.admin).json();
    let users: Vec<(String, i64)> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["user_id"].as_str().unwrap().to_owned(), r["cost"].as_i64().unwrap()))
        .collect();
    assert!(users.contains(&(ann.id.clone(), 15)) && users.contains(&(bob.id.clone(), 11)), "{users:?}");
    let just_bob = app.client.get(&format!("/v1/admin/usage?user_id={}&group_by=day,model", bob.id), &app.admin).json();
    assert_eq!(total(&just_bob, "cost"), 11);
    assert!(just_bob["data"][0].get("day").is_some() && just_bob["data"][0].get("model").is_some());

    let csv =
        app.client.request("GET", "/v1/usage?group_by=day,model&format=csv", Some(&ann.token), &[], None).unwrap();
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert!(csv.header("content-disposition").unwrap().contains("attachment"));
    let lines: Vec<String> = csv.text().lines().map(str::to_owned).collect();
    assert_eq!(
        lines[0],
        "day,model,requests,input_tokens,output_tokens,images,video_seconds,cost,failures,cached_input_tokens,cache_write_tokens,reasoning_tokens,audio_tokens"
    );
    assert!(lines[1].ends_with(",,3,0,0,0,0,15,0,0,0,0,0"), "{lines:?}");
    let accept = app.client.request("GET", "/v1/usage", Some(&ann.token), &[("Accept", "text/csv")], None).unwrap();
    assert!(accept.text().starts_with("day,requests"));

    // A user cannot group by user; the range is bounded at 366 days.
    let bad = |q: &str| app.client.get(&format!("/v1/usage{q}"), &ann.token);
    for (q, param) in [
        ("?group_by=user", "group_by"),
        ("?group_by=day,day", "group_by"),
        ("?start=2026-13-01", "start"),
        ("?start=2026-02-03&end=2026-02-01", "end"),
        ("?start=2025-01-01&end=2026-01-02", "end"),
        ("?format=xml", "format"),
    ] {
        let r = bad(q);
        assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some(param)), "{q}: {}", r.text());
    }
    assert_eq!(bad("?start=2025-01-01&end=2026-01-01").status, 200, "exactly 366 days");
}

#[test]
fn every_route_refuses_a_query_parameter_it_does_not_take() {
    let app = TestApp::spawn();
    let doc = app.client.request("GET", "/openapi.json", None, &[], None).unwrap().json();
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let Some(get) = ops.get("get") else { continue };
        if path.contains("/callback") {
            continue; // an identity provider adds what it likes
        }
        let url = path.replace("{id}", "x_1").replace("{name}", "test");
        let r = app.client.request("GET", &format!("{url}?model=x"), Some(&app.admin), &[], None).unwrap();
        assert_eq!((r.status, r.error_code().as_str()), (400, "unknown_parameter"), "GET {path}: {}", r.text());
        assert_eq!(r.json()["error"]["param"], "model");
        // The parameters it does take are in the document.
        let _ = get.get("parameters");
        checked += 1;
    }
    assert!(checked > 25, "only {checked} routes checked");
    // A known one still works.
    assert_eq!(app.client.get("/v1/admin/users?limit=1", &app.admin).status, 200);
}

#[test]
fn the_console_is_served_small_with_strict_security_headers() {
    let app = TestApp::spawn();
    let root = app.client.request("GET", "/", None, &[], None).unwrap();
    assert_eq!(root.status, 200, "followed to the console");
    let mut total = 0;
    for path in ["/console/", "/console/app.js", "/console/app.css"] {
        let r = app.client.request("GET", path, None, &[], None).unwrap();
        assert_eq!(r.status, 200, "{path}");
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
        total += r.body.len();
    }
    // Uncompressed, far under the 300 KB the console may take compressed.
    assert!(total < 100 * 1024, "console assets are {total} bytes");
    let html = app.client.request("GET", "/console/", None, &[], None).unwrap().text();
    assert!(!html.contains("<script>") && !html.contains("style="), "no inline script or style");
}
