//! Identity: login, tokens, API keys, roles. Every refusal is a 401/403 in
//! the contract's shape.

use crate::helpers::*;
use base64::Engine;
use serde_json::json;

fn b64(v: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn login_gives_a_token_that_identifies_the_user_on_me() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    let r = app.client.login(&ann.email, PASSWORD);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 900, "access tokens are short");
    assert!(v["refresh_token"].as_str().is_some_and(|t| t.starts_with("tgr_")), "{v}");
    assert_eq!(v["refresh_expires_in"], 30 * 86_400);
    assert_eq!(v["user"]["id"], ann.id.as_str());
    let me = app.client.get(ME, v["access_token"].as_str().unwrap());
    assert_eq!(me.status, 200);
    let me = me.json();
    assert_eq!(me["id"], ann.id.as_str());
    assert_eq!(me["object"], "user");
    assert_eq!(me["role"], "user");
    assert_eq!(me["email"], "ann@example.com");
    assert!(me["created_at"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn wrong_password_and_unknown_email_get_the_same_401() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    let wrong = app.client.login(&ann.email, "not-the-password");
    let unknown = app.client.login("nobody@example.com", PASSWORD);
    assert_eq!((wrong.status, unknown.status), (401, 401));
    assert_eq!(wrong.error_code(), "unauthorized");
    assert_eq!(wrong.json()["error"]["message"], unknown.json()["error"]["message"]);
    // The failed login is in the user's business log, without the password.
    let logs = app.client.get("/v1/logs", &ann.token).json();
    let failed = logs["data"].as_array().unwrap().iter().find(|l| l["action"] == "login" && l["success"] == false);
    let failed = failed.expect("a failed login entry");
    assert!(!failed.to_string().contains("not-the-password"));
}

#[test]
fn forged_expired_and_malformed_credentials_are_refused_with_401() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    let claims = json!({"sub": ann.id, "role": "admin", "iat": now_s(), "exp": now_s() + 600});
    let other_secret = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"some other secret"),
    )
    .unwrap();
    let alg_none = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&claims));
    // Re-sign ann's real token payload with HS512 under a guessed key: other algorithms are refused.
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"x"),
    )
    .unwrap();
    // A token with the right secret but expired long ago: sign it with the
    // server's secret read from the database file (an operator could).
    let secret: String = app.sql_one("SELECT value FROM settings WHERE key = 'jwt_secret'", &[]);
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": ann.id, "role": "user", "iat": now_s() - 7200, "exp": now_s() - 3600}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let valid_with_server_secret = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": ann.id, "role": "user", "iat": now_s(), "exp": now_s() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    // Control: the same construction with a live expiry is accepted.
    assert_eq!(app.client.me(&valid_with_server_secret).status, 200);

    for (what, header) in [
        ("another secret", format!("Bearer {other_secret}")),
        ("alg none", format!("Bearer {alg_none}")),
        ("HS512", format!("Bearer {hs512}")),
        ("expired", format!("Bearer {expired}")),
        ("garbage", "Bearer not.a.jwt".to_owned()),
        ("no scheme", ann.token.clone()),
        ("basic scheme", format!("Basic {}", ann.token)),
        ("bad api key", format!("Bearer tg_{}", "0".repeat(64))),
        ("short api key", "Bearer tg_123".to_owned()),
    ] {
        let r = app.client.request("GET", ME, None, &[("Authorization", &header)], None).unwrap();
        assert_eq!(r.status, 401, "{what} should be refused: {}", r.text());
        assert_eq!(r.error_code(), "unauthorized", "{what}");
    }
    let r = app.client.request("GET", BALANCE, None, &[("X-User-Id", &ann.id)], None).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.error_code(), "unauthorized");
}

#[test]
fn x_user_id_never_changes_who_the_caller_is() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    let bob = app.user("bob");
    app.grant(&bob, 50);
    let r = app.client.request("GET", BALANCE, Some(&ann.token), &[("X-User-Id", &bob.id)], None).unwrap();
    assert_eq!(r.json()["balance"], 0, "ann must see her own balance, not bob's");
}

#[test]
fn users_see_only_their_own_logs_and_get_403_on_admin_routes() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    let bob = app.user("bob");
    app.grant(&bob, 10);
    let logs = app.client.get("/v1/logs", &ann.token).json();
    assert_eq!(logs["object"], "list");
    let data = logs["data"].as_array().unwrap();
    assert!(!data.is_empty());
    assert!(data.iter().all(|l| l["log_type"] == "business"));
    assert!(!logs.to_string().contains("credits_changed"), "bob's grant leaked into ann's logs: {logs}");
    for path in [ADMIN_USERS, "/v1/admin/logs", ADMIN_AUDIT] {
        let r = app.client.get(path, &ann.token);
        assert_eq!(r.status, 403, "{path}");
        assert_eq!(r.error_code(), "forbidden");
    }
    let r = app.client.post(
        &format!("/v1/admin/users/{}/credits", ann.id),
        &ann.token,
        json!({"amount": 1000, "description": "self"}),
    );
    assert_eq!(r.status, 403);
    assert_eq!(app.balance(&ann)["balance"], 0);
    // The admin can filter everyone's logs by user.
    let r = app.client.get(&format!("/v1/admin/logs?log_type=business&user_id={}", bob.id), &app.admin).json();
    let rows = r["data"].as_array().unwrap();
    assert!(!rows.is_empty() && rows.iter().all(|l| l["user_id"] == bob.id.as_str()));
}

#[test]
fn api_keys_work_until_revoked_and_are_shown_once() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    let bob = app.user("bob");
    let r = app.client.create_key(&ann.token, json!({"name": "ci"}));
    assert_eq!(r.status, 201, "{}", r.text());
    let created = r.json();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("tg_") && key.len() == 67);
    assert_eq!(app.client.me(&key).json()["id"], ann.id.as_str());
    let list = app.client.list_keys(&ann.token).json();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains(&key), "the key must not be listed");
    let stored: i64 = app
        .sql_one("SELECT count(*) FROM api_keys WHERE key_hash LIKE ?1", rusqlite::params![format!("%{}%", &key[3..])]);
    assert_eq!(stored, 0, "the plaintext key must not be stored");
    let id = created["id"].as_str().unwrap();
    // Bob cannot revoke ann's key: to him it does not exist.
    let r = app.client.request("DELETE", &format!("/v1/api-keys/{id}"), Some(&bob.token), &[], None).unwrap();
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    let r = app.client.request("DELETE", &format!("/v1/api-keys/{id}"), Some(&ann.token), &[], None).unwrap();
    assert_eq!(r.status, 200);
    let r = app.client.me(&key);
    assert_eq!((r.status, r.error_code().as_str()), (401, "unauthorized"));
}

#[test]
fn a_deactivated_users_tokens_and_keys_stop_working() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    let key = app.client.create_key(&ann.token, json!({"name": "k"})).json()["key"].as_str().unwrap().to_owned();
    let r = app.client.request("DELETE", &format!("/v1/admin/users/{}", ann.id), Some(&app.admin), &[], None).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(app.client.me(&ann.token).status, 401);
    assert_eq!(app.client.me(&key).status, 401);
    assert_eq!(app.client.login(&ann.email, PASSWORD).status, 401);
}

#[test]
fn signup_is_refused_unless_enabled_and_then_grants_the_bonus_through_the_ledger() {
    let app = TestApp::spawn();
    let body = json!({"email": "new@example.com", "password": PASSWORD}).to_string();
    let r = app.client.request("POST", "/v1/auth/signup", None, &[], Some(body.as_bytes())).unwrap();
    assert_eq!((r.status, r.error_code().as_str()), (403, "forbidden"));
    assert_eq!(app.count("users"), 1);

    let app = TestApp::spawn_with(|c| {
        c.auth.signup_enabled = true;
        c.auth.signup_bonus_credits = 25;
    });
    let r = app.client.request("POST", "/v1/auth/signup", None, &[], Some(body.as_bytes())).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let token = app.client.token("new@example.com", PASSWORD);
    let tx = app.client.transactions(&token).json();
    assert_eq!(tx["data"][0]["kind"], "grant");
    assert_eq!(tx["data"][0]["amount"], 25);
    let again = app.client.request("POST", "/v1/auth/signup", None, &[], Some(body.as_bytes())).unwrap();
    assert_eq!((again.status, again.error_code().as_str()), (409, "email_taken"));
}

#[test]
fn tokens_stay_valid_across_a_restart_because_the_secret_is_stored_once() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    let app = app.restart();
    let r = app.client.me(&ann.token);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], ann.id.as_str());
}
