//! The DKIM signing counters: what became of each message eligible for a
//! signature.

use super::counter_vec;
use prometheus::{IntCounterVec, Registry};

/// Why an eligible message went out without a signature, as the
/// `reason` label (created at 0 at start).
pub const UNSIGNED_REASONS: [&str; 3] = ["no_from", "ambiguous_from", "no_key"];

/// `smtpgate_dkim_*`.
#[derive(Clone)]
pub struct DkimMetrics {
    /// `smtpgate_dkim_signed_total{domain}`: messages signed, by `d=`.
    signed: IntCounterVec,
    /// `smtpgate_dkim_sign_failures_total{domain}`: messages a key of the
    /// domain could not sign (relayed unsigned).
    failures: IntCounterVec,
    /// `smtpgate_dkim_unsigned_total{reason}`: messages of signing clients
    /// that no key was for.
    unsigned: IntCounterVec,
}

impl DkimMetrics {
    /// Registers the counters in `r`.
    pub(super) fn new(r: &Registry) -> DkimMetrics {
        let unsigned = counter_vec(
            r,
            "smtpgate_dkim_unsigned_total",
            "Messages eligible for DKIM signing that went unsigned, by reason.",
            &["reason"],
        );
        for reason in UNSIGNED_REASONS {
            unsigned.with_label_values(&[reason]);
        }
        DkimMetrics {
            signed: counter_vec(
                r,
                "smtpgate_dkim_signed_total",
                "Messages DKIM-signed, by signing domain.",
                &["domain"],
            ),
            failures: counter_vec(
                r,
                "smtpgate_dkim_sign_failures_total",
                "Messages a DKIM key could not sign (relayed unsigned), by domain.",
                &["domain"],
            ),
            unsigned,
        }
    }

    /// Creates the series of a configured signing domain, so they show at 0.
    pub fn known(&self, domain: &str) {
        self.signed.with_label_values(&[domain]);
        self.failures.with_label_values(&[domain]);
    }

    /// Counts a message signed for `domain`.
    pub fn signed(&self, domain: &str) {
        self.signed.with_label_values(&[domain]).inc();
    }

    /// Counts a message `domain`'s key could not sign.
    pub fn failed(&self, domain: &str) {
        self.failures.with_label_values(&[domain]).inc();
    }

    /// Counts an eligible message left unsigned for `reason` (one of
    /// [`UNSIGNED_REASONS`]).
    pub fn unsigned(&self, reason: &str) {
        self.unsigned.with_label_values(&[reason]).inc();
    }
}
