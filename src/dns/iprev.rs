//! iprev (RFC 8601 §3, forward-confirmed reverse DNS): does the client's
//! IP address have a PTR name whose addresses include that IP again?
//!
//! Checked the way RFC 8601 §3 describes, with the bound it suggests: PTR
//! of the IP, then the forward lookup of each name, at most
//! [`MAX_NAMES`], until one resolves back. Only the IP's own family is
//! looked up forward (A for IPv4, AAAA for IPv6): an address of the other
//! family can never match.

use super::{DnsError, Resolver};
use std::net::IpAddr;

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
    let ip = ip.to_canonical();
    let names = match resolver.reverse(ip).await {
        Ok(names) => names,
        Err(DnsError::NotFound) => return outcome(IprevResult::Fail, None),
        Err(DnsError::Temporary(why)) => {
            log::debug!("iprev {ip}: PTR lookup failed: {why}");
            return outcome(IprevResult::TempError, None);
        }
    };
    let first = names.first().cloned();
    let mut temporary = false;
    for name in names.iter().take(MAX_NAMES) {
        match resolves_to(resolver, name, ip).await {
            Ok(true) => return outcome(IprevResult::Pass, Some(name.clone())),
            Ok(false) | Err(DnsError::NotFound) => {}
            Err(DnsError::Temporary(why)) => {
                log::debug!("iprev {ip}: forward lookup of {name} failed: {why}");
                temporary = true;
            }
        }
    }
    let result = if temporary {
        IprevResult::TempError
    } else {
        IprevResult::Fail
    };
    outcome(result, first)
}

/// Whether `name`'s addresses of `ip`'s family include `ip`.
async fn resolves_to(resolver: &Resolver, name: &str, ip: IpAddr) -> Result<bool, DnsError> {
    Ok(match ip {
        IpAddr::V4(v4) => resolver.ipv4(name).await?.contains(&v4),
        IpAddr::V6(v6) => resolver.ipv6(name).await?.contains(&v6),
    })
}

/// Shorthand for building the result.
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
