//! The command line: parse arguments, load settings, run one command, and
//! decide the exit code (only here). Exit codes: 0 ok, 1 the check failed
//! (audit mismatch), 2 the command could not run (bad input, no database...).

use crate::config::{Config, Flags};
use crate::domain::{Credits, Email, Password, Role};
use crate::ledger;
use crate::service::{self, BootstrapAdmin, Service, StartOptions};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Authenticate, meter and bill AI generation calls against an exact credit ledger in one SQLite file (or PostgreSQL)."
)]
struct Cli {
    /// Config file (default: ./tollgate.toml if present).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Database file (overrides server.db).
    #[arg(long, global = true, value_name = "FILE")]
    db: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Migrate the database, then serve HTTP until SIGINT/SIGTERM.
    Serve(ServeArgs),
    /// Bring the database schema to this binary's version and exit.
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage credits.
    #[command(subcommand)]
    Credits(CreditsCommand),
    /// Check every cached balance and hold against the ledger, and the hash
    /// chain; exit 1 on any mismatch.
    Audit(AuditArgs),
    /// Write a consistent copy of the live database (safe while serving).
    Backup {
        /// Where to write the copy; must not exist.
        file: PathBuf,
    },
    /// Replace the database with a backup (refused while a server runs).
    Restore {
        /// The backup to restore.
        file: PathBuf,
        /// Restore even if the file fails the ledger audit.
        #[arg(long)]
        force: bool,
    },
    /// Model prices.
    #[command(subcommand)]
    Prices(PricesCommand),
    /// The key that seals stored secrets (TOLLGATE_SECRET_KEY).
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Copy a SQLite database into an empty PostgreSQL database, audit both,
    /// and keep the copy only if the audits agree.
    MigrateToPostgres {
        /// The SQLite file to copy (no server may be using it).
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// The PostgreSQL database: postgres://user:password@host:port/dbname
        #[arg(long, value_name = "URL")]
        to: String,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (overrides server.addr).
    #[arg(long, value_name = "HOST:PORT")]
    addr: Option<String>,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        password: String,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
    },
}

#[derive(Subcommand)]
enum PricesCommand {
    /// Print `[[models]]` price tables for the models named, from a copy of
    /// LiteLLM's `model_prices_and_context_window.json` (read, never
    /// downloaded). Paste them into the config and set each route.
    Import {
        /// The price list (JSON).
        file: PathBuf,
        /// Credits one US dollar buys (prices are integer credits).
        #[arg(long, value_name = "N")]
        credits_per_usd: u64,
        /// The models to print (every model when none is named).
        models: Vec<String>,
    },
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Print a new random key for TOLLGATE_SECRET_KEY (base64, 32 bytes).
    NewKey,
    /// Seal every stored secret with the key in TOLLGATE_SECRET_KEY_NEW,
    /// opening them with TOLLGATE_SECRET_KEY (unset: they are in clear), in
    /// one transaction; then start the server with the new key. Run it with
    /// the server stopped.
    Rotate,
}

#[derive(Subcommand)]
enum CreditsCommand {
    /// Add credits to a user's balance through the ledger.
    Grant {
        #[arg(long)]
        email: String,
        #[arg(long)]
        amount: i64,
        #[arg(long, default_value = "granted from the command line")]
        description: String,
    },
}

#[derive(Args)]
struct AuditArgs {
    /// Fail unless seal ID (`seal_ID:HASH`) or ledger row ID (`ID:HASH`)
    /// still carries HASH, as printed by an earlier audit. Pin a seal: it
    /// covers every user's chain up to it.
    #[arg(long, value_name = "seal_ID:HASH")]
    expect: Option<String>,
    /// Print the full report as JSON.
    #[arg(long)]
    json: bool,
}

/// A command failure: the message for stderr and the exit code.
struct Failure(String, u8);

impl From<String> for Failure {
    fn from(s: String) -> Failure {
        Failure(s, 2)
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Serve(_)) { "info" } else { "warn" };
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level)).try_init();
    let addr = match &cli.command {
        Command::Serve(a) => a.addr.clone(),
        _ => None,
    };
    let flags = Flags { config: cli.config.clone(), addr, db: cli.db.clone() };
    let result =
        Config::load(&flags).map_err(|e| Failure(e.to_string(), 2)).and_then(|config| run(cli.command, config));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg, code)) => {
            eprintln!("tollgate: {msg}");
            ExitCode::from(code)
        }
    }
}

/// Backups and restores of a PostgreSQL database are the server's own
/// tools' job.
const PG_BACKUP_HINT: &str = "database.url names a PostgreSQL database: back it up with `pg_dump --format=custom` \
     and restore with `pg_restore` (see README, \"PostgreSQL\"); `tollgate backup` and `restore` are for the SQLite file";

fn run(command: Command, config: Config) -> Result<(), Failure> {
    if let Some(url) = config.database.postgres_url() {
        match command {
            Command::Migrate => {
                let n = crate::storage::pg::migrate(url).map_err(|e| e.to_string())?;
                println!(
                    "PostgreSQL: {n} migration(s) applied, schema version {}",
                    crate::storage::schema_version_max()
                );
                return Ok(());
            }
            Command::Backup { .. } | Command::Restore { .. } => return Err(PG_BACKUP_HINT.to_owned().into()),
            _ => {}
        }
    }
    match command {
        Command::Serve(_) => serve(config),
        Command::Secrets(SecretsCommand::NewKey) => {
            println!("{}", crate::support::sealed::SealKey::generate()?);
            Ok(())
        }
        Command::Secrets(SecretsCommand::Rotate) => {
            let key = |name: &str| -> Result<Option<crate::support::sealed::SealKey>, Failure> {
                match std::env::var(name).ok().filter(|k| !k.trim().is_empty()) {
                    Some(k) => {
                        Ok(Some(crate::support::sealed::SealKey::parse(&k).map_err(|e| format!("{name}: {e}"))?))
                    }
                    None => Ok(None),
                }
            };
            let old = key(service::SECRET_KEY_ENV)?;
            let new = key("TOLLGATE_SECRET_KEY_NEW")?.ok_or_else(|| {
                "set TOLLGATE_SECRET_KEY_NEW to the new key (`tollgate secrets new-key` makes one)".to_owned()
            })?;
            // A running server holds the old key: it must not be running.
            let _lock = match config.database.postgres_url() {
                Some(_) => None,
                None => Some(
                    crate::storage::backup::ServerLock::try_acquire(&config.server.db)
                        .map_err(|e| e.to_string())?
                        .ok_or_else(|| {
                            format!("a tollgate server is using {}: stop it first", config.server.db.display())
                        })?,
                ),
            };
            let db = service::open_db(&config)?;
            // Webhook secrets and upstream keys move together, in one
            // transaction: never some under each key.
            let hooks = crate::events::endpoints::resealed(&db, old.as_ref(), &new)?;
            let stored = db.read(crate::providers::store::stored_secrets).map_err(|e| e.to_string())?;
            let keys = crate::providers::live::resealed(&stored, old.as_ref(), &new)?;
            let n = hooks.len() + keys.len();
            db.write(move |c| {
                crate::events::endpoints::write_sealed(c, &hooks)?;
                for (id, v) in &keys {
                    crate::providers::store::set_secret(c, id, v)?;
                }
                Ok::<_, crate::error::Error>(())
            })
            .map_err(|e| e.to_string())?;
            println!(
                "sealed {n} stored secret(s) with the new key; start the server with TOLLGATE_SECRET_KEY set to it"
            );
            Ok(())
        }
        Command::Prices(PricesCommand::Import { file, credits_per_usd, models }) => {
            print!("{}", import_prices(&file, credits_per_usd, &models)?);
            Ok(())
        }
        Command::MigrateToPostgres { from, to } => {
            let started = std::time::Instant::now();
            let r = crate::migrate_pg::migrate_to_postgres(&from, &to, |table, rows| {
                eprintln!("copied {table}: {rows} row(s)");
            })?;
            let rows: u64 = r.tables.iter().map(|(_, n)| n).sum();
            println!("copied {rows} row(s) in {} table(s) in {:.1} s", r.tables.len(), started.elapsed().as_secs_f64());
            println!("users checked: {}, ledger rows checked: {}", r.audit.users_checked, r.audit.rows_checked);
            if let Some(h) = &r.audit.head {
                println!("chain head: {}:{} (the same on both)", h.id, h.hash);
            }
            if let Some(seal) = &r.audit.seal {
                println!("seal: seal_{}:{} (the same on both)", seal.id, seal.hash);
            }
            println!("audit passed on both; set database.url (or TOLLGATE_DATABASE_URL) to serve from PostgreSQL");
            Ok(())
        }
        Command::Migrate => {
            let mut conn = crate::storage::open_connection(&config.server.db, crate::storage::Synchronous::Full)
                .map_err(|e| e.to_string())?;
            let n = crate::storage::migrate(&mut conn).map_err(|e| e.to_string())?;
            println!(
                "{}: {n} migration(s) applied, schema version {}",
                config.server.db.display(),
                crate::storage::schema_version_max()
            );
            Ok(())
        }
        Command::User(UserCommand::Create { email, password, admin }) => {
            let email = Email::parse(&email).map_err(|m| format!("--email: {m}"))?;
            let password = Password::parse(&password).map_err(|m| format!("--password: {m}"))?;
            let db = service::open_db(&config)?;
            let role = if admin { Role::Admin } else { Role::User };
            let user = crate::auth::accounts::create(&db, email, &password, role).map_err(|e| e.to_string())?;
            println!("created {} {} ({})", user.id, user.email, role.as_str());
            Ok(())
        }
        Command::Credits(CreditsCommand::Grant { email, amount, description }) => {
            let email = Email::parse(&email).map_err(|m| format!("--email: {m}"))?;
            let amount = Credits::positive(amount).ok_or_else(|| {
                format!("--amount must be a whole number from 1 to {}", crate::domain::CREDITS_AMOUNT_MAX)
            })?;
            let description = ledger::parse_description(Some(&description)).map_err(|e| e.to_string())?;
            let db = service::open_db(&config)?;
            let user = crate::users::find_by_email(&db, &email)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no user with email {email}"))?;
            let (g, b) = db
                .write(move |c| {
                    Ok::<_, crate::error::Error>((
                        ledger::grant(c, user.id, amount, &description)?,
                        ledger::balance(c, user.id)?,
                    ))
                })
                .map_err(|e| e.to_string())?;
            println!("granted {amount} credits to {email}: {} (promotional, no expiry; balance {})", g.id, b.balance);
            Ok(())
        }
        Command::Audit(args) => audit(&config, &args),
        Command::Backup { file } => {
            let r = crate::ops::backup(&config.server.db, &config.media.dir_for(&config.server.db), &file)?;
            println!("backup written to {} ({} bytes)", r.path.display(), r.bytes);
            println!("integrity: {}", r.integrity);
            println!("schema version: {}", r.schema_version);
            println!("users: {}, ledger rows: {}", r.users, r.ledger_rows);
            println!(
                "kept media: {} file(s), {} bytes, checked, in {}",
                r.media_files,
                r.media_bytes,
                crate::ops::media_beside(&r.path).display()
            );
            if let Some(h) = &r.audit.head {
                println!("chain head: {}:{}", h.id, h.hash);
            }
            println!(
                "audit: {}",
                if r.audit.valid { "passed" } else { "FAILED (the live database has mismatches too)" }
            );
            Ok(())
        }
        Command::Restore { file, force } => {
            let r = crate::ops::restore(&config.server.db, &config.media.dir_for(&config.server.db), &file, force)?;
            println!("restored {} into {}", r.restored_from.display(), config.server.db.display());
            if let Some(p) = &r.previous_kept_as {
                println!("the previous database is kept as {}", p.display());
            }
            println!(
                "schema version {} + {} migration(s) applied",
                r.schema_version_before_migration, r.migrations_applied
            );
            println!("kept media restored: {} file(s), each checked", r.media_files);
            Ok(())
        }
    }
}

fn serve(config: Config) -> Result<(), Failure> {
    let admin = match (std::env::var("TOLLGATE_ADMIN_EMAIL"), std::env::var("TOLLGATE_ADMIN_PASSWORD")) {
        (Ok(email), Ok(password)) => Some(BootstrapAdmin { email, password }),
        _ => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(|e| format!("cannot handle signals: {e}"))?;
    }
    let service = Service::start(config, StartOptions { admin, clock: None, secrets: Vec::new() })?;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    log::info!("signal received; finishing in-flight requests");
    service.shutdown();
    Ok(())
}

fn audit(config: &Config, args: &AuditArgs) -> Result<(), Failure> {
    let expect = match &args.expect {
        None => None,
        Some(s) => Some(
            ledger::audit::parse_expectation(s)
                .ok_or_else(|| format!("--expect must be seal_ID:HASH or ID:HASH (64 hex characters), got {s}"))?,
        ),
    };
    let report = match config.database.postgres_url() {
        Some(url) => {
            let db = crate::storage::Db::open_postgres(url).map_err(|e| e.to_string())?;
            db.read(|c| ledger::audit::audit(c, expect.as_ref())).map_err(|e| e.to_string())?
        }
        None => {
            if !config.server.db.exists() {
                return Err(format!("no database at {}", config.server.db.display()).into());
            }
            let conn = crate::storage::open_connection(&config.server.db, crate::storage::Synchronous::Full)
                .map_err(|e| e.to_string())?;
            ledger::audit::audit(&crate::storage::Conn::Sqlite(&conn), expect.as_ref()).map_err(|e| e.to_string())?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        println!("users checked: {}", report.users_checked);
        println!("ledger rows checked: {}", report.rows_checked);
        match &report.head {
            Some(h) => println!("chain head: {}:{}", h.id, h.hash),
            None => println!("chain head: (empty ledger)"),
        }
        match &report.seal {
            Some(s) => println!("seal: seal_{}:{}", s.id, s.hash),
            None => println!("seal: (none yet)"),
        }
        for m in &report.mismatches {
            println!("MISMATCH {}", serde_json::to_string(m).unwrap_or_default());
        }
        if report.mismatch_count > report.mismatches.len() {
            println!("... and {} more", report.mismatch_count - report.mismatches.len());
        }
        println!("{}", if report.valid { "audit passed" } else { "AUDIT FAILED" });
    }
    if report.valid { Ok(()) } else { Err(Failure(format!("audit found {} mismatch(es)", report.mismatch_count), 1)) }
}

/// The price list file's size limit: LiteLLM's is about 1 MiB.
const PRICE_LIST_BYTES_MAX: u64 = 64 << 20;

/// `[[models]]` entries as TOML, each with its rounding notes as comments.
fn import_prices(file: &std::path::Path, credits_per_usd: u64, models: &[String]) -> Result<String, Failure> {
    let size = std::fs::metadata(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?.len();
    if size > PRICE_LIST_BYTES_MAX {
        return Err(format!("{} is over {PRICE_LIST_BYTES_MAX} bytes", file.display()).into());
    }
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let imported = crate::providers::litellm::import(&text, credits_per_usd, models)?;
    let mut out =
        format!("# From {} at {credits_per_usd} credits per USD. Set each route's provider.\n", file.display());
    for m in imported {
        let entry = crate::config::ModelConfig {
            name: m.name.clone(),
            kind: m.kind.into(),
            routes: vec![crate::config::RouteConfig { provider: "CHANGE_ME".into(), model: m.name.clone() }],
            price: Some(m.price),
            provider_cost: None,
            max_output_tokens: None,
            image_input_tokens_max: None,
            context_tokens_max: None,
        };
        #[derive(serde::Serialize)]
        struct One {
            models: [crate::config::ModelConfig; 1],
        }
        out.push('\n');
        for note in &m.notes {
            out.push_str(&format!("# {note}\n"));
        }
        out.push_str(&toml::to_string(&One { models: [entry] }).map_err(|e| format!("cannot write TOML: {e}"))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_price_list_past_its_size_limit_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prices.json");
        // Sparse: the size is what is checked, nothing is written to disk.
        let f = std::fs::File::create(&file).unwrap();
        f.set_len(PRICE_LIST_BYTES_MAX + 1).unwrap();
        let Failure(e, code) = import_prices(&file, 1000, &[]).unwrap_err();
        assert!(e.contains("is over 67108864 bytes") && code == 2, "{e}");
        f.set_len(PRICE_LIST_BYTES_MAX).unwrap();
        let Failure(e, _) = import_prices(&file, 1000, &[]).unwrap_err();
        assert!(!e.contains("is over"), "at the limit the file is read (and this one is not JSON): {e}");
    }
}
