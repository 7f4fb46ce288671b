//! HS256 access tokens. The secret is generated once and kept in the
//! `settings` table, so tokens stay valid across restarts and no operator has
//! to invent one.

use crate::domain::{Role, Timestamp, UserId};
use crate::error::{Error, Result};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};

/// Clock skew tolerated on `exp`, in seconds: small, because a token past its
/// life must stop working.
pub const JWT_LEEWAY_S: u64 = 30;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: String,
    pub iat: u64,
    pub exp: u64,
    /// The session the token belongs to. Tokens from before sessions had
    /// none; they live out their (short) life on the user alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<i64>,
}

/// What a valid token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub user: UserId,
    pub session: Option<i64>,
}

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl JwtKeys {
    pub fn new(secret: &[u8]) -> JwtKeys {
        // Only HS256: a token claiming `none` or any other algorithm fails.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = JWT_LEEWAY_S;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        JwtKeys { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret), validation }
    }

    pub fn issue(&self, user: UserId, role: Role, session: i64, ttl_s: u64) -> Result<String> {
        let now = (Timestamp::now().millis() / 1000) as u64;
        let claims = Claims {
            sub: user.to_string(),
            role: role.as_str().into(),
            iat: now,
            exp: now + ttl_s,
            sid: Some(session),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| Error::Internal(format!("cannot sign token: {e}")))
    }

    /// The user and session a token names, if its signature, algorithm and
    /// expiry hold.
    pub fn verify(&self, token: &str) -> Result<Verified> {
        let data = decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
            let why = match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "The access token has expired; log in again.",
                _ => "The access token is invalid; log in again to get a new one.",
            };
            Error::Unauthorized(why.into())
        })?;
        let user = UserId::parse(&data.claims.sub)
            .ok_or_else(|| Error::Unauthorized("The access token is invalid; log in again to get a new one.".into()))?;
        Ok(Verified { user, session: data.claims.sid })
    }
}
