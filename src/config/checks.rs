//! Settings of the checks that run before the rules (`checks:`): for each
//! check, how long it may take and what happens when it fails.
//!
//! A check runs only when a loaded rule reads one of its facts, so these
//! settings cost nothing for a check no rule uses.

use super::ValidationError;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `checks: { iprev: { timeout_ms: 5000, on_error: fail_open } }`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChecksOptions {
    /// The iprev check (RFC 8601): the client IP's PTR name, and whether
    /// that name resolves back to the IP. Facts `iprev` and `client.ptr`.
    pub iprev: CheckSettings,
    /// SPF (RFC 7208) of the MAIL FROM and HELO identities. Facts
    /// `spf.mailfrom` and `spf.helo`.
    pub spf: CheckSettings,
    /// DKIM signatures (RFC 6376, RFC 8463). Facts `dkim` and
    /// `dkim.signatures`.
    pub dkim: CheckSettings,
    /// DMARC (RFC 7489) of the From domain. Facts `dmarc`,
    /// `dmarc.policy`, `dmarc.from`, `dmarc.reason` and `dmarc.pct`.
    pub dmarc: CheckSettings,
    /// The ARC chain (RFC 8617). Facts `arc` and `arc.sealer`.
    pub arc: CheckSettings,
}

/// How one check runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckSettings {
    /// How long the check may take in all, in milliseconds; past it, its
    /// facts say `temperror`. Default 5000; between 1 and 120000.
    pub timeout_ms: u64,
    /// What a failed or timed-out check does: `fail_open` (the default:
    /// the rules see `temperror` and decide) or `tempfail` (the client is
    /// told `451 4.7.1` and tries again later).
    pub on_error: OnError,
}

impl Default for CheckSettings {
    fn default() -> Self {
        CheckSettings {
            timeout_ms: 5000,
            on_error: OnError::FailOpen,
        }
    }
}

impl CheckSettings {
    /// [`timeout_ms`](Self::timeout_ms) as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// What a check that failed does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The rules see `temperror` and decide.
    FailOpen,
    /// The stage answers `451 4.7.1`: try again later.
    Tempfail,
}

/// Range checks of `checks:`.
pub(super) fn check(c: &ChecksOptions) -> Result<(), ValidationError> {
    for (name, s) in [
        ("iprev", &c.iprev),
        ("spf", &c.spf),
        ("dkim", &c.dkim),
        ("dmarc", &c.dmarc),
        ("arc", &c.arc),
    ] {
        if !(1..=120_000).contains(&s.timeout_ms) {
            return Err(ValidationError::new(
                format!("checks.{name}.timeout_ms"),
                format!("must be between 1 and 120000, not {}", s.timeout_ms),
            ));
        }
    }
    Ok(())
}
