//! Channels (issue 31): upstream keys, models and prices managed live over
//! the admin API, spread by priority and weight, taken out of service when
//! the provider refuses them, cooled down when they fail, probed back,
//! sticky per conversation, sealed at rest.

use crate::fake_provider::FakeProvider;
use crate::helpers::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn seal_key() -> String {
    tollgate::support::sealed::SealKey::generate().expect("a key")
}

fn send(app: &TestApp, method: &str, path: &str, body: Value) -> Resp {
    app.client.request(method, path, Some(&app.admin), &[], Some(body.to_string().as_bytes())).expect("request")
}

/// A free chat model `m` (prices here are not what is tested).
fn add_model(app: &TestApp, name: &str, price: Value) {
    let r = app.client.post("/v1/admin/models", &app.admin, json!({"name": name, "kind": "chat", "price": price}));
    assert_eq!(r.status, 201, "{}", r.text());
}

/// A channel on `fake` serving `model`, with `keys`: its id.
fn add_channel(app: &TestApp, name: &str, fake: &FakeProvider, model: &str, extra: Value) -> Value {
    let mut body = json!({"name": name, "kind": "openai", "base_url": format!("{}/v1", fake.base),
                          "models": [{"model": model, "upstream": "up"}], "keys": [format!("sk-{name}-0001")]});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let r = app.client.post("/v1/admin/channels", &app.admin, body);
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

fn say(app: &TestApp, token: &str, model: &str, text: &str) -> Resp {
    app.client.chat(token, json!({"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 10}))
}

fn channel(app: &TestApp, id: &str) -> Value {
    let r = app.client.get(&format!("/v1/admin/channels/{id}"), &app.admin);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn spawn(probe_interval_s: u64) -> (TestApp, String) {
    let key = seal_key();
    let app = TestApp::spawn_with_secrets(&[("TOLLGATE_SECRET_KEY", &key)], |c| {
        c.channels.probe_interval_s = probe_interval_s;
    });
    (app, key)
}

#[test]
fn keys_weighted_one_two_seven_carry_their_share_and_a_refused_key_is_out_at_once_until_the_probe() {
    let (app, _) = spawn(1);
    add_model(&app, "m", json!({}));
    let fakes: Vec<FakeProvider> = (0..3).map(|_| FakeProvider::start()).collect();
    let ids: Vec<String> = [1, 2, 7]
        .iter()
        .enumerate()
        .map(|(i, w)| {
            add_channel(&app, &format!("c{i}"), &fakes[i], "m", json!({"weight": w}))["id"].as_str().unwrap().to_owned()
        })
        .collect();
    // 3,000 conversations (each its own), from 8 clients at once.
    let calls = 3_000;
    std::thread::scope(|s| {
        for t in 0..8 {
            let app = &app;
            s.spawn(move || {
                for i in (t..calls).step_by(8) {
                    let r = say(app, &app.admin, "m", &format!("conversation {i}"));
                    assert_eq!(r.status, 200, "{}", r.text());
                }
            });
        }
    });
    let counts: Vec<usize> = fakes.iter().map(|f| f.count("/chat/completions")).collect();
    assert_eq!(counts.iter().sum::<usize>(), calls, "one upstream call per call: {counts:?}");
    for (n, want) in counts.iter().zip([0.10, 0.20, 0.70]) {
        let share = *n as f64 / calls as f64;
        assert!((share - want).abs() <= 0.03, "shares {counts:?} against 10/20/70%");
    }
    // Usage by channel says which key carried which spend.
    let day = &rfc3339_in(0)[..10];
    let r = app.client.get(&format!("/v1/admin/usage?start={day}&end={day}&group_by=channel"), &app.admin);
    assert_eq!(r.status, 200, "{}", r.text());
    let by: HashMap<String, i64> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| (row["channel"].as_str().unwrap().to_owned(), row["requests"].as_i64().unwrap()))
        .collect();
    for (id, n) in ids.iter().zip(&counts) {
        assert_eq!(by.get(id).copied(), Some(*n as i64), "{by:?}");
    }

    // c2 (weight 7) starts refusing its key: the call that meets it fails
    // over, the key is out, and no later call reaches it.
    fakes[2].script(|s| s.fail = Some((401, "Incorrect API key provided".into())));
    // Clients' calls only: the probe (every second here) test-calls the
    // failed key with "Say OK.", which is not a call reaching it.
    let calls_to = |f: &FakeProvider| {
        f.requests()
            .iter()
            .filter(|r| r.path.contains("/chat/completions") && r.body["messages"][0]["content"] != "Say OK.")
            .count()
    };
    let before = calls_to(&fakes[2]);
    for i in 0..40 {
        let r = say(&app, &app.admin, "m", &format!("after {i}"));
        assert_eq!(r.status, 200, "failed over: {}", r.text());
    }
    assert!(calls_to(&fakes[2]) - before <= 1, "reached at most once, the call that disabled it");
    let key = &channel(&app, &ids[2])["keys"][0];
    assert_eq!(key["status"], "failed", "{key}");
    assert!(key["disabled_reason"].as_str().unwrap().contains("401"), "{key}");
    assert_eq!(app.count_where("events", "type = 'channel.disabled'"), 1);
    assert!(app.count_where("logs", "action = 'channel_key_disabled'") == 1);
    let metrics = app.client.get("/metrics", &app.admin).text();
    assert!(metrics.contains("channel_keys_disabled_total{channel=\"c2\"} 1"), "{metrics}");

    // Fixed: the probe (every second here) finds it answering and enables it.
    fakes[2].script(|s| s.fail = None);
    let deadline = Instant::now() + Duration::from_secs(15);
    while channel(&app, &ids[2])["keys"][0]["status"] != "enabled" {
        assert!(Instant::now() < deadline, "the probe enables the fixed key");
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = fakes[2].count("/chat/completions");
    for i in 0..60 {
        assert_eq!(say(&app, &app.admin, "m", &format!("back {i}")).status, 200);
    }
    assert!(fakes[2].count("/chat/completions") > before, "calls reach it again");
}

#[test]
fn a_key_answering_429_cools_down_and_returns_and_no_call_tries_one_key_twice() {
    let (app, _) = spawn(0);
    add_model(&app, "m", json!({}));
    let fake = FakeProvider::start();
    let ch = add_channel(
        &app,
        "pool",
        &fake,
        "m",
        json!({"keys": ["sk-aaaa-1111", "sk-bbbb-2222"],
               // One caller here: one failure of one caller cools the key.
               "settings": {"connect_timeout_ms": 1000, "read_timeout_ms": 5000, "breaker_failures": 1,
                            "breaker_cool_down_ms": 700, "breaker_callers": 1, "breaker_window_ms": 60000}}),
    );
    let keys = ch["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let mut last4: Vec<&str> = keys.iter().map(|k| k["last4"].as_str().unwrap()).collect();
    last4.sort_unstable();
    assert_eq!(last4, ["1111", "2222"]);
    assert!(!ch.to_string().contains("sk-aaaa"), "a key is never shown again: {ch}");
    let used = |fake: &FakeProvider, key: &str| {
        fake.requests().iter().filter(|r| r.headers.get("authorization").is_some_and(|a| a.ends_with(key))).count()
    };
    fake.script(|s| s.fail_keys = vec![("sk-aaaa-1111".into(), 429, json!({"error": {"message": "slow down"}}))]);
    for i in 0..20 {
        assert_eq!(say(&app, &app.admin, "m", &format!("x{i}")).status, 200);
    }
    // The first call that met key a cooled it: at most one more trial.
    assert!(used(&fake, "1111") <= 2, "a cooling key is passed over: {}", used(&fake, "1111"));
    let now = channel(&app, ch["id"].as_str().unwrap());
    assert!(now["keys"].as_array().unwrap().iter().all(|k| k["status"] == "enabled"), "429 never disables: {now}");
    std::thread::sleep(Duration::from_millis(800));
    fake.script(|s| s.fail_keys.clear());
    let a_before = used(&fake, "1111");
    for i in 0..40 {
        assert_eq!(say(&app, &app.admin, "m", &format!("y{i}")).status, 200);
    }
    assert!(used(&fake, "1111") > a_before, "after its cool-down it carries calls again");

    // Both keys failing: one call tries each once, never one twice.
    fake.script(|s| s.fail = Some((500, "down".into())));
    let n = fake.count("/chat/completions");
    let r = say(&app, &app.admin, "m", "z");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(fake.count("/chat/completions") - n, 2, "each key once");
}

#[test]
fn a_price_changed_through_the_api_applies_to_the_next_call_on_every_worker_and_is_logged() {
    let (app, _) = spawn(0);
    // 1 credit a token in, 0 out: the fake reports 12 in, 34 out.
    add_model(&app, "m", json!({"input_per_1m": 1_000_000}));
    let fake = FakeProvider::start();
    add_channel(&app, "one", &fake, "m", json!({}));
    let token = app.client.funded_user(&app.admin, "payer@example.com", 10_000);
    let spent = |app: &TestApp| -> i64 {
        app.sql_one(
            "SELECT CAST(-amount AS BIGINT) FROM credit_transactions WHERE kind = 'consume' ORDER BY id DESC LIMIT 1",
            &[],
        )
    };
    assert_eq!(say(&app, &token, "m", "a").status, 200);
    assert_eq!(spent(&app), 12);
    let r = send(&app, "PATCH", "/v1/admin/models/m", json!({"price": {"input_per_1m": 3_000_000}}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["revision"], 2);
    // The very next calls, on whichever of the 16 workers: the new price.
    for i in 0..20 {
        assert_eq!(say(&app, &token, "m", &format!("b{i}")).status, 200);
        assert_eq!(spent(&app), 36, "call {i}");
    }
    let components: String =
        app.sql_one("SELECT components FROM credit_transactions WHERE kind = 'consume' ORDER BY id DESC LIMIT 1", &[]);
    assert!(components.contains("3000000"), "the ledger row names the price used: {components}");
    let description: String =
        app.sql_one("SELECT description FROM credit_transactions WHERE kind = 'consume' ORDER BY id DESC LIMIT 1", &[]);
    assert!(description.contains("m at price r2"), "{description}");
    let logs = app.client.get("/v1/admin/logs?log_type=business&limit=100", &app.admin).json();
    let change = logs["data"].as_array().unwrap().iter().find(|l| l["action"] == "model_updated").expect("logged");
    assert_eq!(change["details"]["before"]["price"]["input_per_1m"], 1_000_000, "{change}");
    assert_eq!(change["details"]["after"]["price"]["input_per_1m"], 3_000_000, "{change}");
    // Disabled: gone from the list and refused; enabled: back.
    assert_eq!(send(&app, "PATCH", "/v1/admin/models/m", json!({"enabled": false})).status, 200);
    assert_eq!(say(&app, &token, "m", "c").error_code(), "model_not_found");
    assert_eq!(send(&app, "PATCH", "/v1/admin/models/m", json!({"enabled": true})).status, 200);
    assert_eq!(say(&app, &token, "m", "d").status, 200);
}

#[test]
fn two_hundred_conversations_each_stay_on_one_key_while_it_is_healthy() {
    let (app, _) = spawn(0);
    add_model(&app, "m", json!({}));
    let fakes: Vec<FakeProvider> = (0..3).map(|_| FakeProvider::start()).collect();
    for (i, f) in fakes.iter().enumerate() {
        add_channel(&app, &format!("k{i}"), f, "m", json!({}));
    }
    for turn in 0..3 {
        for c in 0..200 {
            let mut messages = vec![
                json!({"role": "system", "content": "be brief"}),
                json!({"role": "user", "content": format!("conv {c}")}),
            ];
            for t in 0..turn {
                messages.push(json!({"role": "assistant", "content": format!("answer {t}")}));
                messages.push(json!({"role": "user", "content": format!("more {t}")}));
            }
            let r = app.client.chat(&app.admin, json!({"model": "m", "messages": messages}));
            assert_eq!(r.status, 200, "{}", r.text());
        }
    }
    // A client's own name for the conversation holds it too.
    for i in 0..5 {
        let r = app.client.chat(
            &app.admin,
            json!({"model": "m", "prompt_cache_key": "pk-1", "messages": [{"role": "user", "content": format!("q{i}")}]}),
        );
        assert_eq!(r.status, 200);
    }
    let mut homes: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, f) in fakes.iter().enumerate() {
        for r in f.requests() {
            let key = r
                .body
                .get("prompt_cache_key")
                .and_then(Value::as_str)
                .map_or_else(|| r.body["messages"][1]["content"].as_str().unwrap_or("").to_owned(), str::to_owned);
            homes.entry(key).or_default().push(i);
        }
    }
    assert_eq!(homes.len(), 201);
    for (conv, keys) in &homes {
        assert!(keys.windows(2).all(|w| w[0] == w[1]), "{conv} moved between keys: {keys:?}");
    }
    let per_key: Vec<usize> = (0..3).map(|i| homes.values().filter(|k| k[0] == i).count()).collect();
    assert!(per_key.iter().all(|n| *n > 20), "conversations spread over the keys: {per_key:?}");
}

#[test]
fn stored_keys_are_sealed_a_wrong_secret_refuses_the_start_and_rotation_reseals_them() {
    if engine_is_postgres() {
        return; // the bytes checked are SQLite's file; sealing is the same on both engines
    }
    let (app, key1) = spawn(0);
    add_model(&app, "m", json!({}));
    let fake = FakeProvider::start();
    let secret = "sk-live-4f9d2c7e1b8a6035";
    add_channel(&app, "sealed", &fake, "m", json!({"keys": [secret]}));
    assert_eq!(say(&app, &app.admin, "m", "hi").status, 200);
    assert_eq!(fake.requests()[0].headers["authorization"], format!("Bearer {secret}"));
    let mut config = app.config();
    let dir = app.restart_stopped();
    config.server.addr = "127.0.0.1:0".into();
    let db = dir.path().join("tollgate.db");
    let backup = dir.path().join("backup.db");
    let out = bin().args(["backup", backup.to_str().unwrap(), "--db", db.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let on_disk: Vec<u8> = ["tollgate.db", "tollgate.db-wal", "backup.db"]
        .iter()
        .filter_map(|f| std::fs::read(dir.path().join(f)).ok())
        .flatten()
        .collect();
    assert!(!on_disk.windows(secret.len()).any(|w| w == secret.as_bytes()), "no provider key in clear on disk");

    let none = try_start(&config, &[]).unwrap_err();
    assert!(none.contains("TOLLGATE_SECRET_KEY") && none.contains("sealed"), "{none}");
    let wrong = try_start(&config, &[("TOLLGATE_SECRET_KEY", &seal_key())]).unwrap_err();
    assert!(wrong.contains("wrong TOLLGATE_SECRET_KEY"), "{wrong}");

    let key2 = seal_key();
    let out = bin()
        .args(["secrets", "rotate", "--db", db.to_str().unwrap()])
        .env("TOLLGATE_SECRET_KEY", &key1)
        .env("TOLLGATE_SECRET_KEY_NEW", &key2)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("sealed 1"), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(try_start(&config, &[("TOLLGATE_SECRET_KEY", &key1)]).is_err(), "the old secret no longer opens it");
    let app = TestApp::start_in_with_secrets(dir, config, &[("TOLLGATE_SECRET_KEY", &key2)]);
    assert_eq!(say(&app, &app.admin, "m", "again").status, 200);
    assert_eq!(fake.requests().last().unwrap().headers["authorization"], format!("Bearer {secret}"));
}

#[test]
fn the_catalog_api_refuses_what_it_cannot_keep_and_shows_config_entries_as_such() {
    let fake = FakeProvider::start();
    let provider: tollgate::config::ProviderConfig =
        toml::from_str(&format!("kind = \"openai\"\nbase_url = \"{}/v1\"\napi_key_env = \"FAKE_KEY\"", fake.base))
            .unwrap();
    let app = TestApp::spawn_with_secrets(&[("FAKE_KEY", "sk-from-env-9876")], |c| {
        c.providers.insert("fake".into(), provider);
        c.models.push(model_config("qwen-plus", "chat", &[("fake", "q")], Default::default()));
    });

    let list = app.client.get("/v1/admin/channels", &app.admin).json();
    let ch = &list["data"][0];
    assert_eq!((ch["name"].as_str(), ch["source"].as_str()), (Some("fake"), Some("config")), "{list}");
    assert_eq!(ch["keys"][0]["env"], "FAKE_KEY");
    assert_eq!(ch["keys"][0]["last4"], "9876");
    assert!(!list.to_string().contains("sk-from-env"), "{list}");
    let models = app.client.get("/v1/admin/models", &app.admin).json();
    assert_eq!(models["data"][0]["name"], "qwen-plus");
    assert_eq!(models["data"][0]["source"], "config");
    assert_eq!(models["data"][0]["channels"][0]["upstream"], "q");
    let id = ch["id"].as_str().unwrap();

    // Config entries: not deleted here; no key stored without a secret key.
    assert_eq!(send(&app, "DELETE", &format!("/v1/admin/channels/{id}"), json!({})).error_code(), "config_managed");
    assert_eq!(send(&app, "DELETE", "/v1/admin/models/qwen-plus", json!({})).error_code(), "config_managed");
    let r = send(&app, "POST", &format!("/v1/admin/channels/{id}/keys"), json!({"key": "sk-new"}));
    assert_eq!((r.status, r.error_code().as_str()), (409, "secret_key_unset"), "{}", r.text());
    // Bad input: a clear code, nothing changed.
    let version: String = app.sql_one("SELECT value FROM settings WHERE key = 'catalog_version'", &[]);
    for (body, param) in [
        (json!({"name": "x", "kind": "nope"}), "kind"),
        (json!({"name": "bad name", "kind": "openai"}), "name"),
        (json!({"name": "x", "kind": "openai", "models": [{"model": "no-such"}]}), "models"),
        (json!({"name": "x", "kind": "openai", "weight": 10_001}), "weight"),
        (json!({"name": "x", "kind": "openai", "base_url": "ftp://x"}), "base_url"),
        (json!({"name": "x", "kind": "anthropic", "models": [{"model": "dev-image"}]}), "models"),
    ] {
        let r = app.client.post("/v1/admin/channels", &app.admin, body.clone());
        assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some(param)), "{body}: {}", r.text());
    }
    let r = app.client.post("/v1/admin/channels", &app.admin, json!({"name": "fake", "kind": "openai"}));
    assert_eq!(r.error_code(), "name_taken");
    let r = app.client.post("/v1/admin/models", &app.admin, json!({"name": "m2", "kind": "chat", "price": {"tiers": [{"above_input_tokens": 5}, {"above_input_tokens": 5}]}}));
    assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some("price")), "{}", r.text());
    let r = app.client.post("/v1/admin/models", &app.admin, json!({"name": "m2", "kind": "chat", "surprise": 1}));
    assert_eq!(r.status, 400);
    let after: String = app.sql_one("SELECT value FROM settings WHERE key = 'catalog_version'", &[]);
    assert_eq!(version, after, "refusals change nothing");
    // Not for users.
    let user = app.client.funded_user(&app.admin, "u@example.com", 10);
    assert_eq!(app.client.get("/v1/admin/channels", &user).status, 403);

    // Taking a config channel over (PATCH) makes it the API's; the test
    // call reports what the upstream said.
    let r = send(&app, "PATCH", &format!("/v1/admin/channels/{id}"), json!({"weight": 5, "tags": ["main"]}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!((r.json()["source"].as_str(), r.json()["weight"].as_i64()), (Some("api"), Some(5)));
    let t = send(&app, "POST", &format!("/v1/admin/channels/{id}/test"), json!({}));
    assert_eq!(t.status, 200, "{}", t.text());
    assert_eq!(t.json()["ok"], true, "{}", t.text());
    assert_eq!(t.json()["model"], "qwen-plus");
    assert!(t.json()["latency_ms"].is_u64());
    fake.script(|s| s.fail = Some((500, "boom".into())));
    let t = send(&app, "POST", &format!("/v1/admin/channels/{id}/test"), json!({})).json();
    assert_eq!((t["ok"].as_bool(), t["status"].as_str()), (Some(false), Some("500")), "{t}");
    assert_eq!(send(&app, "POST", "/v1/admin/channels/ch_nope/test", json!({})).status, 404);
}

#[test]
fn a_channel_holds_sixty_four_keys_and_two_hundred_fifty_six_models_and_no_more() {
    let (app, _) = spawn(0);
    add_model(&app, "m", json!({}));
    let fake = FakeProvider::start();
    let keys: Vec<String> = (0..64).map(|i| format!("sk-limit-{i:04}")).collect();
    let ch = add_channel(&app, "full", &fake, "m", json!({"keys": keys}));
    assert_eq!(ch["keys"].as_array().unwrap().len(), 64);
    let id = ch["id"].as_str().unwrap();
    let r = send(&app, "POST", &format!("/v1/admin/channels/{id}/keys"), json!({"key": "sk-one-more"}));
    assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some("key")), "{}", r.text());
    let too_many: Vec<String> = (0..65).map(|i| format!("sk-x-{i}")).collect();
    let r =
        app.client.post("/v1/admin/channels", &app.admin, json!({"name": "over", "kind": "openai", "keys": too_many}));
    assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some("keys")), "{}", r.text());
    // A key of 1,024 bytes is kept; one more byte is refused.
    assert_eq!(
        send(
            &app,
            "DELETE",
            &format!("/v1/admin/channels/{id}/keys/{}", ch["keys"][0]["id"].as_str().unwrap()),
            json!({})
        )
        .status,
        200
    );
    let r = send(&app, "POST", &format!("/v1/admin/channels/{id}/keys"), json!({"key": "k".repeat(1024)}));
    assert_eq!(r.status, 201, "{}", r.text());
    let r = send(&app, "POST", &format!("/v1/admin/channels/{id}/keys"), json!({"key": "k".repeat(1025)}));
    assert_eq!(r.status, 400, "{}", r.text());

    let serves = |n: usize| (0..n).map(|i| json!({"model": "m", "upstream": format!("u{i}")})).collect::<Vec<_>>();
    let r = send(&app, "PATCH", &format!("/v1/admin/channels/{id}"), json!({"models": serves(256)}));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send(&app, "PATCH", &format!("/v1/admin/channels/{id}"), json!({"models": serves(257)}));
    assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some("models")), "{}", r.text());
}

#[test]
fn a_key_at_its_rpm_is_passed_over_so_the_load_spreads_before_the_provider_refuses() {
    let (app, _) = spawn(0);
    add_model(&app, "m", json!({}));
    let (limited, open) = (FakeProvider::start(), FakeProvider::start());
    // The limited channel weighs 100 to 1: without its limit it would take nearly every call.
    add_channel(&app, "limited", &limited, "m", json!({"weight": 100, "rpm": 5}));
    add_channel(&app, "open", &open, "m", json!({"weight": 1}));
    for i in 0..30 {
        assert_eq!(say(&app, &app.admin, "m", &format!("r{i}")).status, 200);
    }
    // A minute boundary may fall inside the loop: at most two windows' worth.
    let n = limited.count("/chat/completions");
    assert!((5..=10).contains(&n), "the limited key took {n} of 30");
    assert_eq!(n + open.count("/chat/completions"), 30);
}
