//! Which upstream server a session opens: the configured servers in order,
//! with failover.
//!
//! A server that cannot be connected to, or fails its greeting, TLS or
//! AUTH, is marked down for `retry_after_s` and skipped by later sessions
//! until then; after that it is probed again. Failover happens only while a
//! session is being opened — before MAIL — so a message always goes to
//! exactly one server, never to two. Host names are resolved at each
//! connect. The table is shared by all sessions.

use super::{Opening, TlsClient, TlsPolicy, Upstream, UpstreamCredentials, UpstreamError};
use crate::config::{self, Timeouts, TlsMode, UpstreamStartTls};
use log::{info, warn};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// One configured server and its health.
struct Target {
    /// `host:port`.
    addr: String,
    /// Until when it is skipped after a failure.
    down_until: Mutex<Option<Instant>>,
}

impl Target {
    /// True while the server is skipped.
    fn is_down(&self, now: Instant) -> bool {
        match self.down_until.lock() {
            Ok(g) => g.is_some_and(|t| t > now),
            Err(p) => p.into_inner().is_some_and(|t| t > now),
        }
    }

    /// Sets (or clears, with `None`) the skip deadline.
    fn set_down_until(&self, until: Option<Instant>) {
        match self.down_until.lock() {
            Ok(mut g) => *g = until,
            Err(p) => *p.into_inner() = until,
        }
    }
}

/// The upstream servers of a gateway, with TLS and AUTH settings.
pub struct UpstreamPool {
    /// The servers, in the order they are tried.
    targets: Vec<Target>,
    /// TLS for every server, if configured.
    tls: Option<TlsClient>,
    /// AUTH for every server, if configured.
    auth: Option<UpstreamCredentials>,
    /// How long a failed server is skipped.
    retry_after: Duration,
}

impl UpstreamPool {
    /// Builds the pool from the `upstream` section: loads the CA roots and
    /// the AUTH password. `tls_verify: false` is logged as a warning.
    pub fn new(up: &config::Upstream) -> Result<UpstreamPool, String> {
        let policy = match (up.tls, up.starttls) {
            (TlsMode::Implicit, _) => TlsPolicy::Implicit,
            (TlsMode::None, UpstreamStartTls::None) => TlsPolicy::Plain,
            (TlsMode::None, UpstreamStartTls::Opportunistic) => TlsPolicy::Opportunistic,
            (TlsMode::None, UpstreamStartTls::Required) => TlsPolicy::Required,
        };
        let tls = if policy == TlsPolicy::Plain {
            None
        } else {
            if !up.tls_verify {
                warn!(
                    "upstream.tls_verify is false: the upstream's certificate is NOT verified; \
                     anyone on the path can read and change relayed mail"
                );
            }
            Some(TlsClient {
                policy,
                config: crate::tls::client_config(up)?,
                server_name: up.server_name.clone(),
            })
        };
        let auth = match &up.auth {
            Some(a) => Some(UpstreamCredentials {
                user: a.user.clone(),
                password: Zeroizing::new(a.read_password()?),
            }),
            None => None,
        };
        Ok(UpstreamPool {
            targets: up
                .addrs()
                .map(|addr| Target {
                    addr: addr.to_string(),
                    down_until: Mutex::new(None),
                })
                .collect(),
            tls,
            auth,
            retry_after: Duration::from_secs(up.retry_after_s),
        })
    }

    /// Opens a session to the first server that works: those not marked
    /// down first, in order, then — rather than fail without trying — those
    /// marked down. Returns the last error when none works.
    pub async fn connect(
        &self,
        helo: &str,
        timeouts: &Timeouts,
    ) -> Result<Upstream, UpstreamError> {
        let opening = Opening {
            helo,
            timeouts,
            tls: self.tls.as_ref(),
            auth: self.auth.as_ref(),
        };
        let now = Instant::now();
        let (up, down): (Vec<&Target>, Vec<&Target>) =
            self.targets.iter().partition(|t| !t.is_down(now));
        let mut last = None;
        for target in up.into_iter().chain(down) {
            match Upstream::open(&target.addr, &opening).await {
                Ok(session) => {
                    if target.is_down(Instant::now()) {
                        info!("upstream {} is back", target.addr);
                    }
                    target.set_down_until(None);
                    return Ok(session);
                }
                Err(e) => {
                    warn!(
                        "upstream {} failed: {e}; skipping it for {}s",
                        target.addr,
                        self.retry_after.as_secs()
                    );
                    target.set_down_until(Some(Instant::now() + self.retry_after));
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(UpstreamError::Closed))
    }

    /// The servers, in order, each with whether it is currently skipped.
    pub fn status(&self) -> Vec<(String, bool)> {
        let now = Instant::now();
        self.targets
            .iter()
            .map(|t| (t.addr.clone(), t.is_down(now)))
            .collect()
    }
}
