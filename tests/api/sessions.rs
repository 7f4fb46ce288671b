//! A frontend on tollgate: CORS, sessions that rotate, logout, passwords
//! changed and reset. Everything over real HTTP against a running service.

use crate::helpers::*;
use serde_json::{Value, json};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use tollgate::domain::Origin;

const ORIGIN: &str = "https://app.example.com";

fn post_anon(app: &TestApp, path: &str, body: Value) -> Resp {
    app.client.request("POST", path, None, &[], Some(body.to_string().as_bytes())).expect("POST")
}

fn options(app: &TestApp, path: &str, origin: &str) -> Resp {
    let headers = [
        ("Origin", origin),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "authorization, content-type, idempotency-key"),
    ];
    app.client.request("OPTIONS", path, None, &headers, None).expect("OPTIONS")
}

/// A login's (access token, refresh token).
fn session(app: &TestApp, email: &str, password: &str) -> (String, String) {
    let r = app.client.login(email, password);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    (v["access_token"].as_str().unwrap().to_owned(), v["refresh_token"].as_str().unwrap().to_owned())
}

fn refresh(app: &TestApp, token: &str) -> Resp {
    post_anon(app, "/v1/auth/refresh", json!({ "refresh_token": token }))
}

fn me_status(app: &TestApp, access: &str) -> u16 {
    app.client.me(access).status
}

#[test]
fn cors_answers_allowed_origins_and_gives_nothing_to_others() {
    let app = TestApp::spawn_with(|c| c.server.cors_origins = vec![Origin::parse(ORIGIN).unwrap()]);
    let ann = app.user("ann");

    let pre = options(&app, CONSUME, ORIGIN);
    assert_eq!(pre.status, 204, "{}", pre.text());
    assert_eq!(pre.header("access-control-allow-origin"), Some(ORIGIN));
    let methods = pre.header("access-control-allow-methods").unwrap_or_default();
    assert!(["GET", "POST", "PATCH", "DELETE"].iter().all(|m| methods.contains(m)), "{methods}");
    let allowed = pre.header("access-control-allow-headers").unwrap_or_default().to_ascii_lowercase();
    assert!(["authorization", "content-type", "idempotency-key"].iter().all(|h| allowed.contains(h)), "{allowed}");
    assert_eq!(pre.header("access-control-max-age"), Some("600"));
    assert_eq!(pre.header("access-control-allow-credentials"), None, "no credentials mode");

    let other = options(&app, CONSUME, "https://evil.example.net");
    assert_eq!((other.status, other.error_code().as_str()), (403, "cors_origin_not_allowed"));
    assert_eq!(other.header("access-control-allow-origin"), None);

    let get = |origin: &str| app.client.request("GET", BALANCE, Some(&ann.token), &[("Origin", origin)], None).unwrap();
    let ok = get(ORIGIN);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("access-control-allow-origin"), Some(ORIGIN));
    let exposed = ok.header("access-control-expose-headers").unwrap_or_default();
    for h in ["X-RateLimit-Remaining", "Retry-After", "Idempotent-Replayed", "X-Request-Id"] {
        assert!(exposed.contains(h), "{h} not exposed: {exposed}");
    }
    assert_eq!(ok.header("vary"), Some("Origin"));
    let theirs = get("https://evil.example.net");
    assert_eq!((theirs.status, theirs.header("access-control-allow-origin")), (200, None));
    assert_eq!(theirs.header("access-control-expose-headers"), None);

    // An error is readable by the allowed frontend too (it must show it).
    let denied = app.client.request("GET", ME, Some("nope"), &[("Origin", ORIGIN)], None).unwrap();
    assert_eq!((denied.status, denied.header("access-control-allow-origin")), (401, Some(ORIGIN)));

    // The connection layer's refusals carry them too: a 413 for a body over
    // the limit, a 431 for a head over it (the browser shows the message).
    let big = vec![b'x'; 2 << 20];
    let r = app.client.request("POST", CONSUME, Some(&ann.token), &[("Origin", ORIGIN)], Some(&big)).unwrap();
    assert_eq!((r.status, r.header("access-control-allow-origin")), (413, Some(ORIGIN)), "{}", r.text());
    let huge = "h".repeat(20_000);
    let r = app.client.request("GET", BALANCE, None, &[("Origin", ORIGIN), ("X-Padding", &huge)], None).unwrap();
    assert_eq!((r.status, r.header("access-control-allow-origin")), (431, Some(ORIGIN)), "{}", r.text());
    let r = app.client.request("POST", CONSUME, None, &[("Origin", "https://evil.example.net")], Some(&big)).unwrap();
    assert_eq!((r.status, r.header("access-control-allow-origin")), (413, None));
    // A plain OPTIONS (no preflight) says what the path takes.
    let r = app.client.request("OPTIONS", CONSUME, None, &[], None).unwrap();
    assert_eq!((r.status, r.header("allow")), (204, Some("POST, OPTIONS")), "{}", r.text());
    let r = app.client.request("OPTIONS", "/v1/nope", None, &[], None).unwrap();
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));

    // Without cors_origins: no CORS at all.
    let plain = TestApp::spawn();
    let pre = options(&plain, CONSUME, ORIGIN);
    assert_eq!((pre.status, pre.error_code().as_str()), (403, "cors_origin_not_allowed"));
    let r = plain.client.request("GET", "/healthz", None, &[("Origin", ORIGIN)], None).unwrap();
    assert_eq!((r.header("access-control-allow-origin"), r.header("vary")), (None, None));
}

#[test]
fn a_refresh_rotates_and_a_retired_token_coming_back_ends_the_session() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    let (a1, r1) = session(&app, &ann.email, PASSWORD);
    let next = refresh(&app, &r1);
    assert_eq!(next.status, 200, "{}", next.text());
    let v = next.json();
    let (a2, r2) = (v["access_token"].as_str().unwrap().to_owned(), v["refresh_token"].as_str().unwrap().to_owned());
    assert_ne!(r1, r2);
    assert_eq!((v["expires_in"].as_u64(), v["token_type"].as_str()), (Some(900), Some("Bearer")));
    assert_eq!((me_status(&app, &a1), me_status(&app, &a2)), (200, 200), "the session's tokens all work");

    let again = refresh(&app, &r1);
    assert_eq!((again.status, again.error_code().as_str()), (401, "refresh_token_reused"));
    let after = refresh(&app, &r2);
    assert_eq!((after.status, after.error_code().as_str()), (401, "invalid_refresh_token"), "the family ended");
    assert_eq!((me_status(&app, &a1), me_status(&app, &a2)), (401, 401), "its access tokens stop at once");
    assert_eq!(app.count_where("logs", "action = 'refresh_token_reused'"), 1);
    assert_eq!(app.count_where("logs", "action = 'token_refreshed'"), 1);

    for (body, code) in [
        (json!({ "refresh_token": "tgr_nope" }), "invalid_refresh_token"),
        (json!({ "refresh_token": format!("tgr_{}", "0".repeat(64)) }), "invalid_refresh_token"),
        (json!({}), "invalid_request"),
        (json!({ "refresh_token": r2, "extra": 1 }), "invalid_request"),
    ] {
        let r = post_anon(&app, "/v1/auth/refresh", body.clone());
        assert_eq!(r.error_code(), code, "{body}");
    }
}

#[test]
fn two_refreshes_with_one_token_at_once_one_wins_and_the_family_ends() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    for round in 0..5 {
        let (_, token) = session(&app, &ann.email, PASSWORD);
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let (client, barrier, token) = (app.client.clone(), Arc::clone(&barrier), token.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let body = json!({ "refresh_token": token }).to_string();
                    client.request("POST", "/v1/auth/refresh", None, &[], Some(body.as_bytes())).unwrap()
                })
            })
            .collect();
        let mut answers: Vec<Resp> = racers.into_iter().map(|h| h.join().unwrap()).collect();
        answers.sort_by_key(|r| r.status);
        assert_eq!((answers[0].status, answers[1].status), (200, 401), "round {round}");
        assert_eq!(answers[1].error_code(), "refresh_token_reused");
        // The winner's pair belonged to the family that just ended.
        let won = answers[0].json();
        assert_eq!(me_status(&app, won["access_token"].as_str().unwrap()), 401, "round {round}");
        let r = refresh(&app, won["refresh_token"].as_str().unwrap());
        assert_eq!(r.error_code(), "invalid_refresh_token");
    }
    // Other sessions were never touched.
    let (access, _) = session(&app, &ann.email, PASSWORD);
    assert_eq!(me_status(&app, &access), 200);
}

#[test]
fn logout_ends_one_session_and_logout_all_ends_every_one() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    let (a1, r1) = session(&app, &ann.email, PASSWORD);
    let (a2, r2) = session(&app, &ann.email, PASSWORD);
    let out = post_anon(&app, "/v1/auth/logout", json!({ "refresh_token": r1 }));
    assert_eq!(out.status, 200, "{}", out.text());
    assert_eq!((me_status(&app, &a1), me_status(&app, &a2)), (401, 200));
    assert_eq!(refresh(&app, &r1).error_code(), "invalid_refresh_token");
    let unknown = post_anon(&app, "/v1/auth/logout", json!({ "refresh_token": "tgr_x" }));
    assert_eq!(unknown.error_code(), "invalid_refresh_token");

    // An API key is not a session: logout-all leaves it working.
    let key = app.client.create_key(&a2, json!({ "name": "k" })).json()["key"].as_str().unwrap().to_owned();
    let (a3, _) = session(&app, &ann.email, PASSWORD);
    let all = app.client.post("/v1/auth/logout-all", &a3, json!({}));
    assert_eq!((all.status, all.json()["sessions_ended"].as_u64()), (200, Some(3)), "{}", all.text());
    assert_eq!((me_status(&app, &a2), me_status(&app, &a3), me_status(&app, &key)), (401, 401, 200));
    assert_eq!(refresh(&app, &r2).error_code(), "invalid_refresh_token");
    assert_eq!(app.count_where("logs", "action = 'logout_all'"), 1);
    assert_eq!(app.count_where("logs", "action = 'logout'"), 1);
}

#[test]
fn a_password_change_ends_the_other_sessions_and_checks_the_current_one() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    let (mine, _) = session(&app, &ann.email, PASSWORD);
    let (other, other_refresh) = session(&app, &ann.email, PASSWORD);
    let change = |current: &str, new: &str| {
        app.client.post("/v1/me/password", &mine, json!({ "current_password": current, "new_password": new }))
    };
    let wrong = change("not-my-password", "a-new-long-password");
    assert_eq!(
        (wrong.error_code().as_str(), wrong.json()["error"]["param"].as_str()),
        ("wrong_password", Some("current_password"))
    );
    for weak in ["short", "password123", "Qwertyuiop"] {
        let r = change(PASSWORD, weak);
        assert_eq!(
            (r.error_code().as_str(), r.json()["error"]["param"].as_str()),
            ("weak_password", Some("new_password"))
        );
    }
    assert_eq!(me_status(&app, &other), 200, "a refused change ends nothing");

    let ok = change(PASSWORD, "a-new-long-password");
    // The other session, and the one `user` logged in with.
    assert_eq!((ok.status, ok.json()["sessions_ended"].as_u64()), (200, Some(2)), "{}", ok.text());
    assert_eq!((me_status(&app, &mine), me_status(&app, &other)), (200, 401));
    assert_eq!(refresh(&app, &other_refresh).error_code(), "invalid_refresh_token");
    assert_eq!(app.client.login(&ann.email, PASSWORD).status, 401);
    assert_eq!(app.client.login(&ann.email, "a-new-long-password").status, 200);
    assert_eq!(app.count_where("logs", "action = 'password_changed' AND success = 1"), 1);
    // No log holds a password.
    assert_eq!(app.count_where("logs", "details LIKE '%a-new-long-password%' OR details LIKE '%user-password-1%'"), 0);
}

/// The token of the newest `user.password_reset_requested` event for `user_id`.
fn emailed_token(app: &TestApp, user_id: &str, events: i64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let data: Vec<String> = app
            .db()
            .read(|c| {
                c.query_all(
                    "SELECT data FROM events WHERE type = 'user.password_reset_requested' ORDER BY id",
                    &[],
                    |r| r.get(0),
                )
            })
            .unwrap();
        let mine: Vec<serde_json::Value> = data
            .iter()
            .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            .filter(|v| v["user_id"] == user_id)
            .collect();
        if mine.len() as i64 >= events {
            return mine.last().and_then(|v| v["token"].as_str()).expect("a token").to_owned();
        }
        assert!(Instant::now() < deadline, "no reset event");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_reset_sets_the_password_once_ends_every_session_and_reveals_no_account() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    let (access, _) = session(&app, &ann.email, PASSWORD);

    let real = post_anon(&app, "/v1/auth/password-reset", json!({ "email": ann.email }));
    let unknown = post_anon(&app, "/v1/auth/password-reset", json!({ "email": "nobody@example.com" }));
    assert_eq!((real.status, unknown.status), (202, 202));
    assert_eq!(real.body, unknown.body, "the same answer for both");
    let token = emailed_token(&app, &ann.id, 1);
    assert!(token.starts_with("tgp_"));
    assert_eq!(
        app.count_where("events", "type = 'user.password_reset_requested'"),
        1,
        "nothing for the unknown address"
    );
    assert_eq!(app.count_where("password_resets", &format!("token_hash = '{token}'")), 0, "only the hash is stored");

    let confirm = |token: &str, new: &str| {
        post_anon(&app, "/v1/auth/password-reset/confirm", json!({ "token": token, "new_password": new }))
    };
    assert_eq!(confirm(&token, "letmein1").error_code(), "weak_password");
    assert_eq!(me_status(&app, &access), 200, "a refused confirm changes nothing");
    let ok = confirm(&token, "brand-new-password");
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(me_status(&app, &access), 401, "every session ended");
    assert_eq!(app.client.login(&ann.email, PASSWORD).status, 401);
    assert_eq!(app.client.login(&ann.email, "brand-new-password").status, 200);
    let twice = confirm(&token, "another-new-password");
    assert_eq!((twice.status, twice.error_code().as_str()), (400, "invalid_reset_token"));
    assert_eq!(confirm("tgp_unknown", "another-new-password").error_code(), "invalid_reset_token");
    assert_eq!(app.client.login(&ann.email, "brand-new-password").status, 200, "the second try changed nothing");

    // An admin can hand out a token directly (shown once: not replayable).
    let path = format!("/v1/admin/users/{}/password-reset", ann.id);
    let issued = app.client.post(&path, &app.admin, json!({}));
    assert_eq!(issued.status, 201, "{}", issued.text());
    let admin_token = issued.json()["token"].as_str().unwrap().to_owned();
    let replay = app.client.post_with(&path, &app.admin, &[("Idempotency-Key", "k1")], b"{}");
    assert_eq!(replay.error_code(), "idempotency_not_supported");
    // The clock moves 31 minutes past the token's issue: it has expired.
    app.sql_exec(
        "UPDATE password_resets SET created_at = created_at - 1860000, expires_at = expires_at - 1860000 WHERE used_at IS NULL",
    );
    let late = confirm(&admin_token, "another-new-password");
    assert_eq!((late.status, late.error_code().as_str()), (400, "reset_token_expired"));
    assert_eq!(app.client.login(&ann.email, "brand-new-password").status, 200);
    assert_eq!(app.count_where("logs", "action = 'password_reset' AND success = 1"), 1);
    assert_eq!(app.count_where("logs", &format!("details LIKE '%{}%'", &token[4..20])), 0, "no log holds a token");
}

#[test]
fn reset_requests_take_the_same_time_whether_or_not_the_account_exists() {
    let app = TestApp::spawn_with(|c| c.auth.login_rpm_per_ip = 1_000);
    let ann = app.user("ann");
    let time = |email: &str| {
        let started = Instant::now();
        let r = post_anon(&app, "/v1/auth/password-reset", json!({ "email": email }));
        assert_eq!(r.status, 202);
        started.elapsed()
    };
    let (mut real, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..40 {
        real.push(time(&ann.email));
        unknown.push(time(&format!("nobody{i}@example.com")));
    }
    real.sort();
    unknown.sort();
    let (a, b) = (real[20], unknown[20]);
    eprintln!("reset request median: existing {a:?}, unknown {b:?}");
    // The handler does the same work for both (the lookup happens off the
    // request path): medians within 10 ms of each other (both are ~1 ms).
    assert!(a.abs_diff(b) < Duration::from_millis(10), "existing {a:?} vs unknown {b:?}");
}

#[test]
fn reset_tokens_per_account_stop_at_the_hourly_limit_and_account_routes_are_rate_limited() {
    let app = TestApp::spawn_with(|c| {
        c.auth.password_resets_per_account_per_hour = 2;
        c.auth.login_rpm_per_ip = 8;
    });
    let ann = app.user("ann");
    for _ in 0..3 {
        assert_eq!(post_anon(&app, "/v1/auth/password-reset", json!({ "email": ann.email })).status, 202);
    }
    emailed_token(&app, &ann.id, 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.count_where("logs", "action = 'password_reset_requested' AND success = 0") < 1 {
        assert!(Instant::now() < deadline, "the third request was never handled");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(app.count("password_resets"), 2, "exactly the limit issued");
    // The admin's and ann's logins and 3 resets took 5 of the IP's 8.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(post_anon(&app, "/v1/auth/refresh", json!({ "refresh_token": "tgr_x" })).status);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429], "limited like login");
}

#[test]
fn past_sessions_per_user_max_a_new_login_ends_the_oldest() {
    let app = TestApp::spawn_with(|c| c.auth.sessions_per_user_max = 2);
    let ann = app.user("ann");
    let (first, _) = session(&app, &ann.email, PASSWORD);
    let (second, _) = session(&app, &ann.email, PASSWORD);
    assert_eq!((me_status(&app, &first), me_status(&app, &second)), (200, 200), "exactly the limit");
    let (third, _) = session(&app, &ann.email, PASSWORD);
    assert_eq!((me_status(&app, &first), me_status(&app, &second), me_status(&app, &third)), (401, 200, 200));
}

/// Logins of one user at once (on PostgreSQL each under that user's row
/// lock, beside other users' writes) still keep the cap exactly: the
/// sessions left live are the cap, and every token pair answered with a
/// live session works.
#[test]
fn racing_logins_of_one_user_keep_exactly_sessions_per_user_max() {
    let app = TestApp::spawn_with(|c| {
        c.auth.sessions_per_user_max = 2;
        c.auth.login_rpm_per_ip = 1_000;
    });
    let ann = app.user("ann");
    let (client, email) = (app.client.clone(), ann.email.clone());
    let statuses = race(8, move |_| client.login(&email, PASSWORD).status);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let live =
        app.count_where("sessions", &format!("user_id = {} AND revoked_at IS NULL", ann.id.trim_start_matches("usr_")));
    assert_eq!(live, 2, "sessions left live");
}
