//! Rate counters in Redis, shared by every instance that names the same
//! server (and key prefix).
//!
//! Each hit is one atomic round trip (`MULTI; INCR cur; PEXPIRE cur;
//! GET prev; EXEC`) on one multiplexed connection shared by all sessions.
//! Counter keys are `<prefix><scope>:<kind>:<who>:<window>` and expire two
//! windows after their own, so Redis holds only live counters.
//!
//! A Redis that is down must not stall mail: every operation has the
//! configured timeout, and after a failed connect no new attempt is made
//! for a second (checks in between fail at once).

use super::{Store, StoreError};
use async_lock::Mutex;
use futures::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use std::time::{Duration, Instant};

/// How long to wait after a failed connect before trying again.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// The connection, or when to try connecting again.
enum Link {
    /// Connected.
    Up(MultiplexedConnection),
    /// Not connected; do not try before this instant (`None`: try now).
    Down(Option<Instant>),
}

/// A Redis server as a counter store.
pub struct RedisStore {
    /// Parsed URL.
    client: redis::Client,
    /// The shared connection; the lock is held only to connect.
    link: Mutex<Link>,
    /// Limit on connecting and on each operation.
    timeout: Duration,
}

impl RedisStore {
    /// A store for `url`; connects at first use, not here (a Redis that is
    /// down at start-up must not stop the gateway).
    pub fn new(url: &str, timeout: Duration) -> Result<RedisStore, String> {
        let client = redis::Client::open(url).map_err(|e| format!("bad Redis URL: {e}"))?;
        Ok(RedisStore {
            client,
            link: Mutex::new(Link::Down(None)),
            timeout,
        })
    }

    /// The connection, connecting if needed (unless a recent attempt failed).
    pub(super) async fn connection(&self) -> Result<MultiplexedConnection, StoreError> {
        let mut link = self.link.lock().await;
        match &*link {
            Link::Up(c) => return Ok(c.clone()),
            Link::Down(Some(at)) if Instant::now() < *at => {
                return Err(StoreError::Failed(
                    "not connected (retrying shortly)".into(),
                ))
            }
            Link::Down(_) => {}
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let connect = self
            .client
            .get_multiplexed_async_connection_with_config(&config);
        let result = match async_std::future::timeout(self.timeout, connect).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(StoreError::Failed(format!("cannot connect: {e}"))),
            Err(_) => Err(StoreError::Timeout),
        };
        match result {
            Ok(c) => {
                *link = Link::Up(c.clone());
                Ok(c)
            }
            Err(e) => {
                *link = Link::Down(Some(Instant::now() + RECONNECT_AFTER));
                Err(e)
            }
        }
    }

    /// Forgets a connection that failed, so the next hit reconnects.
    pub(super) async fn drop_connection(&self) {
        let mut link = self.link.lock().await;
        if matches!(*link, Link::Up(_)) {
            *link = Link::Down(None);
        }
    }
}

impl Store for RedisStore {
    fn hit<'a>(
        &'a self,
        key: &'a str,
        window: u64,
        window_len: Duration,
    ) -> BoxFuture<'a, Result<(u64, u64), StoreError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            let current = format!("{key}:{window}");
            let previous = format!("{key}:{}", window.saturating_sub(1));
            let ttl_ms = (window_len * 2).as_millis() as u64;
            let mut pipe = redis::pipe();
            pipe.atomic()
                .incr(&current, 1u64)
                .pexpire(&current, ttl_ms as i64)
                .ignore()
                .get(&previous);
            let query = pipe.query_async::<(u64, Option<u64>)>(&mut conn);
            match async_std::future::timeout(self.timeout, query).await {
                Ok(Ok((count, prev))) => Ok((count, prev.unwrap_or(0))),
                Ok(Err(e)) => {
                    self.drop_connection().await;
                    Err(StoreError::Failed(e.to_string()))
                }
                Err(_) => {
                    self.drop_connection().await;
                    Err(StoreError::Timeout)
                }
            }
        })
    }
}
