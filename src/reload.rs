//! Reloading on SIGHUP: the one entry point for everything a running
//! gateway re-reads without a restart.
//!
//! [`reload_server`] (what the `smtpgate` binary runs on SIGHUP) re-reads
//! the whole configuration file: it is parsed and validated as at start-up,
//! the listen addresses it adds are bound, and a complete new gateway is
//! built from it — certificate, users, AUTH backends, DKIM keys, upstream
//! pool, protection, checks, audit file, rules — before anything changes.
//! Then new sessions get the new gateway, while sessions in flight finish
//! with the one they started with. If any part fails, the whole new
//! configuration is refused and the old one stays in force, so a
//! half-finished edit or certificate renewal never takes the gateway down.
//! Settings that cannot change while the process runs are named in a
//! warning ("needs a restart") and the rest applies.
//!
//! [`reload`] is the narrower reload of a gateway without its server (for
//! programs that embed one): the rules and their list files, the listener
//! certificate and key, the AUTH users file and the DKIM signing keys, each
//! swapped in on its own.

use crate::config::{Config, ConfigError};
use crate::gateway::Gateway;
use crate::rules::{RuleOptions, RuleSet};
use crate::server::Live;
use log::{error, info, warn};
use std::path::Path;
use std::sync::Arc;

/// Re-reads the whole configuration file of the running server and puts
/// it in service for new sessions, or refuses it whole (logged with file,
/// line and reason, and counted in
/// `smtpgate_config_reload_failures_total{reason="invalid"}`) and keeps
/// the configuration in force. Run on a blocking thread: it reads files
/// and binds sockets.
pub fn reload_server(live: &Arc<Live>) -> Result<(), ConfigError> {
    let current = live.current();
    if current.shutdown.is_fired() {
        info!("reload: shutting down; nothing reloaded");
        return Ok(());
    }
    let origin = current.config.source.origin.clone();
    if origin.is_empty() || origin == "<inline>" {
        info!("reload: no configuration file (built-in configuration); reloading its files only");
        return reload(&current);
    }
    let metrics = current.metrics_handle();
    let refused = |e: ConfigError| {
        error!("reload: the new configuration is refused, the old one stays in use: {e}");
        metrics.reload_failed("invalid");
        Err(e)
    };
    let (gateway, prepared, restart) = match build_new(live, &current, Path::new(&origin)) {
        Ok(built) => built,
        Err(e) => return refused(e),
    };
    // From "rules loaded" in the log until they serve, new clients wait.
    let held = live.hold_new_sessions();
    if gateway.config.rules_dir.is_some() {
        if let Err(e) = reload_rules(&gateway) {
            // reload_rules logged and counted why.
            error!("reload: {origin} not reloaded because of its rules; the old configuration stays in use");
            return Err(e);
        }
    }
    for setting in restart.iter().chain(&prepared.restart_needed) {
        warn!("reload: {setting}: needs a restart; the running value stays, the rest of the new configuration applies");
    }
    live.commit(gateway.clone(), prepared);
    drop(held);
    metrics.reloaded();
    files_read(&gateway);
    info!("reload: configuration reloaded from {origin}; new sessions use it");
    Ok(())
}

/// Logs the files a rebuilt gateway read again, as the narrower reload
/// does.
fn files_read(gateway: &Gateway) {
    if gateway.tls().is_some() {
        info!("reload: TLS certificate and key reloaded");
    }
    if let Some(store) = gateway.users() {
        info!(
            "reload: users file reloaded ({} users)",
            store.users().len()
        );
    }
    if let Some(signer) = gateway.dkim() {
        info!(
            "reload: DKIM signing keys reloaded ({} keys)",
            signer.keys().len()
        );
    }
}

/// Everything the new configuration needs but its rules, made before
/// anything changes: the file parsed and validated, its new listen
/// addresses bound, the new gateway built — with the running values of
/// the settings that need a restart (named in the list returned), so the
/// gateway's configuration says what runs and the next reload tells again.
fn build_new(
    live: &Live,
    current: &Gateway,
    file: &Path,
) -> Result<(Arc<Gateway>, crate::server::Prepared, Vec<String>), ConfigError> {
    let mut config = Config::load(file)?;
    let restart = restart_only(&current.config, &config);
    config.metrics = current.config.metrics.clone();
    config.log.level = current.config.log.level.clone();
    let prepared = live.prepare(&config)?;
    let gateway = current.rebuild(config)?;
    Ok((gateway, prepared, restart))
}

/// The settings `new` changes that the running process keeps until a
/// restart, each with its old and new value.
fn restart_only(old: &Config, new: &Config) -> Vec<String> {
    let mut found = Vec::new();
    if old.metrics != new.metrics {
        let addr = |c: &Config| match &c.metrics {
            Some(m) if m.allow_remote => format!("{} (allow_remote)", m.addr),
            Some(m) => m.addr.to_string(),
            None => "none".to_string(),
        };
        found.push(format!(
            "metrics changed ({} -> {}): the metrics listener stays where it is",
            addr(old),
            addr(new)
        ));
    }
    if old.log.level != new.log.level {
        found.push(format!(
            "log.level changed ({} -> {}): the log filter is set at start",
            old.log.filter(),
            new.log.filter()
        ));
    }
    found
}

/// Re-reads everything of `shared` that can be reloaded on its own; logs
/// what happened. Returns the rule error when the new rules were refused
/// (the old ones stay).
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
                shared.metrics().reload_failed("invalid");
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
            shared.metrics().reload_failed("invalid");
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
