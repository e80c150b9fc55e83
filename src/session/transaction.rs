//! The state of one mail transaction, from MAIL to the end of DATA.

use crate::proto::{Mailbox, Param, Recipient, Reply};
use std::time::Instant;

/// Where an accepted message goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// Relayed upstream (or spooled when there is no upstream).
    #[default]
    Relay,
    /// Answered 250 and dropped, by a filter's `discard`.
    Discard,
    /// Answered 250 and stored in the quarantine directory, by a filter's `quarantine`.
    Quarantine,
}

impl Disposition {
    /// The word in the transaction's log line: where the message went
    /// (`relay` to the upstream, `spool` without one, `discard`,
    /// `quarantine`).
    pub(crate) fn log_name(self, spool_mode: bool) -> &'static str {
        match self {
            Disposition::Relay if spool_mode => "spool",
            Disposition::Relay => "relay",
            Disposition::Discard => "discard",
            Disposition::Quarantine => "quarantine",
        }
    }
}

/// One mail transaction in progress.
pub(crate) struct Transaction {
    /// Transaction id: the session id and a sequence number; names the spool file.
    pub(crate) id: String,
    /// The reverse path; `None` is the null sender `<>`.
    pub(crate) from: Option<Mailbox>,
    /// SIZE= declared at MAIL, passed on to an upstream that supports SIZE.
    pub(crate) declared_size: Option<u64>,
    /// BODY=8BITMIME was given.
    pub(crate) eightbit: bool,
    /// Recipients that were accepted (by the upstream, or locally in spool mode).
    pub(crate) rcpts: Vec<Recipient>,
    /// Every RCPT with the reply the client got and who gave it (a rule's
    /// name, `upstream` or `gateway`), for the transaction log and audit.
    pub(crate) rcpt_replies: Vec<(Recipient, Reply, String)>,
    /// The upstream connection broke during this transaction: it cannot be delivered.
    pub(crate) upstream_failed: bool,
    /// When MAIL was accepted.
    pub(crate) started: Instant,
    /// Where the message goes if it is accepted.
    pub(crate) disposition: Disposition,
    /// The rule that set a discard or quarantine disposition, for the audit.
    pub(crate) decided_by: Option<String>,
    /// MAIL parameters as given, for the audit record.
    pub(crate) params: Vec<Param>,
    /// The message's `Message-ID` (truncated), for the audit record.
    pub(crate) message_id: Option<String>,
    /// The message's decoded `Subject` (truncated), for the audit record.
    pub(crate) subject: Option<String>,
    /// The upstream's reply to the end of DATA, for the audit record.
    pub(crate) upstream_reply: Option<Reply>,
    /// Our `Authentication-Results` header, once the data-stage checks ran.
    pub(crate) auth_results: Option<String>,
}

impl Transaction {
    /// A transaction that starts with MAIL FROM `from`.
    pub(crate) fn new(
        id: String,
        from: Option<Mailbox>,
        declared_size: Option<u64>,
        eightbit: bool,
    ) -> Self {
        Transaction {
            id,
            from,
            declared_size,
            eightbit,
            rcpts: Vec::new(),
            rcpt_replies: Vec::new(),
            upstream_failed: false,
            started: Instant::now(),
            disposition: Disposition::Relay,
            decided_by: None,
            params: Vec::new(),
            message_id: None,
            subject: None,
            upstream_reply: None,
            auth_results: None,
        }
    }

    /// The sender for logs and headers: `<>` for the null sender.
    pub(crate) fn sender(&self) -> String {
        match &self.from {
            Some(m) => m.to_string(),
            None => String::new(),
        }
    }

    /// Recipients with their reply codes, for the transaction log line.
    pub(crate) fn rcpt_summary(&self) -> String {
        let parts: Vec<String> = self
            .rcpt_replies
            .iter()
            .map(|(r, reply, _)| format!("<{r}>:{}", reply.code))
            .collect();
        parts.join(",")
    }
}
