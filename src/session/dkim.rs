//! DKIM signing on the way out: after the data-stage rules (so the header
//! fields they add are signed when listed), a message of an authenticated
//! client or a signing network gets the signature of its From domain.
//!
//! A message that cannot be signed is relayed unsigned, with an error
//! logged and `smtpgate_dkim_sign_failures_total` counted: it is never
//! lost, and a tempfail would not help, since a key that loaded and then
//! fails fails again on the retry.

use super::Session;
use crate::body::Body;
use crate::dkim::Signed;
use crate::stream::Stream;
use log::{debug, error};

impl<S: Stream> Session<S> {
    /// `prepend` with the DKIM-Signature fields in front, when this
    /// message is one the gateway signs.
    pub(super) async fn dkim_sign(
        &mut self,
        tx_id: &str,
        prepend: Vec<u8>,
        body: &mut Body,
    ) -> Vec<u8> {
        let Some(signer) = self.shared.dkim() else {
            return prepend;
        };
        if !signer.signs_for(self.ctx.auth_user.is_some(), self.ctx.client.ip()) {
            return prepend;
        }
        let message = match body.to_vec() {
            Ok(m) => m,
            Err(e) => {
                error!("tx {tx_id}: cannot read the message back to sign it, relaying it unsigned: {e}");
                self.shared.metrics().dkim.failed("unknown");
                return prepend;
            }
        };
        let keys = signer.keys();
        // Hashing a large body and the RSA operation are CPU work: off the
        // async threads.
        let (signed, prepend) = async_std::task::spawn_blocking(move || {
            let signed = keys.sign(&[&prepend, &message]);
            (signed, prepend)
        })
        .await;
        let metrics = &self.shared.metrics().dkim;
        match signed {
            Signed::Fields { header, domain } => {
                debug!("tx {tx_id}: DKIM-signed for {domain}");
                metrics.signed(&domain);
                [header, prepend].concat()
            }
            Signed::Unsigned(reason) => {
                debug!("tx {tx_id}: not DKIM-signed: {reason}");
                metrics.unsigned(reason);
                prepend
            }
            Signed::Failed { domain, error } => {
                error!(
                    "tx {tx_id}: DKIM signing for {domain} failed, relaying it unsigned: {error}"
                );
                metrics.failed(&domain);
                prepend
            }
        }
    }
}
