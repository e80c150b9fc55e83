//! RCPT TO (RFC 5321 §4.1.1.3): each recipient is forwarded to the upstream
//! and the client gets the upstream's own reply for it.

use super::audit::{TxEnd, BY_GATEWAY, BY_UPSTREAM};
use super::transaction::Disposition;
use super::{link, replies, Flow, Pending, Session};
use crate::filter::{Outcome, Stage};
use crate::proto::{dsn, Param, Recipient, Reply};
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
            return self.no_transaction();
        };
        for param in &params {
            let value = param.value.as_deref().unwrap_or("");
            let valid = match param.keyword.as_str() {
                "NOTIFY" if self.greeting.dsn => dsn::is_notify(value),
                "ORCPT" if self.greeting.dsn => dsn::is_orcpt(value),
                other => return self.client_error(replies::unsupported_parameter(other)),
            };
            if !valid {
                return self.client_error(replies::bad_parameter("Bad DSN parameter"));
            }
        }
        let authenticated = self.greeting.auth.is_some();
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
            self.record_rcpt(to, &reply, BY_GATEWAY);
            return self.client_error(reply);
        }
        if self.ctx.rcpts.len() + in_flight >= self.shared.config.limits.max_recipients {
            let reply = replies::too_many_recipients();
            self.record_rcpt(to, &reply, BY_GATEWAY);
            return self.reply(reply);
        }
        if tx.upstream_failed {
            let reply = link::transaction_lost();
            self.record_rcpt(to, &reply, BY_GATEWAY);
            return self.reply(reply);
        }
        if let Some(flow) = self.rcpt_limits(&to).await {
            return flow;
        }
        if let Some(tx) = self.tx.as_mut() {
            let wire = params.iter().map(|p| p.to_string()).collect();
            tx.rcpt_params.insert(to.to_string(), wire);
        }
        match self.stage_verdict(Stage::Rcpt, Some(&to)).await.outcome() {
            Outcome::Refuse(r) => {
                let by = self.ctx.decided_by.clone().unwrap_or_default();
                self.record_rcpt(to, &r, &by);
                return self.reply(r);
            }
            Outcome::Close(r) => {
                let by = self.ctx.decided_by.clone();
                self.record_rcpt(to, &r, by.as_deref().unwrap_or_default());
                if let Some(tx) = self.tx.take() {
                    self.audit_transaction(&tx, TxEnd::disconnected(Stage::Rcpt, &r, by));
                }
                self.reply(r);
                return Flow::Stop;
            }
            Outcome::Discard => self.set_disposition(Disposition::Discard),
            Outcome::Quarantine => self.set_disposition(Disposition::Quarantine),
            Outcome::Proceed => {}
        }
        let relay = self.tx.as_ref().map(|t| t.disposition) == Some(Disposition::Relay);
        let cfg = match self.shared.config.upstream.as_ref() {
            Some(cfg) if relay => cfg,
            _ => {
                let reply = replies::recipient_ok();
                self.record_rcpt(to, &reply, BY_GATEWAY);
                return self.reply(reply);
            }
        };
        let pipelining = cfg.pipelining;
        let Some(up) = self.upstream.get() else {
            let reply = link::transaction_lost();
            self.record_rcpt(to, &reply, BY_GATEWAY);
            return self.reply(reply);
        };
        if !params.is_empty() && !up.extensions.dsn {
            // Failover reached a server without the DSN EHLO promised.
            let reply = replies::extension_unavailable("DSN");
            self.record_rcpt(to, &reply, BY_GATEWAY);
            return self.reply(reply);
        }
        let dsn: String = params.iter().map(|p| format!(" {p}")).collect();
        up.queue(&format!("RCPT TO:<{to}>{dsn}"));
        if pipelining && up.extensions.pipelining {
            self.pending.push_back(Pending::Rcpt(to));
            return Flow::Continue;
        }
        let reply = match up.flush().await {
            Ok(()) => up.reply("RCPT reply").await,
            Err(e) => Err(e),
        };
        let (reply, by) = match reply {
            Ok(reply) => (self.upstream_reply(reply), BY_UPSTREAM),
            Err(e) => {
                self.upstream_lost(&e);
                (link::failure_reply(&e), BY_GATEWAY)
            }
        };
        self.record_rcpt(to, &reply, by);
        self.reply(reply)
    }

    /// Notes the answer a recipient got and who gave it (a rule's name,
    /// `upstream` or `gateway`); a positive one joins the transaction.
    pub(super) fn record_rcpt(&mut self, to: Recipient, reply: &Reply, by: &str) {
        if let Some(tx) = self.tx.as_mut() {
            if reply.is_positive() {
                self.ctx.rcpts.push(to.clone());
            }
            tx.rcpt_replies.push((to, reply.clone(), by.to_string()));
        }
    }

    /// A filter decided the whole transaction is discarded or quarantined:
    /// the upstream, if it holds part of it, must forget it.
    fn set_disposition(&mut self, disposition: Disposition) {
        if let Some(tx) = self.tx.as_mut() {
            if tx.disposition == Disposition::Relay && self.shared.config.upstream.is_some() {
                self.upstream.abandoned();
            }
            tx.disposition = disposition;
            tx.decided_by.clone_from(&self.ctx.decided_by);
            tx.held_at = Some(Stage::Rcpt);
        }
    }
}
