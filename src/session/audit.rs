//! The session's side of the audit trail: timing the filter chain, and
//! turning what the session and its context know into one record per
//! transaction, or one per session that had none.
//!
//! Every record is built here and handed to [`crate::audit::AuditLog`];
//! the command handlers only say how a transaction ended.

use super::transaction::{Disposition, Transaction};
use super::Session;
use crate::audit::{
    facts_record, now, ClientRecord, Durations, HitRecord, RcptRecord, SessionRecord, TlsRecord,
    TransactionRecord,
};
use crate::filter::{Message, Stage, Verdict};
use crate::proto::{Recipient, Reply};
use crate::stream::Stream;
use std::time::{Duration, Instant};

/// Who answered when it was not a rule: the upstream server.
pub(super) const BY_UPSTREAM: &str = "upstream";
/// Who answered when it was not a rule: smtpgate itself (spool, limits,
/// upstream failures).
pub(super) const BY_GATEWAY: &str = "gateway";

/// How a transaction ended, for its record.
pub(super) struct TxEnd {
    /// `delivered`, `discarded`, `quarantined`, `rejected`, `tempfailed`,
    /// `disconnected` or `aborted`.
    pub verdict: &'static str,
    /// The stage at which it ended.
    pub stage: Stage,
    /// The final reply the client got.
    pub reply: Option<Reply>,
    /// Who decided.
    pub decided_by: Option<String>,
    /// Message size, when DATA was received.
    pub size: Option<u64>,
    /// Time spent delivering, when the message was delivered.
    pub delivery: Option<Duration>,
}

impl TxEnd {
    /// A transaction refused (4xx or 5xx) at `stage` with `reply`.
    pub(super) fn refused(stage: Stage, reply: &Reply, by: Option<String>) -> TxEnd {
        TxEnd {
            verdict: refusal_verdict(reply),
            stage,
            reply: Some(reply.clone()),
            decided_by: by,
            size: None,
            delivery: None,
        }
    }

    /// A transaction ended by a rule's `disconnect`.
    pub(super) fn disconnected(stage: Stage, reply: &Reply, by: Option<String>) -> TxEnd {
        TxEnd {
            verdict: "disconnected",
            ..TxEnd::refused(stage, reply, by)
        }
    }
}

/// `tempfailed` for a 4xx reply, `rejected` otherwise.
pub(super) fn refusal_verdict(reply: &Reply) -> &'static str {
    if reply.is_transient() {
        "tempfailed"
    } else {
        "rejected"
    }
}

/// The verdict of a transaction that reached the end of DATA.
pub(super) fn data_verdict(reply: &Reply, disposition: Disposition) -> &'static str {
    if !reply.is_positive() {
        return refusal_verdict(reply);
    }
    match disposition {
        Disposition::Relay => "delivered",
        Disposition::Discard => "discarded",
        Disposition::Quarantine => "quarantined",
    }
}

impl<S: Stream> Session<S> {
    /// Runs the filter chain at `stage`, timing it for the audit record.
    pub(super) fn run_filters(
        &mut self,
        stage: Stage,
        rcpt: Option<&Recipient>,
        message: Option<&mut Message<'_>>,
    ) -> Verdict {
        if stage == Stage::Mail {
            self.tx_rules_time = Duration::ZERO;
        }
        let started = Instant::now();
        let before = self.ctx.hits.len();
        let verdict = self.pipeline.chain.run(stage, &mut self.ctx, rcpt, message);
        self.tx_rules_time += started.elapsed();
        for hit in self.ctx.hits.get(before..).unwrap_or_default() {
            self.shared.metrics().rule_hit(&hit.rule, &hit.action);
        }
        verdict
    }

    /// Runs the checks planned for `stage` whose facts are not known yet
    /// (none, at no cost, when no rule reads a fact); `Some` when a failed
    /// check's policy refuses the stage for now. `message` is the whole
    /// message at the data stage.
    pub(super) async fn run_checks(
        &mut self,
        stage: Stage,
        message: Option<&[u8]>,
    ) -> Option<Verdict> {
        if self.pipeline.plan.at(stage).is_empty()
            || self.ctx.accepted_session
            || (self.ctx.accepted_transaction && stage.in_transaction())
        {
            return None;
        }
        let pipeline = self.pipeline.clone();
        let refusal = crate::checks::run_stage(
            &pipeline.plan,
            stage,
            &mut self.ctx,
            message,
            self.shared.fixtures(),
            self.shared.metrics(),
        )
        .await;
        refusal.map(Verdict::Tempfail)
    }

    /// The whole message, read into memory only when a data-stage check
    /// runs. A body that cannot be read back gives `None`: the checks then
    /// fail (`temperror`), they do not pass.
    pub(super) fn message_for_checks(&self, body: &mut crate::body::Body) -> Option<Vec<u8>> {
        if self.pipeline.plan.at(Stage::Data).is_empty() {
            return None;
        }
        match body.to_vec() {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                log::error!(
                    "session {} cannot read the message back for checks: {e}",
                    self.id
                );
                None
            }
        }
    }

    /// A stage without a message: its checks, then its filters.
    pub(super) async fn stage_verdict(
        &mut self,
        stage: Stage,
        rcpt: Option<&Recipient>,
    ) -> Verdict {
        // Boxed: the milter conversation is a large future, and rarely used.
        if !self.shared.config.milters.is_empty() {
            if let Some(decided) = Box::pin(self.milter_stage(stage, rcpt)).await {
                return decided;
            }
        }
        if let Some(refused) = self.run_checks(stage, None).await {
            return refused;
        }
        let verdict = self.run_filters(stage, rcpt, None);
        let (verdict, passes) = self.greylisting(stage, verdict, rcpt).await;
        if let Some(tx) = self.tx.as_mut() {
            tx.greylist_passes += passes;
        }
        verdict
    }

    /// Remembers a refusal outside any transaction (connect, helo), for the
    /// session record.
    pub(super) fn note_refusal(&mut self, reply: &Reply) {
        let by = self
            .ctx
            .decided_by
            .clone()
            .unwrap_or_else(|| BY_GATEWAY.to_string());
        self.refusal = Some((reply.clone(), by));
    }

    /// Writes the record of a transaction abandoned before its end (RSET,
    /// EHLO, QUIT or a lost client).
    pub(super) fn audit_aborted(&mut self, tx: &Transaction) {
        let stage = if tx.rcpt_replies.is_empty() {
            Stage::Mail
        } else {
            Stage::Rcpt
        };
        self.audit_transaction(
            tx,
            TxEnd {
                verdict: "aborted",
                stage,
                reply: None,
                decided_by: None,
                size: None,
                delivery: None,
            },
        );
    }

    /// Writes the record of a transaction; call before the context's
    /// transaction part is reset.
    pub(super) fn audit_transaction(&mut self, tx: &Transaction, end: TxEnd) {
        self.audit_records += 1;
        self.count_transaction(tx, &end);
        let Some(log) = self.shared.audit() else {
            return;
        };
        let ctx = &self.ctx;
        let record = TransactionRecord {
            kind: "transaction",
            time: now(),
            session: self.id.clone(),
            transaction: tx.id.clone(),
            client: ClientRecord::from(self.peer),
            helo: ctx.helo.clone(),
            tls: ctx.tls.as_ref().map(TlsRecord::from),
            auth_user: ctx.auth_user.clone(),
            mail_from: super::transaction::sender(ctx),
            mail_params: ctx.mail_params.iter().map(|p| p.to_string()).collect(),
            rcpts: tx
                .rcpt_replies
                .iter()
                .map(|(r, reply, by)| RcptRecord {
                    address: r.to_string(),
                    reply: reply.to_string(),
                    by: by.clone(),
                })
                .collect(),
            size: end.size,
            message_id: tx.message_id.clone(),
            subject: tx.subject.clone(),
            score: ctx.score,
            rules: ctx.hits.iter().map(HitRecord::from).collect(),
            verdict: end.verdict,
            stage: end.stage.name(),
            reply: end.reply.as_ref().map(|r| r.to_string()),
            decided_by: end.decided_by,
            upstream_reply: tx.upstream_reply.as_ref().map(|r| r.to_string()),
            facts: facts_record(&ctx.facts),
            checks: ctx.checks.clone(),
            durations_ms: Durations {
                total: ms(tx.started.elapsed()),
                rules: ms(self.tx_rules_time),
                delivery: end.delivery.map(ms),
            },
            tarpit_ms: self.tarpit_ms(),
        };
        log.write(&record);
    }

    /// Writes the session record, when the session had no transaction.
    pub(super) fn audit_session(&mut self, end: &str) {
        if self.audit_records > 0 {
            return;
        }
        let Some(log) = self.shared.audit() else {
            return;
        };
        let ctx = &self.ctx;
        let record = SessionRecord {
            kind: "session",
            time: now(),
            session: self.id.clone(),
            client: ClientRecord::from(self.peer),
            helo: self.greeting.helo.clone().or_else(|| ctx.helo.clone()),
            tls: ctx.tls.as_ref().map(TlsRecord::from),
            auth_user: ctx.auth_user.clone(),
            auth_failures: self.auth_failures,
            rules: ctx.hits.iter().map(HitRecord::from).collect(),
            facts: facts_record(&ctx.facts),
            checks: ctx.checks.clone(),
            end: end.to_string(),
            reply: self.refusal.as_ref().map(|(r, _)| r.to_string()),
            decided_by: self.refusal.as_ref().map(|(_, by)| by.clone()),
            duration_ms: ms(self.started.elapsed()),
            tarpit_ms: self.tarpit_ms(),
        };
        log.write(&record);
    }
}

impl<S: Stream> Session<S> {
    /// The tarpit's delay so far, for records; `None` when there was none.
    fn tarpit_ms(&self) -> Option<f64> {
        let d = self.protect.delayed;
        (!d.is_zero()).then(|| ms(d))
    }

    /// The metrics of a finished transaction: its verdict, its bytes and
    /// how long the upstream took for its DATA.
    fn count_transaction(&self, tx: &Transaction, end: &TxEnd) {
        let m = self.shared.metrics();
        m.transaction(end.verdict);
        if let Some(size) = end.size {
            m.message_bytes("received", size);
            if end.verdict == "delivered" {
                m.message_bytes("delivered", size);
            }
        }
        if let (Some(took), Some(_)) = (end.delivery, &tx.upstream_reply) {
            m.upstream_latency("data", took);
        }
    }
}

/// A duration in milliseconds, to the microsecond.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}
