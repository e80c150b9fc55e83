//! AUTH passthrough: the client's login is tried at the upstream server's
//! own AUTH, on a new TLS connection, and that connection — logged in as
//! the user — then carries the session's mail.
//!
//! The upstream's verdict is the verdict: `235` accepts, `535` rejects
//! (a wrong password, counted as a failure). Anything else — a `4xx`, no
//! AUTH offered, no TLS, a failed connection, the timeout — means it could
//! not answer, and the client gets `454 4.7.0`, never `535`.

use super::{Credentials, Mechanism, User};
use crate::config::Timeouts;
use crate::relay::SenderRule;
use crate::upstream::{Upstream, UpstreamError, UpstreamPool};
use std::sync::Arc;
use std::time::Duration;

/// The `upstream` backend: how long a login may take and what its users
/// may send as.
pub struct UpstreamBackend {
    /// Connecting, TLS and AUTH together.
    pub timeout: Duration,
    /// MAIL FROM rules every such user gets besides their login name.
    pub senders: Vec<SenderRule>,
}

/// What a session lends the backend to log in with: the gateway's
/// upstream servers and how to greet them.
#[derive(Clone, Copy)]
pub struct UpstreamLogin<'a> {
    /// The configured upstream servers.
    pub pool: &'a UpstreamPool,
    /// Our EHLO name towards them.
    pub helo: &'a str,
    /// Limits for every wait.
    pub timeouts: &'a Timeouts,
}

impl UpstreamBackend {
    /// Tries `creds` at the upstream: the user and the logged-in
    /// connection, `None` for a `535`, or why it could not answer.
    pub async fn log_in(
        &self,
        mechanism: Mechanism,
        creds: &Credentials,
        via: Option<&UpstreamLogin<'_>>,
    ) -> Result<Option<(Arc<User>, Upstream)>, String> {
        let Some(via) = via else {
            return Err("no upstream server is configured".into());
        };
        let attempt = via.pool.log_in(
            via.helo,
            via.timeouts,
            &creds.user,
            &creds.password,
            mechanism == Mechanism::Login,
        );
        // Boxed: connecting with TLS is a large future.
        let result = match async_std::future::timeout(self.timeout, Box::pin(attempt)).await {
            Ok(result) => result,
            Err(_) => {
                return Err(format!(
                    "the upstream did not answer within {} ms",
                    self.timeout.as_millis()
                ))
            }
        };
        match result {
            Ok(up) => {
                let user = User::external(creds.user.clone(), self.senders.clone());
                Ok(Some((Arc::new(user), up)))
            }
            Err(UpstreamError::Auth(reply)) if reply.code == 535 => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}
