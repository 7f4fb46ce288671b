//! Redemption codes over HTTP: minted once in clear, redeemed exactly as
//! often as allowed under concurrency, refused with distinct codes, and
//! guessing slowed per user and per IP.

use crate::helpers::*;
use serde_json::{Value, json};
use std::sync::Arc;

fn mint(app: &TestApp, body: Value) -> Vec<Value> {
    let r = app.client.post("/v1/admin/codes", &app.admin, body);
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["data"].as_array().unwrap().clone()
}

fn redeem(client: &Client, token: &str, code: &str) -> Resp {
    client.post("/v1/credits/redeem", token, json!({ "code": code }))
}

#[test]
fn a_code_is_shown_once_redeemed_into_a_grant_and_refused_with_distinct_codes() {
    let app = TestApp::spawn();
    let (ann, bob) = (app.user("ann"), app.user("bob"));
    let codes = mint(
        &app,
        json!({"amount": 250, "count": 3, "category": "paid", "priority": 20, "grant_expires_days": 30,
               "description": "launch promo"}),
    );
    assert_eq!(codes.len(), 3);
    let code = codes[0]["code"].as_str().unwrap().to_owned();
    assert!(code.starts_with("TG-") && code.len() == 26, "{code}");
    assert_eq!(codes[0]["batch_id"], codes[2]["batch_id"]);
    assert_eq!((codes[0]["status"].as_str(), codes[0]["max_redemptions"].as_i64()), (Some("active"), Some(1)));
    let listed = app.client.get("/v1/admin/codes", &app.admin).json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 3);
    assert!(!listed.to_string().contains(&code[3..]), "the list never shows a code");
    assert!(listed["data"][0].get("code").is_none());
    let stored = app.count_where("redemption_codes", &format!("code_hash LIKE '%{}%'", &code[3..8]));
    assert_eq!(stored, 0, "only a hash is stored");

    // Typed by a human: lower case, spaces for dashes.
    let r = redeem(&app.client, &ann.token, &code.to_lowercase().replace('-', " "));
    assert_eq!(r.status, 201, "{}", r.text());
    let g = r.json();
    assert_eq!(
        (
            g["object"].as_str(),
            g["source"].as_str(),
            g["amount"].as_i64(),
            g["category"].as_str(),
            g["priority"].as_i64()
        ),
        (Some("credit_grant"), Some("code"), Some(250), Some("paid"), Some(20))
    );
    assert!(g["expires_at"].is_string() && g["code_id"] == codes[0]["id"]);
    assert_eq!(app.balance(&ann)["balance"], 250);

    let again = redeem(&app.client, &ann.token, &code);
    assert_eq!((again.status, again.error_code()), (409, "code_already_redeemed".to_owned()));
    let other = redeem(&app.client, &bob.token, &code);
    assert_eq!((other.status, other.error_code()), (409, "code_used_up".to_owned()));
    let unknown = redeem(&app.client, &bob.token, "TG-00000-00000-00000-00000");
    assert_eq!((unknown.status, unknown.error_code()), (400, "code_invalid".to_owned()));
    assert_eq!(redeem(&app.client, &bob.token, "not a code").error_code(), "code_invalid");

    let second = codes[1]["code"].as_str().unwrap();
    let r = app.client.post(
        &format!("/v1/admin/codes/{}/disable", codes[1]["id"].as_str().unwrap()),
        &app.admin,
        json!({}),
    );
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("disabled")));
    assert_eq!(redeem(&app.client, &bob.token, second).error_code(), "code_invalid");

    let soon = mint(&app, json!({"amount": 5, "count": 1, "redeem_by": rfc3339_in(800)}));
    std::thread::sleep(std::time::Duration::from_millis(900));
    let late = redeem(&app.client, &bob.token, soon[0]["code"].as_str().unwrap());
    assert_eq!((late.status, late.error_code()), (400, "code_expired".to_owned()));

    let rows = app.count("redemption_codes");
    for (bad, param) in [
        (json!({"amount": 5, "count": 0}), "count"),
        (json!({"amount": 5, "count": 1001}), "count"),
        (json!({"amount": 0, "count": 1}), "amount"),
        (json!({"amount": 5, "count": 1, "max_redemptions": 0}), "max_redemptions"),
        (json!({"amount": 5, "count": 1, "grant_expires_days": 0}), "grant_expires_days"),
        (json!({"amount": 5, "count": 1, "redeem_by": "2000-01-01T00:00:00Z"}), "redeem_by"),
    ] {
        let r = app.client.post("/v1/admin/codes", &app.admin, bad.clone());
        assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some(param)), "{bad}: {}", r.text());
    }
    assert_eq!(app.count("redemption_codes"), rows, "refused batches write nothing");
    assert_eq!(app.client.post("/v1/admin/codes", &ann.token, json!({"amount": 5, "count": 1})).status, 403);
    let a = app.audit();
    assert_eq!(a["valid"], true, "{a}");
}

#[test]
fn concurrent_redemptions_grant_exactly_as_many_times_as_a_code_allows() {
    let app = TestApp::spawn();
    let users: Arc<Vec<TestUser>> = Arc::new((0..50).map(|i| app.user(&format!("racer{i}"))).collect());

    let single = mint(&app, json!({"amount": 10, "count": 1}))[0]["code"].as_str().unwrap().to_owned();
    let (client, u) = (app.client.clone(), Arc::clone(&users));
    let statuses = race(50, move |i| redeem(&client, &u[i].token, &single).status);
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 201 || *s == 409), "{statuses:?}");

    let ten =
        mint(&app, json!({"amount": 10, "count": 1, "max_redemptions": 10}))[0]["code"].as_str().unwrap().to_owned();
    let (client, u, code) = (app.client.clone(), Arc::clone(&users), ten.clone());
    let statuses = race(50, move |i| redeem(&client, &u[i].token, &code).status);
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 10, "{statuses:?}");

    let multi =
        mint(&app, json!({"amount": 10, "count": 1, "max_redemptions": 100}))[0]["code"].as_str().unwrap().to_owned();
    let (client, u) = (app.client.clone(), Arc::clone(&users));
    let statuses = race(20, move |_| redeem(&client, &u[0].token, &multi).status);
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "one user, once: {statuses:?}");

    assert_eq!(app.count_where("credit_grants", "source = 'code'"), 1 + 10 + 1);
    assert_eq!(app.count_where("redemption_codes", "redemptions > max_redemptions"), 0);
    let a = app.audit();
    assert_eq!(a["valid"], true, "{a}");
}

#[test]
fn guessing_codes_is_locked_out_per_user_but_a_real_code_costs_no_try() {
    let app = TestApp::spawn_with(|c| c.limits.redeem_failures_max = 3);
    let ann = app.user("ann");
    let real = mint(&app, json!({"amount": 10, "count": 2, "max_redemptions": 5}));
    let first = real[0]["code"].as_str().unwrap();
    assert_eq!(redeem(&app.client, &ann.token, first).status, 201);
    for _ in 0..5 {
        // Refused as already redeemed: a real code, so not a guess.
        assert_eq!(redeem(&app.client, &ann.token, first).error_code(), "code_already_redeemed");
    }
    for _ in 0..3 {
        assert_eq!(redeem(&app.client, &ann.token, "TG-00000-00000-00000-00001").error_code(), "code_invalid");
    }
    let locked = redeem(&app.client, &ann.token, real[1]["code"].as_str().unwrap());
    assert_eq!((locked.status, locked.error_code()), (429, "rate_limited".to_owned()), "{}", locked.text());
    assert!(locked.wait_s().is_some());
    let bob = app.user("bob");
    assert_eq!(redeem(&app.client, &bob.token, real[1]["code"].as_str().unwrap()).status, 201, "others are not locked");
}
