//! `App`: the shared state every request and background task sees: the
//! settings, the database and the signing keys. Built once at start.

use crate::auth::jwt::JwtKeys;
use crate::config::Config;
use crate::domain::{Credits, UserId};
use crate::ledger::SpendCaps;
use crate::storage::Db;

pub struct App {
    pub config: Config,
    pub db: Db,
    pub keys: JwtKeys,
}

impl App {
    /// The spend caps that apply to a user's next charge.
    pub fn spend_caps(&self, _user: UserId) -> SpendCaps {
        let l = &self.config.limits;
        SpendCaps {
            daily_cap: Credits::positive(l.daily_cap),
            day_utc_offset_minutes: l.day_utc_offset_minutes,
        }
    }

    pub fn hold_ttl_ms(&self) -> i64 {
        (self.config.ledger.hold_ttl_s as i64).saturating_mul(1000)
    }
}
