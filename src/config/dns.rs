//! `dns:`: how the gateway's one DNS resolver reaches its name servers
//! (which servers, how long to wait, how often to ask) and how many
//! answers it keeps. The resolver itself is the `dns` module.

use super::ValidationError;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// Longest per-query timeout accepted, in milliseconds: a name server that
/// takes longer than a minute is down, and a session should not wait for it.
const MAX_TIMEOUT_MS: u64 = 60_000;

/// Most attempts accepted: each waits up to `timeout_ms`.
const MAX_ATTEMPTS: u32 = 10;

/// Largest cache accepted, in entries (an entry is one answer, up to a few
/// KiB): ten million is far beyond any gateway's working set.
const MAX_CACHE_SIZE: u64 = 10_000_000;

/// The resolver's settings. YAML:
/// `dns: { servers: ["127.0.0.1:53"], timeout_ms: 2000, attempts: 2, cache_size: 10000 }`.
/// Every key has a default, so no `dns:` section means the system's name
/// servers with the defaults below.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsOptions {
    /// Name servers to ask, each `"ip:port"` (`"127.0.0.1:53"`,
    /// `"[::1]:53"`), tried in turn when one fails. Empty (the default):
    /// the `nameserver` lines of `/etc/resolv.conf`, read at start-up.
    /// Kept as text so a bad entry is reported with its line and value.
    pub servers: Vec<String>,
    /// Milliseconds to wait for one answer from the servers before the
    /// query is sent again. Default 2000; between 1 and 60000.
    pub timeout_ms: u64,
    /// How many times a query is sent (the first time included) before
    /// the lookup fails as temporary. Default 2; between 1 and 10.
    pub attempts: u32,
    /// Answers kept in memory, positive and negative, each for its TTL
    /// (negative ones for their SOA's negative TTL). Default 10000; 0
    /// keeps none; at most 10000000.
    pub cache_size: u64,
}

impl Default for DnsOptions {
    fn default() -> Self {
        DnsOptions {
            servers: Vec::new(),
            timeout_ms: 2000,
            attempts: 2,
            cache_size: 10_000,
        }
    }
}

impl DnsOptions {
    /// [`timeout_ms`](Self::timeout_ms) as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The configured servers, parsed; `Err` names the first entry that is
    /// not an `ip:port` address (validation refuses such a file first).
    pub fn server_addrs(&self) -> Result<Vec<SocketAddr>, String> {
        self.servers
            .iter()
            .map(|s| parse_server(s))
            .collect::<Result<Vec<_>, _>>()
    }
}

/// One `servers` entry: an IP address and a port other than 0.
fn parse_server(s: &str) -> Result<SocketAddr, String> {
    match s.parse::<SocketAddr>() {
        Ok(addr) if addr.port() != 0 => Ok(addr),
        _ => Err(format!(
            "{s:?} is not an ip:port address (e.g. \"127.0.0.1:53\" or \"[::1]:53\")"
        )),
    }
}

/// Checks `dns`: every server an `ip:port` address, listed once, and the
/// numbers in range.
pub(super) fn check(d: &DnsOptions) -> Result<(), ValidationError> {
    let mut seen: Vec<SocketAddr> = Vec::new();
    for (i, s) in d.servers.iter().enumerate() {
        let path = format!("dns.servers[{i}]");
        let addr = parse_server(s).map_err(|reason| ValidationError::new(&path, reason))?;
        if let Some(j) = seen.iter().position(|a| *a == addr) {
            return Err(ValidationError::new(
                path,
                format!("{s:?} is already listed at dns.servers[{j}]"),
            ));
        }
        seen.push(addr);
    }
    if !(1..=MAX_TIMEOUT_MS).contains(&d.timeout_ms) {
        return Err(ValidationError::new(
            "dns.timeout_ms",
            format!("must be between 1 and {MAX_TIMEOUT_MS}"),
        ));
    }
    if !(1..=MAX_ATTEMPTS).contains(&d.attempts) {
        return Err(ValidationError::new(
            "dns.attempts",
            format!("must be between 1 and {MAX_ATTEMPTS}"),
        ));
    }
    if d.cache_size > MAX_CACHE_SIZE {
        return Err(ValidationError::new(
            "dns.cache_size",
            format!("must be at most {MAX_CACHE_SIZE}"),
        ));
    }
    Ok(())
}
