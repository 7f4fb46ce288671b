//! Stripe's webhook signature: `Stripe-Signature: t=<unix s>,v1=<hex>,...`
//! where each `v1` is HMAC-SHA256 keyed with the endpoint's signing secret
//! (the whole `whsec_...` text, as bytes) over `<t>.<raw body>`. Several
//! `v1` entries appear while Stripe rolls a secret; one match from any of
//! our secrets (two during our own rotation) is enough.
//!
//! Only checks; never parses the body or stores anything. The comparison
//! is the `hmac` crate's constant-time `verify_slice`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Entries in one header we look at (Stripe sends a handful).
pub const SIGNATURE_ENTRIES_MAX: usize = 16;

/// Why a signature was refused (each a 400, nothing stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No `Stripe-Signature` header, or one without `t=` or `v1=`.
    Malformed,
    /// Signed more than the tolerance ago (or that far in the future).
    Stale { age_s: i64 },
    /// No `v1` matches any of our secrets.
    NoMatch,
}

impl Refused {
    pub fn message(&self, tolerance_s: u64) -> String {
        match self {
            Refused::Malformed => {
                "The Stripe-Signature header is missing or malformed (expected t=<time>,v1=<signature>).".into()
            }
            Refused::Stale { age_s } => format!(
                "The signature's timestamp is {age_s} s away from now; at most {tolerance_s} s is accepted (a replayed event?)."
            ),
            Refused::NoMatch => "No signature matches this endpoint's signing secret.".into(),
        }
    }
}

/// Checks `header` for `payload` against `secrets` at `now_s`.
pub fn verify(header: &str, payload: &[u8], secrets: &[String], tolerance_s: u64, now_s: i64) -> Result<(), Refused> {
    let mut t: Option<i64> = None;
    let mut v1: Vec<Vec<u8>> = Vec::new();
    for entry in header.split(',').take(SIGNATURE_ENTRIES_MAX) {
        match entry.trim().split_once('=') {
            Some(("t", v)) => t = v.parse().ok(),
            Some(("v1", v)) => v1.extend(unhex(v)),
            _ => {}
        }
    }
    let Some(t) = t else { return Err(Refused::Malformed) };
    if v1.is_empty() {
        return Err(Refused::Malformed);
    }
    let age_s = now_s.saturating_sub(t);
    if age_s.unsigned_abs() > tolerance_s {
        return Err(Refused::Stale { age_s });
    }
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        for sig in &v1 {
            if mac(secret, t, payload).is_some_and(|m| m.verify_slice(sig).is_ok()) {
                return Ok(());
            }
        }
    }
    Err(Refused::NoMatch)
}

/// The header Stripe would send for `payload` signed at `t` (for tests and
/// the fake).
pub fn sign(secret: &str, t: i64, payload: &[u8]) -> String {
    let hex =
        mac(secret, t, payload).map(|m| crate::support::token::hex(&m.finalize().into_bytes())).unwrap_or_default();
    format!("t={t},v1={hex}")
}

fn mac(secret: &str, t: i64, payload: &[u8]) -> Option<Hmac<Sha256>> {
    // new_from_slice only fails for fixed-size keys; HMAC takes any length.
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(payload);
    Some(m)
}

/// Lowercase or uppercase hex; `None` for anything else.
fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";

    #[test]
    fn accepts_its_own_signature_among_others_and_refuses_the_rest() {
        let body = br#"{"id":"evt_1"}"#;
        let good = sign(SECRET, 1_000, body);
        assert_eq!(verify(&good, body, &[SECRET.into()], 300, 1_100), Ok(()));
        // Stripe rolling its secret: two v1 entries, one ours.
        let other = sign("whsec_other", 1_000, body);
        let both = format!("{other},{}", good.split_once(',').unwrap().1);
        assert_eq!(verify(&both, body, &[SECRET.into()], 300, 1_000), Ok(()));
        // Our rotation: the old secret still listed.
        assert_eq!(verify(&other, body, &[SECRET.into(), "whsec_other".into()], 300, 1_000), Ok(()));
        assert_eq!(verify(&good, b"{\"id\":\"evt_2\"}", &[SECRET.into()], 300, 1_000), Err(Refused::NoMatch));
        assert_eq!(verify(&good, body, &["whsec_x".into()], 300, 1_000), Err(Refused::NoMatch));
        assert_eq!(verify(&good, body, &[SECRET.into()], 300, 1_301), Err(Refused::Stale { age_s: 301 }));
        assert_eq!(verify(&good, body, &[SECRET.into()], 300, 1_300), Ok(()), "at the tolerance");
        for bad in ["", "t=1000", "v1=00", "t=x,v1=00", "t=1000,v1=zz"] {
            assert_eq!(verify(bad, body, &[SECRET.into()], 300, 1_000), Err(Refused::Malformed), "{bad:?}");
        }
        assert_eq!(verify(&good, body, &[String::new()], 300, 1_000), Err(Refused::NoMatch), "an empty secret");
    }
}
