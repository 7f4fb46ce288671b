//! Sign-in through an OpenID Connect provider, end to end against the fake
//! provider: the browser's redirects are followed by hand, so each hop and
//! each refusal is visible.

use crate::fake_oidc::{self, FakeOidc};
use crate::helpers::*;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use tollgate::config::OidcConfig;
use tollgate::domain::HttpUrl;

const FRONTEND: &str = "https://app.example.com/auth/done";

fn spawn(fake: &FakeOidc, adjust: impl FnOnce(&mut tollgate::config::Config)) -> TestApp {
    let provider = OidcConfig {
        issuer: HttpUrl::parse(&fake.base).unwrap(),
        client_id: fake_oidc::CLIENT_ID.into(),
        client_secret_env: "TEST_OIDC_SECRET".into(),
        scopes: vec!["openid".into(), "email".into()],
        allowed_domains: Vec::new(),
        redirect_uris: vec![HttpUrl::parse(FRONTEND).unwrap()],
        link_existing_by_email: false,
    };
    TestApp::spawn_with_secrets(&[("TEST_OIDC_SECRET", fake_oidc::CLIENT_SECRET)], |c| {
        c.oidc.insert("test".into(), provider);
        c.auth.signup_enabled = true;
        c.auth.signup_bonus_credits = 50;
        adjust(c);
    })
}

/// A browser that does not follow redirects.
fn browser() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).build().into()
}

/// GET `url`; (status, Location).
fn hop(url: &str) -> (u16, Option<String>, String) {
    let mut r = browser().get(url).call().expect("hop");
    let location = r.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = r.body_mut().read_to_string().unwrap_or_default();
    (r.status().as_u16(), location, body)
}

fn query_of(url: &str) -> HashMap<String, String> {
    url::Url::parse(url).expect("url").query_pairs().into_owned().collect()
}

/// The browser's trip: start -> provider -> callback; the URL the
/// frontend is finally sent to, and the callback URL (to replay it).
fn sign_in(app: &TestApp, state: Option<&str>) -> (String, String) {
    let mut start = format!("{}/v1/auth/oidc/test/start?redirect_uri={}", app.client.base, FRONTEND);
    if let Some(s) = state {
        start.push_str(&format!("&state={s}"));
    }
    let (status, to_provider, body) = hop(&start);
    assert_eq!(status, 302, "start: {body}");
    let to_provider = to_provider.expect("Location");
    let q = query_of(&to_provider);
    assert_eq!(q.get("code_challenge_method").map(String::as_str), Some("S256"), "PKCE");
    assert!(q.contains_key("nonce") && q.contains_key("state"));
    let (status, to_callback, _) = hop(&to_provider);
    assert_eq!(status, 302);
    let to_callback = to_callback.expect("Location");
    let (status, to_frontend, body) = hop(&to_callback);
    assert_eq!(status, 302, "callback: {body}");
    (to_frontend.expect("Location"), to_callback)
}

fn exchange(app: &TestApp, code: &str) -> Resp {
    let body = json!({ "code": code }).to_string();
    app.client.request("POST", "/v1/auth/oidc/exchange", None, &[], Some(body.as_bytes())).expect("exchange")
}

#[test]
fn the_whole_flow_signs_a_new_user_in_and_the_same_user_again() {
    let fake = FakeOidc::start();
    let app = spawn(&fake, |_| {});
    let users_before = app.count("users");
    let (to_frontend, _) = sign_in(&app, Some("frontend-state"));
    assert!(to_frontend.starts_with(FRONTEND), "{to_frontend}");
    let q = query_of(&to_frontend);
    assert_eq!(q.get("state").map(String::as_str), Some("frontend-state"), "the frontend's state comes back");
    assert!(!to_frontend.contains("access_token") && !to_frontend.contains("tgr_"), "no token in a URL");
    let code = q.get("code").expect("a one-time code").clone();

    let tokens = exchange(&app, &code);
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    let v = tokens.json();
    assert_eq!(v["user"]["email"], "oidc-user@example.com");
    let access = v["access_token"].as_str().unwrap();
    assert_eq!(app.client.me(access).json()["email"], "oidc-user@example.com");
    assert_eq!(app.client.balance(access).json()["balance"], 50, "the signup bonus");
    assert_eq!(app.count("users"), users_before + 1);
    let again = exchange(&app, &code);
    assert_eq!((again.status, again.error_code().as_str()), (400, "invalid_oidc_code"), "a code works once");
    let refreshed = app.client.request(
        "POST",
        "/v1/auth/refresh",
        None,
        &[],
        Some(json!({ "refresh_token": v["refresh_token"] }).to_string().as_bytes()),
    );
    assert_eq!(refreshed.unwrap().status, 200, "an OIDC session refreshes like any");

    // The second sign-in finds the same user by (issuer, subject), even
    // with another e-mail at the provider.
    fake.set(|s| s.email = "renamed@example.com".into());
    let (to_frontend, _) = sign_in(&app, None);
    let second = exchange(&app, &query_of(&to_frontend)["code"]).json();
    assert_eq!(second["user"]["id"], v["user"]["id"]);
    assert_eq!(app.count("users"), users_before + 1);
    assert_eq!(app.count_where("logs", "action = 'oidc_linked'"), 1);
    // A code not exchanged within its 60 s is refused (the clock moves).
    let (to_frontend, _) = sign_in(&app, None);
    app.sql_exec("UPDATE oidc_codes SET expires_at = expires_at - 61000 WHERE used_at IS NULL");
    let late = exchange(&app, &query_of(&to_frontend)["code"]);
    assert_eq!((late.status, late.error_code().as_str()), (400, "invalid_oidc_code"));
    // An account made this way has no password to guess.
    assert_eq!(app.client.login("oidc-user@example.com", "").status, 401);
}

#[test]
fn bad_id_tokens_replayed_states_and_unlisted_redirects_are_each_refused() {
    let fake = FakeOidc::start();
    let app = spawn(&fake, |_| {});
    let users_before = app.count("users");
    type Setter = fn(&mut fake_oidc::Script);
    let cases: [(&str, Setter); 4] = [
        ("wrong nonce", |s| s.wrong_nonce = true),
        ("wrong aud", |s| s.wrong_aud = true),
        ("expired", |s| s.expired = true),
        ("unknown key", |s| s.sign_with_key_2 = true),
    ];
    for (what, set) in cases {
        fake.set(|s| *s = fake_oidc::Script::default());
        fake.set(set);
        let (to_frontend, _) = sign_in(&app, None);
        let q = query_of(&to_frontend);
        assert_eq!(q.get("error").map(String::as_str), Some("oidc_token_invalid"), "{what}: {to_frontend}");
        assert!(!q.contains_key("code"), "{what}");
    }
    assert_eq!(app.count("users"), users_before, "no user was made");
    assert_eq!(app.count("oidc_codes"), 0);

    fake.set(|s| *s = fake_oidc::Script::default());
    let (_, callback) = sign_in(&app, None);
    let (status, _, body) = hop(&callback);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("invalid_oidc_state")), "a replayed state");

    let other = format!("{}/v1/auth/oidc/test/start?redirect_uri=https://evil.example.net/cb", app.client.base);
    let (status, location, body) = hop(&other);
    assert_eq!((status, location), (400, None));
    assert!(body.contains("redirect_uri_not_allowed"), "{body}");
    let (status, _, body) = hop(&format!("{}/v1/auth/oidc/nope/start?redirect_uri={FRONTEND}", app.client.base));
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("oidc_provider_not_found"));
    let start = format!("{}/v1/auth/oidc/test/start?redirect_uri={FRONTEND}&state=", app.client.base);
    let (status, _, _) = hop(&format!("{start}{}", "s".repeat(512)));
    assert_eq!(status, 302, "a frontend state of exactly 512 bytes");
    let (status, _, body) = hop(&format!("{start}{}", "s".repeat(513)));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"param\":\"state\""), "{body}");
    let (status, _, body) = hop(&format!("{}/v1/auth/oidc/test/callback?state=made-up&code=x", app.client.base));
    assert_eq!(status, 400);
    assert!(body.contains("invalid_oidc_state"));
}

#[test]
fn a_rotated_key_is_fetched_once_when_its_id_is_unknown() {
    let fake = FakeOidc::start();
    let app = spawn(&fake, |_| {});
    let (to_frontend, _) = sign_in(&app, None);
    assert!(query_of(&to_frontend).contains_key("code"));
    assert_eq!(fake.jwks_fetches.load(Ordering::SeqCst), 1, "discovery fetched the key set once");
    fake.set(|s| {
        s.sign_with_key_2 = true;
        s.publish_key_2 = true;
    });
    let (to_frontend, _) = sign_in(&app, None);
    assert!(query_of(&to_frontend).contains_key("code"), "{to_frontend}");
    assert_eq!(fake.jwks_fetches.load(Ordering::SeqCst), 2, "refetched on the unknown kid");
    let (to_frontend, _) = sign_in(&app, None);
    assert!(query_of(&to_frontend).contains_key("code"));
    assert_eq!(fake.jwks_fetches.load(Ordering::SeqCst), 2, "then cached");
}

#[test]
fn without_signup_only_existing_accounts_sign_in_and_domains_are_checked() {
    let fake = FakeOidc::start();
    let app = spawn(&fake, |c| c.auth.signup_enabled = false);
    let (to_frontend, _) = sign_in(&app, None);
    assert_eq!(query_of(&to_frontend).get("error").map(String::as_str), Some("signup_disabled"));

    // An account with the same verified e-mail is not taken over unless the
    // operator opted in (see the linking policy test).
    let r = app.client.create_user(&app.admin, json!({"email": "oidc-user@example.com", "password": PASSWORD}));
    assert_eq!(r.status, 201);
    let (to_frontend, _) = sign_in(&app, None);
    assert_eq!(query_of(&to_frontend).get("error").map(String::as_str), Some("oidc_account_exists"));
    assert_eq!(app.count("oidc_identities"), 0);

    // An unverified e-mail is never linked to an account.
    fake.set(|s| {
        s.subject = "subject-2".into();
        s.email_verified = false;
    });
    let (to_frontend, _) = sign_in(&app, None);
    assert_eq!(query_of(&to_frontend).get("error").map(String::as_str), Some("oidc_email_unverified"));

    let fake2 = FakeOidc::start();
    let app2 = spawn(&fake2, |c| c.oidc.get_mut("test").unwrap().allowed_domains = vec!["corp.example".into()]);
    let (to_frontend, _) = sign_in(&app2, None);
    assert_eq!(query_of(&to_frontend).get("error").map(String::as_str), Some("oidc_domain_not_allowed"));
    fake2.set(|s| s.email = "someone@corp.example".into());
    let (to_frontend, _) = sign_in(&app2, None);
    assert!(query_of(&to_frontend).contains_key("code"), "{to_frontend}");
}

/// The e-mail of the newest `oidc_linked` log's user, and how many
/// `user.identity_linked` events there are.
fn links(app: &TestApp) -> i64 {
    let logs = app.count_where("logs", "action = 'oidc_linked'");
    assert_eq!(logs, app.count_where("events", "type = 'user.identity_linked'"), "a log and an event per link");
    logs
}

#[test]
fn an_asserted_email_never_takes_over_an_admin_and_links_a_user_only_when_allowed() {
    for opt_in in [false, true] {
        let fake = FakeOidc::start();
        let app = spawn(&fake, |c| c.oidc.get_mut("test").unwrap().link_existing_by_email = opt_in);
        let ann = app.user("ann");

        // The provider asserts the administrator's verified address.
        fake.set(|s| {
            s.subject = "attacker".into();
            s.email = ADMIN_EMAIL.into();
        });
        let (to_frontend, _) = sign_in(&app, None);
        let q = query_of(&to_frontend);
        assert_eq!(q.get("error").map(String::as_str), Some("oidc_account_exists"), "opt-in {opt_in}");
        assert!(!q.contains_key("code"), "no sign-in as the admin");

        // A user's address links only with the opt-in, once.
        fake.set(|s| {
            s.subject = "ann-at-idp".into();
            s.email = ann.email.clone();
        });
        let (to_frontend, _) = sign_in(&app, None);
        let q = query_of(&to_frontend);
        if opt_in {
            let v = exchange(&app, &q["code"]).json();
            assert_eq!(v["user"]["id"].as_str(), Some(ann.id.as_str()));
            assert_eq!(links(&app), 1);
            let data: String = app.sql_one("SELECT data FROM events WHERE type = 'user.identity_linked'", &[]);
            let data: serde_json::Value = serde_json::from_str(&data).unwrap();
            assert_eq!(
                (data["user_id"].as_str(), data["existing_account"].as_bool()),
                (Some(ann.id.as_str()), Some(true))
            );
            assert_eq!(app.count_where("logs", "action = 'oidc_linked' AND success = 1"), 1);
            // Her account now has an identity: another subject with her
            // address cannot take it over.
            fake.set(|s| s.subject = "second-identity".into());
            let (to_frontend, _) = sign_in(&app, None);
            assert_eq!(query_of(&to_frontend).get("error").map(String::as_str), Some("oidc_account_exists"));
        } else {
            assert_eq!(q.get("error").map(String::as_str), Some("oidc_account_exists"));
            assert_eq!(links(&app), 0);
        }
        assert_eq!(app.count("oidc_identities"), i64::from(opt_in), "opt-in {opt_in}");
        // A new address still signs up (a new account is linked to its identity).
        fake.set(|s| {
            s.subject = "newcomer".into();
            s.email = "newcomer@example.com".into();
        });
        let (to_frontend, _) = sign_in(&app, None);
        assert!(query_of(&to_frontend).contains_key("code"), "{to_frontend}");
        assert_eq!(links(&app), 1 + i64::from(opt_in));
    }
}
