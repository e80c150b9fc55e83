//! The RHSBL and URIBL checks: domains looked up in DNS lists of domains
//! (`domain.zone`), one check per kind of domain, each run at the stage
//! that knows its domain:
//!
//! - `rhsbl_helo` (helo): the HELO name, facts `rhsbl.helo.NAME`;
//! - `rhsbl_sender` (mail): the MAIL FROM domain, `rhsbl.sender.NAME`;
//! - `rhsbl_from` (data): the From header's domain, `rhsbl.from.NAME`;
//! - `uribl` (data): the domains of the URLs in the message's text
//!   parts, decoded, `uribl.NAME`.
//!
//! A zone's fact is, for the first three, the matching answers, `none`
//! (not listed, or no domain to ask about: a null sender, an address
//! literal), `error` or `temperror` as for the DNSBL check; for `uribl`
//! the listed domains (or `none`, `error`, `temperror` when none is
//! listed and some lookup failed). Each check also gives `PREFIX.score`
//! (the summed weight of its listing zones) and `PREFIX.listed`.

use super::dnsbl::sum_up;
use super::dnslist::{ask_all, Answer, DnsList};
use super::urls::{message_domains, MAX_DOMAINS};
use super::{Check, CheckFuture, SharedResolver};
use crate::config::{DomainSource, RhsblOptions};
use crate::facts::Value;
use crate::filter::{Context, Stage};
use prometheus::IntCounterVec;
use std::sync::Arc;

/// One RHSBL check: the zones asked about one kind of domain.
pub struct Rhsbl {
    /// The shared resolver.
    resolver: Arc<SharedResolver>,
    /// Which domain it looks up.
    source: DomainSource,
    /// The zones that list this kind of domain.
    lists: Vec<DnsList>,
    /// Every fact it gives.
    facts: Vec<String>,
}

/// The fact prefix of a kind of domain.
fn prefix(source: DomainSource) -> &'static str {
    match source {
        DomainSource::Helo => "rhsbl.helo",
        DomainSource::Sender => "rhsbl.sender",
        DomainSource::From => "rhsbl.from",
        DomainSource::Urls => "uribl",
    }
}

impl Rhsbl {
    /// The check of `source`, over the zones of `options` that list it;
    /// `None` when none does.
    pub fn new(
        resolver: Arc<SharedResolver>,
        options: &RhsblOptions,
        source: DomainSource,
        errors: &IntCounterVec,
    ) -> Option<Rhsbl> {
        let p = prefix(source);
        let lists: Vec<DnsList> = options
            .zones
            .iter()
            .filter(|z| z.domains.contains(&source))
            .map(|z| DnsList::new(z.list(), format!("{p}.{}", z.name), errors.clone()))
            .collect();
        if lists.is_empty() {
            return None;
        }
        let mut facts: Vec<String> = lists.iter().map(|l| l.fact.clone()).collect();
        facts.push(format!("{p}.score"));
        facts.push(format!("{p}.listed"));
        Some(Rhsbl {
            resolver,
            source,
            lists,
            facts,
        })
    }

    /// The domains this check asks about in this session.
    fn domains(&self, ctx: &Context, message: Option<&[u8]>) -> Vec<String> {
        let one = |d: Option<&str>| d.and_then(domain_of).into_iter().collect();
        match self.source {
            DomainSource::Helo => one(ctx.helo.as_deref()),
            DomainSource::Sender => one(ctx
                .mail_from
                .as_ref()
                .and_then(|m| m.as_ref())
                .map(|m| m.domain.as_str())),
            DomainSource::From => one(message.and_then(super::urls::from_domain).as_deref()),
            DomainSource::Urls => message.map(message_domains).unwrap_or_default(),
        }
    }
}

/// A name fit to ask an RHSBL about: lower case, no trailing dot, a
/// domain with at least two labels; `None` for address literals and
/// anything else.
pub fn domain_of(name: &str) -> Option<String> {
    let d = name.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = d.len() <= 200
        && d.contains('.')
        && !d.starts_with('[')
        && d.parse::<std::net::IpAddr>().is_err()
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    ok.then_some(d)
}

/// A URIBL zone's answer over several domains: the listed ones, else an
/// error or failure if any, else not listed.
fn merge(domains: &[String], answers: &[Answer]) -> (Answer, Value) {
    let listed: Vec<String> = domains
        .iter()
        .zip(answers)
        .filter(|(_, a)| matches!(a, Answer::Listed(_)))
        .map(|(d, _)| d.clone())
        .collect();
    if !listed.is_empty() {
        return (Answer::Listed(Vec::new()), Value::List(listed));
    }
    let worst = answers
        .iter()
        .find(|a| matches!(a, Answer::Error(_)))
        .or_else(|| answers.iter().find(|a| matches!(a, Answer::Unknown(_))))
        .cloned()
        .unwrap_or(Answer::NotListed);
    let value = worst.value();
    (worst, value)
}

impl Check for Rhsbl {
    fn name(&self) -> &'static str {
        match self.source {
            DomainSource::Helo => "rhsbl_helo",
            DomainSource::Sender => "rhsbl_sender",
            DomainSource::From => "rhsbl_from",
            DomainSource::Urls => "uribl",
        }
    }

    fn facts(&self) -> &[String] {
        &self.facts
    }

    fn earliest(&self) -> Stage {
        match self.source {
            DomainSource::Helo => Stage::Helo,
            DomainSource::Sender => Stage::Mail,
            DomainSource::From | DomainSource::Urls => Stage::Data,
        }
    }

    fn run<'a>(&'a self, ctx: &'a Context, message: Option<&'a [u8]>) -> CheckFuture<'a> {
        Box::pin(async move {
            let reads_message = matches!(self.source, DomainSource::From | DomainSource::Urls);
            if reads_message && message.is_none() {
                // Never a pass for a message that could not be read back.
                return Err("the message could not be read for the check".to_string());
            }
            let domains = self.domains(ctx, message);
            let p = prefix(self.source);
            if domains.is_empty() {
                let answers = vec![Answer::NotListed; self.lists.len()];
                return Ok(sum_up(p, &self.lists, &answers, None).0);
            }
            let resolver = self.resolver.get()?;
            let asks: Vec<(&DnsList, &str)> = self
                .lists
                .iter()
                .flat_map(|l| domains.iter().map(move |d| (l, d.as_str())))
                .collect();
            let mut flat = ask_all(resolver, &asks).await.into_iter();
            let per_zone: Vec<Vec<Answer>> = self
                .lists
                .iter()
                .map(|_| flat.by_ref().take(domains.len()).collect())
                .collect();
            if self.source != DomainSource::Urls {
                let answers: Vec<Answer> = per_zone
                    .into_iter()
                    .map(|a| a.into_iter().next().unwrap_or(Answer::NotListed))
                    .collect();
                return Ok(sum_up(p, &self.lists, &answers, None).0);
            }
            let merged: Vec<(Answer, Value)> =
                per_zone.iter().map(|a| merge(&domains, a)).collect();
            let answers: Vec<Answer> = merged.iter().map(|(a, _)| a.clone()).collect();
            let (mut facts, _) = sum_up(p, &self.lists, &answers, None);
            // The URIBL facts name the listed domains, not the codes.
            for ((_, value), fact) in merged.into_iter().zip(facts.iter_mut()) {
                fact.1 = value;
            }
            debug_assert!(domains.len() <= MAX_DOMAINS);
            Ok(facts)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_fit_to_ask() {
        assert_eq!(
            domain_of("Mail.Example.TEST."),
            Some("mail.example.test".into())
        );
        assert_eq!(domain_of("[192.0.2.1]"), None);
        assert_eq!(domain_of("192.0.2.1"), None);
        assert_eq!(domain_of("localhost"), None);
        assert_eq!(domain_of("a..b"), None);
    }

    #[test]
    fn a_uribl_zone_names_its_listed_domains() {
        let d = vec!["a.test".to_string(), "b.test".to_string()];
        let (_, v) = merge(
            &d,
            &[
                Answer::NotListed,
                Answer::Listed(vec!["127.0.0.2".parse().unwrap()]),
            ],
        );
        assert_eq!(v, Value::List(vec!["b.test".into()]));
        let (_, v) = merge(&d, &[Answer::NotListed, Answer::Unknown("t".into())]);
        assert_eq!(v, Value::text("temperror"));
        let (_, v) = merge(&d, &[Answer::NotListed, Answer::NotListed]);
        assert_eq!(v, Value::text("none"));
    }
}
