//! `[payments]`: the payment provider, its keys' environment variables,
//! where Checkout may send the buyer back, and what is for sale: credit
//! packages (`[[payments.packages]]`) and plans (`[[payments.plans]]`).
//! Reads settings only; `payments` acts on them.

use super::{ConfigError, bad};
use serde::{Deserialize, Serialize};

/// Packages or plans one config may list.
pub const PAYMENT_ITEMS_MAX: usize = 100;
/// Return URLs one config may allow.
pub const RETURN_URLS_MAX: usize = 20;
/// A package's or plan's price, in minor units (cents): 1,000,000.00.
pub const PRICE_MINOR_MAX: i64 = 100_000_000;
/// The grants' draw priority range (`ledger::grants::PRIORITY_MAX`; a
/// test keeps them equal: config sits below the ledger).
pub const GRANT_PRIORITY_MAX: i64 = 100;
/// Credits one package or period may grant.
pub const PAYMENT_CREDITS_MAX: i64 = 1_000_000_000_000;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentsConfig {
    /// `"stripe"`, or empty: payments off (the routes answer 404).
    pub provider: String,
    /// Stripe's API; a test points it at a fake.
    pub stripe_api_base: String,
    /// The environment variable holding the secret API key (`sk_...`).
    pub secret_key_env: String,
    /// Environment variables holding webhook signing secrets (`whsec_...`);
    /// a signature matching any of them is accepted (rotation: set the new
    /// one, keep the old one until Stripe has moved on).
    pub webhook_secret_envs: Vec<String>,
    /// How old a webhook signature may be (Stripe's libraries use 300 s).
    pub webhook_tolerance_s: u64,
    /// Whole time of one call to Stripe.
    pub request_timeout_ms: u64,
    /// Where Checkout and the billing portal may send the buyer back: a
    /// `success_url`, `cancel_url` or `return_url` must start with one of
    /// these (scheme, host and path prefix), like OIDC redirect URIs.
    pub return_urls: Vec<String>,
    /// Auto top-ups one user may get per UTC day.
    pub auto_topup_per_day_max: u32,
    /// How often the auto top-up pass looks for crossed thresholds.
    pub auto_topup_poll_ms: u64,
    pub packages: Vec<PackageConfig>,
    pub plans: Vec<PlanConfig>,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        PaymentsConfig {
            provider: String::new(),
            stripe_api_base: "https://api.stripe.com".into(),
            secret_key_env: "STRIPE_SECRET_KEY".into(),
            webhook_secret_envs: vec!["STRIPE_WEBHOOK_SECRET".into(), "STRIPE_WEBHOOK_SECRET_PREVIOUS".into()],
            webhook_tolerance_s: 300,
            request_timeout_ms: 10_000,
            return_urls: Vec::new(),
            auto_topup_per_day_max: 3,
            auto_topup_poll_ms: 1_000,
            packages: Vec::new(),
            plans: Vec::new(),
        }
    }
}

/// Credits sold once (`[[payments.packages]]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PackageConfig {
    pub id: String,
    pub credits: i64,
    /// In the currency's minor unit (cents).
    pub price: i64,
    /// ISO 4217, lowercase as Stripe writes it (`usd`).
    pub currency: String,
    /// `paid` (default) or `promotional`.
    #[serde(default = "paid")]
    pub category: String,
    /// Draw order of the grant (lower first); default 50.
    #[serde(default)]
    pub priority: Option<i64>,
    /// The grant expires this many days after payment; none: never.
    #[serde(default)]
    pub expires_days: Option<i64>,
    /// Shown on Checkout; default: "<credits> credits".
    #[serde(default)]
    pub name: Option<String>,
}

/// Credits granted every period of a subscription (`[[payments.plans]]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    pub id: String,
    pub credits_per_period: i64,
    pub price: i64,
    pub currency: String,
    /// `month` or `year`.
    pub interval: String,
    /// false: a period's credits expire at its end; true: they stay.
    #[serde(default)]
    pub rollover: bool,
    /// Draw order of the period's grant; default 10, so a plan's credits
    /// are spent before the wallet's (50).
    #[serde(default)]
    pub priority: Option<i64>,
    #[serde(default)]
    pub name: Option<String>,
}

/// `path` is `prefix` or below it (`/billing` allows `/billing/done`, not
/// `/billing-evil`).
fn path_within(path: &str, prefix: &str) -> bool {
    if prefix.ends_with('/') {
        return path.starts_with(prefix);
    }
    path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

fn paid() -> String {
    "paid".into()
}

fn check_item(key: &str, id: &str, credits: i64, price: i64, currency: &str) -> Result<(), ConfigError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return bad(key, "id must be 1..64 letters, digits, - or _");
    }
    if !(1..=PAYMENT_CREDITS_MAX).contains(&credits) {
        return bad(key, &format!("credits must be 1..{PAYMENT_CREDITS_MAX}"));
    }
    if !(1..=PRICE_MINOR_MAX).contains(&price) {
        return bad(key, &format!("price must be 1..{PRICE_MINOR_MAX} in the currency's minor unit"));
    }
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
        return bad(key, "currency must be a lowercase ISO 4217 code such as \"usd\"");
    }
    Ok(())
}

fn check_priority(key: &str, p: Option<i64>) -> Result<(), ConfigError> {
    match p {
        Some(p) if !(0..=GRANT_PRIORITY_MAX).contains(&p) => {
            bad(key, &format!("priority must be 0..{}", GRANT_PRIORITY_MAX))
        }
        _ => Ok(()),
    }
}

impl PaymentsConfig {
    pub fn enabled(&self) -> bool {
        !self.provider.is_empty()
    }

    pub fn package(&self, id: &str) -> Option<&PackageConfig> {
        self.packages.iter().find(|p| p.id == id)
    }

    pub fn plan(&self, id: &str) -> Option<&PlanConfig> {
        self.plans.iter().find(|p| p.id == id)
    }

    /// Whether `url` may be a Checkout or portal return URL.
    pub fn return_url_allowed(&self, url: &str) -> bool {
        let Ok(u) = url::Url::parse(url) else { return false };
        self.return_urls.iter().any(|allowed| {
            url::Url::parse(allowed).is_ok_and(|a| {
                a.scheme() == u.scheme()
                    && a.host_str() == u.host_str()
                    && a.port_or_known_default() == u.port_or_known_default()
                    && path_within(u.path(), a.path())
            })
        })
    }

    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if !matches!(self.provider.as_str(), "" | "stripe") {
            return bad("payments.provider", "must be \"stripe\" or empty (payments off)");
        }
        if !(1..=3600).contains(&self.webhook_tolerance_s) {
            return bad("payments.webhook_tolerance_s", "must be 1..3600");
        }
        if !(100..=120_000).contains(&self.request_timeout_ms) {
            return bad("payments.request_timeout_ms", "must be 100..120000");
        }
        if self.return_urls.len() > RETURN_URLS_MAX {
            return bad("payments.return_urls", &format!("at most {RETURN_URLS_MAX}"));
        }
        for u in &self.return_urls {
            match url::Url::parse(u) {
                Ok(p) if matches!(p.scheme(), "https" | "http") && p.host_str().is_some() => {}
                _ => return bad("payments.return_urls", &format!("{u:?} is not an absolute http(s) URL")),
            }
        }
        if !(50..=3_600_000).contains(&self.auto_topup_poll_ms) {
            return bad("payments.auto_topup_poll_ms", "must be 50..3600000");
        }
        if self.auto_topup_per_day_max > 100 {
            return bad("payments.auto_topup_per_day_max", "must be 0..100");
        }
        if self.packages.len() + self.plans.len() > PAYMENT_ITEMS_MAX {
            return bad("payments", &format!("at most {PAYMENT_ITEMS_MAX} packages and plans"));
        }
        let mut ids = std::collections::HashSet::new();
        for p in &self.packages {
            let key = format!("payments.packages.{}", p.id);
            check_item(&key, &p.id, p.credits, p.price, &p.currency)?;
            if !matches!(p.category.as_str(), "paid" | "promotional") {
                return bad(&key, "category must be \"paid\" or \"promotional\"");
            }
            check_priority(&key, p.priority)?;
            if p.expires_days.is_some_and(|d| !(1..=3650).contains(&d)) {
                return bad(&key, "expires_days must be 1..3650");
            }
            if !ids.insert(p.id.as_str()) {
                return bad(&key, "ids must be unique across packages and plans");
            }
        }
        for p in &self.plans {
            let key = format!("payments.plans.{}", p.id);
            check_item(&key, &p.id, p.credits_per_period, p.price, &p.currency)?;
            if !matches!(p.interval.as_str(), "month" | "year") {
                return bad(&key, "interval must be \"month\" or \"year\"");
            }
            check_priority(&key, p.priority)?;
            if !ids.insert(p.id.as_str()) {
                return bad(&key, "ids must be unique across packages and plans");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(id: &str) -> PackageConfig {
        PackageConfig {
            id: id.into(),
            credits: 100,
            price: 100,
            currency: "usd".into(),
            category: "paid".into(),
            priority: None,
            expires_days: None,
            name: None,
        }
    }

    #[test]
    fn packages_plans_and_return_urls_are_checked_at_their_limits() {
        let on = |f: &dyn Fn(&mut PaymentsConfig)| {
            let mut c = PaymentsConfig { provider: "stripe".into(), ..PaymentsConfig::default() };
            f(&mut c);
            c.check().map_err(|e| e.to_string())
        };
        assert!(on(&|c| c.packages = (0..PAYMENT_ITEMS_MAX).map(|i| package(&format!("p{i}"))).collect()).is_ok());
        let e = on(&|c| c.packages = (0..=PAYMENT_ITEMS_MAX).map(|i| package(&format!("p{i}"))).collect()).unwrap_err();
        assert!(e.contains("at most 100"), "{e}");
        let urls = |n: usize| (0..n).map(|i| format!("https://app{i}.example/")).collect::<Vec<_>>();
        assert!(on(&|c| c.return_urls = urls(RETURN_URLS_MAX)).is_ok());
        assert!(on(&|c| c.return_urls = urls(RETURN_URLS_MAX + 1)).is_err());
        for (bad, why) in [
            (PackageConfig { currency: "USD".into(), ..package("a") }, "lowercase"),
            (PackageConfig { price: PRICE_MINOR_MAX + 1, ..package("a") }, "price"),
            (PackageConfig { price: 0, ..package("a") }, "price"),
            (PackageConfig { credits: 0, ..package("a") }, "credits"),
            (PackageConfig { priority: Some(GRANT_PRIORITY_MAX + 1), ..package("a") }, "priority"),
            (PackageConfig { category: "gift".into(), ..package("a") }, "category"),
            (PackageConfig { id: "a b".into(), ..package("a") }, "id"),
        ] {
            let e = on(&|c| c.packages = vec![bad.clone()]).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }
        let e = on(&|c| c.packages = vec![package("a"), package("a")]).unwrap_err();
        assert!(e.contains("unique"), "{e}");
        assert!(on(&|c| c.provider = "paypal".into()).is_err());
        assert!(on(&|c| c.return_urls = vec!["ftp://x.example/".into()]).is_err());
    }

    #[test]
    fn a_return_url_must_start_with_an_allowed_one_on_the_same_origin() {
        let c = PaymentsConfig { return_urls: vec!["https://app.example/billing".into()], ..PaymentsConfig::default() };
        assert!(c.return_url_allowed("https://app.example/billing/done?x=1"));
        for bad in [
            "https://app.example/other",
            "https://app.example/billing-evil",
            "http://app.example/billing",
            "https://app.example.evil.com/billing",
            "https://app.example:8443/billing",
            "https://evil.example/https://app.example/billing",
            "not a url",
        ] {
            assert!(!c.return_url_allowed(bad), "{bad}");
        }
    }
}
