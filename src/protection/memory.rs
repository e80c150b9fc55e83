//! Rate counters in this process's memory: the default store, per instance.
//!
//! One entry per counter key, holding this window's and the previous
//! window's counts. Memory stays bounded by the clients seen in the last
//! two windows: entries past that are swept out whenever the map has
//! doubled since the last sweep (amortized constant time per hit).

use super::{Store, StoreError};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One counter.
struct Entry {
    /// The window `count` belongs to.
    window: u64,
    /// Events in that window.
    count: u64,
    /// Events in the window before it.
    previous: u64,
    /// When the entry is no longer needed (end of the window after
    /// `window`), in milliseconds since the epoch.
    expires_ms: u128,
}

/// The counters and the sweep threshold.
struct Inner {
    /// Counters by key.
    entries: HashMap<String, Entry>,
    /// Sweep when the map reaches this size.
    sweep_at: usize,
}

/// Counters in memory.
pub struct MemoryStore {
    /// Everything, behind one lock: a hit is a few hash operations.
    inner: Mutex<Inner>,
}

/// Smallest map size at which sweeps start.
const MIN_SWEEP: usize = 1024;

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
        }
    }

    /// Counters held now (for tests of the bound).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when no counter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The synchronous hit behind [`Store::hit`], at time `now_ms`.
    fn hit_at(&self, key: &str, window: u64, len: Duration, now_ms: u128) -> (u64, u64) {
        let mut inner = self.lock();
        if inner.entries.len() >= inner.sweep_at {
            inner.entries.retain(|_, e| e.expires_ms > now_ms);
            inner.sweep_at = (inner.entries.len() * 2).max(MIN_SWEEP);
        }
        let expires_ms = u128::from(window + 2) * len.as_millis();
        let e = inner.entries.entry(key.to_string()).or_insert(Entry {
            window,
            count: 0,
            previous: 0,
            expires_ms,
        });
        if e.window != window {
            e.previous = if e.window + 1 == window { e.count } else { 0 };
            e.count = 0;
            e.window = window;
            e.expires_ms = expires_ms;
        }
        e.count += 1;
        (e.count, e.previous)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl Store for MemoryStore {
    fn hit<'a>(
        &'a self,
        key: &'a str,
        window: u64,
        window_len: Duration,
    ) -> BoxFuture<'a, Result<(u64, u64), StoreError>> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let counts = self.hit_at(key, window, window_len, now);
        Box::pin(async move { Ok(counts) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn windows_roll_over() {
        let s = MemoryStore::new();
        let t = 10 * 60_000;
        assert_eq!(s.hit_at("k", 10, MIN, t), (1, 0));
        assert_eq!(s.hit_at("k", 10, MIN, t), (2, 0));
        assert_eq!(s.hit_at("k", 11, MIN, t + 60_000), (1, 2));
        assert_eq!(s.hit_at("k", 13, MIN, t + 180_000), (1, 0));
        assert_eq!(s.hit_at("other", 13, MIN, t + 180_000), (1, 0));
    }

    #[test]
    fn old_keys_are_swept() {
        let s = MemoryStore::new();
        for i in 0..5000 {
            s.hit_at(&format!("ip{i}"), 1, MIN, 60_000);
        }
        assert_eq!(s.len(), 5000);
        // Three windows later every one of them is stale: the map shrinks
        // back instead of growing with every client ever seen.
        for i in 0..5000 {
            s.hit_at(&format!("new{i}"), 4, MIN, 4 * 60_000);
        }
        assert!(s.len() <= 5000 + MIN_SWEEP, "{}", s.len());
    }
}
