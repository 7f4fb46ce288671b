//! Limits shared by several instances through Redis (`[redis] url`): one
//! rate for all of them, a login lockout that holds on every instance, and
//! the fallbacks while Redis is down. Runs in the PostgreSQL pass (several
//! instances need one database) against the Redis `scripts/test` starts
//! (`TOLLGATE_TEST_REDIS_URL`), or a private one for the outage.

use crate::helpers::*;
use std::time::{Duration, Instant};

/// The test Redis, or `None` (skipped, except under CI).
fn redis_url(test: &str) -> Option<String> {
    match std::env::var("TOLLGATE_TEST_REDIS_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(std::env::var_os("CI").is_none(), "{test}: no Redis under CI (scripts/test starts one)");
            eprintln!("SKIPPED {test}: no TOLLGATE_TEST_REDIS_URL (scripts/test starts a Redis)");
            None
        }
    }
}

/// Three instances on a fresh database sharing `redis` (keys under a
/// prefix of this test's own), with `extra` settings.
fn three(dir: &tempfile::TempDir, redis: &str, prefix: &str, extra: &[(&str, &str)]) -> Vec<ServerProcess> {
    let url = tollgate::storage::pg::test_database().expect("the PostgreSQL pass has a server");
    let prefix = format!("test:{prefix}:{}:", std::process::id());
    (0..3)
        .map(|i| {
            let mut env = vec![
                ("TOLLGATE_DATABASE_URL", url.as_str()),
                ("TOLLGATE_REDIS_URL", redis),
                ("TOLLGATE_REDIS_KEY_PREFIX", prefix.as_str()),
            ];
            env.extend_from_slice(extra);
            serve_process(&dir.path().join(format!("instance{i}.db")), &env)
        })
        .collect()
}

#[test]
fn three_instances_admit_one_shared_rate_not_three() {
    crate::postgres_only!();
    let Some(redis) = redis_url("three_instances_admit_one_shared_rate_not_three") else { return };
    let dir = tempfile::tempdir().unwrap();
    // Each instance configured alone (instances = 1): without Redis each
    // would admit the whole rate, 180 together.
    let servers = three(&dir, &redis, "rate", &[("TOLLGATE_LIMITS_RPM", "60"), ("TOLLGATE_LIMITS_BURST", "60")]);
    let admin = servers[0].client.token(ADMIN_EMAIL, ADMIN_PASSWORD);
    let token = servers[0].client.funded_user(&admin, "rate@example.com", 10_000);
    let started = Instant::now();
    let mut admitted = 0;
    for i in 0..240 {
        let r = servers[i % 3].client.consume(&token, 1);
        match r.status {
            201 => admitted += 1,
            429 => assert!(r.header("retry-after").is_some()),
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    // One token a second refills while the test runs.
    let tolerance = started.elapsed().as_secs() as i64 + 1;
    assert!((60..=60 + tolerance).contains(&admitted), "{admitted} admitted in {:?}", started.elapsed());
}

#[test]
fn a_login_lockout_on_one_instance_holds_on_the_others() {
    crate::postgres_only!();
    let Some(redis) = redis_url("a_login_lockout_on_one_instance_holds_on_the_others") else { return };
    let dir = tempfile::tempdir().unwrap();
    let servers = three(&dir, &redis, "lockout", &[("TOLLGATE_AUTH_LOGIN_FAILURES_MAX", "3")]);
    let admin = servers[0].client.token(ADMIN_EMAIL, ADMIN_PASSWORD);
    servers[0].client.funded_user(&admin, "locked@example.com", 1);
    for (i, s) in servers.iter().enumerate() {
        let r = s.client.login("locked@example.com", "wrong-password-123");
        assert_eq!(r.status, 401, "try {i}: {}", r.text());
    }
    // The fourth try, on any instance, even with the right password.
    for s in &servers {
        let r = s.client.login("locked@example.com", PASSWORD);
        assert_eq!((r.status, r.error_code().as_str()), (429, "rate_limited"), "{}", r.text());
    }
}

/// Redis stops: rate limits go on per instance (`local`, the default),
/// logins are refused (`closed`, the default) and `/readyz` says so; Redis
/// back: shared limits again, logins work.
#[test]
fn with_redis_down_the_fallbacks_apply_and_its_return_restores_the_shared_limits() {
    if redis_url("with_redis_down_the_fallbacks_apply_and_its_return_restores_the_shared_limits").is_none() {
        return;
    }
    let redis = TempServer::start("redis-temp");
    let url = redis.url.clone();
    let app = TestApp::spawn_with(move |c| {
        c.redis.url = url;
        c.redis.retry_after_ms = 100;
    });
    let ann = app.user("ann");
    app.grant(&ann, 100);
    let ready = || app.client.request("GET", "/readyz", None, &[], None).unwrap().json();
    assert_eq!(ready()["redis"]["status"], "ok");
    assert_eq!(app.client.consume(&ann.token, 1).status, 201);

    redis.run("pause");
    let started = Instant::now();
    assert_eq!(app.client.consume(&ann.token, 1).status, 201, "rate limits fall back to this instance");
    let r = app.client.login("ann@example.com", PASSWORD);
    assert_eq!((r.status, r.error_code().as_str()), (503, "server_busy"), "logins refused: {}", r.text());
    assert!(started.elapsed() < Duration::from_secs(2), "an outage costs no long timeout");
    let v = ready();
    assert_eq!(
        (v["status"].as_str(), v["redis"]["status"].as_str(), v["redis"]["login_lockouts"].as_str()),
        (Some("ready"), Some("unreachable"), Some("refused")),
        "{v}"
    );

    redis.run("resume");
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(ready()["redis"]["status"], "ok");
    assert_eq!(app.client.login("ann@example.com", PASSWORD).status, 200, "logins work again");
    assert_eq!(app.client.consume(&ann.token, 1).status, 201);
    assert_eq!(app.balance(&ann)["balance"], 97);
}

/// A key revoked through one instance stops on another at once, not after
/// that instance's credential cache entry ages out (1 s): the revocation is
/// published through Redis.
#[test]
fn a_key_revoked_on_one_instance_stops_on_another_at_once() {
    crate::postgres_only!();
    let Some(redis) = redis_url("a_key_revoked_on_one_instance_stops_on_another_at_once") else { return };
    let dir = tempfile::tempdir().unwrap();
    let servers = three(&dir, &redis, "revoke", &[]);
    let admin = servers[0].client.token(ADMIN_EMAIL, ADMIN_PASSWORD);
    let ann = servers[0].client.funded_user(&admin, "revoke@example.com", 100);
    let r = servers[0].client.create_key(&ann, serde_json::json!({"name": "k"}));
    let (key, id) = (r.json()["key"].as_str().unwrap().to_owned(), r.json()["id"].as_str().unwrap().to_owned());
    // Instance 1 has the key in its cache.
    assert_eq!(servers[1].client.me(&key).status, 200);
    let revoked = servers[0].client.delete(&format!("/v1/api-keys/{id}"), &ann);
    assert_eq!(revoked.status, 200);
    eventually("the revoked key is still accepted by another instance", Duration::from_millis(400), || {
        servers[1].client.me(&key).status == 401
    });
}
