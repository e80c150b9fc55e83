//! Unix signals: SIGTERM and SIGINT start a graceful shutdown (a second one
//! exits at once); SIGHUP reloads the configuration (see
//! [`crate::reload::reload_server`]); SIGUSR1 reopens the audit file after
//! log rotation.

use crate::shutdown::ShutdownTrigger;
use futures::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_async_std::Signals;
use std::io;
use std::sync::Arc;

/// Starts a task that turns signals into actions: termination signals fire
/// `trigger`, SIGHUP calls `reload` (on a blocking thread: it reads and
/// compiles files), SIGUSR1 calls `reopen`.
pub fn install(
    trigger: ShutdownTrigger,
    reload: impl Fn() + Send + Sync + 'static,
    reopen: impl Fn() + Send + Sync + 'static,
) -> io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])?;
    let reload = Arc::new(reload);
    async_std::task::spawn(async move {
        let mut seen = 0;
        while let Some(sig) = signals.next().await {
            match sig {
                SIGHUP => {
                    log::info!("SIGHUP: reloading");
                    let reload = reload.clone();
                    // One reload at a time: the next signal waits for this one.
                    async_std::task::spawn_blocking(move || reload()).await;
                }
                SIGUSR1 => {
                    log::info!("SIGUSR1: reopening the audit file");
                    reopen();
                }
                _ => {
                    seen += 1;
                    if seen > 1 {
                        log::warn!("second termination signal: exiting now");
                        std::process::exit(1);
                    }
                    log::info!("signal {sig}: shutting down gracefully");
                    trigger.fire();
                }
            }
        }
    });
    Ok(())
}
