//! Starting and stopping the whole service: open and migrate the database,
//! recover from a crash, start background upkeep, then the HTTP server.
//!
//! Tests start the service in-process through [`Service::start`]; the binary
//! does the same and then waits for SIGINT/SIGTERM.

use crate::app::App;
use crate::auth;
use crate::config::Config;
use crate::domain::{Email, Password, Role, Timestamp};
use crate::error::Error;
use crate::guard::{Clock, Guard, SystemClock};
use crate::http::server::HttpServer;
use crate::storage::{Conn, Db, Synchronous};
use crate::{idempotency, ledger, logs, users};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often log and idempotency-key retention runs.
const PRUNE_INTERVAL_S: u64 = 3_600;

/// An administrator to create at start if missing (from
/// `TOLLGATE_ADMIN_EMAIL` / `TOLLGATE_ADMIN_PASSWORD`).
pub struct BootstrapAdmin {
    pub email: String,
    pub password: String,
}

/// What `Service::start` needs besides the config.
#[derive(Default)]
pub struct StartOptions {
    pub admin: Option<BootstrapAdmin>,
    /// The rate limiter's clock; the system clock when `None`. Tests inject
    /// a manual clock to move time without sleeping.
    pub clock: Option<Arc<dyn Clock>>,
    /// Secrets named by `*_env` settings, looked up here before the process
    /// environment (tests pass theirs without touching the environment).
    pub secrets: Vec<(String, String)>,
}

pub struct Service {
    /// SQLite only: one server per file. Instances on PostgreSQL share it.
    _lock: Option<crate::storage::backup::ServerLock>,
    workers: Option<crate::jobs::worker::Workers>,
    deliverer: Option<crate::events::delivery::Deliverer>,
    app: Arc<App>,
    http: HttpServer,
    stop: Arc<AtomicBool>,
    upkeep: Option<JoinHandle<()>>,
    channels: Option<JoinHandle<()>>,
    payments: Option<JoinHandle<()>>,
    credentials: Option<JoinHandle<()>>,
}

/// Opens the database with the configured durability.
pub fn open_db(config: &Config) -> Result<Db, String> {
    if let Some(url) = config.database.postgres_url() {
        let d = &config.database;
        let bounds = crate::storage::pg::Bounds {
            statement_timeout_ms: d.statement_timeout_ms,
            lock_timeout_ms: d.lock_timeout_ms,
        };
        return Db::open_postgres_bounded(url, bounds).map_err(|e| e.to_string());
    }
    let sync = Synchronous::parse(&config.server.sqlite_synchronous).unwrap_or(Synchronous::Full);
    Db::open(&config.server.db, sync).map_err(|e| e.to_string())
}

/// The environment variable holding the key that seals stored secrets.
pub const SECRET_KEY_ENV: &str = "TOLLGATE_SECRET_KEY";

impl Service {
    pub fn start(config: Config, options: StartOptions) -> Result<Service, String> {
        let listener = HttpServer::bind(&config.server.addr)?;
        let lock = match config.database.postgres_url() {
            Some(_) => None,
            None => Some(
                crate::storage::backup::ServerLock::try_acquire(&config.server.db)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("another tollgate server is using {}", config.server.db.display()))?,
            ),
        };
        crate::auth::password::configure(config.auth.password_hashes_max, config.auth.password_hash_wait_ms);
        let db = open_db(&config)?;
        let keys = auth::load_keys(&db).map_err(|e| format!("cannot load the token signing key: {e}"))?;
        if let Some(a) = &options.admin {
            ensure_admin(&db, a)?;
        }
        recover(&db)?;
        let clock = options.clock.unwrap_or_else(|| Arc::new(SystemClock::default()));
        let guard = Guard::new(config.limits.clone(), config.auth.clone(), clock)
            .with_low_balance(crate::domain::Credits(config.events.credits_low_threshold))
            .with_instances(config.database.instances)
            .with_shared(crate::guard::shared::Shared::open(&config.redis)?, &config.redis);
        guard.load(&db).map_err(|e| format!("cannot load per-user limits: {e}"))?;
        let (requeued, failed) = crate::jobs::recover(&db).map_err(|e| format!("job recovery failed: {e}"))?;
        if requeued + failed > 0 {
            log::warn!("jobs after a restart: {requeued} requeued, {failed} failed (submission outcome unknown)");
        }
        let media = crate::media::Store::open(&config.media, &config.server.db, &db)?;
        let secret = |name: &str| {
            options.secrets.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).or_else(|| std::env::var(name).ok())
        };
        let seal_key = secret(SECRET_KEY_ENV)
            .filter(|k| !k.trim().is_empty())
            .map(|k| crate::support::sealed::SealKey::parse(&k).map_err(|e| format!("{SECRET_KEY_ENV}: {e}")))
            .transpose()?;
        let sealed = crate::events::endpoints::seal_stored(&db, seal_key.as_ref())?;
        if sealed > 0 {
            log::info!("sealed {sealed} stored webhook signing secrets with {SECRET_KEY_ENV}");
        }
        let adapter = crate::providers::ModelAdapter::new(&config, db.clone(), seal_key.clone(), &secret)?;
        let hook_secrets =
            crate::events::endpoints::sync_config(&db, &config.webhooks, config.events.allow_private_urls, secret)?;
        let public_url = match config.server.public_url.as_str() {
            "" => format!("http://{}", listener.local_addr().map_err(|e| format!("the listener has no address: {e}"))?),
            url => url.to_owned(),
        };
        let oidc = crate::oidc::Providers::new(&config.oidc, &public_url, secret)?;
        let resets = crate::auth::reset::Requests::start(db.clone(), config.auth.clone()).map_err(|e| e.to_string())?;
        let payments = crate::payments::Gateway::from_env(&config.payments, &secret)?;
        let credentials = if db.is_shared() {
            crate::auth::cache::CredentialCache::with_ttl_ms(crate::auth::cache::CREDENTIAL_CACHE_TTL_SHARED_MS)
        } else {
            Default::default()
        };
        let app = Arc::new(App {
            config,
            db,
            keys,
            credentials,
            guard,
            adapter,
            notifier: crate::support::notify::Notifier::default(),
            webhook_wake: Default::default(),
            job_changes: crate::support::notify::Notifier::default(),
            media,
            oidc,
            resets,
            seal_key: seal_key.clone(),
            payments,
        });
        if app.guard.shared().is_some() {
            // A credential change published to every instance (a weak
            // reference: the cache lives inside the App it would keep alive).
            let weak = Arc::downgrade(&app);
            app.credentials.on_invalidate(move || {
                if let Some(s) = weak.upgrade().as_ref().and_then(|a| a.guard.shared()) {
                    s.publish(crate::guard::shared::CREDENTIALS_CHANNEL);
                }
            });
        }
        let workers = crate::jobs::worker::Workers::start(&app)?;
        let deliverer = crate::events::delivery::Deliverer::start(
            crate::events::delivery::Handles {
                db: app.db.clone(),
                config: app.config.events.clone(),
                wake: Arc::clone(&app.webhook_wake),
                seal_key,
            },
            hook_secrets,
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let upkeep = {
            let (app, stop) = (Arc::clone(&app), Arc::clone(&stop));
            thread::Builder::new()
                .name("upkeep".into())
                .spawn(move || upkeep(&app, &stop))
                .map_err(|e| format!("cannot start the upkeep thread: {e}"))?
        };
        let channels = {
            let (app, stop) = (Arc::clone(&app), Arc::clone(&stop));
            thread::Builder::new()
                .name("channels".into())
                .spawn(move || watch_channels(&app, &stop))
                .map_err(|e| format!("cannot start the channels thread: {e}"))?
        };
        let listener_thread = match app.guard.shared() {
            Some(_) => Some({
                let (app, stop) = (Arc::clone(&app), Arc::clone(&stop));
                thread::Builder::new()
                    .name("credentials".into())
                    .spawn(move || {
                        if let Some(s) = app.guard.shared() {
                            s.listen(crate::guard::shared::CREDENTIALS_CHANNEL, &stop, || {
                                app.credentials.invalidate_local()
                            });
                        }
                    })
                    .map_err(|e| format!("cannot start the credentials thread: {e}"))?
            }),
            None => None,
        };
        let payments = match app.payments {
            Some(_) => Some({
                let (app, stop) = (Arc::clone(&app), Arc::clone(&stop));
                thread::Builder::new()
                    .name("payments".into())
                    .spawn(move || auto_topups(&app, &stop))
                    .map_err(|e| format!("cannot start the payments thread: {e}"))?
            }),
            None => None,
        };
        let http = HttpServer::start(Arc::clone(&app), listener)?;
        let database = match app.config.database.postgres_url() {
            Some(_) => "PostgreSQL (database.url)".to_owned(),
            None => app.config.server.db.display().to_string(),
        };
        log::info!("tollgate listening on http://{} (database {database})", http.addr());
        Ok(Service {
            _lock: lock,
            workers: Some(workers),
            deliverer: Some(deliverer),
            app,
            http,
            stop,
            upkeep: Some(upkeep),
            channels: Some(channels),
            payments,
            credentials: listener_thread,
        })
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.http.addr()
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Graceful stop: finish in-flight requests, stop upkeep, flush writes.
    pub fn shutdown(mut self) {
        self.http.shutdown();
        if let Some(w) = self.workers.take() {
            w.stop(&self.app.notifier);
        }
        if let Some(d) = self.deliverer.take() {
            d.stop();
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.channels.take() {
            let _ = h.join();
        }
        if let Some(h) = self.payments.take() {
            let _ = h.join();
        }
        if let Some(h) = self.credentials.take() {
            let _ = h.join();
        }
        if let Some(h) = self.upkeep.take() {
            let _ = h.join();
        }
        log::info!("tollgate stopped");
    }
}

fn ensure_admin(db: &Db, a: &BootstrapAdmin) -> Result<(), String> {
    let email = Email::parse(&a.email).map_err(|m| format!("TOLLGATE_ADMIN_EMAIL: {m}"))?;
    if users::find_by_email(db, &email).map_err(|e| e.to_string())?.is_some() {
        return Ok(());
    }
    let password = Password::parse(&a.password).map_err(|m| format!("TOLLGATE_ADMIN_PASSWORD: {m}"))?;
    match crate::auth::accounts::create(db, email.clone(), &password, Role::Admin) {
        Ok(_) | Err(Error::Conflict { .. }) => {
            log::info!("created administrator {email}");
            Ok(())
        }
        Err(e) => Err(format!("cannot create administrator {email}: {e}")),
    }
}

/// After a crash: drop idempotency claims of requests that died with the
/// process, release the holds of provider calls that died with it, and
/// expire holds whose time has passed. On a SQLite file this process is the
/// only server, so anything in flight is dead. On a shared database
/// (PostgreSQL) other instances may be serving: their claims and their
/// calls' holds are alive, so a claim is cleared only once it is older than
/// any request can run, and holds only when they expire (the sweeper does
/// that while serving); jobs are recovered by their leases (`jobs::recover`).
fn recover(db: &Db) -> Result<(), String> {
    let cleared =
        if db.is_shared() { idempotency::clear_stale_in_progress(db) } else { idempotency::clear_in_progress(db) }
            .map_err(|e| e.to_string())?;
    if cleared > 0 {
        log::warn!("cleared {cleared} idempotency claim(s) left by a previous process");
    }
    if !db.is_shared() {
        let released = in_batches(db, ledger::release_unattached)?;
        if released > 0 {
            log::warn!("released {released} hold(s) of calls that were in flight when the previous process stopped");
        }
    }
    let expired = in_batches(db, |c| ledger::expire_due(c, Timestamp::now()))?;
    if expired > 0 {
        log::warn!("expired {expired} hold(s) left by a previous process");
    }
    Ok(())
}

/// Runs a batch-at-a-time ledger fix-up until a batch comes back short.
fn in_batches(
    db: &Db,
    batch: impl Fn(&Conn<'_>) -> crate::error::Result<usize> + Copy + Send + 'static,
) -> Result<usize, String> {
    let mut total = 0;
    loop {
        let n = db.write(batch).map_err(|e| e.to_string())?;
        total += n;
        if n < ledger::SWEEP_BATCH_MAX as usize {
            return Ok(total);
        }
    }
}

/// The catalog's watch: picks up changes another instance made (polling
/// the catalog's version), and, when `channels.probe_interval_s` is set,
/// test-calls the keys the provider refused so the ones that work again
/// come back. On its own thread: a probe waits on the network.
fn watch_channels(app: &App, stop: &AtomicBool) {
    let c = &app.config.channels;
    let reload_every = Duration::from_millis(c.reload_interval_ms);
    let probe_every = Duration::from_secs(c.probe_interval_s);
    let (mut last_reload, mut last_probe) = (Instant::now(), Instant::now());
    while !stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(50));
        if app.db.is_shared() && last_reload.elapsed() >= reload_every {
            last_reload = Instant::now();
            if let Err(e) = app.adapter.reload_if_changed() {
                log::error!("catalog reload failed: {e}");
            }
        }
        if !probe_every.is_zero() && last_probe.elapsed() >= probe_every {
            last_probe = Instant::now();
            let back = app.adapter.probe();
            if back > 0 {
                log::info!("the probe enabled {back} upstream key(s) again");
            }
        }
    }
}

/// The auto top-up pass, every `payments.auto_topup_poll_ms`.
fn auto_topups(app: &App, stop: &AtomicBool) {
    let Some(gw) = &app.payments else { return };
    let every = Duration::from_millis(app.config.payments.auto_topup_poll_ms);
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(50));
        if last.elapsed() >= every {
            last = Instant::now();
            if let Err(e) = crate::payments::topup::run_once(&app.db, &app.config.payments, gw) {
                log::error!("auto top-up pass failed: {e}");
            }
        }
    }
}

/// Seals the chain heads that moved; a failure is logged (the audit
/// reports what a seal could not cover).
fn seal(app: &App) {
    match ledger::seal::seal_all(&app.db) {
        Ok(Some(s)) => log::debug!("ledger sealed: seal_{}:{}", s.id, s.hash),
        Ok(None) => {}
        Err(e) => {
            log::error!("ledger seal failed: {e}");
            logs::record(
                &app.db,
                logs::NewLog::system(logs::Level::Error, "seal_failed", serde_json::json!({ "error": e.to_string() })),
            );
        }
    }
}

/// Background upkeep: the hold sweeper, the ledger's seals, backups and
/// retention pruning.
fn upkeep(app: &App, stop: &AtomicBool) {
    let sweep_every = Duration::from_secs(app.config.ledger.sweep_interval_s);
    let prune_every = Duration::from_secs(PRUNE_INTERVAL_S);
    let mut last_sweep = Instant::now();
    let seal_every = Duration::from_secs(app.config.ledger.seal_interval_s);
    // The first seal comes at once: on a database from before per-user
    // chains it verifies the older rows' chain and pins it.
    let mut last_seal: Option<Instant> = None;
    let mut last_prune: Option<Instant> = None;
    let backup_every = Duration::from_secs(app.config.backup.every_s);
    let mut last_backup = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(200));
        if last_sweep.elapsed() >= sweep_every {
            last_sweep = Instant::now();
            if let Err(e) = ledger::sweep(&app.db, Timestamp::now()) {
                log::error!("hold sweep failed: {e}");
            }
            if app.db.is_shared() {
                match idempotency::clear_stale_in_progress(&app.db) {
                    Ok(0) => {}
                    Ok(n) => log::warn!("cleared {n} idempotency claim(s) of an instance that stopped mid-request"),
                    Err(e) => log::error!("clearing stale idempotency claims failed: {e}"),
                }
            }
            match crate::jobs::recover_expired_leases(&app.db) {
                Ok((0, 0)) => {}
                Ok((requeued, failed)) => {
                    log::warn!("jobs with expired leases: {requeued} requeued, {failed} failed");
                    app.notifier.notify();
                }
                Err(e) => log::error!("job lease recovery failed: {e}"),
            }
        }
        if last_seal.is_none_or(|t| t.elapsed() >= seal_every) {
            last_seal = Some(Instant::now());
            seal(app);
        }
        // PostgreSQL is backed up with its own tools (pg_dump); see README.
        if !backup_every.is_zero()
            && last_backup.elapsed() >= backup_every
            && app.db.engine() == crate::storage::Engine::Sqlite
        {
            last_backup = Instant::now();
            let b = &app.config.backup;
            match crate::ops::rotate(&app.config.server.db, app.media.dir(), &b.dir, b.keep) {
                Ok(r) => log::info!(
                    "backup written to {} ({} bytes, audit valid: {})",
                    r.path.display(),
                    r.bytes,
                    r.audit.valid
                ),
                Err(e) => {
                    log::error!("scheduled backup failed: {e}");
                    logs::record(
                        &app.db,
                        logs::NewLog::system(logs::Level::Error, "backup_failed", serde_json::json!({ "error": e })),
                    );
                }
            }
        }
        if last_prune.is_none_or(|t| t.elapsed() >= prune_every) {
            last_prune = Some(Instant::now());
            match logs::prune(&app.db, app.config.logs.retention_days) {
                Ok(n) if n > 0 => log::info!("pruned {n} log entries past retention"),
                Ok(_) => {}
                Err(e) => log::error!("log pruning failed: {e}"),
            }
            let ended = app.db.write(|c| {
                Ok::<_, crate::error::Error>(
                    auth::sessions::prune(c)? + auth::reset::prune(c)? + crate::oidc::prune(c)?,
                )
            });
            if let Err(e) = ended {
                log::error!("session and sign-in pruning failed: {e}");
            }
            if let Err(e) = idempotency::prune(&app.db) {
                log::error!("idempotency key pruning failed: {e}");
            }
            if let Err(e) = crate::events::prune(&app.db, app.config.events.retention_days) {
                log::error!("event pruning failed: {e}");
            }
            match crate::media::sweep(&app.db, &app.media) {
                Ok(n) if n > 0 => log::info!("media retention released {n} file(s)"),
                Ok(_) => {}
                Err(e) => log::error!("media retention sweep failed: {e}"),
            }
        }
    }
    // A graceful stop seals what moved since the last seal.
    seal(app);
}
