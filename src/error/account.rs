//! Why an account request was refused: sessions, passwords, resets and
//! sign-in through an identity provider. Each refusal has one stable code
//! (the contract) and a message that says what to do next; the HTTP layer
//! gives it its status. Nothing here carries a secret: a refusal may be
//! logged.

/// A refusal's code, message and the field it is about.
pub struct Spec {
    pub code: &'static str,
    pub message: String,
    pub param: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a refresh token of ours, or one of a session that has ended.
    InvalidRefreshToken,
    /// A refresh token that rotation had already retired came back: the
    /// whole session was revoked.
    RefreshTokenReused,
    RefreshTokenExpired,
    /// `current_password` is wrong.
    WrongPassword,
    /// A password the policy refuses (`param` names the field).
    WeakPassword {
        param: &'static str,
        why: String,
    },
    InvalidResetToken,
    ResetTokenExpired,
    /// No `[oidc.<name>]` with this name.
    OidcProviderNotFound,
    RedirectUriNotAllowed,
    /// `state` unknown, expired or already used.
    InvalidOidcState,
    /// The provider's ID token failed verification.
    OidcTokenInvalid(String),
    /// The provider could not be reached or answered with an error.
    OidcProviderError(String),
    OidcDomainNotAllowed,
    OidcEmailUnverified,
    SignupDisabled,
    /// An account with the asserted e-mail exists, and the linking policy
    /// does not let this identity take it over.
    OidcAccountExists,
    /// The one-time sign-in code is unknown, used or expired.
    InvalidOidcCode,
}

impl Refusal {
    pub fn spec(&self) -> Spec {
        let refusal = |code, message: &str| Spec { code, message: message.to_owned(), param: None };
        match self {
            Refusal::InvalidRefreshToken => Spec {
                param: Some("refresh_token"),
                ..refusal(
                    "invalid_refresh_token",
                    "This refresh token is not valid (unknown, or its session ended). Log in again.",
                )
            },
            Refusal::RefreshTokenReused => Spec {
                param: Some("refresh_token"),
                ..refusal(
                    "refresh_token_reused",
                    "This refresh token was already used, so the session was ended for safety. Log in again; refresh one request at a time.",
                )
            },
            Refusal::RefreshTokenExpired => Spec {
                param: Some("refresh_token"),
                ..refusal("refresh_token_expired", "This refresh token has expired. Log in again.")
            },
            Refusal::WrongPassword => Spec {
                param: Some("current_password"),
                ..refusal("wrong_password", "The current password is not right.")
            },
            Refusal::WeakPassword { param, why } => {
                Spec { param: Some(param), ..refusal("weak_password", &format!("Choose another password: {why}.")) }
            }
            Refusal::InvalidResetToken => Spec {
                param: Some("token"),
                ..refusal("invalid_reset_token", "This reset token is unknown or was already used. Ask for a new one.")
            },
            Refusal::ResetTokenExpired => Spec {
                param: Some("token"),
                ..refusal("reset_token_expired", "This reset token has expired. Ask for a new one.")
            },
            Refusal::OidcProviderNotFound => refusal("oidc_provider_not_found", "No identity provider has this name."),
            Refusal::RedirectUriNotAllowed => Spec {
                param: Some("redirect_uri"),
                ..refusal(
                    "redirect_uri_not_allowed",
                    "This redirect_uri is not in the provider's redirect_uris; an operator can add it to the config.",
                )
            },
            Refusal::InvalidOidcState => Spec {
                param: Some("state"),
                ..refusal("invalid_oidc_state", "This sign-in is unknown, expired or already finished. Start again.")
            },
            Refusal::OidcTokenInvalid(why) => refusal(
                "oidc_token_invalid",
                &format!("The identity provider's answer could not be verified ({why}). Start the sign-in again."),
            ),
            Refusal::OidcProviderError(why) => {
                refusal("oidc_provider_error", &format!("The identity provider failed ({why}). Retry in a moment."))
            }
            Refusal::OidcDomainNotAllowed => {
                refusal("oidc_domain_not_allowed", "Accounts of this e-mail domain may not sign in here.")
            }
            Refusal::OidcEmailUnverified => refusal(
                "oidc_email_unverified",
                "The identity provider did not confirm this e-mail address; verify it there first.",
            ),
            Refusal::SignupDisabled => refusal(
                "signup_disabled",
                "No account is linked to this sign-in and signup is disabled; ask an administrator for an account.",
            ),
            Refusal::OidcAccountExists => refusal(
                "oidc_account_exists",
                "An account with this e-mail already exists and is not linked to this sign-in. Sign in to it with its password (administrators, accounts linked to another identity, and any account unless the operator allows linking by e-mail are never linked this way).",
            ),
            Refusal::InvalidOidcCode => Spec {
                param: Some("code"),
                ..refusal("invalid_oidc_code", "This sign-in code is unknown, used or expired. Sign in again.")
            },
        }
    }
}
