//! The rate limiter: one logic over any [`Store`].
//!
//! Each limit counts events in fixed windows (a minute for connections, an
//! hour for messages and recipients) and compares a sliding-window
//! estimate with the limit: the previous window's count, weighted by how
//! much of it still lies within one window length of now, plus the
//! current window's. This avoids the double burst a plain fixed window
//! allows at its boundary, and costs one counter per window (one `INCR`
//! in Redis). Every event counts, refused ones too (as Postfix's anvil):
//! a client that keeps hammering while over its limit stays over.
//!
//! A store that cannot answer makes the check fail open (allowed, logged
//! loudly at most every 10 seconds) or, with `fail_closed`, report
//! [`Decision::Unavailable`].

use super::{Store, StoreError};
use crate::config::{redacted, RateLimitSet, RateLimits, StoreUrl};
use log::{error, info};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What is being counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A new connection (per IP) or a successful login (per user).
    Connection,
    /// A MAIL command.
    Message,
    /// A RCPT command.
    Recipient,
}

impl Kind {
    /// The window the limit is per.
    fn window(self) -> Duration {
        match self {
            Kind::Connection => Duration::from_secs(60),
            Kind::Message | Kind::Recipient => Duration::from_secs(3600),
        }
    }

    /// The limit for this kind in `set` (0: unlimited).
    fn limit(self, set: &RateLimitSet) -> u64 {
        match self {
            Kind::Connection => set.connections_per_minute,
            Kind::Message => set.messages_per_hour,
            Kind::Recipient => set.recipients_per_hour,
        }
    }

    /// Short name in store keys.
    fn short(self) -> &'static str {
        match self {
            Kind::Connection => "conn",
            Kind::Message => "msg",
            Kind::Recipient => "rcpt",
        }
    }
}

/// The answer of a rate check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Under every limit (or the store failed open).
    Allow,
    /// Over a limit: its name as in the configuration, e.g.
    /// `per_ip.messages_per_hour`.
    Over(&'static str),
    /// The store could not answer and the limiter fails closed.
    Unavailable,
}

/// How a store failure was last reported, so a dead Redis gives one loud
/// line every few seconds rather than one per message.
struct Outage {
    /// When the last line was logged.
    logged: Option<Instant>,
    /// Checks that failed since that line.
    since: u64,
    /// The store is failing (for the "reachable again" line).
    down: bool,
}

/// Seconds between two log lines about the same store outage.
const OUTAGE_LOG_EVERY: Duration = Duration::from_secs(10);

/// Rate limits per client IP and per user, over one store.
pub struct RateLimiter {
    /// The limits.
    per_ip: RateLimitSet,
    /// The limits per user.
    per_user: RateLimitSet,
    /// Prefix of every counter key.
    prefix: String,
    /// Refuse rather than allow when the store fails.
    fail_closed: bool,
    /// Where the counters are.
    store: Box<dyn Store>,
    /// The store, for log lines (password redacted).
    store_name: String,
    /// The longest a check may wait for the store.
    timeout: Duration,
    /// Outage reporting state.
    outage: Mutex<Outage>,
}

impl RateLimiter {
    /// A limiter for `options` over `store`.
    pub fn new(options: &RateLimits, store: Box<dyn Store>) -> RateLimiter {
        RateLimiter {
            per_ip: options.per_ip,
            per_user: options.per_user,
            prefix: options.key_prefix.clone(),
            fail_closed: options.fail_closed,
            store,
            store_name: match &options.store {
                StoreUrl::Memory => "memory".to_string(),
                StoreUrl::Redis(url) => redacted(url),
            },
            timeout: Duration::from_millis(options.timeout_ms),
            outage: Mutex::new(Outage {
                logged: None,
                since: 0,
                down: false,
            }),
        }
    }

    /// True when some limit of this kind is configured for the client IP
    /// (`ip` given) or the user (`user` given): only then is the store asked.
    pub fn applies(&self, kind: Kind, ip: Option<IpAddr>, user: Option<&str>) -> bool {
        (ip.is_some() && kind.limit(&self.per_ip) > 0)
            || (user.is_some() && kind.limit(&self.per_user) > 0)
    }

    /// Counts one event of `kind` for the client key `ip` (`None`: exempt,
    /// not counted per IP) and the logged-in `user`, and says whether it
    /// is over a limit. The IP limit is checked first; an event over it is
    /// not counted for the user.
    pub async fn check(&self, kind: Kind, ip: Option<IpAddr>, user: Option<&str>) -> Decision {
        if let Some(ip) = ip {
            let limit = kind.limit(&self.per_ip);
            if limit > 0 {
                let key = format!("{}ip:{}:{}", self.prefix, kind.short(), ip);
                match self.over(&key, kind, limit).await {
                    Ok(false) => {}
                    Ok(true) => return Decision::Over(ip_name(kind)),
                    Err(()) => return self.unavailable(),
                }
            }
        }
        if let Some(user) = user {
            let limit = kind.limit(&self.per_user);
            if limit > 0 {
                let user = user.to_lowercase();
                let key = format!("{}user:{}:{}", self.prefix, kind.short(), user);
                match self.over(&key, kind, limit).await {
                    Ok(false) => {}
                    Ok(true) => return Decision::Over(user_name(kind)),
                    Err(()) => return self.unavailable(),
                }
            }
        }
        Decision::Allow
    }

    /// What a failed store means: refuse, or allow.
    fn unavailable(&self) -> Decision {
        if self.fail_closed {
            Decision::Unavailable
        } else {
            Decision::Allow
        }
    }

    /// Counts one event under `key` and compares the sliding estimate with
    /// `limit`. `Err` when the store failed (already logged).
    async fn over(&self, key: &str, kind: Kind, limit: u64) -> Result<bool, ()> {
        let len = kind.window();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let window = now.as_millis() / len.as_millis();
        let into = (now.as_millis() % len.as_millis()) as f64 / len.as_millis() as f64;
        let hit =
            async_std::future::timeout(self.timeout, self.store.hit(key, window as u64, len)).await;
        let result = match hit {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout),
        };
        match result {
            Ok((current, previous)) => {
                self.store_ok();
                Ok(estimate(current, previous, into) > limit as f64)
            }
            Err(e) => {
                self.store_failed(&e);
                Err(())
            }
        }
    }

    /// Logs a store failure: loudly, but at most once every
    /// [`OUTAGE_LOG_EVERY`], with the number of checks affected.
    fn store_failed(&self, e: &StoreError) {
        let mut o = match self.outage.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        o.since += 1;
        o.down = true;
        if o.logged.is_none_or(|t| t.elapsed() >= OUTAGE_LOG_EVERY) {
            let mode = if self.fail_closed {
                "failing CLOSED: mail is refused with 451 4.3.0 until it is back"
            } else {
                "failing OPEN: mail flows without rate limits until it is back"
            };
            error!(
                "RATE LIMITS: store {} unavailable ({e}); {mode} ({} check(s) affected)",
                self.store_name, o.since
            );
            o.logged = Some(Instant::now());
            o.since = 0;
        }
    }

    /// Notes a store answer; after an outage, says it is back.
    fn store_ok(&self) {
        let mut o = match self.outage.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if o.down {
            o.down = false;
            o.logged = None;
            info!(
                "RATE LIMITS: store {} reachable again ({} check(s) affected since the last report)",
                self.store_name, o.since
            );
            o.since = 0;
        }
    }
}

/// The sliding-window estimate: the current window's count plus the part
/// of the previous one still within one window length (`into` is how far
/// into the current window we are, 0..1).
fn estimate(current: u64, previous: u64, into: f64) -> f64 {
    current as f64 + previous as f64 * (1.0 - into)
}

/// `per_ip.<key>`.
fn ip_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Connection => "per_ip.connections_per_minute",
        Kind::Message => "per_ip.messages_per_hour",
        Kind::Recipient => "per_ip.recipients_per_hour",
    }
}

/// `per_user.<key>`.
fn user_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Connection => "per_user.connections_per_minute",
        Kind::Message => "per_user.messages_per_hour",
        Kind::Recipient => "per_user.recipients_per_hour",
    }
}

#[cfg(test)]
mod tests {
    use super::super::MemoryStore;
    use super::*;
    use futures::future::BoxFuture;

    fn limits(yaml: &str) -> RateLimits {
        let c = crate::config::Config::from_yaml(yaml, "t").unwrap();
        c.protection.rate_limits
    }

    #[test]
    fn sliding_estimate() {
        assert_eq!(estimate(3, 0, 0.5), 3.0);
        assert_eq!(estimate(1, 10, 0.75), 3.5);
        assert_eq!(estimate(0, 10, 0.0), 10.0);
        assert_eq!(ip_name(Kind::Recipient), "per_ip.recipients_per_hour");
        assert_eq!(
            user_name(Kind::Connection),
            "per_user.connections_per_minute"
        );
    }

    #[test]
    fn counts_per_ip_and_per_user() {
        let l = RateLimiter::new(
            &limits(
                "protection:\n  rate_limits:\n    per_ip: { messages_per_hour: 2 }\n    \
                 per_user: { messages_per_hour: 3 }\n",
            ),
            Box::new(MemoryStore::new()),
        );
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        async_std::task::block_on(async {
            assert_eq!(l.check(Kind::Message, Some(a), None).await, Decision::Allow);
            assert_eq!(l.check(Kind::Message, Some(a), None).await, Decision::Allow);
            assert_eq!(
                l.check(Kind::Message, Some(a), None).await,
                Decision::Over("per_ip.messages_per_hour")
            );
            // Recipients are counted apart from messages.
            assert_eq!(
                l.check(Kind::Recipient, Some(a), None).await,
                Decision::Allow
            );
            // The user limit follows the user across addresses, without case.
            assert_eq!(
                l.check(Kind::Message, Some(b), Some("Al")).await,
                Decision::Allow
            );
            assert_eq!(
                l.check(Kind::Message, None, Some("al")).await,
                Decision::Allow
            );
            assert_eq!(
                l.check(Kind::Message, None, Some("AL")).await,
                Decision::Allow
            );
            assert_eq!(
                l.check(Kind::Message, None, Some("al")).await,
                Decision::Over("per_user.messages_per_hour")
            );
        });
        assert!(l.applies(Kind::Message, Some(a), None));
        assert!(!l.applies(Kind::Connection, Some(a), Some("al")));
    }

    /// A store that never answers.
    struct Stalled;
    impl Store for Stalled {
        fn hit<'a>(
            &'a self,
            _: &'a str,
            _: u64,
            _: Duration,
        ) -> BoxFuture<'a, Result<(u64, u64), StoreError>> {
            Box::pin(futures::future::pending())
        }
    }

    #[test]
    fn a_stalled_store_fails_open_or_closed_in_time() {
        for (closed, want) in [(false, Decision::Allow), (true, Decision::Unavailable)] {
            let yaml = format!(
                "protection:\n  rate_limits:\n    timeout_ms: 50\n    fail_closed: {closed}\n    \
                 per_ip: {{ recipients_per_hour: 1 }}\n"
            );
            let l = RateLimiter::new(&limits(&yaml), Box::new(Stalled));
            let started = Instant::now();
            let ip = Some("192.0.2.1".parse().unwrap());
            let got = async_std::task::block_on(l.check(Kind::Recipient, ip, None));
            assert_eq!(got, want);
            assert!(started.elapsed() < Duration::from_secs(5));
        }
    }
}
