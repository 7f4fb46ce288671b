//! Ledger tests through the real writer and a real SQLite file: holds
//! racing consumes, settle/release semantics, expiry, and a property test
//! over random operation sequences.

use super::seal_storage;
use super::*;
use crate::domain::{Credits, Email, GrantId, Role};
use crate::storage::{Db, Synchronous};
use proptest::prelude::*;
use std::sync::Arc;

fn db() -> (tempfile::TempDir, Db) {
    crate::storage::temp_db(Synchronous::Normal)
}

fn user(db: &Db, name: &str, credits: i64) -> UserId {
    let email = Email::parse(&format!("{name}@example.com")).unwrap();
    db.write(move |c| {
        let u = crate::users::insert(c, &email, "x", Role::User)?;
        if credits > 0 {
            grant(c, u.id, Credits(credits), "seed")?;
        }
        Ok::<_, Error>(u.id)
    })
    .unwrap()
}

fn check(db: &Db, u: UserId) -> Validation {
    let v = db.read(|c| validate(c, u)).unwrap();
    assert!(v.valid, "{v:?}");
    v
}

#[test]
fn holds_racing_consumes_never_overspend() {
    let (_dir, db) = db();
    let db = Arc::new(db);
    let u = user(&db, "ann", 10_000);
    let handles: Vec<_> = (0..16)
        .map(|t| {
            let db = Arc::clone(&db);
            std::thread::spawn(move || {
                let mut spent = 0i64;
                for i in 0..100 {
                    if (t + i) % 2 == 0 {
                        if db.write(move |c| consume(c, u, Credits(7), "", &SpendCaps::NONE)).is_ok() {
                            spent += 7;
                        }
                    } else if let Ok(h) = db.write(move |c| hold(c, u, Credits(9), None, 60_000, &SpendCaps::NONE)) {
                        // Settle for less than held, half the time release.
                        let out = if i % 4 == 1 {
                            db.write(move |c| release(c, h)).unwrap()
                        } else {
                            db.write(move |c| settle(c, h, Cost::Credits(Credits(5)), "")).unwrap()
                        };
                        spent += out.charged.0;
                    }
                }
                spent
            })
        })
        .collect();
    let spent: i64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let v = check(&db, u);
    assert_eq!(v.ledger_balance.0, 10_000 - spent);
    assert!(v.ledger_balance.0 >= 0);
    assert_eq!(v.held, Credits::ZERO);
    let report = db.read(|c| audit::audit(c, None)).unwrap();
    assert!(report.valid, "{report:?}");
}

#[test]
fn settle_charges_at_most_the_hold_and_closed_holds_return_their_first_outcome() {
    let (_dir, db) = db();
    let u = user(&db, "ann", 100);
    let h = db.write(move |c| hold(c, u, Credits(30), None, 60_000, &SpendCaps::NONE)).unwrap();
    let b = db.read(|c| balance(c, u)).unwrap();
    assert_eq!((b.balance.0, b.held.0, b.available.0), (100, 30, 70));
    let first = db.write(move |c| settle(c, h, Cost::Credits(Credits(45)), "overrun")).unwrap();
    assert_eq!((first.status, first.charged), (HoldStatus::Settled, Credits(30)));
    let again = db.write(move |c| settle(c, h, Cost::Credits(Credits(1)), "retry")).unwrap();
    assert_eq!(again, first, "settling twice is a no-op");
    let released = db.write(move |c| release(c, h)).unwrap();
    assert_eq!(released, first, "releasing a settled hold is a no-op");
    assert_eq!(check(&db, u).ledger_balance, Credits(70));
    let warned: i64 = db
        .read(|c| {
            Ok::<_, Error>(c.sqlite()?.query_row(
                "SELECT count(*) FROM logs WHERE action = 'settle_capped' AND level = 'warn'",
                [],
                |r| r.get(0),
            )?)
        })
        .unwrap();
    assert_eq!(warned, 1);

    let h2 = db.write(move |c| hold(c, u, Credits(50), None, 60_000, &SpendCaps::NONE)).unwrap();
    let r = db.write(move |c| release(c, h2)).unwrap();
    assert_eq!((r.status, r.charged, r.transaction_id), (HoldStatus::Released, Credits::ZERO, None));
    assert_eq!(db.write(move |c| settle(c, h2, Cost::Credits(Credits(10)), "")).unwrap(), r);
    assert_eq!(check(&db, u).ledger_balance, Credits(70));
}

#[test]
fn a_hold_over_available_is_refused_and_writes_nothing() {
    let (_dir, db) = db();
    let u = user(&db, "ann", 10);
    let e = db.write(move |c| hold(c, u, Credits(11), None, 60_000, &SpendCaps::NONE)).unwrap_err();
    assert!(matches!(e, Error::InsufficientCredits { .. }), "{e:?}");
    let holds: i64 = db
        .read(|c| Ok::<_, Error>(c.sqlite()?.query_row("SELECT count(*) FROM credit_holds", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(holds, 0);
}

#[test]
fn expired_holds_are_released_and_give_back_the_day() {
    let (_dir, db) = db();
    let u = user(&db, "ann", 100);
    let caps = SpendCaps { daily_cap: Some(Credits(50)), ..SpendCaps::NONE };
    db.write(move |c| hold(c, u, Credits(40), None, -1, &caps)).unwrap();
    let e = db.write(move |c| consume(c, u, Credits(20), "", &caps)).unwrap_err();
    assert!(matches!(e, Error::DailyCapExceeded { .. }), "the hold counts toward the day: {e:?}");
    let n = db.write(|c| expire_due(c, Timestamp::now())).unwrap();
    assert_eq!(n, 1);
    assert_eq!(db.read(|c| balance(c, u)).unwrap().held, Credits::ZERO);
    db.write(move |c| consume(c, u, Credits(20), "", &caps)).unwrap();
    check(&db, u);
}

#[derive(Debug, Clone)]
enum Op {
    Grant(i64),
    Consume(i64),
    Hold(i64),
    Settle(usize, i64),
    SettleMicro(usize, i64),
    Release(usize),
    Expire,
    Adjust(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1..200i64).prop_map(Op::Grant),
        (1..150i64).prop_map(Op::Consume),
        (1..150i64).prop_map(Op::Hold),
        (0..8usize, 0..200i64).prop_map(|(i, a)| Op::Settle(i, a)),
        (0..8usize, 0..3_000_000i64).prop_map(|(i, m)| Op::SettleMicro(i, m)),
        (0..8usize).prop_map(Op::Release),
        Just(Op::Expire),
        (-100..100i64).prop_filter("non-zero", |a| *a != 0).prop_map(Op::Adjust),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever the sequence: balance == SUM == cache, available never
    /// negative, and the model's balance matches the ledger's.
    #[test]
    fn random_operation_sequences_keep_every_invariant(ops in proptest::collection::vec(op(), 1..40)) {
        let (_dir, db) = db();
        let u = user(&db, "p", 0);
        let mut model_balance = 0i64;
        let mut model_carry = 0i64;
        let mut holds: Vec<(HoldId, i64, bool)> = Vec::new();
        for op in ops {
            match op {
                Op::Grant(a) => {
                    db.write(move |c| grant(c, u, Credits(a), "g")).unwrap();
                    model_balance += a;
                }
                Op::Consume(a) => {
                    if db.write(move |c| consume(c, u, Credits(a), "c", &SpendCaps::NONE)).is_ok() {
                        model_balance -= a;
                    }
                }
                Op::Hold(a) => {
                    // Half the holds are born expired, for the sweeper.
                    let ttl = if a % 2 == 0 { -1 } else { 60_000 };
                    if let Ok(h) = db.write(move |c| hold(c, u, Credits(a), None, ttl, &SpendCaps::NONE)) {
                        holds.push((h, a, true));
                    }
                }
                Op::Settle(i, actual) => {
                    if let Some((h, amount, _)) = holds.get(i).copied() {
                        let before = db.read(|c| Ok::<_, Error>(storage::hold(c, h)?)).unwrap().unwrap();
                        let out = db.write(move |c| settle(c, h, Cost::Credits(Credits(actual)), "s")).unwrap();
                        if before.status == HoldStatus::Active {
                            prop_assert_eq!(out.charged.0, actual.min(amount));
                            model_balance -= out.charged.0;
                        }
                        holds[i].2 = false;
                    }
                }
                Op::SettleMicro(i, micro) => {
                    if let Some((h, amount, _)) = holds.get(i).copied() {
                        let before = db.read(|c| Ok::<_, Error>(storage::hold(c, h)?)).unwrap().unwrap();
                        let out = db.write(move |c| settle(c, h, Cost::Micro(micro), "m")).unwrap();
                        if before.status == HoldStatus::Active && micro > 0 {
                            // The carry model: never more than the hold.
                            let exact = micro.min(amount * MICRO_PER_CREDIT);
                            let total = model_carry + exact;
                            prop_assert_eq!(out.charged.0, total / MICRO_PER_CREDIT);
                            prop_assert!(out.charged.0 <= amount, "never more than the hold");
                            model_carry = total % MICRO_PER_CREDIT;
                            model_balance -= out.charged.0;
                        }
                        holds[i].2 = false;
                    }
                }
                Op::Release(i) => {
                    if let Some((h, _, _)) = holds.get(i).copied() {
                        db.write(move |c| release(c, h)).unwrap();
                        holds[i].2 = false;
                    }
                }
                Op::Expire => {
                    db.write(|c| expire_due(c, Timestamp::now())).unwrap();
                }
                Op::Adjust(a) => {
                    if db.write(move |c| admin_adjust(c, u, Credits(a), "a")).is_ok() {
                        model_balance += a;
                    }
                }
            }
            let v = db.read(|c| validate(c, u)).unwrap();
            prop_assert!(v.valid, "{:?}", v);
            prop_assert_eq!(v.ledger_balance.0, model_balance);
            prop_assert!(v.cached_balance.0 - v.held.0 >= 0, "available went negative: {:?}", v);
        }
        let report = db.read(|c| audit::audit(c, None)).unwrap();
        prop_assert!(report.valid, "{:?}", report);
    }
}

#[test]
fn the_audit_recomputes_every_carry_and_catches_an_edited_one() {
    let (_dir, db) = db();
    let u = user(&db, "carry", 10);
    for _ in 0..30 {
        let h = db.write(move |c| hold(c, u, Credits(1), None, 60_000, &SpendCaps::NONE)).unwrap();
        db.write(move |c| settle(c, h, Cost::Micro(45_000), "tiny")).unwrap();
    }
    let v = db.read(|c| validate(c, u)).unwrap();
    // 30 x 0.045 = 1.35: one credit charged, 350,000 millionths carried.
    assert_eq!(v.ledger_balance, Credits(9));
    let report = db.read(|c| audit::audit(c, None)).unwrap();
    assert!(report.valid, "{report:?}");
    db.write(move |c| Ok::<_, Error>(c.sqlite()?.execute("UPDATE users SET carry_micro = 0 WHERE id = ?1", [u])?))
        .unwrap();
    let report = db.read(|c| audit::audit(c, None)).unwrap();
    assert!(!report.valid);
    assert!(
        matches!(report.mismatches[0], audit::Mismatch::CachedCarry { ledger_carry: 350_000, cached_carry: 0, .. }),
        "{:?}",
        report.mismatches
    );
}

/// A grant as the model sees it, for the draw-order oracle.
#[derive(Debug, Clone)]
struct ModelGrant {
    id: i64,
    free: i64,
    priority: i64,
    expires_at: Option<i64>,
    paid: bool,
}

/// The draw order, written independently of the SQL: priority,
/// then soonest expiry (never last), then promotional, then oldest.
fn expected_plan(mut spendable: Vec<ModelGrant>, amount: i64) -> Vec<(i64, i64)> {
    spendable.sort_by_key(|g| (g.priority, g.expires_at.is_none(), g.expires_at, g.paid, g.id));
    let mut left = amount;
    let mut plan = Vec::new();
    for g in spendable {
        if left == 0 {
            break;
        }
        let take = g.free.min(left);
        if take > 0 {
            plan.push((g.id, take));
            left -= take;
        }
    }
    plan
}

fn spendable_now(c: &Conn<'_>, u: UserId, now: Timestamp) -> Vec<ModelGrant> {
    let c = c.sqlite().expect("a SQLite test database");
    c.prepare(
        "SELECT id, remaining - reserved, priority, expires_at, category = 'paid' FROM credit_grants
         WHERE user_id = ?1 AND voided_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)",
    )
    .unwrap()
    .query_map(rusqlite::params![u, now], |r| {
        Ok(ModelGrant { id: r.get(0)?, free: r.get(1)?, priority: r.get(2)?, expires_at: r.get(3)?, paid: r.get(4)? })
    })
    .unwrap()
    .collect::<rusqlite::Result<Vec<_>>>()
    .unwrap()
}

/// The grants ledger row `txn` drew on: the one it names, or its
/// `grant_draws` rows.
fn draws_of(c: &Conn<'_>, txn: TxnId) -> Vec<(i64, i64)> {
    let c = c.sqlite().expect("a SQLite test database");
    let mut d: Vec<(i64, i64)> = c
        .prepare(
            "SELECT grant_id, amount FROM grant_draws WHERE transaction_id = ?1
             UNION ALL SELECT grant_id, -amount FROM credit_transactions WHERE id = ?1 AND grant_id IS NOT NULL",
        )
        .unwrap()
        .query_map([txn], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap();
    d.sort();
    d
}

#[derive(Debug, Clone)]
enum GrantOp {
    /// amount, priority, paid, expires in (clock steps; None = never)
    Grant(i64, i64, bool, Option<i64>),
    Consume(i64),
    Hold(i64),
    Settle(usize, i64),
    Release(usize),
    /// Moves the clock forward by this many steps.
    Tick(i64),
    Sweep,
    Void(usize),
    Adjust(i64),
    /// Mints a code worth this much and redeems it (twice, if set: the
    /// second is refused).
    Redeem(i64, bool),
}

/// One clock step: grants expire a few steps after they are made.
const STEP_MS: i64 = 1_000;

fn grant_op() -> impl Strategy<Value = GrantOp> {
    prop_oneof![
        3 => (1..100i64, prop_oneof![Just(0i64), Just(50), Just(100)], any::<bool>(), proptest::option::of(1..6i64))
            .prop_map(|(a, p, paid, e)| GrantOp::Grant(a, p, paid, e)),
        3 => (1..80i64).prop_map(GrantOp::Consume),
        2 => (1..80i64).prop_map(GrantOp::Hold),
        2 => (0..6usize, 0..100i64).prop_map(|(i, a)| GrantOp::Settle(i, a)),
        1 => (0..6usize).prop_map(GrantOp::Release),
        2 => (1..4i64).prop_map(GrantOp::Tick),
        1 => Just(GrantOp::Sweep),
        1 => (0..8usize).prop_map(GrantOp::Void),
        1 => (-60..0i64).prop_map(GrantOp::Adjust),
        1 => (1..100i64, any::<bool>()).prop_map(|(a, twice)| GrantOp::Redeem(a, twice)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Grants of random priority, category and expiry, charged, held,
    /// settled, released, voided and expired as the clock moves: after every
    /// step balance = SUM(ledger) = SUM(grant.remaining), available >= 0,
    /// every charge drew in the draw order and never from an ended grant,
    /// nothing due survives a sweep, and the audit passes.
    #[test]
    fn random_grant_sequences_keep_the_grant_invariants(ops in proptest::collection::vec(grant_op(), 1..40)) {
        let (_dir, db) = db();
        let u = user(&db, "g", 0);
        let mut now = Timestamp::now();
        let mut holds: Vec<HoldId> = Vec::new();
        let mut grant_ids: Vec<GrantId> = Vec::new();
        for op in ops {
            match op {
                GrantOp::Grant(amount, priority, paid, expires) => {
                    let g = grants::NewGrant {
                        user: u,
                        amount: Credits(amount),
                        category: if paid { grants::Category::Paid } else { grants::Category::Promotional },
                        priority,
                        expires_at: expires.map(|s| now.plus_ms(s * STEP_MS)),
                        source: grants::Source::Admin,
                        description: String::new(),
                        external_id: None,
                        code: None,
                    };
                    let (made, _) = db.write(move |c| grants::create_at(c, &g, now)).unwrap();
                    grant_ids.push(made.id);
                }
                GrantOp::Consume(a) | GrantOp::Adjust(a) => {
                    let amount = a.abs();
                    let result = db.write(move |c| {
                        // Expire what is due first, as the charge itself
                        // does, so the oracle sees the same grants.
                        let (balance, held) = account_for_charge(c, u, now)?;
                        let plan = expected_plan(spendable_now(c, u, now), amount);
                        let txn = if matches!(op, GrantOp::Consume(_)) {
                            consume_at(c, u, Credits(amount), "c", &SpendCaps::NONE, now)?.transaction_id
                        } else {
                            admin_adjust_at(c, u, Credits(-amount), "a", now)?.id
                        };
                        Ok::<_, Error>((balance - held, plan, draws_of(c, txn)))
                    });
                    if let Ok((available, mut plan, drawn)) = result {
                        prop_assert!(available.0 >= amount);
                        plan.sort();
                        prop_assert_eq!(drawn, plan, "draw order");
                    }
                }
                GrantOp::Hold(a) => {
                    if let Ok(h) = db.write(move |c| hold_at(c, u, Credits(a), None, 3_600_000, &SpendCaps::NONE, now)) {
                        holds.push(h);
                    }
                }
                GrantOp::Settle(i, a) => {
                    if let Some(h) = holds.get(i).copied() {
                        db.write(move |c| settle_at(c, h, Cost::Credits(Credits(a)), "s", now)).unwrap();
                    }
                }
                GrantOp::Release(i) => {
                    if let Some(h) = holds.get(i).copied() {
                        db.write(move |c| release_at(c, h, now)).unwrap();
                    }
                }
                GrantOp::Tick(steps) => now = now.plus_ms(steps * STEP_MS),
                GrantOp::Sweep => {
                    db.write(move |c| expire_due(c, now)).unwrap();
                    let overdue: i64 = db.read(|c| Ok::<_, Error>(c.sqlite()?.query_row(
                        "SELECT count(*) FROM credit_grants WHERE expires_at <= ?1 AND remaining > reserved",
                        [now], |r| r.get(0))?)).unwrap();
                    prop_assert_eq!(overdue, 0, "a sweep leaves nothing due unexpired");
                }
                GrantOp::Void(i) => {
                    if let Some(g) = grant_ids.get(i).copied() {
                        let _ = db.write(move |c| grants::void_at(c, g, now));
                    }
                }
                GrantOp::Redeem(amount, twice) => {
                    let batch = crate::codes::NewCodes {
                        count: 1,
                        terms: crate::codes::CodeTerms {
                            amount: Credits(amount),
                            category: grants::Category::Promotional,
                            priority: 50,
                            grant_expires_days: None,
                            redeem_by: None,
                            max_redemptions: 5,
                            description: String::new(),
                        },
                    };
                    let code = db.write(move |c| crate::codes::mint(c, u, &batch)).unwrap().remove(0).code.unwrap();
                    let typed = code.clone();
                    let g = db.write(move |c| Ok::<_, Error>(crate::codes::redeem(c, u, &typed)?)).unwrap();
                    prop_assert_eq!(g.amount.0, amount);
                    grant_ids.push(g.id);
                    if twice {
                        let e = db.write(move |c| Ok::<_, Error>(crate::codes::redeem(c, u, &code)?)).unwrap_err();
                        prop_assert!(matches!(e, Error::Redemption(crate::error::redemption::Refusal::AlreadyRedeemed)), "{:?}", e);
                    }
                }
            }
            let v = db.read(|c| validate(c, u)).unwrap();
            prop_assert!(v.valid, "{:?}", v);
            prop_assert!(v.cached_balance.0 - v.held.0 >= 0, "available went negative: {:?}", v);
            let (remaining, negative): (i64, i64) = db.read(|c| Ok::<_, Error>(c.sqlite()?.query_row(
                "SELECT COALESCE(SUM(remaining), 0), count(*) FILTER (WHERE remaining < 0 OR reserved < 0)
                 FROM credit_grants WHERE user_id = ?1", [u], |r| Ok((r.get(0)?, r.get(1)?)))?)).unwrap();
            prop_assert_eq!(remaining, v.ledger_balance.0, "SUM(remaining) = balance");
            prop_assert_eq!(negative, 0);
            let report = db.read(|c| audit::audit(c, None)).unwrap();
            prop_assert!(report.valid, "{:?}", report);
        }
    }
}

/// Seals on both engines: the first pins every moved head, a later one
/// only the heads that moved since, and sealing while writers charge
/// leaves every head sealed by the last pass with the audit valid.
#[test]
fn seals_record_the_heads_that_moved_and_audit_with_writers_racing_them() {
    for (_guard, db) in crate::storage::test_engines() {
        let db = Arc::new(db);
        assert_eq!(seal::seal_all(&db).unwrap(), None, "an empty ledger has nothing to seal");
        let users: Vec<UserId> = (0..3).map(|i| user(&db, &format!("s{i}"), 1_000)).collect();
        let first = seal::seal_all(&db).unwrap().expect("a seal");
        assert_eq!(first.id, 1);
        let heads = |db: &Db| db.read(|c| seal_storage::moved_heads(c, 100)).unwrap();
        assert!(heads(&db).is_empty(), "every head sealed");
        assert_eq!(seal::seal_all(&db).unwrap(), None, "nothing moved");
        let u = users[1];
        db.write(move |c| consume(c, u, Credits(5), "", &SpendCaps::NONE)).unwrap();
        let second = seal::seal_all(&db).unwrap().expect("a second seal");
        assert_eq!(second.id, 2);
        let recorded: i64 =
            db.read(|c| c.query_one("SELECT heads FROM ledger_seals WHERE id = 2", &[], |r| r.get(0))).unwrap();
        assert_eq!(recorded, 1, "only the user who moved");
        let report = db.read(|c| audit::audit(c, None)).unwrap();
        assert!(report.valid, "{report:?}");
        assert_eq!(report.seal, Some(second.clone()));
        let pinned = audit::Expectation::Seal(second.clone());
        assert!(db.read(|c| audit::audit(c, Some(&pinned))).unwrap().valid);
        let wrong = audit::Expectation::Seal(seal::SealRef { id: 2, hash: "ab".repeat(32) });
        let r = db.read(|c| audit::audit(c, Some(&wrong))).unwrap();
        assert!(r.mismatches.iter().any(|m| matches!(m, audit::Mismatch::SealExpectation { .. })), "{r:?}");

        let writers: Vec<_> = users
            .iter()
            .map(|&u| {
                let db = Arc::clone(&db);
                std::thread::spawn(move || {
                    for _ in 0..40 {
                        db.write(move |c| consume(c, u, Credits(1), "", &SpendCaps::NONE)).unwrap();
                    }
                })
            })
            .collect();
        let sealer = {
            let db = Arc::clone(&db);
            std::thread::spawn(move || (0..20).filter(|_| seal::seal_all(&db).unwrap().is_some()).count())
        };
        for w in writers {
            w.join().unwrap();
        }
        assert!(sealer.join().unwrap() <= 20);
        seal::seal_all(&db).unwrap();
        assert!(heads(&db).is_empty(), "every head sealed");
        let report = db.read(|c| audit::audit(c, None)).unwrap();
        assert!(report.valid, "{report:?}");
        assert_eq!(report.rows_checked, 3 + 1 + 120);
    }
}

/// On PostgreSQL a seal waits for no row: a user whose row another session
/// holds is recorded but left moved, the next seal records the same head
/// again, and the audit checks both records (and still catches an edit).
#[test]
fn a_seal_skips_a_row_locked_elsewhere_and_records_its_head_again() {
    let Some(url) = crate::storage::pg::test_database() else { return };
    let db = Db::open_postgres(&url).expect("open PostgreSQL");
    let u = user(&db, "held", 100);
    let mut session = postgres::Client::connect(&url, postgres::NoTls).expect("a second session");
    let mut held = session.transaction().unwrap();
    held.query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", &[&u.0]).unwrap();
    let first = seal::seal_all(&db).unwrap().expect("a seal, written without waiting");
    let moved = db.read(|c| seal_storage::moved_heads(c, 10)).unwrap();
    assert_eq!(moved.iter().map(|h| h.user_id).collect::<Vec<_>>(), [u.0], "left moved, not marked");
    held.rollback().unwrap();
    let second = seal::seal_all(&db).unwrap().expect("the head recorded again");
    assert_eq!(second.id, first.id + 1);
    assert!(db.read(|c| seal_storage::moved_heads(c, 10)).unwrap().is_empty());
    let named: Vec<(i64, seal_storage::Head)> = db.read(|c| seal_storage::heads_naming(c, 0, i64::MAX)).unwrap();
    assert_eq!(named.len(), 2, "{named:?}");
    assert_eq!(named[0].1, named[1].1, "one head, two seals");
    let report = db.read(|c| audit::audit(c, Some(&audit::Expectation::Seal(second.clone())))).unwrap();
    assert!(report.valid, "{report:?}");
    // Both records are checked: editing the earlier one is caught.
    db.write(move |c| {
        c.execute(
            "UPDATE ledger_seal_heads SET hash = ?1 WHERE seal_id = ?2",
            rusqlite::params!["ab".repeat(32), first.id],
        )
    })
    .unwrap();
    let report = db.read(|c| audit::audit(c, None)).unwrap();
    assert!(
        report
            .mismatches
            .iter()
            .any(|m| matches!(m, audit::Mismatch::SealHead { seal_id, .. } if *seal_id == first.id)),
        "{report:?}"
    );
}

/// A seal records at most `SEAL_HEADS_MAX` heads; a pass writes another
/// seal for the users left, and every head ends up sealed once.
#[test]
fn a_seal_stops_at_its_limit_and_the_next_takes_the_rest() {
    let (_dir, db) = db();
    let n = seal::SEAL_HEADS_MAX + 1;
    db.write(move |c| {
        for i in 0..n {
            let email = Email::parse(&format!("u{i}@example.com")).map_err(|m| Error::Internal(m.to_string()))?;
            let u = crate::users::insert(c, &email, "x", Role::User)?;
            grant(c, u.id, Credits(1), "seed")?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    let last = seal::seal_all(&db).unwrap().expect("seals");
    assert_eq!(last.id, 2, "two seals for one more user than a seal holds");
    let heads: Vec<i64> =
        db.read(|c| c.query_all("SELECT heads FROM ledger_seals ORDER BY id", &[], |r| r.get(0))).unwrap();
    assert_eq!(heads, [seal::SEAL_HEADS_MAX, 1]);
    assert!(db.read(|c| seal_storage::moved_heads(c, 10)).unwrap().is_empty());
    let report = db.read(|c| audit::audit(c, Some(&audit::Expectation::Seal(last)))).unwrap();
    assert!(report.valid, "{report:?}");
}
