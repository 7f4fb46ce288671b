//! Cost guardrails over HTTP: token buckets (with a manual clock), login
//! lockout, per-request cap, daily cap, the global budget, `/v1/limits`.

use crate::helpers::*;
use serde_json::json;
use std::sync::Arc;
use tollgate::guard::{Clock, ManualClock};

/// The user's guard refusals, read by the admin (the user may be rate limited).
fn guard_logs(app: &TestApp, user: &TestUser) -> Vec<serde_json::Value> {
    let logs = app.client.get(&format!("/v1/admin/logs?user_id={}", user.id), &app.admin).json();
    logs["data"].as_array().unwrap().iter().filter(|l| l["action"] == "guard_refused").cloned().collect()
}

#[test]
fn ten_per_minute_lets_ten_through_refuses_the_eleventh_and_refills_with_time() {
    let clock = Arc::new(ManualClock::default());
    let app = TestApp::spawn_with_clock(Arc::clone(&clock) as Arc<dyn Clock>);
    let ann = app.user("ann");
    let r = app.put_limits(&app.admin, &ann, r#"{"rpm": 10}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["effective"]["burst"], 10, "rpm without burst sets burst");
    for i in 0..10 {
        let r = app.client.me(&ann.token);
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.header("X-RateLimit-Limit"), Some("10"));
        assert_eq!(r.header("X-RateLimit-Remaining"), Some((9 - i).to_string().as_str()));
        assert!(r.header("X-RateLimit-Reset").is_some());
    }
    let r = app.client.me(&ann.token);
    assert_eq!((r.status, r.error_code().as_str()), (429, "rate_limited"));
    assert_eq!(r.header("Retry-After"), Some("6"));
    assert_eq!(r.header("X-RateLimit-Remaining"), Some("0"));
    let _ = app.client.me(&ann.token);
    clock.advance_ms(5_999);
    assert_eq!(app.client.me(&ann.token).status, 429);
    clock.advance_ms(1);
    assert_eq!(app.client.me(&ann.token).status, 200, "one token after six seconds");
    // Three refusals, one log line: floods do not become floods of writes.
    let logs = guard_logs(&app, &ann);
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(logs.iter().all(|l| l["details"]["guard"] == "rate_limit"));
    // Other users have their own buckets.
    let bob = app.user("bob");
    assert_eq!(app.client.me(&bob.token).status, 200);
}

#[test]
fn twenty_wrong_passwords_lock_out_that_ip_while_another_ip_still_logs_in() {
    let app = TestApp::spawn_with(|c| {
        c.server.trusted_proxies = vec!["127.0.0.1".into()];
        c.auth.login_ip_failures_max = 20;
    });
    let ann = app.user("ann");
    let body = |pw: &str| json!({"email": ann.email, "password": pw}).to_string();
    let from = |ip: &'static str, pw: &str| {
        app.client
            .request("POST", "/v1/auth/login", None, &[("X-Forwarded-For", ip)], Some(body(pw).as_bytes()))
            .unwrap()
    };
    for i in 0..20 {
        // Different emails, so only the IP's counter reaches the limit.
        let other = json!({"email": format!("x{i}@example.com"), "password": "nope-nope"}).to_string();
        let r = app
            .client
            .request("POST", "/v1/auth/login", None, &[("X-Forwarded-For", "203.0.113.9")], Some(other.as_bytes()))
            .unwrap();
        assert_eq!(r.status, 401, "attempt {i}");
    }
    let r = from("203.0.113.9", PASSWORD);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (429, "rate_limited"),
        "even the right password is refused while locked"
    );
    let retry: u64 = r.wait_s().unwrap();
    assert!((1..=900).contains(&retry));
    assert_eq!(from("198.51.100.7", PASSWORD).status, 200, "another IP is not locked");
    let logs = app.client.get("/v1/admin/logs?log_type=system", &app.admin).json();
    assert!(logs.to_string().contains("login_lockout"), "{logs}");
}

#[test]
fn x_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy() {
    let app = TestApp::spawn_with(|c| c.auth.login_ip_failures_max = 3);
    let ann = app.user("ann");
    for ip in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        let b = json!({"email": format!("{ip}@example.com"), "password": "nope-nope"}).to_string();
        app.client.request("POST", "/v1/auth/login", None, &[("X-Forwarded-For", ip)], Some(b.as_bytes())).unwrap();
    }
    // All three counted against the real peer (127.0.0.1): it is locked.
    let r = app
        .client
        .request(
            "POST",
            "/v1/auth/login",
            None,
            &[("X-Forwarded-For", "192.0.2.99")],
            Some(json!({"email": ann.email, "password": PASSWORD}).to_string().as_bytes()),
        )
        .unwrap();
    assert_eq!(r.status, 429);
}

#[test]
fn a_consume_over_the_per_request_cap_is_refused_with_402_and_logged() {
    let app = TestApp::spawn_with(|c| c.limits.max_cost_per_request = 100);
    let ann = app.user("ann");
    app.grant(&ann, 1_000);
    let r = app.consume(&ann, 101);
    assert_eq!((r.status, r.error_code().as_str()), (402, "max_cost_exceeded"));
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("101"));
    assert_eq!(app.consume(&ann, 100).status, 201);
    assert_eq!(app.balance(&ann)["balance"], 900);
    let logs = guard_logs(&app, &ann);
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0]["details"]["guard"], "max_cost");
    // A per-user override lifts it for ann only.
    let r = app.put_limits(&app.admin, &ann, r#"{"max_cost_per_request": 0}"#);
    assert_eq!(r.status, 200);
    assert_eq!(app.consume(&ann, 500).status, 201);
}

#[test]
fn limits_show_what_is_left_today_and_daily_cap_refusals_say_when_to_retry() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    app.grant(&ann, 1_000);
    let r = app.put_limits(&app.admin, &ann, r#"{"daily_cap": 100, "rpm": 500, "burst": 50}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    for _ in 0..14 {
        assert_eq!(app.consume(&ann, 7).status, 201);
    }
    let r = app.consume(&ann, 7);
    assert_eq!((r.status, r.error_code().as_str()), (429, "daily_cap_exceeded"));
    assert!(r.wait_s().is_some());
    let l = app.client.get("/v1/limits", &ann.token).json();
    assert_eq!((l["rpm"].as_u64(), l["burst"].as_u64()), (Some(500), Some(50)));
    assert_eq!(
        (l["daily_cap"].as_i64(), l["spent_today"].as_i64(), l["remaining_today"].as_i64()),
        (Some(100), Some(98), Some(2))
    );
    assert_eq!(l["max_cost_per_request"], 10_000);
    assert!(l["remaining"].as_u64().is_some());
    assert_eq!(guard_logs(&app, &ann)[0]["details"]["guard"], "daily_cap");
}

#[test]
fn bad_limit_overrides_are_refused_and_change_nothing() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    for (body, param) in [
        (r#"{"rpm": 0}"#, "rpm"),
        (r#"{"burst": -1}"#, "burst"),
        (r#"{"daily_cap": -5}"#, "daily_cap"),
        (r#"{"rpm": "many"}"#, "rpm"),
    ] {
        let r = app.put_limits(&app.admin, &ann, body);
        assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some(param)), "{}", r.text());
    }
    let r = app
        .client
        .request("PUT", "/v1/admin/users/usr_999/limits", Some(&app.admin), &[], Some(br#"{"rpm": 5}"#))
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(app.count("user_limits"), 0);
    let r = app.put_limits(&ann.token, &ann, r#"{"rpm": 100000}"#);
    assert_eq!(r.status, 403, "users cannot raise their own limits");
}

#[test]
fn the_global_budget_stops_all_charges_with_503_and_a_system_error() {
    let app = TestApp::spawn_with(|c| c.limits.global_daily_cap = 50);
    let ann = app.user("ann");
    let bob = app.user("bob");
    app.grant(&ann, 100);
    app.grant(&bob, 100);
    assert_eq!(app.consume(&ann, 30).status, 201);
    let r = app.consume(&bob, 30);
    assert_eq!((r.status, r.error_code().as_str()), (503, "budget_exhausted"));
    assert!(r.wait_s().is_some());
    assert_eq!(app.consume(&bob, 20).status, 201, "what fits in the budget still goes through");
    let logs = app.client.get("/v1/admin/logs?log_type=system&level=error", &app.admin).json();
    assert!(logs.to_string().contains("global_budget_exhausted"), "{logs}");
}
