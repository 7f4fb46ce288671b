//! Settings: built-in defaults, then the TOML file, then `TOLLGATE_*`
//! environment variables, then command-line flags (each overrides the last).
//!
//! Unknown keys and wrong types are startup errors that name the key and where
//! it came from. This module only reads settings; it never acts on them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

mod auth;
mod channels;
mod database;
mod events;
mod jobs;
mod limits;
mod media;
mod payments;
mod providers;
mod records;
mod redis;
mod server;

pub use auth::{AuthConfig, OidcConfig, REDIRECT_URIS_MAX};
pub use channels::{AFFINITY_ENTRIES_LIMIT, ChannelsConfig};
pub use database::{DATABASE_INSTANCES_MAX, DatabaseConfig, Synchronous};
pub use events::{EventsConfig, WebhookConfig};
pub use jobs::JobsConfig;
pub use limits::LimitsConfig;
pub use media::MediaConfig;
pub use payments::{GRANT_PRIORITY_MAX, PackageConfig, PaymentsConfig, PlanConfig};
pub use providers::{
    ModelConfig, PRICE_GROUPS_MAX, PriceConfig, PriceTierConfig, PricingConfig, ProviderConfig, RouteConfig,
};
pub use records::{BackupConfig, LedgerConfig, LogsConfig};
pub use redis::{Fallback, RedisConfig};
pub use server::{CORS_ORIGINS_MAX, HTTP_WORKERS_DEFAULT_MIN, ServerConfig};

/// The config file read when `--config` is not given, if it exists.
pub const CONFIG_PATH_DEFAULT: &str = "./tollgate.toml";
/// Sections that `TOLLGATE_<SECTION>_<KEY>` may address.
const ENV_SECTIONS: &[&str] = &[
    "server", "database", "auth", "limits", "jobs", "logs", "ledger", "backup", "events", "media", "channels",
    "payments", "redis",
];
/// Variables with the prefix that are not `<SECTION>_<KEY>` overrides.
const ENV_RESERVED: &[&str] = &[
    "TOLLGATE_ADMIN_EMAIL",
    "TOLLGATE_ADMIN_PASSWORD",
    "TOLLGATE_CONFIG",
    "TOLLGATE_LOG",
    "TOLLGATE_SECRET_KEY",
    "TOLLGATE_SECRET_KEY_NEW",
];

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
    pub pricing: PricingConfig,
    pub channels: ChannelsConfig,
    pub payments: PaymentsConfig,
    pub redis: RedisConfig,
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

/// `invalid setting <key>: <why>`, the shape of every range error.
fn bad(key: &str, why: &str) -> Result<(), ConfigError> {
    Err(ConfigError(format!("invalid setting {key}: {why}")))
}

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

    /// Checks what types alone cannot, section by section: ranges and
    /// cross-references.
    fn check(&self) -> Result<(), ConfigError> {
        self.server.check()?;
        self.database.check()?;
        self.auth.check()?;
        for (name, p) in &self.oidc {
            p.check(name)?;
        }
        self.limits.check()?;
        self.jobs.check()?;
        self.ledger.check()?;
        self.backup.check()?;
        self.events.check()?;
        self.webhooks.iter().try_for_each(WebhookConfig::check)?;
        self.pricing.check()?;
        self.channels.check()?;
        self.payments.check()?;
        self.redis.check()?;
        self.media.check()
    }
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

    /// Web addresses are parsed as the file is read, so a bad one names its
    /// key and file; a list is held to its limit by the section's check.
    #[test]
    fn origins_and_urls_are_parsed_as_read_and_lists_held_at_their_limits() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "[server]\ncors_origins = [\"https://app.example.com/\"]\n");
        let err = Config::load_from(&Flags { config: Some(path), ..Flags::default() }, &[]).unwrap_err();
        assert!(err.0.contains("cors_origins") && err.0.contains("not an origin"), "{err}");
        let path =
            write(&dir, "[[webhooks]]\nurl = \"https://h.example.com\"\nsecret_env = \"S\"\nevents = [\"job.done\"]\n");
        let err = Config::load_from(&Flags { config: Some(path), ..Flags::default() }, &[]).unwrap_err();
        assert!(err.0.contains("not an event type"), "{err}");
        let many = |n: usize| -> Vec<crate::domain::Origin> {
            (0..n).map(|i| crate::domain::Origin::parse(&format!("https://app{i}.example.com")).unwrap()).collect()
        };
        let mut c = Config::default();
        c.server.cors_origins = many(CORS_ORIGINS_MAX);
        assert!(c.check().is_ok(), "exactly the limit");
        c.server.cors_origins = many(CORS_ORIGINS_MAX + 1);
        assert!(c.check().unwrap_err().0.contains("server.cors_origins"));
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
        assert_eq!(c.models[0].price.as_ref().map(|p| p.output_per_1m).unwrap_or_default(), 2000);
        assert_eq!(c.providers["local_vllm"].kind, "openai");
    }

    #[test]
    fn price_groups_are_bounded_at_their_limit() {
        let groups = |n: usize| PricingConfig { groups: (0..n).map(|i| (format!("g{i}"), 0.5)).collect() };
        assert!(groups(PRICE_GROUPS_MAX).check().is_ok());
        let e = groups(PRICE_GROUPS_MAX + 1).check().unwrap_err().to_string();
        assert!(e.contains("pricing.groups") && e.contains("at most 64"), "{e}");
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
