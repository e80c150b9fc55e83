//! The sender-domain check: Postfix's `reject_unknown_sender_domain`, and
//! the null MX of RFC 7505, as a fact.
//!
//! Fact `sender.domain`: `mx` (the domain has MX records), `address` (no
//! MX, but an A or AAAA record: its implicit MX, RFC 5321 §5.1),
//! `null_mx` (its MX is `0 .`: it accepts no mail, so it sends none either
//! that could bounce), `unknown` (neither MX nor A/AAAA), `none` (the null
//! sender `<>`, or an address literal), or `temperror` when the DNS
//! failed.

use super::{Check, CheckFuture, SharedResolver};
use crate::dns::DnsError;
use crate::facts::{Value, TEMPERROR};
use crate::filter::{Context, Stage};
use std::sync::Arc;

/// The fact it gives.
pub const FACT: &str = "sender.domain";

/// The sender-domain check over the gateway's resolver.
pub struct SenderDomain {
    /// The shared resolver.
    resolver: Arc<SharedResolver>,
    /// `sender.domain`.
    facts: Vec<String>,
}

impl SenderDomain {
    /// The check, looking up through `resolver`.
    pub fn new(resolver: Arc<SharedResolver>) -> SenderDomain {
        SenderDomain {
            resolver,
            facts: vec![FACT.to_string()],
        }
    }
}

/// What the MX and address answers of a domain say about it.
pub fn status(
    mx: Result<Vec<(u16, String)>, DnsError>,
    ips: impl FnOnce() -> Option<Result<(), DnsError>>,
) -> &'static str {
    match mx {
        Ok(records) if records.iter().any(|(_, exchange)| exchange.is_empty()) => "null_mx",
        Ok(records) if !records.is_empty() => "mx",
        Err(DnsError::Temporary(_)) => TEMPERROR,
        _ => match ips() {
            Some(Ok(())) => "address",
            Some(Err(DnsError::NotFound)) | None => "unknown",
            Some(Err(DnsError::Temporary(_))) => TEMPERROR,
        },
    }
}

impl Check for SenderDomain {
    fn name(&self) -> &'static str {
        "sender_domain"
    }

    fn facts(&self) -> &[String] {
        &self.facts
    }

    fn earliest(&self) -> Stage {
        Stage::Mail
    }

    fn run<'a>(&'a self, ctx: &'a Context, _message: Option<&'a [u8]>) -> CheckFuture<'a> {
        Box::pin(async move {
            let fact = |v: &str| Ok(vec![(FACT.to_string(), Value::text(v))]);
            let Some(written) = ctx.mail_from.as_ref().and_then(|m| m.as_ref()) else {
                return fact("none");
            };
            if written.domain.starts_with('[') {
                return fact("none");
            }
            let Some(domain) = super::rhsbl::domain_of(&written.domain) else {
                // Not a name the DNS can have (one label, bad bytes).
                return fact("unknown");
            };
            let resolver = self.resolver.get()?;
            let (mx, ips) =
                futures::future::join(resolver.mx(&domain), resolver.ips(&domain)).await;
            fact(status(mx, || Some(ips.map(|_| ()))))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let tmp = || DnsError::Temporary("t".into());
        let none = || Some(Err(DnsError::NotFound));
        assert_eq!(status(Ok(vec![(0, String::new())]), none), "null_mx");
        assert_eq!(status(Ok(vec![(10, "mx.test".into())]), none), "mx");
        assert_eq!(status(Err(DnsError::NotFound), || Some(Ok(()))), "address");
        assert_eq!(status(Err(DnsError::NotFound), none), "unknown");
        assert_eq!(status(Err(tmp()), none), "temperror");
        assert_eq!(
            status(Err(DnsError::NotFound), || Some(Err(tmp()))),
            "temperror"
        );
    }
}
