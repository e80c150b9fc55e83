//! Which checks run at which stage, from the facts the loaded rules read.

use super::{Configured, Registry};
use crate::config::ConfigError;
use crate::filter::{FactUse, Stage};
use std::sync::Arc;

/// The checks to run, stage by stage. Each check appears once, at the
/// first stage where a rule reads one of its facts; a check no rule reads
/// is not in the plan, so it never runs.
#[derive(Clone, Default)]
pub struct Plan {
    /// By stage, in [`Stage::ALL`] order.
    stages: [Vec<Arc<Configured>>; 6],
}

/// The position of `stage` in [`Stage::ALL`].
fn index(stage: Stage) -> usize {
    Stage::ALL.iter().position(|s| *s == stage).unwrap_or(0)
}

impl Plan {
    /// The plan for rules that read `used`. An error names the first
    /// fact no check gives, or one read before its check can run.
    pub fn new(registry: &Registry, used: &[FactUse]) -> Result<Plan, ConfigError> {
        let mut first: Vec<(Arc<Configured>, Stage)> = Vec::new();
        for u in used {
            let err = |reason: String| ConfigError {
                file: u.file.clone(),
                line: u.line,
                reason: format!("{}: {reason}", u.path),
            };
            if let Some(from) = registry.session_fact(&u.fact) {
                if u.stage < from {
                    return Err(err(format!(
                        "the fact `{}` is known from the {from} stage on, not at {}",
                        u.fact, u.stage
                    )));
                }
                continue;
            }
            let Some(c) = registry.giving(&u.fact) else {
                return Err(err(format!(
                    "no check gives the fact `{}` (known facts: {})",
                    u.fact,
                    registry.all_facts().join(", ")
                )));
            };
            if u.stage < c.check.earliest() {
                return Err(err(format!(
                    "the fact `{}` is known from the {} stage on, not at {}",
                    u.fact,
                    c.check.earliest(),
                    u.stage
                )));
            }
            match first.iter_mut().find(|(k, _)| Arc::ptr_eq(k, c)) {
                Some(entry) => entry.1 = entry.1.min(u.stage),
                None => first.push((c.clone(), u.stage)),
            }
        }
        let mut plan = Plan::default();
        // Registry order within a stage, whatever order the rules read in.
        for c in &registry.checks {
            if let Some((_, stage)) = first.iter().find(|(k, _)| Arc::ptr_eq(k, c)) {
                plan.stages[index(*stage)].push(c.clone());
            }
        }
        Ok(plan)
    }

    /// The checks that run at `stage`.
    pub fn at(&self, stage: Stage) -> &[Arc<Configured>] {
        &self.stages[index(stage)]
    }

    /// True when no check runs at all: sessions then pay nothing for checks.
    pub fn is_empty(&self) -> bool {
        self.stages.iter().all(Vec::is_empty)
    }

    /// `(stage, check)` for every check that runs, in order.
    pub fn entries(&self) -> Vec<(Stage, &'static str)> {
        Stage::ALL
            .iter()
            .flat_map(|s| self.at(*s).iter().map(move |c| (*s, c.check.name())))
            .collect()
    }
}
