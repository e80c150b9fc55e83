//! Runs the `tests:` of the loaded rule files: each case is one
//! transaction through the simulator ([`simulate_offline`]) on the chain a
//! live session would run, compared with what the case expects.
//! `smtpgate check` and `smtpgate test-rules --run-tests` print the
//! outcome; a reload refuses a rule set whose own cases fail
//! ([`before_reload`]).

use crate::checks::Fixtures;
use crate::config::ConfigError;
use crate::filter::FilterChain;
use crate::gateway::Gateway;
use crate::rules::{Actual, RuleSet, RuleTest};
use crate::simulate::{simulate_offline, Report, Simulation};
use std::fmt;

/// A case that did not end as it expected.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The case.
    pub test: RuleTest,
    /// What happened instead; `Err` when the case could not run.
    pub actual: Result<Actual, String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.test;
        write!(
            f,
            "{}: test {:?}: expected {}, got ",
            t.place(),
            t.name,
            t.expect
        )?;
        match &self.actual {
            Ok(a) => write!(f, "{a}"),
            Err(e) => write!(f, "an error: {e}"),
        }
    }
}

/// The outcome of every case of a rule set.
#[derive(Debug, Clone, Default)]
pub struct Results {
    /// Cases that ended as expected.
    pub passed: usize,
    /// The others, in load order.
    pub failures: Vec<Failure>,
}

impl Results {
    /// True when no case failed.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// `12 rule tests passed` or `11 of 12 rule tests passed, 1 failed`.
    pub fn summary(&self) -> String {
        let total = self.passed + self.failures.len();
        if self.ok() {
            format!("{total} rule tests passed")
        } else {
            format!(
                "{} of {total} rule tests passed, {} failed",
                self.passed,
                self.failures.len()
            )
        }
    }
}

/// The rule set of `chain`, if it has one.
fn rule_set(chain: &FilterChain) -> Option<&RuleSet> {
    chain
        .get(RuleSet::NAME)
        .and_then(|f| f.as_any())
        .and_then(|a| a.downcast_ref::<RuleSet>())
}

/// What a finished simulation is, as a case sees it.
fn actual(report: &Report) -> Actual {
    Actual {
        verdict: report.verdict.name().to_string(),
        greylisted: report.greylisted_by.is_some(),
        reply: report.reply.as_ref().map(|r| (r.code, r.enhanced)),
        score: report.score,
        stage: report.stage,
        matched: report
            .stages
            .iter()
            .flat_map(|s| &s.hits)
            .map(|h| h.rule.clone())
            .collect(),
    }
}

/// Runs one case through `chain` on `gateway`.
pub fn run_one(gateway: &Gateway, chain: &FilterChain, test: &RuleTest) -> Result<Actual, String> {
    let sim = Simulation {
        client_ip: test.client_ip,
        helo: test.helo_name(),
        auth_user: test.auth_user.clone(),
        tls: test.tls,
        from: test.from.clone(),
        to: test.to.clone(),
        message: test.message.clone(),
        greylist_passed: test.greylist_passed,
        declared_size: test.declared_size,
    };
    let facts = Fixtures(test.facts.clone());
    simulate_offline(gateway, chain, &facts, &sim).map(|r| actual(&r))
}

/// Runs every case of the rule set in `chain` (none without one), with
/// `gateway`'s relay control, limits and settings.
pub fn run(gateway: &Gateway, chain: &FilterChain) -> Results {
    let mut results = Results::default();
    let Some(set) = rule_set(chain) else {
        return results;
    };
    for test in set.tests() {
        match run_one(gateway, chain, test) {
            Ok(a) if test.judge(&a) => results.passed += 1,
            actual => results.failures.push(Failure {
                test: test.clone(),
                actual,
            }),
        }
    }
    results
}

/// The gate a reload passes before it swaps `chain` in: runs its rule
/// set's cases; when one fails, logs every failure, counts
/// `smtpgate_config_reload_failures_total{reason="rule_tests"}` and
/// returns the error that keeps the old rules.
pub fn before_reload(gateway: &Gateway, chain: &FilterChain) -> Result<(), ConfigError> {
    let results = run(gateway, chain);
    let Some(first) = results.failures.first() else {
        return Ok(());
    };
    for failure in &results.failures {
        log::error!("reload: rule test failed: {failure}");
    }
    log::error!(
        "reload: {}; the new rules are not loaded, keeping the old ones",
        results.summary()
    );
    gateway.metrics().reload_failed("rule_tests");
    Err(ConfigError {
        file: first.test.file.display().to_string(),
        line: first.test.line,
        reason: format!(
            "{}; first: test {:?}: expected {}, got {}",
            results.summary(),
            first.test.name,
            first.test.expect,
            match &first.actual {
                Ok(a) => a.to_string(),
                Err(e) => format!("an error: {e}"),
            }
        ),
    })
}
