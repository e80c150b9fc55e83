//! Learning what the upstream offers before any client needs it.
//!
//! EHLO to clients offers DSN and SMTPUTF8 only when the upstream does,
//! and that is known only from the upstream's own EHLO. Without a probe,
//! the clients greeted before the first relayed message (after a start or
//! a reload that built a new pool) would never be offered them. So a new
//! pool connects once in the background, exactly as a relayed session
//! does (failover order, TLS, AUTH), reads the EHLO reply and hands the
//! connection to the idle pool (or QUITs it). A failure is logged once and
//! retried with a growing pause until a connection — the probe's or a
//! session's — succeeds.

use super::{Extensions, UpstreamPool};
use crate::config::Timeouts;
use log::warn;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The pause after the first failed probe; it doubles after each one.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// The longest pause between two probes.
const MAX_RETRY: Duration = Duration::from_secs(60);

impl Extensions {
    /// The keywords offered, as EHLO spells them, the ones clients are
    /// told about first.
    pub fn keywords(&self) -> Vec<&'static str> {
        [
            (self.dsn, "DSN"),
            (self.smtputf8, "SMTPUTF8"),
            (self.chunking, "CHUNKING"),
            (self.eightbitmime, "8BITMIME"),
            (self.pipelining, "PIPELINING"),
            (self.size.is_some(), "SIZE"),
            (self.enhanced_status_codes, "ENHANCEDSTATUSCODES"),
            (self.starttls, "STARTTLS"),
            (!self.auth.is_empty(), "AUTH"),
            (self.xforward.is_some(), "XFORWARD"),
            (self.xclient.is_some(), "XCLIENT"),
        ]
        .into_iter()
        .filter_map(|(offered, keyword)| offered.then_some(keyword))
        .collect()
    }
}

impl UpstreamPool {
    /// Connects to the upstream (as [`connect`](Self::connect) does, saying
    /// EHLO as `helo`) until one connection succeeds, so what it offers is
    /// known; then gives the connection to the idle pool, or closes it.
    /// Returns at once when a connection already told. Retries after 1 s,
    /// doubling to 60 s; the caller stops it at shutdown by dropping it.
    pub async fn probe(&self, helo: &str, timeouts: &Timeouts) {
        let mut pause = FIRST_RETRY;
        let mut warned = false;
        while self.known_extensions().is_none() {
            match self.connect(helo, timeouts).await {
                Ok(up) => {
                    self.release(up, false, true).await;
                    break;
                }
                // A session got through meanwhile.
                Err(_) if self.known_extensions().is_some() => break,
                Err(e) => {
                    if !warned {
                        warn!(
                            "upstream extensions not known yet: {e}; DSN and SMTPUTF8 are \
                             not offered until a connection succeeds"
                        );
                        warned = true;
                    }
                    self.probed.store(true, Ordering::SeqCst);
                    async_std::task::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY);
                }
            }
        }
        self.probed.store(true, Ordering::SeqCst);
    }

    /// Whether the first probe has finished (either way) or a connection
    /// already told what the upstream offers: what waits for start-up to
    /// settle before it counts on the upstream's connections.
    pub fn probed(&self) -> bool {
        self.probed.load(Ordering::SeqCst) || self.known_extensions().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Reply;

    #[test]
    fn keywords_name_what_was_offered_dsn_and_smtputf8_first() {
        let reply = Reply::multiline(
            250,
            None,
            vec![
                "mx.test".to_string(),
                "8BITMIME".to_string(),
                "SMTPUTF8".to_string(),
                "SIZE 1000".to_string(),
                "DSN".to_string(),
            ],
        );
        let ext = Extensions::from_ehlo(&reply);
        assert_eq!(ext.keywords(), ["DSN", "SMTPUTF8", "8BITMIME", "SIZE"]);
        assert!(Extensions::default().keywords().is_empty());
    }
}
