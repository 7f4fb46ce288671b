//! Several tollgate processes on one PostgreSQL database: money, idempotency
//! and jobs stay exact across instances, and an instance killed under load
//! loses nothing acknowledged. Runs in the PostgreSQL pass of the suite.

use crate::fake_provider::FakeProvider;
use crate::helpers::*;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `n` `tollgate serve` processes on the database at `url`.
pub fn instances(dir: &tempfile::TempDir, n: usize, url: &str, extra: &[(&str, &str)]) -> Vec<ServerProcess> {
    (0..n)
        .map(|i| {
            let mut env = vec![("TOLLGATE_DATABASE_URL", url)];
            env.extend_from_slice(extra);
            // Each instance has its own directory (media); the data is shared.
            serve_process(&dir.path().join(format!("instance{i}.db")), &env)
        })
        .collect()
}

/// Many logins from one address in a moment (a test's users being made).
pub const LOGINS: (&str, &str) = ("TOLLGATE_AUTH_LOGIN_RPM_PER_IP", "1000");

pub fn fresh_database() -> String {
    tollgate::storage::pg::test_database().expect("TOLLGATE_TEST_PG_URL names the test server")
}

/// A user with `credits`, created through the first instance; their token.
pub fn funded(servers: &[ServerProcess], email: &str, credits: i64) -> String {
    let admin = servers[0].client.token(ADMIN_EMAIL, ADMIN_PASSWORD);
    servers[0].client.funded_user(&admin, email, credits)
}

#[test]
fn three_instances_racing_consumes_spend_exactly_the_balance() {
    crate::postgres_only!();
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database();
    let servers = instances(&dir, 3, &url, &[]);
    let token = funded(&servers, "race@example.com", 10_000);
    let clients: Vec<Client> = servers.iter().map(|s| s.client.clone()).collect();
    let threads: Vec<_> = (0..32)
        .map(|t| {
            let (clients, token) = (clients.clone(), token.clone());
            std::thread::spawn(move || {
                let mut ok = 0;
                for i in 0..100 {
                    let client = &clients[(t + i) % clients.len()];
                    let r = client.consume(&token, 7);
                    match r.status {
                        201 => ok += 1,
                        402 => {}
                        s => panic!("unexpected {s}: {}", r.text()),
                    }
                }
                ok
            })
        })
        .collect();
    let ok: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(ok, 1_428, "10,000 / 7 consumes fit, across three instances");
    for s in &servers {
        let b = s.client.balance(&token).json();
        assert_eq!(b["balance"], 4, "every instance sees the same balance");
    }
    let admin = servers[1].client.token(ADMIN_EMAIL, ADMIN_PASSWORD);
    let audit = servers[2].client.audit(&admin).json();
    assert_eq!(audit["valid"], true, "{audit}");
}

#[test]
fn fifty_racing_requests_with_one_idempotency_key_across_instances_have_one_effect() {
    crate::postgres_only!();
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database();
    let servers = instances(&dir, 3, &url, &[]);
    let token = funded(&servers, "once@example.com", 1_000);
    let clients: Vec<Client> = servers.iter().map(|s| s.client.clone()).collect();
    let body = json!({"amount": 10, "description": "once"}).to_string();
    let threads: Vec<_> = (0..50)
        .map(|i| {
            let (client, token, body) = (clients[i % 3].clone(), token.clone(), body.clone());
            std::thread::spawn(move || {
                let r = client
                    .request("POST", CONSUME, Some(&token), &[("Idempotency-Key", "k-1")], Some(body.as_bytes()))
                    .expect("answered");
                (r.status, r.json()["transaction_id"].as_str().map(str::to_owned))
            })
        })
        .collect();
    let answers: Vec<(u16, Option<String>)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let ids: HashSet<&String> = answers.iter().filter(|(s, _)| *s == 201).filter_map(|(_, id)| id.as_ref()).collect();
    assert_eq!(ids.len(), 1, "every 201 names the one transaction: {answers:?}");
    assert!(answers.iter().all(|(s, _)| *s == 201 || *s == 409), "{answers:?}");
    let b = servers[0].client.balance(&token).json();
    assert_eq!(b["balance"], 990, "charged once");
}

/// Three instances with jobs on a fresh database, their provider `fake`
/// (`jobs`: `[jobs]` lines besides the test's defaults; `extra`: more
/// environment); the directory they live in (kept while it lives), the
/// database's URL and the instances.
fn job_instances(
    fake: &FakeProvider,
    processing_per_user_max: usize,
    jobs: &str,
    extra: &[(&str, &str)],
) -> (tempfile::TempDir, String, Vec<ServerProcess>) {
    let dir = tempfile::tempdir().unwrap();
    let config = job_config(dir.path(), fake, processing_per_user_max, jobs);
    let url = fresh_database();
    let mut env = vec![("TOLLGATE_CONFIG", config.to_str().unwrap())];
    env.extend_from_slice(extra);
    let servers = instances(&dir, 3, &url, &env);
    (dir, url, servers)
}

/// The configuration of [`job_instances`].
fn job_config(
    dir: &std::path::Path,
    fake: &FakeProvider,
    processing_per_user_max: usize,
    jobs: &str,
) -> std::path::PathBuf {
    write_config(
        dir,
        &format!(
            r#"[jobs]
{jobs}
processing_per_user_max = {processing_per_user_max}
lease_s = 5
backoff_base_ms = 20
poll_interval_min_ms = 20
poll_interval_max_ms = 50
[ledger]
sweep_interval_s = 1
[providers.oa]
kind = "openai"
base_url = "{base}/v1"
{chat}"#,
            base = fake.base,
            chat = qwen_plus_toml("oa"),
            processing_per_user_max = processing_per_user_max,
        ),
    )
}

fn submit_jobs(servers: &[ServerProcess], token: &str, prefix: &str, n: usize) {
    let clients: Vec<Client> = servers.iter().map(|s| s.client.clone()).collect();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (clients, token, prefix) = (clients.clone(), token.to_owned(), prefix.to_owned());
            std::thread::spawn(move || {
                for k in (t..n).step_by(4) {
                    let body = json!({"type": "text_generation", "model": "qwen-plus",
                                      "input": {"prompt": format!("{prefix}-{k}"), "max_tokens": 100}});
                    let r = clients[k % clients.len()].create_job(&token, body);
                    assert_eq!(r.status, 202, "{}", r.text());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Every item of a list route, page by page.
fn all_pages(client: &Client, path: &str, token: &str) -> Vec<serde_json::Value> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut out: Vec<serde_json::Value> = Vec::new();
    loop {
        let page = match out.last().and_then(|item| item["id"].as_str()) {
            Some(after) => format!("{path}{sep}limit=100&starting_after={after}"),
            None => format!("{path}{sep}limit=100"),
        };
        let list = client.get(&page, token).json();
        out.extend(list["data"].as_array().cloned().unwrap_or_default());
        if list["has_more"] != true {
            return out;
        }
    }
}

/// Waits until `n` jobs completed, asking `client` as the admin.
fn wait_completed(client: &Client, n: usize, within: Duration) {
    let admin = client.token(ADMIN_EMAIL, ADMIN_PASSWORD);
    let deadline = Instant::now() + within;
    loop {
        let done = all_pages(client, "/v1/admin/jobs?status=completed", &admin).len();
        if done >= n {
            return;
        }
        assert!(Instant::now() < deadline, "only {done} of {n} jobs completed");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_thousand_jobs_across_three_instances_call_the_provider_exactly_once_each() {
    crate::postgres_only!();
    let fake = FakeProvider::start();
    let (_dir, _, servers) = job_instances(&fake, 12, "workers = 4", &[]);
    let token = funded(&servers, "jobs@example.com", 1_000_000);
    submit_jobs(&servers, &token, "job", 1_000);
    wait_completed(&servers[0].client, 1_000, Duration::from_secs(180));
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in fake.requests() {
        *seen.entry(r.body["messages"][0]["content"].as_str().unwrap_or("").to_owned()).or_default() += 1;
    }
    assert_eq!(seen.len(), 1_000, "every job reached the provider");
    assert!(seen.values().all(|n| *n == 1), "a job ran twice");
    let admin = servers[1].client.token(ADMIN_EMAIL, ADMIN_PASSWORD);
    assert_eq!(servers[1].client.audit(&admin).json()["valid"], true);
}

/// Twelve workers on three instances, one user's 24 slow jobs and
/// `processing_per_user_max = 2`: each claim locks the user alone (beside
/// other users' writes) and checks their running jobs under that lock, so
/// no more than two are ever processing at once.
#[test]
fn three_instances_never_run_more_of_one_users_jobs_than_processing_per_user_max() {
    crate::postgres_only!();
    let fake = FakeProvider::start();
    fake.script(|s| s.latency_ms = 150);
    let (_dir, url, servers) = job_instances(&fake, 2, "workers = 4", &[]);
    let token = funded(&servers, "cap@example.com", 1_000_000);
    let mut watch = postgres::Client::connect(&url, postgres::NoTls).expect("a session");
    let mut running =
        || watch.query_one("SELECT count(*) FROM jobs WHERE status = 'processing'", &[]).unwrap().get::<_, i64>(0);
    submit_jobs(&servers, &token, "cap", 24);
    let (mut most, deadline) = (0, Instant::now() + Duration::from_secs(60));
    while all_pages(&servers[0].client, "/v1/jobs?status=completed", &token).len() < 24 {
        for _ in 0..20 {
            most = most.max(running());
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(Instant::now() < deadline, "the jobs did not complete");
    }
    assert_eq!(most, 2, "the most jobs of one user processing at once");
}

/// Twenty users creating two jobs each at once through three instances,
/// no worker, `jobs.queue_max = 10`: each creation runs under its user's
/// row lock beside the others, and the queue lock it takes to count
/// everyone's queued jobs admits exactly ten.
#[test]
fn three_instances_admit_exactly_queue_max_jobs_from_racing_users() {
    crate::postgres_only!();
    let fake = FakeProvider::start();
    let (_dir, url, servers) = job_instances(&fake, 12, "workers = 0\nqueue_max = 10", &[LOGINS]);
    let tokens: Arc<Vec<String>> =
        Arc::new((0..20).map(|i| funded(&servers, &format!("queue{i}@example.com"), 1_000)).collect());
    let clients: Arc<Vec<Client>> = Arc::new(servers.iter().map(|s| s.client.clone()).collect());
    let statuses = race(40, move |i| {
        let body = json!({"type": "text_generation", "model": "qwen-plus", "input": {"prompt": format!("q-{i}")}});
        let r = clients[i % 3].create_job(&tokens[i % 20], body);
        assert!(r.status == 202 || r.error_code() == "queue_full", "{}", r.text());
        r.status
    });
    assert_eq!(statuses.iter().filter(|s| **s == 202).count(), 10, "{statuses:?}");
    let mut check = postgres::Client::connect(&url, postgres::NoTls).expect("a session");
    let queued: i64 = check.query_one("SELECT count(*) FROM jobs WHERE status = 'queued'", &[]).unwrap().get(0);
    assert_eq!(queued, 10);
}

#[test]
fn an_instance_killed_under_load_loses_no_acknowledged_charge_and_the_others_finish_its_jobs() {
    crate::postgres_only!();
    let fake = FakeProvider::start();
    // Slow enough that the killed instance has jobs in flight.
    fake.script(|s| s.latency_ms = 1_000);
    let (_dir, _, mut servers) = job_instances(&fake, 12, "workers = 4", &[]);
    let token = funded(&servers, "kill@example.com", 1_000_000);
    submit_jobs(&servers, &token, "kill", 60);

    // Consumes through every instance; the third dies under them.
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<Client> = servers.iter().map(|s| s.client.clone()).collect();
    let load: Vec<_> = (0..6)
        .map(|t| {
            let (client, token, acknowledged, stop) =
                (clients[t % 3].clone(), token.clone(), Arc::clone(&acknowledged), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match client.request(
                        "POST",
                        CONSUME,
                        Some(&token),
                        &[],
                        Some(json!({"amount": 1}).to_string().as_bytes()),
                    ) {
                        Ok(r) if r.status == 201 => {
                            let id = r.json()["transaction_id"].as_str().expect("id").to_owned();
                            acknowledged.lock().unwrap().push(id);
                        }
                        Ok(r) => panic!("unexpected {}: {}", r.status, r.text()),
                        // The killed instance's callers: unknown outcome.
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    // Every instance runs at most its 4 workers' jobs: with 9 processing,
    // the one about to die holds at least one (under a loaded suite its
    // workers may be the last to claim). And the load has run: the jobs
    // (one user's, like the consumes) may reach 9 before many consumes did.
    let admin = servers[0].client.token(ADMIN_EMAIL, ADMIN_PASSWORD);
    eventually("9 jobs processing and 50 consumes acknowledged", Duration::from_secs(20), || {
        let page = servers[0].client.get("/v1/admin/jobs?status=processing&limit=100", &admin).json();
        page["data"].as_array().map_or(0, Vec::len) >= 9 && acknowledged.lock().unwrap().len() >= 50
    });
    std::thread::sleep(Duration::from_millis(300));
    servers[2].child.kill().expect("SIGKILL");
    servers[2].child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() > 50, "the load ran ({} acknowledged)", acknowledged.len());

    // The survivors finish every job (the dead instance's after their lease).
    wait_completed(&servers[0].client, 60, Duration::from_secs(60));
    let jobs = servers[0].client.get("/v1/admin/jobs?limit=100", &admin).json();
    let rerun = jobs["data"].as_array().unwrap().iter().filter(|j| j["attempts"].as_i64().unwrap_or(0) > 1).count();
    assert!(rerun > 0, "the killed instance had jobs in flight, run again by the others after their lease");
    let ledger: HashSet<String> = all_pages(&servers[1].client, TRANSACTIONS, &token)
        .iter()
        .filter_map(|t| t["id"].as_str().map(str::to_owned))
        .collect();
    let lost: Vec<&String> = acknowledged.iter().filter(|id| !ledger.contains(*id)).collect();
    assert!(lost.is_empty(), "acknowledged charges missing from the ledger: {lost:?}");
    let audit = servers[1].client.audit(&admin).json();
    assert_eq!(audit["valid"], true, "{audit}");
}

/// Another session holds ann's row lock (an operator's open transaction,
/// a stuck job): ann's charge gives up after `database.lock_timeout_ms`
/// with a clear 503 and changes nothing; once the lock is gone she is
/// charged again.
#[test]
fn a_row_lock_held_elsewhere_costs_a_request_its_lock_timeout_and_a_clear_503() {
    crate::postgres_only!();
    let app = TestApp::spawn_with(|c| c.database.lock_timeout_ms = 300);
    let ann = app.user("ann");
    app.grant(&ann, 100);
    let url = app.config().database.url.clone();
    let mut other = postgres::Client::connect(&url, postgres::NoTls).expect("a second session");
    let mut held = other.transaction().unwrap();
    let id: i64 = ann.id.trim_start_matches("usr_").parse().unwrap();
    held.query("SELECT credits FROM users WHERE id = $1 FOR UPDATE", &[&id]).unwrap();
    let started = Instant::now();
    let r = app.client.consume(&ann.token, 10);
    let took = started.elapsed();
    assert_eq!((r.status, r.error_code().as_str()), (503, "database_busy"), "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(took < Duration::from_secs(3), "refused after {took:?}, not held until the lock went");
    held.rollback().unwrap();
    assert_eq!(app.balance(&ann)["balance"], 100, "the refused charge changed nothing");
    assert_eq!(app.client.consume(&ann.token, 10).status, 201);
    assert_eq!(app.audit()["valid"], true);
    // Each write transaction reports its round trips and its time holding
    // the write lock.
    let metrics = app.client.request("GET", "/metrics", None, &[], None).unwrap().text();
    for name in ["tollgate_pg_write_round_trips_count", "tollgate_pg_write_lock_held_seconds_count"] {
        let count: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {name}"));
        assert!(count >= 1.0, "{name} {count}");
    }
}

/// One consume of [`ConsumeLoad`]: when it started and ended, its status,
/// and its transaction if charged.
pub type Timed = (Instant, Instant, u16, Option<String>);

/// 8 threads consuming 1 credit each as one user while PostgreSQL is
/// restarted or frozen: every answer is a 201 or a 503 `database_*`.
pub struct ConsumeLoad {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Timed>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl ConsumeLoad {
    pub fn start(client: &Client, token: &str) -> ConsumeLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<Vec<Timed>>> = Arc::default();
        let threads = (0..8)
            .map(|_| {
                let (client, token, stop, seen) =
                    (client.clone(), token.to_owned(), Arc::clone(&stop), Arc::clone(&seen));
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let r = client.consume(&token, 1);
                        let txn = (r.status == 201).then(|| r.json()["transaction_id"].as_str().unwrap().to_owned());
                        assert!(
                            r.status == 201 || (r.status == 503 && r.error_code().starts_with("database_")),
                            "{}: {}",
                            r.status,
                            r.text()
                        );
                        seen.lock().unwrap().push((started, Instant::now(), r.status, txn));
                    }
                })
            })
            .collect();
        ConsumeLoad { stop, seen, threads }
    }

    /// Waits until a consume that started after `since` is charged.
    pub fn serving_within(&self, what: &str, since: Instant, within: Duration) {
        eventually(what, within, || self.seen.lock().unwrap().iter().any(|(at, _, s, _)| *at > since && *s == 201));
    }

    /// Stops the threads; every consume, and that each one acknowledged is
    /// in the ledger and the audit valid.
    pub fn finish(self, app: &TestApp) -> Vec<Timed> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        for t in seen.iter().filter_map(|(.., t)| t.as_ref()) {
            let id: i64 = t.trim_start_matches("txn_").parse().unwrap();
            assert_eq!(app.count_where("credit_transactions", &format!("id = {id}")), 1, "{t} acknowledged and lost");
        }
        assert_eq!(app.audit()["valid"], true);
        seen
    }
}

/// PostgreSQL restarted under load (`pg_ctl restart -m fast`): requests
/// fail only while it is down, with a 503, the instance serves again by
/// itself within 5 s of the server being back, and every acknowledged
/// charge is in the ledger.
#[test]
fn an_instance_serves_again_by_itself_after_postgresql_restarts_under_load() {
    crate::postgres_only!();
    let pg = TempServer::start("pg-temp");
    let url = tollgate::storage::pg::create_database(&pg.url, "restarted").expect("a database");
    let app = TestApp::spawn_with(move |c| c.database.url = url);
    let ann = app.user("ann");
    app.grant(&ann, 1_000_000);
    let load = ConsumeLoad::start(&app.client, &ann.token);
    std::thread::sleep(Duration::from_millis(800));
    pg.run("restart");
    let up = Instant::now();
    load.serving_within("not serving 5 s after PostgreSQL came back", up, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));
    let seen = load.finish(&app);
    let acked = seen.iter().filter(|(.., t)| t.is_some()).count();
    let refused = seen.iter().filter(|(_, _, s, _)| *s == 503).count();
    let _ = writeln!(std::io::stderr(), "restart: {acked} charges acknowledged, {refused} refused with 503");
    // Errors only while it was down: the connections it closed are found
    // and replaced before a request that starts once it is up uses one.
    let late: Vec<Duration> =
        seen.iter().filter(|(at, _, s, _)| *at > up && *s == 503).map(|(at, ..)| *at - up).collect();
    assert!(late.is_empty(), "refused after PostgreSQL was back: {late:?}");
}

/// A random mix of money operations from 12 threads over three instances
/// for 60 s (`TOLLGATE_TEST_MIX_S` to change it): charges, metered chats (a
/// hold, then its settle), grants, voids and redemptions. Afterwards every
/// acknowledged write is in the ledger, no hold is left, nobody is
/// overdrawn, and the audit is valid.
#[test]
fn a_random_mix_of_money_operations_over_three_instances_leaves_every_write_and_a_valid_audit() {
    crate::postgres_only!();
    let seconds: u64 = std::env::var("TOLLGATE_TEST_MIX_S").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let fake = FakeProvider::start();
    let open = [("TOLLGATE_LIMITS_RPM", "100000000"), ("TOLLGATE_LIMITS_BURST", "100000000")];
    let (_dir, url, servers) = job_instances(&fake, 12, "workers = 4", &open);
    let admin = servers[0].client.token(ADMIN_EMAIL, ADMIN_PASSWORD);
    let users: Vec<(String, String)> = (0..8)
        .map(|i| {
            let token = servers[0].client.funded_user(&admin, &format!("mix{i}@example.com"), 5_000);
            let id = servers[0].client.me(&token).json()["id"].as_str().unwrap().to_owned();
            (id, token)
        })
        .collect();
    let minted = servers[0].client.post("/v1/admin/codes", &admin, json!({"amount": 10, "count": 300}));
    assert_eq!(minted.status, 201, "{}", minted.text());
    let codes: Vec<String> =
        minted.json()["data"].as_array().unwrap().iter().map(|c| c["code"].as_str().unwrap().to_owned()).collect();
    let codes = Arc::new(Mutex::new(codes));
    let txns: Arc<Mutex<Vec<i64>>> = Arc::default();
    let grants: Arc<Mutex<Vec<String>>> = Arc::default();
    let clients: Vec<Client> = servers.iter().map(|s| s.client.clone()).collect();
    let (users, admin) = (Arc::new(users), Arc::new(admin));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let id_of =
        |v: &serde_json::Value| v.as_str().and_then(|t| t.strip_prefix("txn_")).and_then(|n| n.parse::<i64>().ok());
    let threads: Vec<_> = (0..12u64)
        .map(|t| {
            let (clients, users, admin) = (clients.clone(), Arc::clone(&users), Arc::clone(&admin));
            let (codes, txns, grants) = (Arc::clone(&codes), Arc::clone(&txns), Arc::clone(&grants));
            std::thread::spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t + 1);
                let mut ops = 0u64;
                while Instant::now() < deadline {
                    // xorshift64: reproducible per thread, no dependency.
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let client = &clients[(x % 3) as usize];
                    let (id, token) = &users[((x >> 8) % 8) as usize];
                    ops += 1;
                    match (x >> 16) % 6 {
                        0 | 1 => {
                            let r = client.consume(token, ((x >> 24) % 20 + 1) as i64);
                            match r.status {
                                201 => txns.lock().unwrap().extend(id_of(&r.json()["transaction_id"])),
                                402 => {}
                                s => panic!("consume {s}: {}", r.text()),
                            }
                        }
                        2 => {
                            let r = client.chat(
                                token,
                                json!({"model": "qwen-plus", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}),
                            );
                            match r.status {
                                200 => txns.lock().unwrap().extend(id_of(&r.json()["tollgate"]["transaction_id"])),
                                402 => {}
                                s => panic!("chat {s}: {}", r.text()),
                            }
                        }
                        3 => {
                            let r = client.post(&format!("/v1/admin/users/{id}/grants"), &admin, json!({"amount": 25}));
                            assert_eq!(r.status, 201, "grant: {}", r.text());
                            txns.lock().unwrap().extend(id_of(&r.json()["transaction_id"]));
                            grants.lock().unwrap().push(r.json()["id"].as_str().unwrap().to_owned());
                        }
                        4 => {
                            let pick = {
                                let g = grants.lock().unwrap();
                                (!g.is_empty()).then(|| g[(x >> 32) as usize % g.len()].clone())
                            };
                            if let Some(g) = pick {
                                let r = client.post(&format!("/v1/admin/grants/{g}/void"), &admin, json!({}));
                                assert_eq!(r.status, 200, "void: {}", r.text());
                            }
                        }
                        _ => {
                            let Some(code) = codes.lock().unwrap().pop() else { continue };
                            let r = client.post("/v1/credits/redeem", token, json!({"code": code}));
                            match r.status {
                                201 => grants.lock().unwrap().push(r.json()["id"].as_str().unwrap().to_owned()),
                                // This user already redeemed... never: each code is used once.
                                s => panic!("redeem {s}: {}", r.text()),
                            }
                        }
                    }
                }
                ops
            })
        })
        .collect();
    let ops: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let (txns, grants) = (txns.lock().unwrap().clone(), grants.lock().unwrap().clone());
    let _ =
        writeln!(std::io::stderr(), "mix: {ops} operations in {seconds} s, {} ledger rows acknowledged", txns.len());
    assert!(ops > seconds * 20, "the mix ran: {ops} operations");
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let one = |db: &mut postgres::Client, sql: &str| -> i64 { db.query_one(sql, &[]).unwrap().get(0) };
    let present: i64 =
        db.query_one("SELECT count(*) FROM credit_transactions WHERE id = ANY($1)", &[&txns]).unwrap().get(0);
    assert_eq!(present as usize, txns.len(), "every acknowledged ledger row is there");
    let grant_ids: Vec<i64> = grants.iter().map(|g| g.trim_start_matches("grant_").parse().unwrap()).collect();
    let present: i64 =
        db.query_one("SELECT count(*) FROM credit_grants WHERE id = ANY($1)", &[&grant_ids]).unwrap().get(0);
    assert_eq!(present as usize, grant_ids.len(), "every acknowledged grant is there");
    assert_eq!(one(&mut db, "SELECT count(*) FROM credit_holds WHERE status = 'active'"), 0, "no hold left");
    assert_eq!(
        one(&mut db, "SELECT count(*) FROM users WHERE credits < 0 OR credits - held < 0"),
        0,
        "nobody overdrawn"
    );
    let audit = servers[0].client.get("/v1/admin/audit", &admin).json();
    assert_eq!(audit["valid"], true, "{audit}");
}
