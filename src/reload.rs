//! Reloading the security files of a running gateway: the listener
//! certificate and key, and the AUTH users file.
//!
//! [`reload_security`] is what SIGHUP does. Sessions already under TLS keep
//! their session; new handshakes and new logins use the new files. A file
//! that fails to load is reported and the previous one stays in use, so a
//! half-finished certificate renewal never takes TLS down.

use crate::session::Shared;
use futures::StreamExt;
use log::{error, info};
use signal_hook::consts::SIGHUP;
use signal_hook_async_std::Signals;
use std::io;
use std::sync::Arc;

/// Reloads the certificate and the users file; true when everything that
/// is configured reloaded.
pub fn reload_security(shared: &Shared) -> bool {
    let mut ok = true;
    match crate::tls::reload_tls(shared) {
        Ok(true) => info!("reload: TLS certificate and key reloaded"),
        Ok(false) => {}
        Err(e) => {
            error!("reload: TLS certificate not reloaded, the old one stays in use: {e}");
            ok = false;
        }
    }
    match crate::auth::reload_users(shared) {
        Ok(Some(n)) => info!("reload: users file reloaded ({n} users)"),
        Ok(None) => {}
        Err(e) => {
            error!("reload: users file not reloaded, the old users stay: {e}");
            ok = false;
        }
    }
    ok
}

/// Starts a task that runs [`reload_security`] on every SIGHUP.
pub fn install_sighup(shared: Arc<Shared>) -> io::Result<()> {
    let mut signals = Signals::new([SIGHUP])?;
    async_std::task::spawn(async move {
        while signals.next().await.is_some() {
            info!("SIGHUP: reloading certificates and users");
            reload_security(&shared);
        }
    });
    Ok(())
}
