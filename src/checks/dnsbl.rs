//! The DNSBL/DNSWL check: the client's IP looked up in every configured
//! zone at once, and the zones' weights summed as postscreen does.
//!
//! Facts: `dnsbl.NAME` per zone (the matching answers as a list, `none`,
//! `error` for an answer that is no listing, `temperror` when the zone did
//! not answer within its timeout, `exempt` for a client of
//! `exempt_networks`); `dnsbl.score`, the summed weight of the listing
//! zones; `dnsbl.listed`, their names (or `none`); `dnsbl.allowlisted`,
//! `yes` or `no`.

use super::dnslist::{ask_all, reversed, Answer, DnsList};
use super::{Check, CheckFuture, SharedResolver};
use crate::config::{DnsblOptions, Network};
use crate::facts::Value;
use crate::filter::{Context, Stage};
use prometheus::IntCounterVec;
use std::sync::Arc;

/// The facts every DNSBL check gives besides its zones'.
pub const SCORE: &str = "dnsbl.score";
/// The names of the listing zones.
pub const LISTED: &str = "dnsbl.listed";
/// `yes` for an allowlisted client.
pub const ALLOWLISTED: &str = "dnsbl.allowlisted";

/// The DNSBL check over the gateway's resolver.
pub struct Dnsbl {
    /// The shared resolver.
    resolver: Arc<SharedResolver>,
    /// The zones, in configuration order.
    lists: Vec<DnsList>,
    /// Clients never looked up.
    exempt: Vec<Network>,
    /// The summed weight at or below which a client is allowlisted.
    allowlist_threshold: Option<i32>,
    /// Every fact it gives.
    facts: Vec<String>,
}

impl Dnsbl {
    /// The check of `options`' zones, exempting `exempt`.
    pub fn new(
        resolver: Arc<SharedResolver>,
        options: &DnsblOptions,
        exempt: &[Network],
        errors: &IntCounterVec,
    ) -> Dnsbl {
        let lists: Vec<DnsList> = options
            .zones
            .iter()
            .map(|z| DnsList::new(z.clone(), format!("dnsbl.{}", z.name), errors.clone()))
            .collect();
        let mut facts: Vec<String> = lists.iter().map(|l| l.fact.clone()).collect();
        facts.extend([SCORE, LISTED, ALLOWLISTED].map(String::from));
        Dnsbl {
            resolver,
            lists,
            exempt: exempt.to_vec(),
            allowlist_threshold: options.allowlist_threshold,
            facts,
        }
    }
}

/// The facts of the answers of `lists`: each zone's, the summed weight,
/// the listing names and whether that makes the client allowlisted.
pub fn sum_up(
    prefix: &str,
    lists: &[DnsList],
    answers: &[Answer],
    allowlist_threshold: Option<i32>,
) -> (Vec<(String, Value)>, i32) {
    let mut facts = Vec::new();
    let mut score = 0;
    let mut listed = Vec::new();
    for (l, a) in lists.iter().zip(answers) {
        if matches!(a, Answer::Listed(_)) {
            score += l.zone.weight;
            listed.push(l.zone.name.clone());
        }
        facts.push((l.fact.clone(), a.value()));
    }
    facts.push((format!("{prefix}.score"), Value::Number(f64::from(score))));
    facts.push((
        format!("{prefix}.listed"),
        if listed.is_empty() {
            Value::text("none")
        } else {
            Value::List(listed)
        },
    ));
    if prefix == "dnsbl" {
        let allow = allowlist_threshold.is_some_and(|t| score <= t);
        facts.push((ALLOWLISTED.to_string(), yes_no(allow)));
    }
    (facts, score)
}

/// `yes` or `no`.
pub fn yes_no(b: bool) -> Value {
    Value::text(if b { "yes" } else { "no" })
}

impl Check for Dnsbl {
    fn name(&self) -> &'static str {
        "dnsbl"
    }

    fn facts(&self) -> &[String] {
        &self.facts
    }

    fn earliest(&self) -> Stage {
        Stage::Connect
    }

    fn run<'a>(&'a self, ctx: &'a Context, _message: Option<&'a [u8]>) -> CheckFuture<'a> {
        Box::pin(async move {
            let ip = ctx.client.ip().to_canonical();
            if self.exempt.iter().any(|n| n.0.contains(&ip)) {
                let mut facts: Vec<(String, Value)> = self
                    .lists
                    .iter()
                    .map(|l| (l.fact.clone(), Value::text("exempt")))
                    .collect();
                facts.push((SCORE.to_string(), Value::Number(0.0)));
                facts.push((LISTED.to_string(), Value::text("none")));
                facts.push((ALLOWLISTED.to_string(), yes_no(true)));
                return Ok(facts);
            }
            let resolver = self.resolver.get()?;
            let key = reversed(ip);
            let asks: Vec<(&DnsList, &str)> =
                self.lists.iter().map(|l| (l, key.as_str())).collect();
            let answers = ask_all(resolver, &asks).await;
            Ok(sum_up("dnsbl", &self.lists, &answers, self.allowlist_threshold).0)
        })
    }
}
