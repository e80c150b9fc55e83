//! Reloading on SIGHUP: the one entry point for everything a running
//! gateway re-reads without a restart (today the rules and their list
//! files).
//!
//! The new rule set is compiled completely before anything changes, then
//! swapped in with [`Shared::set_filters`]: sessions in flight finish with
//! the rules they started with, new sessions get the new ones. If the new
//! files are invalid, the old rules stay and the error is logged.

use crate::config::ConfigError;
use crate::rules::{RuleOptions, RuleSet};
use crate::session::Shared;
use log::{error, info};
use std::sync::Arc;

/// Re-reads what can be reloaded; logs what happened. Returns the rule
/// error when the new rules were refused (the old ones stay).
pub fn reload(shared: &Shared) -> Result<(), ConfigError> {
    let Some(dir) = shared.config.rules_dir.as_deref() else {
        info!("reload: no rules_dir configured; no rules to reload");
        return Ok(());
    };
    match RuleSet::load_dir(dir, RuleOptions::from_config(&shared.config)) {
        Ok(set) => {
            let count = set.len();
            let chain = shared.filters().replacing(RuleSet::NAME, Arc::new(set));
            shared.set_filters(chain);
            info!(
                "reload: {count} rules loaded from {}; new sessions use them",
                dir.display()
            );
            Ok(())
        }
        Err(e) => {
            error!("reload: the new rules are invalid, keeping the old ones: {e}");
            Err(e)
        }
    }
}
