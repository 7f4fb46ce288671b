//! The ledger over HTTP: balances, consume, admin grants and adjustments,
//! and the money paths under concurrency.

use crate::helpers::*;
use serde_json::json;
use std::sync::Arc;

#[test]
fn consume_appends_one_row_and_reports_the_new_balance() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    app.grant(&ann, 100);
    let r = app.client.post(CONSUME, &ann.token, json!({"amount": 30, "description": "render"}));
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert!(v["transaction_id"].as_str().unwrap().starts_with("txn_"));
    assert_eq!((v["balance"].as_i64(), v["available"].as_i64()), (Some(70), Some(70)));
    let b = app.balance(&ann);
    assert_eq!(b, json!({"object": "balance", "balance": 70, "held": 0, "available": 70, "next_expiry": null}));
    let tx = app.client.transactions(&ann.token).json();
    let row = &tx["data"][0];
    assert_eq!(row["id"], v["transaction_id"]);
    assert_eq!(
        (row["kind"].as_str(), row["amount"].as_i64(), row["balance_after"].as_i64()),
        (Some("consume"), Some(-30), Some(70))
    );
    assert_eq!(row["description"], "render");
    assert_eq!(row["object"], "credit_transaction");
    let val = app.validate(&ann);
    assert_eq!(val["valid"], true);
    assert_eq!(
        (val["ledger_balance"].as_i64(), val["cached_balance"].as_i64(), val["difference"].as_i64()),
        (Some(70), Some(70), Some(0))
    );
    // The ledger row is the record of a plain consume: no business log row
    // (issue 19), and the usage aggregate counts it.
    let logs = app.client.get("/v1/logs", &ann.token).json();
    let actions: Vec<&str> = logs["data"].as_array().unwrap().iter().filter_map(|l| l["action"].as_str()).collect();
    assert!(!actions.is_empty() && !actions.contains(&"credits_consumed"), "{actions:?}");
    let usage = app.client.get("/v1/usage", &ann.token).json();
    let row = &usage["data"][0];
    assert_eq!((row["requests"].as_i64(), row["cost"].as_i64()), (Some(1), Some(30)), "{usage}");
}

#[test]
fn insufficient_credits_is_a_402_that_writes_nothing() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    app.grant(&ann, 10);
    let rows = app.count("credit_transactions");
    let r = app.consume(&ann, 11);
    assert_eq!((r.status, r.error_code().as_str()), (402, "insufficient_credits"));
    assert_eq!(app.count("credit_transactions"), rows);
    assert_eq!(app.balance(&ann)["balance"], 10);
}

#[test]
fn thirty_two_threads_racing_consumes_spend_exactly_the_balance() {
    let app = Arc::new(TestApp::spawn());
    let ann = app.user("ann");
    app.grant(&ann, 10_000);
    let token = Arc::new(ann.token.clone());
    let handles: Vec<_> = (0..32)
        .map(|_| {
            let (app, token) = (Arc::clone(&app), Arc::clone(&token));
            std::thread::spawn(move || {
                let mut counts = (0u32, 0u32);
                for _ in 0..100 {
                    let r = app.client.consume(&token, 7);
                    match r.status {
                        201 => counts.0 += 1,
                        402 => {
                            assert_eq!(r.error_code(), "insufficient_credits");
                            counts.1 += 1
                        }
                        other => panic!("unexpected {other}: {}", r.text()),
                    }
                }
                counts
            })
        })
        .collect();
    let (ok, refused) = handles.into_iter().map(|h| h.join().unwrap()).fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1));
    assert_eq!(ok, 1428);
    assert_eq!(refused, 3200 - 1428);
    assert_eq!(app.balance(&ann)["balance"], 4);
    assert_eq!(app.validate(&ann)["valid"], true);
    let negative: i64 = app.sql_one("SELECT count(*) FROM credit_transactions WHERE balance_after < 0", &[]);
    assert_eq!(negative, 0);
    let audit = app.audit();
    assert_eq!(audit["valid"], true, "{audit}");
    assert_eq!(audit["rows_checked"], 1429);
}

#[test]
fn sixty_four_concurrent_consumes_never_pass_the_daily_cap() {
    let app = Arc::new(TestApp::spawn_with(|c| c.limits.daily_cap = 100));
    let ann = app.user("ann");
    app.grant(&ann, 10_000);
    let token = Arc::new(ann.token.clone());
    let handles: Vec<_> = (0..64)
        .map(|_| {
            let (app, token) = (Arc::clone(&app), Arc::clone(&token));
            std::thread::spawn(move || app.client.consume(&token, 7))
        })
        .collect();
    let results: Vec<Resp> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.status == 201).count(), 14);
    for r in results.iter().filter(|r| r.status != 201) {
        assert_eq!((r.status, r.error_code().as_str()), (429, "daily_cap_exceeded"));
        let retry: u64 = r.wait_s().expect("when to retry");
        assert!((1..=86_400).contains(&retry), "{retry}");
    }
    assert_eq!(app.balance(&ann)["balance"], 10_000 - 98);
}

#[test]
fn admin_adjustments_grant_or_deduct_but_never_below_zero_available() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    let path = format!("/v1/admin/users/{}/credits", ann.id);
    let r = app.client.post(&path, &app.admin, json!({"amount": 50, "description": "welcome"}));
    assert_eq!((r.status, r.json()["kind"].as_str()), (201, Some("grant")));
    let r = app.client.post(&path, &app.admin, json!({"amount": -20, "description": "correction"}));
    assert_eq!(
        (r.status, r.json()["kind"].as_str(), r.json()["balance_after"].as_i64()),
        (201, Some("adjust"), Some(30))
    );
    let r = app.client.post(&path, &app.admin, json!({"amount": -31, "description": "too much"}));
    assert_eq!((r.status, r.error_code().as_str()), (402, "insufficient_credits"));
    let r = app.client.post(&path, &app.admin, json!({"amount": 0, "description": "nothing"}));
    assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some("amount")));
    let r =
        app.client.post("/v1/admin/users/usr_999/credits", &app.admin, json!({"amount": 5, "description": "ghost"}));
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    let r =
        app.client.post("/v1/admin/users/job_1/credits", &app.admin, json!({"amount": 5, "description": "wrong id"}));
    assert_eq!(r.status, 404);
    assert_eq!(app.balance(&ann)["balance"], 30);
    assert_eq!(app.audit()["valid"], true);
}
