//! Listeners, the connection limit and graceful shutdown.
//!
//! One accept loop per listen address; each connection gets its own task,
//! and the gateway current when it was accepted (a reload swaps in a new
//! one for later connections, and adds and removes listeners).
//! Over the connection limit a client is told `421 4.7.0` at once rather
//! than left waiting. On shutdown the loops stop accepting, idle sessions
//! are told `421 4.3.2`, and transactions in flight get a grace period.
//! On a listener behind a load balancer, each connection's PROXY protocol
//! header is read first, and the client it names is the session's peer.
//! Alongside run the metrics and health listener (while the server runs,
//! so `/healthz` says 503 during the drain), the idle upstream
//! connections' upkeep, and the probe that learns what the upstream offers
//! before the first client needs it (at start, and when a reload builds a
//! new upstream pool).

use crate::audit::AuditLog;
use crate::config::{Config, ConfigError, Listener, ListenerPolicy, ValidationError};
use crate::filter::FilterChain;
use crate::gateway::Gateway;
use crate::metrics::http;
use crate::session::Session;
use crate::shutdown::{self, ShutdownSignal, ShutdownTrigger};
use crate::upstream::UpstreamPool;
use async_std::net::{TcpListener, TcpStream};
use async_std::task::{self, JoinHandle};
use futures::future::{select, Either};
use futures::FutureExt as _;
use log::{error, info, warn};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

/// A bound gateway, ready to run.
pub struct Server {
    /// The listeners and the gateway new sessions get; what a reload changes.
    live: Arc<Live>,
    /// Starts the graceful shutdown.
    trigger: ShutdownTrigger,
    /// The metrics and health listener, when `metrics` is configured (kept
    /// for the life of the process: a reload does not move it).
    metrics_listener: Option<TcpListener>,
    /// The quarantine API on that listener, when it is turned on.
    quarantine_api: Option<Arc<dyn http::Api>>,
}

/// The running gateway as a reload sees it: the [`Gateway`] new sessions
/// get, and the listeners, one per configured address. A reload binds the
/// addresses it adds ([`prepare`](Live::prepare)) before anything changes,
/// then [`commit`](Live::commit)s: new sessions get the new gateway, the
/// new listeners accept, the removed ones stop accepting (their sessions
/// finish), and a replaced upstream pool closes its idle connections.
pub struct Live {
    /// What new sessions share.
    current: RwLock<Arc<Gateway>>,
    /// The listeners and the tasks to wait for at shutdown.
    state: Mutex<State>,
    /// Sessions currently open, over every listener and gateway.
    active: Arc<AtomicUsize>,
    /// Held by a reload from the moment it says the new rules are loaded
    /// until they are in service ([`Live::hold_new_sessions`]): connections
    /// accepted meanwhile wait for the outcome instead of starting with the
    /// gateway on its way out.
    gate: async_std::sync::RwLock<()>,
}

/// New sessions wait while this is held (see [`Live::hold_new_sessions`]).
pub struct HeldSessions<'a>(#[allow(dead_code)] async_std::sync::RwLockWriteGuard<'a, ()>);

/// The mutable part of [`Live`].
struct State {
    /// True once [`Server::run`] started the accept loops.
    started: bool,
    /// The listeners, in configuration order.
    listeners: Vec<Open>,
    /// Accept loops, awaited at shutdown.
    loops: Vec<JoinHandle<()>>,
    /// The upkeep tasks of upstream pools, awaited at shutdown.
    upkeeps: Vec<JoinHandle<()>>,
    /// Retires the current upstream pool's upkeep when a reload replaces
    /// the pool.
    retire_pool: Option<ShutdownTrigger>,
}

/// One listener.
struct Open {
    /// Which `listen` entry it is.
    configured: ListenKey,
    /// The address bound.
    local: SocketAddr,
    /// Stops its accept loop (when a reload removes it).
    stop: ShutdownTrigger,
    /// The socket, until its accept loop starts.
    pending: Option<(TcpListener, ShutdownSignal)>,
}

/// What a reload binds before it changes anything: the listeners its
/// configuration adds, and those it removes.
pub struct Prepared {
    /// Newly bound listeners, by `listen` entry.
    added: Vec<(ListenKey, TcpListener)>,
    /// Listeners whose entry is gone.
    removed: Vec<ListenKey>,
    /// Settings that cannot change while running, with why: the reload
    /// reports them and applies the rest.
    pub restart_needed: Vec<String>,
}

/// A `listen` entry: its address as configured (with port 0, not the one
/// bound), and how many entries before it have that address (several may
/// ask for port 0). A reload keeps a listener whose entry it keeps.
type ListenKey = (SocketAddr, usize);

/// The key of every entry of `listen`, in order.
fn listen_keys(listen: &[Listener]) -> Vec<ListenKey> {
    listen
        .iter()
        .enumerate()
        .map(|(i, l)| {
            (
                l.addr,
                listen[..i].iter().filter(|e| e.addr == l.addr).count(),
            )
        })
        .collect()
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

/// Connections the kernel queues on a listener before smtpgate accepts
/// them. The standard library asks for 128, which a burst of a few hundred
/// clients (a queue flush after an outage) overflows: the kernel then drops
/// SYNs and each dropped client waits a second or more to retry. Linux
/// caps it at `net.core.somaxconn` (4096 on current kernels).
pub const LISTEN_BACKLOG: i32 = 1024;

/// Binds a listening TCP socket on `addr` with [`LISTEN_BACKLOG`] and
/// `SO_REUSEADDR` (as the standard library sets it), so a restart does not
/// wait for old connections in TIME_WAIT.
fn bind_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Locks a mutex, going on with the data if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
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
        for (l, key) in config.listen.iter().zip(listen_keys(&config.listen)) {
            let listener = bind_listener(l.addr).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on {}: {e}", l.addr))
            })?;
            warn_plaintext_auth(&config, l);
            listeners.push(open(key, TcpListener::from(listener))?);
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
        let live = Arc::new(Live {
            current: RwLock::new(shared),
            state: Mutex::new(State {
                started: false,
                listeners,
                loops: Vec::new(),
                upkeeps: Vec::new(),
                retire_pool: None,
            }),
            active: Arc::new(AtomicUsize::new(0)),
            gate: async_std::sync::RwLock::new(()),
        });
        // The API releases through the gateway in service at each request:
        // a reload may change the upstream and the quarantine directory.
        let quarantine_api = {
            let live = live.clone();
            crate::quarantine_api::QuarantineApi::for_gateway(&live.current(), move || {
                live.current()
            })
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?
        };
        Ok(Server {
            live,
            trigger,
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
        self.live.local_addrs()
    }

    /// What new sessions share now (configuration, filter chain), e.g. to
    /// swap the filter chain on reload.
    pub fn shared(&self) -> Arc<Gateway> {
        self.live.current()
    }

    /// The listeners and the current gateway, for a reload of the whole
    /// configuration (`reload::reload_server`).
    pub fn live(&self) -> Arc<Live> {
        self.live.clone()
    }

    /// A handle that starts the graceful shutdown when fired.
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        self.trigger.clone()
    }

    /// Accepts connections until shutdown, then waits for sessions to end
    /// (at most `shutdown_grace_s` of the configuration in force then).
    pub async fn run(self) {
        let live = self.live;
        let first = live.current();
        let signal = first.shutdown.clone();
        let metrics = self.metrics_listener.map(|l| {
            task::spawn(http::serve(
                l,
                first.metrics_handle(),
                first.shutdown.clone(),
                self.quarantine_api.clone(),
            ))
        });
        {
            let mut state = lock(&live.state);
            state.started = true;
            let pending: Vec<_> = state
                .listeners
                .iter_mut()
                .filter_map(|o| o.pending.take().map(|p| (o.configured, p)))
                .collect();
            for (configured, (listener, stop)) in pending {
                let task = task::spawn(accept_loop(listener, configured, live.clone(), stop));
                state.loops.push(task);
            }
            if let Some((retire, tasks)) = upkeep(&first) {
                state.retire_pool = Some(retire);
                state.upkeeps.extend(tasks);
            }
        }
        drop(first);
        signal.wait().await;
        let loops = std::mem::take(&mut lock(&live.state).loops);
        for l in loops {
            l.await;
        }
        let grace = Duration::from_secs(live.current().config.shutdown_grace_s);
        drain(&live.active, grace, &signal).await;
        let upkeeps = std::mem::take(&mut lock(&live.state).upkeeps);
        for u in upkeeps {
            u.await;
        }
        let last = live.current();
        if let Some(pool) = last.upstreams() {
            // Connections sessions gave back while shutting down.
            pool.close_idle().await;
        }
        if let Some(m) = metrics {
            m.cancel().await;
        }
        if let Some(audit) = last.audit() {
            // Records of the last sessions reach the file before exit.
            audit.flush(Duration::from_secs(5));
        }
    }
}

impl Live {
    /// The gateway new sessions get now.
    pub fn current(&self) -> Arc<Gateway> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Makes connections accepted from now on wait (before they get a
    /// gateway) until the returned guard is dropped: a reload holds it
    /// from loading the new rules until it committed or gave up, so a
    /// client that connects after the reload said the rules are loaded
    /// gets them. Call from a blocking thread.
    pub fn hold_new_sessions(&self) -> HeldSessions<'_> {
        HeldSessions(task::block_on(self.gate.write()))
    }

    /// The addresses bound now, in configuration order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        lock(&self.state)
            .listeners
            .iter()
            .map(|o| o.local)
            .collect()
    }

    /// Binds the listen addresses `config` adds to those open now (the
    /// removed ones stay open until [`commit`](Self::commit)). An address
    /// that cannot be bound is an error at its `listen` entry — except a
    /// privileged port the process may no longer bind, which needs a
    /// restart (reported in `restart_needed`; the rest can still apply).
    /// Call from a blocking thread.
    pub fn prepare(&self, config: &Config) -> Result<Prepared, ConfigError> {
        let state = lock(&self.state);
        let open: Vec<ListenKey> = state.listeners.iter().map(|o| o.configured).collect();
        drop(state);
        let wanted = listen_keys(&config.listen);
        let mut prepared = Prepared {
            added: Vec::new(),
            removed: open
                .iter()
                .filter(|k| !wanted.contains(k))
                .copied()
                .collect(),
            restart_needed: Vec::new(),
        };
        for (i, (l, key)) in config.listen.iter().zip(wanted).enumerate() {
            if open.contains(&key) {
                continue;
            }
            match bind_listener(l.addr) {
                Ok(listener) => {
                    warn_plaintext_auth(config, l);
                    prepared.added.push((key, TcpListener::from(listener)));
                }
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied && l.addr.port() < 1024 => {
                    prepared.restart_needed.push(format!(
                        "listen[{i}].addr {}: this process may not bind a port below 1024 \
                         any more ({e})",
                        l.addr
                    ));
                }
                Err(e) => {
                    return Err(config.locate(ValidationError::new(
                        format!("listen[{i}].addr"),
                        format!("cannot listen on {}: {e}", l.addr),
                    )))
                }
            }
        }
        Ok(prepared)
    }

    /// Puts `gateway` in service for new sessions, with the listeners of
    /// `prepared`: the added ones start accepting, the removed ones stop
    /// (their sessions finish). When the upstream pool changed, the old
    /// one closes its idle connections, and the connections sessions still
    /// give back to it, until no session holds it.
    pub fn commit(self: &Arc<Self>, gateway: Arc<Gateway>, prepared: Prepared) {
        let old = {
            let mut current = match self.current.write() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            std::mem::replace(&mut *current, gateway.clone())
        };
        let mut state = lock(&self.state);
        for (configured, listener) in prepared.added {
            let mut o = match open(configured, listener) {
                Ok(o) => o,
                Err(e) => {
                    error!("reload: cannot use the listener on {}: {e}", configured.0);
                    continue;
                }
            };
            if state.started {
                if let Some((listener, stop)) = o.pending.take() {
                    let task = task::spawn(accept_loop(listener, configured, self.clone(), stop));
                    state.loops.push(task);
                }
            }
            state.listeners.push(o);
        }
        for key in &prepared.removed {
            if let Some(at) = state.listeners.iter().position(|o| o.configured == *key) {
                let o = state.listeners.remove(at);
                o.stop.fire();
                info!(
                    "reload: no longer listening on {}; its sessions finish",
                    o.local
                );
            }
        }
        // Keep configuration order, so the first address is the first listed.
        let keys = listen_keys(&gateway.config.listen);
        state
            .listeners
            .sort_by_key(|o| keys.iter().position(|k| *k == o.configured));
        let same_pool = match (old.upstreams_handle(), gateway.upstreams_handle()) {
            (Some(a), Some(b)) => Arc::ptr_eq(&a, &b),
            (None, None) => true,
            _ => false,
        };
        if !same_pool && state.started {
            if let Some(retire) = state.retire_pool.take() {
                retire.fire();
            }
            if let Some((retire, tasks)) = upkeep(&gateway) {
                state.retire_pool = Some(retire);
                state.upkeeps.extend(tasks);
            }
        }
    }
}

/// A listener bound at `configured`, its accept loop not started yet.
fn open(configured: ListenKey, listener: TcpListener) -> io::Result<Open> {
    let local = listener.local_addr()?;
    let (stop, signal) = shutdown::channel();
    Ok(Open {
        configured,
        local,
        stop,
        pending: Some((listener, signal)),
    })
}

/// Warns about a listener that offers AUTH without TLS off loopback.
fn warn_plaintext_auth(config: &Config, l: &Listener) {
    if config.listener_policy(l).plaintext_auth && !l.addr.ip().is_loopback() {
        warn!(
            "listener {} allows AUTH without TLS on a non-loopback address: \
             passwords may cross the network in clear",
            l.addr
        );
    }
}

/// Starts the upkeep of the upstream pool of `gateway`, if it has one:
/// the probe that learns what the upstream offers, and the closing of
/// expired idle connections, until the pool is retired (by the returned
/// trigger, when a reload replaces the pool) or the gateway shuts down. A
/// retired pool then closes what sessions still in flight give back to
/// it, until none holds it.
fn upkeep(gateway: &Gateway) -> Option<(ShutdownTrigger, Vec<JoinHandle<()>>)> {
    let pool = gateway.upstreams_handle()?;
    let shutdown = gateway.shutdown.clone();
    let (retire, retired) = shutdown::channel();
    let probe = probe(gateway, pool.clone(), retired.clone());
    let forward = retire.clone();
    let at_shutdown = shutdown.clone();
    let task = task::spawn(async move {
        let upkeep = pool.maintain(retired.clone());
        let stop = at_shutdown.wait();
        futures::pin_mut!(upkeep, stop);
        match select(upkeep, stop).await {
            // Shutdown: the pool closes its idle connections and ends.
            Either::Right((_, upkeep)) => {
                forward.fire();
                upkeep.await;
            }
            // Idle connections are off, or the pool was retired.
            Either::Left(((), _)) => {
                let retire = retired.wait();
                let stop = at_shutdown.wait();
                futures::pin_mut!(retire, stop);
                select(retire, stop).await;
            }
        }
        while Arc::strong_count(&pool) > 1 && !shutdown.is_fired() {
            task::sleep(Duration::from_secs(1)).await;
            pool.close_idle().await;
        }
        pool.close_idle().await;
    });
    Some((retire, vec![probe, task]))
}

/// Starts the probe of `pool` (see [`UpstreamPool::probe`]) in the
/// background, with the EHLO name and timeouts relayed sessions use; it
/// ends when it succeeds, or when the pool is retired or the gateway shuts
/// down, whichever comes first.
fn probe(gateway: &Gateway, pool: Arc<UpstreamPool>, retired: ShutdownSignal) -> JoinHandle<()> {
    let config = &gateway.config;
    let helo = config
        .upstream
        .as_ref()
        .and_then(|u| u.helo.clone())
        .unwrap_or_else(|| config.hostname.clone());
    let timeouts = config.timeouts.clone();
    let shutdown = gateway.shutdown.clone();
    task::spawn(async move {
        let probe = pool.probe(&helo, &timeouts);
        let retire = retired.wait();
        let stop = shutdown.wait();
        futures::pin_mut!(probe, retire, stop);
        select(probe, select(retire, stop)).await;
    })
}

/// Accepts connections on one listener until shutdown, or until a reload
/// removes it (`stop`). Each connection gets the gateway current then,
/// and the settings its configuration gives this listener.
async fn accept_loop(
    listener: TcpListener,
    configured: ListenKey,
    live: Arc<Live>,
    stop: ShutdownSignal,
) {
    let addr = listener.local_addr().ok();
    info!(
        "listening on {}",
        addr.map(|a| a.to_string()).unwrap_or_default()
    );
    let label = addr.map(|a| a.to_string()).unwrap_or_default();
    let (connections, sessions, shutdown) = {
        let shared = live.current();
        (
            shared.metrics().connections(&label),
            shared.metrics().sessions.clone(),
            shared.shutdown.clone(),
        )
    };
    let active = live.active.clone();
    let policy_in = |shared: &Gateway| {
        let config = &shared.config;
        let at = listen_keys(&config.listen)
            .iter()
            .position(|k| *k == configured);
        at.map(|i| config.listener_policy(&config.listen[i]))
    };
    let mut policy = policy_in(&live.current()).unwrap_or_else(ListenerPolicy::plain);
    loop {
        let accepted = {
            let accept = listener.accept();
            let ended = futures::future::select(Box::pin(shutdown.wait()), Box::pin(stop.wait()));
            futures::pin_mut!(accept);
            match select(accept, ended).await {
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
        let shared = {
            let _reloading = live.gate.read().await;
            live.current()
        };
        // Gone from the configuration (a reload removing it is stopping this
        // loop): the settings it had.
        policy = policy_in(&shared).unwrap_or(policy);
        let max = shared.config.limits.max_connections;
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
            start(stream, (peer, local), policy, shared, admitted);
        }
    }
    drop(listener);
    if stop.is_fired() && !shutdown.is_fired() {
        info!("reload: stopped listening on {label}");
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
