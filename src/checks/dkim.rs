//! The DKIM check (RFC 6376, Ed25519 per RFC 8463): every signature of
//! the message verified.
//!
//! Facts, at the data stage:
//! - `dkim`: one word for the message: `pass` when a signature verifies,
//!   else `fail`, `permerror`, `neutral` (in that order of precedence,
//!   the first any signature has), or `none` when it has no signature.
//! - `dkim.signatures`: a list, one text per signature in header order:
//!   `<result> d=<domain> s=<selector> a=<algorithm> <aligned|unaligned>`,
//!   with ` l=<bytes>` when the signature covers only that much of the
//!   body (its `l=` tag), e.g. `pass d=example.com s=sel a=rsa-sha256
//!   aligned`. A signature too broken to read is `permerror`, with the
//!   tags it could be read with missing.
//!
//! The signatures are verified once per message for this check and the
//! DMARC check together (`dkim_dmarc`).
//!
//! A signature whose key the DNS did not give (a timeout, SERVFAIL) makes
//! the check fail when no other signature passes: every fact then says
//! `temperror` and `on_error` decides.

use super::dkim_dmarc::Joint;
use super::mailauth::{algorithm_name, aligned, dkim_name, domain_of};
use super::{Check, CheckFuture};
use crate::facts::Value;
use crate::filter::{Context, Stage};
use mail_auth::{AuthenticatedMessage, DkimOutput};
use std::sync::Arc;

/// The DKIM check, sharing its verification with the DMARC check.
pub struct Dkim {
    /// The verification of DKIM and DMARC together.
    joint: Arc<Joint>,
    /// `dkim` and `dkim.signatures`.
    facts: Vec<String>,
}

impl Dkim {
    /// The check over `joint`, which the DMARC check shares.
    pub(super) fn new(joint: Arc<Joint>) -> Dkim {
        Dkim {
            joint,
            facts: vec!["dkim".to_string(), "dkim.signatures".to_string()],
        }
    }
}

/// What the signatures of one message say, owned.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Verified {
    /// The `dkim` fact.
    pub summary: &'static str,
    /// The `dkim.signatures` fact.
    pub signatures: Vec<String>,
}

impl Check for Dkim {
    fn name(&self) -> &'static str {
        "dkim"
    }

    fn facts(&self) -> &[String] {
        &self.facts
    }

    fn earliest(&self) -> Stage {
        Stage::Data
    }

    fn run<'a>(&'a self, ctx: &'a Context, message: Option<&'a [u8]>) -> CheckFuture<'a> {
        Box::pin(async move {
            let bytes = message.ok_or_else(|| "DKIM: the message could not be read".to_string())?;
            let both = self.joint.verify(ctx, bytes).await?;
            let got = both.dkim.clone();
            if got.summary == "temperror" {
                return Err("DKIM: the DNS did not answer for a signature's key".to_string());
            }
            Ok(vec![
                ("dkim".to_string(), Value::text(got.summary)),
                ("dkim.signatures".to_string(), Value::List(got.signatures)),
            ])
        })
    }
}

/// The From domain when the message has exactly one From address.
pub(super) fn single_from_domain(msg: &AuthenticatedMessage<'_>) -> Option<String> {
    match msg.froms() {
        [only] => domain_of(only),
        _ => None,
    }
}

/// The facts of a message's signature results.
pub(super) fn summarize(outputs: &[DkimOutput<'_>], from: Option<&str>) -> Verified {
    let signatures = outputs.iter().map(|o| describe(o, from)).collect();
    let names: Vec<&str> = outputs.iter().map(|o| dkim_name(o.result())).collect();
    let summary = ["pass", "temperror", "fail", "permerror", "neutral"]
        .into_iter()
        .find(|n| names.contains(n))
        .unwrap_or("none");
    Verified {
        summary,
        signatures,
    }
}

/// One signature's entry of `dkim.signatures`.
fn describe(o: &DkimOutput<'_>, from: Option<&str>) -> String {
    let mut s = dkim_name(o.result()).to_string();
    if let Some(sig) = o.signature() {
        let is_aligned = from.is_some_and(|f| aligned(&sig.d, f));
        s.push_str(&format!(
            " d={} s={} a={} {}",
            sig.d.to_ascii_lowercase(),
            sig.s,
            algorithm_name(sig.a),
            if is_aligned { "aligned" } else { "unaligned" }
        ));
        if sig.l > 0 {
            s.push_str(&format!(" l={}", sig.l));
        }
    }
    s
}
