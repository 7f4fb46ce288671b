//! Credit grants over HTTP: draw order, external ids, status filters, void,
//! expiry by the charge itself and by the sweeper, a hold that outlives its
//! grant's expiry (settled, and across kill -9), and the audit after each.

use crate::ai::{chat_model, provider};
use crate::fake_provider::FakeProvider;
use crate::helpers::*;
use serde_json::{Value, json};
use std::time::Duration;

fn grant(app: &TestApp, user: &TestUser, body: Value) -> Resp {
    app.client.post(&format!("/v1/admin/users/{}/grants", user.id), &app.admin, body)
}

fn grants_of(app: &TestApp, user: &TestUser, query: &str) -> Vec<Value> {
    let r = app.client.get(&format!("/v1/credits/grants{query}"), &user.token);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["data"].as_array().unwrap().clone()
}

fn remaining_by_id(app: &TestApp, user: &TestUser) -> std::collections::HashMap<String, i64> {
    grants_of(app, user, "")
        .iter()
        .map(|g| (g["id"].as_str().unwrap().to_owned(), g["remaining"].as_i64().unwrap()))
        .collect()
}

fn assert_audit_valid(app: &TestApp) {
    let a = app.audit();
    assert_eq!(a["valid"], true, "{a}");
}

#[test]
fn charges_draw_grants_in_priority_expiry_category_age_order() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    let paid = grant(&app, &ann, json!({"amount": 100, "category": "paid"}));
    assert_eq!(paid.status, 201, "{}", paid.text());
    let paid = paid.json();
    assert_eq!(
        (paid["object"].as_str(), paid["category"].as_str(), paid["priority"].as_i64(), paid["source"].as_str()),
        (Some("credit_grant"), Some("paid"), Some(50), Some("admin"))
    );
    assert_eq!((paid["status"].as_str(), paid["expires_at"].is_null()), (Some("active"), true));
    let soon = rfc3339_in(3_600_000);
    let expiring = grant(&app, &ann, json!({"amount": 20, "expires_at": soon})).json();
    let promo_never = grant(&app, &ann, json!({"amount": 15})).json();
    let first = grant(&app, &ann, json!({"amount": 30, "priority": 10, "category": "paid"})).json();

    // 40 = all of priority 10 (30), then the soonest-expiring (10 of 20).
    assert_eq!(app.consume(&ann, 40).status, 201);
    let rem = remaining_by_id(&app, &ann);
    let id = |g: &Value| g["id"].as_str().unwrap().to_owned();
    assert_eq!((rem[&id(&first)], rem[&id(&expiring)], rem[&id(&promo_never)], rem[&id(&paid)]), (0, 10, 15, 100));
    // 20 more: the rest of the expiring one, then promotional before paid.
    assert_eq!(app.consume(&ann, 20).status, 201);
    let rem = remaining_by_id(&app, &ann);
    assert_eq!((rem[&id(&expiring)], rem[&id(&promo_never)], rem[&id(&paid)]), (0, 5, 100));

    let depleted = grants_of(&app, &ann, "?status=depleted");
    assert_eq!(depleted.len(), 2, "{depleted:?}");
    assert_eq!(grants_of(&app, &ann, "?status=active").len(), 2);
    let b = app.balance(&ann);
    assert_eq!((b["balance"].as_i64(), b["next_expiry"].is_null()), (Some(105), true));
    assert_audit_valid(&app);
}

#[test]
fn a_repeated_external_id_returns_the_first_grant_and_bad_input_changes_nothing() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    let body = json!({"amount": 70, "category": "paid", "external_id": "stripe:pi_123", "description": "order 9"});
    let a = grant(&app, &ann, body.clone());
    assert_eq!(a.status, 201, "{}", a.text());
    let b = grant(&app, &ann, json!({"amount": 99, "external_id": "stripe:pi_123"}));
    assert_eq!(b.status, 200, "{}", b.text());
    assert_eq!(b.json()["id"], a.json()["id"]);
    assert_eq!(b.json()["amount"], 70);
    assert_eq!(app.balance(&ann)["balance"], 70);

    let rows_before = app.count("credit_transactions");
    for (bad, param) in [
        (json!({"amount": 0}), "amount"),
        (json!({"amount": 5, "priority": 101}), "priority"),
        (json!({"amount": 5, "priority": -1}), "priority"),
        (json!({"amount": 5, "category": "gift"}), "category"),
        (json!({"amount": 5, "expires_at": "tomorrow"}), "expires_at"),
        (json!({"amount": 5, "expires_at": "2001-01-01T00:00:00Z"}), "expires_at"),
        (json!({"amount": 5, "external_id": ""}), "external_id"),
    ] {
        let r = grant(&app, &ann, bad.clone());
        assert_eq!((r.status, r.error_code()), (400, "invalid_request".to_owned()), "{bad}: {}", r.text());
        assert_eq!(r.json()["error"]["param"], param, "{bad}");
    }
    let r = grant(&app, &ann, json!({"amount": 5, "source": "code"}));
    assert_eq!(r.status, 400, "unknown fields are refused: {}", r.text());
    let r = app.client.post("/v1/admin/users/usr_999999/grants", &app.admin, json!({"amount": 5}));
    assert_eq!((r.status, r.error_code()), (404, "not_found".to_owned()));
    let r = app.client.post(&format!("/v1/admin/users/{}/grants", ann.id), &ann.token, json!({"amount": 5}));
    assert_eq!(r.status, 403, "only admins grant");
    let r = app.client.get("/v1/credits/grants?status=gone", &ann.token);
    assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some("status")));
    assert_eq!(app.count("credit_transactions"), rows_before);
    assert_audit_valid(&app);
}

#[test]
fn voiding_removes_the_remainder_in_a_void_row_once() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    let g = grant(&app, &ann, json!({"amount": 50})).json();
    assert_eq!(app.consume(&ann, 20).status, 201);
    let path = format!("/v1/admin/grants/{}/void", g["id"].as_str().unwrap());
    let r = app.client.post(&path, &app.admin, json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (v["status"].as_str(), v["remaining"].as_i64(), v["voided_at"].is_string()),
        (Some("voided"), Some(0), true)
    );
    assert_eq!(app.balance(&ann)["balance"], 0);
    let again = app.client.post(&path, &app.admin, json!({}));
    assert_eq!((again.status, again.json()["voided_at"].clone()), (200, v["voided_at"].clone()));
    let rows = app.client.transactions(&ann.token).json();
    assert_eq!((rows["data"][0]["kind"].as_str(), rows["data"][0]["amount"].as_i64()), (Some("void"), Some(-30)));
    assert_eq!(app.count_where("credit_transactions", "kind = 'void'"), 1);
    assert_eq!(app.client.post("/v1/admin/grants/grant_999/void", &app.admin, json!({})).status, 404);
    assert_eq!(grants_of(&app, &ann, "?status=voided").len(), 1);
    assert_eq!(app.admin_grants(&ann).len(), 1);
    assert_audit_valid(&app);
}

/// One user's grants, voids and consumes racing (on PostgreSQL each a
/// write of that user alone, beside other users' writes): one void takes
/// the grant's remainder once, one grant per external id, and the ledger
/// adds up.
#[test]
fn racing_voids_grants_and_consumes_of_one_user_take_effect_once() {
    let app = TestApp::spawn();
    let (ann, bob) = (app.user("ann"), app.user("bob"));
    let g = grant(&app, &ann, json!({"amount": 100, "priority": 0})).json()["id"].as_str().unwrap().to_owned();
    assert_eq!(grant(&app, &bob, json!({"amount": 1_000})).status, 201);
    let (client, admin) = (app.client.clone(), app.admin.clone());
    let (ann_id, ann_token, bob_token) = (ann.id.clone(), ann.token.clone(), bob.token.clone());
    let statuses = race(32, move |i| match i % 4 {
        0 => client.post(&format!("/v1/admin/grants/{g}/void"), &admin, json!({})).status,
        1 => {
            let body = json!({"amount": 50, "external_id": "order-1"});
            client.post(&format!("/v1/admin/users/{ann_id}/grants"), &admin, body).status
        }
        2 => client.consume(&ann_token, 10).status,
        _ => client.consume(&bob_token, 10).status,
    });
    let of = |k: usize| statuses.iter().skip(k).step_by(4).copied().collect::<Vec<u16>>();
    assert!(of(0).iter().all(|s| *s == 200), "voids: {:?}", of(0));
    let granted = of(1);
    assert_eq!(granted.iter().filter(|s| **s == 201).count(), 1, "grants: {granted:?}");
    assert!(granted.iter().all(|s| *s == 201 || *s == 200), "grants: {granted:?}");
    assert!(of(2).iter().all(|s| *s == 201 || *s == 402), "ann's consumes: {:?}", of(2));
    assert!(of(3).iter().all(|s| *s == 201), "bob's consumes: {:?}", of(3));
    assert_eq!(app.count_where("credit_transactions", "kind = 'void'"), 1, "voided once");
    assert_eq!(app.count_where("credit_grants", "external_id = 'order-1'"), 1);
    let spent = 10 * of(2).iter().filter(|s| **s == 201).count() as i64;
    let rows = app.client.transactions(&ann.token).json();
    let voided: i64 = rows["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "void")
        .map(|r| r["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(app.balance(&ann)["balance"].as_i64(), Some(100 + 50 - spent + voided), "{rows}");
    assert_eq!(app.balance(&bob)["balance"], 1_000 - 80);
    assert_audit_valid(&app);
}

#[test]
fn an_expired_grant_is_never_drawn_and_leaves_in_one_expire_row() {
    let app = TestApp::spawn_with(|c| c.ledger.sweep_interval_s = 1);
    let ann = app.user("ann");
    let at = rfc3339_in(1_000);
    assert_eq!(grant(&app, &ann, json!({"amount": 50, "expires_at": at, "priority": 0})).status, 201);
    assert_eq!(grant(&app, &ann, json!({"amount": 10})).status, 201);
    let b = app.balance(&ann);
    assert_eq!(b["next_expiry"]["amount"], 50, "{b}");
    std::thread::sleep(Duration::from_millis(1_100));
    // Whether or not the sweeper has run, the charge expires what is due
    // first: only the 10 that never expire are left.
    let r = app.consume(&ann, 20);
    assert_eq!((r.status, r.error_code()), (402, "insufficient_credits".to_owned()), "{}", r.text());
    assert_eq!(app.consume(&ann, 10).status, 201);
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(app.count_where("credit_transactions", "kind = 'expire'"), 1, "expired exactly once");
    let expired = grants_of(&app, &ann, "?status=expired");
    assert_eq!((expired.len(), expired[0]["remaining"].as_i64()), (1, Some(0)));
    let b = app.balance(&ann);
    assert_eq!((b["balance"].as_i64(), b["next_expiry"].is_null()), (Some(0), true));
    assert_audit_valid(&app);
}

fn slow_chat_app(fake: &FakeProvider, latency_ms: u64) -> TestApp {
    fake.script(|s| s.latency_ms = latency_ms);
    let base = format!("{}/v1", fake.base);
    TestApp::spawn_with(move |c| {
        c.ledger.sweep_interval_s = 1;
        c.providers.insert("fake".into(), provider("openai", &base, 30_000));
        c.models.push(chat_model("qwen-plus", &[("fake", "m")]));
    })
}

#[test]
fn a_call_holding_credits_of_a_grant_that_expires_mid_call_settles_and_the_rest_expires_at_close() {
    let fake = FakeProvider::start();
    let app = slow_chat_app(&fake, 2_500);
    let ann = app.user("ann");
    assert_eq!(grant(&app, &ann, json!({"amount": 1_000, "expires_at": rfc3339_in(1_000)})).status, 201);
    let body = json!({"model": "qwen-plus", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100});
    let r = app.client.chat(&ann.token, body);
    assert_eq!(r.status, 200, "the reserved credits are honoured after the expiry: {}", r.text());
    let cost = r.json()["tollgate"]["cost"].as_i64().unwrap();
    assert!(cost > 0);
    let rows = app.client.transactions(&ann.token).json();
    let kinds: Vec<(&str, i64)> = rows["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["kind"].as_str().unwrap(), t["amount"].as_i64().unwrap()))
        .collect();
    assert!(kinds.contains(&("consume", -cost)), "{kinds:?}");
    let expired: i64 = kinds.iter().filter(|(k, _)| *k == "expire").map(|(_, a)| -a).sum();
    assert_eq!(expired, 1_000 - cost, "everything the call did not use expired: {kinds:?}");
    assert_eq!(app.balance(&ann)["balance"], 0);
    assert_audit_valid(&app);
}

#[test]
fn sigkill_while_a_hold_outlives_its_grant_leaves_every_grant_consistent_after_restart() {
    crate::sqlite_only!();
    let fake = FakeProvider::start();
    fake.script(|s| s.latency_ms = 30_000);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let config = slow_chat_config(dir.path(), &fake.base, "[ledger]\nsweep_interval_s = 1\n");
    let env = [("TOLLGATE_CONFIG", config.to_str().unwrap()), ("TOLLGATE_SERVER_SQLITE_SYNCHRONOUS", "full")];
    let mut server = serve_process(&db, &env);
    let admin = server.client.token(ADMIN_EMAIL, ADMIN_PASSWORD);
    let r = server.client.create_user(&admin, json!({"email": "g@example.com", "password": PASSWORD}));
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let r = server.client.post(
        &format!("/v1/admin/users/{id}/grants"),
        &admin,
        json!({"amount": 10_000, "expires_at": rfc3339_in(1_500)}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = server.client.post(&format!("/v1/admin/users/{id}/grants"), &admin, json!({"amount": 7}));
    assert_eq!(r.status, 201, "{}", r.text());
    let token = server.client.token("g@example.com", PASSWORD);
    let calls = slow_chats_in_background(&server.client, &token, 2);
    let query = |sql: &str| -> i64 {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.query_row(sql, [], |r| r.get(0)).unwrap()
    };
    let t = std::time::Instant::now();
    // Wait until both calls hold credits and the sweeper has expired the
    // unheld part of the expiring grant: only the holds' part is left.
    while query("SELECT count(*) FROM credit_holds WHERE status = 'active'") < 2
        || query("SELECT count(*) FROM credit_transactions WHERE kind = 'expire'") < 1
    {
        assert!(t.elapsed() < Duration::from_secs(15), "no holds, or no expiry");
        std::thread::sleep(Duration::from_millis(50));
    }
    let held = query("SELECT held FROM users WHERE email = 'g@example.com'");
    assert!(held > 0);
    assert_eq!(query("SELECT remaining FROM credit_grants WHERE amount = 10000"), held, "only the held part remains");
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();
    for c in calls {
        c.join().unwrap();
    }

    let server = serve_process(&db, &env);
    let b = server.client.get(BALANCE, &server.client.token("g@example.com", PASSWORD)).json();
    assert_eq!(
        (b["balance"].as_i64(), b["held"].as_i64()),
        (Some(7), Some(0)),
        "the released holds' credits expired with their grant: {b}"
    );
    assert_eq!(query("SELECT count(*) FROM credit_grants WHERE remaining <> 0 AND amount = 10000"), 0);
    drop(server);
    let o = bin().args(["audit", "--db"]).arg(&db).output().unwrap();
    assert!(o.status.success(), "audit after the restart: {}", String::from_utf8_lossy(&o.stdout));
}
