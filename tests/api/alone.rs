//! Tests whose assertions are latencies under PostgreSQL: `scripts/test`
//! runs them after the rest of the PostgreSQL pass, one at a time
//! (`alone::`), so another test's load on this 2-core machine is not what
//! they measure. Each says what it would show if it failed.

use crate::helpers::*;
use crate::instances::{ConsumeLoad, LOGINS, fresh_database, funded, instances};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// No global serialization: another session holds one user's row lock
/// while 32 threads charge as 32 other users through two instances, a
/// charge every `PACE_MS` each (the machine is not saturated: this is about
/// waiting, not capacity). For the first 2 s their p99 stays under 50 ms;
/// for one more second an admin's grants go on beside them, one of them to
/// the locked user (and that user's login), and every other charge and
/// grant still succeeds, none waiting anywhere near the lock timeout (a
/// grant or a login once held the write lock exclusively while it waited
/// for its user's row, stalling every charge for the lock timeout). The
/// locked user's own charges, grant and login wait out the lock timeout
/// and are refused, changing nothing.
#[test]
fn a_row_lock_held_on_one_user_holds_up_no_other_user() {
    crate::postgres_only!();
    const PACE_MS: u64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database();
    // 33 logins from one address in a moment.
    let servers = instances(&dir, 2, &url, &[LOGINS]);
    let held_token = funded(&servers, "held@example.com", 1_000);
    let tokens: Vec<String> = (0..32).map(|i| funded(&servers, &format!("free{i}@example.com"), 1_000)).collect();
    // Logged in before anything is measured: a login hashes a password.
    let admin = servers[0].client.token(ADMIN_EMAIL, ADMIN_PASSWORD);
    let user_id = |token: &str| servers[0].client.get("/v1/me", token).json()["id"].as_str().expect("id").to_owned();
    let (first_user, held_user) = (user_id(&tokens[0]), user_id(&held_token));
    // Each thread's first charge (a new connection, a cold credential
    // cache) is made before the lock is taken: it measures something else.
    let ready = Arc::new(std::sync::Barrier::new(33));
    let start: Arc<Mutex<Option<Instant>>> = Arc::default();
    let threads: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, token)| {
            let (client, ready, start) = (servers[i % 2].client.clone(), Arc::clone(&ready), Arc::clone(&start));
            std::thread::spawn(move || {
                assert_eq!(client.consume(&token, 1).status, 201);
                ready.wait();
                let until = start.lock().unwrap().expect("the lock is held") + Duration::from_secs(3);
                // Spread out, not 32 at once every PACE_MS.
                std::thread::sleep(Duration::from_millis(PACE_MS * i as u64 / 32));
                let mut took = Vec::new();
                while Instant::now() < until {
                    let started = Instant::now();
                    let r = client.consume(&token, 1);
                    took.push((started, started.elapsed()));
                    assert_eq!(r.status, 201, "{}", r.text());
                    std::thread::sleep(Duration::from_millis(PACE_MS));
                }
                took
            })
        })
        .collect();
    let mut other = postgres::Client::connect(&url, postgres::NoTls).expect("a second session");
    let mut seals = || other.query_one("SELECT count(*) FROM ledger_seals", &[]).unwrap().get::<_, i64>(0);
    let seals_before = seals();
    let mut session = postgres::Client::connect(&url, postgres::NoTls).expect("a third session");
    let mut held = session.transaction().unwrap();
    held.query("SELECT credits FROM users WHERE email = 'held@example.com' FOR UPDATE", &[]).unwrap();
    let locked = Instant::now();
    let (quiet_until, until) = (locked + Duration::from_secs(2), locked + Duration::from_secs(3));
    *start.lock().unwrap() = Some(locked);
    ready.wait();
    let granting = {
        let (client, admin, user) = (servers[0].client.clone(), admin.clone(), first_user.clone());
        std::thread::spawn(move || {
            std::thread::sleep(quiet_until.saturating_duration_since(Instant::now()));
            let mut statuses = Vec::new();
            while Instant::now() < until {
                let path = format!("/v1/admin/users/{user}/credits");
                let r = client.post(&path, &admin, serde_json::json!({"amount": 1, "description": "top-up"}));
                statuses.push(r.status);
                std::thread::sleep(Duration::from_millis(200));
            }
            statuses
        })
    };
    // Writes to the held user that are not charges, a grant and a login
    // (before, exclusive: holding the whole write lock while they waited
    // for the row, they held every charge back until the lock timeout).
    let held_grant = {
        let (client, admin) = (servers[1].client.clone(), admin.clone());
        std::thread::spawn(move || {
            std::thread::sleep(quiet_until.saturating_duration_since(Instant::now()));
            let path = format!("/v1/admin/users/{held_user}/credits");
            client.post(&path, &admin, serde_json::json!({"amount": 5, "description": "top-up"})).status
        })
    };
    let held_login = {
        let client = servers[0].client.clone();
        std::thread::spawn(move || {
            std::thread::sleep(quiet_until.saturating_duration_since(Instant::now()));
            client.login("held@example.com", PASSWORD).status
        })
    };
    let mut blocked = Vec::new();
    while Instant::now() < until {
        blocked.push(servers[1].client.consume(&held_token, 1).status);
    }
    let took: Vec<(Instant, Duration)> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let granted = granting.join().unwrap();
    // Refused at the lock timeout while the row is still held.
    let held_granted = (held_grant.join().unwrap(), held_login.join().unwrap());
    // The sealer waits for no row: the others' moves were sealed meanwhile.
    assert!(seals() > seals_before, "no seal written while a row was locked");
    held.rollback().unwrap();
    let mut quiet: Vec<Duration> = took.iter().filter(|(at, _)| *at < quiet_until).map(|(_, d)| *d).collect();
    quiet.sort();
    let p99 = quiet[quiet.len() * 99 / 100];
    let slowest = took.iter().map(|(_, d)| *d).max().expect("charges");
    let _ = writeln!(
        std::io::stderr(),
        "one user's row locked: {} charges of 32 others in 2 s, p50 {:?}, p99 {p99:?}; then {} grants beside them, the slowest charge {slowest:?}",
        quiet.len(),
        quiet[quiet.len() / 2],
        granted.len()
    );
    assert!(quiet.len() >= 32 * 5, "{} charges in 2 s", quiet.len());
    assert!(p99 < Duration::from_millis(50), "p99 {p99:?} while one user's row was locked");
    assert!(granted.len() >= 3 && granted.iter().all(|s| *s == 201), "grants: {granted:?}");
    assert!(slowest < Duration::from_millis(500), "a charge waited {slowest:?}");
    assert_eq!(held_granted, (503, 503), "a grant to the held user, and their login");
    assert!(!blocked.is_empty() && blocked.iter().all(|s| *s == 503), "the locked user's charges: {blocked:?}");
    assert_eq!(servers[1].client.balance(&held_token).json()["balance"], 1_000, "refused writes changed nothing");
    assert_eq!(servers[1].client.audit(&admin).json()["valid"], true);
}

/// PostgreSQL frozen (every server process SIGSTOPped: sockets open,
/// nothing answered, so the server cannot cancel its own statements) for
/// 3 s under load: every request is answered, with a 503, within the
/// statement timeout and the client's grace past it (plus one pooled
/// connection's wait, also bounded by the statement timeout); once
/// thawed, the instance serves again by itself and nothing acknowledged
/// is lost.
#[test]
fn a_frozen_postgresql_holds_no_worker_past_the_statement_timeout() {
    crate::postgres_only!();
    const STATEMENT_TIMEOUT_MS: u64 = 1_000;
    let pg = TempServer::start("pg-temp");
    let url = tollgate::storage::pg::create_database(&pg.url, "frozen").expect("a database");
    let app = TestApp::spawn_with(move |c| {
        c.database.url = url;
        c.database.statement_timeout_ms = STATEMENT_TIMEOUT_MS;
        c.database.lock_timeout_ms = 500;
    });
    let ann = app.user("ann");
    app.grant(&ann, 1_000_000);
    let load = ConsumeLoad::start(&app.client, &ann.token);
    std::thread::sleep(Duration::from_millis(500));
    pg.run("freeze");
    let frozen = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    pg.run("thaw");
    let thawed = Instant::now();
    load.serving_within("not serving 5 s after PostgreSQL thawed", thawed, Duration::from_secs(5));
    let seen = load.finish(&app);
    // A request waits at most for a pooled connection (the statement
    // timeout) and then for the server (the statement timeout and the
    // grace); 500 ms more for the rest of its work on a loaded machine.
    let bound = Duration::from_millis(2 * STATEMENT_TIMEOUT_MS + tollgate::storage::pg::PG_IO_GRACE_MS + 500);
    let slowest = seen.iter().map(|(at, end, ..)| *end - *at).max().expect("requests");
    let refused = seen.iter().filter(|(at, end, ..)| *at > frozen && *end < thawed).map(|(.., s, _)| *s);
    let refused: Vec<u16> = refused.collect();
    let _ = writeln!(
        std::io::stderr(),
        "frozen 3 s: {} requests answered while frozen, the slowest request of the run took {slowest:?}",
        refused.len()
    );
    assert!(slowest < bound, "a request was held {slowest:?} by a frozen server (bound {bound:?})");
    assert!(refused.len() >= 8, "{} requests answered in 3 s: workers were held", refused.len());
    assert!(refused.iter().all(|s| *s == 503), "{refused:?}");
}
