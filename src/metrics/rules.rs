//! The per-rule series: how often each loaded rule was evaluated, and when
//! it last matched, next to `smtpgate_rule_hits_total`.
//!
//! Every rule of a newly loaded set gets its series created at 0 (so a
//! rule that never matched still shows), and the handles are resolved then,
//! once per rule. Evaluations are counted once per run of a stage, not once
//! per rule ([`StageEvaluations`]), and turned into each rule's count when
//! `/metrics` is rendered. A reload resolves the same label values again,
//! so a rule that keeps its name keeps its counts; the series of rules the
//! reload removed are dropped.

use super::counter_vec;
use prometheus::core::Collector;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
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
    /// The stages of the rule sets in service (and of older ones still
    /// running sessions), flushed into the counters on render.
    stages: Mutex<Vec<Weak<StageEvaluations>>>,
}

/// How far each run of one stage's rules got, for the rules' evaluation
/// counters. A run adds one to a single slot (the number of rules it
/// evaluated) instead of one to each rule's counter: with thousands of
/// rules those adds, each on its own cache line, cost more than the rules'
/// own evaluation. [`RuleMetrics::flush`] and drop turn the slots into
/// counts: a rule was evaluated by every run that got past it.
pub struct StageEvaluations {
    /// `reached[k]`: runs since the last flush that evaluated exactly the
    /// stage's first `k` rules.
    reached: Vec<AtomicU64>,
    /// The stage's rules' evaluation counters, in stage order.
    counters: Vec<IntCounter>,
}

impl StageEvaluations {
    /// Counts one run of the stage that evaluated its first `evaluated`
    /// rules.
    pub fn ran(&self, evaluated: usize) {
        if let Some(slot) = self.reached.get(evaluated) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Adds the runs counted since the last flush to the rules' counters.
    /// A run counted while this runs lands in this flush or the next.
    fn flush(&self) {
        let mut past = 0;
        for (i, counter) in self.counters.iter().enumerate().rev() {
            past += self.reached[i + 1].swap(0, Ordering::Relaxed);
            if past > 0 {
                counter.inc_by(past);
            }
        }
        self.reached[0].store(0, Ordering::Relaxed);
    }
}

impl Drop for StageEvaluations {
    fn drop(&mut self) {
        self.flush();
    }
}

/// One loaded rule's series, resolved once when its set is loaded.
#[derive(Clone)]
pub struct RuleSeries {
    /// Times the rule's condition was evaluated (counted through
    /// [`StageEvaluations`]).
    evaluations: IntCounter,
    /// Unix time of its last hit (0: never since it was loaded).
    last_hit: IntGauge,
}

impl RuleSeries {
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
            stages: Mutex::new(Vec::new()),
        }
    }

    /// The evaluation counting of one stage whose rules have `series`, in
    /// stage order; flushed on render while it lives.
    pub fn stage(&self, series: &[&RuleSeries]) -> Arc<StageEvaluations> {
        let stage = Arc::new(StageEvaluations {
            reached: (0..=series.len()).map(|_| AtomicU64::new(0)).collect(),
            counters: series.iter().map(|s| s.evaluations.clone()).collect(),
        });
        let mut stages = lock(&self.stages);
        stages.retain(|w| w.strong_count() > 0);
        stages.push(Arc::downgrade(&stage));
        stage
    }

    /// Brings every rule's evaluation counter up to date (before render).
    pub fn flush(&self) {
        let live: Vec<Arc<StageEvaluations>> = {
            let mut stages = lock(&self.stages);
            stages.retain(|w| w.strong_count() > 0);
            stages.iter().filter_map(Weak::upgrade).collect()
        };
        for stage in live {
            stage.flush();
        }
    }

    /// Puts a newly loaded rule set in service: every rule, given as
    /// (name, action), gets its series (at 0 when new, kept when a rule of
    /// that name was loaded before), and the series of the rules no longer
    /// loaded are dropped. Returns the rules' series, in the order given.
    pub fn loaded(&self, rules: &[(&str, &str)]) -> Vec<RuleSeries> {
        let mut loaded = lock(&self.loaded);
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

/// Locks a mutex, going on with the data if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(series: &[RuleSeries]) -> Vec<u64> {
        series.iter().map(|s| s.evaluations.get()).collect()
    }

    #[test]
    fn a_run_counts_every_rule_it_got_past_once_flushed_or_dropped() {
        let r = Registry::new();
        let hits = counter_vec(&r, "smtpgate_rule_hits_total", "hits", &["rule", "action"]);
        let m = RuleMetrics::new(&r, hits);
        let series = m.loaded(&[("a", "score"), ("b", "reject"), ("c", "score")]);
        let stage = m.stage(&series.iter().collect::<Vec<_>>());
        // All three, stopped at b twice, stopped before any rule once.
        for evaluated in [3, 2, 0, 2] {
            stage.ran(evaluated);
        }
        assert_eq!(counts(&series), [0, 0, 0], "counted only on flush");
        m.flush();
        assert_eq!(counts(&series), [3, 3, 1]);
        m.flush();
        assert_eq!(counts(&series), [3, 3, 1], "a second flush adds nothing");
        stage.ran(1);
        drop(stage);
        assert_eq!(counts(&series), [4, 3, 1], "a set dropped flushes itself");
        m.flush();
        assert_eq!(counts(&series), [4, 3, 1]);
    }
}
