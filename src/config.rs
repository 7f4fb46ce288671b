//! Settings: built-in defaults, then the TOML file, then `TOLLGATE_*`
//! environment variables, then command-line flags (each overrides the last).
//!
//! Unknown keys and wrong types are startup errors that name the key and where
//! it came from. This module only reads settings; it never acts on them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The config file read when `--config` is not given, if it exists.
pub const CONFIG_PATH_DEFAULT: &str = "./tollgate.toml";
/// Most instances one database's rates are divided among.
pub const DATABASE_INSTANCES_MAX: u32 = 64;
/// Sections that `TOLLGATE_<SECTION>_<KEY>` may address.
const ENV_SECTIONS: &[&str] =
    &["server", "database", "auth", "limits", "jobs", "logs", "ledger", "backup", "events", "media"];
/// Variables with the prefix that are not `<SECTION>_<KEY>` overrides.
const ENV_RESERVED: &[&str] = &["TOLLGATE_ADMIN_EMAIL", "TOLLGATE_ADMIN_PASSWORD", "TOLLGATE_CONFIG", "TOLLGATE_LOG"];

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub jobs: JobsConfig,
    pub logs: LogsConfig,
    pub ledger: LedgerConfig,
    pub backup: BackupConfig,
    pub events: EventsConfig,
    pub media: MediaConfig,
    pub webhooks: Vec<WebhookConfig>,
    /// Identity providers for "sign in with ...", by name (`[oidc.<name>]`).
    pub oidc: BTreeMap<String, OidcConfig>,
    pub providers: BTreeMap<String, ProviderConfig>,
    pub models: Vec<ModelConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub addr: String,
    pub db: PathBuf,
    /// Threads for everything that does not wait on a provider. 0 = the
    /// larger of 2 x cores and [`HTTP_WORKERS_DEFAULT_MIN`].
    pub http_workers: usize,
    /// Threads for provider-bound requests (chat, images).
    pub upstream_workers: usize,
    pub body_bytes_max: usize,
    /// The body limit of `POST /v1/chat/completions`, where images travel
    /// inline as base64 data URIs.
    pub chat_body_bytes_max: usize,
    /// Request bodies held in memory at once, all connections together;
    /// past it a body gets 503 `server_busy` (bounds memory under a flood).
    pub body_bytes_in_flight_max: usize,
    /// `full` (default: every acknowledged write survives power loss) or `normal`.
    pub sqlite_synchronous: String,
    /// Peers whose `X-Forwarded-For` is believed (a reverse proxy's address).
    /// Requests from anyone else are identified by their socket address.
    pub trusted_proxies: Vec<String>,
    /// Open client connections at once; past it a new one gets 503 and is
    /// closed. 0 = derived from the file-descriptor limit (see `http::edge`).
    pub connections_max: usize,
    /// Request line and headers together (431 past it).
    pub head_bytes_max: usize,
    /// The request URL (414 past it).
    pub url_bytes_max: usize,
    /// Header lines per request (431 past it).
    pub headers_max: usize,
    /// A request's head must arrive within this (408 past it).
    pub head_timeout_s: u64,
    /// A kept-alive connection with no new request is closed after this.
    pub idle_timeout_s: u64,
    /// Every body gets this long, plus one second per `body_bytes_per_s_min`
    /// bytes received (408 past it).
    pub body_timeout_min_s: u64,
    pub body_bytes_per_s_min: u64,
    /// A write to a client that makes no progress for this long fails and
    /// the connection is closed.
    pub write_timeout_s: u64,
    /// `/readyz` answers 503 `storage_full` when the database's file system
    /// has less free space than this.
    pub disk_free_bytes_min: u64,
    /// Browser origins (`https://app.example.com`, exact) allowed to call
    /// the API cross-origin. Empty = no CORS headers at all.
    pub cors_origins: Vec<String>,
    /// How long a browser may cache a preflight's answer.
    pub cors_max_age_s: u64,
    /// The URL this service is reached at from browsers (`https://api.example.com`),
    /// for the OIDC callback. Empty = `http://<addr>`.
    pub public_url: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: "127.0.0.1:8080".into(),
            db: PathBuf::from("./tollgate.db"),
            http_workers: 0,
            upstream_workers: 64,
            body_bytes_max: 1_048_576,
            chat_body_bytes_max: 20 * 1_048_576,
            body_bytes_in_flight_max: 256 * 1_048_576,
            sqlite_synchronous: "full".into(),
            trusted_proxies: Vec::new(),
            connections_max: 0,
            head_bytes_max: 16 * 1024,
            url_bytes_max: 8 * 1024,
            headers_max: 100,
            head_timeout_s: 10,
            idle_timeout_s: 30,
            body_timeout_min_s: 10,
            body_bytes_per_s_min: 16 * 1024,
            write_timeout_s: 30,
            disk_free_bytes_min: 64 * 1_048_576,
            cors_origins: Vec::new(),
            cors_max_age_s: 600,
            public_url: String::new(),
        }
    }
}

/// Fewest HTTP workers by default. A worker that writes waits for the
/// fsync, not the CPU, and the writer can only commit together the requests
/// that wait on it: with 2 x cores (4 here) a group held at most 4 consumes.
/// Measured, 64 connections: 4 -> 6.9k req/s, 16 -> 10.2k, 32 -> 11.2k
/// (p99 10.7 ms), 64 -> 10.5k (p99 14.8 ms).
pub const HTTP_WORKERS_DEFAULT_MIN: usize = 32;

impl JobsConfig {
    /// Streams allowed at once: `streams_max`, but never more than half the
    /// HTTP workers (the rest keep answering everything else).
    pub fn streams_max_effective(&self, server: &ServerConfig) -> usize {
        self.streams_max.min(server.http_workers_effective() / 2).max(1)
    }
}

impl ServerConfig {
    pub fn http_workers_effective(&self) -> usize {
        if self.http_workers > 0 {
            return self.http_workers;
        }
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        (cores * 2).max(HTTP_WORKERS_DEFAULT_MIN)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The access token's life (short: a revoked session's tokens stop at
    /// once anyway, and a leaked one is worth little).
    pub token_ttl_s: u64,
    /// A refresh token's life; each refresh issues a new one, so a session
    /// used at least this often lasts.
    pub refresh_token_ttl_s: u64,
    /// Sessions one user may hold; a new login past it ends the oldest.
    pub sessions_per_user_max: u32,
    /// How long a password reset token stays usable.
    pub password_reset_ttl_s: u64,
    /// Reset tokens issued per account per hour; further requests still
    /// answer 202 but issue nothing.
    pub password_resets_per_account_per_hour: u32,
    pub signup_enabled: bool,
    pub signup_bonus_credits: i64,
    /// Days until the signup bonus grant expires; 0 = never.
    pub signup_bonus_expires_days: u32,
    /// Login and signup attempts per client IP per minute.
    pub login_rpm_per_ip: u32,
    /// Failed logins (per IP, and per email) before a lockout.
    pub login_failures_max: u32,
    /// How long a lockout lasts, and the window failures are counted in.
    pub login_lockout_s: u64,
    /// Failed logins from one IP (any emails) before that IP is locked out.
    pub login_ip_failures_max: u32,
    /// Failed logins for one email (all IPs together) before attempts for it
    /// from IPs that already failed on it are slowed down...
    pub login_email_failures_free: u32,
    /// ... by a delay that doubles per further failure, up to this.
    pub login_email_delay_max_s: u64,
    /// Accounts one client IP may create per hour.
    pub signups_per_ip_per_hour: u32,
    /// Password hashes computed at once (argon2 takes ~19 MiB each).
    /// 0 = the number of cores.
    pub password_hashes_max: usize,
    /// How long a login or signup waits for a free hashing slot before it
    /// gets 503 `server_busy`.
    pub password_hash_wait_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            token_ttl_s: 900,
            refresh_token_ttl_s: 30 * 86_400,
            sessions_per_user_max: 100,
            password_reset_ttl_s: 1_800,
            password_resets_per_account_per_hour: 5,
            signup_enabled: false,
            signup_bonus_credits: 0,
            signup_bonus_expires_days: 0,
            login_rpm_per_ip: 60,
            login_failures_max: 10,
            login_lockout_s: 900,
            login_ip_failures_max: 50,
            login_email_failures_free: 10,
            login_email_delay_max_s: 60,
            signups_per_ip_per_hour: 10,
            password_hashes_max: 0,
            password_hash_wait_ms: 1_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub rpm: u32,
    pub burst: u32,
    pub max_cost_per_request: i64,
    pub daily_cap: i64,
    pub global_daily_cap: i64,
    pub day_utc_offset_minutes: i32,
    /// Failed redemption-code tries (unknown codes) per user, and per
    /// client IP, within `redeem_lockout_s` before further tries are refused.
    pub redeem_failures_max: u32,
    pub redeem_ip_failures_max: u32,
    pub redeem_lockout_s: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            rpm: 60,
            burst: 60,
            max_cost_per_request: 10_000,
            daily_cap: 0,
            global_daily_cap: 0,
            day_utc_offset_minutes: 0,
            redeem_failures_max: 10,
            redeem_ip_failures_max: 30,
            redeem_lockout_s: 3600,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    pub workers: usize,
    pub attempts_max: u32,
    /// Queued jobs (all users) before new ones get 429 `queue_full`.
    pub queue_max: usize,
    /// Queued jobs of one user before their next gets 429 `too_many_jobs`,
    /// so that one user cannot fill the queue for everyone.
    pub queued_per_user_max: usize,
    /// Jobs of one user processing at once, across every worker (and every
    /// instance); their other jobs wait while other users' jobs run.
    pub processing_per_user_max: usize,
    /// First retry delay; doubles per attempt, with jitter.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Provider task polling interval bounds (grows from min to max).
    pub poll_interval_min_ms: u64,
    pub poll_interval_max_ms: u64,
    /// An asynchronous provider task that takes longer is canceled and failed.
    pub task_timeout_s: u64,
    /// How long a worker owns a claimed job without renewing it.
    pub lease_s: u64,
    /// Open `GET /v1/jobs/{id}/events` streams, all users together, and per
    /// user (429 `too_many_streams` past either). Each holds an HTTP worker
    /// while it is open, so at most half the HTTP workers are given to
    /// streams, whatever this says.
    pub streams_max: usize,
    pub streams_per_user_max: usize,
    /// A stream ends after this long with a reconnect hint; the client
    /// resumes with `Last-Event-ID` and misses nothing.
    pub stream_duration_s_max: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            workers: 4,
            attempts_max: 3,
            queue_max: 10_000,
            queued_per_user_max: 100,
            processing_per_user_max: 2,
            backoff_base_ms: 2_000,
            backoff_max_ms: 300_000,
            poll_interval_min_ms: 1_000,
            poll_interval_max_ms: 10_000,
            task_timeout_s: 1_800,
            lease_s: 300,
            streams_max: 16,
            streams_per_user_max: 4,
            stream_duration_s_max: 300,
        }
    }
}

/// Where the data lives: the SQLite file `server.db` unless `url` names a
/// PostgreSQL database.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/dbname` (or `postgresql://`);
    /// empty = SQLite. Several instances may share one database.
    pub url: String,
    /// How many instances serve this database: each enforces that share of
    /// every request rate (`limits.rpm`, keys' rpm, the login rate per IP).
    /// PostgreSQL only; 1 to 64.
    pub instances: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig { url: String::new(), instances: 1 }
    }
}

impl DatabaseConfig {
    /// The PostgreSQL URL, if one is configured.
    pub fn postgres_url(&self) -> Option<&str> {
        Some(self.url.trim()).filter(|u| !u.is_empty())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// Logs older than this are pruned; 0 keeps them forever.
    pub retention_days: u32,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig { retention_days: 90 }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// How long a hold lives without being settled, released or extended.
    pub hold_ttl_s: u64,
    /// How often expired holds are released.
    pub sweep_interval_s: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig { hold_ttl_s: 900, sweep_interval_s: 30 }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// Seconds between rotating backups taken by `serve`; 0 = off.
    pub every_s: u64,
    pub dir: PathBuf,
    /// Backups kept; older ones are deleted.
    pub keep: usize,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig { every_s: 0, dir: PathBuf::from("./backups"), keep: 7 }
    }
}

/// Events out: the outbox, webhook delivery and its retry schedule.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// `credits.low` is sent when a charge or hold takes a user's available
    /// credits from at least this to below it; 0 = never.
    pub credits_low_threshold: i64,
    /// Threads that send webhook requests.
    pub delivery_workers: usize,
    /// Requests in flight to one endpoint at once.
    pub endpoint_concurrency_max: usize,
    /// Whole time of one attempt (connect, send, answer).
    pub attempt_timeout_ms: u64,
    /// Attempts per delivery before it is marked failed. With the default
    /// backoff, 22 attempts span more than 24 hours.
    pub attempts_max: u32,
    /// Delay after the first failure; doubles per attempt up to the max,
    /// plus up to half again of jitter.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Webhook URLs that resolve to loopback, private, link-local or other
    /// non-public addresses are refused unless this is true.
    pub allow_private_urls: bool,
    /// Events whose deliveries have all finished are pruned after this many
    /// days; 0 keeps them forever.
    pub retention_days: u32,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            credits_low_threshold: 0,
            delivery_workers: 4,
            endpoint_concurrency_max: 4,
            attempt_timeout_ms: 10_000,
            attempts_max: 22,
            backoff_base_ms: 10_000,
            backoff_max_ms: 7_200_000,
            allow_private_urls: false,
            retention_days: 30,
        }
    }
}

/// A webhook endpoint from the config file (`[[webhooks]]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// The environment variable holding the signing secret (`whsec_...`).
    pub secret_env: String,
    /// Event types sent to it; empty = every type.
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default)]
    pub description: String,
}

/// An OpenID Connect identity provider (`[oidc.<name>]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer URL; discovery reads `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    /// The environment variable holding the client secret (never the file).
    pub client_secret_env: String,
    #[serde(default = "oidc_scopes_default")]
    pub scopes: Vec<String>,
    /// E-mail domains allowed to sign in; empty = any.
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// Where the frontend may ask to be sent back to (exact URLs).
    pub redirect_uris: Vec<String>,
    /// Link an existing account to a new identity of this provider when the
    /// provider asserts the account's verified e-mail. Off by default: a
    /// provider that lets users claim an address would hand out accounts.
    /// Never links an administrator or an account with another identity.
    #[serde(default)]
    pub link_existing_by_email: bool,
}

fn oidc_scopes_default() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}

/// The media store: job outputs downloaded from providers and kept.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Where kept files live; empty = beside the database (`<db>.media`).
    pub dir: PathBuf,
    /// Download job outputs into the store (false = pass provider URLs on).
    pub keep_outputs: bool,
    /// Largest single output kept; a larger one stays at the provider.
    pub file_bytes_max: u64,
    /// All kept files together (live rows); 0 = no limit.
    pub store_bytes_max: u64,
    /// Download attempts per output, with backoff, before the job completes
    /// with the provider's URL (`kept: false`).
    pub download_attempts_max: u32,
    pub download_backoff_base_ms: u64,
    /// Whole time of one download attempt.
    pub download_timeout_s: u64,
    /// Kept files are deleted this many days after they were kept; 0 = never.
    pub retention_days: u32,
    /// Lifetime of signed URLs (`?expires=&signature=`).
    pub signed_url_ttl_s: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            dir: PathBuf::new(),
            keep_outputs: true,
            file_bytes_max: 512 * 1_048_576,
            store_bytes_max: 0,
            download_attempts_max: 5,
            download_backoff_base_ms: 2_000,
            download_timeout_s: 300,
            retention_days: 0,
            signed_url_ttl_s: 3_600,
        }
    }
}

impl MediaConfig {
    /// The store's folder for the database at `db`.
    pub fn dir_for(&self, db: &Path) -> PathBuf {
        if self.dir.as_os_str().is_empty() {
            let mut p = db.as_os_str().to_owned();
            p.push(".media");
            PathBuf::from(p)
        } else {
            self.dir.clone()
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: String,
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_read_timeout_ms")]
    pub read_timeout_ms: u64,
    /// Consecutive failures that open a route's circuit.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open circuit skips the route.
    #[serde(default = "default_breaker_cool_down_ms")]
    pub breaker_cool_down_ms: u64,
}

fn default_breaker_failures() -> u32 {
    3
}
fn default_breaker_cool_down_ms() -> u64 {
    30_000
}

fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_read_timeout_ms() -> u64 {
    120_000
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub name: String,
    pub kind: String,
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub price: PriceConfig,
    /// Chat: output tokens when a request names no `max_tokens`, and the most
    /// it may name (default 4096).
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    /// Chat: input tokens one image part may cost, at most (the cost bound
    /// counts this per image). Default 1445: OpenAI's tile formula at high
    /// detail, 85 + 170 x 8 tiles for the largest image it accepts.
    #[serde(default)]
    pub image_input_tokens_max: Option<u32>,
    /// Input tokens the model can take at most (its context window): the
    /// input bound of a Responses call that continues stored context
    /// (`previous_response_id`, `conversation`), which tollgate cannot see.
    #[serde(default)]
    pub context_tokens_max: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub provider: String,
    pub model: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PriceConfig {
    pub input_per_1m: i64,
    pub output_per_1m: i64,
    pub per_image: i64,
    pub per_video_second: i64,
}

/// Values from command-line flags, the top of the precedence order.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub config: Option<PathBuf>,
    pub addr: Option<String>,
    pub db: Option<PathBuf>,
}

#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Loads settings in precedence order from the real environment.
    pub fn load(flags: &Flags) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with("TOLLGATE_")).collect();
        Config::load_from(flags, &env)
    }

    /// Loads settings with an explicit environment (tests pass their own).
    pub fn load_from(flags: &Flags, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let explicit = flags
            .config
            .clone()
            .or_else(|| env.iter().find(|(k, _)| k == "TOLLGATE_CONFIG").map(|(_, v)| PathBuf::from(v)));
        let mut table = match &explicit {
            Some(path) => read_file(path)?,
            None if Path::new(CONFIG_PATH_DEFAULT).exists() => read_file(Path::new(CONFIG_PATH_DEFAULT))?,
            None => toml::Table::new(),
        };
        apply_env(&mut table, env)?;
        let mut config: Config = toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| {
            ConfigError(format!("invalid setting from a TOLLGATE_* environment variable: {}", e.message()))
        })?;
        if let Some(addr) = &flags.addr {
            config.server.addr = addr.clone();
        }
        if let Some(db) = &flags.db {
            config.server.db = db.clone();
        }
        config.check()?;
        Ok(config)
    }

    /// Checks what types alone cannot: ranges and cross-references.
    fn check(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("invalid setting {key}: {why}")));
        if self.server.body_bytes_max < 1024 || self.server.body_bytes_max > 64 * 1_048_576 {
            return bad("server.body_bytes_max", "must be between 1024 and 67108864 bytes");
        }
        if self.server.chat_body_bytes_max < self.server.body_bytes_max
            || self.server.chat_body_bytes_max > 256 * 1_048_576
        {
            return bad("server.chat_body_bytes_max", "must be at least server.body_bytes_max and at most 268435456");
        }
        if self.server.body_bytes_in_flight_max < self.server.chat_body_bytes_max {
            return bad("server.body_bytes_in_flight_max", "must be at least server.chat_body_bytes_max");
        }
        if self.server.upstream_workers == 0 || self.server.upstream_workers > 1024 {
            return bad("server.upstream_workers", "must be between 1 and 1024");
        }
        if self.server.http_workers > 1024 {
            return bad("server.http_workers", "must be at most 1024 (0 means the default)");
        }
        if let Some(url) = self.database.postgres_url()
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return bad(
                "database.url",
                "must start with postgres:// or postgresql:// (empty = the SQLite file server.db)",
            );
        }
        if !(1..=DATABASE_INSTANCES_MAX).contains(&self.database.instances) {
            return bad("database.instances", &format!("must be 1 to {DATABASE_INSTANCES_MAX}"));
        }
        if self.database.instances > 1 && self.database.postgres_url().is_none() {
            return bad("database.instances", "only several instances on PostgreSQL (database.url) share a database");
        }
        if crate::storage::Synchronous::parse(&self.server.sqlite_synchronous).is_none() {
            return bad("server.sqlite_synchronous", "must be \"full\" or \"normal\"");
        }
        if let Some(bad_ip) = self.server.trusted_proxies.iter().find(|p| p.parse::<std::net::IpAddr>().is_err()) {
            return Err(ConfigError(format!(
                "invalid setting server.trusted_proxies: {bad_ip:?} is not an IP address"
            )));
        }
        let srv = &self.server;
        if srv.head_bytes_max < 1024 || srv.head_bytes_max > 1_048_576 {
            return bad("server.head_bytes_max", "must be between 1024 and 1048576 bytes");
        }
        if srv.url_bytes_max < 256 || srv.url_bytes_max > srv.head_bytes_max {
            return bad("server.url_bytes_max", "must be at least 256 bytes and at most server.head_bytes_max");
        }
        if srv.headers_max == 0 || srv.headers_max > 1000 {
            return bad("server.headers_max", "must be between 1 and 1000");
        }
        if srv.connections_max > 1_000_000 {
            return bad("server.connections_max", "must be at most 1000000 (0 derives it from the fd limit)");
        }
        for (key, v) in [
            ("server.head_timeout_s", srv.head_timeout_s),
            ("server.idle_timeout_s", srv.idle_timeout_s),
            ("server.body_timeout_min_s", srv.body_timeout_min_s),
            ("server.write_timeout_s", srv.write_timeout_s),
        ] {
            if v == 0 || v > 3600 {
                return bad(key, "must be between 1 and 3600 seconds");
            }
        }
        if srv.body_bytes_per_s_min == 0 {
            return bad("server.body_bytes_per_s_min", "must be at least 1 byte per second");
        }
        let a = &self.auth;
        if a.login_ip_failures_max == 0 || a.signups_per_ip_per_hour == 0 || a.login_email_delay_max_s == 0 {
            return bad(
                "auth.login_ip_failures_max / signups_per_ip_per_hour / login_email_delay_max_s",
                "must be at least 1",
            );
        }
        if a.password_hashes_max > 256 || a.password_hash_wait_ms > 60_000 {
            return bad("auth.password_hashes_max / password_hash_wait_ms", "at most 256 hashes and 60000 ms");
        }
        if self.auth.token_ttl_s == 0 || self.auth.token_ttl_s > 30 * 86_400 {
            return bad("auth.token_ttl_s", "must be between 1 and 2592000 seconds");
        }
        if a.refresh_token_ttl_s < a.token_ttl_s || a.refresh_token_ttl_s > 365 * 86_400 {
            return bad("auth.refresh_token_ttl_s", "must be at least auth.token_ttl_s and at most 31536000 seconds");
        }
        if a.sessions_per_user_max == 0 || a.sessions_per_user_max > 10_000 {
            return bad("auth.sessions_per_user_max", "must be between 1 and 10000");
        }
        if a.password_reset_ttl_s < 60 || a.password_reset_ttl_s > 86_400 {
            return bad("auth.password_reset_ttl_s", "must be between 60 and 86400 seconds");
        }
        if a.password_resets_per_account_per_hour == 0 {
            return bad("auth.password_resets_per_account_per_hour", "must be at least 1");
        }
        crate::http::cors::check_origins(&self.server.cors_origins)
            .map_err(|why| ConfigError(format!("invalid setting server.cors_origins: {why}")))?;
        if !self.server.public_url.is_empty() && url_shape(&self.server.public_url, false).is_err() {
            return bad("server.public_url", "must be an http(s) URL such as https://api.example.com");
        }
        for (name, p) in &self.oidc {
            crate::oidc::check_config(name, p)
                .map_err(|why| ConfigError(format!("invalid setting oidc.{name}: {why}")))?;
        }
        if self.auth.signup_bonus_credits < 0 {
            return bad("auth.signup_bonus_credits", "must not be negative");
        }
        if self.auth.login_rpm_per_ip == 0 || self.auth.login_failures_max == 0 || self.auth.login_lockout_s == 0 {
            return bad("auth.login_rpm_per_ip / login_failures_max / login_lockout_s", "must be at least 1");
        }
        if self.limits.rpm == 0 || self.limits.burst == 0 {
            return bad("limits.rpm / limits.burst", "must be at least 1");
        }
        if self.limits.max_cost_per_request < 0 || self.limits.daily_cap < 0 || self.limits.global_daily_cap < 0 {
            return bad("limits", "caps must not be negative (0 means no cap)");
        }
        if self.limits.day_utc_offset_minutes.abs() > 14 * 60 {
            return bad("limits.day_utc_offset_minutes", "must be within -840..=840");
        }
        if self.limits.redeem_failures_max == 0
            || self.limits.redeem_ip_failures_max == 0
            || self.limits.redeem_lockout_s == 0
        {
            return bad("limits.redeem_*", "must be at least 1 (a redemption needs at least one try)");
        }
        if self.backup.every_s > 0 && (self.backup.every_s < 60 || self.backup.keep == 0) {
            return bad("backup.every_s / backup.keep", "backups run at most once a minute and keep at least 1");
        }
        let j = &self.jobs;
        if j.workers > 256 || j.attempts_max == 0 || j.attempts_max > 100 || j.queue_max == 0 {
            return bad("jobs", "workers must be at most 256, attempts_max from 1 to 100, queue_max at least 1");
        }
        if j.queued_per_user_max == 0 || j.processing_per_user_max == 0 {
            return bad(
                "jobs.queued_per_user_max / jobs.processing_per_user_max",
                "must be at least 1 (a user needs room for one job)",
            );
        }
        if j.backoff_base_ms == 0 || j.poll_interval_min_ms == 0 || j.poll_interval_max_ms < j.poll_interval_min_ms {
            return bad(
                "jobs",
                "backoff_base_ms and poll_interval_min_ms must be positive, poll_interval_max_ms >= poll_interval_min_ms",
            );
        }
        if j.task_timeout_s == 0 || j.lease_s < 5 {
            return bad("jobs.task_timeout_s / jobs.lease_s", "task_timeout_s must be positive and lease_s at least 5");
        }
        if self.ledger.hold_ttl_s == 0 || self.ledger.sweep_interval_s == 0 {
            return bad("ledger.hold_ttl_s / ledger.sweep_interval_s", "must be at least 1 second");
        }
        if j.streams_per_user_max == 0 || j.streams_max < j.streams_per_user_max {
            return bad(
                "jobs.streams_max / streams_per_user_max",
                "at least 1 each, and the total at least the per-user",
            );
        }
        if j.stream_duration_s_max == 0 || j.stream_duration_s_max > 86_400 {
            return bad("jobs.stream_duration_s_max", "must be between 1 and 86400 seconds");
        }
        let e = &self.events;
        if e.credits_low_threshold < 0 {
            return bad("events.credits_low_threshold", "must not be negative (0 turns credits.low off)");
        }
        if e.delivery_workers == 0 || e.delivery_workers > 64 || e.endpoint_concurrency_max == 0 {
            return bad(
                "events.delivery_workers / endpoint_concurrency_max",
                "delivery_workers 1..=64, concurrency at least 1",
            );
        }
        if e.attempts_max == 0 || e.attempts_max > 100 || e.backoff_base_ms == 0 || e.backoff_max_ms < e.backoff_base_ms
        {
            return bad(
                "events.attempts_max / backoff_*",
                "attempts 1..=100, backoff_base_ms positive and at most backoff_max_ms",
            );
        }
        if e.attempt_timeout_ms < 100 || e.attempt_timeout_ms > 300_000 {
            return bad("events.attempt_timeout_ms", "must be between 100 and 300000");
        }
        for w in &self.webhooks {
            if let Err(why) = crate::events::endpoints::check_types(&w.events) {
                return Err(ConfigError(format!("invalid webhook {}: {why}", w.url)));
            }
            if w.secret_env.is_empty() {
                return Err(ConfigError(format!("invalid webhook {}: secret_env must name a variable", w.url)));
            }
        }
        let m = &self.media;
        if m.file_bytes_max == 0 || m.download_attempts_max == 0 || m.download_attempts_max > 20 {
            return bad("media.file_bytes_max / download_attempts_max", "file_bytes_max positive, attempts 1..=20");
        }
        if m.download_timeout_s == 0 || m.signed_url_ttl_s == 0 || m.signed_url_ttl_s > 30 * 86_400 {
            return bad("media.download_timeout_s / signed_url_ttl_s", "positive; signed URLs live at most 30 days");
        }
        Ok(())
    }
}

/// An absolute http(s) URL; `with_path` allows a path (and query).
pub fn url_shape(raw: &str, with_path: bool) -> Result<url::Url, String> {
    let u = url::Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host().is_none() || !u.username().is_empty() {
        return Err(format!("{raw:?} must be an http(s) URL with a host and no user"));
    }
    if u.fragment().is_some() || (!with_path && (u.path() != "/" || u.query().is_some())) {
        return Err(format!("{raw:?} must not have a {}", if with_path { "fragment" } else { "path" }));
    }
    Ok(u)
}

fn read_file(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
    // Parse into the typed struct first: its errors carry the line and key.
    toml::from_str::<Config>(&text).map_err(|e| ConfigError(format!("in config file {}: {e}", path.display())))?;
    toml::from_str::<toml::Table>(&text).map_err(|e| ConfigError(format!("in config file {}: {e}", path.display())))
}

fn apply_env(table: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    for (name, raw) in env {
        if !name.starts_with("TOLLGATE_") || ENV_RESERVED.contains(&name.as_str()) {
            continue;
        }
        let rest = name["TOLLGATE_".len()..].to_ascii_lowercase();
        let Some((section, key)) =
            ENV_SECTIONS.iter().find_map(|s| rest.strip_prefix(s).and_then(|k| k.strip_prefix('_')).map(|k| (*s, k)))
        else {
            return Err(ConfigError(format!(
                "unknown environment variable {name}: expected TOLLGATE_<SECTION>_<KEY> with SECTION one of {}",
                ENV_SECTIONS.join(", ")
            )));
        };
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let entry = table.entry(section).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(section_table) = entry.as_table_mut() else {
            return Err(ConfigError(format!("config section [{section}] must be a table")));
        };
        if !key_known(section, key) {
            return Err(ConfigError(format!("unknown environment variable {name}: [{section}] has no key `{key}`")));
        }
        section_table.insert(key.to_owned(), value);
        // Check as we go, so a wrong type names the variable that caused it.
        if let Err(e) = toml::Value::Table(table.clone()).try_into::<Config>() {
            return Err(ConfigError(format!(
                "invalid value {raw:?} for {section}.{key} in environment variable {name}: {}",
                e.message()
            )));
        }
    }
    Ok(())
}

fn key_known(section: &str, key: &str) -> bool {
    let defaults = toml::Value::try_from(Config::default()).ok();
    defaults.as_ref().and_then(|v| v.get(section)).and_then(|s| s.as_table()).is_some_and(|t| t.contains_key(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let p = dir.path().join("tollgate.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn the_database_url_and_instances_are_checked_at_their_limits() {
        let load = |pairs: &[(&str, &str)]| Config::load_from(&Flags::default(), &env(pairs));
        let url = ("TOLLGATE_DATABASE_URL", "postgres://tollgate@127.0.0.1:5432/tollgate");
        let c = load(&[url, ("TOLLGATE_DATABASE_INSTANCES", "64")]).unwrap();
        assert_eq!((c.database.postgres_url(), c.database.instances), (Some(url.1), 64));
        let err = load(&[url, ("TOLLGATE_DATABASE_INSTANCES", "65")]).unwrap_err();
        assert!(err.0.contains("database.instances"), "{err}");
        let err = load(&[url, ("TOLLGATE_DATABASE_INSTANCES", "0")]).unwrap_err();
        assert!(err.0.contains("database.instances"), "{err}");
        // Several instances need a shared database.
        let err = load(&[("TOLLGATE_DATABASE_INSTANCES", "2")]).unwrap_err();
        assert!(err.0.contains("database.instances"), "{err}");
        let err = load(&[("TOLLGATE_DATABASE_URL", "mysql://x")]).unwrap_err();
        assert!(err.0.contains("database.url"), "{err}");
        assert_eq!(load(&[]).unwrap().database.postgres_url(), None);
    }

    #[test]
    fn precedence_is_flags_then_env_then_file_then_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "[server]\naddr = \"127.0.0.1:1\"\n[limits]\nrpm = 5\nburst = 7\n");
        let flags = Flags { config: Some(path), addr: Some("127.0.0.1:3".into()), db: None };
        let c =
            Config::load_from(&flags, &env(&[("TOLLGATE_SERVER_ADDR", "127.0.0.1:2"), ("TOLLGATE_LIMITS_RPM", "120")]))
                .unwrap();
        assert_eq!(c.server.addr, "127.0.0.1:3");
        assert_eq!(c.limits.rpm, 120);
        assert_eq!(c.limits.burst, 7);
        assert_eq!(c.limits.max_cost_per_request, 10_000);
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "[limits]\nrpmm = 5\n");
        let err = Config::load_from(&Flags { config: Some(path.clone()), ..Flags::default() }, &[]).unwrap_err();
        assert!(err.0.contains("rpmm") && err.0.contains("tollgate.toml"), "{err}");
        let path = write(&dir, "[limits]\nrpm = \"fast\"\n");
        let err = Config::load_from(&Flags { config: Some(path), ..Flags::default() }, &[]).unwrap_err();
        assert!(err.0.contains("rpm") && err.0.contains("tollgate.toml"), "{err}");
        let err = Config::load_from(&Flags::default(), &env(&[("TOLLGATE_LIMITS_RPMM", "1")])).unwrap_err();
        assert!(err.0.contains("TOLLGATE_LIMITS_RPMM"), "{err}");
        let err = Config::load_from(&Flags::default(), &env(&[("TOLLGATE_LIMITS_RPM", "fast")])).unwrap_err();
        assert!(err.0.contains("rpm"), "{err}");
    }

    #[test]
    fn the_contract_example_file_parses() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"
[server]
addr = "127.0.0.1:8080"
db = "./tollgate.db"
http_workers = 8
upstream_workers = 64
body_bytes_max = 1048576
[auth]
token_ttl_s = 3600
signup_enabled = false
signup_bonus_credits = 0
signup_bonus_expires_days = 0
[limits]
rpm = 60
burst = 60
max_cost_per_request = 10000
daily_cap = 0
global_daily_cap = 0
day_utc_offset_minutes = 0
[jobs]
workers = 4
attempts_max = 3
queue_max = 10000
[providers.local_vllm]
kind = "openai"
base_url = "http://127.0.0.1:8000/v1"
api_key_env = "VLLM_API_KEY"
connect_timeout_ms = 5000
read_timeout_ms = 120000
[[models]]
name = "qwen-plus"
kind = "chat"
routes = [ { provider = "local_vllm", model = "Qwen/Qwen2.5-7B-Instruct" } ]
price = { input_per_1m = 800, output_per_1m = 2000 }
"#;
        let path = write(&dir, text);
        let c = Config::load_from(&Flags { config: Some(path), ..Flags::default() }, &[]).unwrap();
        assert_eq!(c.models[0].price.output_per_1m, 2000);
        assert_eq!(c.providers["local_vllm"].kind, "openai");
    }

    #[test]
    fn the_shipped_example_file_parses_and_holds_every_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tollgate.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let example: toml::Table = toml::from_str(&text).unwrap();
        let Ok(toml::Value::Table(defaults)) = toml::Value::try_from(Config::default()) else { panic!("defaults") };
        for (section, values) in &defaults {
            let Some(values) = values.as_table() else { continue };
            for (key, value) in values {
                assert_eq!(example.get(section).and_then(|s| s.get(key)), Some(value), "[{section}] {key}");
            }
        }
        for (section, values) in &example {
            for key in values.as_table().unwrap().keys() {
                assert!(defaults[section].get(key).is_some(), "[{section}] {key} is not a setting");
            }
        }
        Config::load_from(&Flags { config: Some(path), ..Flags::default() }, &[]).unwrap();
    }
}
