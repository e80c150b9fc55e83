//! The ARC check (RFC 8617): the message's chain of ARC sets verified.
//!
//! Facts, at the data stage: `arc` is the chain's result, `pass`, `fail`,
//! `none` (no ARC headers) or `neutral`/`permerror` (headers that do not
//! parse into a chain); `arc.sealer` is the `d=` of the newest ARC-Seal
//! (the last forwarder), or `none`. A key the DNS did not give makes the
//! check fail: every fact says `temperror` and `on_error` decides.

use super::mailauth::{dkim_name, on_dns};
use super::{Check, CheckFuture, SharedResolver};
use crate::facts::Value;
use crate::filter::{Context, Stage};
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator};
use std::sync::Arc;

/// The ARC check over the gateway's resolver.
pub struct ArcCheck {
    /// The shared resolver.
    resolver: Arc<SharedResolver>,
    /// `arc` and `arc.sealer`.
    facts: Vec<String>,
}

impl ArcCheck {
    /// The check, looking keys up through `resolver`.
    pub fn new(resolver: Arc<SharedResolver>) -> ArcCheck {
        ArcCheck {
            resolver,
            facts: vec!["arc".to_string(), "arc.sealer".to_string()],
        }
    }
}

/// A chain's result, owned.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Chain {
    /// The `arc` fact.
    pub result: &'static str,
    /// The newest sealer's domain, lower case.
    pub sealer: Option<String>,
}

/// Verifies the ARC chain of `msg`.
pub(super) async fn verify(auth: &MessageAuthenticator, msg: &AuthenticatedMessage<'_>) -> Chain {
    let out = auth.verify_arc(msg).await;
    let sealer = msg
        .as_headers
        .iter()
        .max_by_key(|h| h.header.i)
        .map(|h| h.header.d.to_ascii_lowercase());
    let result = out.result();
    if let DkimResult::Fail(e) | DkimResult::PermError(e) | DkimResult::Neutral(e) = result {
        log::debug!("ARC chain not valid: {e}");
    }
    Chain {
        result: dkim_name(result),
        sealer,
    }
}

impl Check for ArcCheck {
    fn name(&self) -> &'static str {
        "arc"
    }

    fn facts(&self) -> &[String] {
        &self.facts
    }

    fn earliest(&self) -> Stage {
        Stage::Data
    }

    fn run<'a>(&'a self, _ctx: &'a Context, message: Option<&'a [u8]>) -> CheckFuture<'a> {
        Box::pin(async move {
            let bytes = message
                .ok_or_else(|| "ARC: the message could not be read".to_string())?
                .to_vec();
            let got = on_dns(&self.resolver, move |auth| {
                Box::pin(async move {
                    match AuthenticatedMessage::parse(&bytes) {
                        Some(msg) => verify(&auth, &msg).await,
                        None => Chain {
                            result: "none",
                            sealer: None,
                        },
                    }
                })
            })
            .await?;
            if got.result == "temperror" {
                return Err("ARC: the DNS did not answer for a seal's key".to_string());
            }
            Ok(vec![
                ("arc".to_string(), Value::text(got.result)),
                (
                    "arc.sealer".to_string(),
                    Value::text(got.sealer.unwrap_or_else(|| "none".to_string())),
                ),
            ])
        })
    }
}
