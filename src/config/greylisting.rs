//! `greylisting:`: how long a first-seen (client network, sender,
//! recipient) triplet is held back, how long the gateway remembers it, when
//! a client network is allowlisted, and where that state lives. Which mail
//! is greylisted at all is for the rules to say (`action: greylist`).
//!
//! ```yaml
//! greylisting:
//!   delay_s: 300                 # a retry is accepted this long after the first attempt
//!   retry_window_s: 86400        # ... until this long after it; then it starts over
//!   passed_days: 35              # a passed triplet is let through at once for this long
//!   auto_allowlist_after: 1      # passed triplets that allowlist the client network
//!   auto_allowlist_days: 7       # for this long (0: never)
//!   ipv4_prefix: 24
//!   ipv6_prefix: 64
//!   store: "redis://127.0.0.1:6379/0"   # default: memory
//!   key_prefix: "smtpgate:gl:"
//!   timeout_ms: 250
//!   on_error: fail_open          # or tempfail (451 4.3.0)
//!   max_entries: 100000          # the memory store's bound
//! ```

use super::protection::check_store;
use super::{OnError, StoreUrl, ValidationError};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Longest `retry_window_s` accepted: 30 days.
const MAX_WINDOW_S: u64 = 30 * 86_400;

/// Longest `passed_days` and `auto_allowlist_days` accepted.
const MAX_DAYS: u64 = 3650;

/// The greylisting settings. Every key has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GreylistOptions {
    /// Seconds after the first attempt before a retry of the same triplet
    /// is accepted (earlier retries get `451 4.7.1` again, with the time
    /// left). Default 300.
    pub delay_s: u64,
    /// Seconds after the first attempt until which a retry is accepted; a
    /// triplet not retried by then is forgotten, and its next attempt is a
    /// first one again. Default 86400; more than `delay_s`, at most 30 days.
    pub retry_window_s: u64,
    /// Days a passed triplet is let through without delay, counted from
    /// its last use. Default 35 (as Postgrey's `max-age`); 1 to 3650.
    pub passed_days: u64,
    /// How many triplets from one client network must pass (a retry
    /// after the delay) before the network is auto-allowlisted. Default 1.
    pub auto_allowlist_after: u32,
    /// Days an auto-allowlisted network is not greylisted, counted from
    /// its last passed retry. Default 7; 0 turns auto-allowlisting off.
    pub auto_allowlist_days: u64,
    /// The IPv4 client network of a triplet: a /24 by default (a sending
    /// farm retries from another address of the same network). 8 to 32.
    pub ipv4_prefix: u8,
    /// The IPv6 client network of a triplet: a /64 by default. 16 to 128.
    pub ipv6_prefix: u8,
    /// Where triplets live: `memory` (default; per instance) or a Redis
    /// URL `redis://[:password@]host:port[/db]` shared by every instance
    /// that names it.
    pub store: StoreUrl,
    /// Prefix of every Redis key. Default `smtpgate:gl:`.
    pub key_prefix: String,
    /// How long one store operation may take, in milliseconds, before the
    /// store counts as unreachable. Default 250; 1 to 10000.
    pub timeout_ms: u64,
    /// When the store cannot answer: `fail_open` (default: the mail is
    /// not greylisted, the log says so, a metric counts it) or `tempfail`
    /// (`451 4.3.0`).
    pub on_error: OnError,
    /// Most entries the memory store holds; past it the entries closest
    /// to expiry go first. Default 100000; at least 100.
    pub max_entries: u64,
}

impl Default for GreylistOptions {
    fn default() -> Self {
        GreylistOptions {
            delay_s: 300,
            retry_window_s: 86_400,
            passed_days: 35,
            auto_allowlist_after: 1,
            auto_allowlist_days: 7,
            ipv4_prefix: 24,
            ipv6_prefix: 64,
            store: StoreUrl::Memory,
            key_prefix: "smtpgate:gl:".to_string(),
            timeout_ms: 250,
            on_error: OnError::FailOpen,
            max_entries: 100_000,
        }
    }
}

impl GreylistOptions {
    /// [`delay_s`](Self::delay_s) as a duration.
    pub fn delay(&self) -> Duration {
        Duration::from_secs(self.delay_s)
    }

    /// [`retry_window_s`](Self::retry_window_s) as a duration.
    pub fn retry_window(&self) -> Duration {
        Duration::from_secs(self.retry_window_s)
    }

    /// [`passed_days`](Self::passed_days) as a duration.
    pub fn passed_ttl(&self) -> Duration {
        Duration::from_secs(self.passed_days * 86_400)
    }

    /// [`auto_allowlist_days`](Self::auto_allowlist_days) as a duration.
    pub fn allowlist_ttl(&self) -> Duration {
        Duration::from_secs(self.auto_allowlist_days * 86_400)
    }
}

/// Range checks of `greylisting:`.
pub(super) fn check(g: &GreylistOptions) -> Result<(), ValidationError> {
    let err =
        |key: &str, reason: String| ValidationError::new(format!("greylisting.{key}"), reason);
    if g.retry_window_s <= g.delay_s || g.retry_window_s > MAX_WINDOW_S {
        return Err(err(
            "retry_window_s",
            format!(
                "must be more than delay_s ({}) and at most {MAX_WINDOW_S}",
                g.delay_s
            ),
        ));
    }
    if !(1..=MAX_DAYS).contains(&g.passed_days) {
        return Err(err(
            "passed_days",
            format!("must be between 1 and {MAX_DAYS}"),
        ));
    }
    if g.auto_allowlist_days > MAX_DAYS {
        return Err(err(
            "auto_allowlist_days",
            format!("must be at most {MAX_DAYS}"),
        ));
    }
    if g.auto_allowlist_after == 0 {
        return Err(err("auto_allowlist_after", "must be at least 1".into()));
    }
    if !(8..=32).contains(&g.ipv4_prefix) {
        return Err(err("ipv4_prefix", "must be between 8 and 32".into()));
    }
    if !(16..=128).contains(&g.ipv6_prefix) {
        return Err(err("ipv6_prefix", "must be between 16 and 128".into()));
    }
    if !(1..=10_000).contains(&g.timeout_ms) {
        return Err(err("timeout_ms", "must be between 1 and 10000".into()));
    }
    if g.key_prefix
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(err(
            "key_prefix",
            "must not contain spaces or control characters".into(),
        ));
    }
    if g.max_entries < 100 {
        return Err(err("max_entries", "must be at least 100".into()));
    }
    check_store("greylisting.store", &g.store)
}

/// The `greylist:` line of `smtpgate check`.
pub(super) fn summary(g: &GreylistOptions, s: &mut String) {
    use std::fmt::Write as _;
    let allowlist = if g.auto_allowlist_days == 0 {
        "no auto-allowlist".to_string()
    } else {
        format!(
            "network allowlisted {} days after {} passed",
            g.auto_allowlist_days, g.auto_allowlist_after
        )
    };
    let on_error = match g.on_error {
        OnError::FailOpen => "fail open",
        OnError::Tempfail => "tempfail",
    };
    let _ = writeln!(
        s,
        "greylist:  (for greylist rules) retry after {}s within {}s, passed {} days; {allowlist}; \
         /{} and /{}; store {}, {on_error}",
        g.delay_s, g.retry_window_s, g.passed_days, g.ipv4_prefix, g.ipv6_prefix, g.store
    );
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(yaml: &str) -> Result<Config, String> {
        Config::from_yaml(yaml, "t.yaml").map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_a_full_section() {
        let c = load("").unwrap();
        assert_eq!(c.greylisting.delay_s, 300);
        assert_eq!(c.greylisting.retry_window_s, 86_400);
        assert_eq!(c.greylisting.ipv6_prefix, 64);
        let c = load(
            "greylisting:\n  delay_s: 2\n  retry_window_s: 60\n  store: \"redis://127.0.0.1:6390/1\"\n  \
             on_error: tempfail\n  auto_allowlist_days: 0\n",
        )
        .unwrap();
        assert_eq!(c.greylisting.delay_s, 2);
        assert_eq!(c.greylisting.on_error, crate::config::OnError::Tempfail);
    }

    #[test]
    fn summary_line() {
        let s = load("greylisting: { store: \"redis://:pw@10.0.0.9:6379/1\" }\n")
            .unwrap()
            .summary();
        assert!(
            s.contains(
                "greylist:  (for greylist rules) retry after 300s within 86400s, passed 35 days; \
                 network allowlisted 7 days after 1 passed; /24 and /64; \
                 store redis://***@10.0.0.9:6379/1, fail open\n"
            ),
            "{s}"
        );
    }

    #[test]
    fn bad_values_name_their_line() {
        for (yaml, want) in [
            (
                "greylisting:\n  delay_s: 600\n  retry_window_s: 300\n",
                "t.yaml:3: greylisting.retry_window_s: must be more than delay_s (600)",
            ),
            (
                "greylisting:\n  ipv4_prefix: 33\n",
                "t.yaml:2: greylisting.ipv4_prefix: must be between 8 and 32",
            ),
            (
                "greylisting:\n  store: \"mysql://x\"\n",
                "t.yaml:2: greylisting.store: \"mysql://x\" is not a store",
            ),
            (
                "greylisting:\n  delays: 3\n",
                "t.yaml:2: greylisting: unknown field `delays`",
            ),
        ] {
            let e = load(yaml).unwrap_err();
            assert!(e.starts_with(want), "{yaml}\nwant {want}\ngot  {e}");
        }
    }
}
