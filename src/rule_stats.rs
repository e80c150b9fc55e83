//! `smtpgate rules stats`: which rules fire, read from a running gateway's
//! `/metrics` (its live counters, not a file): per loaded rule, how often
//! it was evaluated, how often it hit, and when it last did.
//!
//! Only rules in `smtpgate_rule_evaluations_total` are listed: those are
//! the loaded ones (the scoring thresholds and scanner verdicts also leave
//! hits, but are not rules of the rules directory).

use crate::checks::http;
use crate::config::{split_http_url, Config};
use crate::metrics::exposition::{self, Sample};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What the counters say about one loaded rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleStat {
    /// The rule's name.
    pub rule: String,
    /// Times its condition was evaluated.
    pub evaluations: u64,
    /// Times it matched (every action; failures to evaluate not counted).
    pub hits: u64,
    /// Times it could not be evaluated (a check it reads failed, a list
    /// could not be read): a rule that never hits but errs is broken, not
    /// merely rare.
    pub errors: u64,
    /// Unix time of the last hit; `None` when it never hit since loaded.
    pub last_hit: Option<i64>,
}

/// Where `smtpgate rules stats` reads from: `(host:port, path)`, from
/// `--metrics URL` when given, else the configuration's metrics listener
/// (an unspecified listen address is read on loopback).
pub fn target(config: &Config, url: Option<&str>) -> Result<(String, String), String> {
    if let Some(url) = url {
        let (authority, path) = split_http_url(url).map_err(|e| format!("--metrics: {e}"))?;
        let path = if path.is_empty() || path == "/" {
            "/metrics".to_string()
        } else {
            path
        };
        return Ok((authority, path));
    }
    let addr =
        config.metrics.as_ref().map(|m| m.addr).ok_or(
            "the configuration has no metrics listener (metrics.addr); give --metrics URL",
        )?;
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok((
        SocketAddr::new(ip, addr.port()).to_string(),
        "/metrics".into(),
    ))
}

/// Scrapes `path` on `authority` and reads the rule counters from it.
pub fn fetch(authority: &str, path: &str) -> Result<Vec<RuleStat>, String> {
    let response = async_std::task::block_on(http::get(authority, path))?;
    if response.status != 200 {
        return Err(format!(
            "http://{authority}{path} answered {}, not 200",
            response.status
        ));
    }
    let text = String::from_utf8(response.body)
        .map_err(|_| format!("http://{authority}{path}: the answer is not UTF-8"))?;
    let samples = exposition::parse(&text).map_err(|e| format!("http://{authority}{path}: {e}"))?;
    from_samples(&samples).map_err(|e| format!("http://{authority}{path}: {e}"))
}

/// The stats of every loaded rule in a scrape, by name; an error when
/// the scrape is not a smtpgate one.
pub fn from_samples(samples: &[Sample]) -> Result<Vec<RuleStat>, String> {
    if !samples.iter().any(|s| s.name == "smtpgate_build_info") {
        return Err("not a smtpgate /metrics (no smtpgate_build_info)".into());
    }
    let mut rules: BTreeMap<&str, RuleStat> = BTreeMap::new();
    let count = |v: f64| {
        if v.is_finite() && v > 0.0 {
            v as u64
        } else {
            0
        }
    };
    for s in samples {
        if s.name == "smtpgate_rule_evaluations_total" {
            if let Some(rule) = s.label("rule") {
                rules.insert(
                    rule,
                    RuleStat {
                        rule: rule.to_string(),
                        evaluations: count(s.value),
                        hits: 0,
                        errors: 0,
                        last_hit: None,
                    },
                );
            }
        }
    }
    for s in samples {
        let Some(stat) = s.label("rule").and_then(|r| rules.get_mut(r)) else {
            continue;
        };
        match s.name.as_str() {
            "smtpgate_rule_hits_total" => match s.label("action") {
                Some("error") => stat.errors += count(s.value),
                Some("not_evaluated") => {}
                _ => stat.hits += count(s.value),
            },
            "smtpgate_rule_last_hit_timestamp_seconds" if s.value > 0.0 => {
                stat.last_hit = Some(s.value as i64);
            }
            _ => {}
        }
    }
    Ok(rules.into_values().collect())
}

/// The rules with no hit since `since` (a Unix time; `None`: since they
/// were loaded), for `--never [--since AGE]`.
pub fn not_hit_since(stats: Vec<RuleStat>, since: Option<i64>) -> Vec<RuleStat> {
    stats
        .into_iter()
        .filter(|s| match (s.last_hit, since) {
            (None, _) => true,
            (Some(_), None) => s.hits == 0,
            (Some(t), Some(since)) => t < since,
        })
        .collect()
}

/// How long ago `then` was, from `now` (Unix times): `42s`, `5m`, `3h`, `2d`.
pub fn age(then: i64, now: i64) -> String {
    let s = (now - then).max(0);
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        7200..=172_799 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// The table `smtpgate rules stats` prints: rule, evaluations, hits,
/// errors, last hit (its age at `now`, or `never`).
pub fn table(stats: &[RuleStat], now: i64) -> String {
    let width = stats
        .iter()
        .map(|s| s.rule.chars().count())
        .chain([4])
        .max()
        .unwrap_or(4);
    let mut out = format!(
        "{:<width$}  {:>11}  {:>8}  {:>6}  LAST HIT\n",
        "RULE", "EVALUATIONS", "HITS", "ERRORS"
    );
    for s in stats {
        let last = s
            .last_hit
            .map(|t| age(t, now))
            .unwrap_or_else(|| "never".into());
        out.push_str(&format!(
            "{:<width$}  {:>11}  {:>8}  {:>6}  {last}\n",
            s.rule, s.evaluations, s.hits, s.errors
        ));
    }
    out
}

/// The same as JSON: an array of objects with `rule`, `evaluations`,
/// `hits`, `errors`, `last_hit` (Unix time or null) and
/// `last_hit_age_seconds`.
pub fn json(stats: &[RuleStat], now: i64) -> String {
    let list: Vec<serde_json::Value> = stats
        .iter()
        .map(|s| {
            serde_json::json!({
                "rule": s.rule,
                "evaluations": s.evaluations,
                "hits": s.hits,
                "errors": s.errors,
                "last_hit": s.last_hit,
                "last_hit_age_seconds": s.last_hit.map(|t| (now - t).max(0)),
            })
        })
        .collect();
    serde_json::to_string_pretty(&list).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_from_a_scrape_list_loaded_rules_only() {
        let text = "smtpgate_build_info{version=\"0\"} 1\n\
            smtpgate_rule_evaluations_total{rule=\"b\"} 7\n\
            smtpgate_rule_evaluations_total{rule=\"a\"} 0\n\
            smtpgate_rule_hits_total{action=\"score\",rule=\"b\"} 3\n\
            smtpgate_rule_hits_total{action=\"not_evaluated\",rule=\"b\"} 9\n\
            smtpgate_rule_hits_total{action=\"error\",rule=\"a\"} 4\n\
            smtpgate_rule_hits_total{action=\"reject\",rule=\"scoring:reject_at\"} 2\n\
            smtpgate_rule_last_hit_timestamp_seconds{rule=\"b\"} 1000\n\
            smtpgate_rule_last_hit_timestamp_seconds{rule=\"a\"} 0\n";
        let stats = from_samples(&exposition::parse(text).unwrap()).unwrap();
        assert_eq!(stats.len(), 2);
        assert_eq!(
            stats[1],
            RuleStat {
                rule: "b".into(),
                evaluations: 7,
                hits: 3,
                errors: 0,
                last_hit: Some(1000)
            }
        );
        assert_eq!(stats[0].last_hit, None);
        assert_eq!(stats[0].errors, 4);
        let t = table(&stats, 1090);
        assert!(t.lines().nth(1).unwrap().ends_with("never"), "{t}");
        assert!(t.lines().nth(2).unwrap().ends_with("90s ago"), "{t}");
        assert!(from_samples(&exposition::parse("x 1\n").unwrap()).is_err());
    }

    #[test]
    fn never_hit_since_a_time_keeps_rules_whose_last_hit_is_older() {
        let stat = |rule: &str, hits, last_hit| RuleStat {
            rule: rule.into(),
            evaluations: 10,
            hits,
            errors: 0,
            last_hit,
        };
        let all = vec![
            stat("never", 0, None),
            stat("old", 2, Some(100)),
            stat("recent", 5, Some(900)),
        ];
        let names = |v: Vec<RuleStat>| v.into_iter().map(|s| s.rule).collect::<Vec<_>>();
        assert_eq!(names(not_hit_since(all.clone(), None)), ["never"]);
        assert_eq!(
            names(not_hit_since(all.clone(), Some(500))),
            ["never", "old"]
        );
        assert_eq!(
            names(not_hit_since(all, Some(1000))),
            ["never", "old", "recent"]
        );
    }

    #[test]
    fn ages() {
        assert_eq!(age(0, 5), "5s ago");
        assert_eq!(age(0, 600), "10m ago");
        assert_eq!(age(0, 3 * 3600), "3h ago");
        assert_eq!(age(0, 3 * 86_400), "3d ago");
    }
}
