//! Reloading on SIGHUP: the one entry point for everything a running
//! gateway re-reads without a restart — the rules and their list files,
//! the listener certificate and key, the AUTH users file and the DKIM
//! signing keys.
//!
//! Each part is loaded completely before anything changes, then swapped in:
//! sessions in flight finish with what they started with, new sessions get
//! the new files. A part that fails to load is reported and its previous
//! version stays in use, so a half-finished edit or certificate renewal
//! never takes the gateway down.

use crate::config::ConfigError;
use crate::gateway::Gateway;
use crate::rules::{RuleOptions, RuleSet};
use log::{error, info};
use std::sync::Arc;

/// Re-reads everything that can be reloaded; logs what happened. Returns
/// the rule error when the new rules were refused (the old ones stay).
pub fn reload(shared: &Gateway) -> Result<(), ConfigError> {
    reload_security(shared);
    reload_dkim(shared);
    reload_rules(shared)
}

/// Re-reads the rules directory and swaps the rule set in the chain.
pub fn reload_rules(shared: &Gateway) -> Result<(), ConfigError> {
    let Some(dir) = shared.config.rules_dir.as_deref() else {
        info!("reload: no rules_dir configured; no rules to reload");
        return Ok(());
    };
    match RuleSet::load_dir(dir, RuleOptions::from_config(&shared.config)) {
        Ok(set) => {
            let count = set.len();
            let chain = shared.filters().replacing(RuleSet::NAME, Arc::new(set));
            crate::rule_tests::before_reload(shared, &chain)?;
            if let Err(e) = shared.set_filters(chain) {
                error!("reload: the new rules are invalid, keeping the old ones: {e}");
                return Err(e);
            }
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

/// Re-reads the DKIM signing keys; true when they reloaded (or none are
/// configured). On error the old keys keep signing.
pub fn reload_dkim(shared: &Gateway) -> bool {
    let Some(signer) = shared.dkim() else {
        return true;
    };
    match signer.reload() {
        Ok(n) => {
            info!("reload: DKIM signing keys reloaded ({n} keys)");
            true
        }
        Err(e) => {
            error!("reload: DKIM signing keys not reloaded, the old ones stay in use: {e}");
            false
        }
    }
}

/// Reloads the certificate and the users file; true when everything that
/// is configured reloaded.
pub fn reload_security(shared: &Gateway) -> bool {
    let mut ok = true;
    match shared.tls().map(|tls| tls.reload()).transpose() {
        Ok(Some(())) => info!("reload: TLS certificate and key reloaded"),
        Ok(None) => {}
        Err(e) => {
            error!("reload: TLS certificate not reloaded, the old one stays in use: {e}");
            ok = false;
        }
    }
    if let Some(n) = shared.auth_backends().and_then(|b| b.flush_cache()) {
        info!("reload: AUTH login cache flushed ({n} logins)");
    }
    match shared.users().map(|store| store.reload()).transpose() {
        Ok(Some(n)) => info!("reload: users file reloaded ({n} users)"),
        Ok(None) => {}
        Err(e) => {
            error!("reload: users file not reloaded, the old users stay: {e}");
            ok = false;
        }
    }
    ok
}
