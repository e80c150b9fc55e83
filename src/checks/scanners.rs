//! The external scanners of `scanners:` (rspamd, clamd) as checks, and
//! the filter that turns their answers into verdicts and headers when no
//! rule decided.
//!
//! The filter comes after the rules in the chain, so a rule that decides
//! at the data stage (`accept`, `reject`, `quarantine` on `rspamd.*` or
//! `clamav.virus` facts, or anything else) wins; otherwise a found virus
//! is refused (or quarantined), and rspamd's action applies when
//! `apply_action` is on. Its facts are read at the data stage, so a
//! configured scanner scans every message a rule did not accept earlier.

use super::clamav::{self, Clamav};
use super::reputation::Checks;
use super::rspamd::{self, Rspamd};
use crate::config::{Config, RspamdOptions, ScannersOptions, VirusAction};
use crate::facts::TEMPERROR;
use crate::filter::{Context, FactUse, Filter, Hit, Message, Stage, Verdict};
use crate::proto::{EnhancedCode, Reply};
use std::sync::Arc;

/// The filter's name, in audit records (`decided_by`) and rule hits.
pub const NAME: &str = "scanners";

/// The scanner checks of `config`, with their settings, and their filter.
pub fn checks(config: &Config) -> (Checks, Option<Arc<dyn Filter>>) {
    let s = &config.scanners;
    let mut out: Checks = Vec::new();
    if let Some(c) = &s.clamav {
        out.push((Arc::new(Clamav::new(c)), c.settings()));
    }
    if let Some(r) = &s.rspamd {
        out.push((Arc::new(Rspamd::new(r)), r.settings()));
    }
    let origin = if config.source.origin.is_empty() {
        "<built-in configuration>"
    } else {
        config.source.origin.as_str()
    };
    let filter = (!out.is_empty()).then(|| {
        Arc::new(ScannerActions {
            options: s.clone(),
            origin: origin.to_string(),
        }) as Arc<dyn Filter>
    });
    (out, filter)
}

/// The scanners' default actions.
pub struct ScannerActions {
    /// What is configured.
    options: ScannersOptions,
    /// Where the configuration came from, for errors about the facts.
    origin: String,
}

/// The reply to a message with a virus.
pub fn virus_reply(name: &str) -> Reply {
    let name: String = name.chars().filter(|c| !c.is_control()).take(200).collect();
    Reply::new(
        554,
        EnhancedCode::new(5, 7, 1),
        format!("Virus found: {name}"),
    )
}

/// The reply to rspamd's `reject`.
pub fn spam_reply() -> Reply {
    Reply::new(550, EnhancedCode::new(5, 7, 1), "Spam message rejected")
}

/// The reply to rspamd's `soft reject` and `greylist`: rspamd keeps the
/// greylisting state itself, the gateway only says try again later.
pub fn later_reply(action: &str) -> Reply {
    let text = if action == "greylist" {
        "Greylisted, try again later"
    } else {
        "Try again later"
    };
    Reply::new(451, EnhancedCode::new(4, 7, 1), text)
}

impl ScannerActions {
    /// A hit of this filter.
    fn hit(ctx: &mut Context, action: &str, score: f64) {
        ctx.hits.push(Hit {
            rule: NAME.to_string(),
            stage: Stage::Data,
            action: action.to_string(),
            score,
        });
    }

    /// rspamd's headers, score and action.
    fn rspamd(&self, r: &RspamdOptions, ctx: &mut Context, message: &mut Message<'_>) -> Verdict {
        let Some(action) = ctx.facts.get(rspamd::ACTION).map(|v| v.to_string()) else {
            return Verdict::Continue;
        };
        if action == TEMPERROR || action == rspamd::SKIPPED {
            return Verdict::Continue;
        }
        let score = ctx
            .facts
            .get(rspamd::SCORE)
            .and_then(|v| v.number())
            .unwrap_or(0.0);
        let added: Vec<String> = ctx
            .facts
            .get(rspamd::ADD_HEADERS)
            .map(|v| v.texts())
            .unwrap_or_default();
        let mut spam_header = false;
        for line in added {
            if let Some((name, value)) = line.split_once(": ") {
                spam_header |= name.eq_ignore_ascii_case("X-Spam");
                ctx.add_headers.push((name.to_string(), value.to_string()));
            }
        }
        if matches!(action.as_str(), "add header" | "rewrite subject") && !spam_header {
            ctx.add_headers.push(("X-Spam".into(), "Yes".into()));
        }
        ctx.add_headers
            .push(("X-Rspamd-Score".into(), format!("{score:.2}")));
        ctx.add_headers
            .push(("X-Rspamd-Action".into(), action.clone()));
        if r.add_score {
            ctx.score += score;
            Self::hit(ctx, "score", score);
        }
        if !r.apply_action {
            return Verdict::Continue;
        }
        if action == "rewrite subject" {
            ctx.new_subject = Some(new_subject(r, ctx, message, score));
            Self::hit(ctx, "rewrite_subject", 0.0);
            return Verdict::Continue;
        }
        let verdict = match action.as_str() {
            "reject" => Verdict::Reject(spam_reply()),
            "soft reject" | "greylist" => Verdict::Tempfail(later_reply(&action)),
            _ => return Verdict::Continue,
        };
        Self::hit(ctx, verdict.name(), 0.0);
        ctx.decided_by = Some(format!("{NAME}:rspamd"));
        verdict
    }
}

impl Filter for ScannerActions {
    fn name(&self) -> &str {
        NAME
    }

    fn facts_used(&self) -> Vec<FactUse> {
        let mut used = Vec::new();
        let mut read = |fact: &str, path: &str| {
            used.push(FactUse {
                fact: fact.to_string(),
                stage: Stage::Data,
                file: self.origin.clone(),
                line: None,
                path: path.to_string(),
            })
        };
        if self.options.clamav.is_some() {
            read(clamav::VIRUS, "scanners.clamav");
        }
        if self.options.rspamd.is_some() {
            read(rspamd::ACTION, "scanners.rspamd");
        }
        used
    }

    fn data(&self, ctx: &mut Context, message: &mut Message<'_>) -> Verdict {
        if let Some(c) = &self.options.clamav {
            let virus = ctx.facts.get(clamav::VIRUS).map(|v| v.to_string());
            if let Some(name) =
                virus.filter(|v| ![clamav::CLEAN, clamav::SKIPPED, TEMPERROR].contains(&v.as_str()))
            {
                ctx.decided_by = Some(format!("{NAME}:clamav"));
                return match c.action {
                    VirusAction::Reject => {
                        Self::hit(ctx, "reject", 0.0);
                        Verdict::Reject(virus_reply(&name))
                    }
                    VirusAction::Quarantine => {
                        Self::hit(ctx, "quarantine", 0.0);
                        ctx.add_headers.push(("X-Virus".into(), name));
                        Verdict::Quarantine
                    }
                };
            }
        }
        match &self.options.rspamd {
            Some(r) => self.rspamd(r, ctx, message),
            None => Verdict::Continue,
        }
    }
}

/// The Subject of a `rewrite subject` message: rspamd's own when it gave
/// one, else `subject_template` applied to the message's Subject.
fn new_subject(r: &RspamdOptions, ctx: &Context, message: &mut Message<'_>, score: f64) -> String {
    let given = ctx
        .facts
        .get(rspamd::SUBJECT)
        .map(|v| v.to_string())
        .filter(|s| !s.is_empty() && s != TEMPERROR);
    given.unwrap_or_else(|| {
        let old = message
            .headers()
            .ok()
            .and_then(|h| h.first("Subject").map(|f| f.decoded.clone()))
            .unwrap_or_default();
        apply_template(&r.subject_template, &old, score)
    })
}

/// `template` with `%s` replaced by `subject` and `%d` by `score` (as
/// rspamd's own template does), in one pass so a `%d` in the subject
/// stays as it is.
pub fn apply_template(template: &str, subject: &str, score: f64) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        match rest[i + 1..].chars().next() {
            Some('s') => out.push_str(subject),
            Some('d') => out.push_str(&format!("{score:.2}")),
            _ => {
                out.push('%');
                rest = &rest[i + 1..];
                continue;
            }
        }
        rest = &rest[i + 2..];
    }
    out.push_str(rest);
    out
}

/// The invariants of the scanners' answer parsers (HTTP response, rspamd's
/// JSON, clamd's reply) on arbitrary bytes, for the `scanner_answers`
/// fuzz target and its seed replay: no panic, and whatever parses is
/// well-formed (a known action, a finite score, header lines and a new
/// Subject that cannot break the message, a signature name on one line).
pub fn selfcheck(data: &[u8]) {
    if let Ok(r) = super::http::parse_response(data) {
        assert!((100..=999).contains(&r.status));
        assert!(r.body.len() <= data.len());
    }
    if let Ok(scan) = rspamd::Scan::parse(data) {
        assert!(scan.score.is_finite());
        assert!(!scan.action.is_empty());
        for (name, value) in &scan.add_headers {
            assert!(!name.is_empty() && !name.contains(':'), "{name:?}");
            assert!(!value.contains(['\r', '\n']), "{value:?}");
        }
        if let Some(subject) = &scan.subject {
            assert!(!subject.contains(['\r', '\n']), "{subject:?}");
            // Written as a header value: ASCII, and every line break a fold.
            let value = crate::message::header_value::encode("Subject", subject);
            assert!(value.is_ascii(), "{value:?}");
            for (i, line) in value.split("\r\n").enumerate() {
                assert!(!line.contains(['\r', '\n']), "{value:?}");
                assert!(i == 0 || line.starts_with(' '), "{value:?}");
            }
        }
    }
    if let Ok(clamav::Answer::Found(name)) = clamav::parse_answer(data) {
        assert!(!name.is_empty());
        assert!(!name.contains(['\0', '\n', '\r']), "{name:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::apply_template;

    #[test]
    fn the_template_puts_the_subject_and_the_score_in_one_pass() {
        assert_eq!(
            apply_template("*** SPAM *** %s", "hello", 7.0),
            "*** SPAM *** hello"
        );
        assert_eq!(
            apply_template("[%d] %s 100%", "50%d off", 6.5),
            "[6.50] 50%d off 100%"
        );
        assert_eq!(apply_template("%s", "", 0.0), "");
    }
}
