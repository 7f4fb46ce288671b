//! Kill -9 in the middle of a consume load, restart, and prove the ledger:
//! every acknowledged consume is there, no refused one is, retries with the
//! same Idempotency-Key settle the unknown ones exactly once, audit passes.

use crate::helpers::*;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Committed,
    Refused,
    Unknown,
}

/// Per Idempotency-Key: what the client learned, and the transaction id if any.
type Outcomes = HashMap<String, (Outcome, Option<String>)>;

#[test]
fn sigkill_during_consumes_loses_no_acknowledged_write_and_doubles_none() {
    crate::sqlite_only!();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let durable = [("TOLLGATE_SERVER_SQLITE_SYNCHRONOUS", "full")];
    let mut server = serve_process(&db, &durable);
    let admin = server.client.token(ADMIN_EMAIL, ADMIN_PASSWORD);
    // Enough for most consumes, not all: some are refused with 402 before the kill.
    let token = server.client.funded_user(&admin, "load@example.com", 3000);

    let outcomes: Arc<Mutex<Outcomes>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let (client, token, outcomes, stop) =
                (server.client.clone(), token.clone(), Arc::clone(&outcomes), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) && i < 5_000 {
                    let key = format!("t{t}-{i}");
                    i += 1;
                    let body = json!({"amount": 3, "description": key}).to_string();
                    let r = client.request(
                        "POST",
                        CONSUME,
                        Some(&token),
                        &[("Idempotency-Key", &key)],
                        Some(body.as_bytes()),
                    );
                    let o = match r {
                        Ok(r) if r.status == 201 => {
                            (Outcome::Committed, r.json()["transaction_id"].as_str().map(str::to_owned))
                        }
                        Ok(r) if r.status == 402 => (Outcome::Refused, None),
                        Ok(r) => panic!("unexpected {}: {}", r.status, r.text()),
                        Err(_) => {
                            outcomes.lock().unwrap().insert(key, (Outcome::Unknown, None));
                            break;
                        }
                    };
                    outcomes.lock().unwrap().insert(key, o);
                }
            })
        })
        .collect();
    sigkill_after(&mut server, Duration::from_millis(1500), &stop, workers);
    let outcomes = outcomes.lock().unwrap().clone();
    let committed = outcomes.values().filter(|o| o.0 == Outcome::Committed).count();
    assert!(committed > 50, "the load did not run long enough ({committed} commits)");

    // What the file says, before tollgate touches it again.
    let rows: HashMap<String, String> = {
        let c = rusqlite::Connection::open(&db).unwrap();
        let mut st = c.prepare("SELECT description, id FROM credit_transactions WHERE kind = 'consume'").unwrap();
        st.query_map([], |r| Ok((r.get::<_, String>(0)?, format!("txn_{}", r.get::<_, i64>(1)?))))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    for (key, (outcome, txn)) in &outcomes {
        match outcome {
            Outcome::Committed => assert_eq!(rows.get(key), txn.as_ref(), "acknowledged consume {key} is missing"),
            Outcome::Refused => assert!(!rows.contains_key(key), "refused consume {key} is in the ledger"),
            Outcome::Unknown => {}
        }
    }

    let o = bin().args(["audit", "--db"]).arg(&db).output().unwrap();
    assert!(o.status.success(), "audit after the crash: {}", String::from_utf8_lossy(&o.stdout));

    // Restart; retry every request whose outcome the client never learned.
    let mut server = serve_process(&db, &durable);
    let token = server.client.token("load@example.com", PASSWORD);
    for (key, (outcome, _)) in &outcomes {
        if *outcome != Outcome::Unknown {
            continue;
        }
        let body = json!({"amount": 3, "description": key}).to_string();
        let r = server
            .client
            .request("POST", CONSUME, Some(&token), &[("Idempotency-Key", key)], Some(body.as_bytes()))
            .unwrap();
        assert!(r.status == 201 || r.status == 402, "{}", r.text());
    }
    let c = rusqlite::Connection::open(&db).unwrap();
    let duplicates: i64 = c
        .query_row("SELECT count(*) FROM (SELECT description FROM credit_transactions WHERE kind='consume' GROUP BY description HAVING count(*) > 1)", [], |r| r.get(0))
        .unwrap();
    assert_eq!(duplicates, 0, "a retried consume was charged twice");
    let active_holds: i64 =
        c.query_row("SELECT count(*) FROM credit_holds WHERE status = 'active'", [], |r| r.get(0)).unwrap();
    assert_eq!(active_holds, 0);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let o = bin().args(["audit", "--db"]).arg(&db).output().unwrap();
    assert!(o.status.success(), "audit after retries: {}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn holds_of_chat_calls_in_flight_at_sigkill_are_released_at_the_next_start() {
    crate::sqlite_only!();
    let fake = crate::fake_provider::FakeProvider::start();
    fake.script(|s| s.latency_ms = 30_000);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let config = slow_chat_config(dir.path(), &fake.base, "");
    let env = [("TOLLGATE_CONFIG", config.to_str().unwrap()), ("TOLLGATE_SERVER_SQLITE_SYNCHRONOUS", "full")];
    let mut server = serve_process(&db, &env);
    let admin = server.client.token(ADMIN_EMAIL, ADMIN_PASSWORD);
    let token = server.client.funded_user(&admin, "chat@example.com", 10_000);
    let calls = slow_chats_in_background(&server.client, &token, 3);
    let active = |db: &std::path::Path| -> i64 {
        let c = rusqlite::Connection::open(db).unwrap();
        c.query_row("SELECT count(*) FROM credit_holds WHERE status = 'active'", [], |r| r.get(0)).unwrap()
    };
    let t = std::time::Instant::now();
    while active(&db) < 3 {
        assert!(t.elapsed() < Duration::from_secs(10), "the calls never held credits");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();
    for c in calls {
        c.join().unwrap();
    }
    assert_eq!(active(&db), 3, "the holds outlived the process");

    let server = serve_process(&db, &env);
    assert_eq!(active(&db), 0, "released at start, not after their TTL");
    let token = server.client.token("chat@example.com", PASSWORD);
    let b = server.client.balance(&token).json();
    assert_eq!(
        (b["balance"].as_i64(), b["held"].as_i64(), b["available"].as_i64()),
        (Some(10_000), Some(0), Some(10_000))
    );
    let admin = server.client.token(ADMIN_EMAIL, ADMIN_PASSWORD);
    let logs = server.client.get("/v1/admin/logs?log_type=system", &admin).json();
    assert!(logs.to_string().contains("holds_released_at_start"), "{logs}");
    drop(server);
    let o = bin().args(["audit", "--db"]).arg(&db).output().unwrap();
    assert!(o.status.success(), "audit after the restart: {}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn sigkill_during_metered_chats_leaves_every_carry_consistent() {
    crate::sqlite_only!();
    let fake = crate::fake_provider::FakeProvider::start();
    fake.script(|s| {
        s.prompt_tokens = 100;
        s.completion_tokens = 50;
        s.latency_ms = 2;
        // Cache reads, so every row carries components the audit reprices.
        s.usage_extra = json!({"prompt_tokens_details": {"cached_tokens": 60}});
    });
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let config = write_config(
        dir.path(),
        &format!(
            "[providers.p]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n{}",
            fake.base,
            model_toml(
                "cheap",
                "chat",
                "p",
                "u",
                "{ input_per_1m = 150, cached_input_per_1m = 15, output_per_1m = 600 }",
                "max_output_tokens = 100\n"
            )
        ),
    );
    let env = [("TOLLGATE_CONFIG", config.to_str().unwrap()), ("TOLLGATE_SERVER_SQLITE_SYNCHRONOUS", "full")];
    let mut server = serve_process(&db, &env);
    let admin = server.client.token(ADMIN_EMAIL, ADMIN_PASSWORD);
    let tokens: Vec<String> =
        (0..4).map(|i| server.client.funded_user(&admin, &format!("c{i}@example.com"), 1000)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(0u64));
    let workers: Vec<_> = tokens
        .iter()
        .map(|token| {
            let (client, token, stop, acked) =
                (server.client.clone(), token.clone(), Arc::clone(&stop), Arc::clone(&acknowledged));
            std::thread::spawn(move || {
                let body = json!({"model": "cheap", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 60});
                while !stop.load(Ordering::Relaxed) {
                    match client.request("POST", CHAT, Some(&token), &[], Some(body.to_string().as_bytes())) {
                        Ok(r) if r.status == 200 => *acked.lock().unwrap() += 1,
                        Ok(r) => panic!("unexpected {}: {}", r.status, r.text()),
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    sigkill_after(&mut server, Duration::from_millis(1500), &stop, workers);
    let acked = *acknowledged.lock().unwrap();
    assert!(acked > 20, "the load did not run long enough ({acked} calls)");
    let c = rusqlite::Connection::open(&db).unwrap();
    let metered: i64 =
        c.query_row("SELECT count(*) FROM credit_transactions WHERE cost_micro IS NOT NULL", [], |r| r.get(0)).unwrap();
    assert!(metered as u64 >= acked, "every acknowledged call is on the ledger ({metered} rows, {acked} acknowledged)");
    let (priced, sum): (i64, i64) = c
        .query_row(
            "SELECT count(*), sum(cost_micro) FROM credit_transactions WHERE components LIKE '%\"cached_input\"%'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    // 40 x 150 + 60 x 15 + 50 x 600 = 36,900 millionths a call.
    assert_eq!((priced, sum), (metered, metered * 36_900), "every row kept its components");
    drop(c);
    // After a restart the holds of the calls cut short are released, and
    // the carries still add up.
    assert_nobody_overdrawn_and_audit_valid_across_restart(&db, &env);
}

/// 32 callers who cannot afford the model's whole output bound: every
/// call is held and sent with the bound that fits, half of them streamed;
/// SIGKILL in the middle. Nobody is overdrawn, every acknowledged call is
/// on the ledger, and the audit holds before and after the restart.
#[test]
fn sigkill_during_calls_with_lowered_bounds_overdraws_nobody() {
    crate::sqlite_only!();
    let fake = crate::fake_provider::FakeProvider::start();
    fake.script(|s| s.latency_ms = 2);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let config = dear_chat_config(dir.path(), &fake);
    let env = [("TOLLGATE_CONFIG", config.to_str().unwrap()), ("TOLLGATE_SERVER_SQLITE_SYNCHRONOUS", "full")];
    let mut server = serve_process(&db, &env);
    let admin = server.client.token(ADMIN_EMAIL, ADMIN_PASSWORD);
    // 3,000 credits: less than the input and 4,096 output tokens at 1 credit each.
    let tokens: Vec<String> =
        (0..32).map(|i| server.client.funded_user(&admin, &format!("l{i}@example.com"), 3000)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (acknowledged, lowered) = (Arc::new(Mutex::new(0u64)), Arc::new(Mutex::new(0u64)));
    let workers: Vec<_> = tokens
        .iter()
        .enumerate()
        .map(|(i, token)| {
            let (client, token, stop) = (server.client.clone(), token.clone(), Arc::clone(&stop));
            let (acked, low) = (Arc::clone(&acknowledged), Arc::clone(&lowered));
            std::thread::spawn(move || {
                let body =
                    json!({"model": "dear", "stream": i % 2 == 0, "messages": [{"role": "user", "content": "hi"}]});
                while !stop.load(Ordering::Relaxed) {
                    match client.request("POST", CHAT, Some(&token), &[], Some(body.to_string().as_bytes())) {
                        Ok(r) if r.status == 200 => {
                            *acked.lock().unwrap() += 1;
                            if r.header("x-tollgate-max-tokens-lowered").is_some() {
                                *low.lock().unwrap() += 1;
                            }
                        }
                        Ok(r) if r.status == 402 => break,
                        Ok(r) => panic!("unexpected {}: {}", r.status, r.text()),
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    sigkill_after(&mut server, Duration::from_millis(1500), &stop, workers);
    let (acked, low) = (*acknowledged.lock().unwrap(), *lowered.lock().unwrap());
    assert!(acked > 20 && low == acked, "{acked} calls acknowledged, {low} with a lowered bound");
    let c = rusqlite::Connection::open(&db).unwrap();
    let consumed: i64 =
        c.query_row("SELECT count(*) FROM credit_transactions WHERE kind = 'consume'", [], |r| r.get(0)).unwrap();
    assert!(consumed as u64 >= acked, "every acknowledged call is on the ledger ({consumed}, {acked})");
    drop(c);
    assert_nobody_overdrawn_and_audit_valid_across_restart(&db, &env);
}

/// Lets the load run for `after`, SIGKILLs the server, then stops the
/// load's threads and waits for them.
fn sigkill_after(
    server: &mut ServerProcess,
    after: Duration,
    stop: &AtomicBool,
    workers: Vec<std::thread::JoinHandle<()>>,
) {
    std::thread::sleep(after);
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
}

/// A config with the fake as provider `p` and a chat model `dear` at one
/// credit a token, in and out.
fn dear_chat_config(dir: &std::path::Path, fake: &crate::fake_provider::FakeProvider) -> std::path::PathBuf {
    write_config(
        dir,
        &format!(
            "[providers.p]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n{}",
            fake.base,
            model_toml("dear", "chat", "p", "u", "{ input_per_1m = 1000000, output_per_1m = 1000000 }", "")
        ),
    )
}

/// Every user's last balance, less what their live holds keep, is at least
/// zero; `tollgate audit` passes on the killed database, and again after
/// a start (which releases the holds of calls in flight at the kill).
fn assert_nobody_overdrawn_and_audit_valid_across_restart(db: &std::path::Path, env: &[(&str, &str)]) {
    let negative: i64 = rusqlite::Connection::open(db)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM users u WHERE
               coalesce((SELECT balance_after FROM credit_transactions t WHERE t.user_id = u.id ORDER BY id DESC LIMIT 1), 0)
               - coalesce((SELECT sum(amount) FROM credit_holds h WHERE h.user_id = u.id AND h.status = 'active'), 0) < 0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(negative, 0, "nobody overdrawn");
    let o = bin().args(["audit", "--db"]).arg(db).output().unwrap();
    assert!(o.status.success(), "audit after the crash: {}", String::from_utf8_lossy(&o.stdout));
    let server = serve_process(db, env);
    drop(server);
    let o = bin().args(["audit", "--db"]).arg(db).output().unwrap();
    assert!(o.status.success(), "audit after the restart: {}", String::from_utf8_lossy(&o.stdout));
    let held: i64 = rusqlite::Connection::open(db)
        .unwrap()
        .query_row("SELECT count(*) FROM credit_holds WHERE status = 'active'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(held, 0, "no hold outlives a restart");
}

/// 32 callers who each open a stream, read three chunks and hang up, over
/// and over; SIGKILL in the middle. Every abandoned stream that settled is
/// charged its input bound and the output it was sent (never nothing,
/// never the whole hold of 4,000-odd credits), nobody is overdrawn, and
/// the audit holds before and after the restart.
#[test]
fn sigkill_during_abandoned_streams_charges_what_was_generated_and_overdraws_nobody() {
    use std::io::{Read, Write};
    crate::sqlite_only!();
    let fake = crate::fake_provider::FakeProvider::start();
    fake.script(|s| {
        s.text = "word ".repeat(60).trim().to_owned();
        s.stream_event_delay_ms = 20;
    });
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let config = dear_chat_config(dir.path(), &fake);
    let env = [("TOLLGATE_CONFIG", config.to_str().unwrap()), ("TOLLGATE_SERVER_SQLITE_SYNCHRONOUS", "full")];
    let mut server = serve_process(&db, &env);
    let admin = server.client.token(ADMIN_EMAIL, ADMIN_PASSWORD);
    let tokens: Vec<String> =
        (0..32).map(|i| server.client.funded_user(&admin, &format!("s{i}@example.com"), 100_000)).collect();
    let addr = server.client.base.trim_start_matches("http://").to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let abandoned = Arc::new(Mutex::new(0u64));
    let workers: Vec<_> = tokens
        .into_iter()
        .map(|token| {
            let (addr, stop, abandoned) = (addr.clone(), Arc::clone(&stop), Arc::clone(&abandoned));
            std::thread::spawn(move || {
                let body = json!({"model": "dear", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
                    .to_string();
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = std::net::TcpStream::connect(&addr) else { break };
                    let sent = write!(
                        s,
                        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if sent.is_err() {
                        break;
                    }
                    // Three chunks with content, then hang up.
                    let (mut seen, mut buf) = (Vec::new(), [0u8; 4096]);
                    while String::from_utf8_lossy(&seen).matches("\"content\":\"").count() < 3 {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    assert!(seen.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&seen));
                    *abandoned.lock().unwrap() += 1;
                }
            })
        })
        .collect();
    sigkill_after(&mut server, Duration::from_millis(2000), &stop, workers);
    let abandoned = *abandoned.lock().unwrap();
    let c = rusqlite::Connection::open(&db).unwrap();
    let charges: Vec<(i64, String)> = c
        .prepare("SELECT -amount, description FROM credit_transactions WHERE kind = 'consume'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    // At most two streams per caller were still settling at the kill.
    assert!(abandoned > 64 && charges.len() as u64 + 64 >= abandoned, "{} charged of {abandoned}", charges.len());
    for (charged, description) in &charges {
        // The input bound (59 tokens) and a few words: far below the hold.
        assert!(*charged > 59 && *charged < 400, "charged {charged}: {description}");
        assert!(!description.contains("/ 0 out"), "the output sent is charged: {description}");
    }
    drop(c);
    assert_nobody_overdrawn_and_audit_valid_across_restart(&db, &env);
}

/// A paid Checkout's event sent 50 times at once, SIGKILL while they are
/// in flight (some received and not answered), then Stripe's retries after
/// the restart: exactly one grant, and the audit holds.
#[test]
fn sigkill_between_a_payment_events_receipt_and_answer_grants_it_once() {
    use crate::fake_stripe::{self, FakeStripe, WEBHOOK_SECRET, event, now_s, signed};
    crate::sqlite_only!();
    let stripe = FakeStripe::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let config = write_config(
        dir.path(),
        &format!(
            "[payments]\nprovider = \"stripe\"\nstripe_api_base = \"{}\"\nreturn_urls = [\"https://shop.example/\"]\n\
             [[payments.packages]]\nid = \"p500\"\ncredits = 500\nprice = 500\ncurrency = \"usd\"\n",
            stripe.base
        ),
    );
    let env = [
        ("TOLLGATE_CONFIG", config.to_str().unwrap()),
        ("TOLLGATE_SERVER_SQLITE_SYNCHRONOUS", "full"),
        ("STRIPE_SECRET_KEY", fake_stripe::SECRET_KEY),
        ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET),
    ];
    let mut server = serve_process(&db, &env);
    let admin = server.client.token(ADMIN_EMAIL, ADMIN_PASSWORD);
    let ann = server.client.funded_user(&admin, "ann@example.com", 1);
    let ann_id = server.client.me(&ann).json()["id"].as_str().unwrap().to_owned();
    let r = server.client.post(
        "/v1/payments/checkout",
        &ann,
        json!({"package": "p500", "success_url": "https://shop.example/ok", "cancel_url": "https://shop.example/no"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let payment = r.json()["payment"]["id"].as_str().unwrap().to_owned();
    let session = r.json()["url"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let e =
        event("evt_crash", "checkout.session.completed", crate::payments::completed(&session, &payment, &ann_id, 500));
    let (body, header) = signed(&e, WEBHOOK_SECRET, now_s());
    let (body, header) = (Arc::new(body), Arc::new(header));
    let send_all = |client: &Client| -> Vec<std::thread::JoinHandle<Option<u16>>> {
        (0..50)
            .map(|_| {
                let (client, body, header) = (client.clone(), Arc::clone(&body), Arc::clone(&header));
                std::thread::spawn(move || {
                    client
                        .request(
                            "POST",
                            "/v1/payments/stripe/webhook",
                            None,
                            &[("Stripe-Signature", header.as_str())],
                            Some(body.as_bytes()),
                        )
                        .ok()
                        .map(|r| r.status)
                })
            })
            .collect()
    };
    let in_flight = send_all(&server.client);
    std::thread::sleep(Duration::from_millis(3));
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();
    let answered = in_flight.into_iter().filter_map(|t| t.join().unwrap()).count();
    let o = bin().args(["audit", "--db"]).arg(&db).output().unwrap();
    assert!(o.status.success(), "audit after the crash: {}", String::from_utf8_lossy(&o.stdout));

    // Stripe retries every delivery it got no 2xx for, after the restart.
    let server = serve_process(&db, &env);
    for t in send_all(&server.client) {
        assert_eq!(t.join().unwrap(), Some(200));
    }
    let c = rusqlite::Connection::open(&db).unwrap();
    let one = |sql: &str| -> i64 { c.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(
        one("SELECT count(*) FROM credit_grants WHERE source = 'payment'"),
        1,
        "{answered} answered before the kill"
    );
    assert_eq!(one("SELECT count(*) FROM payment_events"), 1);
    assert_eq!(server.client.balance(&ann).json()["balance"], 501);
    drop(c);
    drop(server);
    let o = bin().args(["audit", "--db"]).arg(&db).output().unwrap();
    assert!(o.status.success(), "audit after the retries: {}", String::from_utf8_lossy(&o.stdout));
}
