//! Listeners, the connection limit and graceful shutdown.
//!
//! One accept loop per listen address; each connection gets its own task.
//! Over the connection limit a client is told `421 4.7.0` at once rather
//! than left waiting. On shutdown the loops stop accepting, idle sessions
//! are told `421 4.3.2`, and transactions in flight get a grace period.
//! On a listener behind a load balancer, each connection's PROXY protocol
//! header is read first, and the client it names is the session's peer.
//! Alongside run the metrics and health listener (while the server runs,
//! so `/healthz` says 503 during the drain) and the idle upstream
//! connections' upkeep.

use crate::audit::AuditLog;
use crate::config::{Config, ListenerPolicy};
use crate::filter::FilterChain;
use crate::gateway::Gateway;
use crate::metrics::http;
use crate::session::Session;
use crate::shutdown::{self, ShutdownSignal, ShutdownTrigger};
use async_std::net::{TcpListener, TcpStream};
use async_std::task;
use futures::future::{select, Either};
use futures::FutureExt as _;
use log::{error, info, warn};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A bound gateway, ready to run.
pub struct Server {
    /// Bound listening sockets, one per configured address, with what each
    /// does (TLS, AUTH).
    listeners: Vec<(TcpListener, ListenerPolicy)>,
    /// What every session shares.
    shared: Arc<Gateway>,
    /// Starts the graceful shutdown.
    trigger: ShutdownTrigger,
    /// Sessions currently open.
    active: Arc<AtomicUsize>,
    /// The metrics and health listener, when `metrics` is configured.
    metrics_listener: Option<TcpListener>,
    /// The quarantine API on that listener, when it is turned on.
    quarantine_api: Option<Arc<dyn http::Api>>,
}

/// Decrements the open-session count (and gauge) when a session task ends,
/// however it ends.
struct ActiveGuard(Arc<AtomicUsize>, prometheus::IntGauge);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
        self.1.dec();
    }
}

impl Server {
    /// Binds every listen address of `config`, with no filters.
    pub async fn bind(config: Config) -> io::Result<Server> {
        Server::bind_with_filters(config, FilterChain::new()).await
    }

    /// Binds every listen address of `config` and opens its audit file;
    /// sessions run `filters`.
    pub async fn bind_with_filters(config: Config, filters: FilterChain) -> io::Result<Server> {
        let mut listeners = Vec::new();
        for l in &config.listen {
            let listener = TcpListener::bind(l.addr).await.map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on {}: {e}", l.addr))
            })?;
            let policy = config.listener_policy(l);
            if policy.plaintext_auth && !l.addr.ip().is_loopback() {
                warn!(
                    "listener {} allows AUTH without TLS on a non-loopback address: \
                     passwords may cross the network in clear",
                    l.addr
                );
            }
            listeners.push((listener, policy));
        }
        let metrics_listener = match &config.metrics {
            Some(m) => {
                let listener = TcpListener::bind(m.addr).await.map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot listen on {} (metrics): {e}", m.addr),
                    )
                })?;
                if !m.addr.ip().is_loopback() {
                    warn!(
                        "metrics listener {} is not on a loopback address: anyone who can reach \
                         it sees the gateway's counters (it has no authentication)",
                        m.addr
                    );
                }
                Some(listener)
            }
            None => None,
        };
        let audit = match &config.audit {
            Some(options) => Some(AuditLog::open(options)?),
            None => None,
        };
        let (trigger, signal) = shutdown::channel();
        let shared = Gateway::build(config, filters, signal, audit)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let quarantine_api = crate::quarantine_api::QuarantineApi::for_gateway(&shared)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        Ok(Server {
            listeners,
            shared,
            trigger,
            active: Arc::new(AtomicUsize::new(0)),
            metrics_listener,
            quarantine_api,
        })
    }

    /// The metrics listener's address, when there is one (useful with port 0).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect()
    }

    /// What the sessions share (configuration, filter chain), e.g. to swap
    /// the filter chain on reload.
    pub fn shared(&self) -> Arc<Gateway> {
        self.shared.clone()
    }

    /// A handle that starts the graceful shutdown when fired.
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        self.trigger.clone()
    }

    /// Accepts connections until shutdown, then waits for sessions to end
    /// (at most `shutdown_grace_s`).
    pub async fn run(self) {
        let signal = self.shared.shutdown.clone();
        let metrics = self.metrics_listener.map(|l| {
            task::spawn(http::serve(
                l,
                self.shared.metrics_handle(),
                self.shared.shutdown.clone(),
                self.quarantine_api.clone(),
            ))
        });
        let upkeep = {
            let shared = self.shared.clone();
            task::spawn(async move {
                if let Some(pool) = shared.upstreams() {
                    pool.maintain(shared.shutdown.clone()).await;
                }
            })
        };
        let mut loops = Vec::new();
        for (listener, policy) in self.listeners {
            let shared = self.shared.clone();
            let active = self.active.clone();
            loops.push(task::spawn(accept_loop(listener, policy, shared, active)));
        }
        for l in loops {
            l.await;
        }
        let grace = Duration::from_secs(self.shared.config.shutdown_grace_s);
        drain(&self.active, grace, &signal).await;
        upkeep.await;
        if let Some(pool) = self.shared.upstreams() {
            // Connections sessions gave back while shutting down.
            pool.close_idle().await;
        }
        if let Some(m) = metrics {
            m.cancel().await;
        }
        if let Some(audit) = self.shared.audit() {
            // Records of the last sessions reach the file before exit.
            audit.flush(Duration::from_secs(5));
        }
    }
}

/// Accepts connections on one listener until shutdown.
async fn accept_loop(
    listener: TcpListener,
    policy: ListenerPolicy,
    shared: Arc<Gateway>,
    active: Arc<AtomicUsize>,
) {
    let addr = listener.local_addr().ok();
    info!(
        "listening on {}",
        addr.map(|a| a.to_string()).unwrap_or_default()
    );
    let max = shared.config.limits.max_connections;
    let label = addr.map(|a| a.to_string()).unwrap_or_default();
    let connections = shared.metrics().connections(&label);
    let sessions = shared.metrics().sessions.clone();
    loop {
        let accepted = {
            let accept = listener.accept();
            let stop = shared.shutdown.wait();
            futures::pin_mut!(accept, stop);
            match select(accept, stop).await {
                Either::Left((r, _)) => r,
                Either::Right(_) => break,
            }
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                error!("accept failed: {e}");
                task::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        connections.inc();
        // Counted from the accept, so connections still sending their PROXY
        // header count against the limit too.
        let admitted = if active.fetch_add(1, Ordering::SeqCst) >= max {
            active.fetch_sub(1, Ordering::SeqCst);
            None
        } else {
            sessions.inc();
            Some(ActiveGuard(active.clone(), sessions.clone()))
        };
        let local = stream.local_addr().ok();
        if policy.proxy_protocol {
            let shared = shared.clone();
            task::spawn(async move {
                let mut stream = stream;
                let ends = {
                    let options = shared.config.proxy_protocol.as_ref();
                    crate::proxy_protocol::client_address(&mut stream, peer, options).await
                };
                // Without a valid header from a trusted proxy the
                // connection is closed (client_address logged why).
                if let Some(ends) = ends {
                    let local = ends.destination.or(local);
                    start(stream, (ends.client, local), policy, shared, admitted);
                }
            });
        } else {
            start(stream, (peer, local), policy, shared.clone(), admitted);
        }
    }
}

/// Starts one client session in its own task — or, over the connection
/// limit (`admitted` is `None`), the `421` refusal. `ends` are the real
/// client and the address it connected to (after a PROXY protocol header,
/// the ones it names).
fn start(
    stream: TcpStream,
    ends: (SocketAddr, Option<SocketAddr>),
    policy: ListenerPolicy,
    shared: Arc<Gateway>,
    admitted: Option<ActiveGuard>,
) {
    let (peer, local) = ends;
    let session = Session::new(stream, peer, shared)
        .on_listener(policy)
        .on_local(local);
    match admitted {
        // The session's own future is the task: an async block around it
        // would hold a second copy of it in every idle task.
        Some(guard) => {
            task::spawn(session.run().map(move |()| drop(guard)));
        }
        None => {
            task::spawn(session.refuse_busy());
        }
    }
}

/// Waits until no session is open or the grace period has passed.
async fn drain(active: &AtomicUsize, grace: Duration, signal: &ShutdownSignal) {
    if !signal.is_fired() {
        return;
    }
    let deadline = Instant::now() + grace;
    let open = active.load(Ordering::SeqCst);
    if open > 0 {
        info!(
            "shutting down: waiting up to {}s for {open} session(s)",
            grace.as_secs()
        );
    }
    while active.load(Ordering::SeqCst) > 0 {
        if Instant::now() >= deadline {
            warn!(
                "shutdown grace period over; {} session(s) cut off",
                active.load(Ordering::SeqCst)
            );
            return;
        }
        task::sleep(Duration::from_millis(50)).await;
    }
    info!("shutdown complete");
}
