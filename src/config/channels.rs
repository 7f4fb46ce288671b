//! `[channels]`: how tollgate watches and spreads load over its upstream
//! keys: the health probe, conversation affinity, and how often an
//! instance looks for catalog changes another instance made. Reads
//! settings only; `providers` acts on them.

use super::{ConfigError, bad};
use serde::{Deserialize, Serialize};

/// The affinity table's largest allowed size, in entries.
pub const AFFINITY_ENTRIES_LIMIT: usize = 1_000_000;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelsConfig {
    /// Seconds between test calls to keys that health disabled (a key that
    /// answers again is enabled); 0 = no probe.
    pub probe_interval_s: u64,
    /// Conversations remembered on the key that served them, at most; the
    /// oldest is forgotten first.
    pub affinity_entries_max: usize,
    /// How long a conversation stays on its key after its last call.
    pub affinity_ttl_s: u64,
    /// How often an instance checks whether another one changed channels,
    /// keys, models or prices (changes made through this instance apply at
    /// once).
    pub reload_interval_ms: u64,
}

impl Default for ChannelsConfig {
    fn default() -> Self {
        ChannelsConfig {
            probe_interval_s: 0,
            affinity_entries_max: 100_000,
            affinity_ttl_s: 3600,
            reload_interval_ms: 1000,
        }
    }
}

impl ChannelsConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.affinity_entries_max > AFFINITY_ENTRIES_LIMIT {
            return bad("channels.affinity_entries_max", &format!("at most {AFFINITY_ENTRIES_LIMIT}"));
        }
        if self.reload_interval_ms < 50 {
            return bad("channels.reload_interval_ms", "at least 50");
        }
        if self.probe_interval_s > 86_400 || self.affinity_ttl_s > 7 * 86_400 {
            return bad("channels", "probe_interval_s at most 86400, affinity_ttl_s at most 604800");
        }
        Ok(())
    }
}
