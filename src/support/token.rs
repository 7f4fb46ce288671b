//! Hex, randomness and opaque tokens: `prefix` + 64 hex characters (256
//! random bits) of which only the SHA-256 is stored.
//!
//! A fast hash is right for these (unlike for passwords): a token has 256
//! bits of entropy, so there is nothing to guess, and every request pays for
//! the hash.

use sha2::{Digest, Sha256};
use std::fmt;

/// The operating system gave no randomness (an error, never a weak token).
#[derive(Debug)]
pub struct NoRandomness(String);

impl fmt::Display for NoRandomness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no randomness available: {}", self.0)
    }
}

impl std::error::Error for NoRandomness {}

/// Random bytes in a token: 256 bits.
pub const TOKEN_RANDOM_BYTES: usize = 32;

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

pub fn random_bytes<const N: usize>() -> Result<[u8; N], NoRandomness> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| NoRandomness(e.to_string()))?;
    Ok(buf)
}

/// The SHA-256 of `plaintext`, in hex: all that is stored of a token.
pub fn hash(plaintext: &str) -> String {
    hex(&Sha256::digest(plaintext.as_bytes()))
}

/// A fresh opaque token (`prefix` + 64 hex characters) and its hash:
/// refresh tokens, reset tokens, sign-in codes.
pub fn opaque_token(prefix: &str) -> Result<(String, String), NoRandomness> {
    let token = format!("{prefix}{}", hex(&random_bytes::<TOKEN_RANDOM_BYTES>()?));
    let h = hash(&token);
    Ok((token, h))
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
