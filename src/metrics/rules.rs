//! The per-rule series: how often each loaded rule was evaluated, and when
//! it last matched, next to `smtpgate_rule_hits_total`.
//!
//! Every rule of a newly loaded set gets its series created at 0 (so a
//! rule that never matched still shows), and the handles are resolved then,
//! once per rule: counting an evaluation on the hot path is one atomic add,
//! not a label lookup. A reload resolves the same label values again, so a
//! rule that keeps its name keeps its counts; the series of rules the
//! reload removed are dropped.

use super::counter_vec;
use prometheus::core::Collector;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// `smtpgate_rule_evaluations_total` and
/// `smtpgate_rule_last_hit_timestamp_seconds`, and the rules loaded now.
pub struct RuleMetrics {
    /// `smtpgate_rule_hits_total{rule,action}` (counted by the session).
    hits: IntCounterVec,
    /// `smtpgate_rule_evaluations_total{rule}`.
    evaluations: IntCounterVec,
    /// `smtpgate_rule_last_hit_timestamp_seconds{rule}`.
    last_hit: IntGaugeVec,
    /// The names of the rules in service, to drop the series of the ones
    /// a reload removes.
    loaded: Mutex<BTreeSet<String>>,
}

/// One loaded rule's series, resolved once when its set is loaded.
#[derive(Clone)]
pub struct RuleSeries {
    /// Times the rule's condition was evaluated.
    evaluations: IntCounter,
    /// Unix time of its last hit (0: never since it was loaded).
    last_hit: IntGauge,
}

impl RuleSeries {
    /// Counts one evaluation of the rule.
    pub fn evaluated(&self) {
        self.evaluations.inc();
    }

    /// Notes that the rule matched now.
    pub fn hit(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        self.last_hit.set(i64::try_from(now).unwrap_or(i64::MAX));
    }
}

impl RuleMetrics {
    /// Registers the families in `r`; `hits` is the hit counter already
    /// registered.
    pub(super) fn new(r: &Registry, hits: IntCounterVec) -> RuleMetrics {
        let evaluations = counter_vec(
            r,
            "smtpgate_rule_evaluations_total",
            "Times each loaded rule's condition was evaluated (0: its stage never ran \
             or an earlier verdict always ended it first).",
            &["rule"],
        );
        let last_hit = IntGaugeVec::new(
            Opts::new(
                "smtpgate_rule_last_hit_timestamp_seconds",
                "Unix time of each loaded rule's last hit (0: no hit since it was loaded).",
            ),
            &["rule"],
        )
        .expect("valid metric");
        r.register(Box::new(last_hit.clone()))
            .expect("unique metric");
        RuleMetrics {
            hits,
            evaluations,
            last_hit,
            loaded: Mutex::new(BTreeSet::new()),
        }
    }

    /// Puts a newly loaded rule set in service: every rule, given as
    /// (name, action), gets its series (at 0 when new, kept when a rule of
    /// that name was loaded before), and the series of the rules no longer
    /// loaded are dropped. Returns the rules' series, in the order given.
    pub fn loaded(&self, rules: &[(&str, &str)]) -> Vec<RuleSeries> {
        let mut loaded = match self.loaded.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let names: BTreeSet<String> = rules.iter().map(|(n, _)| n.to_string()).collect();
        for gone in loaded.difference(&names) {
            let _ = self.evaluations.remove_label_values(&[gone]);
            let _ = self.last_hit.remove_label_values(&[gone]);
            self.remove_hits(gone);
        }
        *loaded = names;
        rules
            .iter()
            .map(|(name, action)| {
                self.hits.with_label_values(&[name, action]);
                RuleSeries {
                    evaluations: self.evaluations.with_label_values(&[name]),
                    last_hit: self.last_hit.with_label_values(&[name]),
                }
            })
            .collect()
    }

    /// Drops every `smtpgate_rule_hits_total` series of `rule`, whatever
    /// its action label (`error` and `not_evaluated` too).
    fn remove_hits(&self, rule: &str) {
        for family in self.hits.collect() {
            for metric in family.get_metric() {
                let labels: HashMap<&str, &str> = metric
                    .get_label()
                    .iter()
                    .map(|l| (l.name(), l.value()))
                    .collect();
                if labels.get("rule") == Some(&rule) {
                    let _ = self.hits.remove(&labels);
                }
            }
        }
    }
}
