//! Hot paths outside the writer: JWT verification, the token-bucket check,
//! the full audit of a 1M-row ledger, usage reports and admin log filters.
//!
//! Run: `cargo bench --bench hot_paths`.

use criterion::{Criterion, criterion_group, criterion_main};
use std::sync::Arc;
use std::time::Duration;
use tollgate::auth::CurrentUser;
use tollgate::auth::jwt::JwtKeys;
use tollgate::config::{AuthConfig, LimitsConfig};
use tollgate::domain::{Credits, Email, Role, UserId};
use tollgate::guard::{Guard, SystemClock};
use tollgate::ledger::SpendCaps;
use tollgate::storage::{Db, Synchronous};

fn jwt(c: &mut Criterion) {
    let keys = JwtKeys::new(b"0123456789abcdef0123456789abcdef");
    let token = keys.issue(UserId(42), Role::User, 1, 3600).expect("token");
    c.bench_function("jwt_verify", |b| b.iter(|| keys.verify(std::hint::black_box(&token)).expect("valid")));
}

fn bucket(c: &mut Criterion) {
    let limits = LimitsConfig { rpm: 1_000_000_000, burst: 1_000_000_000, ..LimitsConfig::default() };
    let guard = Guard::new(limits, AuthConfig::default(), Arc::new(SystemClock::default()));
    let mut i = 0i64;
    c.bench_function("token_bucket_check_10k_users", |b| {
        b.iter(|| {
            i = (i + 1) % 10_000;
            let u = CurrentUser {
                id: UserId(i + 1),
                role: Role::User,
                via: tollgate::auth::Credential::Jwt(None),
                price_group: None,
            };
            guard.check_rate(std::hint::black_box(&u))
        })
    });
}

/// 1,000 users x 1,000 rows, written in groups of 10,000 rows per transaction.
fn audit_1m(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&dir.path().join("audit.db"), Synchronous::Normal).expect("open");
    let users: Vec<UserId> = (0..1000)
        .map(|i| {
            let email = Email::parse(&format!("a{i}@example.com")).expect("email");
            db.write(move |c| Ok::<_, tollgate::error::Error>(tollgate::users::insert(c, &email, "x", Role::User)?.id))
                .expect("user")
        })
        .collect();
    for round in 0..100 {
        let users = users.clone();
        db.write(move |c| {
            for u in &users {
                // Two grants and eight charges drawn on them: the audit
                // checks the grants, their draws and the chain.
                for k in 0..2 {
                    tollgate::ledger::grant(c, *u, Credits(100 + k), "seed")?;
                }
                for k in 0..8 {
                    tollgate::ledger::consume(c, *u, Credits(1 + k % 5), "seed", &SpendCaps::NONE)?;
                }
            }
            let _ = round;
            Ok::<_, tollgate::error::Error>(())
        })
        .expect("seed");
    }
    let mut g = c.benchmark_group("audit");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.bench_function("audit_1m_rows", |b| {
        b.iter(|| {
            let report = db.read(|c| tollgate::ledger::audit::audit(c, None)).expect("audit");
            assert!(report.valid && report.rows_checked == 1_000_000);
        })
    });
    g.finish();
}

/// Usage reports at 1M ledger rows and 10k users: 10,000 users x 100
/// consumes spread over 30 days, plus three models' calls per user per day
/// in the aggregate (~900k aggregate rows). Reports read only the aggregate.
fn usage_reports(c: &mut Criterion) {
    use tollgate::usage::{Dim, Metered, Query};
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&dir.path().join("usage.db"), Synchronous::Normal).expect("open");
    let day0 = tollgate::domain::day_number(tollgate::domain::Timestamp::now(), 0) - 29;
    let mut users = Vec::new();
    for chunk in 0..10 {
        let made = db
            .write(move |c| {
                let mut out = Vec::new();
                for i in 0..1000 {
                    let email = Email::parse(&format!("u{chunk}-{i}@example.com")).expect("email");
                    let u = tollgate::users::insert(c, &email, "x", Role::User)?.id;
                    tollgate::ledger::grant(c, u, Credits(1_000_000), "seed")?;
                    out.push(u);
                }
                Ok::<_, tollgate::error::Error>(out)
            })
            .expect("users");
        users.extend(made);
    }
    let models = ["chat-a", "chat-b", "image-c"];
    for round in 0..100i64 {
        for half in users.chunks(5_000) {
            let half = half.to_vec();
            db.write(move |c| {
                let at = tollgate::domain::day_start(day0 + round % 30, 0).plus_ms(3_600_000);
                for u in &half {
                    tollgate::ledger::consume_at(c, *u, Credits(1 + round % 7), "seed", &SpendCaps::NONE, at)?;
                    if round < 30 {
                        for m in models {
                            let used = Metered { input_tokens: 120, output_tokens: 340, ..Metered::model(m) };
                            tollgate::usage::count(c, *u, day0 + round, &used.request(None, Credits(0)))?;
                        }
                    }
                }
                Ok::<_, tollgate::error::Error>(())
            })
            .expect("seed");
        }
    }
    let (start, end) = (day0, day0 + 29);
    let all = [Dim::Day, Dim::Model, Dim::User, Dim::Key];
    let mut g = c.benchmark_group("usage_1m_rows_10k_users");
    g.sample_size(20);
    let user = users[4321];
    for (name, who, group) in [
        ("user_by_day_model", Some(user), "day,model"),
        ("all_by_day_model", None, "day,model"),
        ("all_by_user", None, "user"),
    ] {
        let q = Query::new(start, end, who, group, &all).expect("query");
        g.bench_function(name, |b| {
            b.iter(|| {
                let r = db.read(|c| tollgate::usage::report(c, &q)).expect("report");
                assert!(!r.data.is_empty());
            })
        });
    }
    g.finish();
}

/// Admin log filters over 1M business logs (10k users; 1 in 100 a warning)
/// and 10,000 system logs (1 in 10 an error): what the partial indexes of
/// migration V13 must keep fast.
fn logs_1m(c: &mut Criterion) {
    use tollgate::logs::{Level, LogFilter, LogType, NewLog};
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&dir.path().join("logs.db"), Synchronous::Normal).expect("open");
    let users: Vec<UserId> = db
        .write(|c| {
            (0..10_000)
                .map(|i| {
                    let email = Email::parse(&format!("l{i}@example.com")).expect("email");
                    Ok(tollgate::users::insert(c, &email, "x", Role::User)?.id)
                })
                .collect::<tollgate::error::Result<Vec<_>>>()
        })
        .expect("users");
    for round in 0..20 {
        let users = users.clone();
        db.write(move |c| {
            for i in 0..50_000usize {
                let n = round * 50_000 + i;
                let user = users[n % users.len()];
                tollgate::logs::write(
                    c,
                    &NewLog::business(user, "ai_chat_completion", n % 100 != 0, serde_json::json!({"n": n})),
                )?;
                if n % 100 == 0 {
                    let level = if n % 1000 == 0 { Level::Error } else { Level::Info };
                    tollgate::logs::write(c, &NewLog::system(level, "upkeep", serde_json::json!({"n": n})))?;
                }
            }
            Ok::<_, tollgate::error::Error>(())
        })
        .expect("seed");
    }
    let page = tollgate::paging::Page::default();
    let mut g = c.benchmark_group("admin_logs_1m_business");
    g.sample_size(20);
    for (name, log_type, level, user_id) in [
        ("all", None, None, None),
        ("business", Some(LogType::Business), None, None),
        ("business_warn", Some(LogType::Business), Some(Level::Warn), None),
        ("system", Some(LogType::System), None, None),
        ("system_error", Some(LogType::System), Some(Level::Error), None),
        ("error_any_type", None, Some(Level::Error), None),
        ("one_user", None, None, Some(users[4321])),
    ] {
        let f = LogFilter { log_type, level, user_id };
        g.bench_function(name, |b| {
            b.iter(|| {
                let l = tollgate::logs::list_all(&db, &f, &page).expect("list");
                assert!(!l.data.is_empty());
            })
        });
    }
    g.finish();
}

/// What pricing a chat adds per call, off the writer: its cost, the cost
/// detail (components, JSON) and the usage record with it serialized.
fn cost_detail(c: &mut Criterion) {
    use tollgate::providers::catalog::{Model, ModelKind, Price};
    use tollgate::providers::types::Usage;
    let model = Model {
        name: "m".into(),
        kind: ModelKind::Chat,
        routes: Vec::new(),
        price: Price::per_token(800_000, 2_000_000),
        provider_cost: None,
        max_output_tokens: 4096,
        image_input_tokens_max: 1445,
        context_tokens_max: 128_000,
        dev: false,
        revision: 1,
    };
    let usage = Usage { cached_tokens: 800, reasoning_tokens: 4, ..Usage::tokens(1000, 10) };
    c.bench_function("chat_cost_detail_and_usage", |b| {
        b.iter(|| {
            let u = std::hint::black_box(&usage);
            let cost = tollgate::metered::chat_cost(&model, u, 1_000_000);
            let detail = tollgate::metered::cost_detail(&model, u, 1_000_000);
            let used = tollgate::metered::used_tokens(&model, u, &detail);
            (cost, detail, used)
        })
    });
}

criterion_group!(benches, jwt, bucket, audit_1m, usage_reports, logs_1m, cost_detail);
criterion_main!(benches);
