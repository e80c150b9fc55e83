//! The milter counters: each milter's verdict per transaction stage.

use super::counter_vec;
use prometheus::{IntCounterVec, Registry};

/// `smtpgate_milter_verdicts_total`.
#[derive(Clone)]
pub struct MilterMetrics {
    /// `smtpgate_milter_verdicts_total{milter,verdict}`.
    verdicts: IntCounterVec,
}

impl MilterMetrics {
    /// Registers the counter in `r`.
    pub(super) fn new(r: &Registry) -> MilterMetrics {
        MilterMetrics {
            verdicts: counter_vec(
                r,
                "smtpgate_milter_verdicts_total",
                "Milter verdicts at the end of each transaction's milter run, by milter and verdict.",
                &["milter", "verdict"],
            ),
        }
    }

    /// Counts one milter's verdict (`accept`, `reject`, `temperror`, ...).
    pub fn verdict(&self, milter: &str, verdict: &str) {
        self.verdicts.with_label_values(&[milter, verdict]).inc();
    }
}
