//! The HELO check: what Postfix's `reject_invalid_helo_hostname`,
//! `reject_non_fqdn_helo_hostname` and `reject_unknown_helo_hostname`
//! test, and whether the client claims to be us, as facts.
//!
//! Facts:
//! - `helo.fqdn`: `yes` (a domain name with a dot), `no`, or `literal`
//!   for an address literal (`[192.0.2.1]`);
//! - `helo.literal`: for an address literal, `match` when it is the
//!   client's IP and `mismatch` when not; `none` for a name;
//! - `helo.resolves`: `yes` when the name has an A, AAAA or MX record,
//!   `no` when it has none, `literal` for an address literal, `temperror`
//!   when the DNS failed;
//! - `helo.ours`: `yes` when the name is our `hostname` or an address
//!   literal of one of our listening addresses, else `no`.

use super::{Check, CheckFuture, SharedResolver};
use crate::dns::DnsError;
use crate::facts::{Value, TEMPERROR};
use crate::filter::{Context, Stage};
use std::net::IpAddr;
use std::sync::Arc;

/// The HELO check over the gateway's resolver.
pub struct Helo {
    /// The shared resolver.
    resolver: Arc<SharedResolver>,
    /// Our own name, lower case.
    hostname: String,
    /// Our listening addresses that are not wildcards.
    own_ips: Vec<IpAddr>,
    /// `helo.fqdn`, `helo.literal`, `helo.resolves`, `helo.ours`.
    facts: Vec<String>,
}

impl Helo {
    /// The check, knowing our `hostname` and listening addresses.
    pub fn new(resolver: Arc<SharedResolver>, hostname: &str, own_ips: Vec<IpAddr>) -> Helo {
        Helo {
            resolver,
            hostname: hostname.trim_end_matches('.').to_ascii_lowercase(),
            own_ips: own_ips
                .into_iter()
                .filter(|ip| !ip.is_unspecified())
                .collect(),
            facts: ["helo.fqdn", "helo.literal", "helo.resolves", "helo.ours"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// The address of an address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`,
/// RFC 5321 §4.1.3); `None` for anything else.
pub fn literal(helo: &str) -> Option<IpAddr> {
    let inner = helo.trim().strip_prefix('[')?.strip_suffix(']')?;
    let inner = match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("ipv6:") => &inner[5..],
        _ => inner,
    };
    inner.parse().ok()
}

/// True for a fully qualified domain name: labels of letters, digits and
/// hyphens, at least two, the last not all digits.
pub fn is_fqdn(name: &str) -> bool {
    let n = name.trim().trim_end_matches('.');
    let labels: Vec<&str> = n.split('.').collect();
    n.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && !labels
            .last()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

impl Check for Helo {
    fn name(&self) -> &'static str {
        "helo"
    }

    fn facts(&self) -> &[String] {
        &self.facts
    }

    fn earliest(&self) -> Stage {
        Stage::Helo
    }

    fn run<'a>(&'a self, ctx: &'a Context, _message: Option<&'a [u8]>) -> CheckFuture<'a> {
        Box::pin(async move {
            let helo = ctx.helo.as_deref().unwrap_or("").trim();
            let facts = |fqdn: &str, lit: &str, resolves: &str, ours: bool| {
                vec![
                    ("helo.fqdn".to_string(), Value::text(fqdn)),
                    ("helo.literal".to_string(), Value::text(lit)),
                    ("helo.resolves".to_string(), Value::text(resolves)),
                    (
                        "helo.ours".to_string(),
                        Value::text(if ours { "yes" } else { "no" }),
                    ),
                ]
            };
            if let Some(ip) = literal(helo) {
                let client = ctx.client.ip().to_canonical();
                let lit = if ip.to_canonical() == client {
                    "match"
                } else {
                    "mismatch"
                };
                let ours = self.own_ips.contains(&ip.to_canonical());
                return Ok(facts("literal", lit, "literal", ours));
            }
            let name = helo.trim_end_matches('.').to_ascii_lowercase();
            let ours = !name.is_empty() && name == self.hostname;
            if !is_fqdn(&name) {
                return Ok(facts("no", "none", "no", ours));
            }
            let resolver = self.resolver.get()?;
            let (ips, mx) = futures::future::join(resolver.ips(&name), resolver.mx(&name)).await;
            let resolves = match (ips, mx) {
                (Ok(_), _) | (_, Ok(_)) => "yes",
                (Err(DnsError::NotFound), Err(DnsError::NotFound)) => "no",
                _ => TEMPERROR,
            };
            Ok(facts("yes", "none", resolves, ours))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_names() {
        assert_eq!(literal("[192.0.2.1]"), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(
            literal("[IPv6:2001:db8::1]"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(literal("192.0.2.1"), None);
        assert!(is_fqdn("mail.example.test"));
        assert!(is_fqdn("mail.example.test."));
        assert!(!is_fqdn("localhost"));
        assert!(!is_fqdn("192.0.2.1"));
        assert!(!is_fqdn("bad_name.test"));
        assert!(!is_fqdn(""));
    }
}
