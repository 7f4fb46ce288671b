//! Which upstream key a call tries, in which order: the lowest priority
//! number first, then weighted random by channel weight, then the keys of
//! a channel in a random rotation; a conversation's remembered key goes
//! first while it is healthy (affinity); a key past its own `rpm`/`tpm`
//! is passed over before the provider would refuse it.
//!
//! State here is per instance and in memory (the affinity table, the
//! per-key windows); it never touches the database and never calls a
//! provider.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A small, fast generator for choosing among keys (not for secrets):
/// xorshift64*, seeded per thread from the OS.
fn next_random() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let seed = crate::support::token::random_bytes::<8>().map(u64::from_le_bytes).unwrap_or(0x9E37_79B9_7F4A_7C15);
            seed | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// A uniform number in `0..n` (`n` > 0).
pub fn below(n: u64) -> u64 {
    // The bias of a modulo over 64 bits is below 2^-40 for any n we see.
    next_random() % n.max(1)
}

/// The indices of `weights` in a weighted random order without
/// replacement: the first is `i` with probability `w[i] / sum(w)`, and so
/// on among the rest. A weight of 0 comes last (still a fallback).
pub fn weighted_order(weights: &[u32]) -> Vec<usize> {
    let mut left: Vec<usize> = (0..weights.len()).collect();
    let mut out = Vec::with_capacity(weights.len());
    while !left.is_empty() {
        let total: u64 = left.iter().map(|&i| u64::from(weights[i])).sum();
        let pick = if total == 0 {
            0
        } else {
            let mut r = below(total);
            left.iter()
                .position(|&i| {
                    let w = u64::from(weights[i]);
                    if r < w {
                        true
                    } else {
                        r -= w;
                        false
                    }
                })
                .unwrap_or(0)
        };
        out.push(left.remove(pick));
    }
    out
}

/// Conversations and the key that served them: bounded in entries (the
/// least recently used is forgotten first) and in time (an entry unused for
/// its time to live is ignored and dropped).
pub struct Affinity {
    inner: Mutex<AffinityInner>,
    entries_max: usize,
    ttl: Duration,
}

#[derive(Default)]
struct AffinityInner {
    /// conversation -> (key id, last use, its turn in `by_turn`)
    entries: HashMap<String, (String, Instant, u64)>,
    /// turn -> conversation, oldest first
    by_turn: BTreeMap<u64, String>,
    turn: u64,
}

impl Affinity {
    pub fn new(entries_max: usize, ttl: Duration) -> Affinity {
        Affinity { inner: Mutex::new(AffinityInner::default()), entries_max, ttl }
    }

    /// The key remembered for `conversation`, if still fresh.
    pub fn get(&self, conversation: &str) -> Option<String> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (key, used, turn) = g.entries.get(conversation).cloned()?;
        if used.elapsed() > self.ttl {
            g.entries.remove(conversation);
            g.by_turn.remove(&turn);
            return None;
        }
        Some(key)
    }

    /// Remembers (or refreshes) `conversation` on `key`.
    pub fn remember(&self, conversation: &str, key: &str) {
        if self.entries_max == 0 {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.turn += 1;
        let turn = g.turn;
        if let Some((_, _, old)) = g.entries.get(conversation).cloned() {
            g.by_turn.remove(&old);
        } else {
            while g.entries.len() >= self.entries_max {
                let Some((_, oldest)) = g.by_turn.pop_first() else { break };
                g.entries.remove(&oldest);
            }
        }
        g.entries.insert(conversation.to_owned(), (key.to_owned(), Instant::now(), turn));
        g.by_turn.insert(turn, conversation.to_owned());
    }

    /// Forgets every conversation on `key` (it was disabled).
    pub fn forget_key(&self, key: &str) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<(String, u64)> =
            g.entries.iter().filter(|(_, (k, _, _))| k == key).map(|(c, (_, _, t))| (c.clone(), *t)).collect();
        for (c, t) in gone {
            g.entries.remove(&c);
            g.by_turn.remove(&t);
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One key's use in the current minute, against its `rpm` and `tpm`.
#[derive(Default, Clone, Copy)]
struct Window {
    minute: u64,
    requests: u64,
    tokens: u64,
}

/// Per-key upstream limits, counted in whole-minute windows (the way
/// providers count them).
#[derive(Default)]
pub struct KeyLimits {
    windows: Mutex<HashMap<String, Window>>,
}

fn minute_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 60)
}

/// Milliseconds until the next minute window opens.
pub fn ms_to_next_minute() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    60_000 - now % 60_000
}

impl KeyLimits {
    /// Takes one request of `key`'s minute when it is under both limits
    /// (`None` = no limit); false when the key must be passed over.
    pub fn take(&self, key: &str, rpm: Option<u32>, tpm: Option<u32>) -> bool {
        if rpm.is_none() && tpm.is_none() {
            return true;
        }
        let minute = minute_now();
        let mut map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let w = map.entry(key.to_owned()).or_default();
        if w.minute != minute {
            *w = Window { minute, ..Window::default() };
        }
        if rpm.is_some_and(|r| w.requests >= u64::from(r)) || tpm.is_some_and(|t| w.tokens >= u64::from(t)) {
            return false;
        }
        w.requests += 1;
        true
    }

    /// Counts the tokens a call of `key` used, once it is known.
    pub fn add_tokens(&self, key: &str, tokens: u64) {
        let minute = minute_now();
        let mut map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = map.get_mut(key).filter(|w| w.minute == minute) {
            w.tokens = w.tokens.saturating_add(tokens);
        }
    }
}

/// The conversation a request belongs to, for affinity: the client's own
/// name for it when it gave one, else a hash of how it starts.
pub fn conversation_of(model: &str, body: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
    use serde_json::Value;
    use sha2::{Digest, Sha256};
    let named = body
        .get("prompt_cache_key")
        .and_then(Value::as_str)
        .map(|k| format!("pck:{k}"))
        .or_else(|| body.pointer_str("metadata", "user_id").map(|u| format!("meta:{u}")))
        .or_else(|| body.get("user").and_then(Value::as_str).map(|u| format!("user:{u}")));
    if let Some(n) = named {
        return Some(format!("{model}\u{0}{n}"));
    }
    // The instructions and the first message name it: every later turn
    // repeats them unchanged.
    let start: Vec<&Value> = ["messages", "contents", "input"]
        .iter()
        .find_map(|k| body.get(*k))
        .map(|v| match v {
            Value::Array(items) => {
                let leading = items
                    .iter()
                    .take_while(|m| matches!(m.get("role").and_then(Value::as_str), Some("system" | "developer")))
                    .count();
                items.iter().take(leading + 1).collect()
            }
            other => vec![other],
        })
        .unwrap_or_default();
    let system = body.get("system").or_else(|| body.get("systemInstruction")).or_else(|| body.get("instructions"));
    if start.is_empty() && system.is_none() {
        return None;
    }
    let mut h = Sha256::new();
    h.update(model.as_bytes());
    for part in system.into_iter().chain(start) {
        h.update([0]);
        h.update(part.to_string().as_bytes());
    }
    Some(format!("{model}\u{0}h:{}", crate::support::token::hex(&h.finalize()[..16])))
}

trait PointerStr {
    fn pointer_str(&self, outer: &str, inner: &str) -> Option<&str>;
}

impl PointerStr for serde_json::Map<String, serde_json::Value> {
    fn pointer_str(&self, outer: &str, inner: &str) -> Option<&str> {
        self.get(outer)?.get(inner)?.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_order_picks_first_in_proportion_to_weight() {
        let mut firsts = [0u32; 3];
        for _ in 0..20_000 {
            firsts[weighted_order(&[1, 2, 7])[0]] += 1;
        }
        let share = |i: usize| f64::from(firsts[i]) / 20_000.0;
        assert!(
            (share(0) - 0.1).abs() < 0.02 && (share(1) - 0.2).abs() < 0.02 && (share(2) - 0.7).abs() < 0.02,
            "{firsts:?}"
        );
        let order = weighted_order(&[0, 5]);
        assert_eq!(order, vec![1, 0], "a zero weight is the last resort");
    }

    #[test]
    fn the_affinity_table_at_its_limit_forgets_the_least_recently_used() {
        let t = Affinity::new(3, Duration::from_secs(60));
        t.remember("a", "k1");
        t.remember("b", "k2");
        t.remember("c", "k3");
        assert_eq!(t.get("a").as_deref(), Some("k1"));
        t.remember("a", "k1"); // a is now the most recent
        t.remember("d", "k1"); // the limit: b, the oldest, goes
        assert_eq!(t.len(), 3);
        assert_eq!(t.get("b"), None);
        assert_eq!(t.get("c").as_deref(), Some("k3"));
        assert_eq!(t.get("d").as_deref(), Some("k1"));
        t.forget_key("k1");
        assert_eq!((t.get("a"), t.get("d"), t.len()), (None, None, 1));
    }

    #[test]
    fn an_affinity_entry_past_its_time_to_live_is_ignored() {
        let t = Affinity::new(10, Duration::from_millis(0));
        t.remember("a", "k1");
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(t.get("a"), None);
        assert!(t.is_empty());
    }

    #[test]
    fn a_key_at_its_rpm_is_passed_over_and_tokens_count_against_tpm() {
        let l = KeyLimits::default();
        assert!(l.take("k", Some(2), None) && l.take("k", Some(2), None));
        assert!(!l.take("k", Some(2), None), "the third request of the minute waits for the next");
        assert!(l.take("j", None, Some(100)));
        l.add_tokens("j", 100);
        assert!(!l.take("j", None, Some(100)));
        assert!(l.take("free", None, None));
    }

    #[test]
    fn a_conversation_is_named_by_the_client_or_by_how_it_starts() {
        let body = |v: serde_json::Value| v.as_object().cloned().unwrap_or_default();
        let first = body(serde_json::json!({"messages": [{"role": "user", "content": "hi"}]}));
        let later = body(
            serde_json::json!({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}),
        );
        let other = body(serde_json::json!({"messages": [{"role": "user", "content": "bye"}]}));
        // A later turn continues the conversation of its first.
        let c = conversation_of("m", &first);
        assert!(c.is_some());
        assert_eq!(conversation_of("m", &later), c);
        assert_ne!(conversation_of("m", &other), c);
        let keyed = body(serde_json::json!({"prompt_cache_key": "x", "user": "u", "messages": []}));
        assert_eq!(conversation_of("m", &keyed).as_deref(), Some("m\u{0}pck:x"));
        let anth = body(serde_json::json!({"metadata": {"user_id": "u7"}}));
        assert_eq!(conversation_of("m", &anth).as_deref(), Some("m\u{0}meta:u7"));
    }
}
