//! The DMARC check (RFC 7489): does an SPF or DKIM pass align with the
//! From domain, and what does that domain ask for when none does?
//!
//! Facts, at the data stage:
//! - `dmarc`: `pass`, `fail`, `none` (the From domain publishes no
//!   policy), `permerror` (no From header, several From headers or
//!   several From addresses, RFC 7489 §6.6.1; or an unusable record);
//! - `dmarc.policy`: what the domain asks for a failing message, `reject`,
//!   `quarantine` or `none` (its `sp=` for a subdomain, lowered one step by
//!   `t=y`);
//! - `dmarc.pct`: the record's `pct=` (RFC 7489 §6.6.4), 0 to 100 (100
//!   when it has none or there is no record): with `enforce`, the share
//!   of failing messages `dmarc.policy` is applied to, the others get the
//!   next-lower policy;
//! - `dmarc.from`: the From domain (`none` when there is none);
//! - `dmarc.reason`: why, in a few words: `spf aligned`, `dkim aligned`,
//!   `not aligned`, `no policy`, `no From header`, `several From
//!   headers`, `several From addresses`, or `trusted ARC sealer <d>` when
//!   a failure passes because a trusted forwarder's valid ARC chain
//!   vouches for it (`sender_auth.arc.trusted_sealers`).
//!
//! The SPF result is the `spf.mailfrom` fact when the SPF check ran at
//! MAIL, else it is looked up here; DKIM is verified once for this check
//! and the DKIM check together (`dkim_dmarc`).
//! A DNS failure the result depends on fails the check: every fact says
//! `temperror` and `on_error` decides.

use super::arc;
use super::dkim::{single_from_domain, summarize, Verified};
use super::dkim_dmarc::Joint;
use super::dmarc_pct;
use super::mailauth::{spf_from_name, spf_name};
use super::{Check, CheckFuture};
use crate::config::ArcOptions;
use crate::facts::{Facts, Value};
use crate::filter::{Context, Stage};
use crate::proto::{EnhancedCode, Reply};
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::dmarc::Policy;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, DkimOutput, DmarcResult, MessageAuthenticator, SpfOutput, SpfResult,
};
use std::net::IpAddr;
use std::sync::Arc;

/// The DMARC check, sharing its DKIM verification with the DKIM check.
pub struct Dmarc {
    /// The verification of DKIM and DMARC together.
    joint: Arc<Joint>,
    /// `dmarc`, `dmarc.policy`, `dmarc.from`, `dmarc.reason`, `dmarc.pct`.
    facts: Vec<String>,
}

impl Dmarc {
    /// The check over `joint`, which the DKIM check shares.
    pub(super) fn new(joint: Arc<Joint>) -> Dmarc {
        Dmarc {
            joint,
            facts: [
                "dmarc",
                "dmarc.policy",
                "dmarc.from",
                "dmarc.reason",
                "dmarc.pct",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// What `sender_auth.dmarc: enforce` does to a message by itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Enforcement {
    /// `p=reject`: refused with this `550 5.7.1`.
    Reject(Reply),
    /// `p=quarantine`: quarantined, unless a rule refuses it.
    Quarantine,
}

/// The enforcement the DMARC facts call for: only a `fail` is enforced
/// (`permerror`, `temperror` and `none` are left to the rules), as the
/// live session and the simulator both apply it. Outside the record's
/// `pct=` share (`dmarc.pct`), the next-lower policy applies (RFC 7489
/// §6.6.4): reject → quarantine, quarantine → none.
pub fn enforcement(facts: &Facts) -> Option<Enforcement> {
    let fact = |name: &str| facts.get(name).map(|v| v.to_string());
    if fact("dmarc").as_deref() != Some("fail") {
        return None;
    }
    let domain = fact("dmarc.from").unwrap_or_default();
    let pct = facts
        .get("dmarc.pct")
        .and_then(|v| v.number())
        .map_or(dmarc_pct::ALL, |n| n.clamp(0.0, 100.0) as u8);
    let policy = match (fact("dmarc.policy").as_deref(), dmarc_pct::applies(pct)) {
        (p, true) => p.map(str::to_string),
        (Some("reject"), false) => Some("quarantine".to_string()),
        (_, false) => None,
    };
    match policy.as_deref() {
        Some("reject") => Some(Enforcement::Reject(Reply::new(
            550,
            EnhancedCode::new(5, 7, 1),
            format!("Rejected by the DMARC policy of {domain}: the sender is not authenticated"),
        ))),
        Some("quarantine") => Some(Enforcement::Quarantine),
        _ => None,
    }
}

/// A DMARC evaluation, owned.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Outcome {
    /// The `dmarc` fact, or `temperror` when the DNS failed.
    pub result: &'static str,
    /// The `dmarc.policy` fact.
    pub policy: &'static str,
    /// The From domain.
    pub from: Option<String>,
    /// The `dmarc.reason` fact.
    pub reason: String,
    /// The `dmarc.pct` fact.
    pub pct: u8,
}

impl Outcome {
    /// A `permerror` about the From header.
    fn from_problem(reason: &str) -> Outcome {
        Outcome {
            result: "permerror",
            policy: "none",
            from: None,
            reason: reason.to_string(),
            pct: dmarc_pct::ALL,
        }
    }
}

/// What the DNS thread needs to know of the envelope.
pub(super) struct Envelope {
    /// The client.
    ip: IpAddr,
    /// The HELO name.
    helo: String,
    /// Our host name.
    host: String,
    /// The MAIL FROM address, `None` for `<>`.
    sender: Option<String>,
    /// `spf.mailfrom`, when the SPF check ran.
    spf: Option<SpfResult>,
}

impl Envelope {
    /// The envelope of the transaction `ctx`; `host` is our host name.
    pub(super) fn of(ctx: &Context, host: &str) -> Envelope {
        Envelope {
            ip: ctx.client.ip().to_canonical(),
            helo: ctx.helo.clone().unwrap_or_default(),
            host: host.to_string(),
            sender: match &ctx.mail_from {
                Some(Some(m)) => Some(m.to_string()),
                _ => None,
            },
            spf: ctx
                .facts
                .get("spf.mailfrom")
                .and_then(|v| spf_from_name(&v.to_string())),
        }
    }

    /// What the evaluation depends on, to tell jobs apart.
    pub(super) fn key(&self) -> (IpAddr, &str, Option<&str>, Option<&'static str>) {
        (
            self.ip,
            &self.helo,
            self.sender.as_deref(),
            self.spf.map(spf_name),
        )
    }

    /// The SPF identity's domain: MAIL FROM's, or HELO's for `<>`.
    fn spf_domain(&self) -> String {
        match &self.sender {
            Some(s) => s.rsplit_once('@').map_or("", |(_, d)| d).to_string(),
            None => self.helo.clone(),
        }
    }
}

impl Check for Dmarc {
    fn name(&self) -> &'static str {
        "dmarc"
    }

    fn facts(&self) -> &[String] {
        &self.facts
    }

    fn earliest(&self) -> Stage {
        Stage::Data
    }

    fn run<'a>(&'a self, ctx: &'a Context, message: Option<&'a [u8]>) -> CheckFuture<'a> {
        Box::pin(async move {
            let bytes =
                message.ok_or_else(|| "DMARC: the message could not be read".to_string())?;
            let both = self.joint.verify(ctx, bytes).await?;
            let got = both.dmarc.clone();
            if got.result == "temperror" {
                return Err(format!("DMARC: {}", got.reason));
            }
            Ok(vec![
                ("dmarc".to_string(), Value::text(got.result)),
                ("dmarc.policy".to_string(), Value::text(got.policy)),
                (
                    "dmarc.from".to_string(),
                    Value::text(got.from.unwrap_or_else(|| "none".to_string())),
                ),
                ("dmarc.reason".to_string(), Value::Text(got.reason)),
                ("dmarc.pct".to_string(), Value::Number(f64::from(got.pct))),
            ])
        })
    }
}

/// How many From header fields `msg` has.
fn from_headers(msg: &AuthenticatedMessage<'_>) -> usize {
    msg.raw_parsed_headers()
        .iter()
        .filter(|(name, _)| name.trim_ascii().eq_ignore_ascii_case(b"from"))
        .count()
}

/// DKIM (every signature, once) and DMARC over its results, on the DNS
/// thread.
pub(super) async fn evaluate_both(
    auth: &MessageAuthenticator,
    bytes: &[u8],
    env: &Envelope,
    arc_options: &ArcOptions,
) -> (Verified, Outcome) {
    let Some(msg) = AuthenticatedMessage::parse(bytes) else {
        return (
            summarize(&[], None),
            Outcome::from_problem("no From header"),
        );
    };
    let dkim = auth.verify_dkim(&msg).await;
    let verified = summarize(&dkim, single_from_domain(&msg).as_deref());
    let outcome = evaluate(auth, &msg, &dkim, env, arc_options).await;
    (verified, outcome)
}

/// DMARC of a parsed message whose signatures gave `dkim`.
async fn evaluate(
    auth: &MessageAuthenticator,
    msg: &AuthenticatedMessage<'_>,
    dkim: &[DkimOutput<'_>],
    env: &Envelope,
    arc_options: &ArcOptions,
) -> Outcome {
    // RFC 7489 §6.6.1: no single author domain, no DMARC pass.
    match from_headers(msg) {
        0 => return Outcome::from_problem("no From header"),
        1 => {}
        _ => return Outcome::from_problem("several From headers"),
    }
    match msg.froms().len() {
        0 => return Outcome::from_problem("no From address"),
        1 => {}
        _ => return Outcome::from_problem("several From addresses"),
    }
    let Some(from) = single_from_domain(msg) else {
        return Outcome::from_problem("no From domain");
    };
    let spf_domain = env.spf_domain();
    let spf_result = match env.spf {
        Some(r) => r,
        None => match &env.sender {
            Some(s) => auth
                .verify_spf(SpfParameters::verify_mail_from(
                    env.ip, &env.helo, &env.host, s,
                ))
                .await
                .result(),
            None => auth
                .verify_spf(SpfParameters::verify_ehlo(env.ip, &env.helo, &env.host))
                .await
                .result(),
        },
    };
    let spf = SpfOutput::new(spf_domain.clone()).with_result(spf_result);
    let out = auth
        .verify_dmarc(DmarcParameters::new(msg, dkim, &spf_domain, &spf))
        .await;
    let policy = match out.policy() {
        Policy::Reject => "reject",
        Policy::Quarantine => "quarantine",
        Policy::None | Policy::Unspecified => "none",
    };
    let mut o = Outcome {
        result: "fail",
        policy,
        from: Some(from),
        reason: "not aligned".to_string(),
        pct: dmarc_pct::ALL,
    };
    let (s, d) = (out.spf_result(), out.dkim_result());
    if *s == DmarcResult::Pass || *d == DmarcResult::Pass {
        o.result = "pass";
        o.reason = if *s == DmarcResult::Pass {
            "spf aligned"
        } else {
            "dkim aligned"
        }
        .to_string();
        return o;
    }
    let temp = |r: &DmarcResult| matches!(r, DmarcResult::TempError(_));
    let perm = |r: &DmarcResult| matches!(r, DmarcResult::PermError(_));
    let dkim_temp = dkim
        .iter()
        .any(|o| matches!(o.result(), mail_auth::DkimResult::TempError(_)));
    if temp(s) || temp(d) || dkim_temp || spf_result == SpfResult::TempError {
        o.result = "temperror";
        o.reason = "the DNS did not answer".to_string();
        return o;
    }
    if perm(s) || perm(d) {
        o.result = "permerror";
        o.reason = "unusable DMARC record".to_string();
        return o;
    }
    if out.dmarc_record().is_none() {
        o.result = "none";
        o.policy = "none";
        o.reason = "no policy".to_string();
        return o;
    }
    if let (Some(record), Some(from)) = (out.dmarc_record(), o.from.as_deref()) {
        o.pct = dmarc_pct::of_record(&auth.0, from, record).await;
    }
    if !arc_options.trusted_sealers.is_empty() {
        let chain = arc::verify(auth, msg).await;
        if chain.result == "pass" {
            if let Some(sealer) = chain.sealer.filter(|d| arc_options.trusts(d)) {
                o.result = "pass";
                o.reason = format!("trusted ARC sealer {sealer}");
            }
        }
    }
    o
}
