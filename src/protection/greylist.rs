//! Greylisting (as Postgrey and rspamd do it): the first attempt of a
//! (client network, sender, recipient) triplet is refused for now with
//! `451 4.7.1`; a retry after `delay_s` and within `retry_window_s` of the
//! first attempt passes, and so does every later message of that triplet
//! for `passed_days`. Once `auto_allowlist_after` triplets of one client
//! network passed, that network is not greylisted for
//! `auto_allowlist_days`. Spam software that does not retry never gets
//! through; real MTAs retry and are delayed once.
//!
//! What counts as passed: a retry that comes after the delay, inside the
//! window (a retry before the delay does not start the delay over, as in
//! Postgrey). Such a triplet passes from then on; towards the network's
//! auto-allowlisting it counts only once its message was delivered
//! ([`Greylist::delivered`]), so a client that retries to addresses the
//! upstream refuses (a dictionary attack) does not allowlist itself. The
//! rules decide which mail is greylisted at all; this only keeps the state
//! and answers.
//!
//! A store that cannot answer fails open by default (the mail is not
//! greylisted; an error line at most every 10 seconds, and
//! `smtpgate_greylist_total{result="error"}` counts each one), or with
//! `on_error: tempfail` refuses for now with `451 4.3.0`.

use super::greylist_store::{GreylistStore, MemoryGreylist, RedisGreylist, Write};
use super::triplet::Triplet;
use super::StoreError;
use crate::config::{redacted, GreylistOptions, OnError, StoreUrl};
use crate::metrics::Metrics;
use crate::proto::{EnhancedCode, Mailbox, Recipient, Reply};
use log::{error, info};
use prometheus::IntCounterVec;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the store knew about a triplet, as the `result` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// First attempt: greylisted.
    New,
    /// A retry before the delay: greylisted again.
    Early,
    /// A retry after the delay, inside the window: passes (and, once
    /// delivered, counts towards the network's auto-allowlisting).
    Retried,
    /// A triplet that passed before: passes.
    Known,
    /// The client network is auto-allowlisted: passes.
    Allowlisted,
}

impl Seen {
    /// The `result` label value.
    pub fn name(self) -> &'static str {
        match self {
            Seen::New => "new",
            Seen::Early => "early",
            Seen::Retried => "retried",
            Seen::Known => "known",
            Seen::Allowlisted => "allowlisted",
        }
    }

    /// True when the mail passes.
    pub fn passes(self) -> bool {
        matches!(self, Seen::Retried | Seen::Known | Seen::Allowlisted)
    }
}

/// Every `result` label value, created at 0.
pub const GREYLIST_RESULTS: [&str; 6] =
    ["new", "early", "retried", "known", "allowlisted", "error"];

/// The greylister's answer for a stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The mail passes: the worst of its triplets' results, and how many
    /// of them passed for the first time (to give [`Greylist::delivered`]).
    Pass(Seen, u32),
    /// Refuse for now with this reply.
    Greylisted(Seen, Reply),
    /// The store could not answer and the mail passes (`fail_open`).
    FailedOpen,
    /// The store could not answer: refuse with this reply (`tempfail`).
    Unavailable(Reply),
}

/// How a store failure was last reported.
struct Outage {
    /// When the last line was logged.
    logged: Option<Instant>,
    /// Failures since that line.
    since: u64,
    /// The store is failing (for the "reachable again" line).
    down: bool,
}

/// Seconds between two log lines about the same outage.
const OUTAGE_LOG_EVERY: Duration = Duration::from_secs(10);

/// Value of a triplet that passed.
const PASSED: &str = "passed";

/// The greylister: options, store and the outcome counters.
pub struct Greylist {
    /// The settings.
    options: GreylistOptions,
    /// Where the state is.
    store: Box<dyn GreylistStore>,
    /// The store, for log lines (password redacted).
    store_name: String,
    /// `smtpgate_greylist_total{result}`.
    counters: Option<IntCounterVec>,
    /// Outage reporting state.
    outage: Mutex<Outage>,
    /// Added to the system clock: lets tests move time forward by days
    /// without waiting (the memory store expires by this clock).
    skew_ms: AtomicU64,
}

impl Greylist {
    /// The greylister of `options`, counting into `metrics`. A Redis store
    /// is connected to at its first use.
    pub fn new(options: &GreylistOptions, metrics: &Metrics) -> Result<Greylist, String> {
        let timeout = Duration::from_millis(options.timeout_ms);
        let store: Box<dyn GreylistStore> = match &options.store {
            StoreUrl::Memory => Box::new(MemoryGreylist::new(options.max_entries as usize)),
            StoreUrl::Redis(url) => Box::new(RedisGreylist::new(url, timeout)?),
        };
        let counters = metrics.counter_family(
            "smtpgate_greylist_total",
            "Greylisting decisions by result (one per triplet asked; error: the store did not answer).",
            "result",
            &GREYLIST_RESULTS,
        );
        Ok(Greylist {
            store_name: options.store.to_string(),
            options: options.clone(),
            store,
            counters,
            outage: Mutex::new(Outage {
                logged: None,
                since: 0,
                down: false,
            }),
            skew_ms: AtomicU64::new(0),
        })
    }

    /// The settings.
    pub fn options(&self) -> &GreylistOptions {
        &self.options
    }

    /// Moves this greylister's clock forward by `by` (for tests of what
    /// happens days later; the memory store expires by this clock, Redis
    /// by its own).
    pub fn advance_clock(&self, by: Duration) {
        self.skew_ms
            .fetch_add(by.as_millis() as u64, Ordering::Relaxed);
    }

    /// Now, in ms since the epoch, on this greylister's clock.
    fn now_ms(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        (now.as_millis() as u64).saturating_add(self.skew_ms.load(Ordering::Relaxed))
    }

    /// The triplets of a client at `ip` sending from `sender` (`None`:
    /// `<>`) to `rcpts`.
    pub fn triplets(
        &self,
        ip: IpAddr,
        sender: Option<&Mailbox>,
        rcpts: &[Recipient],
    ) -> Vec<Triplet> {
        rcpts
            .iter()
            .map(|r| {
                Triplet::new(
                    ip,
                    sender,
                    r,
                    self.options.ipv4_prefix,
                    self.options.ipv6_prefix,
                )
            })
            .collect()
    }

    /// Asks about every triplet (one per recipient: one at the rcpt stage,
    /// all of the transaction at the data stage); the mail passes only if
    /// each one does. Every triplet is recorded, so a retry finds them all.
    pub async fn check(&self, triplets: &[Triplet]) -> Answer {
        let now = self.now_ms();
        let mut worst: Option<(Seen, Duration)> = None;
        let mut passed = Seen::Known;
        let mut retried = 0;
        for t in triplets {
            let seen = match self.one(t, now).await {
                Ok(s) => s,
                Err(e) => {
                    self.count("error");
                    self.store_failed(&e);
                    return match self.options.on_error {
                        OnError::FailOpen => Answer::FailedOpen,
                        OnError::Tempfail => Answer::Unavailable(unavailable_reply()),
                    };
                }
            };
            self.store_ok();
            self.count(seen.0.name());
            if seen.0 == Seen::Retried {
                retried += 1;
            }
            if seen.0.passes() {
                if seen.0 == Seen::Retried || passed == Seen::Known {
                    passed = seen.0;
                }
            } else if worst.is_none_or(|(_, w)| seen.1 > w) {
                worst = Some(seen);
            }
        }
        match worst {
            Some((seen, wait)) => Answer::Greylisted(seen, greylisted_reply(wait)),
            None => Answer::Pass(passed, retried),
        }
    }

    /// A message from `ip` whose check had `passes` first passes (see
    /// [`Answer::Pass`]) was delivered: they count towards the client
    /// network's auto-allowlisting. A store that fails here is logged and
    /// counted like a failed check; the mail is gone already.
    pub async fn delivered(&self, ip: IpAddr, passes: u32) {
        let o = &self.options;
        if passes == 0 || o.auto_allowlist_days == 0 {
            return;
        }
        let network = super::triplet::client_network(ip, o.ipv4_prefix, o.ipv6_prefix);
        let count = Write::Count {
            key: format!("{}n:{network}", o.key_prefix),
            ttl: o.allowlist_ttl(),
        };
        let writes = vec![count; passes as usize];
        match self.timed(self.store.write(&writes, self.now_ms())).await {
            Ok(()) => self.store_ok(),
            Err(e) => {
                self.count("error");
                self.store_failed(&e);
            }
        }
    }

    /// One triplet: what the store knew, and how long to wait when it is
    /// greylisted.
    async fn one(&self, t: &Triplet, now: u64) -> Result<(Seen, Duration), StoreError> {
        let o = &self.options;
        let prefix = &o.key_prefix;
        let triplet_key = format!("{prefix}t:{}", t.key());
        let network_key = format!("{prefix}n:{}", t.network);
        let keys = [triplet_key.clone(), network_key];
        let values = self.timed(self.store.read(&keys, now)).await?;
        let allowlisting = o.auto_allowlist_days > 0;
        let passes_of_network = values
            .get(1)
            .cloned()
            .flatten()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if allowlisting && passes_of_network >= u64::from(o.auto_allowlist_after) {
            return Ok((Seen::Allowlisted, Duration::ZERO));
        }
        let first_seen = match values.first().cloned().flatten() {
            Some(v) if v == PASSED => {
                let touch = [Write::Touch {
                    key: triplet_key,
                    ttl: o.passed_ttl(),
                }];
                self.timed(self.store.write(&touch, now)).await?;
                return Ok((Seen::Known, Duration::ZERO));
            }
            Some(v) => v.parse::<u64>().ok(),
            None => None,
        };
        let delay = o.delay().as_millis() as u64;
        let window = o.retry_window().as_millis() as u64;
        match first_seen {
            Some(first) if now.saturating_sub(first) < delay => {
                let left = delay - now.saturating_sub(first);
                Ok((Seen::Early, Duration::from_millis(left)))
            }
            Some(first) if now.saturating_sub(first) <= window => {
                let writes = [Write::Set {
                    key: triplet_key,
                    value: PASSED.to_string(),
                    ttl: o.passed_ttl(),
                }];
                self.timed(self.store.write(&writes, now)).await?;
                Ok((Seen::Retried, Duration::ZERO))
            }
            stale => {
                // Never seen, or seen too long ago to count: a first
                // attempt. A stale first attempt is replaced; a fresh one
                // another instance just wrote stays.
                let value = now.to_string();
                let ttl = o.retry_window();
                let write = if stale.is_some() {
                    Write::Set {
                        key: triplet_key,
                        value,
                        ttl,
                    }
                } else {
                    Write::SetNew {
                        key: triplet_key,
                        value,
                        ttl,
                    }
                };
                self.timed(self.store.write(&[write], now)).await?;
                Ok((Seen::New, o.delay()))
            }
        }
    }

    /// A store operation within the configured timeout.
    async fn timed<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let limit = Duration::from_millis(self.options.timeout_ms);
        match async_std::future::timeout(limit, op).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout),
        }
    }

    /// Counts one result.
    fn count(&self, result: &str) {
        if let Some(c) = &self.counters {
            c.with_label_values(&[result]).inc();
        }
    }

    /// Logs a store failure: at most once every [`OUTAGE_LOG_EVERY`].
    fn store_failed(&self, e: &StoreError) {
        let mut o = match self.outage.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        o.since += 1;
        o.down = true;
        if o.logged.is_none_or(|t| t.elapsed() >= OUTAGE_LOG_EVERY) {
            let mode = match self.options.on_error {
                OnError::FailOpen => "failing OPEN: mail is not greylisted until it is back",
                OnError::Tempfail => {
                    "failing CLOSED: greylisted mail gets 451 4.3.0 until it is back"
                }
            };
            error!(
                "GREYLISTING: store {} unavailable ({e}); {mode} ({} check(s) affected)",
                redacted(&self.store_name),
                o.since
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
                "GREYLISTING: store {} reachable again ({} check(s) affected since the last report)",
                redacted(&self.store_name),
                o.since
            );
            o.since = 0;
        }
    }
}

/// `451 4.7.1` with the time to wait (RFC 6647 §2.1: a temporary failure
/// that invites a retry; the seconds help a person reading a bounce).
pub fn greylisted_reply(wait: Duration) -> Reply {
    let secs = wait.as_millis().div_ceil(1000).max(1);
    Reply::new(
        451,
        EnhancedCode::new(4, 7, 1),
        format!("Greylisted, please try again in {secs} seconds"),
    )
}

/// `451 4.3.0` when the store cannot answer and `on_error: tempfail`.
pub fn unavailable_reply() -> Reply {
    Reply::new(
        451,
        EnhancedCode::new(4, 3, 0),
        "Greylisting service unavailable, try again later",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Mailbox;

    fn greylist(yaml: &str) -> Greylist {
        let c = crate::config::Config::from_yaml(yaml, "t").unwrap();
        Greylist::new(&c.greylisting, &Metrics::new()).unwrap()
    }

    fn mb(s: &str) -> Mailbox {
        let (local, domain) = s.split_once('@').unwrap();
        Mailbox {
            local: local.into(),
            domain: domain.into(),
        }
    }

    fn ask(g: &Greylist, ip: &str, from: &str, to: &str) -> Answer {
        let t = g.triplets(
            ip.parse().unwrap(),
            Some(&mb(from)),
            &[Recipient::Mailbox(mb(to))],
        );
        async_std::task::block_on(g.check(&t))
    }

    fn deliver(g: &Greylist, ip: &str, passes: u32) {
        async_std::task::block_on(g.delivered(ip.parse().unwrap(), passes));
    }

    fn seen(a: &Answer) -> Seen {
        match a {
            Answer::Pass(s, _) | Answer::Greylisted(s, _) => *s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn first_attempt_early_retry_retry_and_known() {
        let g = greylist("greylisting: { delay_s: 300, auto_allowlist_days: 0 }\n");
        let a = ask(&g, "192.0.2.7", "a@b.test", "c@d.test");
        let Answer::Greylisted(Seen::New, reply) = &a else {
            panic!("{a:?}")
        };
        assert_eq!(
            reply.to_string(),
            "451 4.7.1 Greylisted, please try again in 300 seconds"
        );
        g.advance_clock(Duration::from_secs(100));
        let a = ask(&g, "192.0.2.7", "a@b.test", "c@d.test");
        assert_eq!(seen(&a), Seen::Early);
        assert!(a_reply(&a).contains("try again in 200 seconds"), "{a:?}");
        g.advance_clock(Duration::from_secs(201));
        // Another host of the same /24, another case: the same triplet.
        assert_eq!(
            ask(&g, "192.0.2.99", "A@B.test", "C@d.TEST"),
            Answer::Pass(Seen::Retried, 1)
        );
        assert_eq!(
            ask(&g, "192.0.2.7", "a@b.test", "c@d.test"),
            Answer::Pass(Seen::Known, 0)
        );
        // Allowlisting off: another recipient is greylisted.
        assert_eq!(
            seen(&ask(&g, "192.0.2.7", "a@b.test", "e@d.test")),
            Seen::New
        );
    }

    fn a_reply(a: &Answer) -> String {
        match a {
            Answer::Greylisted(_, r) | Answer::Unavailable(r) => r.to_string(),
            _ => String::new(),
        }
    }

    #[test]
    fn a_retry_after_the_window_starts_over() {
        let g = greylist("greylisting: { delay_s: 60, retry_window_s: 3600 }\n");
        assert_eq!(
            seen(&ask(&g, "192.0.2.7", "a@b.test", "c@d.test")),
            Seen::New
        );
        g.advance_clock(Duration::from_secs(3601));
        assert_eq!(
            seen(&ask(&g, "192.0.2.7", "a@b.test", "c@d.test")),
            Seen::New
        );
        g.advance_clock(Duration::from_secs(61));
        assert_eq!(
            ask(&g, "192.0.2.7", "a@b.test", "c@d.test"),
            Answer::Pass(Seen::Retried, 1)
        );
    }

    #[test]
    fn a_passed_network_is_allowlisted_for_its_days_then_not() {
        let g = greylist("greylisting: { delay_s: 60, auto_allowlist_days: 2, passed_days: 1 }\n");
        ask(&g, "2001:db8:1:2::1", "a@b.test", "c@d.test");
        g.advance_clock(Duration::from_secs(61));
        assert_eq!(
            ask(&g, "2001:db8:1:2::1", "a@b.test", "c@d.test"),
            Answer::Pass(Seen::Retried, 1)
        );
        // Not allowlisted before the message was delivered.
        assert_eq!(
            seen(&ask(&g, "2001:db8:1:2:ffff::9", "x@y.test", "z@d.test")),
            Seen::New
        );
        deliver(&g, "2001:db8:1:2::1", 1);
        // The same /64, someone else: allowlisted.
        assert_eq!(
            ask(&g, "2001:db8:1:2:ffff::9", "x@y.test", "z@d.test"),
            Answer::Pass(Seen::Allowlisted, 0)
        );
        // Another /64 is not.
        assert_eq!(
            seen(&ask(&g, "2001:db8:1:3::1", "x@y.test", "z@d.test")),
            Seen::New
        );
        g.advance_clock(Duration::from_secs(2 * 86_400 + 1));
        assert_eq!(
            seen(&ask(&g, "2001:db8:1:2::1", "x@y.test", "z@d.test")),
            Seen::New
        );
    }

    #[test]
    fn allowlisting_can_wait_for_several_passes() {
        let g = greylist("greylisting: { delay_s: 1, auto_allowlist_after: 2 }\n");
        for rcpt in ["c1@d.test", "c2@d.test"] {
            assert_eq!(seen(&ask(&g, "192.0.2.7", "a@b.test", rcpt)), Seen::New);
        }
        g.advance_clock(Duration::from_secs(2));
        assert_eq!(
            seen(&ask(&g, "192.0.2.7", "a@b.test", "c1@d.test")),
            Seen::Retried
        );
        deliver(&g, "192.0.2.7", 1);
        assert_eq!(
            seen(&ask(&g, "192.0.2.7", "a@b.test", "c3@d.test")),
            Seen::New
        );
        assert_eq!(
            seen(&ask(&g, "192.0.2.7", "a@b.test", "c2@d.test")),
            Seen::Retried
        );
        deliver(&g, "192.0.2.7", 1);
        assert_eq!(
            seen(&ask(&g, "192.0.2.8", "a@b.test", "c3@d.test")),
            Seen::Allowlisted
        );
    }

    #[test]
    fn several_recipients_pass_only_together() {
        let g = greylist("greylisting: { delay_s: 10, auto_allowlist_days: 0 }\n");
        let ip = "192.0.2.7".parse().unwrap();
        let from = mb("a@b.test");
        let one = g.triplets(ip, Some(&from), &[Recipient::Mailbox(mb("c@d.test"))]);
        assert!(matches!(
            async_std::task::block_on(g.check(&one)),
            Answer::Greylisted(Seen::New, _)
        ));
        g.advance_clock(Duration::from_secs(11));
        let both = g.triplets(
            ip,
            Some(&from),
            &[Recipient::Mailbox(mb("c@d.test")), Recipient::Postmaster],
        );
        assert!(matches!(
            async_std::task::block_on(g.check(&both)),
            Answer::Greylisted(Seen::New, _)
        ));
        g.advance_clock(Duration::from_secs(11));
        assert_eq!(
            async_std::task::block_on(g.check(&both)),
            Answer::Pass(Seen::Retried, 1)
        );
    }
}
