//! Unix signals: SIGTERM and SIGINT start a graceful shutdown; a second one
//! exits at once.

use crate::shutdown::ShutdownTrigger;
use futures::StreamExt;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_async_std::Signals;
use std::io;

/// Starts a task that turns termination signals into a graceful shutdown.
pub fn install(trigger: ShutdownTrigger) -> io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    async_std::task::spawn(async move {
        let mut seen = 0;
        while let Some(sig) = signals.next().await {
            seen += 1;
            if seen > 1 {
                log::warn!("second termination signal: exiting now");
                std::process::exit(1);
            }
            log::info!("signal {sig}: shutting down gracefully");
            trigger.fire();
        }
    });
    Ok(())
}
