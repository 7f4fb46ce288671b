//! Operations: backup under load, restore and its refusals, rotation, the
//! server lock, metrics, the OpenAPI document, and upgrades.

use crate::helpers::*;
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

fn tollgate(args: &[&str], db: &Path) -> std::process::Output {
    bin().args(args).arg("--db").arg(db).output().expect("run tollgate")
}

fn out(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn a_backup_taken_under_load_restores_with_every_consume_acknowledged_before_it() {
    crate::sqlite_only!();
    let app = Arc::new(TestApp::spawn_with(|c| c.server.sqlite_synchronous = "full".into()));
    let ann = app.user("ann");
    app.grant(&ann, 1_000_000);
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (app, token, acked, stop) =
                (Arc::clone(&app), ann.token.clone(), Arc::clone(&acked), Arc::clone(&stop));
            std::thread::spawn(move || {
                for _ in 0..250 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = app.client.consume(&token, 1);
                    assert_eq!(r.status, 201);
                    acked.lock().unwrap().push(r.json()["transaction_id"].as_str().unwrap().to_owned());
                }
            })
        })
        .collect();
    while acked.lock().unwrap().len() < 300 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let before: Vec<String> = acked.lock().unwrap().clone();
    let backup = app.dir.path().join("backup.db");
    let o = tollgate(&["backup", backup.to_str().unwrap()], &app.db_path());
    assert!(o.status.success(), "{}", out(&o));
    let report = out(&o);
    assert!(report.contains("integrity: ok") && report.contains("audit: passed"), "{report}");
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(acked.lock().unwrap().len(), 1000, "the load kept going during the backup");

    let restored = app.dir.path().join("restored.db");
    let o = tollgate(&["restore", backup.to_str().unwrap()], &restored);
    assert!(o.status.success(), "{}", out(&o));
    let o = tollgate(&["audit"], &restored);
    assert!(o.status.success(), "{}", out(&o));
    let c = rusqlite::Connection::open(&restored).unwrap();
    let ids: HashSet<String> = c
        .prepare("SELECT id FROM credit_transactions")
        .unwrap()
        .query_map([], |r| Ok(format!("txn_{}", r.get::<_, i64>(0)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for id in &before {
        assert!(ids.contains(id), "{id} was acknowledged before the backup but is missing");
    }
}

#[test]
fn restore_refuses_a_corrupt_file_and_leaves_the_live_database_untouched() {
    crate::sqlite_only!();
    let app = TestApp::spawn();
    let ann = app.user("ann");
    app.grant(&ann, 100);
    let db = app.db_path();
    let backup = app.dir.path().join("b.db");
    assert!(tollgate(&["backup", backup.to_str().unwrap()], &db).status.success());
    let o = tollgate(&["restore", backup.to_str().unwrap()], &db);
    assert_eq!(o.status.code(), Some(2));
    assert!(out(&o).contains("server is using"), "refused while serving: {}", out(&o));
    let _dir = app.restart_stopped();

    let mut bytes = std::fs::read(&backup).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0xA5;
    }
    // The backup itself is damaged on disk (its .sha256 still beside it).
    let corrupt = backup.clone();
    std::fs::write(&corrupt, &bytes).unwrap();
    let live_before = std::fs::read(&db).unwrap();
    let o = tollgate(&["restore", corrupt.to_str().unwrap()], &db);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    let msg = out(&o);
    assert!(msg.contains("live database was not touched"), "{msg}");
    assert_eq!(std::fs::read(&db).unwrap(), live_before);
    assert_eq!(pre_restore_copies(&db), 0);
}

/// The safety copies restore kept beside `db` (`tollgate.db.pre-restore-<time>`).
fn pre_restore_copies(db: &std::path::Path) -> usize {
    let dir = db.parent().expect("db has a folder");
    std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("tollgate.db.pre-restore-") && !n.ends_with(".partial"))
        .count()
}

#[test]
fn restore_refuses_newer_schemas_and_failed_audits_unless_forced_and_keeps_the_old_file() {
    crate::sqlite_only!();
    let app = TestApp::spawn();
    let ann = app.user("ann");
    app.grant(&ann, 100);
    let db = app.db_path();
    let good = db.with_file_name("good.db");
    assert!(tollgate(&["backup", good.to_str().unwrap()], &db).status.success());
    let dir = app.restart_stopped();
    let db = dir.path().join("tollgate.db");

    let newer = db.with_file_name("newer.db");
    std::fs::copy(&good, &newer).unwrap();
    rusqlite::Connection::open(&newer)
        .unwrap()
        .execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) VALUES (999, 'future', '', '0')",
            [],
        )
        .unwrap();
    let o = tollgate(&["restore", newer.to_str().unwrap()], &db);
    assert_eq!(o.status.code(), Some(2));
    assert!(out(&o).contains("newer than this binary"), "{}", out(&o));

    let bad = db.with_file_name("bad.db");
    std::fs::copy(&good, &bad).unwrap();
    rusqlite::Connection::open(&bad).unwrap().execute("UPDATE users SET credits = credits + 1", []).unwrap();
    let o = tollgate(&["restore", bad.to_str().unwrap()], &db);
    assert_eq!(o.status.code(), Some(2));
    assert!(out(&o).contains("fails the ledger audit"), "{}", out(&o));
    let o = tollgate(&["restore", bad.to_str().unwrap(), "--force"], &db);
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(pre_restore_copies(&db), 1);
    let o = tollgate(&["restore", good.to_str().unwrap()], &db);
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(pre_restore_copies(&db), 2, "a second restore keeps the first safety copy");
    assert!(tollgate(&["audit"], &db).status.success());

    // What a killed backup leaves behind is refused unless forced.
    let partial = db.with_file_name("killed.db.partial");
    std::fs::copy(&good, &partial).unwrap();
    let o = tollgate(&["restore", partial.to_str().unwrap()], &db);
    assert_eq!(o.status.code(), Some(2));
    assert!(out(&o).contains("unfinished backup") && out(&o).contains("--force"), "{}", out(&o));
    assert_eq!(pre_restore_copies(&db), 2, "a refused restore keeps nothing new");
    let o = tollgate(&["restore", partial.to_str().unwrap(), "--force"], &db);
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(pre_restore_copies(&db), 3);
}

#[test]
fn rotating_backups_keep_the_newest_n() {
    crate::sqlite_only!();
    let app = TestApp::spawn();
    let dir = app.dir.path().join("backups");
    for _ in 0..3 {
        let r = tollgate::ops::rotate(&app.db_path(), &tollgate::ops::media_beside(&app.db_path()), &dir, 2).unwrap();
        assert!(r.audit.valid && r.integrity == "ok");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names.iter().filter(|n| n.ends_with(".db")).count(), 2, "{names:?}");
    assert_eq!(names.iter().filter(|n| n.ends_with(".db.sha256")).count(), 2, "{names:?}");
}

#[test]
fn a_second_server_on_the_same_file_is_refused() {
    crate::sqlite_only!();
    let app = TestApp::spawn();
    let mut config = app.config();
    config.server.addr = "127.0.0.1:0".into();
    let r = tollgate::service::Service::start(config, Default::default());
    let err = r.err().expect("second server refused");
    assert!(err.contains("another tollgate server"), "{err}");
}

#[test]
fn metrics_parse_as_prometheus_text_and_count_what_happened() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    app.grant(&ann, 10);
    assert_eq!(app.consume(&ann, 3).status, 201);
    assert_eq!(app.consume(&ann, 30).status, 402);
    let r = app.client.request("GET", "/metrics", None, &[], None).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("Content-Type").unwrap().starts_with("text/plain"));
    let text = r.text();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
    let names: HashSet<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for name in [
        "tollgate_http_requests_total",
        "tollgate_http_request_duration_seconds_count",
        "tollgate_credits_charged_total",
        "tollgate_credits_refused_total",
        "tollgate_holds_active",
    ] {
        assert!(names.contains(name), "{name} missing from:\n{text}");
    }
    // The group-commit writer is SQLite's; PostgreSQL commits on its own.
    if !engine_is_postgres() {
        for name in ["tollgate_writer_group_size_count", "tollgate_writer_commit_seconds_count"] {
            assert!(names.contains(name), "{name} missing from:\n{text}");
        }
    }
    let consumed = scrape.samples.iter().find(|s| {
        s.metric == "tollgate_http_requests_total"
            && s.labels.get("route") == Some(CONSUME)
            && s.labels.get("status") == Some("201")
    });
    assert!(consumed.is_some(), "{text}");
}

#[test]
fn every_route_is_in_the_openapi_document_and_every_reference_resolves() {
    let app = TestApp::spawn();
    let r = app.client.request("GET", "/openapi.json", None, &[], None).unwrap();
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    for route in tollgate::http::router::routes() {
        let op = &doc["paths"][route.path][route.method.to_ascii_lowercase()];
        assert!(op.is_object(), "{} {} is not documented", route.method, route.path);
        assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{} {}", route.method, route.path);
        if route.path.contains('{') {
            assert!(op["parameters"].is_array(), "{} {} needs path parameters", route.method, route.path);
        }
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let text = doc.to_string();
    for piece in text.split("\"#/components/schemas/").skip(1) {
        let name = piece.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "dangling $ref to {name}");
    }
    for (name, schema) in schemas {
        let target = schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/"));
        assert_ne!(target, Some(name.as_str()), "{name} is a reference to itself");
    }
    let ops: usize = doc["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        ops,
        tollgate::http::router::routes().count(),
        "the document describes routes the binary does not serve"
    );
}

/// The OpenAPI validator `scripts/test` installs (`openapi-spec-validator`
/// in a venv), or `TOLLGATE_OPENAPI_VALIDATOR`; `None` when neither exists.
fn openapi_validator() -> Option<std::path::PathBuf> {
    let path = match std::env::var_os("TOLLGATE_OPENAPI_VALIDATOR") {
        Some(p) => std::path::PathBuf::from(p),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/openapi-venv/bin/openapi-spec-validator"),
    };
    path.exists().then_some(path)
}

#[test]
fn the_openapi_document_validates_as_openapi_3_1() {
    let Some(validator) = openapi_validator() else {
        assert!(std::env::var_os("CI").is_none(), "no OpenAPI validator under CI: run scripts/test, which installs it");
        eprintln!(
            "skipped: no OpenAPI validator (scripts/test installs openapi-spec-validator into target/openapi-venv)"
        );
        return;
    };
    let app = TestApp::spawn();
    let doc = app.client.request("GET", "/openapi.json", None, &[], None).unwrap();
    let file = app.dir.path().join("openapi.json");
    std::fs::write(&file, &doc.body).unwrap();
    let out = std::process::Command::new(&validator).arg(&file).output().expect("run the OpenAPI validator");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.contains("OK"), "/openapi.json is not valid OpenAPI 3.1:\n{said}");
}

#[test]
fn every_earlier_schema_version_with_data_migrates_to_the_current_one_and_audits() {
    use tollgate::storage;
    let max = storage::schema_version_max() as i32;
    for from in 1..max {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let mut c = storage::open_connection(&path, storage::Synchronous::Normal).unwrap();
        storage::migrate_to(&mut c, from).unwrap();
        assert_eq!(storage::schema_version(&c).unwrap(), i64::from(from));
        // Rows as that release would have written them.
        c.execute(
            "INSERT INTO users (email, password_hash, role, created_at) VALUES ('old@example.com', 'x', 'user', 1)",
            [],
        )
        .unwrap();
        c.execute("INSERT INTO logs (log_type, level, action, success, user_id, created_at) VALUES ('business', 'info', 'login', 1, 1, 1)", []).unwrap();
        if from >= 2 {
            let hash = tollgate::ledger::chain::row_hash(
                tollgate::ledger::chain::GENESIS_HASH,
                &tollgate::ledger::chain::ChainFields {
                    id: 1,
                    seq: None,
                    user_id: 1,
                    amount: 50,
                    kind: "grant",
                    balance_after: 50,
                    job_id: None,
                    hold_id: None,
                    description: "old",
                    created_at: 1,
                    micro: None,
                    components: None,
                },
            );
            c.execute("INSERT INTO credit_transactions (id, user_id, amount, kind, balance_after, description, created_at, hash) VALUES (1, 1, 50, 'grant', 50, 'old', 1, ?1)", [hash]).unwrap();
            c.execute("UPDATE users SET credits = 50 WHERE id = 1", []).unwrap();
            // A closed hold pointing at the row: V7 rebuilds the table under it.
            c.execute("INSERT INTO credit_holds (user_id, amount, status, day, expires_at, created_at, closed_at, charged, transaction_id) VALUES (1, 5, 'settled', 1, 1, 1, 1, 0, 1)", []).unwrap();
            // A call in flight: V8 turns its hold into a reservation on the
            // user's legacy grant.
            c.execute("INSERT INTO credit_holds (user_id, amount, status, day, expires_at, created_at) VALUES (1, 7, 'active', 1, 9999999999999, 1)", []).unwrap();
            c.execute("UPDATE users SET held = 7 WHERE id = 1", []).unwrap();
            // The reservation counts toward its day's spend.
            let spend = if from < 19 {
                "INSERT INTO daily_spend (user_id, day, spent) VALUES (1, 1, 7)"
            } else {
                "INSERT INTO usage_user_running (user_id, day, spent) VALUES (1, 1, 7)"
            };
            c.execute(spend, []).unwrap();
            if from >= 8 {
                // Since V8 a grant row comes with its grant, and a hold
                // reserves on it.
                c.execute("INSERT INTO credit_grants (user_id, amount, remaining, reserved, category, priority, effective_at, source, transaction_id, created_at) VALUES (1, 50, 50, 7, 'promotional', 50, 1, 'admin', 1, 1)", []).unwrap();
                c.execute("INSERT INTO hold_reservations (hold_id, grant_id, amount) VALUES (2, 1, 7)", []).unwrap();
            }
        }
        drop(c);
        let o = tollgate(&["migrate"], &path);
        assert!(o.status.success(), "from v{from}: {}", out(&o));
        let o = tollgate(&["audit"], &path);
        assert!(o.status.success(), "audit after upgrading from v{from}: {}", out(&o));
        let c = rusqlite::Connection::open(&path).unwrap();
        assert_eq!(storage::schema_version(&c).unwrap(), i64::from(max));
        let email: String = c.query_row("SELECT email FROM users WHERE id = 1", [], |r| r.get(0)).unwrap();
        assert_eq!(email, "old@example.com");
        if (2..8).contains(&from) {
            let legacy: (i64, i64, i64, Option<i64>) = c
                .query_row(
                    "SELECT amount, remaining, reserved, expires_at FROM credit_grants WHERE user_id = 1 AND source = 'legacy'",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .unwrap();
            assert_eq!(legacy, (50, 50, 7, None), "the balance became one legacy grant, its hold a reservation");
        }
        if from >= 2 {
            let spent: i64 = c
                .query_row("SELECT spent FROM usage_user_running WHERE user_id = 1 AND day = 1", [], |r| r.get(0))
                .unwrap();
            assert_eq!(spent, 7, "the day's spend moved onto the user's row of the day");
        }
        drop(c);
        // Served again: the first seal verifies the older rows' global
        // chain and pins its head; new rows go on the user's own chain.
        let db = tollgate::storage::Db::open(&path, tollgate::storage::Synchronous::Normal).unwrap();
        db.write(|c| tollgate::ledger::grant(c, tollgate::domain::UserId(1), tollgate::domain::Credits(5), "new"))
            .unwrap();
        let seal = tollgate::ledger::seal::seal_all(&db).unwrap().expect("a seal");
        drop(db);
        let o = tollgate(&["audit", "--expect", &format!("seal_{}:{}", seal.id, seal.hash)], &path);
        assert!(o.status.success(), "audit of new rows after upgrading from v{from}: {}", out(&o));
        let c = rusqlite::Connection::open(&path).unwrap();
        let genesis: Option<i64> =
            c.query_row("SELECT legacy_id FROM ledger_seals WHERE id = 1", [], |r| r.get(0)).unwrap();
        assert_eq!(genesis, (from >= 2).then_some(1), "the first seal pins the older chain's head");
        let seq: i64 =
            c.query_row("SELECT user_seq FROM credit_transactions ORDER BY id DESC LIMIT 1", [], |r| r.get(0)).unwrap();
        assert_eq!(seq, 1);
    }
}

/// A small tmpfs mounted over a folder for as long as this lives (root only).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_an_answer_and_the_service_recovers_when_space_frees() {
    crate::sqlite_only!();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let Some(mount) = Tmpfs::mount(&root, "16m") else {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root and must run the disk-full test");
        eprintln!("SKIPPED ops::a_full_disk_is_an_answer...: mounting a tmpfs needs root");
        return;
    };
    let mut config = test_config(&dir);
    config.server.disk_free_bytes_min = 1_048_576;
    let app = TestApp::start_in(dir, config);
    let ann = app.user("ann");
    app.grant(&ann, 1_000_000);
    assert_eq!(app.client.request("GET", "/readyz", None, &[], None).unwrap().status, 200);
    // Take every free byte of the file system.
    let filler = root.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let mut acknowledged = 0;
    let mut refused = None;
    for _ in 0..20_000 {
        let r = app.consume(&ann, 1);
        match r.status {
            201 => acknowledged += 1,
            507 => {
                refused = Some(r);
                break;
            }
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    let r = refused.expect("a write met the full disk");
    assert_eq!(r.error_code(), "storage_full");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("disk"));
    assert!(r.header("Retry-After").is_some());
    let ready = app.client.request("GET", "/readyz", None, &[], None).unwrap();
    assert_eq!((ready.status, ready.error_code().as_str()), (503, "storage_full"));
    // Space comes back: so does the service, with nothing acknowledged lost.
    std::fs::remove_file(&filler).unwrap();
    let ready = app.client.request("GET", "/readyz", None, &[], None).unwrap();
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(app.consume(&ann, 1).status, 201);
    assert_eq!(app.balance(&ann)["balance"], 1_000_000 - acknowledged - 1);
    assert_eq!(app.audit()["valid"], true);
    drop(app);
    drop(mount);
}
