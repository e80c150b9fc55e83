//! The session's connection to the upstream and the condition it is in,
//! and the one policy for what an upstream failure means to the client.

use super::replies;
use crate::proto::Reply;
use crate::upstream::{Upstream, UpstreamError};

/// The upstream connection a session holds between commands.
///
/// One value says both whether there is a connection and whether it can
/// take the next MAIL as it is, so "connected but holding an abandoned
/// transaction" cannot be forgotten when the connection is replaced.
#[derive(Default)]
pub(super) enum Link {
    /// No connection: the next MAIL takes one from the pool.
    #[default]
    None,
    /// Connected, and either idle or carrying the current transaction.
    Clean(Upstream),
    /// Connected, but the upstream still holds MAIL/RCPT of a transaction
    /// the client abandoned: RSET before anything else.
    NeedsRset(Upstream),
    /// The connection that logged in as the client's user (AUTH
    /// passthrough) is gone. Nothing replaces it: a new one would not be
    /// logged in, so every later MAIL gets `451 4.4.1`.
    Lost,
}

impl Link {
    /// The connection, whatever its condition.
    pub(super) fn get(&mut self) -> Option<&mut Upstream> {
        match self {
            Link::None | Link::Lost => None,
            Link::Clean(up) | Link::NeedsRset(up) => Some(up),
        }
    }

    /// The connection, read-only.
    pub(super) fn peek(&self) -> Option<&Upstream> {
        match self {
            Link::None | Link::Lost => None,
            Link::Clean(up) | Link::NeedsRset(up) => Some(up),
        }
    }

    /// True when there is a connection.
    pub(super) fn is_connected(&self) -> bool {
        !matches!(self, Link::None | Link::Lost)
    }

    /// True when the session's logged-in connection is gone for good.
    pub(super) fn is_lost(&self) -> bool {
        matches!(self, Link::Lost)
    }

    /// True when the upstream holds an abandoned transaction.
    pub(super) fn needs_rset(&self) -> bool {
        matches!(self, Link::NeedsRset(_))
    }

    /// The upstream now holds a transaction that will never get DATA.
    pub(super) fn abandoned(&mut self) {
        *self = match std::mem::take(self) {
            Link::Clean(up) | Link::NeedsRset(up) => Link::NeedsRset(up),
            other => other,
        };
    }

    /// The upstream answered RSET or a new MAIL: nothing is left open.
    pub(super) fn settled(&mut self) {
        *self = match std::mem::take(self) {
            Link::Clean(up) | Link::NeedsRset(up) => Link::Clean(up),
            other => other,
        };
    }

    /// Forgets the connection (it failed, or it stands for another client
    /// now); dropping it closes the socket. One that logged in as the
    /// client's user leaves the link [`Lost`](Link::Lost).
    pub(super) fn drop_connection(&mut self) {
        let logged_in = self.peek().is_some_and(|up| up.logged_in_as.is_some());
        *self = if logged_in || self.is_lost() {
            Link::Lost
        } else {
            Link::None
        };
    }

    /// Hands the connection over, with whether it needs RSET.
    pub(super) fn take(&mut self) -> Option<(Upstream, bool)> {
        match std::mem::take(self) {
            Link::None | Link::Lost => None,
            Link::Clean(up) => Some((up, false)),
            Link::NeedsRset(up) => Some((up, true)),
        }
    }
}

/// The answer to every later command of a transaction whose upstream
/// connection failed earlier: the mail cannot reach the upstream now.
pub(super) fn transaction_lost() -> Reply {
    replies::upstream_failed()
}

/// What the client is told when the upstream failed it. The one place
/// this is decided: every command that talks to the upstream answers
/// through it.
///
/// A refusal the upstream aimed at the client itself (its answer to
/// XCLIENT) is that client's answer; any other failure is ours to retry
/// later, so the client gets a temporary `451 4.4.1` and keeps the mail.
pub(super) fn failure_reply(err: &UpstreamError) -> Reply {
    match err {
        UpstreamError::ClientRefused(reply) => reply.clone(),
        _ => replies::upstream_failed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::EnhancedCode;

    #[test]
    fn a_refusal_of_the_client_reaches_it_and_any_other_failure_is_451() {
        let refusal = Reply::new(550, EnhancedCode::new(5, 7, 1), "go away".to_string());
        assert_eq!(
            failure_reply(&UpstreamError::ClientRefused(refusal.clone())),
            refusal
        );
        for err in [
            UpstreamError::Closed,
            UpstreamError::Timeout("MAIL reply"),
            UpstreamError::Refused(refusal.clone()),
            UpstreamError::Auth(refusal),
            UpstreamError::TlsRequired("not offered".into()),
        ] {
            let reply = failure_reply(&err);
            assert_eq!(reply.code, 451, "{err}");
            assert_eq!(reply.enhanced, Some(EnhancedCode::new(4, 4, 1)), "{err}");
        }
    }

    #[test]
    fn a_new_link_has_no_connection() {
        let mut link = Link::default();
        assert!(!link.is_connected());
        assert!(!link.needs_rset());
        link.abandoned();
        assert!(!link.needs_rset(), "nothing to reset without a connection");
        assert!(link.take().is_none());
    }
}
