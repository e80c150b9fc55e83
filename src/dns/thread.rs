//! The `smtpgate-dns` thread: a current-thread tokio runtime that owns the
//! hickory resolver and runs the jobs async-std code sends it.
//!
//! The rest of the gateway never sees tokio: it sends boxed jobs down a
//! `futures` channel (runtime-agnostic) and waits on a `oneshot` for the
//! answer. The thread ends when the channel closes, that is when the last
//! [`Resolver`](super::Resolver) handle is dropped.

use crate::config::DnsOptions;
use futures::channel::{mpsc, oneshot};
use futures::future::{self, Either};
use futures::StreamExt;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

/// Work for the DNS thread: given the shared resolver, a future that runs
/// on the thread's runtime and reports its result itself (through the
/// oneshot it captured).
pub(super) type Job = Box<dyn FnOnce(TokioResolver) -> BoxFuture<()> + Send>;

/// A boxed future that can move to the DNS thread.
pub(super) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Wraps `job` so its result goes to `tx`, and so it stops early when the
/// caller gave up waiting (its deadline passed and it dropped the receiver):
/// abandoned work must not pile up on the thread.
pub(super) fn job<T, F>(job: F, mut tx: oneshot::Sender<T>) -> Job
where
    T: Send + 'static,
    F: FnOnce(TokioResolver) -> BoxFuture<T> + Send + 'static,
{
    Box::new(move |resolver| {
        Box::pin(async move {
            let work = job(resolver);
            let out = {
                let gone = tx.cancellation();
                futures::pin_mut!(gone);
                match future::select(work, gone).await {
                    Either::Left((out, _)) => Some(out),
                    Either::Right(_) => None,
                }
            };
            if let Some(out) = out {
                // The caller may have timed out meanwhile; nothing to do then.
                let _ = tx.send(out);
            }
        })
    })
}

/// Starts the thread with a resolver built from `options`; returns the
/// sending end of its job queue once the resolver exists, or why it could
/// not be built (no usable name server, the runtime failed to start).
///
/// The queue is unbounded so that sending never blocks a session: every
/// job is bounded in time by its caller's deadline, and dropped early once
/// that caller is gone, so the queue holds at most the lookups callers are
/// still waiting for.
pub(super) fn spawn(options: &DnsOptions) -> Result<mpsc::UnboundedSender<Job>, String> {
    let config = resolver_config(options)?;
    let opts = resolver_opts(options);
    let (jobs, queue) = mpsc::unbounded::<Job>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    std::thread::Builder::new()
        .name("smtpgate-dns".to_string())
        .spawn(move || run(config, opts, queue, ready_tx))
        .map_err(|e| format!("cannot start the DNS thread: {e}"))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(jobs),
        Ok(Err(reason)) => Err(reason),
        Err(_) => Err("the DNS thread stopped while starting".to_string()),
    }
}

/// The thread's body: build the runtime and the resolver, say whether that
/// worked, then run jobs until the queue closes.
fn run(
    config: ResolverConfig,
    opts: ResolverOpts,
    mut queue: mpsc::UnboundedReceiver<Job>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot start the DNS runtime: {e}")));
            return;
        }
    };
    // hickory's provider takes the runtime handle of the context it is
    // built in, so build inside the runtime.
    let built = runtime.block_on(async {
        TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
    });
    let resolver = match built {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot set up the DNS resolver: {e}")));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    log::debug!("DNS thread started");
    runtime.block_on(async move {
        while let Some(job) = queue.next().await {
            // Each job is its own task, so one slow lookup never holds up
            // the others; they all share the resolver's sockets and cache.
            tokio::spawn(job(resolver.clone()));
        }
    });
    // Dropping the runtime cancels jobs still running; their callers get
    // a closed oneshot, which is a temporary error.
    log::debug!("DNS thread stopped: no resolver handle left");
}

/// Which name servers: the configured ones (UDP, and TCP for answers too
/// big for UDP, on the configured port), or else those of
/// `/etc/resolv.conf`. Search domains are never used: every name we look
/// up is absolute.
fn resolver_config(options: &DnsOptions) -> Result<ResolverConfig, String> {
    let addrs = options.server_addrs()?;
    let servers = if addrs.is_empty() {
        let (system, _) = hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| format!("cannot read the system's DNS servers: {e}"))?;
        let servers: Vec<NameServerConfig> = system
            .name_servers()
            .iter()
            .map(|ns| {
                let port = ns.connections.first().map_or(53, |c| c.port);
                udp_and_tcp(SocketAddr::new(ns.ip, port))
            })
            .collect();
        if servers.is_empty() {
            return Err(
                "no DNS servers: /etc/resolv.conf names none and dns.servers is empty".to_string(),
            );
        }
        servers
    } else {
        addrs.into_iter().map(udp_and_tcp).collect()
    };
    Ok(ResolverConfig::from_name_servers(servers))
}

/// One server over UDP, with TCP on the same port for when an answer comes
/// back truncated (hickory switches only to transports listed here).
fn udp_and_tcp(addr: SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
}

/// Resolver behaviour from `dns:`, plus the fixed choices: no hosts file
/// (a gateway's answers must be the DNS's), no search list, answers cached
/// for their TTL, negative ones too. hickory's server choice stays: two
/// servers asked at once, the faster one preferred, so a dead first server
/// costs nothing once it has been seen to fail.
fn resolver_opts(options: &DnsOptions) -> ResolverOpts {
    let mut o = ResolverOpts::default();
    o.timeout = options.timeout();
    // hickory counts retries after the first try; `attempts` counts tries.
    o.attempts = options.attempts.saturating_sub(1) as usize;
    o.cache_size = options.cache_size;
    o.use_hosts_file = ResolveHosts::Never;
    o.ndots = 0;
    o.edns0 = true;
    o.preserve_intermediates = true;
    o
}
