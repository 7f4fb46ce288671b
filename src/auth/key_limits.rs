//! An API key's own limits: an expiry, a model allow-list, a rate, and a
//! lifetime and daily spend limit.
//!
//! Authentication enforces the first three ([`KeyTerms`], cached with the
//! credential): an expired key is 401, a model outside the list 403, the
//! rate is the key's token bucket. The spend limits are money, so the ledger
//! enforces them inside the charging transaction (`ledger::check_spend`),
//! from the key's row, never from a cache. This module only parses and
//! checks; it never writes.

use crate::domain::{ApiKeyId, CREDITS_AMOUNT_MAX, Credits, Timestamp};
use crate::error::{Error, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Model names one key may list.
pub const KEY_MODELS_MAX: usize = 100;
/// Highest per-key rate, requests per minute.
pub const KEY_RPM_MAX: u32 = 1_000_000;

/// What authentication enforces for a key, cached with the credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTerms {
    pub id: ApiKeyId,
    pub expires_at: Option<Timestamp>,
    /// `None` = every model.
    pub models: Option<Vec<String>>,
    pub rpm: Option<u32>,
}

impl KeyTerms {
    pub fn check_model(&self, model: &str) -> Result<()> {
        match &self.models {
            Some(list) if !list.iter().any(|m| m == model) => Err(Error::ModelNotAllowed(format!(
                "This API key may not use the model {model:?}; it may use: {}.",
                list.join(", ")
            ))),
            _ => Ok(()),
        }
    }
}

/// A key's limits as stored and shown (`None` = no limit).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct KeyLimits {
    pub expires_at: Option<Timestamp>,
    pub models: Option<Vec<String>>,
    pub spend_limit: Option<Credits>,
    pub daily_spend_limit: Option<Credits>,
    pub rpm: Option<u32>,
}

/// The limit fields of `POST /v1/api-keys`, `PATCH /v1/api-keys/{id}` and
/// `POST /v1/admin/users/{id}/api-keys`; `expires_at` is RFC 3339.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyLimitsBody {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub spend_limit: Option<i64>,
    #[serde(default)]
    pub daily_spend_limit: Option<i64>,
    #[serde(default)]
    pub rpm: Option<i64>,
}

fn credits(n: Option<i64>, param: &str) -> Result<Option<Credits>> {
    match n {
        None => Ok(None),
        Some(n) if (0..=CREDITS_AMOUNT_MAX).contains(&n) => Ok(Some(Credits(n))),
        Some(_) => Err(Error::invalid(
            param,
            format!("{param} must be a whole number of credits from 0 to {CREDITS_AMOUNT_MAX}"),
        )),
    }
}

impl KeyLimitsBody {
    /// Applies the fields present in the request (`raw`) to `limits`: a
    /// field sent as null clears that limit, a field left out keeps it.
    /// `known_model` says whether a model name exists.
    pub fn apply(
        &self,
        raw: &Map<String, Value>,
        limits: &mut KeyLimits,
        known_model: impl Fn(&str) -> bool,
        now: Timestamp,
    ) -> Result<()> {
        if raw.contains_key("expires_at") {
            limits.expires_at = crate::ledger::grants::parse_expires_at(self.expires_at.as_deref(), "expires_at", now)?;
        }
        if raw.contains_key("models") {
            limits.models = match &self.models {
                None => None,
                Some(list) => {
                    if list.is_empty() || list.len() > KEY_MODELS_MAX {
                        return Err(Error::invalid(
                            "models",
                            format!("models must list 1 to {KEY_MODELS_MAX} model names (or be null for all)"),
                        ));
                    }
                    if let Some(unknown) = list.iter().find(|m| !known_model(m)) {
                        return Err(Error::invalid(
                            "models",
                            format!("{unknown:?} is not a model of this server; see GET /v1/models"),
                        ));
                    }
                    let mut list = list.clone();
                    list.sort();
                    list.dedup();
                    Some(list)
                }
            };
        }
        if raw.contains_key("spend_limit") {
            limits.spend_limit = credits(self.spend_limit, "spend_limit")?;
        }
        if raw.contains_key("daily_spend_limit") {
            limits.daily_spend_limit = credits(self.daily_spend_limit, "daily_spend_limit")?;
        }
        if raw.contains_key("rpm") {
            limits.rpm = match self.rpm {
                None => None,
                Some(r) if r >= 1 && r <= i64::from(KEY_RPM_MAX) => Some(r as u32),
                Some(_) => {
                    return Err(Error::invalid("rpm", format!("rpm must be 1 to {KEY_RPM_MAX} requests per minute")));
                }
            };
        }
        Ok(())
    }
}
