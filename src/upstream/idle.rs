//! Idle upstream connections kept for the next client session.
//!
//! Without it every client session that sends mail opens its own upstream
//! connection (TCP, greeting, EHLO, maybe STARTTLS and AUTH) and closes it
//! when the client leaves. With it, a connection whose last transaction
//! ended cleanly — after the reply to the final dot, or after an RSET
//! answered 2xx — is put back here when its session ends, and the next
//! session's first MAIL takes it instead of connecting.
//!
//! The rules that keep this safe:
//! - A connection is owned by one session at a time: taking it moves it out
//!   of the pool, so two sessions never share one.
//! - Only settled connections come back: no command queued, no reply unread,
//!   nothing failed, no `421` seen, not in the middle of a transaction
//!   (an abandoned one is RSET first, and kept only if that RSET got 2xx),
//!   not marked non-reusable, not older than `max_lifetime_s`, and not
//!   while the gateway shuts down.
//! - Idle connections are checked without a round trip when taken (the
//!   server closed it or said `421` on its idle timeout: thrown away), and
//!   the session treats a failure of the first command on a reused
//!   connection as "stale": it connects afresh before the client hears
//!   anything (see the session's MAIL handler).
//! - Connections idle longer than `max_idle_age_s`, those over
//!   `max_idle` per server (oldest first), and all of them at shutdown are
//!   closed with `QUIT`.
//!
//! Connections are keyed by the configured server (`host:port`): TLS, AUTH
//! and the EHLO name are the same for every session of a gateway, and
//! per-transaction attributes (XFORWARD) are sent with each transaction.

use super::Upstream;
use crate::config::PoolOptions;
use crate::metrics::PoolMetrics;
use async_std::future::timeout;
use async_std::task;
use log::debug;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a QUIT to an idle connection may take before it is just dropped.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

/// One idle connection and since when it waits.
struct Idle {
    /// The connection, between transactions.
    up: Upstream,
    /// When it was put back.
    since: Instant,
}

/// The idle connections of a gateway, per upstream server.
pub struct IdleConnections {
    /// Limits (and whether the pool is on at all).
    options: PoolOptions,
    /// Idle connections per configured server, oldest first.
    idle: Mutex<HashMap<String, VecDeque<Idle>>>,
    /// Hits, misses, the idle gauge.
    metrics: PoolMetrics,
}

impl IdleConnections {
    /// An empty pool with these limits.
    pub fn new(options: PoolOptions, metrics: PoolMetrics) -> IdleConnections {
        IdleConnections {
            options,
            idle: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Whether connections are kept at all.
    pub fn enabled(&self) -> bool {
        self.options.enabled
    }

    /// How often [`reap`](Self::reap) should run: often enough that no
    /// connection stays much past its idle age, at most once a second.
    pub fn reap_interval(&self) -> Duration {
        self.options
            .max_idle_age()
            .div_f64(4.0)
            .clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// Runs `f` on the table; a poisoned lock is still usable (the table
    /// holds no invariant a panic could break halfway).
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, VecDeque<Idle>>) -> T) -> T {
        match self.idle.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// Takes the most recently used idle connection to `origin` that still
    /// looks alive; expired ones met on the way are closed, dead ones
    /// dropped. Counts a hit or a miss.
    pub fn take(&self, origin: &str) -> Option<Upstream> {
        if !self.enabled() {
            return None;
        }
        let now = Instant::now();
        let mut expired = Vec::new();
        let found = loop {
            let next = self.with(|t| t.get_mut(origin).and_then(VecDeque::pop_back));
            let Some(mut idle) = next else { break None };
            self.metrics.idle.dec();
            if let Some(reason) = self.expiry(&idle, now) {
                expired.push((idle.up, reason));
                continue;
            }
            if idle.up.looks_alive() {
                break Some(idle.up);
            }
            debug!("idle upstream connection to {origin} was closed by the server; dropped");
            self.metrics.stale.inc();
        };
        for (up, reason) in expired {
            self.close_later(up, reason);
        }
        match &found {
            Some(_) => self.metrics.hits.inc(),
            None => self.metrics.misses.inc(),
        }
        found
    }

    /// Why `idle` must not be used any more, if it must not.
    fn expiry(&self, idle: &Idle, now: Instant) -> Option<&'static str> {
        if now.duration_since(idle.since) >= self.options.max_idle_age() {
            Some("idle_age")
        } else if now.duration_since(idle.up.opened) >= self.options.max_lifetime() {
            Some("lifetime")
        } else {
            None
        }
    }

    /// Whether a connection in this state may be put back.
    pub fn accepts(&self, up: &Upstream) -> bool {
        self.enabled()
            && up.reusable
            && up.is_settled()
            && up.opened.elapsed() < self.options.max_lifetime()
    }

    /// Puts a settled connection back (the caller checked
    /// [`accepts`](Self::accepts) and that no transaction is open on it);
    /// the oldest idle one of that server is closed when there are
    /// `max_idle` already.
    pub fn put(&self, up: Upstream) {
        let origin = up.origin.clone();
        let max = self.options.max_idle;
        let evicted = self.with(|t| {
            let list = t.entry(origin).or_default();
            list.push_back(Idle {
                up,
                since: Instant::now(),
            });
            if list.len() > max {
                list.pop_front()
            } else {
                None
            }
        });
        self.metrics.idle.inc();
        if let Some(old) = evicted {
            self.metrics.idle.dec();
            self.close_later(old.up, "full");
        }
    }

    /// Closes (QUIT) every connection idle too long or alive too long.
    pub async fn reap(&self) {
        let now = Instant::now();
        let expired: Vec<(Upstream, &'static str)> = self.with(|t| {
            let mut out = Vec::new();
            for list in t.values_mut() {
                let mut keep = VecDeque::with_capacity(list.len());
                for idle in list.drain(..) {
                    match self.expiry(&idle, now) {
                        Some(reason) => out.push((idle.up, reason)),
                        None => keep.push_back(idle),
                    }
                }
                *list = keep;
            }
            t.retain(|_, list| !list.is_empty());
            out
        });
        if expired.is_empty() {
            return;
        }
        self.metrics.idle.sub(expired.len() as i64);
        debug!("closing {} idle upstream connection(s)", expired.len());
        let quits = expired.into_iter().map(|(up, reason)| {
            self.metrics.closed.with_label_values(&[reason]).inc();
            quit(up)
        });
        futures::future::join_all(quits).await;
    }

    /// Closes (QUIT) every idle connection, at shutdown.
    pub async fn close_all(&self) {
        let all: Vec<Upstream> = self.with(|t| {
            t.drain()
                .flat_map(|(_, list)| list.into_iter().map(|i| i.up))
                .collect()
        });
        if all.is_empty() {
            return;
        }
        self.metrics.idle.sub(all.len() as i64);
        self.metrics
            .closed
            .with_label_values(&["shutdown"])
            .inc_by(all.len() as u64);
        debug!("closing {} idle upstream connection(s)", all.len());
        futures::future::join_all(all.into_iter().map(quit)).await;
    }

    /// Closes a connection in the background, so the session that found it
    /// expired does not wait for the QUIT.
    fn close_later(&self, up: Upstream, reason: &'static str) {
        self.metrics.closed.with_label_values(&[reason]).inc();
        task::spawn(quit(up));
    }

    /// Idle connections kept now, all servers together.
    pub fn idle_count(&self) -> usize {
        self.with(|t| t.values().map(VecDeque::len).sum())
    }
}

/// QUIT, bounded in time.
async fn quit(up: Upstream) {
    let _ = timeout(QUIT_TIMEOUT, up.quit()).await;
}
