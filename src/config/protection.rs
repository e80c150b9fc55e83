//! The `protection` section of `gateway.yaml`: per-client limits (connections
//! per IP, messages per session, the error tarpit, pre-greeting talkers,
//! per-line deadlines) and rate limits per client IP and per authenticated
//! user, counted in memory or in Redis.
//!
//! ```yaml
//! protection:
//!   exempt_networks: [10.0.0.0/8]      # default: relay.trusted_networks
//!   max_connections_per_ip: 20
//!   max_messages_per_session: 1000
//!   soft_error_limit: 10
//!   error_delay_ms: 1000
//!   greeting_delay_ms: 0
//!   per_line_deadline: true
//!   rate_limits:
//!     store: "redis://127.0.0.1:6379/0"   # default: memory
//!     fail_closed: false
//!     per_ip:   { connections_per_minute: 60, messages_per_hour: 500, recipients_per_hour: 2000 }
//!     per_user: { connections_per_minute: 30, messages_per_hour: 1000 }
//! ```

use super::{Network, ValidationError};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Per-client protection. Every key is optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Protection {
    /// Clients that none of the per-client protections apply to (per-IP
    /// limits, per-IP rates, messages per session, tarpit, greeting delay):
    /// the gateway's own relays, monitoring probes. Default: none given,
    /// which means `relay.trusted_networks` (as Postfix exempts
    /// `$mynetworks`); `[]` exempts nobody. Per-user rates still apply to
    /// exempt clients that log in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exempt_networks: Option<Vec<Network>>,
    /// Most connections open at once from one client IP (an IPv6 client
    /// counts per /64). Over: `421 4.7.0` and close, before the greeting.
    /// Default 20; 0 turns it off. Counted per instance.
    pub max_connections_per_ip: u32,
    /// Most MAIL commands in one session. The one over gets `421 4.7.0` and
    /// the connection is closed, so the client sends the rest over a new
    /// one (as Exim's `smtp_accept_max_per_connection`). Default 1000; 0
    /// turns it off.
    pub max_messages_per_session: u32,
    /// Errors (as counted for `limits.max_errors`) a session may make
    /// before every further error reply is delayed by `error_delay_ms` (as
    /// Postfix's `smtpd_soft_error_limit`). Default 10.
    pub soft_error_limit: u32,
    /// The tarpit: milliseconds each error reply waits once a session is
    /// past `soft_error_limit` (as Postfix's `smtpd_error_sleep_time`).
    /// Default 1000; 0 turns the tarpit off. At most 60000.
    pub error_delay_ms: u64,
    /// Milliseconds to wait before the greeting, watching for a client that
    /// talks first (a spam bot that does not wait for the banner gets `554
    /// 5.5.0` and is closed, as postscreen's pregreet test). Default 0
    /// (off): every non-exempt connection would wait this long; 3000–6000
    /// is usual on port 25, never on a submission port. At most 60000.
    pub greeting_delay_ms: u64,
    /// `timeouts.command_s` is the time to send a whole command line, and
    /// `timeouts.data_block_s` the time to send a whole line of message
    /// text, rather than the time between two reads (as Postfix's
    /// `smtpd_per_record_deadline`): a client trickling one byte a second
    /// cannot hold a connection forever. Default true.
    pub per_line_deadline: bool,
    /// Rate limits per client IP and per authenticated user.
    pub rate_limits: RateLimits,
}

impl Default for Protection {
    fn default() -> Self {
        Protection {
            exempt_networks: None,
            max_connections_per_ip: 20,
            max_messages_per_session: 1000,
            soft_error_limit: 10,
            error_delay_ms: 1000,
            greeting_delay_ms: 0,
            per_line_deadline: true,
            rate_limits: RateLimits::default(),
        }
    }
}

/// Rate limits and where their counters live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// Where the counters are kept: `memory` (default; per instance) or a
    /// Redis URL `redis://[:password@]host:port[/db]` shared by every
    /// instance that names it.
    pub store: StoreUrl,
    /// When the store cannot be reached: `false` (default) lets mail
    /// through uncounted and logs it loudly; `true` refuses with `451
    /// 4.3.0` (`421 4.3.0` at connect).
    pub fail_closed: bool,
    /// How long one store operation may take before the store counts as
    /// unreachable, in milliseconds. Default 250; 1–10000.
    pub timeout_ms: u64,
    /// Prefix of every Redis key, so several gateways (or other programs)
    /// can share one Redis. Default `smtpgate:rl:`.
    pub key_prefix: String,
    /// Limits per client IP (an IPv6 client counts per /64).
    pub per_ip: RateLimitSet,
    /// Limits per authenticated user (by login name, without case).
    pub per_user: RateLimitSet,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            store: StoreUrl::Memory,
            fail_closed: false,
            timeout_ms: 250,
            key_prefix: "smtpgate:rl:".to_string(),
            per_ip: RateLimitSet::default(),
            per_user: RateLimitSet::default(),
        }
    }
}

impl RateLimits {
    /// True when any rate is limited (the store is used at all).
    pub fn any(&self) -> bool {
        self.per_ip.any() || self.per_user.any()
    }
}

/// One set of rates; 0 (the default) means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSet {
    /// New connections per minute (per user: successful logins per
    /// minute). Over: `421 4.7.0` and close.
    pub connections_per_minute: u64,
    /// MAIL commands per hour, whether or not the message is then
    /// accepted (as Postfix's `smtpd_client_message_rate_limit`). Over:
    /// `450 4.7.1` to that MAIL.
    pub messages_per_hour: u64,
    /// RCPT commands per hour (as `smtpd_client_recipient_rate_limit`).
    /// Over: `450 4.7.1` to that RCPT.
    pub recipients_per_hour: u64,
}

impl RateLimitSet {
    /// True when any of the rates is limited.
    pub fn any(&self) -> bool {
        self.connections_per_minute > 0
            || self.messages_per_hour > 0
            || self.recipients_per_hour > 0
    }
}

/// Where rate-limit counters live.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreUrl {
    /// In this process, per instance.
    #[default]
    Memory,
    /// In Redis at this URL, shared across instances.
    Redis(String),
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Memory => f.write_str("memory"),
            StoreUrl::Redis(url) => f.write_str(&redacted(url)),
        }
    }
}

impl Serialize for StoreUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            StoreUrl::Memory => s.serialize_str("memory"),
            StoreUrl::Redis(url) => s.serialize_str(url),
        }
    }
}

impl<'de> Deserialize<'de> for StoreUrl {
    /// `memory`, or anything else as a URL; [`check`] refuses what is not
    /// a Redis URL, with the key path and line.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(if text == "memory" {
            StoreUrl::Memory
        } else {
            StoreUrl::Redis(text)
        })
    }
}

/// A Redis URL with any password replaced by `***`, for logs and errors.
pub fn redacted(url: &str) -> String {
    let Some(rest) = url.strip_prefix("redis://") else {
        return url.to_string();
    };
    let host_start = rest.find('/').unwrap_or(rest.len());
    match rest[..host_start].rfind('@') {
        Some(at) => format!("redis://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// Longest delay accepted for `error_delay_ms` and `greeting_delay_ms`.
const MAX_DELAY_MS: u64 = 60_000;

/// The checks of the `protection` section.
pub(super) fn check(p: &Protection) -> Result<(), ValidationError> {
    let err = |path: &str, reason: String| ValidationError::new(path, reason);
    for (key, value) in [
        ("protection.error_delay_ms", p.error_delay_ms),
        ("protection.greeting_delay_ms", p.greeting_delay_ms),
    ] {
        if value > MAX_DELAY_MS {
            return Err(err(key, format!("must be at most {MAX_DELAY_MS}")));
        }
    }
    let r = &p.rate_limits;
    if r.timeout_ms == 0 || r.timeout_ms > 10_000 {
        return Err(err(
            "protection.rate_limits.timeout_ms",
            "must be between 1 and 10000".into(),
        ));
    }
    if r.key_prefix
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(err(
            "protection.rate_limits.key_prefix",
            "must not contain spaces or control characters".into(),
        ));
    }
    check_store("protection.rate_limits.store", &r.store)
}

/// A store must be `memory` or a usable Redis URL; `path` names the key.
pub(super) fn check_store(path: &str, store: &StoreUrl) -> Result<(), ValidationError> {
    if let StoreUrl::Redis(url) = store {
        if !url.starts_with("redis://") {
            return Err(ValidationError::new(
                path,
                format!(
                    "{:?} is not a store: write `memory` or `redis://host:port[/db]`",
                    redacted(url)
                ),
            ));
        }
        if let Err(e) = redis::Client::open(url.as_str()) {
            return Err(ValidationError::new(
                path,
                format!("{:?} is not a usable Redis URL: {e}", redacted(url)),
            ));
        }
    }
    Ok(())
}

/// The `protection:` lines of `smtpgate check`.
pub(super) fn summary(p: &Protection, trusted: &[Network], s: &mut String) {
    use std::fmt::Write as _;
    let exempt = match &p.exempt_networks {
        None => format!("exempt {} (relay.trusted_networks)", list(trusted)),
        Some(n) => format!("exempt {}", list(n)),
    };
    let off = |n: u64, what: &str| {
        if n == 0 {
            format!("no {what}")
        } else {
            format!("{n} {what}")
        }
    };
    let tarpit = if p.error_delay_ms == 0 {
        "no tarpit".to_string()
    } else {
        format!(
            "{} ms per error after {}",
            p.error_delay_ms, p.soft_error_limit
        )
    };
    let greet = if p.greeting_delay_ms == 0 {
        "no greeting delay".to_string()
    } else {
        format!("{} ms greeting delay", p.greeting_delay_ms)
    };
    let _ = writeln!(
        s,
        "protect:   {exempt}; {}, {}; {tarpit}; {greet}; per-line deadline {}",
        off(u64::from(p.max_connections_per_ip), "connections per IP"),
        off(
            u64::from(p.max_messages_per_session),
            "messages per session"
        ),
        if p.per_line_deadline { "on" } else { "off" }
    );
    let r = &p.rate_limits;
    if r.any() {
        let _ = writeln!(
            s,
            "rates:     store {}{}; per IP {}; per user {}",
            r.store,
            if r.fail_closed {
                " (fail closed)"
            } else {
                " (fail open)"
            },
            rate_set(&r.per_ip),
            rate_set(&r.per_user)
        );
    } else {
        let _ = writeln!(s, "rates:     none");
    }
}

/// `a, b` or `none`.
fn list(n: &[Network]) -> String {
    if n.is_empty() {
        return "none".to_string();
    }
    n.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `60 connections/min, 500 messages/h` or `none`.
fn rate_set(r: &RateLimitSet) -> String {
    let mut parts = Vec::new();
    if r.connections_per_minute > 0 {
        parts.push(format!("{} connections/min", r.connections_per_minute));
    }
    if r.messages_per_hour > 0 {
        parts.push(format!("{} messages/h", r.messages_per_hour));
    }
    if r.recipients_per_hour > 0 {
        parts.push(format!("{} recipients/h", r.recipients_per_hour));
    }
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn load(yaml: &str) -> Result<Config, String> {
        Config::from_yaml(yaml, "t.yaml").map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let c = load("").unwrap();
        let p = &c.protection;
        assert_eq!(p.max_connections_per_ip, 20);
        assert_eq!(p.greeting_delay_ms, 0);
        assert_eq!(p.rate_limits.store, StoreUrl::Memory);
        assert!(!p.rate_limits.any());
        assert!(p.exempt_networks.is_none());
    }

    #[test]
    fn full_section() {
        let c = load(
            "protection:\n  exempt_networks: []\n  greeting_delay_ms: 500\n  rate_limits:\n    \
             store: \"redis://127.0.0.1:6379/2\"\n    fail_closed: true\n    \
             per_ip: { messages_per_hour: 5 }\n    per_user: { recipients_per_hour: 9 }\n",
        )
        .unwrap();
        let r = &c.protection.rate_limits;
        assert_eq!(r.store, StoreUrl::Redis("redis://127.0.0.1:6379/2".into()));
        assert_eq!(r.per_ip.messages_per_hour, 5);
        assert_eq!(r.per_user.recipients_per_hour, 9);
        assert_eq!(c.protection.exempt_networks, Some(vec![]));
        assert!(c
            .summary()
            .contains("per IP 5 messages/h; per user 9 recipients/h"));
    }

    #[test]
    fn errors_name_the_line() {
        let cases: &[(&str, &str)] = &[
            (
                "protection:\n  rate_limits:\n    store: \"mysql://x\"\n",
                "t.yaml:3: protection.rate_limits.store: \"mysql://x\" is not a store",
            ),
            (
                "protection:\n  greeting_delay_ms: 70000\n",
                "t.yaml:2: protection.greeting_delay_ms: must be at most 60000",
            ),
            (
                "protection:\n  rate_limits:\n    per_ip: { messages_per_day: 3 }\n",
                "t.yaml:3: protection.rate_limits.per_ip: unknown field `messages_per_day`",
            ),
            (
                "protection:\n  rate_limits:\n    timeout_ms: 0\n",
                "t.yaml:3: protection.rate_limits.timeout_ms: must be between 1 and 10000",
            ),
            (
                "protection:\n  rate_limits:\n    store: \"redis://h:notaport\"\n",
                "t.yaml:3: protection.rate_limits.store: \"redis://h:notaport\" is not a usable Redis URL",
            ),
            (
                "protection:\n  exempt_networks: [\"10.0.0.0/33\"]\n",
                "t.yaml:2: protection.exempt_networks",
            ),
        ];
        for (yaml, want) in cases {
            let got = load(yaml).unwrap_err();
            assert!(got.starts_with(want), "{yaml:?}:\n got {got}\nwant {want}");
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redacted("redis://:s3cret@10.0.0.9:6379/1"),
            "redis://***@10.0.0.9:6379/1"
        );
        assert_eq!(redacted("redis://10.0.0.9"), "redis://10.0.0.9");
        let err =
            load("protection:\n  rate_limits:\n    store: \"redis://:pw@h:xx\"\n").unwrap_err();
        assert!(!err.to_string().contains("pw"), "{err}");
    }
}
