//! iprev (RFC 8601 §3, forward-confirmed reverse DNS): does the client's
//! IP address have a PTR name whose addresses include that IP again?
//!
//! Checked the way RFC 8601 §3 describes, with the bound it suggests: PTR
//! of the IP, then the forward lookup of each name, at most
//! [`MAX_NAMES`], until one resolves back. Only the IP's own family is
//! looked up forward (A for IPv4, AAAA for IPv6): an address of the other
//! family can never match.

use super::{answer, DnsError, JobFuture, Resolver, TokioResolver};
use hickory_resolver::proto::rr::Name;
use std::net::IpAddr;
use std::time::Instant;

/// PTR names checked at most; the rest are ignored (RFC 8601 §3 asks for
/// a bound so a client's own PTR set cannot make us query without end).
pub const MAX_NAMES: usize = 10;

/// The outcome of an iprev check, as written in Authentication-Results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IprevResult {
    /// A PTR name resolves back to the IP.
    Pass,
    /// The IP has no PTR, or none of its names resolves back to it.
    Fail,
    /// A lookup failed temporarily and no name passed; asking again later
    /// may pass.
    TempError,
    /// A permanent error other than a mismatch. Not produced by
    /// [`iprev`] (a missing PTR is `Fail`), kept so the type covers every
    /// result RFC 8601 defines.
    PermError,
}

impl IprevResult {
    /// The result's name in Authentication-Results (`iprev=pass`).
    pub fn name(self) -> &'static str {
        match self {
            IprevResult::Pass => "pass",
            IprevResult::Fail => "fail",
            IprevResult::TempError => "temperror",
            IprevResult::PermError => "permerror",
        }
    }
}

/// An iprev check's result and the name it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iprev {
    /// pass, fail or temperror.
    pub result: IprevResult,
    /// The PTR name that resolved back (pass), or the first PTR name when
    /// none did (fail, temperror); `None` when there was no PTR answer.
    /// For `policy.iprev=` and logs.
    pub ptr: Option<String>,
}

/// Checks `ip` (IPv4-mapped IPv6 addresses as the IPv4 address they
/// carry, which is what a dual-stack listener reports for IPv4 clients).
pub async fn iprev(resolver: &Resolver, ip: IpAddr) -> Iprev {
    iprev_until(resolver, ip).await.0
}

/// [`iprev`], and until when the answers it rests on are valid (the
/// smallest TTL among them), so a caller may keep the result that long;
/// `None` when it rests on a negative answer or a failure. The PTR and
/// forward lookups run as one job on the DNS thread: one hop there and
/// back, whatever the number of names.
pub async fn iprev_until(resolver: &Resolver, ip: IpAddr) -> (Iprev, Option<Instant>) {
    let ip = ip.to_canonical();
    let limit = resolver.deadline() * 2;
    let job = move |r: TokioResolver| -> JobFuture<(Iprev, Option<Instant>)> {
        Box::pin(async move { confirm(&r, ip).await })
    };
    match resolver.with_resolver_within(limit, job).await {
        Ok(found) => found,
        Err(DnsError::Temporary(why)) => {
            log::debug!("iprev {ip}: {why}");
            (outcome(IprevResult::TempError, None), None)
        }
        Err(DnsError::NotFound) => (outcome(IprevResult::Fail, None), None),
    }
}

/// The PTR lookup, then the forward lookup of each name until one
/// resolves back, on the DNS thread.
async fn confirm(r: &TokioResolver, ip: IpAddr) -> (Iprev, Option<Instant>) {
    let reverse = r.reverse_lookup(Name::from(ip)).await;
    let mut until = reverse.as_ref().ok().map(|l| l.valid_until());
    let names = match answer::ptr_names(reverse) {
        Ok(names) => names,
        Err(DnsError::NotFound) => return (outcome(IprevResult::Fail, None), None),
        Err(DnsError::Temporary(why)) => {
            log::debug!("iprev {ip}: PTR lookup failed: {why}");
            return (outcome(IprevResult::TempError, None), None);
        }
    };
    let first = names.first().cloned();
    let mut temporary = false;
    for name in names.iter().take(MAX_NAMES) {
        let Some(query) = answer::query_name(name) else {
            continue;
        };
        let found = match ip {
            IpAddr::V4(v4) => {
                let lookup = r.ipv4_lookup(query).await;
                let valid = lookup.as_ref().ok().map(|l| l.valid_until());
                (answer::ipv4s(lookup).map(|a| a.contains(&v4)), valid)
            }
            IpAddr::V6(v6) => {
                let lookup = r.ipv6_lookup(query).await;
                let valid = lookup.as_ref().ok().map(|l| l.valid_until());
                (answer::ipv6s(lookup).map(|a| a.contains(&v6)), valid)
            }
        };
        match found {
            (Ok(true), valid) => {
                let until = earliest(until, valid);
                return (outcome(IprevResult::Pass, Some(name.clone())), until);
            }
            (Ok(false), valid) => until = earliest(until, valid),
            // A name without addresses: its negative answer has no expiry
            // here, so the result is not kept.
            (Err(DnsError::NotFound), _) => until = None,
            (Err(DnsError::Temporary(why)), _) => {
                log::debug!("iprev {ip}: forward lookup of {name} failed: {why}");
                temporary = true;
            }
        }
    }
    if temporary {
        return (outcome(IprevResult::TempError, first), None);
    }
    (outcome(IprevResult::Fail, first), until)
}

/// The earlier of two expiries; unknown wins, so nothing is kept longer
/// than every answer it rests on.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        _ => None,
    }
}

fn outcome(result: IprevResult, ptr: Option<String>) -> Iprev {
    Iprev { result, ptr }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_names_are_rfc_8601_keywords() {
        assert_eq!(IprevResult::Pass.name(), "pass");
        assert_eq!(IprevResult::Fail.name(), "fail");
        assert_eq!(IprevResult::TempError.name(), "temperror");
        assert_eq!(IprevResult::PermError.name(), "permerror");
    }
}
