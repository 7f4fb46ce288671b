//! `Idempotency-Key`: replay, reuse, in-flight duplicates, failures.

use crate::helpers::*;
use serde_json::json;
use std::sync::Arc;

#[test]
fn the_same_key_and_body_replays_the_first_response_byte_for_byte() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    app.grant(&ann, 100);
    let body = json!({"amount": 7, "description": "once"}).to_string();
    let h = [("Idempotency-Key", "k-1")];
    let first = app.client.post_with(CONSUME, &ann.token, &h, body.as_bytes());
    assert_eq!(first.status, 201, "{}", first.text());
    let second = app.client.post_with(CONSUME, &ann.token, &h, body.as_bytes());
    assert_eq!(second.status, 201);
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("Idempotent-Replayed"), Some("true"));
    assert_eq!(app.balance(&ann)["balance"], 93, "charged once");

    let other = json!({"amount": 8}).to_string();
    let r = app.client.post_with(CONSUME, &ann.token, &h, other.as_bytes());
    assert_eq!((r.status, r.error_code().as_str()), (422, "idempotency_key_reused"));
    assert_eq!(app.balance(&ann)["balance"], 93);

    // Keys are per user: bob may use the same key for his own request.
    let bob = app.user("bob");
    app.grant(&bob, 10);
    let r = app.client.post_with(CONSUME, &bob.token, &h, body.as_bytes());
    assert_eq!(r.status, 201);
    assert_eq!(app.balance(&bob)["balance"], 3);
}

#[test]
fn a_failed_request_is_not_stored_so_a_retry_after_a_top_up_succeeds() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    let body = json!({"amount": 5}).to_string();
    let h = [("Idempotency-Key", "retry-me")];
    let r = app.client.post_with(CONSUME, &ann.token, &h, body.as_bytes());
    assert_eq!((r.status, r.error_code().as_str()), (402, "insufficient_credits"));
    app.grant(&ann, 5);
    let r = app.client.post_with(CONSUME, &ann.token, &h, body.as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(app.balance(&ann)["balance"], 0);
}

#[test]
fn two_identical_grants_with_one_key_produce_one_ledger_row() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    let body = json!({"amount": 40, "description": "promo"}).to_string();
    let h = [("Idempotency-Key", "grant-1")];
    let path = format!("/v1/admin/users/{}/credits", ann.id);
    let a = app.client.post_with(&path, &app.admin, &h, body.as_bytes());
    let b = app.client.post_with(&path, &app.admin, &h, body.as_bytes());
    assert_eq!((a.status, b.status), (201, 201));
    assert_eq!(a.body, b.body);
    assert_eq!(app.count("credit_transactions"), 1);
    assert_eq!(app.balance(&ann)["balance"], 40);
}

#[test]
fn concurrent_requests_with_one_key_have_exactly_one_effect() {
    let app = Arc::new(TestApp::spawn());
    let ann = app.user("ann");
    app.grant(&ann, 1000);
    let token = Arc::new(ann.token.clone());
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let (app, token) = (Arc::clone(&app), Arc::clone(&token));
            std::thread::spawn(move || {
                let body = json!({"amount": 10}).to_string();
                app.client.post_with(CONSUME, &token, &[("Idempotency-Key", "race")], body.as_bytes())
            })
        })
        .collect();
    let results: Vec<Resp> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok: Vec<&Resp> = results.iter().filter(|r| r.status == 201).collect();
    assert!(!ok.is_empty());
    assert!(ok.iter().all(|r| r.body == ok[0].body), "every 201 is the same response");
    for r in results.iter().filter(|r| r.status != 201) {
        assert_eq!((r.status, r.error_code().as_str()), (409, "request_in_progress"));
    }
    assert_eq!(app.balance(&ann)["balance"], 990, "exactly one consume");
}

#[test]
fn an_invalid_idempotency_key_is_a_400() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    let long = "k".repeat(256);
    for key in [long.as_str(), "has space"] {
        let r = app.client.post_with(CONSUME, &ann.token, &[("Idempotency-Key", key)], b"{\"amount\":1}");
        assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some("Idempotency-Key")));
    }
}
