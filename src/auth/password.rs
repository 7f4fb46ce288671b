//! Password hashing with argon2id (the crate's recommended defaults).

use crate::domain::Password;
use crate::error::{Error, Result};
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use std::sync::OnceLock;

pub fn hash(password: &Password) -> Result<String> {
    let h: PasswordHash = Argon2::default()
        .hash_password(password.expose().as_bytes())
        .map_err(|e| Error::Internal(format!("password hashing failed: {e}")))?;
    Ok(h.to_string())
}

/// True only when `stored` is a valid hash of `candidate`.
pub fn verify(candidate: &str, stored: &str) -> bool {
    let Ok(parsed) = stored.parse::<PasswordHash>() else {
        return false;
    };
    Argon2::default().verify_password(candidate.as_bytes(), &parsed).is_ok()
}

/// Spends the same time as a real check, so that a login for an unknown email
/// takes as long as one with a wrong password and does not reveal which.
pub fn burn_time(candidate: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = DUMMY
        .get_or_init(|| Password::parse("not-a-real-password").ok().and_then(|p| hash(&p).ok()).unwrap_or_default());
    let _ = verify(candidate, dummy);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_the_right_password() {
        let h = hash(&Password::parse("correct horse").unwrap()).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse", &h));
        assert!(!verify("wrong horse!", &h));
        assert!(!verify("correct horse", "not a hash"));
    }
}
