//! `reputation:`: DNS lists of client IPs (DNSBL/DNSWL) and of domains
//! (RHSBL, URIBL), with postscreen's weights and threshold, and the
//! networks exempt from them. The checks are the `dnsbl` and `rhsbl`
//! modules of the checks; each zone gives one fact that rules read.

use super::returns::ReturnFilter;
use super::{Network, ValidationError};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The reply text of a zone when it names none: postscreen's.
pub const DEFAULT_REPLY: &str = "Service unavailable; client [{client}] blocked using {zone}";

/// `reputation: { exempt_networks, dnsbl: {...}, rhsbl: {...} }`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReputationOptions {
    /// Clients never looked up in a DNS list: they are allowlisted
    /// (`dnsbl.allowlisted` is `yes`, every zone's fact says `exempt`).
    /// Default: none.
    pub exempt_networks: Vec<Network>,
    /// The lists of client IPs.
    pub dnsbl: DnsblOptions,
    /// The lists of domains.
    pub rhsbl: RhsblOptions,
}

/// `reputation.dnsbl`: zones looked up with the client's IP, the
/// threshold on their summed weights, and what an allowlisted client
/// skips.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsblOptions {
    /// The zones, all looked up at once when the client connects.
    pub zones: Vec<Zone>,
    /// The summed weight of the listing zones at which `action` applies
    /// (postscreen's `postscreen_dnsbl_threshold`). Default 1.
    pub threshold: i32,
    /// What reaching the threshold does without any rule: `none` (the
    /// default: rules read `dnsbl.score`), `reject` (550 5.7.1 to every
    /// RCPT TO, naming the zone, like postscreen's `enforce`), `tempfail`
    /// (451 4.7.1 the same way), `drop` (554 5.7.1 at the greeting) or
    /// `score` (the summed weight is added to the session's score).
    pub action: ThresholdAction,
    /// A client whose summed weight is at most this is allowlisted
    /// (postscreen's `postscreen_dnsbl_allowlist_threshold`), like one in
    /// `exempt_networks`. Default: none (only `exempt_networks`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowlist_threshold: Option<i32>,
    /// What an allowlisted client skips: `nothing` (the default) or
    /// `checks` (no later check and no rule runs for its session: it is
    /// accepted as a rule's `accept_transaction` at connect does).
    pub allowlisted_skip: AllowlistedSkip,
}

impl Default for DnsblOptions {
    fn default() -> Self {
        DnsblOptions {
            zones: Vec::new(),
            threshold: 1,
            action: ThresholdAction::None,
            allowlist_threshold: None,
            allowlisted_skip: AllowlistedSkip::Nothing,
        }
    }
}

/// `reputation.rhsbl`: zones looked up with domains of the session and
/// the message.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RhsblOptions {
    /// The zones; each is asked about the domains its `domains` names.
    pub zones: Vec<RhsblZone>,
}

/// What a reached DNSBL threshold does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdAction {
    /// Nothing by itself: rules read the facts.
    #[default]
    None,
    /// 550 5.7.1 to every RCPT TO.
    Reject,
    /// 451 4.7.1 to every RCPT TO.
    Tempfail,
    /// 554 5.7.1 at the greeting, then the connection closes.
    Drop,
    /// The summed weight is added to the session's score.
    Score,
}

/// What an allowlisted client skips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllowlistedSkip {
    /// Nothing: later checks and rules run as for anyone.
    #[default]
    Nothing,
    /// Every later check and rule of the session.
    Checks,
}

/// Which domains an RHSBL zone is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainSource {
    /// The HELO/EHLO name (facts `rhsbl.helo.NAME`).
    Helo,
    /// The MAIL FROM domain (facts `rhsbl.sender.NAME`).
    Sender,
    /// The domain of the From header (facts `rhsbl.from.NAME`).
    From,
    /// The domains of the URLs in the message's text, decoded from
    /// base64 or quoted-printable (facts `uribl.NAME`).
    Urls,
}

/// Every source, the default of [`RhsblZone::domains`].
fn all_sources() -> Vec<DomainSource> {
    vec![
        DomainSource::Helo,
        DomainSource::Sender,
        DomainSource::From,
        DomainSource::Urls,
    ]
}

/// One DNS list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    /// The list's name in facts: `zen` gives the fact `dnsbl.zen`.
    /// Letters, digits, `_` and `-`. Required.
    pub name: String,
    /// The DNS zone asked: `zen.spamhaus.org`. Required.
    pub zone: String,
    /// What a listing adds to the summed score; negative for an
    /// allowlist (DNSWL). Default 1.
    #[serde(default = "one")]
    pub weight: i32,
    /// The answers that count as a listing, any of them (see
    /// `docs/reputation.md`: `127.0.0.[2..11]`, `127.0.0.2&0.0.0.4`).
    /// Default: any answer in 127.0.0.0/8 but 127.255.255.0/24.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub returns: Vec<String>,
    /// How long the lookup may take, in milliseconds; past it the fact
    /// says `temperror`. Default 2000; between 1 and 60000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The reply text when this zone makes the threshold reject:
    /// `{client}` is the client's IP, `{zone}` the zone, `{name}` the
    /// list's name. Default: postscreen's
    /// `Service unavailable; client [{client}] blocked using {zone}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
}

/// One DNS list of domains: a [`Zone`] and the domains it is asked about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RhsblZone {
    /// The list's name in facts: `dbl` gives `rhsbl.helo.dbl`,
    /// `uribl.dbl`, ... Required.
    pub name: String,
    /// The DNS zone asked: `dbl.spamhaus.org`. Required.
    pub zone: String,
    /// What a listing adds to the check's summed score. Default 1.
    #[serde(default = "one")]
    pub weight: i32,
    /// The answers that count as a listing, as for DNSBL zones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub returns: Vec<String>,
    /// How long one lookup may take, in milliseconds. Default 2000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Which domains it is asked about: `helo`, `sender`, `from`,
    /// `urls`. Default: all four.
    #[serde(default = "all_sources")]
    pub domains: Vec<DomainSource>,
}

impl RhsblZone {
    /// The zone as a DNS list.
    pub fn list(&self) -> Zone {
        Zone {
            name: self.name.clone(),
            zone: self.zone.clone(),
            weight: self.weight,
            returns: self.returns.clone(),
            timeout_ms: self.timeout_ms,
            reply: None,
        }
    }
}

/// Serde default: 1.
fn one() -> i32 {
    1
}

/// Serde default of [`Zone::timeout_ms`].
fn default_timeout_ms() -> u64 {
    2000
}

impl Zone {
    /// [`timeout_ms`](Self::timeout_ms) as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The parsed [`returns`](Self::returns) (validation refused bad ones).
    pub fn filters(&self) -> Vec<ReturnFilter> {
        self.returns.iter().filter_map(|r| r.parse().ok()).collect()
    }

    /// The reply text for `client`.
    pub fn reply_text(&self, client: &str) -> String {
        self.reply
            .as_deref()
            .unwrap_or(DEFAULT_REPLY)
            .replace("{client}", client)
            .replace("{zone}", &self.zone)
            .replace("{name}", &self.name)
    }
}

/// Range and syntax checks of `reputation:`.
pub(super) fn check(r: &ReputationOptions) -> Result<(), ValidationError> {
    check_zones("reputation.dnsbl.zones", &r.dnsbl.zones)?;
    let rhsbl: Vec<Zone> = r.rhsbl.zones.iter().map(RhsblZone::list).collect();
    check_zones("reputation.rhsbl.zones", &rhsbl)?;
    for (i, z) in r.rhsbl.zones.iter().enumerate() {
        if z.domains.is_empty() {
            return Err(ValidationError::new(
                format!("reputation.rhsbl.zones[{i}].domains"),
                "must name at least one of helo, sender, from, urls",
            ));
        }
    }
    if let Some(allow) = r.dnsbl.allowlist_threshold {
        if allow >= r.dnsbl.threshold {
            return Err(ValidationError::new(
                "reputation.dnsbl.allowlist_threshold",
                format!(
                    "must be below the threshold ({}), not {allow}",
                    r.dnsbl.threshold
                ),
            ));
        }
    }
    Ok(())
}

/// One list of zones: names unique and usable in facts, zones valid DNS
/// names, filters that parse, timeouts in range.
fn check_zones(path: &str, zones: &[Zone]) -> Result<(), ValidationError> {
    for (i, z) in zones.iter().enumerate() {
        let at = |key: &str| format!("{path}[{i}].{key}");
        if z.name.is_empty()
            || !z
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            || z.name == "score"
            || z.name == "listed"
            || z.name == "allowlisted"
        {
            return Err(ValidationError::new(
                at("name"),
                format!(
                    "{:?} is not a list name: letters, digits, `_` and `-` \
                     (and not `score`, `listed` or `allowlisted`)",
                    z.name
                ),
            ));
        }
        if zones[..i].iter().any(|o| o.name == z.name) {
            return Err(ValidationError::new(
                at("name"),
                format!("{:?} names two zones", z.name),
            ));
        }
        let zone = z.zone.trim_end_matches('.');
        if !super::validate::is_domain(zone) {
            return Err(ValidationError::new(
                at("zone"),
                format!("{:?} is not a DNS zone name", z.zone),
            ));
        }
        for (j, r) in z.returns.iter().enumerate() {
            if let Err(e) = r.parse::<ReturnFilter>() {
                return Err(ValidationError::new(format!("{}[{j}]", at("returns")), e));
            }
        }
        if !(1..=60_000).contains(&z.timeout_ms) {
            return Err(ValidationError::new(
                at("timeout_ms"),
                format!("must be between 1 and 60000, not {}", z.timeout_ms),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn error(yaml: &str) -> String {
        Config::from_yaml(yaml, "g.yaml").unwrap_err().to_string()
    }

    #[test]
    fn bad_zones_are_named_with_their_line() {
        let e = error(
            "reputation:\n  dnsbl:\n    zones:\n      - name: zen\n        zone: zen.example\n        returns: [\"127.0.0.[9..2]\"]\n",
        );
        assert!(
            e.starts_with("g.yaml:6: reputation.dnsbl.zones[0].returns[0]: "),
            "{e}"
        );
        assert!(e.contains("the range 9..2 is empty"), "{e}");
        let e = error(
            "reputation:\n  dnsbl:\n    zones:\n      - { name: a, zone: a.example }\n      - { name: a, zone: b.example }\n",
        );
        assert!(e.contains("reputation.dnsbl.zones[1].name"), "{e}");
        let e =
            error("reputation:\n  rhsbl:\n    zones:\n      - { name: score, zone: a.example }\n");
        assert!(e.contains("is not a list name"), "{e}");
        let e = error("reputation:\n  dnsbl:\n    threshold: 2\n    allowlist_threshold: 2\n");
        assert!(e.contains("reputation.dnsbl.allowlist_threshold"), "{e}");
        let e =
            error("reputation:\n  dnsbl:\n    zones:\n      - { name: z, zone: \"not a zone\" }\n");
        assert!(e.contains("is not a DNS zone name"), "{e}");
        let e = error("reputation:\n  dnsbl:\n    zones:\n      - { name: z, zone: z.example, timeout_ms: 0 }\n");
        assert!(e.contains("timeout_ms: must be between 1 and 60000"), "{e}");
    }

    #[test]
    fn a_full_section_loads() {
        let c = Config::from_yaml(
            "reputation:\n  exempt_networks: [10.0.0.0/8]\n  dnsbl:\n    action: reject\n    threshold: 3\n    allowlist_threshold: 0\n    allowlisted_skip: checks\n    zones:\n      - { name: zen, zone: zen.example, weight: 3, returns: [\"127.0.0.2&0.0.0.4\"] }\n  rhsbl:\n    zones:\n      - { name: dbl, zone: dbl.example, domains: [urls] }\n",
            "g.yaml",
        )
        .unwrap();
        assert_eq!(c.reputation.dnsbl.zones[0].weight, 3);
        assert_eq!(c.reputation.rhsbl.zones[0].timeout_ms, 2000);
    }
}
