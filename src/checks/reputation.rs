//! The reputation checks the configuration asks for (`reputation:`), and
//! the DNSBL threshold filter: what [`Registry::new`](super::Registry::new)
//! adds to the built-in checks.

use super::dnsbl::Dnsbl;
use super::helo::Helo;
use super::policy::Threshold;
use super::rhsbl::Rhsbl;
use super::sender_domain::SenderDomain;
use super::{Check, SharedResolver};
use crate::config::{CheckSettings, Config, DomainSource, OnError, Zone};
use crate::filter::Filter;
use crate::metrics::Metrics;
use std::sync::Arc;

/// Margin over the slowest zone's timeout for a DNS list check as a
/// whole: each zone stops itself at its own timeout first.
const MARGIN_MS: u64 = 1000;

/// Checks with their settings, as a registry takes them.
pub type Checks = Vec<(Arc<dyn Check>, CheckSettings)>;

/// The reputation checks of `config`, with their settings, and the
/// threshold filter when the configuration makes it act.
pub fn checks(
    config: &Config,
    resolver: &Arc<SharedResolver>,
    metrics: &Metrics,
) -> (Checks, Option<Arc<dyn Filter>>) {
    let r = &config.reputation;
    let errors = metrics.dns_list_errors();
    let mut out: Checks = Vec::new();
    if !r.dnsbl.zones.is_empty() || !r.exempt_networks.is_empty() {
        let check = Dnsbl::new(resolver.clone(), &r.dnsbl, &r.exempt_networks, &errors);
        out.push((Arc::new(check), settings(&r.dnsbl.zones)));
    }
    for source in [
        DomainSource::Helo,
        DomainSource::Sender,
        DomainSource::From,
        DomainSource::Urls,
    ] {
        if let Some(check) = Rhsbl::new(resolver.clone(), &r.rhsbl, source, &errors) {
            let zones: Vec<Zone> = r.rhsbl.zones.iter().map(|z| z.list()).collect();
            out.push((Arc::new(check), settings(&zones)));
        }
    }
    let own: Vec<std::net::IpAddr> = config.listen.iter().map(|l| l.addr.ip()).collect();
    out.push((
        Arc::new(Helo::new(resolver.clone(), &config.hostname, own)),
        CheckSettings::default(),
    ));
    out.push((
        Arc::new(SenderDomain::new(resolver.clone())),
        CheckSettings::default(),
    ));
    let origin = if config.source.origin.is_empty() {
        "<built-in configuration>"
    } else {
        config.source.origin.as_str()
    };
    let policy = Threshold::new(&r.dnsbl, !r.exempt_networks.is_empty(), origin)
        .map(|t| Arc::new(t) as Arc<dyn Filter>);
    (out, policy)
}

/// A DNS list check's settings: past the slowest zone's timeout, and a
/// failure of the check itself (no resolver) leaves it to the rules.
fn settings(zones: &[Zone]) -> CheckSettings {
    let slowest = zones.iter().map(|z| z.timeout_ms).max().unwrap_or(0);
    CheckSettings {
        timeout_ms: slowest + MARGIN_MS,
        on_error: OnError::FailOpen,
    }
}
