//! API keys: `tg_` + 64 hex characters (32 random bytes). Only the SHA-256
//! of a key is stored (see `support::token`).

use crate::error::Result;
use crate::support::token::{hash, hex, random_bytes};

pub const API_KEY_PREFIX: &str = "tg_";
const API_KEY_RANDOM_BYTES: usize = 32;

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

/// Cheap shape check before any database lookup.
pub fn looks_like_key(s: &str) -> bool {
    s.strip_prefix(API_KEY_PREFIX)
        .is_some_and(|rest| rest.len() == API_KEY_RANDOM_BYTES * 2 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}
