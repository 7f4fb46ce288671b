//! `[logs]`, `[ledger]` and `[backup]`: how long records are kept, how
//! long a hold lives, and how often the file is backed up.

use super::{ConfigError, bad};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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
    /// How often the users' chain heads that moved are sealed (and once
    /// more at a graceful stop).
    pub seal_interval_s: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig { hold_ttl_s: 900, sweep_interval_s: 30, seal_interval_s: 60 }
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

impl LedgerConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.hold_ttl_s == 0 || self.sweep_interval_s == 0 || self.seal_interval_s == 0 {
            return bad(
                "ledger.hold_ttl_s / ledger.sweep_interval_s / ledger.seal_interval_s",
                "must be at least 1 second",
            );
        }
        Ok(())
    }
}

impl BackupConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.every_s > 0 && (self.every_s < 60 || self.keep == 0) {
            return bad("backup.every_s / backup.keep", "backups run at most once a minute and keep at least 1");
        }
        Ok(())
    }
}
