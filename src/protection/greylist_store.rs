//! Where greylisting state lives: in memory (bounded, expiring) or in
//! Redis, shared by every instance that names it.
//!
//! The greylister needs two reads (a triplet, a network's pass count) and
//! a few writes, each key with its own expiry, so a store offers exactly
//! that: [`GreylistStore::read`] and [`GreylistStore::write`]. In Redis a
//! read is one `MGET` and a write one `MULTI`/`EXEC` pipeline, on the
//! multiplexed connection (and its fail-fast reconnect pause) of the rate
//! limits' [`RedisStore`]; every key expires on its own, so Redis holds
//! only live state.

use super::{RedisStore, StoreError};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// One change to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Sets `key` to `value` for `ttl`, unless it holds a value already
    /// (the first attempt another instance recorded first stays).
    SetNew {
        /// The key.
        key: String,
        /// Its value.
        value: String,
        /// How long it lives.
        ttl: Duration,
    },
    /// Sets `key` to `value` for `ttl`.
    Set {
        /// The key.
        key: String,
        /// Its value.
        value: String,
        /// How long it lives.
        ttl: Duration,
    },
    /// Adds one to the count at `key` and makes it live `ttl` from now.
    Count {
        /// The key.
        key: String,
        /// How long it lives.
        ttl: Duration,
    },
    /// Makes `key` live `ttl` from now, if it exists.
    Touch {
        /// The key.
        key: String,
        /// How long it lives.
        ttl: Duration,
    },
}

/// A store of expiring keys. `now_ms` is the greylister's clock (ms since
/// the epoch): the memory store expires by it, Redis by its own.
pub trait GreylistStore: Send + Sync {
    /// The values of `keys` (`None` for a missing or expired key).
    fn read<'a>(
        &'a self,
        keys: &'a [String],
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Option<String>>, StoreError>>;

    /// Applies `writes`, in order (in Redis, atomically).
    fn write<'a>(
        &'a self,
        writes: &'a [Write],
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// One key in memory.
struct Entry {
    /// Its value.
    value: String,
    /// When it expires, in ms since the epoch.
    expires_ms: u64,
}

/// Greylisting state in this process: at most `max` keys. When full, the
/// expired keys go, then the tenth closest to expiry (first attempts that
/// were never retried, usually), so a flood of new triplets cannot grow
/// memory without bound.
pub struct MemoryGreylist {
    /// The keys.
    entries: Mutex<HashMap<String, Entry>>,
    /// The bound.
    max: usize,
}

impl MemoryGreylist {
    /// An empty store of at most `max` keys.
    pub fn new(max: usize) -> MemoryGreylist {
        MemoryGreylist {
            entries: Mutex::new(HashMap::new()),
            max: max.max(10),
        }
    }

    /// Keys held now, expired ones included until the next sweep.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        match self.entries.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Room for one more key.
    fn make_room(entries: &mut HashMap<String, Entry>, max: usize, now_ms: u64) {
        if entries.len() < max {
            return;
        }
        entries.retain(|_, e| e.expires_ms > now_ms);
        if entries.len() < max {
            return;
        }
        let mut expiries: Vec<u64> = entries.values().map(|e| e.expires_ms).collect();
        let cut = expiries.len() / 10;
        let (_, nth, _) = expiries.select_nth_unstable(cut);
        let limit = *nth;
        entries.retain(|_, e| e.expires_ms > limit);
    }

    /// The synchronous write behind [`GreylistStore::write`].
    fn apply(&self, writes: &[Write], now_ms: u64) {
        let mut entries = self.lock();
        let at = |ttl: &Duration| now_ms.saturating_add(ttl.as_millis() as u64);
        for w in writes {
            match w {
                Write::SetNew { key, value, ttl } | Write::Set { key, value, ttl } => {
                    let live = entries.get(key).is_some_and(|e| e.expires_ms > now_ms);
                    if live && matches!(w, Write::SetNew { .. }) {
                        continue;
                    }
                    if !live {
                        MemoryGreylist::make_room(&mut entries, self.max, now_ms);
                    }
                    entries.insert(
                        key.clone(),
                        Entry {
                            value: value.clone(),
                            expires_ms: at(ttl),
                        },
                    );
                }
                Write::Count { key, ttl } => {
                    let count = match entries.get(key) {
                        Some(e) if e.expires_ms > now_ms => e.value.parse::<u64>().unwrap_or(0) + 1,
                        _ => {
                            MemoryGreylist::make_room(&mut entries, self.max, now_ms);
                            1
                        }
                    };
                    entries.insert(
                        key.clone(),
                        Entry {
                            value: count.to_string(),
                            expires_ms: at(ttl),
                        },
                    );
                }
                Write::Touch { key, ttl } => {
                    if let Some(e) = entries.get_mut(key) {
                        if e.expires_ms > now_ms {
                            e.expires_ms = at(ttl);
                        }
                    }
                }
            }
        }
    }
}

impl GreylistStore for MemoryGreylist {
    fn read<'a>(
        &'a self,
        keys: &'a [String],
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Option<String>>, StoreError>> {
        let entries = self.lock();
        let values = keys
            .iter()
            .map(|k| {
                entries
                    .get(k)
                    .filter(|e| e.expires_ms > now_ms)
                    .map(|e| e.value.clone())
            })
            .collect();
        Box::pin(futures::future::ready(Ok(values)))
    }

    fn write<'a>(
        &'a self,
        writes: &'a [Write],
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.apply(writes, now_ms);
        Box::pin(futures::future::ready(Ok(())))
    }
}

/// Greylisting state in Redis, over the rate limits' connection handling.
pub struct RedisGreylist {
    /// The connection (connected at first use).
    redis: RedisStore,
    /// Limit on each operation.
    timeout: Duration,
}

impl RedisGreylist {
    /// A store for the Redis at `url`; connects at first use.
    pub fn new(url: &str, timeout: Duration) -> Result<RedisGreylist, String> {
        Ok(RedisGreylist {
            redis: RedisStore::new(url, timeout)?,
            timeout,
        })
    }

    /// Runs `query` with the timeout; a failure drops the connection so
    /// the next operation reconnects.
    async fn run<T: redis::FromRedisValue>(&self, pipe: redis::Pipeline) -> Result<T, StoreError> {
        let mut conn = self.redis.connection().await?;
        let query = pipe.query_async::<T>(&mut conn);
        match async_std::future::timeout(self.timeout, query).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.redis.drop_connection().await;
                Err(StoreError::Failed(e.to_string()))
            }
            Err(_) => {
                self.redis.drop_connection().await;
                Err(StoreError::Timeout)
            }
        }
    }
}

/// Milliseconds of a TTL for Redis: at least 1 (0 would be refused).
fn px(ttl: &Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

impl GreylistStore for RedisGreylist {
    fn read<'a>(
        &'a self,
        keys: &'a [String],
        _now_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Option<String>>, StoreError>> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            for k in keys {
                pipe.get(k);
            }
            self.run::<Vec<Option<String>>>(pipe).await
        })
    }

    fn write<'a>(
        &'a self,
        writes: &'a [Write],
        _now_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for w in writes {
                match w {
                    Write::SetNew { key, value, ttl } => {
                        pipe.cmd("SET")
                            .arg(key)
                            .arg(value)
                            .arg("NX")
                            .arg("PX")
                            .arg(px(ttl))
                            .ignore();
                    }
                    Write::Set { key, value, ttl } => {
                        pipe.cmd("SET")
                            .arg(key)
                            .arg(value)
                            .arg("PX")
                            .arg(px(ttl))
                            .ignore();
                    }
                    Write::Count { key, ttl } => {
                        pipe.incr(key, 1u64)
                            .ignore()
                            .pexpire(key, px(ttl) as i64)
                            .ignore();
                    }
                    Write::Touch { key, ttl } => {
                        pipe.pexpire(key, px(ttl) as i64).ignore();
                    }
                }
            }
            self.run::<()>(pipe).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(s: &MemoryGreylist, key: &str, now: u64) -> Option<String> {
        let keys = [key.to_string()];
        async_std::task::block_on(s.read(&keys, now))
            .unwrap()
            .remove(0)
    }

    #[test]
    fn keys_expire_and_set_new_keeps_the_first() {
        let s = MemoryGreylist::new(100);
        let ttl = Duration::from_secs(10);
        let w = |key: &str, value: &str| Write::SetNew {
            key: key.into(),
            value: value.into(),
            ttl,
        };
        s.apply(&[w("a", "1")], 0);
        s.apply(&[w("a", "2")], 5_000);
        assert_eq!(read(&s, "a", 9_999).as_deref(), Some("1"));
        assert_eq!(read(&s, "a", 10_000), None);
        s.apply(&[w("a", "3")], 10_000);
        assert_eq!(read(&s, "a", 10_001).as_deref(), Some("3"));
        let c = Write::Count {
            key: "n".into(),
            ttl,
        };
        s.apply(&[c.clone(), c.clone()], 0);
        assert_eq!(read(&s, "n", 1).as_deref(), Some("2"));
        s.apply(&[c], 20_000);
        assert_eq!(read(&s, "n", 20_001).as_deref(), Some("1"));
        s.apply(
            &[Write::Touch {
                key: "n".into(),
                ttl: Duration::from_secs(100),
            }],
            25_000,
        );
        assert_eq!(read(&s, "n", 100_000).as_deref(), Some("1"));
    }

    #[test]
    fn memory_stays_bounded() {
        let s = MemoryGreylist::new(100);
        for i in 0..10_000u64 {
            s.apply(
                &[Write::Set {
                    key: format!("k{i}"),
                    value: "v".into(),
                    ttl: Duration::from_millis(1_000_000 + i),
                }],
                0,
            );
        }
        assert!(s.len() <= 100, "{}", s.len());
        // The newest keys stay; the ones closest to expiry went first.
        assert_eq!(read(&s, "k9999", 1).as_deref(), Some("v"));
        assert_eq!(read(&s, "k0", 1), None);
    }
}
