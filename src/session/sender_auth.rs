//! Sender authentication at the end of DATA, once the checks ran: the
//! `Authentication-Results` header (ours replaces any that claims our
//! authserv-id) and, with `sender_auth.dmarc: enforce`, the From domain's
//! DMARC policy applied.

use super::transaction::Transaction;
use super::Session;
use crate::authres;
use crate::body::Body;
use crate::checks::dmarc::Enforcement;
use crate::config::DmarcMode;
use crate::proto::Reply;
use crate::stream::Stream;
use log::error;

/// What sender authentication does to a message by itself.
pub(super) enum Enforced {
    /// Nothing: the rules decide.
    Nothing,
    /// Refused (DMARC `p=reject`, or the message could not be rewritten).
    Refuse(Reply),
    /// Quarantined unless a rule refuses it (DMARC `p=quarantine`).
    Quarantine,
}

impl<S: Stream> Session<S> {
    /// Writes our `Authentication-Results` header into `tx` from the
    /// facts, after removing from `body` every such header carrying our
    /// authserv-id; `whole` is the message as the checks read it. Nothing
    /// at all when `sender_auth:` is not configured.
    pub(super) fn sender_auth(
        &mut self,
        tx: &mut Transaction,
        body: &mut Body,
        whole: Option<&[u8]>,
    ) -> Enforced {
        let Some(options) = &self.shared.config.sender_auth else {
            return Enforced::Nothing;
        };
        let id = options
            .authserv_id
            .clone()
            .unwrap_or_else(|| self.shared.config.hostname.clone());
        let Some(whole) = whole else {
            // A forged header could not be looked for: do not pass it on.
            error!(
                "tx {} cannot be read back for Authentication-Results",
                tx.id
            );
            return Enforced::Refuse(super::replies::local_error());
        };
        if let Some(clean) = authres::strip_ours(whole, &id) {
            let mut fresh = Body::new(self.shared.config.limits.spill_threshold_bytes);
            if let Err(e) = fresh.append(&clean) {
                error!("tx {} cannot rewrite its headers: {e}", tx.id);
                return Enforced::Refuse(super::replies::local_error());
            }
            log::info!(
                "tx {} had Authentication-Results claiming {id}: removed",
                tx.id
            );
            *body = fresh;
        }
        let env = authres::Envelope {
            ip: self.ctx.client.ip().to_canonical(),
            helo: self.ctx.helo.as_deref(),
            mail_from: match &self.ctx.mail_from {
                Some(Some(m)) => Some(m.to_string()),
                _ => None,
            },
        };
        tx.auth_results = Some(authres::header(&id, &self.ctx.facts, &env));
        if options.dmarc != DmarcMode::Enforce {
            return Enforced::Nothing;
        }
        match crate::checks::dmarc::enforcement(&self.ctx.facts) {
            Some(Enforcement::Reject(reply)) => {
                self.ctx.decided_by = Some("dmarc".to_string());
                Enforced::Refuse(reply)
            }
            Some(Enforcement::Quarantine) => Enforced::Quarantine,
            None => Enforced::Nothing,
        }
    }
}
