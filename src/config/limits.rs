//! `[limits]`: rates, spend caps, the day's boundary and the redemption
//! lockout. Reads settings only; `guard` acts on them.

use super::{ConfigError, bad};
use serde::{Deserialize, Serialize};

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
    /// A token-metered call whose output bound the caller cannot afford is
    /// sent with a lower bound that fits; it is refused (402) only when not
    /// even this many output tokens (per choice) fit beside its input.
    pub min_output_tokens: u32,
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
            min_output_tokens: 16,
        }
    }
}

impl LimitsConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.rpm == 0 || self.burst == 0 {
            return bad("limits.rpm / limits.burst", "must be at least 1");
        }
        if self.max_cost_per_request < 0 || self.daily_cap < 0 || self.global_daily_cap < 0 {
            return bad("limits", "caps must not be negative (0 means no cap)");
        }
        if self.day_utc_offset_minutes.abs() > 14 * 60 {
            return bad("limits.day_utc_offset_minutes", "must be within -840..=840");
        }
        if self.min_output_tokens == 0 {
            return bad("limits.min_output_tokens", "must be at least 1");
        }
        if self.redeem_failures_max == 0 || self.redeem_ip_failures_max == 0 || self.redeem_lockout_s == 0 {
            return bad("limits.redeem_*", "must be at least 1 (a redemption needs at least one try)");
        }
        Ok(())
    }
}
