//! The session's side of the milters: the transaction's milter
//! connections are opened at MAIL, told of each RCPT and given the
//! message at the end of DATA; their verdicts become `milter.NAME` facts
//! (so rules and the audit see them), their refusals the client's reply,
//! and their changes the message and envelope that are relayed.

use super::transaction::{Disposition, Transaction};
use super::Session;
use crate::body::Body;
use crate::facts::{Scope, Value};
use crate::filter::{Stage, Verdict};
use crate::milter::{self, Decision, EnvelopeChanges, Info};
use crate::proto::{parse_path, Path, Recipient, Reply};
use crate::stream::Stream;
use log::{info, warn};

/// Who decided, in logs and the audit: `milter:NAME`.
fn by(name: &str) -> String {
    format!("milter:{name}")
}

impl<S: Stream> Session<S> {
    /// What milters are told about the client and transaction.
    fn milter_info(&self) -> Info {
        Info {
            client: Some(self.peer),
            client_name: None,
            helo: self.greeting.helo.clone(),
            auth_user: self.ctx.auth_user.clone(),
            hostname: self.shared.config.hostname.clone(),
            queue_id: format!("{}.{}", self.id, self.tx_seq),
            tls_version: self.ctx.tls.as_ref().map(|t| t.version.clone()),
        }
    }

    /// Runs the milters' MAIL or RCPT step; `Some` when one of them
    /// refuses, discards or quarantines.
    pub(super) async fn milter_stage(
        &mut self,
        stage: Stage,
        rcpt: Option<&Recipient>,
    ) -> Option<Verdict> {
        if self.shared.config.milters.is_empty() {
            return None;
        }
        let info = self.milter_info();
        let decision = match stage {
            Stage::Mail => {
                if let Some(old) = self.milters.take() {
                    self.finish_milters(old, true);
                }
                let sender = super::transaction::sender(&self.ctx);
                let params: Vec<String> =
                    self.ctx.mail_params.iter().map(|p| p.to_string()).collect();
                let (tx, d) = milter::Transaction::begin(
                    &self.shared.config.milters,
                    &info,
                    &sender,
                    &params,
                )
                .await;
                self.milters = Some(tx);
                d
            }
            Stage::Rcpt => {
                let (Some(tx), Some(rcpt)) = (self.milters.as_mut(), rcpt) else {
                    return None;
                };
                tx.rcpt(&info, &rcpt.to_string(), &[]).await
            }
            _ => return None,
        };
        self.milter_facts();
        self.milter_verdict(decision)
    }

    /// Counts each milter's verdict and lets the connections go.
    fn finish_milters(&self, milters: milter::Transaction, aborted: bool) {
        let metrics = &self.shared.metrics().milter;
        for (name, verdict) in milters.verdicts() {
            metrics.verdict(&name, verdict);
        }
        milters.finish(aborted);
    }

    /// Records every milter's verdict as a fact.
    fn milter_facts(&mut self) {
        let Some(tx) = self.milters.as_ref() else {
            return;
        };
        for (name, verdict) in tx.verdicts() {
            self.ctx.facts.set(
                format!("milter.{name}"),
                Value::text(verdict),
                Scope::Transaction,
            );
        }
    }

    /// A milter decision as a verdict, noting which milter gave it.
    fn milter_verdict(&mut self, decision: Decision) -> Option<Verdict> {
        let verdict = match decision {
            Decision::Continue => return None,
            Decision::Refuse(r) if r.is_transient() => Verdict::Tempfail(r),
            Decision::Refuse(r) => Verdict::Reject(r),
            Decision::Discard => Verdict::Discard,
            Decision::Quarantine(reason) => {
                info!("session {} milter quarantine: {reason}", self.id);
                Verdict::Quarantine
            }
        };
        let name = self.milters.as_ref().and_then(|m| m.decided_by());
        self.ctx.decided_by = name.map(by);
        Some(verdict)
    }

    /// The end of DATA for the milters: the message goes through each,
    /// and `body` and the envelope become what they made of it. `Some`
    /// when one refuses, discards or quarantines the message.
    pub(super) async fn milter_message(
        &mut self,
        tx: &mut Transaction,
        body: &mut Body,
    ) -> Option<Verdict> {
        let mut milters = self.milters.take()?;
        let message = match body.to_vec() {
            Ok(m) => m,
            Err(e) => {
                warn!(
                    "tx {} cannot read the message back for the milters: {e}",
                    tx.id
                );
                self.finish_milters(milters, true);
                return Some(Verdict::Tempfail(super::replies::local_error()));
            }
        };
        let info = self.milter_info();
        let outcome = milters.message(&info, &message).await;
        self.milters = Some(milters);
        self.milter_facts();
        if let Decision::Quarantine(reason) = &outcome.decision {
            tx.held_reason = Some(reason.clone());
        }
        let verdict = self.milter_verdict(outcome.decision);
        if let Some(milters) = self.milters.take() {
            self.finish_milters(milters, false);
        }
        if verdict.is_some() {
            return verdict;
        }
        if let Some(changed) = outcome.message {
            let mut fresh = Body::new(self.shared.config.limits.spill_threshold_bytes);
            if let Err(e) = fresh.append(&changed) {
                warn!("tx {} cannot buffer the milters' message: {e}", tx.id);
                return Some(Verdict::Tempfail(super::replies::local_error()));
            }
            *body = fresh;
        }
        if outcome.envelope.any() {
            return self.milter_envelope(tx, outcome.envelope).await;
        }
        None
    }

    /// Applies the milters' sender and recipient changes; an upstream
    /// that already holds the envelope gets it again after RSET.
    async fn milter_envelope(
        &mut self,
        tx: &mut Transaction,
        changes: EnvelopeChanges,
    ) -> Option<Verdict> {
        if let Some((from, _args)) = &changes.from {
            match parse_path(&bracket(from), true) {
                Ok((Path::Null, _)) => self.ctx.mail_from = Some(None),
                Ok((Path::Mailbox(m), _)) => self.ctx.mail_from = Some(Some(m)),
                _ => warn!(
                    "tx {}: milter sender {from:?} is not an address, ignored",
                    tx.id
                ),
            }
        }
        for del in &changes.del_rcpts {
            let del = del.trim_matches(['<', '>']);
            self.ctx
                .rcpts
                .retain(|r| !r.to_string().eq_ignore_ascii_case(del));
        }
        for add in &changes.add_rcpts {
            match parse_path(&bracket(add), true) {
                Ok((Path::Mailbox(m), _)) => self.ctx.rcpts.push(Recipient::Mailbox(m)),
                Ok((Path::Postmaster, _)) => self.ctx.rcpts.push(Recipient::Postmaster),
                _ => warn!(
                    "tx {}: milter recipient {add:?} is not an address, ignored",
                    tx.id
                ),
            }
        }
        if self.ctx.rcpts.is_empty() {
            // Nobody left to deliver to: as Postfix, the message is gone.
            return Some(Verdict::Discard);
        }
        if tx.disposition != Disposition::Relay || self.shared.config.upstream.is_none() {
            return None;
        }
        self.resend_envelope().await.err().map(Verdict::Tempfail)
    }

    /// RSET, MAIL and every RCPT again on the upstream connection.
    async fn resend_envelope(&mut self) -> Result<(), Reply> {
        let rcpts = self.ctx.rcpts.clone();
        let Some(up) = self.upstream.get() else {
            return Err(super::link::transaction_lost());
        };
        let line = super::mail::mail_line(&self.ctx, &up.extensions);
        let lost = |e: crate::upstream::UpstreamError| {
            warn!("upstream failed while resending the envelope: {e}");
            super::link::failure_reply(&e)
        };
        up.command("RSET", "RSET reply").await.map_err(lost)?;
        let reply = up.command(&line, "MAIL reply").await.map_err(lost)?;
        if !reply.is_positive() {
            return Err(tempfail_for(reply));
        }
        let mut accepted = 0;
        for r in &rcpts {
            let reply = up
                .command(&format!("RCPT TO:<{r}>"), "RCPT reply")
                .await
                .map_err(lost)?;
            if reply.is_positive() {
                accepted += 1;
            } else {
                warn!("upstream refused milter recipient <{r}>: {reply}");
            }
        }
        if accepted == 0 {
            return Err(tempfail_for(Reply::plain(451, "no recipient accepted")));
        }
        Ok(())
    }
}

/// `<address>` for the path parser.
fn bracket(address: &str) -> String {
    let a = address.trim();
    if a.starts_with('<') {
        a.to_string()
    } else {
        format!("<{a}>")
    }
}

/// The upstream refused the changed envelope: the client may retry.
fn tempfail_for(reply: Reply) -> Reply {
    warn!("upstream refused the milters' envelope: {reply}");
    Reply::new(
        451,
        crate::proto::EnhancedCode::new(4, 3, 0),
        "Envelope change not accepted upstream, try again later",
    )
}
