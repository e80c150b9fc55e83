//! The gateway's one DNS resolver: PTR, A/AAAA, TXT and MX lookups for
//! iprev now, DNS lists, SPF, DKIM and DMARC later, with one cache for all.
//!
//! Why a thread of its own: the gateway runs on async-std, but the DNS
//! client worth having, hickory, only runs on tokio now, and `mail-auth`
//! (SPF/DKIM/DMARC, to come) takes hickory's tokio resolver. So one thread,
//! `smtpgate-dns`, runs a small current-thread tokio runtime that owns the
//! resolver and its cache; async-std code reaches it through
//! runtime-agnostic `futures` channels (see [`thread`]). This is the only
//! place a tokio runtime runs in the gateway, and it starts only when a
//! caller calls [`Resolver::start`].
//!
//! Every call ends by itself: besides hickory's own timeout and attempts,
//! the caller's side gives up after [`Resolver::deadline`], so a wedged
//! DNS thread cannot hang a session; it then gets
//! [`DnsError::Temporary`].
//!
//! This module depends on [`crate::config`] only.

mod answer;
pub mod iprev;
mod thread;

pub use hickory_resolver::TokioResolver;
pub use iprev::{iprev, Iprev, IprevResult};

use crate::config::DnsOptions;
use futures::channel::{mpsc, oneshot};
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::time::Duration;

/// Why a lookup gave no records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// The DNS said so: NXDOMAIN (no such name) or NOERROR with no record
    /// of that type (NODATA). A real negative answer, fit to act on (and
    /// cached for the zone's negative TTL). A name that cannot exist in
    /// the DNS (a label over 63 bytes) gets this too.
    NotFound,
    /// No usable answer, so nothing is known about the name: timeout,
    /// SERVFAIL, REFUSED, a malformed or truncated reply, the DNS thread
    /// gone. The reason is short, for logs. Callers should defer (4xx) or
    /// skip the check, never treat this as "not listed".
    Temporary(String),
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsError::NotFound => f.write_str("no such record"),
            DnsError::Temporary(why) => write!(f, "temporary DNS failure: {why}"),
        }
    }
}

impl std::error::Error for DnsError {}

/// A handle on the DNS thread: cheap to clone, one per component that
/// needs DNS. The thread and its cache live as long as any handle does.
#[derive(Clone)]
pub struct Resolver {
    /// The thread's job queue; closing it (last handle dropped) stops the
    /// thread.
    jobs: mpsc::UnboundedSender<thread::Job>,
    /// How long one lookup may take, all attempts included, before the
    /// caller stops waiting.
    deadline: Duration,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// Boxed future a [`Resolver::with_resolver`] job returns.
pub type JobFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Resolver {
    /// Starts the `smtpgate-dns` thread with a resolver for `config`
    /// (its servers, or `/etc/resolv.conf`'s when it lists none). Fails
    /// when there is no usable name server or the thread cannot start.
    /// Only call it when something uses DNS: it costs a thread.
    pub fn start(config: &DnsOptions) -> Result<Resolver, String> {
        let jobs = thread::spawn(config)?;
        Ok(Resolver {
            jobs,
            deadline: deadline(config),
        })
    }

    /// How long one lookup may take before it fails as temporary: the
    /// configured timeout for each attempt, one timeout more and half a
    /// second as margin (hickory normally gives up first; this bound holds
    /// even if the DNS thread is stuck).
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// PTR names of `ip` (IPv4-mapped IPv6 addresses are looked up as the
    /// IPv4 address they carry): lower case, without the trailing dot,
    /// each once.
    pub async fn reverse(&self, ip: IpAddr) -> Result<Vec<String>, DnsError> {
        let name = hickory_resolver::proto::rr::Name::from(ip.to_canonical());
        self.lookup(move |r| {
            Box::pin(async move { answer::ptr_names(r.reverse_lookup(name).await) })
        })
        .await
    }

    /// A and AAAA addresses of `name`, asked at once, IPv4 first. Either
    /// family's addresses are enough; [`DnsError::NotFound`] when both are
    /// negative answers, else the other family's failure is returned.
    pub async fn ips(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        let Some(n) = answer::query_name(name) else {
            return Err(DnsError::NotFound);
        };
        self.lookup(move |r| {
            Box::pin(async move {
                let (v4, v6) =
                    futures::future::join(r.ipv4_lookup(n.clone()), r.ipv6_lookup(n)).await;
                merge_families(answer::ipv4s(v4), answer::ipv6s(v6))
            })
        })
        .await
    }

    /// A addresses of `name` (what DNS lists answer with).
    pub async fn ipv4(&self, name: &str) -> Result<Vec<Ipv4Addr>, DnsError> {
        let Some(n) = answer::query_name(name) else {
            return Err(DnsError::NotFound);
        };
        self.lookup(move |r| Box::pin(async move { answer::ipv4s(r.ipv4_lookup(n).await) }))
            .await
    }

    /// A addresses of several names in one job on the DNS thread, each
    /// within its own time limit (past it, that name's answer is
    /// [`DnsError::Temporary`]): how a DNS list check asks every zone at
    /// once for one hop to the thread, not one per zone. Answers are in
    /// the order of `names`.
    pub async fn ipv4_each(
        &self,
        names: Vec<(String, Duration)>,
    ) -> Vec<Result<Vec<Ipv4Addr>, DnsError>> {
        let count = names.len();
        let slowest = names.iter().map(|(_, d)| *d).max().unwrap_or_default();
        let job = move |r: TokioResolver| -> JobFuture<Vec<Result<Vec<Ipv4Addr>, DnsError>>> {
            Box::pin(async move {
                futures::future::join_all(names.into_iter().map(|(name, limit)| {
                    let r = r.clone();
                    async move {
                        let Some(n) = answer::query_name(&name) else {
                            return Err(DnsError::NotFound);
                        };
                        match tokio::time::timeout(limit, r.ipv4_lookup(n)).await {
                            Ok(found) => answer::ipv4s(found),
                            Err(_) => Err(DnsError::Temporary(format!(
                                "no answer within {} ms",
                                limit.as_millis()
                            ))),
                        }
                    }
                }))
                .await
            })
        };
        match self
            .with_resolver_within(slowest + Duration::from_millis(500), job)
            .await
        {
            Ok(answers) => answers,
            Err(e) => vec![Err(e); count],
        }
    }

    /// AAAA addresses of `name`.
    pub async fn ipv6(&self, name: &str) -> Result<Vec<Ipv6Addr>, DnsError> {
        let Some(n) = answer::query_name(name) else {
            return Err(DnsError::NotFound);
        };
        self.lookup(move |r| Box::pin(async move { answer::ipv6s(r.ipv6_lookup(n).await) }))
            .await
    }

    /// TXT records of `name`, one string per record (its character-strings
    /// joined, as SPF and DKIM read them).
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        let Some(n) = answer::query_name(name) else {
            return Err(DnsError::NotFound);
        };
        self.lookup(move |r| Box::pin(async move { answer::txts(r.txt_lookup(n).await) }))
            .await
    }

    /// MX records of `name` as (preference, exchange), lowest preference
    /// first; exchanges lower case without the trailing dot, empty for a
    /// null MX.
    pub async fn mx(&self, name: &str) -> Result<Vec<(u16, String)>, DnsError> {
        let Some(n) = answer::query_name(name) else {
            return Err(DnsError::NotFound);
        };
        self.lookup(move |r| Box::pin(async move { answer::mxs(r.mx_lookup(n).await) }))
            .await
    }

    /// Runs a job on the DNS thread with the shared hickory resolver (and
    /// so its cache), for libraries that take a `TokioResolver` (mail-auth).
    /// Bounded by [`deadline`](Self::deadline): meant for one lookup; see
    /// [`with_resolver_within`](Self::with_resolver_within) for jobs that
    /// make several. `Temporary` when the deadline passes or the thread is
    /// gone.
    pub async fn with_resolver<T: Send + 'static>(
        &self,
        job: impl FnOnce(TokioResolver) -> JobFuture<T> + Send + 'static,
    ) -> Result<T, DnsError> {
        self.with_resolver_within(self.deadline, job).await
    }

    /// Like [`with_resolver`](Self::with_resolver), bounded by `limit`
    /// instead: for a job that makes several lookups in a row (an SPF
    /// check may make ten).
    pub async fn with_resolver_within<T: Send + 'static>(
        &self,
        limit: Duration,
        job: impl FnOnce(TokioResolver) -> JobFuture<T> + Send + 'static,
    ) -> Result<T, DnsError> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .unbounded_send(thread::job(job, tx))
            .map_err(|_| DnsError::Temporary("the DNS thread is gone".to_string()))?;
        match async_std::future::timeout(limit, rx).await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(oneshot::Canceled)) => {
                Err(DnsError::Temporary("the DNS thread is gone".to_string()))
            }
            Err(_) => Err(DnsError::Temporary(format!(
                "no answer within {} ms",
                limit.as_millis()
            ))),
        }
    }

    /// One lookup on the thread, its result already in our terms.
    async fn lookup<T: Send + 'static>(
        &self,
        job: impl FnOnce(TokioResolver) -> JobFuture<Result<T, DnsError>> + Send + 'static,
    ) -> Result<T, DnsError> {
        let result = self.with_resolver(job).await.and_then(|r| r);
        if let Err(DnsError::Temporary(why)) = &result {
            log::debug!("DNS lookup failed: {why}");
        }
        result
    }
}

/// [`Resolver::deadline`] for `config`.
fn deadline(config: &DnsOptions) -> Duration {
    config.timeout() * (config.attempts.max(1) + 1) + Duration::from_millis(500)
}

/// Both families' answers as one: any addresses win; both negative is
/// negative; otherwise the failure that is not a negative answer.
fn merge_families(
    v4: Result<Vec<Ipv4Addr>, DnsError>,
    v6: Result<Vec<Ipv6Addr>, DnsError>,
) -> Result<Vec<IpAddr>, DnsError> {
    let mut ips: Vec<IpAddr> = Vec::new();
    let mut failure = None;
    match v4 {
        Ok(a) => ips.extend(a.into_iter().map(IpAddr::V4)),
        Err(DnsError::NotFound) => {}
        Err(e) => failure = Some(e),
    }
    match v6 {
        Ok(a) => ips.extend(a.into_iter().map(IpAddr::V6)),
        Err(DnsError::NotFound) => {}
        Err(e) => failure = failure.or(Some(e)),
    }
    match (ips.is_empty(), failure) {
        (false, _) => Ok(ips),
        (true, Some(e)) => Err(e),
        (true, None) => Err(DnsError::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_covers_every_attempt_and_a_margin() {
        let c = DnsOptions {
            timeout_ms: 2000,
            attempts: 2,
            ..DnsOptions::default()
        };
        assert_eq!(deadline(&c), Duration::from_millis(6500));
        let c = DnsOptions {
            timeout_ms: 100,
            attempts: 1,
            ..DnsOptions::default()
        };
        assert_eq!(deadline(&c), Duration::from_millis(700));
    }

    #[test]
    fn families_merge() {
        let a: Ipv4Addr = "192.0.2.1".parse().unwrap();
        let aaaa: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let tmp = || DnsError::Temporary("t".into());
        assert_eq!(
            merge_families(Ok(vec![a]), Ok(vec![aaaa])),
            Ok(vec![IpAddr::V4(a), IpAddr::V6(aaaa)])
        );
        assert_eq!(
            merge_families(Ok(vec![a]), Err(tmp())),
            Ok(vec![IpAddr::V4(a)])
        );
        assert_eq!(
            merge_families(Err(DnsError::NotFound), Err(DnsError::NotFound)),
            Err(DnsError::NotFound)
        );
        assert_eq!(
            merge_families(Err(DnsError::NotFound), Err(tmp())),
            Err(tmp())
        );
        assert_eq!(
            merge_families(Err(tmp()), Err(DnsError::NotFound)),
            Err(tmp())
        );
    }

    #[test]
    fn a_resolver_whose_thread_is_gone_fails_temporarily() {
        let (jobs, queue) = mpsc::unbounded();
        drop(queue);
        let r = Resolver {
            jobs,
            deadline: Duration::from_secs(5),
        };
        let got = async_std::task::block_on(r.txt("example.test"));
        assert_eq!(
            got,
            Err(DnsError::Temporary("the DNS thread is gone".into()))
        );
    }

    #[test]
    fn a_stuck_thread_cannot_hold_a_caller_past_the_deadline() {
        // A queue nobody reads stands for a wedged DNS thread.
        let (jobs, _queue) = mpsc::unbounded();
        let r = Resolver {
            jobs,
            deadline: Duration::from_millis(200),
        };
        let started = std::time::Instant::now();
        let got = async_std::task::block_on(r.ipv4("example.test"));
        assert_eq!(
            got,
            Err(DnsError::Temporary("no answer within 200 ms".into()))
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    /// How many threads of this process are named `smtpgate-dns`.
    fn dns_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.trim_end() == "smtpgate-dns")
            .count()
    }

    #[test]
    fn the_thread_runs_while_a_handle_exists() {
        // The only test here that starts a real resolver, so the count is
        // ours alone. Nothing is sent: the server need not exist.
        let config = DnsOptions {
            servers: vec!["127.0.0.1:9".to_string()],
            ..DnsOptions::default()
        };
        let r = Resolver::start(&config).expect("starts");
        let copy = r.clone();
        assert_eq!(dns_threads(), 1);
        drop(r);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(dns_threads(), 1, "a clone still holds the thread");
        drop(copy);
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while dns_threads() != 0 {
            assert!(
                std::time::Instant::now() < until,
                "the DNS thread did not stop"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
