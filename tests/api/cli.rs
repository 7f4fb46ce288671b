//! The binary as an operator runs it: help, config errors, user and credit
//! commands, a fresh start with no config, and `audit` catching tampering.

use crate::helpers::*;
use std::path::Path;
use std::process::Output;

fn run(args: &[&str], cwd: &Path) -> Output {
    bin().args(args).current_dir(cwd).output().expect("run tollgate")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn every_subcommand_has_help() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["migrate", "--help"],
        &["user", "create", "--help"],
        &["credits", "grant", "--help"],
        &["audit", "--help"],
    ] {
        let o = run(args, dir.path());
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).contains("Usage"), "{args:?}");
    }
}

#[test]
fn an_unknown_config_key_is_a_startup_error_naming_key_and_file() {
    crate::sqlite_only!();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tollgate.toml"), "[limits]\nrpm = 5\nbrust = 3\n").unwrap();
    let o = run(&["migrate"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("brust") && err.contains("tollgate.toml"), "{err}");
    let o = bin().args(["migrate"]).current_dir(dir.path()).env("TOLLGATE_LIMITS_RPM", "lots").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn cli_creates_users_and_grants_credits_through_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let db = db.to_str().unwrap();
    let o =
        run(&["user", "create", "--email", "ops@example.com", "--password", "ops-password", "--db", db], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["credits", "grant", "--email", "ops@example.com", "--amount", "500", "--db", db], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("balance 500"), "{}", stdout(&o));
    let o = run(&["credits", "grant", "--email", "nobody@example.com", "--amount", "5", "--db", db], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no user"), "{}", stderr(&o));
    let o = run(&["credits", "grant", "--email", "ops@example.com", "--amount", "-5", "--db", db], dir.path());
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["audit", "--db", db], dir.path());
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("audit passed"));
}

#[test]
fn serve_with_no_config_creates_the_database_in_the_working_directory() {
    crate::sqlite_only!();
    let dir = tempfile::tempdir().unwrap();
    let mut child = bin()
        .args(["serve", "--addr", "127.0.0.1:0"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    use std::io::BufRead;
    let line = std::io::BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("listening on"))
        .expect("listening line");
    let addr = line.split("http://").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    let r = Client::new(format!("http://{addr}")).request("GET", "/readyz", None, &[], None).unwrap();
    assert_eq!(r.status, 200);
    assert!(dir.path().join("tollgate.db").exists());
    // SIGTERM: graceful stop, exit 0.
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// Edits one ledger amount outside tollgate, as a tamperer would: the sqlite3
/// CLI when present, else a plain SQLite connection (the same bytes result).
fn tamper(db: &Path, row: i64) {
    let sql = format!(
        "BEGIN; DROP TRIGGER IF EXISTS credit_transactions_no_update; UPDATE credit_transactions SET amount = amount - 5, balance_after = balance_after - 5 WHERE id = {row}; UPDATE users SET credits = credits - 5 WHERE id = (SELECT user_id FROM credit_transactions WHERE id = {row});
         CREATE TRIGGER credit_transactions_no_update BEFORE UPDATE ON credit_transactions BEGIN SELECT RAISE(ABORT, 'credit_transactions is append-only'); END; COMMIT;"
    );
    match std::process::Command::new("sqlite3").arg(db).arg(&sql).output() {
        Ok(o) => assert!(o.status.success(), "sqlite3: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            rusqlite::Connection::open(db).unwrap().execute_batch(&sql).unwrap()
        }
        Err(e) => panic!("cannot run sqlite3: {e}"),
    }
}

#[test]
fn hand_editing_a_ledger_amount_makes_audit_fail_and_name_the_row() {
    crate::sqlite_only!();
    let app = TestApp::spawn();
    let ann = app.user("ann");
    app.grant(&ann, 100);
    for _ in 0..3 {
        assert_eq!(app.consume(&ann, 10).status, 201);
    }
    let db = app.db_path();
    let cwd = app.dir.path();
    let o = run(&["audit", "--db", db.to_str().unwrap()], cwd);
    assert!(o.status.success(), "{}", stdout(&o));
    let out = stdout(&o);
    let head = out.lines().find_map(|l| l.strip_prefix("chain head: ")).unwrap().to_owned();
    assert!(head.starts_with("4:"), "{head}");
    let o = run(&["audit", "--db", db.to_str().unwrap(), "--expect", &head], cwd);
    assert!(o.status.success());

    // The tamperer even fixes the caches and running balance; the chain still tells.
    tamper(&db, 2);
    let o = run(&["audit", "--db", db.to_str().unwrap(), "--json"], cwd);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["valid"], false);
    let chain: Vec<&serde_json::Value> =
        report["mismatches"].as_array().unwrap().iter().filter(|m| m["kind"] == "chain").collect();
    assert_eq!(chain.len(), 1, "{report}");
    assert_eq!(chain[0]["row_id"], 2);
    let o = run(&["audit", "--db", db.to_str().unwrap()], cwd);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("\"row_id\":2"), "{}", stdout(&o));
    assert_eq!(app.audit()["valid"], false);
}

#[test]
fn audit_expect_fails_when_the_recorded_head_was_rewritten() {
    crate::sqlite_only!();
    let app = TestApp::spawn();
    let ann = app.user("ann");
    app.grant(&ann, 100);
    let db = app.db_path();
    let wrong = format!("1:{}", "ab".repeat(32));
    let o = run(&["audit", "--db", db.to_str().unwrap(), "--expect", &wrong], app.dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("expectation"), "{}", stdout(&o));
    let o = run(&["audit", "--db", db.to_str().unwrap(), "--expect", "garbage"], app.dir.path());
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn serve_on_a_port_in_use_fails_before_touching_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = run(&["serve", "--addr", &addr, "--db", "t.db"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("cannot listen on {addr}")), "{}", stderr(&o));
    assert!(!dir.path().join("t.db").exists(), "no database was created");
}

#[test]
fn a_provider_key_variable_that_is_not_set_stops_the_start() {
    crate::sqlite_only!();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tollgate.toml"),
        format!(
            "[providers.openai]\nkind = \"openai\"\napi_key_env = \"TG_TEST_UNSET_KEY\"\n{}",
            model_toml("m", "chat", "openai", "gpt", "{}", "")
        ),
    )
    .unwrap();
    let o = bin()
        .args(["serve", "--addr", "127.0.0.1:0", "--db", "t.db"])
        .current_dir(dir.path())
        .env_remove("TG_TEST_UNSET_KEY")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("TG_TEST_UNSET_KEY") && stderr(&o).contains("not set"), "{}", stderr(&o));
}

#[test]
fn a_backup_into_a_missing_folder_says_so() {
    let dir = tempfile::tempdir().unwrap();
    assert!(run(&["migrate", "--db", "t.db"], dir.path()).status.success());
    let o = run(&["backup", "no/such/dir/b.db", "--db", "t.db"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no/such/dir") && stderr(&o).contains("does not exist"), "{}", stderr(&o));
}

/// `tollgate prices import` turns LiteLLM's price list (a copy checked in
/// here, in its format) into `[[models]]` tables that load as a config.
#[test]
fn prices_import_prints_model_tables_that_load_as_config() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/fixtures/litellm_prices.json");
    let dir = tempfile::tempdir().unwrap();
    let o = bin()
        .args(["prices", "import", fixture.to_str().unwrap(), "--credits-per-usd", "1000"])
        .args(["claude-sonnet-4-20250514", "o3-mini", "text-embedding-3-small", "dall-e-3"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o).replace("CHANGE_ME", "p");
    let config = format!("[providers.p]\nkind = \"openai\"\n{text}");
    let path = write_config(dir.path(), &config);
    // An explicit, empty environment: the suite's own TOLLGATE_TEST_* are not settings.
    let flags = tollgate::config::Flags { config: Some(path), ..Default::default() };
    let c = tollgate::config::Config::load_from(&flags, &[]).unwrap_or_else(|e| panic!("{e}\n{config}"));
    let price = |name: &str| c.models.iter().find(|m| m.name == name).unwrap().price.clone().expect("priced");
    let claude = price("claude-sonnet-4-20250514");
    // $3 / 1M tokens at 1,000 credits per dollar: 3,000 credits per 1M.
    assert_eq!((claude.input_per_1m, claude.output_per_1m), (3000, 15000));
    assert_eq!(
        (claude.cached_input_per_1m, claude.cache_write_per_1m, claude.cache_write_1h_per_1m),
        (Some(300), Some(3750), Some(6000))
    );
    assert_eq!(claude.tiers.len(), 1);
    assert_eq!((claude.tiers[0].above_input_tokens, claude.tiers[0].input_per_1m), (200_000, Some(6000)));
    assert_eq!(price("o3-mini").reasoning_per_1m, Some(4400));
    // $0.02 / 1M tokens: 20 credits per 1M.
    assert_eq!(price("text-embedding-3-small").input_per_1m, 20);
    assert_eq!(price("dall-e-3").per_image, 40);
    let kinds: Vec<&str> = c.models.iter().map(|m| m.kind.as_str()).collect();
    assert_eq!(kinds, ["chat", "chat", "embedding", "image"]);

    let o = bin()
        .args(["prices", "import", fixture.to_str().unwrap(), "--credits-per-usd", "1000", "gpt-5-nope"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("gpt-5-nope"), "{}", stderr(&o));
}

/// Waits until the service has sealed every user's chain head.
fn wait_for_seal(db: &Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    eventually("every chain head sealed", std::time::Duration::from_secs(10), || {
        conn.query_row("SELECT count(*) FROM users WHERE chain_seq > sealed_seq", [], |r| r.get::<_, i64>(0)).unwrap()
            == 0
            && conn.query_row("SELECT count(*) FROM ledger_seals", [], |r| r.get::<_, i64>(0)).unwrap() > 0
    });
}

/// Rewrites the description of one user's row and re-chains every later
/// row of theirs and the head on their row, as a tamperer who knows the
/// hash scheme would: each user's chain stays consistent.
fn rewrite_user_chain(conn: &rusqlite::Connection, user: i64, seq: i64) {
    use tollgate::ledger::chain::{ChainFields, GENESIS_HASH, row_hash};
    conn.execute_batch("DROP TRIGGER credit_transactions_no_update").unwrap();
    let mut prev: String = if seq == 1 {
        GENESIS_HASH.to_owned()
    } else {
        conn.query_row(
            "SELECT hash FROM credit_transactions WHERE user_id = ?1 AND user_seq = ?2",
            [user, seq - 1],
            |r| r.get(0),
        )
        .unwrap()
    };
    conn.execute(
        "UPDATE credit_transactions SET description = 'rewritten' WHERE user_id = ?1 AND user_seq = ?2",
        [user, seq],
    )
    .unwrap();
    type Stored =
        (i64, i64, i64, String, i64, Option<i64>, Option<i64>, String, i64, Option<i64>, Option<i64>, Option<String>);
    let rows: Vec<Stored> = conn
        .prepare(
            "SELECT id, user_seq, amount, kind, balance_after, job_id, hold_id, description, created_at, cost_micro,
                    carry_after, components FROM credit_transactions WHERE user_id = ?1 AND user_seq >= ?2 ORDER BY user_seq",
        )
        .unwrap()
        .query_map([user, seq], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
                r.get(10)?,
                r.get(11)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (id, s, amount, kind, balance_after, job_id, hold_id, description, created_at, cost, carry, parts) in &rows {
        let hash = row_hash(
            &prev,
            &ChainFields {
                id: *id,
                seq: Some(*s),
                user_id: user,
                amount: *amount,
                kind,
                balance_after: *balance_after,
                job_id: *job_id,
                hold_id: *hold_id,
                description,
                created_at: *created_at,
                micro: cost.zip(*carry),
                components: parts.as_deref(),
            },
        );
        conn.execute("UPDATE credit_transactions SET hash = ?2 WHERE id = ?1", rusqlite::params![id, hash]).unwrap();
        prev = hash;
    }
    conn.execute("UPDATE users SET chain_hash = ?2 WHERE id = ?1", rusqlite::params![user, prev]).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER credit_transactions_no_update BEFORE UPDATE ON credit_transactions
         BEGIN SELECT RAISE(ABORT, 'credit_transactions is append-only'); END;",
    )
    .unwrap();
}

/// Recomputes every seal from the heads now on the rows they name: what a
/// tamperer does so the seals agree with a rewritten chain.
fn reseal(conn: &rusqlite::Connection) {
    use tollgate::ledger::seal::SealHasher;
    use tollgate::ledger::seal_storage::Head;
    conn.execute_batch(
        "UPDATE ledger_seal_heads SET hash = (SELECT hash FROM credit_transactions t WHERE t.id = txn_id)",
    )
    .unwrap();
    type Seal = (i64, i64, Option<i64>, Option<String>, i64);
    let seals: Vec<Seal> = conn
        .prepare("SELECT id, created_at, legacy_id, legacy_hash, heads FROM ledger_seals ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut prev = tollgate::ledger::chain::GENESIS_HASH.to_owned();
    for (id, created_at, legacy_id, legacy_hash, heads) in seals {
        let legacy = legacy_id.zip(legacy_hash);
        let mut hasher = SealHasher::new(&prev, id, created_at, legacy.as_ref(), heads);
        let mut st = conn
            .prepare("SELECT user_id, seq, txn_id, hash FROM ledger_seal_heads WHERE seal_id = ?1 ORDER BY user_id")
            .unwrap();
        for h in st
            .query_map([id], |r| Ok(Head { user_id: r.get(0)?, seq: r.get(1)?, txn_id: r.get(2)?, hash: r.get(3)? }))
            .unwrap()
        {
            hasher.head(&h.unwrap());
        }
        let hash = hasher.finish();
        conn.execute(
            "UPDATE ledger_seals SET prev_hash = ?2, hash = ?3 WHERE id = ?1",
            rusqlite::params![id, prev, hash],
        )
        .unwrap();
        prev = hash;
    }
}

fn mismatch_kinds(report: &serde_json::Value) -> Vec<String> {
    report["mismatches"].as_array().unwrap().iter().map(|m| m["kind"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn a_rewritten_user_chain_is_caught_by_its_seal_and_rewritten_seals_by_the_pinned_one() {
    crate::sqlite_only!();
    let app = TestApp::spawn_with(|c| c.ledger.seal_interval_s = 1);
    let (ann, bob) = (app.user("ann"), app.user("bob"));
    app.grant(&ann, 100);
    app.grant(&bob, 50);
    for _ in 0..3 {
        assert_eq!(app.consume(&ann, 10).status, 201);
    }
    let db = app.db_path();
    wait_for_seal(&db);
    let cwd = app.dir.path();
    let o = run(&["audit", "--db", db.to_str().unwrap()], cwd);
    assert!(o.status.success(), "{}", stdout(&o));
    let pinned = stdout(&o).lines().find_map(|l| l.strip_prefix("seal: ")).unwrap().to_owned();
    assert!(pinned.starts_with("seal_"), "{pinned}");
    let o = run(&["audit", "--db", db.to_str().unwrap(), "--expect", &pinned], cwd);
    assert!(o.status.success(), "{}", stdout(&o));

    // ann's second row rewritten, her chain re-hashed from it to her head:
    // her chain is consistent again, but the seal recorded her old head.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    let ann_id: i64 = conn.query_row("SELECT id FROM users WHERE email = 'ann@example.com'", [], |r| r.get(0)).unwrap();
    rewrite_user_chain(&conn, ann_id, 2);
    let o = run(&["audit", "--db", db.to_str().unwrap(), "--json"], cwd);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(mismatch_kinds(&report), ["seal_head"], "{report}");
    assert_eq!(report["mismatches"][0]["user_id"], format!("usr_{ann_id}"));

    // The seals recomputed too: consistent everywhere, and only the pinned
    // seal tells.
    reseal(&conn);
    let o = run(&["audit", "--db", db.to_str().unwrap()], cwd);
    assert!(o.status.success(), "a tamperer who rewrites every hash passes an unpinned audit: {}", stdout(&o));
    let o = run(&["audit", "--db", db.to_str().unwrap(), "--json", "--expect", &pinned], cwd);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(mismatch_kinds(&report), ["seal_expectation"], "{report}");
}

#[test]
fn a_deleted_last_row_or_a_head_moved_back_is_caught_by_the_seal() {
    crate::sqlite_only!();
    let app = TestApp::spawn_with(|c| c.ledger.seal_interval_s = 1);
    let ann = app.user("ann");
    app.grant(&ann, 100);
    assert_eq!(app.consume(&ann, 10).status, 201);
    let db = app.db_path();
    wait_for_seal(&db);
    // The last row deleted and everything that reflects it put back: the
    // head, the balance, the grant it drew on.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    conn.execute_batch(
        "BEGIN;
         DROP TRIGGER credit_transactions_no_delete;
         CREATE TEMP TABLE gone AS SELECT t.id, t.user_id, t.amount, t.user_seq FROM credit_transactions t
           JOIN users u ON u.id = t.user_id AND t.user_seq = u.chain_seq WHERE u.email = 'ann@example.com';
         UPDATE credit_grants SET remaining = remaining + 10 WHERE id IN
           (SELECT grant_id FROM grant_draws WHERE transaction_id IN (SELECT id FROM gone)
            UNION SELECT grant_id FROM credit_transactions WHERE id IN (SELECT id FROM gone));
         DELETE FROM grant_draws WHERE transaction_id IN (SELECT id FROM gone);
         DELETE FROM credit_transactions WHERE id IN (SELECT id FROM gone);
         UPDATE users SET credits = credits + 10, chain_seq = chain_seq - 1,
           chain_hash = (SELECT t.hash FROM credit_transactions t, gone g
                         WHERE t.user_id = g.user_id AND t.user_seq = g.user_seq - 1)
           WHERE id = (SELECT user_id FROM gone);
         CREATE TRIGGER credit_transactions_no_delete BEFORE DELETE ON credit_transactions
           BEGIN SELECT RAISE(ABORT, 'credit_transactions is append-only'); END;
         COMMIT;",
    )
    .unwrap();
    let o = run(&["audit", "--db", db.to_str().unwrap(), "--json"], app.dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let kinds = mismatch_kinds(&report);
    assert!(kinds.contains(&"seal_head".to_owned()), "{report}");
    let missing = report["mismatches"].as_array().unwrap().iter().find(|m| m["kind"] == "seal_head").unwrap();
    assert!(missing["reason"].as_str().unwrap().contains("missing"), "{report}");
}
