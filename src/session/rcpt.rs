//! RCPT TO (RFC 5321 §4.1.1.3): each recipient is forwarded to the upstream
//! and the client gets the upstream's own reply for it.

use super::transaction::Disposition;
use super::{replies, Flow, Pending, Session};
use crate::filter::{Stage, Verdict};
use crate::proto::{Param, Recipient, Reply};
use crate::stream::Stream;
use log::info;

impl<S: Stream> Session<S> {
    /// Answers RCPT TO. With an upstream that offers PIPELINING the command
    /// is queued and answered when the batch is resolved.
    pub(super) async fn rcpt(&mut self, to: Recipient, params: Vec<Param>) -> Flow {
        let in_flight = self
            .pending
            .iter()
            .filter(|p| matches!(p, Pending::Rcpt(_)))
            .count();
        let Some(tx) = self.tx.as_ref() else {
            return self.client_error(replies::bad_sequence("Error: need MAIL command"));
        };
        if let Some(param) = params.first() {
            return self.client_error(replies::unsupported_parameter(&param.keyword));
        }
        let authenticated = self.auth.is_some();
        if !self
            .shared
            .relay()
            .may_relay(&to, self.trusted, authenticated)
        {
            info!(
                "session {} peer={} relay denied: <{to}>",
                self.id, self.peer
            );
            let reply = replies::relay_denied(&to.to_string());
            self.record_rcpt(to, &reply);
            return self.client_error(reply);
        }
        if tx.rcpts.len() + in_flight >= self.shared.config.limits.max_recipients {
            return self.reply(replies::too_many_recipients());
        }
        if tx.upstream_failed {
            return self.reply(replies::upstream_failed());
        }
        match self
            .filters
            .run(Stage::Rcpt, &mut self.ctx, Some(&to), None)
        {
            Verdict::Reject(r) | Verdict::Tempfail(r) => {
                self.record_rcpt(to, &r);
                return self.reply(r);
            }
            Verdict::Disconnect(r) => {
                self.reply(r);
                return Flow::Stop;
            }
            Verdict::Discard => self.set_disposition(Disposition::Discard),
            Verdict::Quarantine => self.set_disposition(Disposition::Quarantine),
            Verdict::Continue | Verdict::Accept | Verdict::AcceptTransaction => {}
        }
        let relay = self.tx.as_ref().map(|t| t.disposition) == Some(Disposition::Relay);
        let cfg = match self.shared.config.upstream.as_ref() {
            Some(cfg) if relay => cfg,
            _ => {
                let reply = replies::recipient_ok();
                self.record_rcpt(to, &reply);
                return self.reply(reply);
            }
        };
        let pipelining = cfg.pipelining;
        let Some(up) = self.upstream.as_mut() else {
            return self.reply(replies::upstream_failed());
        };
        up.queue(&format!("RCPT TO:<{to}>"));
        if pipelining && up.extensions.pipelining {
            self.pending.push_back(Pending::Rcpt(to));
            return Flow::Continue;
        }
        let reply = match up.flush().await {
            Ok(()) => up.reply("RCPT reply").await,
            Err(e) => Err(e),
        };
        let reply = match reply {
            Ok(reply) => self.upstream_reply(reply),
            Err(e) => {
                self.upstream_lost(&e);
                replies::upstream_failed()
            }
        };
        self.record_rcpt(to, &reply);
        self.reply(reply)
    }

    /// Notes the answer a recipient got; a positive one joins the transaction.
    pub(super) fn record_rcpt(&mut self, to: Recipient, reply: &Reply) {
        if let Some(tx) = self.tx.as_mut() {
            if reply.is_positive() {
                tx.rcpts.push(to.clone());
                self.ctx.rcpts.push(to.clone());
            }
            tx.rcpt_replies.push((to, reply.clone()));
        }
    }

    /// A filter decided the whole transaction is discarded or quarantined:
    /// the upstream, if it holds part of it, must forget it.
    fn set_disposition(&mut self, disposition: Disposition) {
        if let Some(tx) = self.tx.as_mut() {
            if tx.disposition == Disposition::Relay
                && self.upstream.is_some()
                && self.shared.config.upstream.is_some()
            {
                self.upstream_dirty = true;
            }
            tx.disposition = disposition;
        }
    }
}
