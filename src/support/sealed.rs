//! Secrets kept in the database (webhook signing secrets; provider keys
//! later) sealed with a key from the environment (`TOLLGATE_SECRET_KEY`),
//! so a stolen database file or backup gives none of them away.
//! XChaCha20-Poly1305 (`chacha20poly1305`, RustCrypto): a random 192-bit
//! nonce per secret, authenticated, stored as `sealed:v1:<base64(nonce ||
//! ciphertext)>`. Never logs a key or a secret; never decides when to seal.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// What every sealed value starts with (the version names the cipher).
pub const SEALED_PREFIX: &str = "sealed:v1:";
const NONCE_BYTES: usize = 24;

/// The sealing key: 32 bytes, given as base64 (`tollgate secrets new-key`).
#[derive(Clone)]
pub struct SealKey(XChaCha20Poly1305);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

/// Whether `stored` is a sealed value (else it was stored in clear, before
/// a key was set).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(SEALED_PREFIX)
}

impl SealKey {
    /// A key from its base64 form; the error says what is wrong, never the key.
    pub fn parse(text: &str) -> Result<SealKey, String> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| "it is not base64 (make one with `tollgate secrets new-key`)".to_owned())?;
        let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!("it is {} bytes, a key is 32 (make one with `tollgate secrets new-key`)", b.len())
        })?;
        Ok(SealKey(XChaCha20Poly1305::new(&key.into())))
    }

    /// A fresh random key, as base64.
    pub fn generate() -> Result<String, String> {
        let key = super::token::random_bytes::<32>().map_err(|e| e.to_string())?;
        Ok(STANDARD.encode(key))
    }

    pub fn seal(&self, plaintext: &str) -> Result<String, String> {
        let nonce = super::token::random_bytes::<NONCE_BYTES>().map_err(|e| e.to_string())?;
        let sealed = self
            .0
            .encrypt(&XNonce::from(nonce), plaintext.as_bytes())
            .map_err(|_| "the secret could not be sealed".to_owned())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{SEALED_PREFIX}{}", STANDARD.encode(out)))
    }

    /// The plaintext of a sealed value; an error when this key did not seal
    /// it (a wrong key) or it was altered.
    pub fn open(&self, stored: &str) -> Result<String, String> {
        let body = stored.strip_prefix(SEALED_PREFIX).ok_or("the value is not sealed")?;
        let bytes = STANDARD.decode(body).map_err(|_| "the sealed value is damaged")?;
        if bytes.len() < NONCE_BYTES {
            return Err("the sealed value is damaged".into());
        }
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| "the sealed value is damaged".to_owned())?;
        let plain = self.0.decrypt(&XNonce::from(nonce), sealed).map_err(|_| {
            "the key does not open it (a wrong TOLLGATE_SECRET_KEY, or the value was altered)".to_owned()
        })?;
        String::from_utf8(plain).map_err(|_| "the sealed value is damaged".into())
    }
}

/// A stored value in clear, opening it when sealed.
pub fn reveal(key: Option<&SealKey>, stored: &str) -> Result<String, String> {
    match (is_sealed(stored), key) {
        (false, _) => Ok(stored.to_owned()),
        (true, Some(k)) => k.open(stored),
        (true, None) => Err("it is sealed and TOLLGATE_SECRET_KEY is not set".into()),
    }
}

/// `stored` (in clear, or sealed with `old`) sealed again with `new`:
/// what rotation does to every stored secret.
pub fn reseal(old: Option<&SealKey>, new: &SealKey, stored: &str) -> Result<String, String> {
    new.seal(&reveal(old, stored)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_never_shows_in_clear() {
        let key = SealKey::parse(&SealKey::generate().unwrap()).unwrap();
        let other = SealKey::parse(&SealKey::generate().unwrap()).unwrap();
        let sealed = key.seal("whsec_top_secret").unwrap();
        assert!(is_sealed(&sealed) && !sealed.contains("top_secret"));
        assert_ne!(sealed, key.seal("whsec_top_secret").unwrap(), "a fresh nonce each time");
        assert_eq!(key.open(&sealed).unwrap(), "whsec_top_secret");
        assert!(other.open(&sealed).unwrap_err().contains("wrong TOLLGATE_SECRET_KEY"));
        let mut altered = sealed.clone();
        altered.pop();
        altered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(key.open(&altered).is_err());
        assert_eq!(reveal(None, "plain").unwrap(), "plain");
        assert!(reveal(None, &sealed).is_err());
        assert!(SealKey::parse("too short").is_err());
        assert!(SealKey::parse(&STANDARD.encode([0u8; 31])).unwrap_err().contains("31 bytes"));
    }
}
