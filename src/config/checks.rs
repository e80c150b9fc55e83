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
    for (name, s) in [("iprev", &c.iprev)] {
        if !(1..=120_000).contains(&s.timeout_ms) {
            return Err(ValidationError::new(
                format!("checks.{name}.timeout_ms"),
                format!("must be between 1 and 120000, not {}", s.timeout_ms),
            ));
        }
    }
    Ok(())
}
