//! Callers behind verified credentials, remembered for a few seconds, so a
//! request does not open a read transaction only to learn its caller's role
//! (that read was ~13 us of every authenticated request under load).
//!
//! It must never answer with an entry filled before the last deactivation
//! or key revocation made through this process: [`CredentialCache::invalidate`]
//! bumps a generation that every entry is checked against, and a reader
//! takes the generation *before* it reads the database, so a fill that raced
//! a revocation is born stale. Changes made outside the process are seen
//! within [`CREDENTIAL_CACHE_TTL_MS`], or within
//! [`CREDENTIAL_CACHE_TTL_SHARED_MS`] on PostgreSQL, where other instances
//! make them: a revocation through any instance stops the credential on
//! every instance within a second, at the cost of one read per active
//! credential per second per instance; with Redis, an invalidation is
//! also published ([`CredentialCache::on_invalidate`]) and every instance
//! drops its entries at once. Only successful lookups are cached.

use super::key_limits::KeyTerms;
use crate::domain::{Role, UserId};
use crate::support::bounded::{BoundedMap, Entry};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// Longest an entry is trusted without reading the database again.
pub const CREDENTIAL_CACHE_TTL_MS: u64 = 5_000;
/// The same when several instances share the database (PostgreSQL).
pub const CREDENTIAL_CACHE_TTL_SHARED_MS: u64 = 1_000;
/// Most credentials remembered; past it the oldest are forgotten.
pub const CREDENTIAL_CACHE_ENTRIES_MAX: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CacheKey {
    /// A verified JWT's subject (a token from before sessions).
    User(UserId),
    /// A verified JWT's subject and session.
    Session(UserId, i64),
    /// An API key, by its SHA-256 (never the key itself).
    KeyHash(String),
}

/// Who a credential belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user: UserId,
    pub role: Role,
    pub key: Option<Arc<KeyTerms>>,
    /// The user's price group (`[pricing] groups`), if any.
    pub price_group: Option<Arc<str>>,
}

#[derive(Default)]
struct Slot(Option<Filled>);

struct Filled {
    caller: Caller,
    generation: u64,
    at_ms: u64,
}

impl Entry for Slot {
    fn idle(&self, now_ms: u64) -> bool {
        self.0.as_ref().is_none_or(|f| now_ms.saturating_sub(f.at_ms) >= CREDENTIAL_CACHE_TTL_MS)
    }
    fn last_seen_ms(&self) -> u64 {
        self.0.as_ref().map_or(0, |f| f.at_ms)
    }
}

/// Tells the other instances that credentials changed.
type Broadcast = Box<dyn Fn() + Send + Sync>;

pub struct CredentialCache {
    map: BoundedMap<CacheKey, Slot>,
    generation: AtomicU64,
    ttl_ms: u64,
    broadcast: OnceLock<Broadcast>,
}

impl Default for CredentialCache {
    fn default() -> Self {
        CredentialCache::with_ttl_ms(CREDENTIAL_CACHE_TTL_MS)
    }
}

fn now_ms() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    START.elapsed().as_millis() as u64
}

impl CredentialCache {
    /// A cache that trusts an entry for `ttl_ms` (at most
    /// [`CREDENTIAL_CACHE_TTL_MS`]).
    pub fn with_ttl_ms(ttl_ms: u64) -> CredentialCache {
        CredentialCache {
            map: BoundedMap::new(CREDENTIAL_CACHE_ENTRIES_MAX),
            generation: AtomicU64::new(0),
            ttl_ms: ttl_ms.min(CREDENTIAL_CACHE_TTL_MS),
            broadcast: OnceLock::new(),
        }
    }

    /// The caller for `key` if a fresh entry exists.
    pub fn get(&self, key: &CacheKey) -> Option<Caller> {
        let (now, generation) = (now_ms(), self.generation.load(Ordering::Acquire));
        self.map.with(key, now, Slot::default, |slot| match &slot.0 {
            Some(f) if f.generation == generation && now.saturating_sub(f.at_ms) < self.ttl_ms => {
                Some(f.caller.clone())
            }
            _ => None,
        })
    }

    /// Take this before reading the database; pass it to [`Self::put`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn put(&self, key: CacheKey, caller: Caller, generation: u64) {
        let now = now_ms();
        self.map.with(&key, now, Slot::default, |slot| slot.0 = Some(Filled { caller, generation, at_ms: now }));
    }

    /// Forgets every entry. Call after committing a change that takes a
    /// credential away (deactivation, revocation, a role change).
    pub fn invalidate(&self) {
        self.invalidate_local();
        if let Some(tell) = self.broadcast.get() {
            tell();
        }
    }

    /// Forgets every entry of this process only (another instance said a
    /// credential changed).
    pub fn invalidate_local(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// `tell` runs after every [`Self::invalidate`] (set once, at start).
    pub fn on_invalidate(&self, tell: impl Fn() + Send + Sync + 'static) {
        let _ = self.broadcast.set(Box::new(tell));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        Caller { user: UserId(7), role: Role::User, key: None, price_group: None }
    }

    #[test]
    fn a_fill_is_served_until_invalidated_and_a_fill_that_raced_an_invalidation_is_not() {
        let cache = CredentialCache::default();
        let key = CacheKey::User(UserId(7));
        assert_eq!(cache.get(&key), None);
        cache.put(key.clone(), caller(), cache.generation());
        assert_eq!(cache.get(&key), Some(caller()));
        cache.invalidate();
        assert_eq!(cache.get(&key), None, "invalidate forgets every entry");
        // A reader took the generation, then a revocation committed and
        // invalidated, then the reader filled: its entry must not be served.
        let before = cache.generation();
        cache.invalidate();
        cache.put(key.clone(), caller(), before);
        assert_eq!(cache.get(&key), None);
        assert_eq!(cache.get(&CacheKey::KeyHash("ab".into())), None);
    }
}
