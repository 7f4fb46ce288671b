//! Jobs over HTTP against fake providers: the seed's acceptance flow,
//! retries with backoff, async video tasks, cancel and retry, refusals that
//! create nothing, exactly-once processing, and SIGKILL mid-flight.

use crate::fake_provider::FakeProvider;
use crate::helpers::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tollgate::config::{Config, ModelConfig, PriceConfig, ProviderConfig};

fn fast_jobs(c: &mut Config) {
    c.jobs.backoff_base_ms = 20;
    c.jobs.backoff_max_ms = 100;
    c.jobs.poll_interval_min_ms = 20;
    c.jobs.poll_interval_max_ms = 50;
}

fn with_fake(fake: &FakeProvider) -> impl FnOnce(&mut Config) {
    let (openai, ds) = (format!("{}/v1", fake.base), fake.base.clone());
    move |c| {
        fast_jobs(c);
        let p = |kind: &str, base: &str| ProviderConfig {
            kind: kind.into(),
            base_url: Some(base.into()),
            api_key_env: None,
            connect_timeout_ms: 1000,
            read_timeout_ms: 2000,
            breaker_failures: 3,
            breaker_cool_down_ms: 200,
            breaker_callers: 2,
            breaker_window_ms: 60_000,
        };
        c.providers.insert("oa".into(), p("openai", &openai));
        c.providers.insert("ds".into(), p("dashscope", &ds));
        let m = |name: &str, kind: &str, prov: &str, price: PriceConfig| ModelConfig {
            max_output_tokens: Some(100),
            ..model_config(name, kind, &[(prov, &format!("{name}-upstream"))], price)
        };
        c.models.push(m(
            "qwen-plus",
            "chat",
            "oa",
            PriceConfig { input_per_1m: 800_000, output_per_1m: 2_000_000, ..PriceConfig::default() },
        ));
        c.models.push(m("wan-video", "video", "ds", PriceConfig { per_video_second: 7, ..PriceConfig::default() }));
    }
}

fn wait_for(app: &TestApp, token: &str, id: &str, statuses: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = app.client.get(&format!("/v1/jobs/{id}"), token).json();
        if statuses.contains(&j["status"].as_str().unwrap_or("")) {
            return j;
        }
        assert!(Instant::now() < deadline, "job {id} stuck in {}", j["status"]);
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn text_job(app: &TestApp, token: &str, prompt: &str) -> Resp {
    app.client.create_job(
        token,
        json!({"type": "text_generation", "model": "qwen-plus", "input": {"prompt": prompt, "max_tokens": 100}}),
    )
}

#[test]
fn the_seed_acceptance_flow_queues_runs_completes_and_charges_through_the_ledger() {
    let fake = FakeProvider::start();
    let app = TestApp::spawn_with(with_fake(&fake));
    let ann = app.user("ann");
    app.grant(&ann, 1_000);
    assert_eq!(app.balance(&ann)["available"], 1_000);
    let r = text_job(&app, &ann.token, "write a haiku");
    assert_eq!(r.status, 202, "{}", r.text());
    let created = r.json();
    assert_eq!((created["object"].as_str(), created["type"].as_str()), (Some("job"), Some("text_generation")));
    // Bound: (13 + 4 + 8 + 16 = 41) x 0.8 + 100 x 2 = 232.8 -> 233, held until done.
    assert_eq!(created["estimated_cost"], 233);
    let id = created["id"].as_str().unwrap().to_owned();
    let done = wait_for(&app, &ann.token, &id, &["completed"]);
    let statuses: Vec<&str> =
        done["events"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["queued", "processing", "completed"]);
    assert_eq!(done["output"]["text"], "fake answer from the provider");
    // 77.6 credits exactly: 77 charged, 0.6 carried (see ledger::settle).
    assert_eq!(done["credit_cost"], 77);
    assert_eq!(done["attempts"], 1);
    let tx = app.client.transactions(&ann.token).json();
    let row = &tx["data"][0];
    assert_eq!((row["kind"].as_str(), row["amount"].as_i64()), (Some("consume"), Some(-77)));
    assert_eq!(row["id"], done["transaction_id"]);
    assert_eq!(row["job_id"], id.as_str());
    assert_eq!(
        app.balance(&ann),
        json!({"object": "balance", "balance": 923, "held": 0, "available": 923, "next_expiry": null})
    );
    assert_eq!(app.validate(&ann)["valid"], true);
    let logs = app.client.get("/v1/logs", &ann.token).json().to_string();
    assert!(logs.contains("job_created") && logs.contains("job_completed"));
}

#[test]
fn a_failing_provider_retries_with_backoff_then_fails_with_the_balance_untouched_and_retry_succeeds() {
    let fake = FakeProvider::start();
    fake.script(|s| s.fail = Some((503, "down".into())));
    let app = TestApp::spawn_with(with_fake(&fake));
    let ann = app.user("ann");
    app.grant(&ann, 1_000);
    let id = text_job(&app, &ann.token, "hello").json()["id"].as_str().unwrap().to_owned();
    let failed = wait_for(&app, &ann.token, &id, &["failed"]);
    assert_eq!(failed["attempts"], 3);
    assert_eq!(failed["error"]["code"], "upstream_error");
    assert_eq!(fake.count("/chat/completions"), 3);
    let statuses: Vec<&str> =
        failed["events"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["queued", "processing", "queued", "processing", "queued", "processing", "failed"]);
    assert!(failed["events"][2]["message"].as_str().unwrap().contains("retrying in"));
    assert_eq!(
        app.balance(&ann),
        json!({"object": "balance", "balance": 1_000, "held": 0, "available": 1_000, "next_expiry": null})
    );

    // The provider answers slowly enough for the new attempt's hold to be seen.
    fake.script(|s| {
        s.fail = None;
        s.latency_ms = 500;
    });
    let r = app.client.post(&format!("/v1/jobs/{id}/retry"), &ann.token, json!({}));
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(app.balance(&ann)["held"], 227, "a new hold for the new attempt (\"hello\" bounds at 227)");
    let done = wait_for(&app, &ann.token, &id, &["completed"]);
    assert_eq!(done["credit_cost"], 77, "77.6 exactly: 77 charged, 0.6 carried");
    assert_eq!(app.balance(&ann)["balance"], 923);
    assert_eq!(app.audit()["valid"], true);
}

#[test]
fn a_video_job_polls_the_dashscope_task_and_is_charged_per_second() {
    let fake = FakeProvider::start();
    fake.script(|s| {
        s.task_polls = 4;
        s.video_seconds = 6;
    });
    let app = TestApp::spawn_with(with_fake(&fake));
    let ann = app.user("ann");
    app.grant(&ann, 1_000);
    let r = app.client.create_job(
        &ann.token,
        json!({"type": "video_generation", "model": "wan-video", "input": {"prompt": "a sunrise", "duration_s": 10}}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["estimated_cost"], 70);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let done = wait_for(&app, &ann.token, &id, &["completed"]);
    assert!(done["output"]["provider_url"].as_str().unwrap().ends_with(".mp4"));
    assert_eq!(done["output"]["kept"], true, "kept in the media store");
    assert_eq!(done["output"]["duration_s"], 6);
    assert_eq!(done["credit_cost"], 42, "charged for the 6 s the provider made, not the 10 s held");
    assert_eq!(fake.count("video-synthesis"), 1);
    assert!(fake.count("/api/v1/tasks/") >= 4, "several polls");
    let submit = fake.requests().into_iter().find(|r| r.path.contains("video-synthesis")).unwrap();
    assert_eq!(submit.headers.get("x-dashscope-async").map(String::as_str), Some("enable"));
    assert_eq!(submit.body["parameters"]["duration"], 10);
    assert_eq!(app.balance(&ann)["balance"], 958);
}

#[test]
fn cancel_releases_the_hold_jobs_are_private_and_illegal_moves_are_409() {
    let fake = FakeProvider::start();
    fake.script(|s| s.task_polls = 1_000_000);
    let app = TestApp::spawn_with(with_fake(&fake));
    let ann = app.user("ann");
    let bob = app.user("bob");
    app.grant(&ann, 1_000);
    let id = app
        .client
        .create_job(&ann.token, json!({"type": "video_generation", "model": "wan-video", "input": {"prompt": "p"}}))
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for(&app, &ann.token, &id, &["processing"]);
    assert_eq!(app.client.get(&format!("/v1/jobs/{id}"), &bob.token).status, 404, "bob cannot see ann's job");
    assert_eq!(app.client.post(&format!("/v1/jobs/{id}/cancel"), &bob.token, json!({})).status, 404);
    assert_eq!(app.client.jobs(&bob.token).json()["data"].as_array().unwrap().len(), 0);
    let r = app.client.post(&format!("/v1/jobs/{id}/cancel"), &ann.token, json!({}));
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("canceled")));
    assert_eq!(
        app.balance(&ann),
        json!({"object": "balance", "balance": 1_000, "held": 0, "available": 1_000, "next_expiry": null})
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.count("/cancel") == 0 {
        assert!(Instant::now() < deadline, "the provider task was not canceled");
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = app.client.post(&format!("/v1/jobs/{id}/cancel"), &ann.token, json!({}));
    assert_eq!((r.status, r.error_code().as_str()), (409, "job_not_cancelable"));
    let all = app.client.get("/v1/admin/jobs?status=canceled", &app.admin).json();
    assert_eq!(all["data"][0]["id"], id.as_str());
    let mine = app.client.get("/v1/jobs?status=canceled", &ann.token).json();
    assert_eq!(mine["data"].as_array().unwrap().len(), 1);
    assert_eq!(app.audit()["valid"], true);
}

#[test]
fn refused_creations_create_no_job_and_max_cost_lowers_max_tokens() {
    let fake = FakeProvider::start();
    let app = TestApp::spawn_with(|c| {
        with_fake(&fake)(c);
        c.jobs.workers = 0;
        c.jobs.queue_max = 2;
    });
    let ann = app.user("ann");
    let r = text_job(&app, &ann.token, "hi");
    assert_eq!((r.status, r.error_code().as_str()), (402, "insufficient_credits"));
    assert_eq!(app.count("jobs"), 0);
    app.grant(&ann, 10_000);
    for (body, status, param) in [
        (json!({"type": "music", "model": "qwen-plus", "input": {"prompt": "x"}}), 400, Some("type")),
        (json!({"type": "text_generation", "model": "wan-video", "input": {"prompt": "x"}}), 400, Some("model")),
        (json!({"type": "text_generation", "model": "qwen-plus", "input": {}}), 400, Some("input")),
        (
            json!({"type": "video_generation", "model": "wan-video", "input": {"prompt": "x", "duration_s": 999}}),
            400,
            Some("input.duration_s"),
        ),
        (json!({"type": "text_generation", "model": "nope", "input": {"prompt": "x"}}), 404, Some("model")),
    ] {
        let r = app.client.create_job(&ann.token, body.clone());
        assert_eq!((r.status, r.json()["error"]["param"].as_str()), (status, param), "{body}");
    }
    let r = app.client.create_job(
        &ann.token,
        json!({"type": "text_generation", "model": "qwen-plus", "input": {"prompt": "x"}, "max_cost": 10}),
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (402, "max_cost_exceeded"),
        "not even one token fits 10 credits with this prompt"
    );
    assert_eq!(app.count("jobs"), 0);
    let r = app.client.create_job(
        &ann.token,
        json!({"type": "text_generation", "model": "qwen-plus", "input": {"prompt": "x"}, "max_cost": 60}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let job = r.json();
    assert!(job["estimated_cost"].as_i64().unwrap() <= 60);
    assert!(job["input"]["max_tokens"].as_u64().unwrap() < 100, "{job}");
    assert_eq!(text_job(&app, &ann.token, "second").status, 202);
    let r = text_job(&app, &ann.token, "third");
    assert_eq!((r.status, r.error_code().as_str()), (429, "queue_full"));
    assert_eq!(app.count("jobs"), 2);
    // "second": (6 + 4 + 8 + 16 = 34) x 0.8 + 200 = 227.2 -> 228.
    assert_eq!(app.balance(&ann)["held"].as_i64().unwrap(), job["estimated_cost"].as_i64().unwrap() + 228);
}

#[test]
fn a_thousand_jobs_from_ten_users_each_run_exactly_once() {
    let fake = FakeProvider::start();
    let app = std::sync::Arc::new(TestApp::spawn_with(with_fake(&fake)));
    let users: Vec<TestUser> = (0..10).map(|i| app.user(&format!("u{i}"))).collect();
    for u in &users {
        app.grant(u, 100_000);
    }
    let handles: Vec<_> = users
        .into_iter()
        .enumerate()
        .map(|(i, u)| {
            let app = std::sync::Arc::clone(&app);
            std::thread::spawn(move || {
                for k in 0..100 {
                    let r = text_job(&app, &u.token, &format!("job-{i}-{k}"));
                    assert_eq!(r.status, 202, "{}", r.text());
                }
                u
            })
        })
        .collect();
    let users: Vec<TestUser> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = app.client.get("/v1/admin/jobs?status=completed&limit=1", &app.admin).json();
        let done = app.count_where("jobs", "status = 'completed'");
        if done == 1000 {
            break;
        }
        assert!(Instant::now() < deadline, "only {done} of 1000 completed: {list}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in fake.requests() {
        let prompt = r.body["messages"][0]["content"].as_str().unwrap_or("").to_owned();
        *seen.entry(prompt).or_default() += 1;
    }
    assert_eq!(seen.len(), 1000);
    assert!(seen.values().all(|n| *n == 1), "a job ran twice");
    for u in &users {
        // 100 jobs of 77.6 credits: exactly 7,760, rounded once.
        assert_eq!(app.balance(u)["balance"], 100_000 - 7_760);
    }
    assert_eq!(app.audit()["valid"], true);
}

#[test]
fn sigkill_with_fifty_jobs_in_flight_loses_nothing_and_submits_no_task_twice() {
    crate::sqlite_only!();
    let fake = FakeProvider::start();
    fake.script(|s| {
        s.task_polls = 6;
        s.latency_ms = 20;
    });
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            r#"[jobs]
workers = 8
processing_per_user_max = 8
backoff_base_ms = 20
poll_interval_min_ms = 20
poll_interval_max_ms = 50
[providers.ds]
kind = "dashscope"
base_url = "{ds}"
[providers.oa]
kind = "openai"
base_url = "{ds}/v1"
{video}{chat}"#,
            ds = fake.base,
            video = model_toml("wan-video", "video", "ds", "wan", "{ per_video_second = 7 }", ""),
            chat = qwen_plus_toml("oa"),
        ),
    );
    let db = dir.path().join("jobs.db");
    let cfg = config.to_str().unwrap();
    let mut server = serve_process(&db, &[("TOLLGATE_CONFIG", cfg)]);
    let admin = server.client.token(ADMIN_EMAIL, ADMIN_PASSWORD);
    let r = server.client.create_user(&admin, json!({"email": "k@example.com", "password": PASSWORD}));
    let uid = r.json()["id"].as_str().unwrap().to_owned();
    server.client.post(
        &format!("/v1/admin/users/{uid}/credits"),
        &admin,
        json!({"amount": 1_000_000, "description": "load"}),
    );
    let token = server.client.token("k@example.com", PASSWORD);
    for i in 0..50 {
        let body = if i % 2 == 0 {
            json!({"type": "video_generation", "model": "wan-video", "input": {"prompt": format!("video-{i}"), "duration_s": 5}})
        } else {
            json!({"type": "text_generation", "model": "qwen-plus", "input": {"prompt": format!("text-{i}")}})
        };
        assert_eq!(server.client.create_job(&token, body).status, 202);
    }
    // Let some finish, some poll, some wait.
    std::thread::sleep(Duration::from_millis(300));
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    let mut server = serve_process(&db, &[("TOLLGATE_CONFIG", cfg)]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let conn = rusqlite::Connection::open(&db).unwrap();
    loop {
        let live: i64 = conn
            .query_row("SELECT count(*) FROM jobs WHERE status IN ('queued', 'processing')", [], |r| r.get(0))
            .unwrap();
        if live == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{live} jobs never finished");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut submits: HashMap<String, usize> = HashMap::new();
    for r in fake.requests().iter().filter(|r| r.path.contains("video-synthesis")) {
        *submits.entry(r.body["input"]["prompt"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    assert!(submits.values().all(|n| *n == 1), "a provider task was submitted twice: {submits:?}");
    let charged: i64 = conn
        .query_row("SELECT COALESCE(-SUM(amount), 0) FROM credit_transactions WHERE kind = 'consume'", [], |r| r.get(0))
        .unwrap();
    let costs: i64 = conn
        .query_row("SELECT COALESCE(SUM(credit_cost), 0) FROM jobs WHERE status = 'completed'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(charged, costs, "charges equal the credit_cost of completed jobs");
    let completed: i64 =
        conn.query_row("SELECT count(*) FROM jobs WHERE status = 'completed'", [], |r| r.get(0)).unwrap();
    assert!(completed >= 45, "only {completed} of 50 completed");
    let active: i64 =
        conn.query_row("SELECT count(*) FROM credit_holds WHERE status = 'active'", [], |r| r.get(0)).unwrap();
    assert_eq!(active, 0, "no hold left active without a live job");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let o = bin().args(["audit", "--db"]).arg(&db).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}

/// Users in the order workers claimed their jobs, from job events.
fn claim_order(app: &TestApp) -> Vec<String> {
    app.db()
        .read(|c| {
            c.query_all(
                "SELECT j.user_id FROM job_events e JOIN jobs j ON j.id = e.job_id
                 WHERE e.message = 'claimed by a worker' ORDER BY e.id",
                &[],
                |r| Ok(format!("usr_{}", r.get::<i64>(0)?)),
            )
        })
        .unwrap()
}

#[test]
fn one_user_past_the_per_user_bound_gets_429_while_another_users_jobs_are_accepted_and_run_first() {
    // 16 callers race past the bound: exactly the bound is queued and held.
    let fake = FakeProvider::start();
    let app = TestApp::spawn_with(|c| {
        with_fake(&fake)(c);
        c.jobs.workers = 0;
        c.jobs.queued_per_user_max = 5;
    });
    let (ann, bob) = (app.user("ann"), app.user("bob"));
    app.grant(&ann, 100_000);
    app.grant(&bob, 100_000);
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let (client, token) = (app.client.clone(), ann.token.clone());
            std::thread::spawn(move || {
                let body =
                    json!({"type": "text_generation", "model": "qwen-plus", "input": {"prompt": format!("p{i}")}});
                let r = client.create_job(&token, body);
                (
                    r.status,
                    if r.status == 202 { String::new() } else { r.error_code() },
                    r.header("Retry-After").is_some(),
                )
            })
        })
        .collect();
    let answers: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(answers.iter().filter(|a| a.0 == 202).count(), 5, "{answers:?}");
    assert!(answers.iter().all(|a| a.0 == 202 || (a.0 == 429 && a.1 == "too_many_jobs" && a.2)), "{answers:?}");
    let queued = app.client.get("/v1/jobs?status=queued", &ann.token).json();
    let bounds: i64 = queued["data"].as_array().unwrap().iter().map(|j| j["estimated_cost"].as_i64().unwrap()).sum();
    assert_eq!(queued["data"].as_array().unwrap().len(), 5);
    assert_eq!(app.balance(&ann)["held"].as_i64(), Some(bounds), "only the accepted jobs hold credits");
    assert_eq!(text_job(&app, &bob.token, "bob's turn").status, 202, "another user is still accepted");
    assert_eq!(app.count("jobs"), 6);
    assert_eq!(app.audit()["valid"], true);
    drop(app);

    // With one worker, bob's single job runs after at most one of ann's.
    // Each job outlasts ann's eight creations, even on a loaded machine, so
    // exactly one of hers runs while she fills the queue.
    let fake = FakeProvider::start();
    fake.script(|s| s.latency_ms = 1_500);
    let app = TestApp::spawn_with(|c| {
        with_fake(&fake)(c);
        c.jobs.workers = 1;
        c.jobs.queued_per_user_max = 5;
        c.jobs.processing_per_user_max = 1;
    });
    let (ann, bob) = (app.user("ann"), app.user("bob"));
    app.grant(&ann, 100_000);
    app.grant(&bob, 100_000);
    let mut refused = 0;
    for i in 0..8 {
        let r = text_job(&app, &ann.token, &format!("ann-{i}"));
        if r.status == 429 {
            assert_eq!(r.error_code(), "too_many_jobs");
            refused += 1;
        }
    }
    assert!(refused >= 2, "8 jobs against a bound of 5 queued and 1 running");
    let claims_before = claim_order(&app).len();
    let r = text_job(&app, &bob.token, "bob");
    assert_eq!(r.status, 202);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(wait_for(&app, &bob.token, &id, &["completed"])["status"], "completed");
    let after: Vec<String> = claim_order(&app).split_off(claims_before);
    let bob_at = after.iter().position(|u| *u == bob.id).expect("bob's job was claimed");
    assert!(bob_at <= 1, "bob waited behind {bob_at} of ann's jobs: {after:?}");
    let queued = app.client.get("/v1/jobs?status=queued", &ann.token).json();
    assert!(!queued["data"].as_array().unwrap().is_empty(), "ann's backlog was still waiting");
}

#[test]
fn a_jobs_stored_input_is_bounded_at_its_limit() {
    let fake = FakeProvider::start();
    let app = TestApp::spawn_with(|c| {
        with_fake(&fake)(c);
        c.jobs.input_bytes_max = 2048;
    });
    let ann = app.user("ann");
    app.grant(&ann, 100_000);
    // Padding the client adds beside the prompt is kept, so it counts.
    let job = |pad: usize| {
        app.client.create_job(
            &ann.token,
            json!({"type": "text_generation", "model": "qwen-plus", "input": {"prompt": "hi", "max_tokens": 10, "note": "x".repeat(pad)}}),
        )
    };
    let stored_len = |pad: usize| json!({"prompt": "hi", "max_tokens": 10, "note": "x".repeat(pad)}).to_string().len();
    let fits = (0..2048).rev().find(|p| stored_len(*p) <= 2048).unwrap();
    assert_eq!(job(fits).status, 202, "at the limit");
    let r = job(fits + 1);
    assert_eq!((r.status, r.error_code().as_str()), (413, "payload_too_large"), "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "input");
    assert_eq!(app.count("jobs"), 1, "the refused job is stored nowhere");
}

#[test]
fn a_page_of_jobs_ends_at_four_mib_and_the_next_page_goes_on() {
    let fake = FakeProvider::start();
    fake.script(|s| s.latency_ms = 60_000); // the jobs stay queued or processing
    let app = TestApp::spawn_with(|c| {
        with_fake(&fake)(c);
        c.jobs.workers = 1;
    });
    let ann = app.user("ann");
    app.grant(&ann, 10_000_000);
    let pad = "x".repeat(63_000);
    for i in 0..70 {
        let r = app.client.create_job(
            &ann.token,
            json!({"type": "text_generation", "model": "qwen-plus", "input": {"prompt": format!("p{i}"), "max_tokens": 10, "pad": pad}}),
        );
        assert_eq!(r.status, 202, "{}", r.text());
    }
    let first = app.client.get("/v1/jobs?limit=100", &ann.token);
    assert!(first.body.len() <= tollgate::jobs::LIST_PAGE_BYTES_MAX + 64 * 1024, "{} bytes", first.body.len());
    let page = first.json();
    let n = page["data"].as_array().unwrap().len();
    assert!((60..70).contains(&n) && page["has_more"] == true, "{n} jobs, has_more {}", page["has_more"]);
    let last = page["data"][n - 1]["id"].as_str().unwrap();
    let rest = app.client.get(&format!("/v1/jobs?limit=100&starting_after={last}"), &ann.token).json();
    assert_eq!(rest["data"].as_array().unwrap().len(), 70 - n, "the next page has the rest");
}
