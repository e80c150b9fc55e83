//! Which upstream server a session opens: the configured servers in order,
//! with failover.
//!
//! A server that cannot be connected to, or fails its greeting, TLS or
//! AUTH, is marked down for `retry_after_s` and skipped by later sessions
//! until then; after that it is probed again. Failover happens only while a
//! session is being opened — before MAIL — so a message always goes to
//! exactly one server, never to two. Host names are resolved at each
//! connect. The table is shared by all sessions.
//!
//! It also owns the idle connections ([`IdleConnections`]): a session asks
//! [`UpstreamPool::checkout`] for a connection, which is an idle one to the
//! first server that is up when there is one, and hands it back with
//! [`UpstreamPool::release`] when the client leaves.

use super::idle::IdleConnections;
use super::{
    Connector, Extensions, Opening, TlsClient, TlsPolicy, Upstream, UpstreamCredentials,
    UpstreamError,
};
use crate::config::{self, Timeouts, TlsMode, UpstreamStartTls};
use crate::metrics::Metrics;
use crate::shutdown::ShutdownSignal;
use futures::future::{select, Either};
use log::{debug, info, warn};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// How long the RSET that cleans a connection for the pool may take.
const RELEASE_RSET_TIMEOUT: Duration = Duration::from_secs(10);

/// How often an upstream that stays down is mentioned again.
const STILL_DOWN_LOG_EVERY: Duration = Duration::from_secs(60);

/// One configured server and its health.
struct Target {
    /// `host:port`.
    addr: String,
    /// Whether it is down, since when, and what was logged of it.
    health: Mutex<Health>,
}

/// What is known of a server's failures. Changes of state are logged once
/// each; the failures in between are only counted, so an outage gives a
/// few lines instead of one per refused session.
#[derive(Default)]
struct Health {
    /// Until when it is skipped after a failure.
    down_until: Option<Instant>,
    /// When the outage began; `None` while it works.
    down_since: Option<Instant>,
    /// Failed connections since the outage was last logged.
    failures: u64,
    /// Failed connections in the whole outage.
    outage_failures: u64,
    /// When the outage was last logged.
    logged: Option<Instant>,
}

/// What a failure on a server should be logged as, if at all.
#[derive(Debug, PartialEq)]
enum FailureLog {
    /// It was working: the outage starts.
    Down,
    /// Still down, and a minute has passed: how many failed meanwhile.
    StillDown(u64),
    /// Still down; counted only.
    Quiet,
}

impl Target {
    fn new(addr: String) -> Target {
        Target {
            addr,
            health: Mutex::new(Health::default()),
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True while the server is skipped.
    fn is_down(&self, now: Instant) -> bool {
        self.health().down_until.is_some_and(|t| t > now)
    }

    /// Notes a failed connection: skipped until `until`.
    fn failed(&self, now: Instant, until: Instant) -> FailureLog {
        let mut h = self.health();
        h.down_until = Some(until);
        h.outage_failures += 1;
        if h.down_since.is_none() {
            h.down_since = Some(now);
            h.logged = Some(now);
            h.failures = 0;
            return FailureLog::Down;
        }
        h.failures += 1;
        if h.logged
            .is_none_or(|t| now.duration_since(t) >= STILL_DOWN_LOG_EVERY)
        {
            h.logged = Some(now);
            return FailureLog::StillDown(std::mem::take(&mut h.failures));
        }
        FailureLog::Quiet
    }

    /// Notes a working connection; returns how long the outage it ends
    /// lasted and how many connections failed in it, if there was one.
    fn worked(&self, now: Instant) -> Option<(Duration, u64)> {
        let mut h = self.health();
        let outage = h
            .down_since
            .map(|since| (now.duration_since(since), h.outage_failures));
        *h = Health::default();
        outage
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
    /// Connections kept between client sessions.
    idle: IdleConnections,
    /// Connect latency and failures are counted here.
    metrics: Arc<Metrics>,
    /// Opens streams instead of TCP, when set (see [`Connector`]).
    connector: OnceLock<Arc<dyn Connector>>,
    /// What the last server connected to offered: EHLO to clients
    /// advertises what depends on it.
    known: Mutex<Option<Extensions>>,
    /// The last `offers:` line logged, so a change is logged once.
    pub(super) offers_logged: Mutex<String>,
    /// Set once the background probe (see [`probe`](super::probe)) has
    /// made its first attempt, or a session connected before it.
    pub(super) probed: AtomicBool,
}

impl UpstreamPool {
    /// Builds the pool from the `upstream` section: loads the CA roots and
    /// the AUTH password. `tls_verify: false` is logged as a warning.
    /// Connect latency, failures and the idle pool count into `metrics`.
    pub fn new(up: &config::Upstream, metrics: Arc<Metrics>) -> Result<UpstreamPool, String> {
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
                .map(|addr| Target::new(addr.to_string()))
                .collect(),
            tls,
            auth,
            retry_after: Duration::from_secs(up.retry_after_s),
            idle: IdleConnections::new(up.pool.clone(), metrics.pool.clone()),
            metrics,
            connector: OnceLock::new(),
            known: Mutex::new(None),
            offers_logged: Mutex::new(String::new()),
            probed: AtomicBool::new(false),
        })
    }

    /// A connection for a new transaction, and whether it was reused: an
    /// idle one to the first server that is up when the pool has one, else
    /// a new one (with failover, as [`connect`](Self::connect)). The caller
    /// must treat the first command's failure on a reused connection as
    /// "stale" and come back for a new one.
    pub async fn checkout(
        &self,
        helo: &str,
        timeouts: &Timeouts,
    ) -> Result<(Upstream, bool), UpstreamError> {
        if self.idle.enabled() {
            let now = Instant::now();
            match self.targets.iter().find(|t| !t.is_down(now)) {
                Some(first) => {
                    if let Some(up) = self.idle.take(&first.addr) {
                        return Ok((up, true));
                    }
                }
                None => self.metrics.pool.misses.inc(),
            }
        }
        Ok((self.connect(helo, timeouts).await?, false))
    }

    /// Opens every later connection through `connector` instead of TCP:
    /// the session-logic tests run a whole gateway over in-memory streams.
    /// Only the first call counts; false when one was already set.
    pub fn connect_through(&self, connector: Arc<dyn Connector>) -> bool {
        self.connector.set(connector).is_ok()
    }

    /// Counts a reused connection that failed its first command (and is
    /// being replaced).
    pub fn stale(&self) {
        self.metrics.pool.stale.inc();
    }

    /// Takes back a connection whose client session ended. It is kept for
    /// the next session when the pool is on and the connection is settled
    /// and healthy — after an RSET answered 2xx when `dirty` (an abandoned
    /// transaction is open on it) — and `reusable` (the session says its
    /// dialogue with the upstream is complete and the gateway is not
    /// shutting down). Otherwise it is closed with QUIT.
    pub async fn release(&self, mut up: Upstream, dirty: bool, reusable: bool) {
        if reusable && self.idle.accepts(&up) {
            if !dirty {
                self.idle.put(up);
                return;
            }
            // Bounded: the client is gone and nobody waits for this, but
            // the session still counts as open (and delays shutdown).
            let rset =
                async_std::future::timeout(RELEASE_RSET_TIMEOUT, up.command("RSET", "RSET reply"));
            match rset.await {
                Ok(Ok(reply)) if reply.is_positive() && up.is_settled() => {
                    self.idle.put(up);
                    return;
                }
                Ok(Ok(_)) => {}
                // Dead or stuck: nothing to say goodbye to.
                Ok(Err(_)) | Err(_) => return,
            }
        }
        up.quit().await;
    }

    /// Closes idle connections as they expire, until shutdown begins; then
    /// closes the rest with QUIT.
    pub async fn maintain(&self, shutdown: ShutdownSignal) {
        if !self.idle.enabled() {
            return;
        }
        let every = self.idle.reap_interval();
        loop {
            let tick = async_std::task::sleep(every);
            let stop = shutdown.wait();
            futures::pin_mut!(tick, stop);
            if let Either::Right(_) = select(tick, stop).await {
                break;
            }
            self.idle.reap().await;
        }
        self.idle.close_all().await;
    }

    /// Closes every idle connection with QUIT (at shutdown).
    pub async fn close_idle(&self) {
        self.idle.close_all().await;
    }

    /// Idle connections kept now.
    pub fn idle_count(&self) -> usize {
        self.idle.idle_count()
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
        self.open_first(&opening).await
    }

    /// A new connection (with failover, as [`connect`](Self::connect)) that
    /// has logged in at the upstream as a client's `user` (AUTH
    /// passthrough): it is bound to that user and never pooled. A refused
    /// login is [`UpstreamError::Auth`] with the server's reply; it does
    /// not mark the server down, as it says nothing of its health.
    pub async fn log_in(
        &self,
        helo: &str,
        timeouts: &Timeouts,
        user: &str,
        password: &[u8],
        login_first: bool,
    ) -> Result<Upstream, UpstreamError> {
        let opening = Opening {
            helo,
            timeouts,
            tls: self.tls.as_ref(),
            auth: None,
        };
        let mut up = self.open_first(&opening).await?;
        match up.log_in_for_client(user, password, login_first).await {
            Ok(()) => Ok(up),
            Err(e) => {
                if !matches!(e, UpstreamError::Auth(_)) {
                    self.metrics.upstream_error_kind(e.kind());
                }
                up.quit().await;
                Err(e)
            }
        }
    }

    /// Opens `opening` to the first server that works (see
    /// [`connect`](Self::connect)).
    async fn open_first(&self, opening: &Opening<'_>) -> Result<Upstream, UpstreamError> {
        let now = Instant::now();
        let (up, down): (Vec<&Target>, Vec<&Target>) =
            self.targets.iter().partition(|t| !t.is_down(now));
        let mut last = None;
        for target in up.into_iter().chain(down) {
            let started = Instant::now();
            // Boxed: opening (TCP, TLS, AUTH) is a large future, and it
            // would otherwise be part of every session's task, idle or not.
            let connector = self.connector.get().map(|c| c.as_ref());
            match Box::pin(Upstream::open_with(connector, &target.addr, opening)).await {
                Ok(session) => {
                    self.metrics.upstream_latency("connect", started.elapsed());
                    self.learn(&target.addr, &session.extensions);
                    if let Some((lasted, failed)) = target.worked(Instant::now()) {
                        info!(
                            "upstream {} is back after {:.0}s down; {failed} connection(s) \
                             to it failed meanwhile",
                            target.addr,
                            lasted.as_secs_f64()
                        );
                    }
                    return Ok(session);
                }
                Err(e) => {
                    self.metrics.upstream_error_kind(e.kind());
                    let now = Instant::now();
                    match target.failed(now, now + self.retry_after) {
                        FailureLog::Down => warn!(
                            "upstream {} is down: {e}; {}",
                            target.addr,
                            self.while_down()
                        ),
                        FailureLog::StillDown(n) => warn!(
                            "upstream {} is still down: {e}; {n} more connection(s) to it \
                             failed in the last {}s",
                            target.addr,
                            STILL_DOWN_LOG_EVERY.as_secs()
                        ),
                        FailureLog::Quiet => {
                            debug!("upstream {} still down: {e}", target.addr)
                        }
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(UpstreamError::Closed))
    }

    /// What happens while a server is down, in the words of the log: with
    /// one server nothing can be skipped, so each new session tries it.
    fn while_down(&self) -> String {
        if self.targets.len() == 1 {
            "it is the only server: each new session tries it again, and clients \
             get 4xx replies (their mail stays with them) until it answers"
                .to_string()
        } else {
            format!(
                "the other servers are tried before it for the next {}s",
                self.retry_after.as_secs()
            )
        }
    }

    /// What the upstream offered at the last connection (`None` before
    /// the first): what EHLO may promise clients on its behalf.
    pub fn known_extensions(&self) -> Option<Extensions> {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Notes what a new connection's server offers; a change (and the
    /// first) is logged, since clients greeted from now on are told
    /// something else.
    fn learn(&self, addr: &str, ext: &Extensions) {
        *self.known.lock().unwrap_or_else(|e| e.into_inner()) = Some(ext.clone());
        let line = format!("upstream {addr} offers: {}", ext.keywords().join(" "));
        let mut logged = self.offers_logged.lock().unwrap_or_else(|e| e.into_inner());
        if *logged != line {
            info!("{line}");
            *logged = line;
        }
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
