//! RSET (RFC 5321 §4.1.1.5); the other small commands are answered inline.

use super::{replies, Flow, Session};
use crate::stream::Stream;
use log::debug;

impl<S: Stream> Session<S> {
    /// Aborts the transaction here and at the upstream.
    pub(super) async fn rset(&mut self) -> Flow {
        // A RCPT after RSET was not pipelined behind the refused MAIL.
        self.excused_503s = 0;
        let had_tx = match self.tx.take() {
            Some(tx) => {
                self.audit_aborted(&tx);
                true
            }
            None => false,
        };
        // The envelope goes too (RFC 5321 §4.1.1.5), and with it what the
        // transaction's rules had added.
        self.ctx.reset_transaction();
        if had_tx || self.upstream.needs_rset() {
            let answer = match self.upstream.get() {
                Some(up) => Some(up.command("RSET", "RSET reply").await),
                None => None,
            };
            match answer {
                Some(Ok(reply)) if reply.is_positive() => self.upstream.settled(),
                Some(Ok(reply)) => {
                    debug!("session {} upstream RSET answered {reply}", self.id);
                    self.upstream.abandoned();
                }
                Some(Err(e)) => self.upstream_lost(&e),
                None => {}
            }
        }
        self.reply(replies::ok())
    }
}
