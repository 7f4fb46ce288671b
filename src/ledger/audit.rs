//! The whole-ledger audit behind `/v1/admin/audit` and `tollgate audit`.
//!
//! One pass over every row in id order checks the hash chains: each user's
//! own (contiguous sequence numbers, each row naming the user's previous
//! one, ending at the head on the user's row), and the global chain of the
//! rows written before per-user chains (no id gaps: nothing deleted). It
//! checks that each row's `balance_after` follows from the user's previous
//! row. The seals are checked beside it: each one's hash from its heads
//! and the seal before it, every head it recorded against the row it names,
//! no user's sequence going backwards from one seal to the next, and the
//! first seal's genesis against the global chain's head. Then every user's
//! caches are compared with the sums. Beside the walk runs a cursor over the grant draws (in the same
//! order): every row since grants exist is paid for by draws that sum to
//! it, on grants of its own user, never on a grant already ended (a hold's
//! settle excepted: a hold keeps what it reserved). Each grant's remaining
//! must be its amount less its draws, its held part what holds reserve, and
//! each user's grants must sum to the balance. Reading only: the audit never
//! repairs anything.

use super::chain::{self, GENESIS_HASH};
use super::grant_storage::{self, DrawCursor};
use super::seal::{SealHasher, SealRef};
use super::seal_storage::{self, Head};
use super::storage;
use crate::domain::{Credits, GrantId, HoldId, Timestamp, UserId};
use crate::error::Result;
use crate::storage::Conn;
use serde::Serialize;
use std::collections::HashMap;

/// Mismatches listed in one report; the count says how many there were.
pub const AUDIT_MISMATCHES_LISTED_MAX: usize = 100;
/// How long past its expiry a grant may keep unreserved credits before the
/// audit calls it overdue: the sweeper runs every few seconds, so only a
/// stopped service leaves one that long.
pub const EXPIRY_OVERDUE_AFTER_MS: i64 = 300_000;

#[derive(Debug, Clone, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct ChainHead {
    pub id: i64,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mismatch {
    /// The row's stored hash is not the hash of its contents: it was edited.
    Chain { row_id: i64, expected_hash: String, stored_hash: String },
    /// A row id of the global chain is missing: a row was deleted.
    Gap { after_row_id: i64, next_row_id: i64 },
    /// A row's place in its user's chain is not the next one: a row of the
    /// user was deleted or moved.
    Sequence { row_id: i64, user_id: UserId, expected_seq: i64, stored_seq: Option<i64> },
    /// The head on the user's row is not their last row.
    ChainHead { user_id: UserId, ledger_seq: i64, stored_seq: i64 },
    /// A seal's hash is not the hash of its heads and the seal before it,
    /// or its id is not the next one.
    Seal { seal_id: i64, reason: String },
    /// A head a seal recorded is not the row it names (edited, deleted or
    /// rewritten since), or a user's sequence went backwards between seals.
    SealHead { seal_id: i64, user_id: UserId, seq: i64, reason: String },
    /// `balance_after` does not follow from the user's previous row.
    RunningBalance { row_id: i64, user_id: UserId, expected: i64, stored: i64 },
    /// The cached balance differs from the ledger sum.
    CachedBalance { user_id: UserId, ledger_balance: i64, cached_balance: i64 },
    /// A metered row's charge or carry does not follow from the user's
    /// previous carry and the row's exact cost.
    Carry { row_id: i64, user_id: UserId, expected_amount: i64, expected_carry: i64, stored_carry: i64 },
    /// The user's cached carry differs from their last metered row's.
    CachedCarry { user_id: UserId, ledger_carry: i64, cached_carry: i64 },
    /// A row's recorded components do not price to its cost: a part whose
    /// cost is not its tokens times its price, or parts that do not sum to
    /// the row's exact cost.
    Components { row_id: i64, reason: String },
    /// The cached held amount differs from the active holds.
    Held { user_id: UserId, cached_held: i64, active_holds: i64 },
    /// An active hold whose job already finished (a leaked reservation).
    HoldOfFinishedJob { hold_id: crate::domain::HoldId, job_id: crate::domain::JobId },
    /// The grants a row drew on do not sum to what it took.
    Draws { row_id: i64, amount: i64, drawn: i64 },
    /// A row drew on a grant of another user.
    DrawOwner { row_id: i64, grant_id: GrantId },
    /// A charge (not a hold's settle) drew on a grant that had ended.
    DrawAfterEnd { row_id: i64, grant_id: GrantId },
    /// A `grant` row without its grant, or a grant whose row is not a
    /// `grant` row of its user and amount.
    GrantRow { row_id: Option<i64>, grant_id: Option<GrantId> },
    /// A grant's remaining is not its amount less what was drawn from it.
    GrantRemaining { grant_id: GrantId, amount: i64, drawn: i64, remaining: i64 },
    /// A grant's held credits differ from the holds' reservations on it.
    GrantHeld { grant_id: GrantId, cached_held: i64, reservations: i64 },
    /// An active hold's reservations do not sum to its amount.
    HoldReservations { hold_id: HoldId, amount: i64, reserved: i64 },
    /// A user's grants' remaining credits do not sum to the balance.
    UserGrants { user_id: UserId, ledger_balance: i64, grants_remaining: i64 },
    /// A grant kept unreserved credits long past its expiry.
    ExpiryOverdue { grant_id: GrantId, expires_at: Timestamp, unreserved: i64 },
    /// An API key's cached spend differs from its rows and active holds.
    KeySpent { api_key_id: crate::domain::ApiKeyId, cached_spent: i64, ledger_spent: i64 },
    /// The usage aggregate's cost for a user differs from what the ledger
    /// charged them (their `consume` rows).
    Usage { user_id: UserId, ledger_consumed: i64, usage_cost: i64 },
    /// A user's running usage sums end elsewhere than their daily rows.
    UsageRunning { user_id: UserId, running_cost: i64, daily_cost: i64 },
    /// The all-user totals of a (day, model) differ from the per-user rows.
    UsageTotals { day: i64, model: String, totals_cost: i64, detail_cost: i64 },
    /// The append-only triggers are missing.
    Triggers { present: i64 },
    /// `--expect ID:HASH` did not match.
    Expectation { row_id: i64, expected_hash: String, stored_hash: Option<String> },
    /// `--expect seal_ID:HASH` did not match.
    SealExpectation { seal_id: i64, expected_hash: String, stored_hash: Option<String> },
}

/// What `--expect` pins: a ledger row (`ID:HASH`) or a seal
/// (`seal_ID:HASH`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    Row(ChainHead),
    Seal(SealRef),
}

/// `GET /v1/admin/audit` and `tollgate audit --json`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct AuditReport {
    pub valid: bool,
    pub users_checked: usize,
    pub rows_checked: u64,
    pub head: Option<ChainHead>,
    /// The newest seal: what `--expect seal_ID:HASH` pins.
    pub seal: Option<SealRef>,
    pub mismatch_count: usize,
    pub mismatches: Vec<Mismatch>,
}

/// What the walk sums per user.
#[derive(Debug, Default, Clone)]
struct UserWalk {
    /// The user's last row's place in their chain, and its hash.
    seq: i64,
    hash: Option<String>,
    /// The newest seal that recorded one of the user's rows so far.
    sealed_by: i64,
    /// Every row's amount: the balance the caches must show.
    sum: i64,
    /// The last row's `balance_after`, which the next row must follow.
    running: i64,
    /// What `consume` rows took: the usage aggregate's cost.
    consumed: i64,
    /// The last metered row's carry.
    carry: i64,
}

/// Ledger rows the walk reads per query: the draws of one chunk are held
/// in memory beside it, and no two cursors are open at once (one
/// PostgreSQL connection cannot interleave them).
pub const AUDIT_CHUNK_ROWS: i64 = 50_000;

/// Checks everything against the ledger, in one read snapshot.
pub fn audit(conn: &Conn<'_>, expect: Option<&Expectation>) -> Result<AuditReport> {
    conn.snapshot(|c| audit_in(c, expect))
}

/// [`audit`] inside a transaction the caller already holds (a copy being
/// checked before it commits): no snapshot of its own.
pub fn audit_in(conn: &Conn<'_>, expect: Option<&Expectation>) -> Result<AuditReport> {
    let mut found: Vec<Mismatch> = Vec::new();
    let mut count = 0usize;
    let mut note = |m: Mismatch, found: &mut Vec<Mismatch>| {
        count += 1;
        if found.len() < AUDIT_MISMATCHES_LISTED_MAX {
            found.push(m);
        }
    };

    // The global chain (rows before per-user chains), and the last row seen.
    let mut prev_hash = GENESIS_HASH.to_owned();
    let mut prev_id = 0i64;
    let mut legacy_head: Option<(i64, String)> = None;
    let mut last_row: Option<ChainHead> = None;
    let mut rows = 0u64;
    let expect_row = match expect {
        Some(Expectation::Row(h)) => Some(h),
        _ => None,
    };
    let (seals, mut walk_issues) = check_seals(conn)?;
    let mut expected_seen: Option<String> = None;
    // Everything the walk keeps per user, in one map: one lookup per row
    // (five maps cost the audit a quarter of its time in probes).
    let mut users: HashMap<i64, UserWalk> = HashMap::new();
    let grants = grant_storage::audit_input(conn)?;
    let grant_of: HashMap<GrantId, &grant_storage::GrantFacts> = grants.grants.iter().map(|g| (g.id, g)).collect();
    let grant_rows: HashMap<i64, GrantId> =
        grants.grants.iter().filter_map(|g| g.transaction.map(|t| (t.0, g.id))).collect();
    let mut orphan_draws: Vec<i64> = Vec::new();
    let mut key_charged: HashMap<i64, i64> = HashMap::new();
    let mut drawn: HashMap<GrantId, i64> = HashMap::new();
    let last = storage::last_row_id(conn)?;
    let mut after: i64 = 0;
    let mut users_chained = false;
    loop {
        let through = after.saturating_add(AUDIT_CHUNK_ROWS);
        // The last chunk's draws include any past the last row: orphans.
        let mut draws = DrawCursor::new(conn, after, if through >= last { i64::MAX } else { through })?;
        // The seal heads naming this chunk's rows, by row, in seal order (a
        // row may be named by several seals: a head whose user's row was
        // locked when it was marked is recorded again); any left are orphans.
        let mut sealed: HashMap<i64, Vec<(i64, Head)>> = HashMap::new();
        for (seal_id, head) in seal_storage::heads_naming(conn, after, through)? {
            sealed.entry(head.txn_id).or_default().push((seal_id, head));
        }
        for named in sealed.values_mut() {
            named.sort_by_key(|(seal_id, _)| *seal_id);
        }
        storage::for_each_row(conn, after, through, |r| {
            rows += 1;
            let u = users.entry(r.user_id).or_default();
            if r.kind == "consume" {
                u.consumed -= r.amount;
            }
            if let Some(k) = r.api_key_id {
                *key_charged.entry(k).or_default() -= r.amount;
            }
            if r.id >= grants.draws_from_txn {
                let mut d = draws.draws_of(r.id, &mut orphan_draws);
                // A row that drew on one grant names it instead.
                if let Some(g) = r.grant_id {
                    d.push((GrantId(g), Credits(-r.amount)));
                }
                for (g, a) in &d {
                    *drawn.entry(*g).or_default() += a.0;
                }
                check_draws(r, &d, &grant_of, &grant_rows, &mut walk_issues);
            }
            u.sum += r.amount;
            match r.seq {
                // A row of the global chain: all of them come first, with
                // no id missing.
                None => {
                    if r.id != prev_id + 1 || users_chained {
                        walk_issues.push(Mismatch::Gap { after_row_id: prev_id, next_row_id: r.id });
                    }
                    let expected = chain::row_hash(&prev_hash, &r.chained);
                    if expected != r.hash {
                        walk_issues.push(Mismatch::Chain {
                            row_id: r.id,
                            expected_hash: expected,
                            stored_hash: r.hash.to_owned(),
                        });
                    }
                    prev_hash.clear();
                    prev_hash.push_str(r.hash);
                    prev_id = r.id;
                    legacy_head = Some((r.id, r.hash.to_owned()));
                }
                Some(seq) => {
                    users_chained = true;
                    if seq != u.seq + 1 {
                        walk_issues.push(Mismatch::Sequence {
                            row_id: r.id,
                            user_id: UserId(r.user_id),
                            expected_seq: u.seq + 1,
                            stored_seq: Some(seq),
                        });
                    }
                    let expected = chain::row_hash(u.hash.as_deref().unwrap_or(GENESIS_HASH), &r.chained);
                    if expected != r.hash {
                        walk_issues.push(Mismatch::Chain {
                            row_id: r.id,
                            expected_hash: expected,
                            stored_hash: r.hash.to_owned(),
                        });
                    }
                    u.seq = seq;
                    u.hash = Some(r.hash.to_owned());
                    for (seal_id, head) in sealed.remove(&r.id).unwrap_or_default() {
                        let reason = if head.user_id != r.user_id || head.seq != seq || head.hash != r.hash {
                            Some("the row it names differs".to_owned())
                        } else if seal_id <= u.sealed_by {
                            Some(format!("an earlier seal ({}) recorded a later row", u.sealed_by))
                        } else {
                            None
                        };
                        if let Some(reason) = reason {
                            walk_issues.push(Mismatch::SealHead {
                                seal_id,
                                user_id: UserId(head.user_id),
                                seq: head.seq,
                                reason,
                            });
                        }
                        u.sealed_by = u.sealed_by.max(seal_id);
                    }
                }
            }
            last_row = Some(ChainHead { id: r.id, hash: r.hash.to_owned() });
            let before = u.running;
            if before + r.amount != r.balance_after {
                walk_issues.push(Mismatch::RunningBalance {
                    row_id: r.id,
                    user_id: UserId(r.user_id),
                    expected: before + r.amount,
                    stored: r.balance_after,
                });
            }
            // Keep the stored value: one bad row is reported once, not again at
            // every later row of the same user.
            u.running = r.balance_after;
            if let Some((cost, carry_after)) = r.micro {
                let total = u.carry + cost;
                let (charge, carry) = (total / super::MICRO_PER_CREDIT, total % super::MICRO_PER_CREDIT);
                if r.amount != -charge || carry_after != carry {
                    walk_issues.push(Mismatch::Carry {
                        row_id: r.id,
                        user_id: UserId(r.user_id),
                        expected_amount: -charge,
                        expected_carry: carry,
                        stored_carry: carry_after,
                    });
                }
                u.carry = carry_after;
                if let Some(reason) = r.components.and_then(|parts| components_mismatch(parts, cost)) {
                    walk_issues.push(Mismatch::Components { row_id: r.id, reason });
                }
            }
            if expect_row.is_some_and(|e| e.id == r.id) {
                expected_seen = Some(r.hash.to_owned());
            }
        })?;
        orphan_draws.extend(draws.rest());
        for (seal_id, head) in sealed.into_values().flatten() {
            walk_issues.push(Mismatch::SealHead {
                seal_id,
                user_id: UserId(head.user_id),
                seq: head.seq,
                reason: format!("row {} is missing", head.txn_id),
            });
        }
        if through >= last {
            break;
        }
        after = through;
    }
    for row_id in orphan_draws {
        walk_issues.push(Mismatch::Draws { row_id, amount: 0, drawn: -1 });
    }
    for m in walk_issues {
        note(m, &mut found);
    }
    for m in check_grants(&grants, &drawn, &users) {
        note(m, &mut found);
    }
    for (key, cached, held) in storage::key_spend_audit(conn)? {
        let spent = key_charged.get(&key.0).copied().unwrap_or(0) + held;
        if spent != cached {
            note(Mismatch::KeySpent { api_key_id: key, cached_spent: cached, ledger_spent: spent }, &mut found);
        }
    }

    let input = storage::audit_input(conn)?;
    let held: HashMap<UserId, Credits> = input.active_held.into_iter().collect();
    for cached in &input.users {
        let user = &cached.id;
        let walked = users.get(&user.0).cloned().unwrap_or_default();
        if walked.carry != cached.carry_micro {
            note(
                Mismatch::CachedCarry { user_id: *user, ledger_carry: walked.carry, cached_carry: cached.carry_micro },
                &mut found,
            );
        }
        if walked.sum != cached.credits.0 {
            note(
                Mismatch::CachedBalance {
                    user_id: *user,
                    ledger_balance: walked.sum,
                    cached_balance: cached.credits.0,
                },
                &mut found,
            );
        }
        if walked.seq != cached.chain_seq || walked.hash.as_deref().unwrap_or(GENESIS_HASH) != cached.chain_hash {
            note(
                Mismatch::ChainHead { user_id: *user, ledger_seq: walked.seq, stored_seq: cached.chain_seq },
                &mut found,
            );
        }
        let active = held.get(user).copied().unwrap_or(Credits::ZERO);
        if active != cached.held {
            note(Mismatch::Held { user_id: *user, cached_held: cached.held.0, active_holds: active.0 }, &mut found);
        }
    }
    // The genesis: the first seal pins the global chain's head.
    if let Some(first) = seals.first()
        && first.legacy != legacy_head
    {
        note(
            Mismatch::Seal { seal_id: first.id, reason: "its genesis is not the head of the older rows' chain".into() },
            &mut found,
        );
    }
    let usage: HashMap<i64, i64> = crate::usage::storage::cost_by_user(conn)?.into_iter().collect();
    for user in users.keys().chain(usage.keys()).collect::<std::collections::BTreeSet<_>>() {
        let (ledger_consumed, usage_cost) =
            (users.get(user).map_or(0, |u| u.consumed), usage.get(user).copied().unwrap_or(0));
        if ledger_consumed != usage_cost {
            note(Mismatch::Usage { user_id: UserId(*user), ledger_consumed, usage_cost }, &mut found);
        }
    }
    for (user, running_cost, daily_cost) in crate::usage::storage::running_drift(conn)? {
        note(Mismatch::UsageRunning { user_id: UserId(user), running_cost, daily_cost }, &mut found);
    }
    for (day, model, totals_cost, detail_cost) in crate::usage::storage::totals_drift(conn)? {
        note(Mismatch::UsageTotals { day, model, totals_cost, detail_cost }, &mut found);
    }
    for (hold_id, job_id) in storage::active_holds_of_finished_jobs(conn)? {
        note(Mismatch::HoldOfFinishedJob { hold_id, job_id }, &mut found);
    }
    let (triggers, expected) = storage::append_only_triggers(conn)?;
    if triggers != expected {
        note(Mismatch::Triggers { present: triggers }, &mut found);
    }
    match expect {
        Some(Expectation::Row(e)) if expected_seen.as_deref() != Some(e.hash.as_str()) => note(
            Mismatch::Expectation { row_id: e.id, expected_hash: e.hash.clone(), stored_hash: expected_seen },
            &mut found,
        ),
        Some(Expectation::Seal(e)) => {
            let stored = seals.iter().find(|s| s.id == e.id).map(|s| s.hash.clone());
            if stored.as_deref() != Some(e.hash.as_str()) {
                note(
                    Mismatch::SealExpectation { seal_id: e.id, expected_hash: e.hash.clone(), stored_hash: stored },
                    &mut found,
                );
            }
        }
        _ => {}
    }
    Ok(AuditReport {
        valid: count == 0,
        users_checked: input.users.len(),
        rows_checked: rows,
        head: last_row,
        seal: seals.last().map(|s| SealRef { id: s.id, hash: s.hash.clone() }),
        mismatch_count: count,
        mismatches: found,
    })
}

/// Parses `seal_ID:HASH` (a seal) or `ID:HASH` (a ledger row) for
/// `tollgate audit --expect`.
pub fn parse_expectation(s: &str) -> Option<Expectation> {
    let (id, hash) = s.split_once(':')?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let hash = hash.to_ascii_lowercase();
    match id.strip_prefix("seal_") {
        Some(seal) => Some(Expectation::Seal(SealRef { id: seal.parse().ok()?, hash })),
        None => Some(Expectation::Row(ChainHead { id: id.trim_start_matches("txn_").parse().ok()?, hash })),
    }
}

/// Every seal, each checked against the one before it (ids in a row, the
/// previous hash named, the hash recomputed from the stored heads).
fn check_seals(conn: &Conn<'_>) -> Result<(Vec<seal_storage::SealRow>, Vec<Mismatch>)> {
    let seals = seal_storage::all(conn)?;
    let mut issues = Vec::new();
    let mut hashers: Vec<(SealHasher, i64)> = Vec::with_capacity(seals.len());
    let mut prev = (0i64, GENESIS_HASH.to_owned());
    for s in &seals {
        if s.id != prev.0 + 1 || s.prev_hash != prev.1 {
            issues.push(Mismatch::Seal { seal_id: s.id, reason: format!("it does not follow seal {}", prev.0) });
        }
        hashers.push((SealHasher::new(&s.prev_hash, s.id, s.created_at, s.legacy.as_ref(), s.heads), 0));
        prev = (s.id, s.hash.clone());
    }
    let index: HashMap<i64, usize> = seals.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
    let mut orphans = 0usize;
    seal_storage::for_each_head(conn, |seal_id, head| match index.get(&seal_id) {
        Some(&i) => {
            hashers[i].0.head(&head);
            hashers[i].1 += 1;
        }
        None => orphans += 1,
    })?;
    for (s, (hasher, heads)) in seals.iter().zip(hashers) {
        if heads != s.heads || hasher.finish() != s.hash {
            issues.push(Mismatch::Seal { seal_id: s.id, reason: "its hash is not the hash of its heads".into() });
        }
    }
    if orphans > 0 {
        issues.push(Mismatch::Seal { seal_id: 0, reason: format!("{orphans} head(s) belong to no seal") });
    }
    Ok((seals, issues))
}

/// A row's draws: they sum to what it took, on its user's grants, never on
/// an ended grant unless a hold reserved the credits before it ended.
fn check_draws(
    r: &storage::StoredRow,
    draws: &[(GrantId, Credits)],
    grant_of: &HashMap<GrantId, &grant_storage::GrantFacts>,
    grant_rows: &HashMap<i64, GrantId>,
    out: &mut Vec<Mismatch>,
) {
    let drawn: i64 = draws.iter().map(|(_, a)| a.0).sum();
    if drawn != (-r.amount).max(0) {
        out.push(Mismatch::Draws { row_id: r.id, amount: r.amount, drawn });
    }
    let at = Timestamp(r.created_at);
    for (g, _) in draws {
        let Some(facts) = grant_of.get(g) else {
            out.push(Mismatch::GrantRow { row_id: Some(r.id), grant_id: Some(*g) });
            continue;
        };
        if facts.user.0 != r.user_id {
            out.push(Mismatch::DrawOwner { row_id: r.id, grant_id: *g });
        }
        let ended = facts.expires_at.is_some_and(|e| e <= at) || facts.voided_at.is_some_and(|v| v < at);
        if ended && r.hold_id.is_none() && (r.kind == "consume" || r.kind == "adjust") {
            out.push(Mismatch::DrawAfterEnd { row_id: r.id, grant_id: *g });
        }
    }
    if r.kind == "grant" {
        let matches = grant_rows
            .get(&r.id)
            .and_then(|g| grant_of.get(g))
            .is_some_and(|f| f.user.0 == r.user_id && f.amount.0 == r.amount);
        if !matches {
            out.push(Mismatch::GrantRow { row_id: Some(r.id), grant_id: grant_rows.get(&r.id).copied() });
        }
    }
}

/// Per grant and per user, after the walk has summed each user's rows.
fn check_grants(
    a: &grant_storage::GrantAudit,
    drawn: &HashMap<GrantId, i64>,
    walked: &HashMap<i64, UserWalk>,
) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let reserved: HashMap<GrantId, Credits> = a.reserved.iter().copied().collect();
    let mut remaining_by_user: HashMap<i64, i64> = HashMap::new();
    let now = Timestamp::now();
    for g in &a.grants {
        let d = drawn.get(&g.id).copied().unwrap_or(0);
        if g.amount.0 - d != g.remaining.0 {
            out.push(Mismatch::GrantRemaining {
                grant_id: g.id,
                amount: g.amount.0,
                drawn: d,
                remaining: g.remaining.0,
            });
        }
        let r = reserved.get(&g.id).copied().unwrap_or(Credits::ZERO);
        if r != g.reserved {
            out.push(Mismatch::GrantHeld { grant_id: g.id, cached_held: g.reserved.0, reservations: r.0 });
        }
        *remaining_by_user.entry(g.user.0).or_default() += g.remaining.0;
        if let Some(at) = g.expires_at
            && g.voided_at.is_none()
            && g.remaining > g.reserved
            && at.plus_ms(EXPIRY_OVERDUE_AFTER_MS) < now
        {
            out.push(Mismatch::ExpiryOverdue {
                grant_id: g.id,
                expires_at: at,
                unreserved: (g.remaining - g.reserved).0,
            });
        }
    }
    for (hold_id, amount, held) in &a.hold_reserved {
        if amount != held {
            out.push(Mismatch::HoldReservations { hold_id: *hold_id, amount: amount.0, reserved: held.0 });
        }
    }
    let mut users: Vec<i64> = walked.keys().chain(remaining_by_user.keys()).copied().collect();
    users.sort_unstable();
    users.dedup();
    for u in users {
        let (sum, rem) = (walked.get(&u).map_or(0, |w| w.sum), remaining_by_user.get(&u).copied().unwrap_or(0));
        if sum != rem {
            out.push(Mismatch::UserGrants { user_id: UserId(u), ledger_balance: sum, grants_remaining: rem });
        }
    }
    out
}

/// Why a row's recorded components do not price to `cost_micro`, if they
/// do not: every token part costs its tokens times its price per 1M (in
/// millionths of a credit, exactly), and the parts sum to the row's cost.
fn components_mismatch(parts: &str, cost_micro: i64) -> Option<String> {
    let v: serde_json::Value = match serde_json::from_str(parts) {
        Ok(v) => v,
        Err(e) => return Some(format!("not JSON: {e}")),
    };
    if v.get("cost_micro").and_then(serde_json::Value::as_i64) != Some(cost_micro) {
        return Some(format!("cost_micro {} is not the row's {cost_micro}", v["cost_micro"]));
    }
    // A price group's factor: each part is its list cost times it, rounded up.
    let multiplier =
        v.get("multiplier_micro").and_then(serde_json::Value::as_i64).unwrap_or(crate::domain::MULTIPLIER_ONE_MICRO);
    let mut sum: i64 = 0;
    for p in v.get("breakdown").and_then(serde_json::Value::as_array).into_iter().flatten() {
        let micro = p.get("micro").and_then(serde_json::Value::as_i64).unwrap_or(i64::MIN);
        let n = |k: &str| p.get(k).and_then(serde_json::Value::as_i64);
        // Tokens or units (characters) at a price per million, or units
        // (audio seconds) at whole credits each; other parts (the per-call
        // price, images in whole credits) are checked by the sum alone.
        let list = match (n("tokens").or(n("units")), n("per_1m"), n("per_second")) {
            (Some(q), Some(per_1m), _) => Some((q, per_1m, q.checked_mul(per_1m))),
            (Some(q), None, Some(per_s)) => {
                Some((q, per_s, q.checked_mul(per_s).and_then(|c| c.checked_mul(super::MICRO_PER_CREDIT))))
            }
            _ => None,
        };
        if let Some((quantity, price, list)) = list
            && p.get("component").and_then(serde_json::Value::as_str) != Some("request")
            && list.map(|list| crate::domain::scale_up(list, multiplier)) != Some(micro)
        {
            return Some(format!("{}: {quantity} at {price} (x {multiplier}/1e6) is not {micro}", p["component"]));
        }
        sum = sum.saturating_add(micro);
    }
    (sum != cost_micro).then(|| format!("the parts sum to {sum}, not {cost_micro}"))
}

#[cfg(test)]
mod tests {
    use super::components_mismatch;

    #[test]
    fn recorded_components_must_price_to_the_row() {
        let row = r#"{"cost_micro":280000,"breakdown":[{"component":"input","tokens":200,"per_1m":1000,"micro":200000},{"component":"cached_input","tokens":800,"per_1m":100,"micro":80000}]}"#;
        assert_eq!(components_mismatch(row, 280_000), None);
        assert!(components_mismatch(row, 280_001).is_some(), "the row's cost differs");
        let edited = row.replace("\"micro\":80000", "\"micro\":80001");
        assert!(components_mismatch(&edited, 280_000).unwrap().contains("cached_input"));
        // A group at 0.8: 200 x 1000 x 0.8 = 160000; 800 x 100 x 0.8 = 64000.
        let vip = r#"{"cost_micro":224000,"multiplier_micro":800000,"breakdown":[{"component":"input","tokens":200,"per_1m":1000,"micro":160000},{"component":"cached_input","tokens":800,"per_1m":100,"micro":64000}]}"#;
        assert_eq!(components_mismatch(vip, 224_000), None);
        assert!(components_mismatch("not json", 1).is_some());
        // Audio: characters per million and seconds at whole credits.
        let speech = r#"{"cost_micro":3150000,"breakdown":[{"component":"character","units":210,"per_1m":15000,"micro":3150000}]}"#;
        assert_eq!(components_mismatch(speech, 3_150_000), None);
        assert!(components_mismatch(&speech.replace("\"units\":210", "\"units\":211"), 3_150_000).is_some());
        let heard = r#"{"cost_micro":6000000,"breakdown":[{"component":"audio_second","units":3,"per_second":2,"micro":6000000}]}"#;
        assert_eq!(components_mismatch(heard, 6_000_000), None);
        assert!(components_mismatch(&heard.replace("\"units\":3", "\"units\":4"), 6_000_000).is_some());
    }
}
