//! A sharded map with a hard size bound, for per-key limiter state.
//!
//! Sharding keeps worker threads from serialising on one lock. The bound
//! keeps a flood of random keys (IPs, bogus API keys) from growing memory:
//! when a shard is full, entries that are idle (their state would be the same
//! as a fresh one) are dropped first, then the least recently seen.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Mutex;

/// Shards per map: more than the worker threads, so they rarely collide.
pub const SHARDS: usize = 64;

pub trait Entry {
    /// True when dropping this entry loses nothing (it would be recreated
    /// identical).
    fn idle(&self, now_ms: u64) -> bool;
    fn last_seen_ms(&self) -> u64;
}

pub struct BoundedMap<K, V> {
    shards: Vec<Mutex<HashMap<K, V>>>,
    shard_entries_max: usize,
    hasher: RandomState,
}

impl<K: Hash + Eq + Clone, V: Entry> BoundedMap<K, V> {
    pub fn new(entries_max: usize) -> BoundedMap<K, V> {
        BoundedMap {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            shard_entries_max: entries_max.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
        }
    }

    /// Runs `f` on the entry for `key`, creating it with `init` if missing.
    pub fn with<R>(&self, key: &K, now_ms: u64, init: impl FnOnce() -> V, f: impl FnOnce(&mut V) -> R) -> R {
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !map.contains_key(key) && map.len() >= self.shard_entries_max {
            evict(&mut map, now_ms);
        }
        f(map.entry(key.clone()).or_insert_with(init))
    }

    /// Drops the entry for `key`, if any.
    pub fn remove(&self, key: &K) {
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        shard.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len()).sum()
    }

    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.shard_entries_max * SHARDS
    }
}

/// Frees room in a full shard: idle entries first; if that is not enough,
/// the older half by last use. Freeing half at once keeps eviction amortised
/// O(1) per insert even under a flood of new keys.
fn evict<K: Hash + Eq + Clone, V: Entry>(map: &mut HashMap<K, V>, now_ms: u64) {
    let before = map.len();
    map.retain(|_, v| !v.idle(now_ms));
    if map.len() * 4 > before * 3 {
        let mut seen: Vec<u64> = map.values().map(Entry::last_seen_ms).collect();
        let mid = seen.len() / 2;
        let (_, median, _) = seen.select_nth_unstable(mid);
        let cutoff = *median;
        map.retain(|_, v| v.last_seen_ms() > cutoff);
    }
}
