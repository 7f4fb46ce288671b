//! Standard Webhooks signatures: `webhook-signature: v1,<base64 of
//! HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`, where the key is the
//! base64 part of a `whsec_...` secret. The spec's reference libraries
//! verify these unchanged (see the test vector below).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const SECRET_PREFIX: &str = "whsec_";
/// Key bytes in a generated secret (the spec asks for 24 to 64).
const SECRET_KEY_BYTES: usize = 32;

/// A signing key, decoded from its `whsec_` form.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A fresh secret: the `whsec_...` text (shown once) and the key.
    pub fn generate() -> crate::error::Result<(String, Secret)> {
        let key = crate::support::token::random_bytes::<SECRET_KEY_BYTES>()?;
        Ok((format!("{SECRET_PREFIX}{}", STANDARD.encode(key)), Secret(key.to_vec())))
    }

    /// `whsec_<base64>` with 24 to 64 key bytes.
    pub fn parse(s: &str) -> Result<Secret, String> {
        let b64 = s.strip_prefix(SECRET_PREFIX).ok_or_else(|| format!("a secret starts with {SECRET_PREFIX}"))?;
        let key = STANDARD.decode(b64.trim()).map_err(|_| "the part after whsec_ is not base64".to_owned())?;
        if !(24..=64).contains(&key.len()) {
            return Err(format!("the key is {} bytes; it must be 24 to 64", key.len()));
        }
        Ok(Secret(key))
    }

    /// The `webhook-signature` header value for one message.
    pub fn sign(&self, id: &str, timestamp_s: i64, body: &str) -> String {
        // new_from_slice only fails for fixed-size keys; HMAC takes any length.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else { return String::new() };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_s.to_string().as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_standard_webhooks_test_vector() {
        // From the Standard Webhooks reference libraries' test suite.
        let s = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        assert_eq!(
            s.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, r#"{"test": 2432232314}"#),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn refuses_malformed_secrets_and_generates_parseable_ones() {
        assert!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(Secret::parse("whsec_!!!").is_err());
        assert!(Secret::parse("whsec_c2hvcnQ=").is_err(), "5 bytes is too short");
        let (text, _) = Secret::generate().expect("random");
        assert!(Secret::parse(&text).is_ok());
    }
}
