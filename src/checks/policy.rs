//! The DNSBL threshold without a rule: `reputation.dnsbl.action` and
//! `allowlisted_skip` as a filter the gateway appends to the chain.
//!
//! It reads `dnsbl.score` at connect, so the plan runs the DNSBL check
//! when the client connects, as postscreen does. With `reject` or
//! `tempfail` the greeting and MAIL FROM still pass and every RCPT TO is
//! refused, naming the zone (postscreen's `enforce`: the client's log says
//! why); `drop` refuses the greeting itself with 554 (RFC 5321 §3.1).

use super::dnsbl::{ALLOWLISTED, LISTED, SCORE};
use crate::config::{AllowlistedSkip, DnsblOptions, ThresholdAction, Zone};
use crate::filter::{Context, FactUse, Filter, Stage, Verdict};
use crate::proto::{EnhancedCode, Recipient, Reply};

/// The filter's name, in audit records (`decided_by`).
pub const NAME: &str = "reputation";

/// The configured threshold and allowlist.
pub struct Threshold {
    /// The `reputation.dnsbl` settings.
    options: DnsblOptions,
    /// Where the configuration came from, for errors about the facts.
    origin: String,
}

impl Threshold {
    /// The filter for `options`, when they make it do anything.
    pub fn new(options: &DnsblOptions, exempting: bool, origin: &str) -> Option<Threshold> {
        let acts = options.action != ThresholdAction::None
            || options.allowlisted_skip == AllowlistedSkip::Checks;
        (acts && (!options.zones.is_empty() || exempting)).then(|| Threshold {
            options: options.clone(),
            origin: origin.to_string(),
        })
    }

    /// The summed weight, when the client reached the threshold.
    fn reached(&self, ctx: &Context) -> Option<f64> {
        let score = ctx.facts.get(SCORE)?.number()?;
        (score >= f64::from(self.options.threshold)).then_some(score)
    }

    /// The listing zone the reply names: the heaviest, the first of equals.
    fn named_zone(&self, ctx: &Context) -> Option<&Zone> {
        let listed = ctx.facts.get(LISTED)?.texts();
        let mut best: Option<&Zone> = None;
        for z in self
            .options
            .zones
            .iter()
            .filter(|z| listed.contains(&z.name))
        {
            if best.is_none_or(|b| z.weight > b.weight) {
                best = Some(z);
            }
        }
        best
    }

    /// The reply text for this client.
    fn text(&self, ctx: &Context) -> String {
        let client = ctx.client.ip().to_canonical().to_string();
        match self.named_zone(ctx) {
            Some(z) => z.reply_text(&client),
            None => format!("Service unavailable; client [{client}] is listed"),
        }
    }
}

impl Filter for Threshold {
    fn name(&self) -> &str {
        NAME
    }

    fn facts_used(&self) -> Vec<FactUse> {
        vec![FactUse {
            fact: SCORE.to_string(),
            stage: Stage::Connect,
            file: self.origin.clone(),
            line: None,
            path: "reputation.dnsbl".to_string(),
        }]
    }

    fn connect(&self, ctx: &mut Context) -> Verdict {
        let allowlisted = ctx
            .facts
            .get(ALLOWLISTED)
            .is_some_and(|v| v.texts().iter().any(|t| t == "yes"));
        if allowlisted {
            return match self.options.allowlisted_skip {
                AllowlistedSkip::Checks => Verdict::AcceptTransaction,
                AllowlistedSkip::Nothing => Verdict::Continue,
            };
        }
        let Some(score) = self.reached(ctx) else {
            return Verdict::Continue;
        };
        match self.options.action {
            ThresholdAction::Drop => {
                Verdict::Reject(Reply::new(554, EnhancedCode::new(5, 7, 1), self.text(ctx)))
            }
            ThresholdAction::Score => {
                ctx.score += score;
                Verdict::Continue
            }
            _ => Verdict::Continue,
        }
    }

    fn rcpt(&self, ctx: &mut Context, _rcpt: &Recipient) -> Verdict {
        if self.reached(ctx).is_none() {
            return Verdict::Continue;
        }
        match self.options.action {
            ThresholdAction::Reject => {
                Verdict::Reject(Reply::new(550, EnhancedCode::new(5, 7, 1), self.text(ctx)))
            }
            ThresholdAction::Tempfail => {
                Verdict::Tempfail(Reply::new(451, EnhancedCode::new(4, 7, 1), self.text(ctx)))
            }
            _ => Verdict::Continue,
        }
    }
}
