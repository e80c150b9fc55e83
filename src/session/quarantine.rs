//! Holding a message in the quarantine: the sidecar the admin's tools
//! read, built from what the session knows, and the write off the async
//! threads. Every stage's quarantine (connect, helo, mail, rcpt, data, a
//! milter, DMARC, a scanner) ends here, at the end of DATA.

use super::transaction::{self, Transaction};
use super::Session;
use crate::audit::{facts_record, now};
use crate::body::Body;
use crate::quarantine::{
    Client, Envelope, Held, Quarantine, RcptEntry, RuleFired, Sidecar, TlsEntry, VERSION,
};
use crate::stream::Stream;
use std::io;
use std::path::PathBuf;

impl<S: Stream> Session<S> {
    /// The sidecar of `tx`, held on the word of `by`, `size` bytes stored.
    pub(super) fn quarantine_sidecar(
        &self,
        tx: &Transaction,
        by: Option<String>,
        size: u64,
    ) -> Sidecar {
        let ctx = &self.ctx;
        let quarantine_hit = ctx.hits.iter().rev().find(|h| h.action == "quarantine");
        let by = by
            .or_else(|| tx.decided_by.clone())
            .or_else(|| quarantine_hit.map(|h| h.rule.clone()));
        let stage = tx
            .held_at
            .or_else(|| quarantine_hit.map(|h| h.stage))
            .unwrap_or(crate::filter::Stage::Data);
        Sidecar {
            version: VERSION,
            id: tx.id.clone(),
            received: now(),
            envelope: Envelope {
                mail_from: transaction::sender(ctx),
                mail_params: ctx.mail_params.iter().map(|p| p.to_string()).collect(),
                rcpts: ctx
                    .rcpts
                    .iter()
                    .map(|r| {
                        let address = r.to_string();
                        let params = tx.rcpt_params.get(&address).cloned().unwrap_or_default();
                        RcptEntry { address, params }
                    })
                    .collect(),
            },
            client: Client {
                ip: self.peer.ip().to_string(),
                port: self.peer.port(),
                helo: self.greeting.helo.clone().or_else(|| ctx.helo.clone()),
                tls: ctx.tls.as_ref().map(|t| TlsEntry {
                    version: t.version.clone(),
                    cipher: t.cipher.clone(),
                }),
                auth_user: ctx.auth_user.clone(),
                session: self.id.clone(),
            },
            facts: facts_record(&ctx.facts)
                .into_iter()
                .map(|(k, v)| (k, serde_json::to_value(v).unwrap_or_default()))
                .collect(),
            rules: ctx
                .hits
                .iter()
                .map(|h| RuleFired {
                    name: h.rule.clone(),
                    stage: h.stage.name().to_string(),
                    verdict: h.action.clone(),
                })
                .collect(),
            held: Held {
                by,
                stage: stage.name().to_string(),
                reason: tx.held_reason.clone(),
            },
            size,
        }
    }
}

/// Stores the message with its sidecar in `dir` off the async threads
/// (the fsyncs block); returns the message's path.
pub(super) async fn store_blocking(
    dir: PathBuf,
    sidecar: Sidecar,
    prepend: Vec<u8>,
    body: &mut Body,
) -> io::Result<PathBuf> {
    let quarantine = Quarantine::new(dir);
    let mut owned = std::mem::replace(body, Body::new(0));
    let (result, returned) = async_std::task::spawn_blocking(move || {
        let result = quarantine.store(&sidecar, &prepend, &mut owned);
        (result, owned)
    })
    .await;
    *body = returned;
    result
}
