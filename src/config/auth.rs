//! `[auth]` and `[oidc.<name>]`: tokens, sessions, passwords, login and
//! signup limits, identity providers. Reads settings only; `auth` and
//! `oidc` act on them.

use super::{ConfigError, bad};
use crate::domain::HttpUrl;
use serde::{Deserialize, Serialize};

/// Redirect URIs per identity provider.
pub const REDIRECT_URIS_MAX: usize = 32;

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

/// An OpenID Connect identity provider (`[oidc.<name>]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer URL; discovery reads `<issuer>/.well-known/openid-configuration`.
    pub issuer: HttpUrl,
    pub client_id: String,
    /// The environment variable holding the client secret (never the file).
    pub client_secret_env: String,
    #[serde(default = "oidc_scopes_default")]
    pub scopes: Vec<String>,
    /// E-mail domains allowed to sign in; empty = any.
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// Where the frontend may ask to be sent back to (exact URLs).
    pub redirect_uris: Vec<HttpUrl>,
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

impl AuthConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        let a = self;
        if a.login_ip_failures_max == 0 || a.signups_per_ip_per_hour == 0 || a.login_email_delay_max_s == 0 {
            return bad(
                "auth.login_ip_failures_max / signups_per_ip_per_hour / login_email_delay_max_s",
                "must be at least 1",
            );
        }
        if a.password_hashes_max > 256 || a.password_hash_wait_ms > 60_000 {
            return bad("auth.password_hashes_max / password_hash_wait_ms", "at most 256 hashes and 60000 ms");
        }
        if a.token_ttl_s == 0 || a.token_ttl_s > 30 * 86_400 {
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
        if a.signup_bonus_credits < 0 {
            return bad("auth.signup_bonus_credits", "must not be negative");
        }
        if a.login_rpm_per_ip == 0 || a.login_failures_max == 0 || a.login_lockout_s == 0 {
            return bad("auth.login_rpm_per_ip / login_failures_max / login_lockout_s", "must be at least 1");
        }
        Ok(())
    }
}

impl OidcConfig {
    /// Checks one `[oidc.<name>]` table (its URLs were checked as they were read).
    pub(super) fn check(&self, name: &str) -> Result<(), ConfigError> {
        let why = if name.is_empty()
            || name.len() > 32
            || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            "the name must be 1 to 32 of a-z, 0-9, - and _".to_owned()
        } else if self.client_id.is_empty() || self.client_secret_env.is_empty() {
            "client_id and client_secret_env are required".to_owned()
        } else if self.redirect_uris.is_empty() || self.redirect_uris.len() > REDIRECT_URIS_MAX {
            format!("redirect_uris must list 1 to {REDIRECT_URIS_MAX} frontend URLs")
        } else {
            return Ok(());
        };
        bad(&format!("oidc.{name}"), &why)
    }
}
