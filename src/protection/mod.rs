//! Per-client protection shared by every session: who is exempt, how many
//! connections each client IP has open, the rate limiter, and the
//! greylisting state (which mail is greylisted, the rules decide).
//!
//! The session asks at its own points (before the greeting, at MAIL, RCPT
//! and a successful AUTH) and turns the answers into replies
//! (`session/protect.rs`); nothing here touches a socket except the Redis
//! store. Rate checks may wait on Redis, so they stay outside the
//! synchronous filter chain.

mod greylist;
mod greylist_store;
mod limiter;
mod memory;
mod redis_store;
mod triplet;

pub use greylist::{greylisted_reply, unavailable_reply, Answer, Greylist, Seen, GREYLIST_RESULTS};
pub use greylist_store::{GreylistStore, MemoryGreylist, RedisGreylist, Write};
pub use limiter::{Decision, Kind, RateLimiter};
pub use memory::MemoryStore;
pub use redis_store::RedisStore;
pub use triplet::{check_triplet, client_network, normalise_local, normalise_sender, Triplet};

use crate::config::{Network, Protection as Options, StoreUrl};
use futures::future::BoxFuture;
use ipnet::IpNet;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why a store could not answer.
#[derive(Debug)]
pub enum StoreError {
    /// It did not answer within the configured time.
    Timeout,
    /// It is down (connection refused, closed) or answered with an error.
    Failed(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Timeout => f.write_str("timed out"),
            StoreError::Failed(why) => f.write_str(why),
        }
    }
}

/// Where rate counters live: in memory or in Redis. Counters are kept per
/// fixed window; the limiter weighs the previous window in (a sliding
/// window estimate), so the store returns both counts.
pub trait Store: Send + Sync {
    /// Adds one to the counter `key` for window number `window` (windows
    /// are `window_len` long) and returns `(this window's count after the
    /// increment, the previous window's count)`. A counter may be
    /// forgotten two windows after its own.
    fn hit<'a>(
        &'a self,
        key: &'a str,
        window: u64,
        window_len: Duration,
    ) -> BoxFuture<'a, Result<(u64, u64), StoreError>>;
}

/// The key a client IP is counted under: an IPv4 address as is (also
/// when it arrives IPv4-mapped), an IPv6 address by its /64, which one
/// host or site usually owns whole.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// Connections open per client key, shared with the slots that count in it.
type OpenCounts = Arc<Mutex<HashMap<IpAddr, u32>>>;

/// A connection counted against its client's per-IP limit; gives its place
/// back when dropped, however the session ends.
pub struct ConnectionSlot {
    /// The shared counts.
    open: OpenCounts,
    /// The client key counted.
    key: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                // Keeps the map as small as the set of connected clients.
                open.remove(&self.key);
            }
        }
    }
}

/// The gateway's per-client protection.
pub struct Protection {
    /// The configured options.
    pub options: Options,
    /// Networks exempt from per-client protection.
    exempt: Vec<IpNet>,
    /// Connections open per client key (in this instance).
    open: OpenCounts,
    /// The rate limiter.
    pub rates: RateLimiter,
}

impl Protection {
    /// Builds the protection for `options`; `trusted` are the relay's
    /// trusted networks, the default exemption. A Redis store is only
    /// connected to at its first use.
    pub fn new(options: &Options, trusted: &[Network]) -> Result<Protection, String> {
        let exempt = options
            .exempt_networks
            .as_deref()
            .unwrap_or(trusted)
            .iter()
            .map(|n| n.0)
            .collect();
        let r = &options.rate_limits;
        let timeout = Duration::from_millis(r.timeout_ms);
        let store: Box<dyn Store> = match &r.store {
            StoreUrl::Memory => Box::new(MemoryStore::new()),
            StoreUrl::Redis(url) => Box::new(RedisStore::new(url, timeout)?),
        };
        Ok(Protection {
            options: options.clone(),
            exempt,
            open: Arc::new(Mutex::new(HashMap::new())),
            rates: RateLimiter::new(r, store),
        })
    }

    /// True when `ip` is in an exempt network (IPv4-mapped addresses count
    /// as IPv4).
    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.exempt.iter().any(|n| n.contains(&ip))
    }

    /// Counts a new connection from `ip`; `None` when the client already
    /// has `max_connections_per_ip` open (the limit is off at 0).
    pub fn open_connection(&self, ip: IpAddr) -> Option<ConnectionSlot> {
        let key = client_key(ip);
        let max = self.options.max_connections_per_ip;
        let mut open = lock(&self.open);
        let n = open.entry(key).or_insert(0);
        if max > 0 && *n >= max {
            if *n == 0 {
                open.remove(&key);
            }
            return None;
        }
        *n += 1;
        Some(ConnectionSlot {
            open: self.open.clone(),
            key,
        })
    }

    /// Counts connections in the same table as `previous`: a reload that
    /// changes the protection settings keeps the connections open now
    /// counted against the per-IP limit.
    pub fn share_open_counts(&mut self, previous: &Protection) {
        self.open = previous.open.clone();
    }

    /// Connections open now from `ip`'s client key.
    pub fn open_from(&self, ip: IpAddr) -> u32 {
        lock(&self.open).get(&client_key(ip)).copied().unwrap_or(0)
    }
}

/// Locks a mutex, going on with the data if a holder panicked (the counts
/// stay usable; a panic elsewhere must not stop every session).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protection(yaml: &str) -> Protection {
        let c = crate::config::Config::from_yaml(yaml, "t").unwrap();
        Protection::new(&c.protection, &c.relay.trusted_networks).unwrap()
    }

    #[test]
    fn ipv6_clients_count_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn slots_are_given_back() {
        let p = protection("protection: { max_connections_per_ip: 2 }\n");
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let a = p.open_connection(ip).unwrap();
        let b = p.open_connection(ip).unwrap();
        assert!(p.open_connection(ip).is_none());
        assert!(p.open_connection("192.0.2.8".parse().unwrap()).is_some());
        drop(a);
        let c = p.open_connection(ip).unwrap();
        assert_eq!(p.open_from(ip), 2);
        drop((b, c));
        assert_eq!(p.open_from(ip), 0);
        assert!(lock(&p.open).is_empty());
    }

    #[test]
    fn exemption_defaults_to_trusted_networks() {
        let p = protection("");
        assert!(p.is_exempt("127.0.0.9".parse().unwrap()));
        assert!(p.is_exempt("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!p.is_exempt("192.0.2.7".parse().unwrap()));
        let p = protection("protection: { exempt_networks: [] }\n");
        assert!(!p.is_exempt("127.0.0.1".parse().unwrap()));
        let p = protection(
            "relay: { trusted_networks: [] }\nprotection: { exempt_networks: [192.0.2.0/24] }\n",
        );
        assert!(p.is_exempt("192.0.2.7".parse().unwrap()));
        assert!(!p.is_exempt("127.0.0.1".parse().unwrap()));
    }
}
