//! API keys: `tg_` + 64 hex characters (32 random bytes), and the other
//! opaque tokens made the same way.
//!
//! Only the SHA-256 of a key is stored. A fast hash is right here (unlike for
//! passwords): the key has 256 bits of entropy, so there is nothing to guess,
//! and every request pays for the hash.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};

pub const API_KEY_PREFIX: &str = "tg_";
const API_KEY_RANDOM_BYTES: usize = 32;

pub fn hex(bytes: &[u8]) -> String {
    // A table instead of `write!("{b:02x}")`: this runs for every ledger row
    // (the hash chain) inside the writer, where formatting showed in profiles.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| Error::Internal(format!("no randomness available: {e}")))?;
    Ok(buf)
}

/// A fresh key: the plaintext (shown once) and what is stored.
pub struct NewKey {
    pub plaintext: String,
    pub hash: String,
    pub display_prefix: String,
}

pub fn generate() -> Result<NewKey> {
    let plaintext = format!("{API_KEY_PREFIX}{}", hex(&random_bytes::<API_KEY_RANDOM_BYTES>()?));
    Ok(NewKey { hash: hash(&plaintext), display_prefix: plaintext[..API_KEY_PREFIX.len() + 6].to_owned(), plaintext })
}

/// A fresh opaque token (`prefix` + 64 hex characters, 256 random bits) and
/// the SHA-256 that is all we store of it: refresh tokens, reset tokens,
/// sign-in codes.
pub fn opaque_token(prefix: &str) -> Result<(String, String)> {
    let token = format!("{prefix}{}", hex(&random_bytes::<32>()?));
    let h = hash(&token);
    Ok((token, h))
}

pub fn hash(plaintext: &str) -> String {
    hex(&Sha256::digest(plaintext.as_bytes()))
}

/// Cheap shape check before any database lookup.
pub fn looks_like_key(s: &str) -> bool {
    s.strip_prefix(API_KEY_PREFIX)
        .is_some_and(|rest| rest.len() == API_KEY_RANDOM_BYTES * 2 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(super::hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        // SHA-256("abc"), the FIPS 180-2 example, as the chain stores hashes.
        assert_eq!(super::hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
