//! The state of one mail transaction, from MAIL to the end of DATA.
//!
//! The envelope itself (sender, MAIL parameters, accepted recipients)
//! lives in one place, the filter [`Context`], where rules read it; a
//! [`Transaction`] holds only what the session needs beside it.

use crate::filter::Context;
use crate::proto::{Param, Recipient, Reply};
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
    /// The message's `Message-ID` (truncated), for the audit record.
    pub(crate) message_id: Option<String>,
    /// The message's decoded `Subject` (truncated), for the audit record.
    pub(crate) subject: Option<String>,
    /// The upstream's reply to the end of DATA, for the audit record.
    pub(crate) upstream_reply: Option<Reply>,
    /// Greylisting triplets that passed for the first time in this
    /// transaction: they count towards auto-allowlisting once delivered.
    pub(crate) greylist_passes: u32,
    /// Our `Authentication-Results` header, once the data-stage checks ran.
    pub(crate) auth_results: Option<String>,
    /// Each recipient's RCPT parameters in their wire form, by address,
    /// for the quarantine's sidecar (a release sends them again).
    pub(crate) rcpt_params: std::collections::HashMap<String, Vec<String>>,
    /// The stage whose verdict quarantined the transaction, when it was
    /// one of the transaction's own (mail, rcpt, data).
    pub(crate) held_at: Option<crate::filter::Stage>,
    /// The reason a milter gave with its quarantine, for the sidecar.
    pub(crate) held_reason: Option<String>,
}

impl Transaction {
    /// A transaction with id `id`, its envelope in the context.
    pub(crate) fn new(id: String) -> Self {
        Transaction {
            id,
            rcpt_replies: Vec::new(),
            upstream_failed: false,
            started: Instant::now(),
            disposition: Disposition::Relay,
            decided_by: None,
            message_id: None,
            subject: None,
            upstream_reply: None,
            greylist_passes: 0,
            auth_results: None,
            rcpt_params: std::collections::HashMap::new(),
            held_at: None,
            held_reason: None,
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

/// The reverse path in `ctx`, for logs, headers and the upstream's MAIL:
/// empty for the null sender `<>`.
pub(crate) fn sender(ctx: &Context) -> String {
    match &ctx.mail_from {
        Some(Some(m)) => m.to_string(),
        _ => String::new(),
    }
}

/// True when the MAIL parameters say BODY=8BITMIME (RFC 6152).
pub(crate) fn eightbit(params: &[Param]) -> bool {
    params.iter().any(|p| {
        p.keyword == "BODY"
            && p.value
                .as_deref()
                .is_some_and(|v| v.eq_ignore_ascii_case("8BITMIME"))
    })
}

/// The MAIL parameters ask for SMTPUTF8 (RFC 6531 §3.4).
pub(crate) fn smtputf8(params: &[Param]) -> bool {
    params.iter().any(|p| p.keyword == "SMTPUTF8")
}
