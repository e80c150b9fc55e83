//! The SPF check (RFC 7208): is the client allowed to send for the MAIL
//! FROM domain, and for the HELO name?
//!
//! Facts: `spf.mailfrom` for the MAIL FROM identity (for `<>`, the HELO
//! identity `postmaster@<helo>`, as RFC 7208 §2.4 says), `spf.helo` for
//! the HELO identity; each `pass`, `fail`, `softfail`, `neutral`, `none`,
//! `temperror` or `permerror`. Known from the mail stage on, so a rule can
//! refuse at MAIL or RCPT, before the body is sent.
//!
//! A `temperror` for MAIL FROM (the DNS did not answer) is a failure of
//! the check: every fact says `temperror` and `on_error` decides. The HELO
//! identity's `temperror` is only its fact.

use super::mailauth::{on_dns, spf_name};
use super::spf_void::{limited, Tally};
use super::{Check, CheckFuture, SharedResolver};
use crate::facts::Value;
use crate::filter::{Context, Stage};
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{Parameters, SpfResult};
use std::net::IpAddr;
use std::sync::Arc;

/// The SPF check over the gateway's resolver.
pub struct Spf {
    /// The shared resolver.
    resolver: Arc<SharedResolver>,
    /// Our host name: the `%{r}` macro.
    hostname: String,
    /// `spf.mailfrom` and `spf.helo`.
    facts: Vec<String>,
}

impl Spf {
    /// The check, looking up through `resolver`; `hostname` is the
    /// receiving host the `%{r}` macro names.
    pub fn new(resolver: Arc<SharedResolver>, hostname: &str) -> Spf {
        Spf {
            resolver,
            hostname: hostname.to_string(),
            facts: vec!["spf.mailfrom".to_string(), "spf.helo".to_string()],
        }
    }
}

/// The two results, as the DNS thread returns them.
struct Results {
    /// MAIL FROM identity.
    mailfrom: SpfResult,
    /// HELO identity.
    helo: SpfResult,
}

impl Check for Spf {
    fn name(&self) -> &'static str {
        "spf"
    }

    fn facts(&self) -> &[String] {
        &self.facts
    }

    fn earliest(&self) -> Stage {
        Stage::Mail
    }

    fn run<'a>(&'a self, ctx: &'a Context, _message: Option<&'a [u8]>) -> CheckFuture<'a> {
        Box::pin(async move {
            let ip = ctx.client.ip().to_canonical();
            // An address literal or a missing HELO is no SPF identity; it
            // gives `none` (mail-auth refuses such names itself).
            let helo = ctx.helo.clone().unwrap_or_default();
            let sender = match &ctx.mail_from {
                Some(Some(m)) => Some(m.to_string()),
                _ => None,
            };
            let host = self.hostname.clone();
            let got = on_dns(&self.resolver, move |auth| {
                Box::pin(async move { verify(&auth, ip, &helo, &host, sender.as_deref()).await })
            })
            .await?;
            if got.mailfrom == SpfResult::TempError {
                return Err("SPF: the DNS did not answer for the MAIL FROM domain".to_string());
            }
            Ok(vec![
                (
                    "spf.mailfrom".to_string(),
                    Value::text(spf_name(got.mailfrom)),
                ),
                ("spf.helo".to_string(), Value::text(spf_name(got.helo))),
            ])
        })
    }
}

/// Both identities; for `<>` the MAIL FROM result is the HELO one.
async fn verify(
    auth: &mail_auth::MessageAuthenticator,
    ip: IpAddr,
    helo: &str,
    host: &str,
    sender: Option<&str>,
) -> Results {
    let helo_result = check(auth, SpfParameters::verify_ehlo(ip, helo, host)).await;
    let mailfrom = match sender {
        Some(s) => check(auth, SpfParameters::verify_mail_from(ip, helo, host, s)).await,
        None => helo_result,
    };
    Results {
        mailfrom,
        helo: helo_result,
    }
}

/// One identity's evaluation, with the void-lookup limit mail-auth lacks.
async fn check(auth: &mail_auth::MessageAuthenticator, params: SpfParameters<'_>) -> SpfResult {
    let tally = Tally::default();
    let params = Parameters::new(params)
        .with_ipv4_cache(&tally)
        .with_ipv6_cache(&tally)
        .with_mx_cache(&tally);
    let result = auth.verify_spf(params).await.result();
    limited(result, tally.voids(&auth.0).await)
}
