//! API keys with their own limits over HTTP: expiry, model allow-list,
//! rate, lifetime and daily spend limits, PATCH, admin-minted keys, and a
//! spend limit held exactly under 32 racing callers.

use crate::helpers::*;
use serde_json::{Value, json};
use std::sync::Arc;

fn create_key(app: &TestApp, token: &str, body: Value) -> (String, Value) {
    let r = app.client.create_key(token, body);
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    (v["key"].as_str().unwrap().to_owned(), v)
}

fn patch(app: &TestApp, token: &str, id: &str, body: Value) -> Resp {
    app.client
        .request("PATCH", &format!("/v1/api-keys/{id}"), Some(token), &[], Some(body.to_string().as_bytes()))
        .unwrap()
}

#[test]
fn a_key_enforces_its_daily_and_lifetime_spend_limits_and_shows_its_spend() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    app.grant(&ann, 10_000);
    let (key, v) =
        create_key(&app, &ann.token, json!({"name": "backend", "spend_limit": 100, "daily_spend_limit": 60}));
    assert_eq!(
        (v["spend_limit"].as_i64(), v["daily_spend_limit"].as_i64(), v["spent_total"].as_i64()),
        (Some(100), Some(60), Some(0))
    );
    assert!(v["models"].is_null() && v["expires_at"].is_null() && v["rpm"].is_null());
    let id = v["id"].as_str().unwrap().to_owned();

    assert_eq!(app.client.consume(&key, 50).status, 201);
    let r = app.client.consume(&key, 20);
    assert_eq!((r.status, r.error_code()), (429, "key_daily_limit_exceeded".to_owned()), "{}", r.text());
    assert!(r.wait_s().is_some());
    // The session token is not the key: its charges do not count.
    assert_eq!(app.consume(&ann, 20).status, 201);

    let r = patch(&app, &ann.token, &id, json!({"daily_spend_limit": null}));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (v["daily_spend_limit"].is_null(), v["spend_limit"].as_i64(), v["name"].as_str()),
        (true, Some(100), Some("backend"))
    );
    assert_eq!(app.client.consume(&key, 20).status, 201);
    let r = app.client.consume(&key, 40);
    assert_eq!((r.status, r.error_code()), (402, "key_spend_limit_exceeded".to_owned()), "{}", r.text());
    assert_eq!(app.client.consume(&key, 30).status, 201, "exactly to the limit");

    let listed = app.client.list_keys(&ann.token).json();
    let k = &listed["data"][0];
    assert_eq!((k["spent_total"].as_i64(), k["spent_today"].as_i64()), (Some(100), Some(100)));
    assert_eq!(app.balance(&ann)["balance"], 10_000 - 120);
    let a = app.audit();
    assert_eq!(a["valid"], true, "{a}");
}

#[test]
fn a_key_is_held_to_its_models_rate_and_expiry() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    app.grant(&ann, 10_000);
    let (key, _) = create_key(&app, &ann.token, json!({"name": "chat only", "models": ["dev-chat"]}));
    let models = app.client.get("/v1/models", &key).json();
    let names: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(names, ["dev-chat"]);
    let chat = json!({"model": "dev-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10});
    assert_eq!(app.client.chat(&key, chat).status, 200);
    let image = app.client.images(&key, json!({"model": "dev-image", "prompt": "a cat"}));
    assert_eq!((image.status, image.error_code()), (403, "model_not_allowed".to_owned()), "{}", image.text());
    let job = app
        .client
        .create_job(&key, json!({"type": "image_generation", "model": "dev-image", "input": {"prompt": "a cat"}}));
    assert_eq!(job.error_code(), "model_not_allowed", "{}", job.text());

    let (slow, _) = create_key(&app, &ann.token, json!({"name": "slow", "rpm": 2}));
    assert_eq!(app.client.balance(&slow).status, 200);
    assert_eq!(app.client.balance(&slow).status, 200);
    let r = app.client.balance(&slow);
    assert_eq!((r.status, r.error_code()), (429, "rate_limited".to_owned()));
    assert_eq!(app.client.balance(&ann.token).status, 200, "the user's other credentials are not slowed");

    let (brief, _) = create_key(&app, &ann.token, json!({"name": "brief", "expires_at": rfc3339_in(800)}));
    assert_eq!(app.client.balance(&brief).status, 200);
    std::thread::sleep(std::time::Duration::from_millis(900));
    let r = app.client.balance(&brief);
    assert_eq!((r.status, r.error_code()), (401, "unauthorized".to_owned()));
    assert!(r.text().contains("expired"), "{}", r.text());
}

#[test]
fn key_limits_are_validated_and_a_refused_change_changes_nothing() {
    let app = TestApp::spawn();
    let (ann, bob) = (app.user("ann"), app.user("bob"));
    for (bad, param) in [
        (json!({"name": "k", "models": ["no-such-model"]}), "models"),
        (json!({"name": "k", "models": []}), "models"),
        (json!({"name": "k", "spend_limit": -1}), "spend_limit"),
        (json!({"name": "k", "daily_spend_limit": -5}), "daily_spend_limit"),
        (json!({"name": "k", "rpm": 0}), "rpm"),
        (json!({"name": "k", "expires_at": "2001-01-01T00:00:00Z"}), "expires_at"),
        (json!({"spend_limit": 5}), "name"),
    ] {
        let r = app.client.create_key(&ann.token, bad.clone());
        assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some(param)), "{bad}: {}", r.text());
    }
    assert_eq!(app.count("api_keys"), 0);
    let (_, v) = create_key(&app, &ann.token, json!({"name": "k", "spend_limit": 10}));
    let id = v["id"].as_str().unwrap();
    let r = patch(&app, &ann.token, id, json!({"rpm": -3}));
    assert_eq!(r.status, 400);
    assert_eq!(app.client.list_keys(&ann.token).json()["data"][0]["rpm"], Value::Null);
    assert_eq!(patch(&app, &bob.token, id, json!({"spend_limit": 999})).status, 404, "another user's key");
    assert_eq!(patch(&app, &ann.token, id, json!({"limit": 1})).status, 400, "unknown fields are refused");
    let r = patch(&app, &ann.token, id, json!({"name": "renamed", "models": ["dev-chat", "dev-chat"]}));
    assert_eq!(
        (r.status, r.json()["models"].clone(), r.json()["spend_limit"].as_i64()),
        (200, json!(["dev-chat"]), Some(10))
    );
}

#[test]
fn an_admin_mints_a_scoped_key_for_a_user_and_sees_the_user_whole() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    let g = app.client.post(
        &format!("/v1/admin/users/{}/grants", ann.id),
        &app.admin,
        json!({"amount": 500, "expires_at": rfc3339_in(86_400_000)}),
    );
    assert_eq!(g.status, 201);
    let r = app.client.post(
        &format!("/v1/admin/users/{}/api-keys", ann.id),
        &app.admin,
        json!({"name": "from the product", "spend_limit": 50}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let key = r.json()["key"].as_str().unwrap().to_owned();
    assert_eq!(app.client.consume(&key, 7).status, 201);
    let me = app.client.me(&key).json();
    assert_eq!(me["id"].as_str(), Some(ann.id.as_str()), "the key is the user's");
    let keys = app.client.get(&format!("/v1/admin/users/{}/api-keys", ann.id), &app.admin).json();
    assert_eq!((keys["data"][0]["spent_total"].as_i64(), keys["data"][0]["spend_limit"].as_i64()), (Some(7), Some(50)));
    let r = app.client.post("/v1/admin/users/usr_99999/api-keys", &app.admin, json!({"name": "x"}));
    assert_eq!(r.status, 404);
    let r = app
        .client
        .request(
            "POST",
            &format!("/v1/admin/users/{}/api-keys", ann.id),
            Some(&app.admin),
            &[("Idempotency-Key", "k1")],
            Some(br#"{"name":"x"}"#),
        )
        .unwrap();
    assert_eq!(r.error_code(), "idempotency_not_supported", "a minted key is never stored for replay");

    let d = app.client.get(&format!("/v1/admin/users/{}", ann.id), &app.admin).json();
    assert_eq!(
        (d["object"].as_str(), d["email"].as_str(), d["balance"].as_i64(), d["available"].as_i64()),
        (Some("user"), Some("ann@example.com"), Some(493), Some(493))
    );
    assert_eq!((d["active_grants"].as_array().unwrap().len(), d["next_expiry"]["amount"].as_i64()), (1, Some(493)));
    assert_eq!(d["limits"]["spent_today"], 7);
    assert!(d["deactivated_at"].is_null());
    let txns = app.client.get(&format!("/v1/admin/users/{}/transactions", ann.id), &app.admin).json();
    assert_eq!(txns["data"].as_array().unwrap().len(), 2);
    let jobs = app.client.get(&format!("/v1/admin/users/{}/jobs", ann.id), &app.admin);
    assert_eq!((jobs.status, jobs.json()["data"].as_array().unwrap().len()), (200, 0));
    let found = app.client.get("/v1/admin/users?email=ANN@", &app.admin).json();
    assert_eq!(found["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.client.get("/v1/admin/users?email=%25", &app.admin).json()["data"].as_array().unwrap().len(),
        0,
        "% is literal"
    );

    assert_eq!(
        app.client
            .request("DELETE", &format!("/v1/admin/users/{}", ann.id), Some(&app.admin), &[], None)
            .unwrap()
            .status,
        200
    );
    assert_eq!(app.client.me(&key).status, 401);
    let d = app.client.get(&format!("/v1/admin/users/{}", ann.id), &app.admin).json();
    assert!(d["deactivated_at"].is_string(), "{d}");
    let r = app.client.post(&format!("/v1/admin/users/{}/reactivate", ann.id), &app.admin, json!({}));
    assert_eq!((r.status, r.json()["deactivated_at"].is_null()), (200, true));
    assert_eq!(app.client.me(&key).status, 200, "the key works again");
    assert_eq!(app.client.me(&ann.token).status, 401, "sessions ended by the deactivation stay ended");
    assert_eq!(app.client.post("/v1/admin/users/usr_99999/reactivate", &app.admin, json!({})).status, 404);
}

#[test]
fn an_admin_edits_and_revokes_a_users_key_and_changes_their_role() {
    let app = TestApp::spawn();
    let (ann, bob) = (app.user("ann"), app.user("bob"));
    app.grant(&ann, 1_000);
    let (key, v) = create_key(&app, &ann.token, json!({"name": "backend", "spend_limit": 100}));
    let id = v["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/admin/users/{}/api-keys/{id}", ann.id);
    let admin_id = app.client.me(&app.admin).json()["id"].as_str().unwrap().to_owned();
    let r = app.client.patch(
        &path,
        &app.admin,
        json!({"name": "renamed", "spend_limit": 5, "models": ["dev-chat"], "expires_at": rfc3339_in(86_400_000)}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (v["name"].as_str(), v["spend_limit"].as_i64(), v["models"].clone()),
        (Some("renamed"), Some(5), json!(["dev-chat"]))
    );
    assert!(v["expires_at"].is_string(), "{v}");
    assert_eq!(app.client.consume(&key, 6).error_code(), "key_spend_limit_exceeded", "the new limit holds at once");
    let log = app
        .sql_one::<String>("SELECT details FROM logs WHERE action = 'api_key_updated' ORDER BY id DESC LIMIT 1", &[]);
    assert!(log.contains(&admin_id), "the log names the admin: {log}");
    // Bad input, another user's key, an unknown key: nothing changes.
    let count = app.count("logs");
    assert_eq!(app.client.patch(&path, &app.admin, json!({"rpm": 0})).status, 400);
    assert_eq!(app.client.patch(&path, &app.admin, json!({"models": ["no-such-model"]})).status, 400);
    let other = format!("/v1/admin/users/{}/api-keys/{id}", bob.id);
    assert_eq!(app.client.patch(&other, &app.admin, json!({"name": "x"})).error_code(), "not_found");
    assert_eq!(app.client.delete(&other, &app.admin).status, 404, "the key is not bob's");
    let r = app.client.patch(&format!("/v1/admin/users/{}/api-keys/key_999999", ann.id), &app.admin, json!({}));
    assert_eq!(r.status, 404);
    assert_eq!(app.count("logs"), count, "refusals changed nothing");
    assert_eq!(app.client.consume(&key, 5).status, 201);

    let r = app.client.delete(&path, &app.admin);
    assert_eq!((r.status, r.json()["deleted"].as_bool()), (200, Some(true)), "{}", r.text());
    assert_eq!(app.client.me(&key).status, 401, "a revoked key stops at once");
    assert_eq!(app.client.delete(&path, &app.admin).status, 404, "revoked once");

    // The role: ann becomes an admin on her next request, with the same token.
    let users = format!("/v1/admin/users/{}", ann.id);
    assert_eq!(app.client.get("/v1/admin/users", &ann.token).status, 403);
    let r = app.client.patch(&users, &app.admin, json!({"role": "admin"}));
    assert_eq!(
        (r.status, r.json()["role"].as_str(), r.json()["price_group"].clone()),
        (200, Some("admin"), Value::Null),
        "{}",
        r.text()
    );
    assert_eq!(app.client.get("/v1/admin/users", &ann.token).status, 200);
    for bad in [json!({"role": "root"}), json!({"role": null}), json!({"role": 1})] {
        assert_eq!(app.client.patch(&users, &app.admin, bad.clone()).status, 400, "{bad}");
    }
    let me = format!("/v1/admin/users/{}", admin_id);
    let r = app.client.patch(&me, &app.admin, json!({"role": "user"}));
    assert_eq!((r.status, r.error_code().as_str()), (400, "invalid_request"), "an admin keeps their own role");
    let r = app.client.patch(&users, &ann.token, json!({"role": "user"}));
    assert_eq!(r.status, 400, "nor can ann drop her own");
    let r = app.client.patch(&users, &app.admin, json!({"role": "user"}));
    assert_eq!((r.status, r.json()["role"].as_str()), (200, Some("user")), "another admin may");
    assert_eq!(app.client.get("/v1/admin/users", &ann.token).status, 403);
    assert_eq!(app.client.patch("/v1/admin/users/usr_99999", &app.admin, json!({"role": "user"})).status, 404);
}

#[test]
fn thirty_two_callers_racing_through_one_key_stop_exactly_at_its_spend_limit() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    app.grant(&ann, 100_000);
    const LIMIT: i64 = 1_000;
    let (key, _) = create_key(&app, &ann.token, json!({"name": "shared", "spend_limit": LIMIT}));
    let key = Arc::new(key);
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let (client, key) = (app.client.clone(), Arc::clone(&key));
            std::thread::spawn(move || {
                let mut ok = 0i64;
                for _ in 0..100 {
                    let r = client.consume(&key, 1);
                    match r.status {
                        201 => ok += 1,
                        402 => assert_eq!(r.error_code(), "key_spend_limit_exceeded"),
                        s => panic!("unexpected {s}: {}", r.text()),
                    }
                }
                ok
            })
        })
        .collect();
    let ok: i64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(ok, LIMIT, "exactly the charges that fit");
    let k = &app.client.list_keys(&ann.token).json()["data"][0];
    assert_eq!(k["spent_total"].as_i64(), Some(LIMIT));
    assert_eq!(app.balance(&ann)["balance"], 100_000 - LIMIT);
    let a = app.audit();
    assert_eq!(a["valid"], true, "{a}");
}

/// Who could change what a refused credential call might have changed:
/// keys and their limits, sessions, users and passwords, webhooks, money.
fn account_state(app: &TestApp) -> Vec<String> {
    [
        "SELECT count(*) FROM api_keys",
        "SELECT count(*) FROM api_keys WHERE revoked_at IS NULL",
        "SELECT CAST(COALESCE(SUM(COALESCE(spend_limit, -1) + COALESCE(rpm, -1) + length(COALESCE(models, ''))), 0) AS BIGINT)
         FROM api_keys",
        "SELECT count(*) FROM sessions WHERE revoked_at IS NULL",
        "SELECT count(*) FROM users",
        "SELECT count(*) FROM users WHERE role = 'admin'",
        "SELECT count(*) FROM password_resets",
        "SELECT count(*) FROM webhook_endpoints",
        "SELECT count(*) FROM credit_transactions",
        "SELECT count(*) FROM credit_grants",
        "SELECT count(*) FROM redemption_codes",
        "SELECT count(*) FROM user_limits",
    ]
    .iter()
    .map(|sql| app.sql_one::<i64>(sql, &[]).to_string())
    .chain(
        [ADMIN_EMAIL, "ann@example.com"]
            .map(|e| app.sql_one::<String>("SELECT password_hash FROM users WHERE email = ?1", &[&e])),
    )
    .collect()
}

/// A body that would do the route's harm if it were let through.
fn harmful_body(method: &str, path: &str) -> Option<String> {
    let body = match (method, path) {
        ("GET" | "DELETE", _) => return None,
        (_, API_KEYS | "/v1/admin/users/{id}/api-keys") => json!({"name": "escalated"}),
        (_, "/v1/api-keys/{id}" | "/v1/admin/users/{id}/api-keys/{key_id}") => {
            json!({"spend_limit": null, "models": null, "rpm": null})
        }
        (_, "/v1/admin/users/{id}") => json!({"role": "admin"}),
        (_, "/v1/me/password") => json!({"current_password": PASSWORD, "new_password": "taken-over-password-9"}),
        (_, ADMIN_USERS) => json!({"email": "mallory@example.com", "password": PASSWORD, "role": "admin"}),
        (_, "/v1/admin/users/{id}/credits" | "/v1/admin/users/{id}/grants") => {
            json!({"amount": 500, "description": "free money"})
        }
        (_, "/v1/admin/users/{id}/limits") => json!({"rpm": null, "daily_cap": null}),
        (_, "/v1/admin/codes") => json!({"amount": 500, "count": 1}),
        (_, ADMIN_WEBHOOKS) => json!({"url": "http://127.0.0.1:9/hook"}),
        _ => json!({}),
    };
    Some(body.to_string())
}

#[test]
fn a_key_cannot_manage_credentials_or_the_account_while_a_session_can() {
    use tollgate::http::route::Access;
    use tollgate::http::router::routes;
    let app = TestApp::spawn();
    let ann = app.user("ann");
    app.grant(&ann, 1_000);
    let (limited, v) =
        create_key(&app, &ann.token, json!({"name": "scoped", "models": ["dev-chat"], "spend_limit": 10, "rpm": 100}));
    let key_id = v["id"].as_str().unwrap().to_owned();
    let (admin_key, _) = create_key(&app, &app.admin, json!({"name": "admin automation"}));
    let before = account_state(&app);

    let guarded: Vec<_> = routes().filter(|r| r.access != Access::Public && !r.access.allows_api_keys()).collect();
    assert!(guarded.len() > 30, "every credential, account and admin route");
    for key in [&limited, &admin_key] {
        for r in &guarded {
            let path = r
                .path
                .replace("/api-keys/{id}", &format!("/api-keys/{key_id}"))
                .replace("{key_id}", &key_id)
                .replace("{id}", &ann.id);
            let body = harmful_body(r.method, r.path);
            let resp = app.client.request(r.method, &path, Some(key), &[], body.as_deref().map(str::as_bytes)).unwrap();
            let who = if key == &limited { "a user's scoped key" } else { "an admin's key" };
            assert_eq!(resp.status, 403, "{who} on {} {path}: {}", r.method, resp.text());
            let code = resp.error_code();
            if key == &admin_key || r.access == Access::Session {
                assert_eq!(code, "key_not_allowed", "{} {path}", r.method);
                assert!(resp.text().contains(r.path), "the message names the route: {}", resp.text());
            } else {
                assert_eq!(code, "forbidden", "a user's key on an admin route: {}", resp.text());
            }
        }
    }
    assert_eq!(account_state(&app), before, "refused calls changed nothing");

    // The escalation the probe found: the scoped key is still scoped.
    let r = app.client.chat(&limited, json!({"model": "dev-image", "messages": []}));
    assert_eq!(r.error_code(), "model_not_allowed");
    assert_eq!(app.client.consume(&limited, 11).status, 402);
    assert_eq!(app.client.get("/v1/models/dev-chat", &limited).status, 200);
    let r = app.client.get("/v1/models/dev-image", &limited);
    assert_eq!((r.status, r.error_code()), (404, "model_not_found".to_owned()), "a model the key may not use");
    assert_eq!(app.client.get("/v1/models/dev-image", &ann.token).status, 200);

    // What a key is for: spending and reading what it spends.
    for path in [ME, BALANCE, TRANSACTIONS, "/v1/usage", "/v1/limits", JOBS] {
        assert_eq!(app.client.get(path, &limited).status, 200, "{path}");
    }
    assert_eq!(app.client.consume(&limited, 3).status, 201);

    // A session does all of it.
    let r = app.client.create_key(&ann.token, json!({"name": "another"}));
    assert_eq!(r.status, 201, "{}", r.text());
    let r = patch(&app, &ann.token, &key_id, json!({"spend_limit": null, "models": null}));
    assert_eq!((r.status, r.json()["spend_limit"].is_null()), (200, true), "{}", r.text());
    assert_eq!(app.client.list_keys(&ann.token).json()["data"].as_array().unwrap().len(), 2);
    let del = app.client.request("DELETE", &format!("/v1/api-keys/{key_id}"), Some(&ann.token), &[], None).unwrap();
    assert_eq!(del.status, 200);
    assert_eq!(app.client.me(&limited).status, 401, "revoked");
    let r = app.client.post(
        "/v1/me/password",
        &ann.token,
        json!({"current_password": PASSWORD, "new_password": "a-new-password-42"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(app.client.post("/v1/auth/logout-all", &ann.token, json!({})).status, 200);
    let minted = app.client.post(&format!("/v1/admin/users/{}/api-keys", ann.id), &app.admin, json!({"name": "m"}));
    assert_eq!(minted.status, 201);

    // The document says which credential each route takes.
    let doc = app.client.get("/openapi.json", &app.admin).json();
    let security = |path: &str, method: &str| doc["paths"][path][method]["security"].clone();
    assert_eq!(security(API_KEYS, "post"), json!([{"session": []}]));
    assert_eq!(security(ADMIN_USERS, "get"), json!([{"session": []}]));
    assert_eq!(security(CHAT, "post"), json!([{"session": []}, {"api_key": []}]));
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
}
